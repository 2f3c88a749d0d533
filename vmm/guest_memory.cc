#include "vmm/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <utility>
#include <vector>

#include "vmm/kvm.h"

namespace kvmem {

Result<GuestMemory> GuestMemory::create(uint64_t size) {
  int fd = ::memfd_create("kvmem-guest-ram", MFD_CLOEXEC);
  if (fd < 0) return sys_fail("cannot create guest RAM", "memfd_create", errno);
  Fd owned(fd);
  if (::ftruncate(fd, static_cast<off_t>(size)) < 0)
    return sys_fail(fmt::format("cannot size guest RAM to {} bytes", size), "ftruncate", errno);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (p == MAP_FAILED) return sys_fail("cannot map guest RAM", "mmap", errno);
  return GuestMemory(std::move(owned), static_cast<uint8_t*>(p), size);
}

GuestMemory::GuestMemory(GuestMemory&& o) noexcept
    : fd_(std::move(o.fd_)), base_(std::exchange(o.base_, nullptr)), size_(std::exchange(o.size_, 0)) {}

GuestMemory::~GuestMemory() {
  if (base_) ::munmap(base_, size_);
}

Result<uint64_t> GuestMemory::resident_bytes() const {
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> vec((size_ + page - 1) / page);
  if (::mincore(base_, size_, vec.data()) < 0) return sys_fail("cannot count resident guest RAM", "mincore", errno);
  uint64_t pages = 0;
  for (unsigned char v : vec) pages += v & 1;
  return pages * page;
}

Status GuestMemory::register_with(KvmVm& vm) {
  return vm.set_memory_region(0, 0, 0, size_, base_);
}

}  // namespace kvmem
