// RegularFile: one tmpfs-style file whose pages are MemoryFile ranges (kind
// Tmpfs), with the semantics of a Linux memfd, after gVisor's tmpfs regular
// file.
//
// Synopsis
//   read(offset, dst)              -> Result<uint64_t> bytes; holes read as
//                                     zero; 0 at or past the end
//   write(offset, src)             -> Result<uint64_t>; allocates, grows the file
//   truncate(size)                 shrinking invalidates mappings of the
//                                  dropped pages first, then drops them,
//                                  and zeroes the rest of the last page
//                                  (so does a truncate to the same size);
//                                  growing allocates nothing
//   fallocate(mode, offset, length) default, keep-size, punch-hole
//   add_seals(s)  seals()          memfd seals (F_SEAL_*)
//   size()  stat()
//   add_mapping / remove_mapping / translate     the Mappable contract
//                                  (mappable.h)
//   image()                        size, seals and data map at one moment,
//                                  with references (what a snapshot saves)
//   fill_holes(range)              fresh uncommitted pages for the holes of
//                                  range (what a snapshot restore fills)
//
// Errors are what a memfd gives for the same call, errno in Error::code
// (EPERM for a sealed write, EBUSY for a write seal while writable
// mappings exist, EINVAL for an offset or size that is negative as an
// off_t or a range whose end is, EFBIG for a fallocate past the largest
// size), with a sentence that names the file, the call and the range. The
// real memfd is the judge: tests/memory/tmpfs runs the same operations on
// both and compares. F_SEAL_EXEC (0x20), which 6.18 takes, is not
// modelled: add_seals refuses it as an unknown bit.
//
// Seals, as the kernel here (6.18) applies them:
//   SEAL          no more seals (a file created without allow_seals starts with it)
//   SHRINK        truncate to a smaller size: EPERM
//   GROW          truncate larger, fallocate past the end (with or without
//                 keep-size): EPERM. A write is cut where it would grow the
//                 file: the kernel writes page by page and refuses the first
//                 page whose piece ends past the end, so a write that grows
//                 the file returns the bytes of the whole pieces before that
//                 page, and EPERM only when the first piece already would
//                 (measured on 6.18: docs/tmpfs.md)
//   WRITE         write and punch-hole: EPERM; a new writable mapping: EPERM;
//                 adding it while writable mappings exist: EBUSY
//   FUTURE_WRITE  like WRITE for writes, punches and new writable mappings,
//                 but existing writable mappings keep working and adding it
//                 never fails with EBUSY
//
// Data: data_ maps page-aligned file offsets to memory-file offsets; a gap
// is a hole. Every page in data_ holds one reference of the file's, dropped
// when the page leaves the map (truncate, punch, the file's last owner
// going). Pages past the end (size rounded up to a page) are never in data_.
//
// Lock order: maps_mu_ -> data_mu_ -> MemoryFile's locks. invalidate() is
// called with maps_mu_ held and data_mu_ not held, so a MappingSpace may
// take its own locks (GuestMemory::mu_, ...) and drop references on the
// memory file, but must not call back into the file. translate() takes only
// data_mu_, so a space may call it under its own lock (HostMapping:
// maps_mu_ -> HostMapping::mu_ -> data_mu_). Every mutator holds maps_mu_
// as well (see maps_mu_ below); docs/tmpfs.md has the whole tree.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "memory/memory_file.h"
#include "memory/range.h"
#include "memory/segment_set.h"
#include "memory/tmpfs/mappable.h"

