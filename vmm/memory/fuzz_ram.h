// Guest RAM without KVM, for the fuzz targets that play a hostile guest
// (vmm/hypercalls_fuzz.cc, vmm/devices/free_ring_fuzz.cc; docs/fuzzing.md).
//
// One small MemoryFile and one GuestMemory live for the whole process and
// are reset (punched to zero) before each input, so nothing grows from one
// input to the next and every input starts from the same state: a corpus
// file replays the same way in `make test` as it ran under libFuzzer.
//
// The RAM is made of several allocations placed apart in the file, so it has
// more than one host-contiguous segment, as a real VM's may.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>

#include "base/check.h"
#include "base/fuzz.h"
#include "guest/abi.h"
#include "memory/memory_file.h"
#include "memory/range.h"
#include "vmm/memory/guest_memory.h"

namespace kvmem::fuzz {

inline constexpr uint64_t kRamBytes = 8ull << 20;

// The process's guest RAM, all zeros.
inline GuestMemory& fresh_ram() {
  static MemoryFile* file = [] {
    MemoryFileOptions o;
    o.name = "kvmem-fuzz";
    o.reservation = 1ull << 30;
    auto f = MemoryFile::create(o);
    KVMEM_CHECK(f.has_value(), "cannot create the fuzz memory file: {}", f.error().message);
    return f->release();
  }();
  static GuestMemory* ram = [] {
    // A hole below an allocation that stays: the RAM's first 2 MiB piece
    // fills the hole and the rest lands above, apart from it.
    auto hole = file->allocate(kHugePageSize, UsageKind::Anonymous);
    auto keep = file->allocate(kHugePageSize, UsageKind::Anonymous);
    KVMEM_CHECK(hole.has_value() && keep.has_value(), "cannot allocate around the fuzz RAM");
    file->dec_ref(*hole);
    file->wait_for_reclaim();
    auto m = GuestMemory::create(*file, kRamBytes, kHugePageSize);
    KVMEM_CHECK(m.has_value(), "cannot create fuzz guest RAM: {}", m.error().message);
    return m->release();
  }();
  auto s = ram->decommit(GuestRange(0, kRamBytes));
  KVMEM_CHECK(s.has_value(), "cannot reset fuzz guest RAM: {}", s.error().message);
  return *ram;
}

// A guest-chosen number shaped so that addresses and lengths often land in,
// at the edges of, or just outside RAM and the boot area; or any number.
inline uint64_t shaped(Input& in) {
  switch (in.byte() % 8) {
    case 0: return in.u64();
    case 1: return in.below(kRamBytes + 2 * kPageSize);
    case 2: return in.below(kRamBytes / kPageSize + 2) * kPageSize;
    case 3: return in.below(64);
    case 4: return in.below(65) * kPageSize;
    case 5: return kRamBytes - in.below(16) * kPageSize;
    case 6: return abi::kBootAreaEnd + in.below(8) * kPageSize - 4 * kPageSize;
    default: return 0 - in.below(64) * kPageSize;
  }
}

// True when [gpa, gpa + length) lies wholly in guest memory (and does not wrap).
inline bool in_ram(const GuestMemory& ram, uint64_t gpa, uint64_t length) {
  auto r = GuestRange::of(gpa, length);
  return r && ram.contains(*r);
}

// Copies bytes into guest RAM at gpa when they fit (a guest writing its memory).
inline void poke(GuestMemory& ram, uint64_t gpa, const uint8_t* bytes, uint64_t length) {
  if (!in_ram(ram, gpa, length)) return;
  while (length > 0) {  // page by page: a page never straddles two segments
    const uint64_t n = std::min(length, kPageSize - gpa % kPageSize);
    std::memcpy(ram.host(GuestAddr(gpa)), bytes, n);
    gpa += n;
    bytes += n;
    length -= n;
  }
}
inline void poke_u64(GuestMemory& ram, uint64_t gpa, uint64_t v) {
  poke(ram, gpa, reinterpret_cast<const uint8_t*>(&v), sizeof v);
}
inline uint64_t peek_u64(GuestMemory& ram, uint64_t gpa) {
  uint64_t v = 0;
  if (!in_ram(ram, gpa, sizeof v)) return 0;
  auto* out = reinterpret_cast<uint8_t*>(&v);
  for (uint64_t done = 0; done < sizeof v;) {  // page by page, as poke()
    const uint64_t n = std::min(sizeof v - done, kPageSize - (gpa + done) % kPageSize);
    std::memcpy(out + done, ram.host(GuestAddr(gpa + done)), n);
    done += n;
  }
  return v;
}

// The status docs/hypercalls.md promises for freeing [gpa, gpa + length),
// written out apart from the code that decides it.
inline int64_t expected_free_status(uint64_t gpa, uint64_t length) {
  if (length == 0 || gpa % kPageSize != 0 || length % kPageSize != 0 || gpa + length < gpa) return -EINVAL;
  if (gpa > kRamBytes || length > kRamBytes - gpa) return -EFAULT;
  if (gpa < abi::kBootAreaEnd) return -EPERM;
  return 0;
}

inline bool overlaps(uint64_t a, uint64_t a_len, uint64_t b, uint64_t b_len) {
  return a < b + b_len && b < a + a_len;
}

// True when every byte of [gpa, gpa + length) (inside RAM) reads zero.
inline bool reads_zero(GuestMemory& ram, uint64_t gpa, uint64_t length) {
  static const uint8_t zero[kPageSize] = {};
  for (uint64_t end = gpa + length; gpa < end;) {
    const uint64_t n = std::min(end - gpa, kPageSize - gpa % kPageSize);
    if (std::memcmp(ram.host(GuestAddr(gpa)), zero, n) != 0) return false;
    gpa += n;
  }
  return true;
}

}  // namespace kvmem::fuzz
