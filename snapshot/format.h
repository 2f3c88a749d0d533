// The snapshot file format: versioned, little-endian, pointer-free
// (docs/snapshot.md has it byte by byte).
//
// Synopsis
//   SnapshotHeader, SnapshotSection, SnapshotSpace, SnapshotExtent
//                                 the decoded header and table entries
//   SectionType, SpaceKind        the type ids a file may use
//   encode_header / decode_header, encode_*/decode_* for each entry
//   snapshot_checksum(bytes)      XXH3-64, seed 0: every checksum in the file
//   reseal_snapshot(bytes)        for tests and the fuzz target: recompute the
//                                 metadata and header checksums of a file
//
// A file is, in this order:
//   [0, 128)                    the header
//   [128, data_offset)          zero padding (a hole as written)
//   [data_offset, meta_offset)  the memory data: one run of bytes per extent,
//                               each at a multiple of 4 KiB in the file
//   [meta_offset, file_size)    the metadata: section payloads and space
//                               names (blobs), then the section, space and
//                               extent tables
// The tables follow the data so that a writer streams the data without
// knowing in advance how many extents the zero pages will leave; the header
// says where everything is, so a reader reads the header, then all of the
// metadata with one pread, checks it, and only then reads data.
//
// The VM level's state lives in typed sections, opaque here: the config's
// JSON, one section per vCPU (its index in the entry), the devices' state.
// Memory lives in spaces (guest RAM, one per tmpfs file), each a byte range
// [0, size) of which the extents hold the non-zero pages; anything an extent
// does not cover reads as zero.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace kvmem {

inline constexpr uint8_t kSnapshotMagic[8] = {'K', 'V', 'M', 'S', 'N', 'A', 'P', 0};
inline constexpr uint32_t kSnapshotVersion = 1;
inline constexpr uint64_t kSnapshotHeaderBytes = 128;
// Data offsets and extent lengths are multiples of this, and so is a
// space's extents' start: a restore reads whole pages into whole pages.
inline constexpr uint64_t kSnapshotPageSize = 4096;
inline constexpr uint64_t kSnapshotSectionEntryBytes = 24;
inline constexpr uint64_t kSnapshotSpaceEntryBytes = 32;
inline constexpr uint64_t kSnapshotExtentEntryBytes = 32;
// The writer's default cap on an extent's length: a lazy restore reads and
// checks one extent alone when it serves a fault, so the cap bounds the
// work of one fault. 256 KiB: measured here (tests/vmm/memory/
// lazy_ram_test.cc, "[.lazy-chunks]"), an on-demand load cost ~2.7 us a
// page at 256-512 KiB against 5-7 us at 2 MiB, whose buffer no longer
// stays in the cache between the read and the pwrite, and ~50 us at 4 KiB.
inline constexpr uint64_t kSnapshotDefaultExtentCap = uint64_t{256} << 10;
// The longest extent a reader takes by default: what earlier writers used.
inline constexpr uint64_t kSnapshotMaxReadExtentCap = uint64_t{2} << 20;
inline constexpr uint64_t kSnapshotMaxNameBytes = 255;

// Where each header field sits (bytes from the start of the file). Tests and
// the fuzz target edit fields through these.
namespace snapshot_header {
inline constexpr uint64_t kMagic = 0;              // u8[8]
inline constexpr uint64_t kVersion = 8;            // u32
inline constexpr uint64_t kHeaderSize = 12;        // u32, 128
inline constexpr uint64_t kPageSize = 16;          // u32, 4096
inline constexpr uint64_t kFlags = 20;             // u32, 0
inline constexpr uint64_t kFileSize = 24;          // u64
inline constexpr uint64_t kExtentCap = 32;         // u64
inline constexpr uint64_t kDataOffset = 40;        // u64
inline constexpr uint64_t kDataBytes = 48;         // u64
inline constexpr uint64_t kMetaOffset = 56;        // u64
inline constexpr uint64_t kSectionCount = 64;      // u32
inline constexpr uint64_t kSpaceCount = 68;        // u32
inline constexpr uint64_t kExtentCount = 72;       // u64
inline constexpr uint64_t kSectionTable = 80;      // u64
inline constexpr uint64_t kSpaceTable = 88;        // u64
inline constexpr uint64_t kExtentTable = 96;       // u64
inline constexpr uint64_t kMetaChecksum = 104;     // u64, of [meta_offset, file_size)
inline constexpr uint64_t kReserved = 112;         // u64, 0
inline constexpr uint64_t kHeaderChecksum = 120;   // u64, of bytes [0, 120)
}  // namespace snapshot_header