namespace kvmem::tmpfs {

// The kernel's F_SEAL_* values.
inline constexpr uint32_t kSealSeal = 0x0001;
inline constexpr uint32_t kSealShrink = 0x0002;
inline constexpr uint32_t kSealGrow = 0x0004;
inline constexpr uint32_t kSealWrite = 0x0008;
inline constexpr uint32_t kSealFutureWrite = 0x0010;
inline constexpr uint32_t kAllSeals = 0x001f;

// "seal", "shrink", "grow", "write", "future_write" (the config's and the
// replay's names), in that order.
std::vector<std::string> seal_names(uint32_t seals);
// One seal's bit from its name; an error naming the word otherwise.
Result<uint32_t> parse_seal(std::string_view name);

enum class FallocateMode { kDefault, kKeepSize, kPunchHole };

// The largest size a file may have, as tmpfs's s_maxbytes (MAX_LFS_FILESIZE).
inline constexpr uint64_t kMaxFileSize = (uint64_t{1} << 63) - 1;

// A file as a snapshot saves it (snapshot/files.h): its size, seals and data
// map, read at one moment. Each run carries one reference on its pages for
// the holder (MemoryFile::dec_ref of file_range() when done), as a
// translation does, so they stay while a writer reads them.
struct FileImage {
  uint64_t size = 0;
  uint32_t seals = 0;
  std::vector<Translation> runs;  // the data map in file order; perms kReadWrite
};

struct FileStat {
  uint64_t size = 0;
  uint64_t allocated = 0;  // bytes of pages in the data map (st_blocks * 512)
  uint32_t seals = 0;
  uint64_t mappings = 0;               // mappings added and not removed
  uint64_t writable_mapped_pages = 0;  // pages of writable mappings
};

class RegularFile {
 public:
  // A file with no data. allow_seals false: the file starts sealed with
  // SEAL, as a memfd made without MFD_ALLOW_SEALING.
  RegularFile(MemoryFile& memory, std::string name, bool allow_seals);
  RegularFile(const RegularFile&) = delete;
  RegularFile& operator=(const RegularFile&) = delete;
  // Drops every page's reference. Precondition: no mapping left (a mapper
  // holds a shared_ptr to the file while it maps it).
  ~RegularFile();

  const std::string& name() const { return name_; }
  MemoryFile& memory() const { return memory_; }

  // pread(2): copies [offset, min(offset + dst.size(), size())) into dst,
  // at most 0x7ffff000 bytes (MAX_RW_COUNT). Errors: EINVAL (offset +
  // length passes kMaxFileSize, even for a zero length).
  Result<uint64_t> read(uint64_t offset, std::span<uint8_t> dst) const;
  // pwrite(2): writes src at offset, allocating the holes it covers and
  // growing the file; at most 0x7ffff000 bytes. A zero-length write does
  // nothing and succeeds, sealed or not. Under GROW a write that would
  // grow the file is cut at the last page boundary inside it (see Seals).
  // Errors: EPERM (WRITE, FUTURE_WRITE, or growing under GROW), EINVAL
  // (offset + length passes kMaxFileSize; a memfd never gives EFBIG here),
  // ENOMEM (the allocator; nothing is written then).
  Result<uint64_t> write(uint64_t offset, std::span<const uint8_t> src);
  // ftruncate(2). Errors: EPERM (SHRINK, GROW), EINVAL (size past
  // kMaxFileSize: negative as an off_t); the invalidations cannot fail.
  Status truncate(uint64_t size);
  // fallocate(2) with mode 0, FALLOC_FL_KEEP_SIZE, or
  // FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE. Default and keep-size
  // allocate the pages of the range below the end of the file (keep-size)
  // or all of it (default, which grows the file). Punch drops the whole
  // pages of the range and zeroes the partial ones at its edges, after
  // invalidating mappings of the whole pages. Allocated pages are
  // committed (fallocate on the memory file), as shmem's are. Errors:
  // EINVAL (offset or length negative as off_t, length zero), EFBIG (the
  // end passes kMaxFileSize), EPERM (punch under WRITE or FUTURE_WRITE;
  // default or keep-size ending past the end under GROW), ENOMEM.
  Status fallocate(FallocateMode mode, uint64_t offset, uint64_t length);

  // fcntl(F_ADD_SEALS). Errors: EINVAL (unknown bits), EPERM (SEAL set),
  // EBUSY (WRITE while writable mappings exist).
  Status add_seals(uint32_t seals);
  uint32_t seals() const;
  uint64_t size() const;
  FileStat stat() const;

  // The Mappable contract (mappable.h). `space` maps file offsets `range`
  // at its address `addr`. Errors: EINVAL (range empty or unaligned, or
  // overflowing), EOVERFLOW (the range ends past kMaxFileSize + 1 - 4096,
  // as mmap's file_mmap_ok), EPERM (writable under WRITE or FUTURE_WRITE).
  // A mapping may extend past the end of the file, as mmap's may.
  // "Writable" is mmap's VM_MAYWRITE: a read-only mapping of a read-write
  // memfd counts as writable for the kernel's EBUSY, so its equivalent
  // here is a writable mapping; a read-only one is a mapping of a
  // read-only descriptor.
  Status add_mapping(MappingSpace* space, uint64_t addr, MappableRange range, bool writable);
  // Precondition: the mapping exists with these values (checked, abort).
  void remove_mapping(MappingSpace* space, uint64_t addr, MappableRange range, bool writable);
  // Fills the holes of `optional` below the end of the file with as few
  // allocations as it can (one per hole), then returns the translations
  // of `required`, widened to `optional` where the map is contiguous.
  // Each translation carries one reference for the caller (mappable.h).
  // Preconditions (checked, abort): as check_translate_result, aligned to
  // the memory file's page size; the caller has a mapping of the range
  // (not checked: translate takes no maps_mu_, so a MappingSpace may call
  // it with its own lock held).
  TranslateResult translate(MappableRange required, MappableRange optional, Access at);

