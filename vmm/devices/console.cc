#include "vmm/devices/console.h"

#include <algorithm>
#include <cerrno>

#include "guest/abi.h"
#include "vmm/memory/guest_memory.h"

namespace kvmem {

int64_t Console::write_from(const GuestMemory& memory, uint64_t gpa, uint64_t length) {
  if (length > abi::kConsoleMax) return -EINVAL;
  auto range = GuestRange::of(gpa, length);  // the registers, checked: from here typed
  if (!range || !memory.contains(*range)) return -EFAULT;
  if (length > 0) write(memory.read(*range));
  return static_cast<int64_t>(length);
}

void Console::write(std::string_view bytes) {
  if (echo_) echo_(bytes);
  std::lock_guard lock(mu_);
  const size_t to_head = std::min(bytes.size(), kHeadBytes - head_.size());
  head_.append(bytes.substr(0, to_head));
  bytes.remove_prefix(to_head);
  if (bytes.empty()) return;
  // Only the last kTailBytes of this write can survive it.
  if (bytes.size() > kTailBytes) {
    dropped_ += tail_.size() + (bytes.size() - kTailBytes);
    tail_.clear();
    tail_start_ = 0;
    bytes.remove_prefix(bytes.size() - kTailBytes);
  }
  const size_t room = kTailBytes - tail_.size();
  const size_t appended = std::min(room, bytes.size());
  tail_.append(bytes.substr(0, appended));
  bytes.remove_prefix(appended);
  // The ring is full: overwrite its oldest bytes, which are dropped.
  while (!bytes.empty()) {
    const size_t n = std::min(bytes.size(), kTailBytes - tail_start_);
    tail_.replace(tail_start_, n, bytes.substr(0, n));
    dropped_ += n;
    bytes.remove_prefix(n);
    tail_start_ = (tail_start_ + n) % kTailBytes;
  }
}

std::string Console::text() const {
  std::lock_guard lock(mu_);
  std::string out;
  out.reserve(head_.size() + tail_.size());
  out.append(head_);
  out.append(tail_, tail_start_, std::string::npos);
  out.append(tail_, 0, tail_start_);
  return out;
}

uint64_t Console::dropped() const {
  std::lock_guard lock(mu_);
  return dropped_;
}

size_t Console::buffered() const {
  std::lock_guard lock(mu_);
  return head_.size() + tail_.size();
}

}  // namespace kvmem
