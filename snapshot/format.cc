// The snapshot format's codec: fixed-size little-endian entries, XXH3-64.
#include "snapshot/format.h"

#include <xxhash.h>

#include <cstring>

#include <fmt/format.h>

namespace kvmem {
namespace {

// Byte by byte, so the file is little-endian on any host and no entry is
// ever read through a misaligned pointer.
void put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= uint32_t{p[i]} << (8 * i);
  return v;
}
uint64_t get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

}  // namespace

const char* section_type_name(SectionType t) {
  switch (t) {
    case SectionType::kConfig: return "config";
    case SectionType::kVcpu: return "vcpu";
    case SectionType::kDevice: return "device";
    case SectionType::kFile: return "file";
  }
  return "unknown";
}

bool is_known_section_type(uint32_t t) { return t >= 1 && t <= 4; }

const char* space_kind_name(SpaceKind k) {
  switch (k) {
    case SpaceKind::kRam: return "ram";
    case SpaceKind::kFile: return "file";
  }
  return "unknown";
}

bool is_known_space_kind(uint32_t k) { return k == 1 || k == 2; }

uint64_t snapshot_checksum(std::span<const uint8_t> bytes) {
  return XXH3_64bits(bytes.data(), bytes.size());
}

void encode_header(const SnapshotHeader& h, uint8_t* out) {
  namespace f = snapshot_header;
  std::memcpy(out + f::kMagic, h.magic, 8);
  put32(out + f::kVersion, h.version);
  put32(out + f::kHeaderSize, h.header_size);
  put32(out + f::kPageSize, h.page_size);
  put32(out + f::kFlags, h.flags);
  put64(out + f::kFileSize, h.file_size);
  put64(out + f::kExtentCap, h.extent_cap);
  put64(out + f::kDataOffset, h.data_offset);
  put64(out + f::kDataBytes, h.data_bytes);
  put64(out + f::kMetaOffset, h.meta_offset);
  put32(out + f::kSectionCount, h.section_count);
  put32(out + f::kSpaceCount, h.space_count);
  put64(out + f::kExtentCount, h.extent_count);
  put64(out + f::kSectionTable, h.section_table);
  put64(out + f::kSpaceTable, h.space_table);
  put64(out + f::kExtentTable, h.extent_table);
  put64(out + f::kMetaChecksum, h.meta_checksum);
  put64(out + f::kReserved, h.reserved);
  put64(out + f::kHeaderChecksum, h.header_checksum);
}

SnapshotHeader decode_header(const uint8_t* in) {
  namespace f = snapshot_header;
  SnapshotHeader h;
  std::memcpy(h.magic, in + f::kMagic, 8);
  h.version = get32(in + f::kVersion);
  h.header_size = get32(in + f::kHeaderSize);
  h.page_size = get32(in + f::kPageSize);
  h.flags = get32(in + f::kFlags);
  h.file_size = get64(in + f::kFileSize);
  h.extent_cap = get64(in + f::kExtentCap);
  h.data_offset = get64(in + f::kDataOffset);
  h.data_bytes = get64(in + f::kDataBytes);
  h.meta_offset = get64(in + f::kMetaOffset);
  h.section_count = get32(in + f::kSectionCount);
  h.space_count = get32(in + f::kSpaceCount);
  h.extent_count = get64(in + f::kExtentCount);
  h.section_table = get64(in + f::kSectionTable);
  h.space_table = get64(in + f::kSpaceTable);
  h.extent_table = get64(in + f::kExtentTable);
  h.meta_checksum = get64(in + f::kMetaChecksum);
  h.reserved = get64(in + f::kReserved);
  h.header_checksum = get64(in + f::kHeaderChecksum);
  return h;
}

// Section entry: type u32 | index u32 | offset u64 | length u64.
void encode_section(const SnapshotSection& s, uint8_t* out) {
  put32(out, s.type);
  put32(out + 4, s.index);
  put64(out + 8, s.offset);
  put64(out + 16, s.length);
}

SnapshotSection decode_section(const uint8_t* in) {
  return SnapshotSection{get32(in), get32(in + 4), get64(in + 8), get64(in + 16)};
}

// Space entry: id u32 | kind u32 | size u64 | name_offset u64 |
// name_length u32 | reserved u32.
void encode_space(const SnapshotSpace& s, uint8_t* out) {
  put32(out, s.id);
  put32(out + 4, s.kind);
  put64(out + 8, s.size);
  put64(out + 16, s.name_offset);
  put32(out + 24, s.name_length);
  put32(out + 28, s.reserved);
}

SnapshotSpace decode_space(const uint8_t* in) {
  return SnapshotSpace{get32(in), get32(in + 4), get64(in + 8), get64(in + 16), get32(in + 24),
                       get32(in + 28)};
}

// Extent entry: space u32 | length u32 | offset u64 | data_offset u64 |
// checksum u64.
void encode_extent(const SnapshotExtent& e, uint8_t* out) {
  put32(out, e.space);
  put32(out + 4, e.length);
  put64(out + 8, e.offset);
  put64(out + 16, e.data_offset);
  put64(out + 24, e.checksum);
}

SnapshotExtent decode_extent(const uint8_t* in) {
  return SnapshotExtent{get32(in), get32(in + 4), get64(in + 8), get64(in + 16), get64(in + 24)};
}

uint64_t header_checksum_of(const uint8_t* header) {
  return snapshot_checksum(std::span(header, snapshot_header::kHeaderChecksum));
}

void reseal_snapshot(std::span<uint8_t> file) {
  if (file.size() < kSnapshotHeaderBytes) return;
  uint8_t* h = file.data();
  const uint64_t meta = get64(h + snapshot_header::kMetaOffset);
  if (meta <= file.size())
    put64(h + snapshot_header::kMetaChecksum, snapshot_checksum(file.subspan(meta)));
  put64(h + snapshot_header::kHeaderChecksum, header_checksum_of(h));
}

std::string magic_hex(const uint8_t magic[8]) {
  std::string out = "0x";
  for (int i = 0; i < 8; i++) out += fmt::format("{:02x}", magic[i]);
  return out;
}

}  // namespace kvmem
