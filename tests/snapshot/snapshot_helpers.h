// Helpers for the snapshot tests: a temporary folder, whole-file reads and
// writes, field edits at known offsets, and a small sample snapshot whose
// contents a test can compare against.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "snapshot/format.h"
#include "snapshot/writer.h"

namespace kvmem::test {

class SnapshotDir {
 public:
  SnapshotDir() {
    char tmpl[] = "/tmp/kvmem-snapshot-XXXXXX";
    const char* d = mkdtemp(tmpl);
    if (d) dir_ = d;
  }
  ~SnapshotDir() {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  bool ok() const { return !dir_.empty(); }

 private:
  std::string dir_;
};

inline std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

inline uint64_t get_le(const std::vector<uint8_t>& b, uint64_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v |= uint64_t{b.at(at + i)} << (8 * i);
  return v;
}

inline void put_le(std::vector<uint8_t>& b, uint64_t at, int bytes, uint64_t v) {
  for (int i = 0; i < bytes; i++) b.at(at + i) = static_cast<uint8_t>(v >> (8 * i));
}

// Byte offsets of an extent entry's fields, and of entry i in the table.
namespace extent_field {
inline constexpr uint64_t kSpace = 0, kLength = 4, kOffset = 8, kDataOffset = 16, kChecksum = 24;
}
inline uint64_t extent_entry(const std::vector<uint8_t>& b, uint64_t i) {
  return get_le(b, snapshot_header::kExtentTable, 8) + i * kSnapshotExtentEntryBytes;
}
inline uint64_t space_entry(const std::vector<uint8_t>& b, uint64_t i) {
  return get_le(b, snapshot_header::kSpaceTable, 8) + i * kSnapshotSpaceEntryBytes;
}
inline uint64_t section_entry(const std::vector<uint8_t>& b, uint64_t i) {
  return get_le(b, snapshot_header::kSectionTable, 8) + i * kSnapshotSectionEntryBytes;
}

// Space id -> its bytes, page-rounded, as the snapshot should give them back.
using SpaceImages = std::map<uint32_t, std::vector<uint8_t>>;

// One page of a recognisable pattern: page number and a seed in every word.
inline void fill_page(uint8_t* p, uint64_t page, uint64_t seed) {
  for (uint64_t i = 0; i < kSnapshotPageSize; i += 8) {
    const uint64_t w = (page << 32) ^ (seed << 16) ^ i ^ 0x5a5a0000'00000001ull;
    std::memcpy(p + i, &w, 8);
  }
}

// The sample: a config section, two vCPU sections, a device section; RAM
// (space 0, 64 KiB: pages 0-2 data, 3-4 zero, 5-9 data, 10-15 zero) and a
// file (space 3, "box", 10000 bytes: 3 pages, the middle one zero), added in
// that order. With a cap of 8 KiB RAM gives extents of 2+1, 2+2+1 pages.
inline SpaceImages write_sample(const std::string& path, uint64_t cap = 8192,
                                SnapshotStats* stats = nullptr) {
  SpaceImages img;
  img[0].assign(64 * 1024, 0);
  for (uint64_t p : {0, 1, 2, 5, 6, 7, 8, 9}) fill_page(img[0].data() + p * kSnapshotPageSize, p, 1);
  img[3].assign(3 * kSnapshotPageSize, 0);
  fill_page(img[3].data(), 0, 2);
  fill_page(img[3].data() + 2 * kSnapshotPageSize, 2, 2);
  auto w = SnapshotWriter::create(path, {.extent_cap = cap});
  if (!w) return {};
  const std::string config = R"({"name": "vm0", "memory": "64K"})";
  const std::vector<uint8_t> vcpu0(512, 0xa0), vcpu1(700, 0xa1), dev(16, 0xd0);
  bool ok = (*w)->add_section(SectionType::kConfig, 0, std::span(reinterpret_cast<const uint8_t*>(config.data()), config.size())).has_value();
  ok = ok && (*w)->add_section(SectionType::kVcpu, 0, vcpu0).has_value();
  ok = ok && (*w)->add_section(SectionType::kVcpu, 1, vcpu1).has_value();
  ok = ok && (*w)->add_section(SectionType::kDevice, 0, dev).has_value();
  ok = ok && (*w)->add_space(3, SpaceKind::kFile, "box", 10000).has_value();
  ok = ok && (*w)->add_space(0, SpaceKind::kRam, "ram", img[0].size()).has_value();
  ok = ok && (*w)->add_memory(0, 0, img[0]).has_value();
  ok = ok && (*w)->add_memory(3, 0, img[3]).has_value();
  if (!ok) return {};
  auto s = (*w)->finish();
  if (!s) return {};
  if (stats) *stats = *s;
  return img;
}

}  // namespace kvmem::test
