// SnapshotWriter: writes one snapshot file (snapshot/format.h), whole or not
// at all.
//
// Synopsis
//   SnapshotWriter::create(path, options)   -> Result<unique_ptr<SnapshotWriter>>
//   add_section(type, index, bytes)         a typed blob (copied)
//   add_space(id, kind, name, size)         a memory space
//   add_memory(space, offset, bytes)        memory data, written at once
//   finish()                                -> Result<SnapshotStats>
//
// Everything goes to `path.tmp`; finish() writes the metadata and the
// header, fsyncs the file, renames it to `path` and fsyncs the folder, so a
// reader finds the whole snapshot at `path` or none. A writer destroyed
// before finish() succeeded removes `path.tmp`.
//
// add_memory drops the 4 KiB pages that are all zero (a restore reads them
// as zero anyway) and cuts the rest into extents of at most extent_cap
// bytes, one per run of non-zero pages. Its data goes to the file with
// pwritev, batched up to write_batch bytes, straight from the caller's
// memory, before it returns; the file's data is the extents back to back,
// so the writes are sequential.
//
// Not thread-safe: one thread drives a writer.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <sys/uio.h>
#include <vector>

#include "base/error.h"
#include "base/fd.h"
#include "snapshot/format.h"

namespace kvmem {

struct SnapshotWriterOptions {
  // A multiple of kSnapshotPageSize, at most 2 GiB (an extent's length is
  // a u32). A reader refuses extents longer than its own limit.
  uint64_t extent_cap = kSnapshotDefaultExtentCap;
  // Bytes of data gathered before one pwritev.
  uint64_t write_batch = uint64_t{8} << 20;
};

struct SnapshotStats {
  uint64_t offered_bytes = 0;  // bytes given to add_memory
  uint64_t data_bytes = 0;     // of which written (non-zero pages)
  uint64_t zero_pages = 0;     // pages skipped because all zero
  uint64_t extents = 0;
  uint64_t file_size = 0;
  double seconds = 0;          // create() to the end of finish()
};

class SnapshotWriter {
 public:
  // Creates (or truncates) `path.tmp`. Errors: options out of range, the
  // open failing (naming the path and errno).
  static Result<std::unique_ptr<SnapshotWriter>> create(const std::string& path,
                                                        const SnapshotWriterOptions& options = {});
  SnapshotWriter(const SnapshotWriter&) = delete;
  SnapshotWriter& operator=(const SnapshotWriter&) = delete;
  ~SnapshotWriter();

  // A section of the given type; (type, index) unique. Errors: a duplicate,
  // the writer already finished or failed.
  Status add_section(SectionType type, uint32_t index, std::span<const uint8_t> bytes);

  // A space of `size` bytes; ids unique. Spaces may come in any order.
  // Errors: a duplicate id, a name of 0 or more than 255 bytes or holding
  // a NUL.
  Status add_space(uint32_t id, SpaceKind kind, const std::string& name, uint64_t size);

  // The bytes of space `space` at [offset, offset + bytes.size()); both
  // page-aligned, inside the space rounded up to pages, and after all the
  // memory added before: by space id, then offset. Returns once every byte
  // is written (the caller may change its memory then).
  // Errors: an undeclared space, misalignment, out of the space or of
  // order, a failed write (the writer is then failed for good).
  Status add_memory(uint32_t space, uint64_t offset, std::span<const uint8_t> bytes);

  // Writes the metadata and the header, fsyncs, renames. Errors: a failed
  // write, fsync or rename; the writer is failed for good then and `path`
  // is untouched.
  Result<SnapshotStats> finish();

  // What was written so far.
  const SnapshotStats& stats() const { return stats_; }
  const std::string& path() const { return path_; }

 private:
  struct PendingSection {
    uint32_t type = 0;
    uint32_t index = 0;
    std::vector<uint8_t> bytes;
  };
  struct PendingSpace {
    uint32_t id = 0;
    SpaceKind kind = SpaceKind::kRam;
    std::string name;
    uint64_t size = 0;
  };

  SnapshotWriter() = default;
  Status usable(const char* what) const;
  // One extent of non-zero pages: checksummed, queued for writing.
  Status add_extent(uint32_t space, uint64_t space_offset, std::span<const uint8_t> data);
  Status flush();
  Status write_all(uint64_t offset, std::span<const uint8_t> bytes, const char* what);
  std::string tmp_path() const { return path_ + ".tmp"; }

  std::string path_;
  SnapshotWriterOptions options_;
  Fd fd_;
  bool finished_ = false;
  bool failed_ = false;
  std::vector<PendingSection> sections_;
  std::vector<PendingSpace> spaces_;
  std::vector<SnapshotExtent> extents_;
  // The end of the memory added last: add_memory must come after it.
  uint32_t last_space_ = 0;
  uint64_t last_end_ = 0;
  bool any_memory_ = false;
  // Where the next extent's data goes, and the writes not yet issued.
  uint64_t pos_ = kSnapshotPageSize;
  uint64_t pending_at_ = kSnapshotPageSize;
  uint64_t pending_bytes_ = 0;
  std::vector<iovec> pending_;
  SnapshotStats stats_;
  uint64_t start_ns_ = 0;
};

}  // namespace kvmem
