// The seed corpus of the "snapshot" fuzz target (tests/fuzz/snapshot/):
// written by a hidden test from the real writer, so that the seeds follow
// the format, and checked by a visible one, so that a format change that
// leaves the checked-in valid seed behind is noticed.
//
// Regenerate from the repository root with:
//   build/kvmem-tests "[.seeds]"
// Each seed is a mode byte (bit 0: the target reseals the checksums) and a
// file.
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "base/fd.h"
#include "snapshot/files.h"
#include "snapshot/reader.h"
#include "tests/snapshot/snapshot_helpers.h"

using namespace kvmem;
using namespace kvmem::test;

namespace {

namespace hf = snapshot_header;
const std::string kCorpus = "tests/fuzz/snapshot";

// RAM of 16 KiB with pages 0 and 2 holding data, a 5000-byte file with its
// second page holding data, and a config section: about 12 KiB.
std::vector<uint8_t> small_snapshot(const SnapshotDir& dir) {
  const std::string path = dir.path("seed");
  auto w = SnapshotWriter::create(path, {.extent_cap = 4096});
  REQUIRE(w);
  std::vector<uint8_t> ram(16384, 0), file(8192, 0);
  fill_page(ram.data(), 0, 1);
  fill_page(ram.data() + 8192, 2, 1);
  fill_page(file.data() + 4096, 1, 2);
  const std::string config = R"({"name":"s","memory":"16K"})";
  REQUIRE((*w)->add_section(SectionType::kConfig, 0,
                            std::span(reinterpret_cast<const uint8_t*>(config.data()), config.size())));
  REQUIRE((*w)->add_section(SectionType::kVcpu, 0, std::vector<uint8_t>(64, 0x11)));
  REQUIRE((*w)->add_space(0, SpaceKind::kRam, "ram", ram.size()));
  REQUIRE((*w)->add_space(1, SpaceKind::kFile, "box", 5000));
  REQUIRE((*w)->add_memory(0, 0, ram));
  REQUIRE((*w)->add_memory(1, 0, file));
  REQUIRE((*w)->finish());
  return read_bytes(path);
}

// RAM of 16 KiB with page 1 holding data, and a file "box" of 3 pages plus
// 10 bytes whose data map is pages 0-1 and 3 (page 1 zero: no extent), with
// its kFile section: the seeds of the files' checks and restore.
std::vector<uint8_t> file_snapshot(const SnapshotDir& dir) {
  const std::string path = dir.path("file-seed");
  auto w = SnapshotWriter::create(path, {.extent_cap = 4096});
  REQUIRE(w);
  std::vector<uint8_t> ram(16384, 0), file(4 * 4096, 0);
  fill_page(ram.data() + 4096, 1, 3);
  fill_page(file.data(), 0, 4);
  fill_page(file.data() + 3 * 4096, 3, 4);
  const FileState state{.size = 3 * 4096 + 10, .seals = 0x0c,
                        .data = {MappableRange(0, 2 * 4096), MappableRange(3 * 4096, 4 * 4096)}};
  REQUIRE((*w)->add_section(SectionType::kFile, 1, encode_file_state(state)));
  REQUIRE((*w)->add_space(0, SpaceKind::kRam, "ram", ram.size()));
  REQUIRE((*w)->add_space(1, SpaceKind::kFile, "box", state.size));
  REQUIRE((*w)->add_memory(0, 0, ram));
  REQUIRE((*w)->add_memory(1, 0, file));
  REQUIRE((*w)->finish());
  return read_bytes(path);
}

std::vector<uint8_t> with_mode(uint8_t mode, std::vector<uint8_t> file) {
  file.insert(file.begin(), mode);
  return file;
}

}  // namespace

