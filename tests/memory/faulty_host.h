// A HostOps for tests: each call can be made to fail with a chosen errno,
// and hole punches can be held until released.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "memory/host_ops.h"

namespace kvmem::test {

class FaultyHost : public HostOps {
 public:
  std::atomic<int> punch_errno{0};      // fallocate(PUNCH_HOLE)
  std::atomic<int> commit_errno{0};     // fallocate(mode 0)
  std::atomic<int> ftruncate_errno{0};
  std::atomic<int> map_errno{0};        // chunk mappings (MAP_FIXED)
  std::atomic<int> reserve_errno{0};    // the address-space reservation
  std::atomic<int> punches{0};
  std::atomic<int> maps{0};             // chunk mappings made (MAP_FIXED calls)

  // While held, punches wait (the reclaimer stalls mid-reclaim).
  void hold_punches() {
    std::lock_guard l(mu_);
    held_ = true;
  }
  void release_punches() {
    {
      std::lock_guard l(mu_);
      held_ = false;
    }
    cv_.notify_all();
  }
  // Waits until some punch is waiting on the hold.
  void wait_for_held_punch() {
    std::unique_lock l(mu_);
    cv_.wait(l, [&] { return waiting_ > 0; });
  }

  int fallocate(int fd, int mode, uint64_t offset, uint64_t length) override {
    if (mode & FALLOC_FL_PUNCH_HOLE) {
      {
        std::unique_lock l(mu_);
        waiting_++;
        cv_.notify_all();
        cv_.wait(l, [&] { return !held_; });
        waiting_--;
      }
      punches++;
      if (int e = punch_errno.load()) return e;
    } else if (int e = commit_errno.load()) {
      return e;
    }
    return HostOps::fallocate(fd, mode, offset, length);
  }
  int ftruncate(int fd, uint64_t length) override {
    if (int e = ftruncate_errno.load()) return e;
    return HostOps::ftruncate(fd, length);
  }
  int mmap(void* addr, size_t length, int prot, int flags, int fd, uint64_t offset,
           void** out) override {
    if (flags & MAP_FIXED) {
      if (int e = map_errno.load()) return e;
      maps++;
    } else if (int e = reserve_errno.load()) {
      return e;
    }
    return HostOps::mmap(addr, length, prot, flags, fd, offset, out);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false;
  int waiting_ = 0;
};

}  // namespace kvmem::test
