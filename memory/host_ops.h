// The host calls through which MemoryFile changes the file and maps it:
// fallocate (punch, commit), ftruncate (growth) and mmap of chunks.
//
// This is the fault-injection seam: tests pass a HostOps whose calls fail on
// demand, so the fallback paths (zeroing when a hole cannot be punched, the
// errors when the file cannot grow or a chunk cannot be mapped) run for real.
// The default forwards to the kernel and holds no state.
//
// It is not every call the allocator makes. Calls that only look, or whose
// failure has no fallback worth injecting, go to the kernel directly:
// fstat, lseek(SEEK_DATA/SEEK_HOLE) and mincore in the usage scans,
// madvise (MADV_HUGEPAGE advice, MADV_POPULATE_WRITE commits) and the
// munmaps of the reservation (its alignment slack, and at destruction).
#pragma once

#include <fcntl.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace kvmem {

// "After a successful call, subsequent reads from this range will return
// zeroes. The FALLOC_FL_PUNCH_HOLE flag must be ORed with
// FALLOC_FL_KEEP_SIZE" - fallocate(2). Punching frees the pages' memory.
inline constexpr int kPunchHole = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;

class HostOps {
 public:
  virtual ~HostOps() = default;

  // Each returns 0 on success or the errno of the failure; none sets errno.
  virtual int fallocate(int fd, int mode, uint64_t offset, uint64_t length);
  virtual int ftruncate(int fd, uint64_t length);
  // *out receives the address of the new mapping.
  virtual int mmap(void* addr, size_t length, int prot, int flags, int fd, uint64_t offset,
                   void** out);
};

// A HostOps that calls the kernel. Stateless; shared by every MemoryFile
// that is not given one.
HostOps& kernel_host_ops();

}  // namespace kvmem
