// SnapshotReader: opens a snapshot file and checks all of it that can be
// checked without reading the memory data, before anyone maps anything.
//
// Synopsis
//   SnapshotReader::open(path, limits)        -> Result<unique_ptr<SnapshotReader>>
//   SnapshotReader::open_fd(fd, name, limits) the same on an open file
//   header()  sections()  spaces()  extents()  the checked tables
//   section_bytes(i)  space_name(i)           blobs from the metadata
//   find_section(type, index)  find_space(id)
//   extents_of(space id)                      that space's slice of extents()
//   read_extent(i, dst)                       its data, checksum verified
//
// open() refuses, with an Error that names the field and its value, a file
// that is: shorter than its header or than the header says (truncated);
// longer; of another magic or version; with a header checksum that does not
// match; with fields out of their range (header size, page size, flags,
// reserved bytes, extent cap); with counts or sizes above `limits`; with a
// data or metadata region, a table or a blob outside the file, or any two
// of them overlapping; with a metadata checksum that does not match; with a
// section of unknown type or a duplicate (type, index); with spaces not
// sorted by id (each id once), of unknown kind or bad name; with an extent
// that is empty, unaligned, longer than the cap, outside its space, of an
// unknown space, not sorted by (space, offset) or overlapping the one before
// it, or whose data is unaligned, outside the data region or not after the
// data of the extent before it. Nothing is allocated in proportion to a
// size field before that field was checked against the file's real size.
//
// read_extent reads one extent's data and checks its checksum. The memory
// data is not read at open (a lazy restore reads it when it is needed).
//
// Thread safety: after open, every const function may be called from any
// number of threads at once (read_extent is a pread).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/fd.h"
#include "snapshot/format.h"

namespace kvmem {

// What a reader accepts at most. The defaults hold any VM kvmem makes.
struct SnapshotLimits {
  uint64_t max_sections = 4096;
  uint64_t max_section_bytes = uint64_t{64} << 20;
  uint64_t max_spaces = 1024;
  uint64_t max_space_bytes = uint64_t{1} << 46;  // 64 TiB
  uint64_t max_extents = uint64_t{1} << 24;
  uint64_t max_extent_bytes = kSnapshotMaxReadExtentCap;
  uint64_t max_metadata_bytes = uint64_t{1} << 30;
};

class SnapshotReader {
 public:
  static Result<std::unique_ptr<SnapshotReader>> open(const std::string& path, const SnapshotLimits& limits = {});
  // The same on an open file; `name` is what messages call it.
  static Result<std::unique_ptr<SnapshotReader>> open_fd(Fd fd, const std::string& name,
                                                         const SnapshotLimits& limits = {});
  SnapshotReader(const SnapshotReader&) = delete;
  SnapshotReader& operator=(const SnapshotReader&) = delete;

  const SnapshotHeader& header() const { return header_; }
  std::span<const SnapshotSection> sections() const { return sections_; }
  std::span<const SnapshotSpace> spaces() const { return spaces_; }
  std::span<const SnapshotExtent> extents() const { return extents_; }

  // Preconditions (checked, abort): i < sections().size(), spaces().size().
  std::span<const uint8_t> section_bytes(size_t i) const;
  std::string space_name(size_t i) const;

  // Indices, or -1 when there is none.
  long find_section(SectionType type, uint32_t index) const;
  long find_space(uint32_t id) const;
  // The extents of space `id`: a contiguous slice, in offset order (empty
  // for an unknown id). first_extent_of gives the slice's index in extents().
  std::span<const SnapshotExtent> extents_of(uint32_t id) const;
  size_t first_extent_of(uint32_t id) const;

  // Reads extent i's data into dst (dst.size() == its length) and checks it
  // against its checksum. Errors: a failed or short read, a mismatch (naming
  // the extent, its space and range). Precondition (checked, abort): i is an
  // extent, and dst has its length.
  Status read_extent(size_t i, std::span<uint8_t> dst) const;

  const std::string& name() const { return name_; }
  int fd() const { return fd_.get(); }

 private:
  SnapshotReader() = default;
  Status check_header(uint64_t real_size, const SnapshotLimits& limits);
  Status check_layout(const SnapshotLimits& limits);
  Status check_sections(const SnapshotLimits& limits);
  Status check_spaces(const SnapshotLimits& limits);
  Status check_extents(const SnapshotLimits& limits);
  Status check_blobs();
  const uint8_t* meta_at(uint64_t file_offset) const { return meta_.data() + (file_offset - header_.meta_offset); }

  std::string name_;
  Fd fd_;
  SnapshotHeader header_;
  std::vector<uint8_t> meta_;  // bytes [meta_offset, file_size)
  std::vector<SnapshotSection> sections_;
  std::vector<SnapshotSpace> spaces_;
  std::vector<SnapshotExtent> extents_;
  // Per space (spaces_ order): where its extents start in extents_, and
  // how many; filled by check_extents.
  std::vector<size_t> space_first_, space_count_;
};

}  // namespace kvmem