// What a section holds; the VM level gives the bytes their meaning. A
// reader refuses any other value.
enum class SectionType : uint32_t {
  kConfig = 1,  // the VM's config as JSON; index 0
  kVcpu = 2,    // one vCPU's state; index = the vCPU's number
  kDevice = 3,  // one device's state; index = the device's number
  kFile = 4,    // a tmpfs file's size, seals and data map; index = its space's id (snapshot/files.h)
};
const char* section_type_name(SectionType t);
bool is_known_section_type(uint32_t t);

enum class SpaceKind : uint32_t {
  kRam = 1,   // guest RAM
  kFile = 2,  // a shared tmpfs file
};
const char* space_kind_name(SpaceKind k);
bool is_known_space_kind(uint32_t k);

struct SnapshotHeader {
  uint8_t magic[8] = {};
  uint32_t version = 0;
  uint32_t header_size = 0;
  uint32_t page_size = 0;
  uint32_t flags = 0;
  uint64_t file_size = 0;
  uint64_t extent_cap = 0;
  uint64_t data_offset = 0;
  uint64_t data_bytes = 0;
  uint64_t meta_offset = 0;
  uint32_t section_count = 0;
  uint32_t space_count = 0;
  uint64_t extent_count = 0;
  uint64_t section_table = 0;
  uint64_t space_table = 0;
  uint64_t extent_table = 0;
  uint64_t meta_checksum = 0;
  uint64_t reserved = 0;
  uint64_t header_checksum = 0;
};

// A section table entry: its payload is [offset, offset + length) of the file.
struct SnapshotSection {
  uint32_t type = 0;
  uint32_t index = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};

// A space table entry: the name is [name_offset, name_offset + name_length)
// of the file, 1..255 bytes, no NUL.
struct SnapshotSpace {
  uint32_t id = 0;
  uint32_t kind = 0;
  uint64_t size = 0;
  uint64_t name_offset = 0;
  uint32_t name_length = 0;
  uint32_t reserved = 0;
};

// An extent table entry: bytes [offset, offset + length) of space `space`
// are the file's bytes [data_offset, data_offset + length), whose XXH3-64
// is `checksum`.
struct SnapshotExtent {
  uint32_t space = 0;
  uint32_t length = 0;
  uint64_t offset = 0;
  uint64_t data_offset = 0;
  uint64_t checksum = 0;
};

// XXH3-64 with seed 0.
uint64_t snapshot_checksum(std::span<const uint8_t> bytes);

// Encoders write exactly the entry's size at out; decoders read it from in.
// Both little-endian whatever the host; no validation here (the reader's).
void encode_header(const SnapshotHeader& h, uint8_t* out);
SnapshotHeader decode_header(const uint8_t* in);
void encode_section(const SnapshotSection& s, uint8_t* out);
SnapshotSection decode_section(const uint8_t* in);
void encode_space(const SnapshotSpace& s, uint8_t* out);
SnapshotSpace decode_space(const uint8_t* in);
void encode_extent(const SnapshotExtent& e, uint8_t* out);
SnapshotExtent decode_extent(const uint8_t* in);

// The checksum of the header's first 120 bytes, as header_checksum holds it.
uint64_t header_checksum_of(const uint8_t* header);

// For tests and the fuzz target, which damage a file on purpose and want the
// reader's later checks to run: recomputes the metadata checksum (when the
// header's meta_offset lies inside the bytes) and then the header checksum.
// Does nothing to bytes shorter than a header.
void reseal_snapshot(std::span<uint8_t> file);

// "0x4b564d534e415000" style: the eight bytes of a magic, for messages.
std::string magic_hex(const uint8_t magic[8]);

}  // namespace kvmem
