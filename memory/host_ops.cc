#include "memory/host_ops.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

namespace kvmem {

int HostOps::fallocate(int fd, int mode, uint64_t offset, uint64_t length) {
  if (::fallocate(fd, mode, static_cast<off_t>(offset), static_cast<off_t>(length)) != 0)
    return errno;
  return 0;
}

int HostOps::ftruncate(int fd, uint64_t length) {
  if (::ftruncate(fd, static_cast<off_t>(length)) != 0) return errno;
  return 0;
}

int HostOps::mmap(void* addr, size_t length, int prot, int flags, int fd, uint64_t offset,
                  void** out) {
  void* p = ::mmap(addr, length, prot, flags, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) return errno;
  *out = p;
  return 0;
}

HostOps& kernel_host_ops() {
  // Immutable after construction: the object has no fields.
  static HostOps ops;
  return ops;
}

}  // namespace kvmem