TEST_CASE("write the snapshot fuzz seeds", "[.seeds]") {
  SnapshotDir dir;
  REQUIRE(dir.ok());
  const std::vector<uint8_t> good = small_snapshot(dir);
  using B = std::vector<uint8_t>;
  namespace ef = extent_field;
  struct Seed {
    const char* name;
    uint8_t mode;
    std::function<void(B&)> edit;
  };
  const Seed seeds[] = {
      {"valid", 0, [](B&) {}},
      {"valid-resealed", 1, [](B&) {}},
      {"truncated", 0, [](B& b) { b.resize(b.size() - 100); }},
      {"header-only", 0, [](B& b) { b.resize(kSnapshotHeaderBytes); }},
      {"bad-magic", 0, [](B& b) { b[3] = 'x'; }},
      {"version-2", 1, [](B& b) { put_le(b, hf::kVersion, 4, 2); }},
      {"header-checksum", 0, [](B& b) { b[hf::kExtentCount] ^= 1; }},
      {"meta-checksum", 0, [](B& b) { b.back() ^= 1; }},
      {"tables-overlap", 1, [](B& b) { put_le(b, hf::kExtentTable, 8, get_le(b, hf::kSpaceTable, 8)); }},
      {"absurd-extent-count", 1, [](B& b) { put_le(b, hf::kExtentCount, 8, ~uint64_t{0}); }},
      {"extent-outside-space", 1, [](B& b) { put_le(b, extent_entry(b, 2) + ef::kOffset, 8, 0x2000); }},
      {"extents-overlap", 1, [](B& b) { put_le(b, extent_entry(b, 1) + ef::kOffset, 8, 0); }},
      {"unknown-space", 1, [](B& b) { put_le(b, extent_entry(b, 0) + ef::kSpace, 4, 9); }},
      {"data-unaligned", 1, [](B& b) { put_le(b, extent_entry(b, 1) + ef::kDataOffset, 8, 0x2008); }},
      {"extent-data-changed", 0, [](B& b) { b[get_le(b, extent_entry(b, 1) + ef::kDataOffset, 8) + 9] ^= 1; }},
  };
  std::filesystem::create_directories(kCorpus);
  for (const Seed& s : seeds) {
    B b = good;
    s.edit(b);
    write_bytes(kCorpus + "/" + s.name, with_mode(s.mode, b));
  }
  // The file section's payload starts its metadata (sections are written
  // first): its size at +8, seals at +16, run 0 at +32.
  const B with_file = file_snapshot(dir);
  const uint64_t payload = get_le(with_file, section_entry(with_file, 0) + 8, 8);
  const Seed file_seeds[] = {
      {"file-valid", 0, [](B&) {}},
      {"file-size-mismatch", 1, [&](B& b) { put_le(b, payload + 8, 8, 5 * 4096); }},
      {"file-extent-in-hole", 1, [&](B& b) { put_le(b, payload + 32, 8, 4096); }},
      {"file-bad-seals", 1, [&](B& b) { put_le(b, payload + 16, 4, 0x40); }},
      {"file-no-section", 1, [&](B& b) { put_le(b, section_entry(b, 0) + 4, 4, 2); }},
      {"file-section-of-ram", 1, [&](B& b) { put_le(b, section_entry(b, 0) + 4, 4, 0); }},
  };
  for (const Seed& s : file_seeds) {
    B b = with_file;
    s.edit(b);
    write_bytes(kCorpus + "/" + s.name, with_mode(s.mode, b));
  }
}

TEST_CASE("the snapshot fuzz corpus's valid seed is a snapshot this reader accepts", "[snapshot][fuzz]") {
  auto bytes = read_bytes(kCorpus + "/valid");
  REQUIRE(bytes.size() > 1);
  SnapshotDir dir;
  REQUIRE(dir.ok());
  write_bytes(dir.path("valid"), std::vector<uint8_t>(bytes.begin() + 1, bytes.end()));
  auto r = SnapshotReader::open(dir.path("valid"));
  INFO((r ? "" : r.error().message));
  REQUIRE(r);
  CHECK((*r)->extents().size() == 3);
  std::vector<uint8_t> page(4096);
  for (size_t i = 0; i < 3; i++) CHECK((*r)->read_extent(i, page));
}

TEST_CASE("the snapshot fuzz corpus's file seed has a file this kvmem lists", "[snapshot][fuzz]") {
  auto bytes = read_bytes(kCorpus + "/file-valid");
  REQUIRE(bytes.size() > 1);
  SnapshotDir dir;
  REQUIRE(dir.ok());
  write_bytes(dir.path("file-valid"), std::vector<uint8_t>(bytes.begin() + 1, bytes.end()));
  auto r = SnapshotReader::open(dir.path("file-valid"));
  REQUIRE(r);
  auto files = snapshot_files(**r);
  INFO((files ? "" : files.error().message));
  REQUIRE(files);
  REQUIRE(files->size() == 1);
  CHECK(files->front().name == "box");
  CHECK(files->front().data_bytes == 3 * 4096);
}
