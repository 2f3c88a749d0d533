#include "base/mapping.h"

#include <sys/mman.h>

#include <cerrno>

namespace kvmem {

Result<Mapping> Mapping::create(std::string_view what, size_t length, int prot, int flags, int fd, off_t offset,
                                void* hint) {
  void* p = ::mmap(hint, length, prot, flags, fd, offset);
  if (p == MAP_FAILED) return sys_fail(what, "mmap", errno);
  return Mapping(static_cast<uint8_t*>(p), length);
}

void Mapping::reset() {
  if (addr_) ::munmap(addr_, length_);
  addr_ = nullptr;
  length_ = 0;
}

}  // namespace kvmem
