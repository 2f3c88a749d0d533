// Fuzz target "device_state": the devices' snapshot sections
// (vmm/devices/device_state.h) from hostile bytes.
//
// The first byte picks the payload (mode % 3: 0 console, 1 free rings, 2
// free counts); for rings, a u64 of RAM size (shaped: a multiple of 2 MiB
// up to 64 GiB, or any number with mode bit 7) and a byte of vCPUs (1..16)
// follow, and mode bit 6 gives the VM a writable window of 1 MiB right
// above RAM; the rest is the payload. Every input must end in a state or an Error that names
// the payload; an accepted payload encodes back to exactly its bytes (each
// encoding is canonical), and rings that check_free_rings accepts keep
// the rules it promises, restated here.
#include <cstdint>
#include <string>
#include <vector>

#include "base/check.h"
#include "base/fuzz.h"
#include "guest/abi.h"
#include "memory/range.h"
#include "vmm/devices/device_state.h"

namespace kvmem::fuzz {
namespace {

template <class T>
void expect_error_names(const Result<T>& r, const char* what) {
  if (!r)
    KVMEM_CHECK(r.error().message.rfind(what, 0) == 0, "an error that does not start with \"{}\": {}", what,
                r.error().message);
}

void check_rings(const std::vector<FreeRingState>& rings, uint64_t ram, unsigned vcpus,
                 const std::vector<GuestRange>& windows) {
  auto s = check_free_rings(rings, ram, vcpus, windows);
  expect_error_names(s, "free ring state: ");
  if (!s) return;
  KVMEM_CHECK(rings.size() == vcpus, "accepted {} rings for {} vCPUs", rings.size(), vcpus);
  for (size_t i = 0; i < rings.size(); i++) {
    const FreeRingState& a = rings[i];
    if (!a.present()) {
      KVMEM_CHECK(a.gpa == 0 && a.completed == 0, "accepted an absent ring {} with values", i);
      continue;
    }
    const uint64_t end = a.gpa + sizeof(abi::FreeRingHeader) + a.entries * sizeof(abi::FreeReport);
    const bool in_window = !windows.empty() && windows[0].start <= a.gpa && end <= windows[0].end;
    KVMEM_CHECK(is_power_of_two(a.entries) && a.entries <= abi::kRingMaxEntries && a.gpa % 64 == 0 && end > a.gpa &&
                    (end <= ram || in_window),
                "accepted ring {} at {:#x} of {} entries in RAM of {:#x}", i, a.gpa, a.entries, ram);
    for (size_t j = 0; j < i; j++) {
      const FreeRingState& b = rings[j];
      if (!b.present()) continue;
      const uint64_t b_end = b.gpa + sizeof(abi::FreeRingHeader) + b.entries * sizeof(abi::FreeReport);
      KVMEM_CHECK(end <= b.gpa || b_end <= a.gpa, "accepted rings {} and {} overlapping", j, i);
    }
  }
}

}  // namespace

int device_state_one(const uint8_t* data, size_t size) {
  Input in(data, size);
  const uint8_t mode = in.byte();
  uint64_t ram = 0;
  unsigned vcpus = 1;
  std::vector<GuestRange> windows;
  if (mode % 3 == 1) {
    const uint64_t r = in.u64();
    ram = (mode & 0x80) ? r : (r % 32768 + 1) * (uint64_t{2} << 20);
    vcpus = static_cast<unsigned>(in.byte() % 16) + 1;
    if (auto w = GuestRange::of(ram, uint64_t{1} << 20); w && (mode & 0x40)) windows.push_back(*w);
  }
  size_t n = 0;
  const uint8_t* p = in.bytes(in.remaining(), &n);
  const std::span<const uint8_t> bytes(p, n);
  const std::vector<uint8_t> original(bytes.begin(), bytes.end());
  switch (mode % 3) {
    case 0: {
      auto s = decode_console_state(bytes);
      expect_error_names(s, "console state: ");
      if (s) KVMEM_CHECK(encode_console_state(*s) == original, "the console state does not encode back to its bytes");
      break;
    }
    case 1: {
      auto s = decode_free_rings(bytes);
      expect_error_names(s, "free ring state: ");
      if (!s) break;
      KVMEM_CHECK(encode_free_rings(*s) == original, "the ring state does not encode back to its bytes");
      check_rings(*s, ram, vcpus, windows);
      break;
    }
    default: {
      auto s = decode_free_counts(bytes);
      expect_error_names(s, "free report counts: ");
      if (s) KVMEM_CHECK(encode_free_counts(*s) == original, "the counts do not encode back to their bytes");
      break;
    }
  }
  return 0;
}

}  // namespace kvmem::fuzz

KVMEM_FUZZ_TARGET(kvmem::fuzz::device_state_one)
