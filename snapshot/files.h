// Tmpfs files in snapshots (memory/tmpfs, docs/snapshot.md "Files").
//
// Synopsis
//   FileState                              a file's size, seals and data map
//   encode_file_state / decode_file_state  the payload of its kFile section
//   check_file_state(reader, space, state) the state against its space
//   snapshot_files(reader)                 -> Result<vector<SnapshotFile>>:
//                                          every file of a snapshot, checked
//   save_file(file, space, writer)         a file as space `space` and its section
//   restore_files(reader, fs)              -> Result<FilesLoad>: every file
//                                          of the snapshot, made in fs
//
// A file is two things in a snapshot: a space of kind kFile, named after
// the file and as large as its byte size, whose extents hold its non-zero
// pages; and a section of type kFile whose index is the space's id, which
// holds what the pages do not say: the byte size, the seals, and the data
// map (which page-aligned ranges of the file have pages; a gap is a hole).
// Every extent of the space lies inside the data map: a page with data is
// a page the file has.
//
// The section's payload, version 1 (little-endian):
//   u32 magic "KFIL" (4b 46 49 4c), u32 version 1,
//   u64 size (bytes; the space's size), u32 seals (tmpfs::kSeal* bits),
//   u32 reserved 0, u64 n, then n runs of {u64 start, u64 end}: file
//   offsets, 4 KiB-aligned, non-empty, sorted, not overlapping, inside the
//   size rounded up to 4 KiB.
//
// restore_files makes each file as it was: created (sealable), truncated to
// its size, its data map filled with fresh uncommitted pages
// (RegularFile::fill_holes), the space's extents pwritten into them
// (load_extents through the file's data map), and only then its seals
// added, so a file sealed against writes gets its data all the same. The
// result has the same size, seals and data map, and reads back the same
// bytes; pages of the map that no extent covers are allocated and read as
// zero, holes stay holes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "memory/range.h"
#include "memory/tmpfs/file_system.h"
#include "memory/tmpfs/regular_file.h"
#include "snapshot/memory.h"
#include "snapshot/reader.h"
#include "snapshot/writer.h"

namespace kvmem {

inline constexpr uint32_t kFileStateVersion = 1;

struct FileState {
  uint64_t size = 0;
  uint32_t seals = 0;
  std::vector<MappableRange> data;  // the data map, as its section holds it
};

std::vector<uint8_t> encode_file_state(const FileState& state);
// Refuses, naming what is wrong: a short payload, another magic or version,
// reserved bits, unknown seals, a size past tmpfs::kMaxFileSize, a run
// count that does not match the length, and runs empty, unaligned,
// unsorted, overlapping or past the size rounded up to 4 KiB. Errors start
// "file state: ".
Result<FileState> decode_file_state(std::span<const uint8_t> bytes);
// The state against space `space_index` of the reader: a kFile space, of
// the state's size, whose every extent lies inside the data map. Errors
// name the extent or the sizes.
Status check_file_state(const SnapshotReader& reader, size_t space_index, const FileState& state);

struct SnapshotFile {
  uint32_t space = 0;
  std::string name;
  FileState state;
  uint64_t data_bytes = 0;  // bytes of the data map
};

// Every kFile space of the snapshot with its section, decoded and checked,
// in space order. Errors (each naming the snapshot, the space and the
// file): a file space without its section, a kFile section without its
// space (or of a RAM space), a name a tmpfs file cannot have
// (tmpfs::kMaxNameLength bytes, no '/'), two files of one name, and
// decode_file_state's and check_file_state's refusals.
Result<std::vector<SnapshotFile>> snapshot_files(const SnapshotReader& reader);

// Adds `file` as space `space` (kind kFile, its name, its size), its kFile
// section, and its pages (the data map's committed non-zero ones). The
// writer must have had no memory added past space `space` yet (spaces go
// in id order). Preconditions as save_ranges': nothing writes the file
// meanwhile, or the snapshot holds whatever its pages held when read.
Status save_file(const tmpfs::RegularFile& file, uint32_t space, SnapshotWriter& writer);

struct FilesLoad {
  uint64_t files = 0;
  LoadStats load;  // the extents read into them
};

// Makes every file of the snapshot in `fs` (snapshot_files' list), each as
// described above. Errors: snapshot_files'; a file of that name in fs
// already; fs's memory file not of 4 KiB pages; the allocator (ENOMEM) or
// load_extents failing, naming the file. On an error, files made so far
// stay in fs: the caller drops fs.
Result<FilesLoad> restore_files(const SnapshotReader& reader, tmpfs::FileSystem& fs);

}  // namespace kvmem
