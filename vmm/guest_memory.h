// Guest-physical memory of one VM: RAM at [0, size), backed by a shared memfd
// mapping, registered with KVM as one memory slot.
//
// This is the first, plain backing (issue 2). Guest RAM moves onto the
// MemoryFile allocator with the guest-physical map of issue 4; the interface
// the rest of vmm/ uses (contains(), host(), span()) stays.
//
// Every address that comes from a guest is checked with contains() before
// the VMM touches memory through host(): a guest can only ever name its own RAM.
#pragma once

#include <cstdint>
#include <span>

#include "base/error.h"
#include "base/fd.h"

namespace kvmem {

class KvmVm;

class GuestMemory {
 public:
  // A memfd of `size` bytes mapped MAP_SHARED (never MAP_PRIVATE: a private
  // mapping of the memfd would double-allocate and defeat hole punching).
  static Result<GuestMemory> create(uint64_t size);

  GuestMemory(GuestMemory&& o) noexcept;
  GuestMemory& operator=(GuestMemory&&) = delete;
  GuestMemory(const GuestMemory&) = delete;
  ~GuestMemory();

  // Registers all of RAM as memory slot 0 of vm.
  Status register_with(KvmVm& vm);

  uint64_t size() const { return size_; }
  // True when [gpa, gpa + length) lies wholly inside RAM and does not wrap.
  bool contains(uint64_t gpa, uint64_t length) const {
    return gpa <= size_ && length <= size_ - gpa;
  }
  // Host address of gpa. Precondition: contains(gpa, 0).
  uint8_t* host(uint64_t gpa) const { return base_ + gpa; }
  std::span<uint8_t> span() const { return {base_, size_}; }
  // Bytes of RAM the host holds in memory for this mapping (mincore).
  Result<uint64_t> resident_bytes() const;
  int fd() const { return fd_.get(); }

 private:
  GuestMemory(Fd fd, uint8_t* base, uint64_t size) : fd_(std::move(fd)), base_(base), size_(size) {}
  Fd fd_;
  uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace kvmem
