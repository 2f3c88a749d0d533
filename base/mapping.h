// A move-only owner of one mmap'd range of the VMM's address space.
//
// Every mapping the VMM makes for itself (a vCPU's kvm_run page, a
// reservation of address space, a view of a file) has one owner that
// unmaps it. create() is fallible and names the call and the errno; the
// destructor unmaps and cannot fail in a way anyone could act on.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include "base/error.h"

namespace kvmem {

class Mapping {
 public:
  Mapping() = default;
  // mmap(hint, length, prot, flags, fd, offset). `what` starts the error
  // sentence: "cannot map the vCPU's kvm_run: mmap: ENOMEM (...)".
  static Result<Mapping> create(std::string_view what, size_t length, int prot, int flags, int fd = -1,
                                off_t offset = 0, void* hint = nullptr);
  // Takes over a mapping made elsewhere (say, by the kernel for us).
  static Mapping adopt(void* addr, size_t length) { return Mapping(static_cast<uint8_t*>(addr), length); }

  Mapping(Mapping&& o) noexcept : addr_(std::exchange(o.addr_, nullptr)), length_(std::exchange(o.length_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      reset();
      addr_ = std::exchange(o.addr_, nullptr);
      length_ = std::exchange(o.length_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  uint8_t* data() const { return addr_; }
  size_t size() const { return length_; }
  bool valid() const { return addr_ != nullptr; }
  std::span<uint8_t> span() const { return {addr_, length_}; }
  void reset();

 private:
  Mapping(uint8_t* addr, size_t length) : addr_(addr), length_(length) {}
  uint8_t* addr_ = nullptr;
  size_t length_ = 0;
};

}  // namespace kvmem
