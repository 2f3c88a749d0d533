// The console: what a guest writes with kHcConsoleWrite.
//
// A guest can print for ever, so the VMM keeps a bounded record of it: the
// first kHeadBytes, and the latest kTailBytes in a ring. Bytes that fall out
// between the two are dropped and counted; text() is head + tail, in the
// order the guest wrote them, and dropped() says how much is missing
// between them. The echo (say, a terminal) sees every byte as it comes;
// the record never grows past kHeadBytes + kTailBytes.
//
// The bytes are the guest's: arbitrary, not UTF-8, never trusted. They are
// kept as bytes here; whoever prints or serialises them escapes them.
//
// Thread safety: write() and the readers may be called from any thread
// (every vCPU writes to the one console); mu_ guards the record.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

namespace kvmem {

class GuestMemory;

class Console {
 public:
  static constexpr size_t kHeadBytes = 64 << 10;
  static constexpr size_t kTailBytes = 64 << 10;

  // `echo` (may be empty) receives each write as it comes, on the writer's
  // thread, outside the lock.
  explicit Console(std::function<void(std::string_view)> echo = {}) : echo_(std::move(echo)) {}
  // Precondition: no write() runs (set it before the vCPUs start).
  void set_echo(std::function<void(std::string_view)> echo) { echo_ = std::move(echo); }

  // kHcConsoleWrite: checks [gpa, gpa + length) against the VM's RAM and
  // records the bytes. Returns length, -EINVAL (longer than
  // abi::kConsoleMax) or -EFAULT (not in RAM).
  int64_t write_from(const GuestMemory& memory, uint64_t gpa, uint64_t length);

  void write(std::string_view bytes);
  std::string text() const;     // the head, then the tail
  uint64_t dropped() const;     // bytes written but in neither
  size_t buffered() const;      // bytes held: at most kHeadBytes + kTailBytes

 private:
  std::function<void(std::string_view)> echo_;  // set before writes begin; read unlocked
  mutable std::mutex mu_;
  std::string head_;       // protected by mu_: the first bytes, up to kHeadBytes
  std::string tail_;       // protected by mu_: a ring of up to kTailBytes
  size_t tail_start_ = 0;  // protected by mu_: oldest byte of tail_ once it is full
  uint64_t dropped_ = 0;   // protected by mu_
};

}  // namespace kvmem