  // The size, the seals and the data map, with a reference on every run
  // (FileImage). Runs are the data map's segments: each one run of the
  // memory file; neighbours in the file may touch.
  FileImage image() const;
  // Gives each hole of `range` a fresh allocation (one per hole, as
  // translate does), not committed: it reads as zero, and holds no data as
  // SEEK_DATA sees it, so a snapshot restore can pwrite its pages
  // (snapshot/files.h). Neither a write nor a growth: seals do not apply,
  // and the size stays. Errors: range not aligned to the memory file's
  // page size, empty, or past the end rounded up to a page (EINVAL);
  // ENOMEM (the holes filled so far stay).
  Status fill_holes(MappableRange range);

  // Aborts with a dump unless the data map and the counters agree.
  void check_invariants() const;

 private:
  // A HostMapping copies through its translations under data_mu_ (shared to
  // read, exclusive to write), so its copies never race with read(),
  // write() or a truncate's zeroing (host_mapping.h).
  friend class HostMapping;

  struct DataPolicy;  // merges neighbours whose memory-file offsets touch
  using DataSet = SegmentSet<MappableRange, uint64_t, DataPolicy>;
  struct Mapping {
    MappingSpace* space;
    uint64_t addr;
    MappableRange range;
    bool writable;
  };

  // Calls invalidate on every mapping that overlaps r (page-aligned).
  void invalidate_locked(MappableRange r);  // maps_mu_ held
  // Drops the pages of r from data_, with their references.
  void drop_locked(MappableRange r);  // data_mu_ held for writing
  // Allocates the holes of r (aligned to page_), one allocation per hole,
  // committed as `commit` says. On failure the holes filled so far stay.
  Status fill_locked(MappableRange r, CommitMode commit);  // data_mu_ held for writing
  // Zeroes [offset, offset + length) inside one page, if the page is there.
  Status zero_locked(uint64_t offset, uint64_t length);  // data_mu_ held for writing
  // Copies the file's bytes [offset, offset + dst.size()) into dst, holes
  // as zeros; ignores size_.
  Status read_locked(uint64_t offset, std::span<uint8_t> dst) const;  // data_mu_ held
  // Copies src to [offset, offset + src.size()), one pwrite on the memory
  // file per run. Precondition: no hole.
  Status write_locked(uint64_t offset, std::span<const uint8_t> src);  // data_mu_ held for writing
  TranslateResult translate_locked(MappableRange required, MappableRange optional);  // data_mu_ w
  // size_ rounded up to page_: the end of the pages a mapping may use.
  uint64_t eof_locked() const;  // data_mu_ held
  std::unexpected<Error> error(int code, std::string_view what, std::string_view why) const;

  MemoryFile& memory_;
  const std::string name_;
  const uint64_t page_;  // memory_.page_size(): the data map's granularity

  // Held by every mutator (write, truncate, fallocate, add_seals) as well as
  // the mapping calls: a truncate drops pages in a second step after
  // invalidating, and nothing may change the file between the two.
  mutable std::mutex maps_mu_;
  std::vector<Mapping> mappings_;       // protected by maps_mu_
  uint64_t writable_mapped_pages_ = 0;  // protected by maps_mu_

  mutable std::shared_mutex data_mu_;
  // File offset ranges -> memory-file offset of each range's start. A
  // pointer so that DataPolicy can stay in the .cc.
  DataSet* data_ = nullptr;  // protected by data_mu_
  uint64_t size_ = 0;        // protected by data_mu_
  uint32_t seals_ = 0;       // protected by data_mu_; changed only with maps_mu_ held too
  uint64_t allocated_ = 0;   // protected by data_mu_: bytes of pages in data_
};

}  // namespace kvmem::tmpfs
