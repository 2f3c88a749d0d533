// HostMapping: the host's own mapping of a range of a RegularFile, a
// MappingSpace that reads and writes the file's pages the way a process
// reads and writes an mmap(MAP_SHARED) of a memfd (the replay tool's maps,
// the differential tests).
//
// Synopsis
//   HostMapping::create(file, offset, length, writable) -> Result<unique_ptr>
//   read(offset, dst)  write(offset, src)   offsets relative to the mapping
//   invalidate(addr, range)                 the file's call (MappingSpace)
//   cached_bytes()                          bytes of translations held
//
// Translation is lazy: the first access to a page not yet translated asks
// the file for required = the pages the access touches from there on,
// optional = the untranslated run of the mapping around them (the whole
// mapping on a first access), and caches the translations with their
// references. invalidate() drops the cached translations of a range and
// their references; destruction removes the mapping from the file, then
// drops the rest.
//
// An access to a page past the file's end fails with EFAULT, "... beyond
// the end of file <name> (size N)", where a real mapping raises SIGBUS;
// the bytes of the pages before it have been copied, as a real access
// would have before its fault. Accesses outside the mapping also fail with
// EFAULT (a real one would be SIGSEGV), writes through a read-only mapping
// with EACCES.
//
// Copies run under the file's data lock (shared to read, exclusive to
// write), so a copy never races with the file's own read, write, or a
// truncate's zeroing: TSan-clean, where a real mapping would race benignly.
//
// Thread safety: any thread. Lock order: the file's maps_mu_ -> mu_ -> the
// file's data_mu_ -> MemoryFile's locks. invalidate() comes with maps_mu_
// held and takes mu_; accesses take mu_ and then call translate() (data_mu_),
// never anything that takes maps_mu_.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>

#include "base/error.h"
#include "memory/range.h"
#include "memory/segment_set.h"
#include "memory/tmpfs/mappable.h"
#include "memory/tmpfs/offset_policy.h"
#include "memory/tmpfs/regular_file.h"

namespace kvmem::tmpfs {

class HostMapping final : public MappingSpace {
 public:
  // Maps file offsets [offset, offset + length rounded up to a page).
  // Errors: EINVAL (offset unaligned, length zero, overflow), and
  // add_mapping's (EPERM when writable and the file is write-sealed).
  static Result<std::unique_ptr<HostMapping>> create(std::shared_ptr<RegularFile> file,
                                                     uint64_t offset, uint64_t length,
                                                     bool writable);
  HostMapping(const HostMapping&) = delete;
  HostMapping& operator=(const HostMapping&) = delete;
  ~HostMapping() override;

  // Copies mapping bytes [offset, offset + dst.size()) into dst.
  Status read(uint64_t offset, std::span<uint8_t> dst);
  // Copies src to mapping bytes [offset, offset + src.size()).
  Status write(uint64_t offset, std::span<const uint8_t> src);

  void invalidate(uint64_t addr, MappableRange range) override;

  const RegularFile& file() const { return *file_; }
  MappableRange range() const { return range_; }  // file offsets mapped
  bool writable() const { return writable_; }
  uint64_t cached_bytes() const;

 private:
  // Mapping offsets -> memory-file offset of each range's start.
  using Cache = SegmentSet<MappableRange, uint64_t, OffsetPolicy>;

  HostMapping(std::shared_ptr<RegularFile> file, MappableRange range, bool writable)
      : file_(std::move(file)), range_(range), writable_(writable) {}

  Status access(uint64_t offset, uint8_t* buf, uint64_t length, bool write);
  // Translates the run of untranslated pages at mapping offset `page`;
  // fails with EFAULT past the end, ENOMEM without memory.
  Status fill_locked(uint64_t page, uint64_t access_end, bool write);  // mu_ held

  const std::shared_ptr<RegularFile> file_;
  const MappableRange range_;
  const bool writable_;
  bool added_ = false;  // in the file's mappings (set once, by create)

  mutable std::mutex mu_;
  Cache cache_;  // protected by mu_; each page holds one reference
};

}  // namespace kvmem::tmpfs
