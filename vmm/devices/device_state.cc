#include "vmm/devices/device_state.h"

#include <algorithm>

#include "guest/abi.h"
#include "memory/range.h"
#include "snapshot/payload.h"
#include "vmm/devices/console.h"

namespace kvmem {
namespace {

constexpr uint32_t kConsoleMagic = payload_magic("KCON");
constexpr uint32_t kRingsMagic = payload_magic("KRNG");
constexpr uint32_t kCountsMagic = payload_magic("KFRC");
constexpr uint64_t kRingStateBytes = 24;

Status exact_end(const PayloadReader& r, const char* what) {
  if (r.remaining() != 0) return fail("{}: {} bytes after its last field", what, r.remaining());
  return {};
}

}  // namespace

std::vector<uint8_t> encode_console_state(const ConsoleState& s) {
  PayloadWriter w;
  w.u32(kConsoleMagic);
  w.u32(kDeviceStateVersion);
  w.u64(s.dropped);
  w.u64(s.text.size());
  w.bytes(std::span(reinterpret_cast<const uint8_t*>(s.text.data()), s.text.size()));
  return w.take();
}

Result<ConsoleState> decode_console_state(std::span<const uint8_t> bytes) {
  constexpr const char* kWhat = "console state";
  constexpr uint64_t kMax = Console::kHeadBytes + Console::kTailBytes;
  PayloadReader r(bytes);
  KVMEM_TRY(payload_header(r, kWhat, kConsoleMagic, kDeviceStateVersion));
  ConsoleState s;
  uint64_t n = 0;
  if (!r.u64(&s.dropped) || !r.u64(&n)) return fail("{}: {} bytes is too short for its header", kWhat, bytes.size());
  if (n > kMax) return fail("{}: a record of {} bytes, more than the {} the console keeps", kWhat, n, kMax);
  std::span<const uint8_t> text;
  if (!r.bytes(n, &text)) return fail("{}: a record of {} bytes, but {} bytes follow", kWhat, n, r.remaining());
  KVMEM_TRY(exact_end(r, kWhat));
  if (s.dropped > 0 && n != kMax)
    return fail("{}: {} bytes dropped, but the record of {} bytes is not full ({})", kWhat, s.dropped, n, kMax);
  s.text.assign(text.begin(), text.end());
  return s;
}

std::vector<uint8_t> encode_free_rings(const std::vector<FreeRingState>& rings) {
  PayloadWriter w;
  w.u32(kRingsMagic);
  w.u32(kDeviceStateVersion);
  w.u32(static_cast<uint32_t>(rings.size()));
  w.u32(0);
  for (const FreeRingState& s : rings) {
    w.u64(s.gpa);
    w.u64(s.entries);
    w.u64(s.completed);
  }
  return w.take();
}

Result<std::vector<FreeRingState>> decode_free_rings(std::span<const uint8_t> bytes) {
  constexpr const char* kWhat = "free ring state";
  PayloadReader r(bytes);
  KVMEM_TRY(payload_header(r, kWhat, kRingsMagic, kDeviceStateVersion));
  uint32_t n = 0, reserved = 0;
  if (!r.u32(&n) || !r.u32(&reserved)) return fail("{}: {} bytes is too short for its header", kWhat, bytes.size());
  if (reserved != 0) return fail("{}: reserved is {:#x}, not 0", kWhat, reserved);
  if (n > abi::kMaxDoorbells) return fail("{}: rings for {} vCPUs, more than the {} that may have one", kWhat, n,
                                          abi::kMaxDoorbells);
  if (r.remaining() != uint64_t{n} * kRingStateBytes)
    return fail("{}: {} bytes for {} vCPUs' rings of {} bytes each", kWhat, r.remaining(), n, kRingStateBytes);
  std::vector<FreeRingState> rings(n);
  for (FreeRingState& s : rings) (void)(r.u64(&s.gpa) && r.u64(&s.entries) && r.u64(&s.completed));
  return rings;
}

Status check_free_rings(const std::vector<FreeRingState>& rings, uint64_t ram_bytes, unsigned vcpus,
                        std::span<const GuestRange> windows) {
  constexpr const char* kWhat = "free ring state";
  if (rings.size() != vcpus) return fail("{}: rings for {} vCPUs, and the VM has {}", kWhat, rings.size(), vcpus);
  std::vector<GuestRange> placed(rings.size());
  for (size_t i = 0; i < rings.size(); i++) {
    const FreeRingState& s = rings[i];
    if (!s.present()) {
      if (s.gpa || s.completed)
        return fail("{}: vCPU {} has no ring (0 entries), yet gpa {:#x} and completed {:#x}", kWhat, i, s.gpa,
                    s.completed);
      continue;
    }
    if (s.entries > abi::kRingMaxEntries || !is_power_of_two(s.entries))
      return fail("{}: vCPU {}'s ring has {} entries, not a power of two up to {}", kWhat, i, s.entries,
                  abi::kRingMaxEntries);
    if (s.gpa % 64 != 0) return fail("{}: vCPU {}'s ring at {:#x} is not 64-byte aligned", kWhat, i, s.gpa);
    // entries <= 4096: the length cannot overflow; the end can.
    auto range = GuestRange::of(s.gpa, sizeof(abi::FreeRingHeader) + s.entries * sizeof(abi::FreeReport));
    const bool in_window = range && std::any_of(windows.begin(), windows.end(),
                                                [&](const GuestRange& w) { return w.is_superset_of(*range); });
    if (!range || (range->end > ram_bytes && !in_window))
      return fail("{}: vCPU {}'s ring at {:#x} of {} entries lies outside RAM [0x0, {:#x}){}", kWhat, i, s.gpa,
                  s.entries, ram_bytes, windows.empty() ? "" : " and outside the VM's writable windows");
    for (size_t j = 0; j < i; j++)
      if (!placed[j].empty() && placed[j].overlaps(*range))
        return fail("{}: vCPU {}'s ring {} overlaps vCPU {}'s {}", kWhat, i, *range, j, placed[j]);
    placed[i] = *range;
  }
  return {};
}

std::vector<uint8_t> encode_free_counts(const FreeCounts& c) {
  PayloadWriter w;
  w.u32(kCountsMagic);
  w.u32(kDeviceStateVersion);
  for (uint64_t v : {c.reports, c.ranges, c.invalid_ranges, c.bytes_reported, c.bytes_decommitted}) w.u64(v);
  return w.take();
}

Result<FreeCounts> decode_free_counts(std::span<const uint8_t> bytes) {
  constexpr const char* kWhat = "free report counts";
  PayloadReader r(bytes);
  KVMEM_TRY(payload_header(r, kWhat, kCountsMagic, kDeviceStateVersion));
  FreeCounts c;
  if (!r.u64(&c.reports) || !r.u64(&c.ranges) || !r.u64(&c.invalid_ranges) || !r.u64(&c.bytes_reported) ||
      !r.u64(&c.bytes_decommitted))
    return fail("{}: {} bytes is too short for its five counters", kWhat, bytes.size());
  KVMEM_TRY(exact_end(r, kWhat));
  return c;
}

}  // namespace kvmem
