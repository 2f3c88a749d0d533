// Memory usage kinds and per-kind committed-byte counters.
//
// Every allocation carries a kind; bytes count toward a kind once the
// allocator knows the host holds them (see MemoryFile::update_usage). Freed
// pages count as System until the reclaimer has given them back.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/check.h"

namespace kvmem {

enum class UsageKind : uint8_t {
  System,     // the allocator's own: freed pages waiting for reclaim
  Anonymous,  // guest RAM
  Tmpfs,      // guest-visible shared files
  PageCache,  // cached file contents
  Mapped,     // memory mapped in from outside the allocator
};
inline constexpr size_t kUsageKinds = 5;

constexpr std::string_view usage_kind_name(UsageKind k) {
  switch (k) {
    case UsageKind::System: return "System";
    case UsageKind::Anonymous: return "Anonymous";
    case UsageKind::Tmpfs: return "Tmpfs";
    case UsageKind::PageCache: return "PageCache";
    case UsageKind::Mapped: return "Mapped";
  }
  return "?";
}

// One consistent-enough reading of the counters.
struct UsageSnapshot {
  std::array<uint64_t, kUsageKinds> committed{};
  uint64_t of(UsageKind k) const { return committed[static_cast<size_t>(k)]; }
  uint64_t total() const {
    uint64_t t = 0;
    for (uint64_t c : committed) t += c;
    return t;
  }
};

// Committed bytes per kind. Writers hold the owner's lock (so a move between
// kinds is never seen half-done by another writer); readers need no lock and
// may see a move half-done, which is why a snapshot is "consistent enough".
class UsageCounters {
 public:
  void inc(UsageKind k, uint64_t bytes) {
    at(k).fetch_add(bytes, std::memory_order_relaxed);
  }
  void dec(UsageKind k, uint64_t bytes) {
    uint64_t old = at(k).fetch_sub(bytes, std::memory_order_relaxed);
    KVMEM_CHECK(old >= bytes, "usage of {} would go negative: {:#x} - {:#x}",
                usage_kind_name(k), old, bytes);
  }
  void move(uint64_t bytes, UsageKind to, UsageKind from) {
    dec(from, bytes);
    inc(to, bytes);
  }
  uint64_t committed(UsageKind k) const { return at(k).load(std::memory_order_relaxed); }
  UsageSnapshot snapshot() const {
    UsageSnapshot s;
    for (size_t i = 0; i < kUsageKinds; i++) s.committed[i] = c_[i].load(std::memory_order_relaxed);
    return s;
  }

 private:
  std::atomic<uint64_t>& at(UsageKind k) { return c_[static_cast<size_t>(k)]; }
  const std::atomic<uint64_t>& at(UsageKind k) const { return c_[static_cast<size_t>(k)]; }
  std::array<std::atomic<uint64_t>, kUsageKinds> c_{};
};

}  // namespace kvmem
