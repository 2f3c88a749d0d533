// Fuzz target "free_ring": the asynchronous free ring drained from hostile
// guest memory (drain_free_ring, what FreeRing's thread and kHcFreeRingWait
// run), on guest RAM without KVM.
//
// The input places a ring (entries, address, the guest's first `produced`)
// as kHcFreeRingSetup would accept it, then runs ops:
//   slot      write one slot
//   produce   move `produced` forward by up to a lap and a bit, or anywhere
//   poke      write input bytes anywhere in RAM (the ring included)
//   drain     drain, as the ring's thread (with a pauser) or a vCPU would
// After each drain the header, the statuses and the freed memory are checked
// against guest/abi.h's protocol.
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/check.h"
#include "base/fuzz.h"
#include "guest/abi.h"
#include "vmm/devices/free_ring.h"
#include "vmm/memory/fuzz_ram.h"

namespace kvmem::fuzz {
namespace {

// Counts parks; a pause must always be followed by its resume.
class CountingPauser : public VcpuPauser {
 public:
  void pause() override {
    KVMEM_CHECK(!paused_, "paused twice");
    paused_ = true;
    pauses++;
  }
  void resume() override {
    KVMEM_CHECK(paused_, "resumed without a pause");
    paused_ = false;
  }
  bool paused() const { return paused_; }
  uint64_t pauses = 0;

 private:
  bool paused_ = false;
};

struct Ring {
  Ring(GuestMemory& m, uint64_t g, uint64_t n, uint8_t* h) : ram(m), gpa(g), entries(n), host(h) {}
  GuestMemory& ram;
  uint64_t gpa;
  uint64_t entries;
  uint8_t* host;
  uint64_t completed = 0;  // the VMM's own count, as FreeRing keeps it
  FreeStats stats;
  std::vector<int64_t> statuses;

  uint64_t bytes() const { return sizeof(abi::FreeRingHeader) + entries * sizeof(abi::FreeReport); }
  uint64_t slot_gpa(uint64_t i) const {
    return gpa + sizeof(abi::FreeRingHeader) + (i & (entries - 1)) * sizeof(abi::FreeReport);
  }
};

void drain_op(Ring& r, Input& in) {
  const bool ring_thread = in.byte() % 2;
  CountingPauser pauser;
  // What the guest has in the ring as the drain starts.
  const uint64_t produced = peek_u64(r.ram, r.gpa);
  const uint64_t invalid_before = peek_u64(r.ram, r.gpa + 16);
  const uint64_t pending = produced - r.completed;
  std::vector<abi::FreeReport> slots;
  if (pending <= r.entries)
    for (uint64_t i = 0; i < pending; i++)
      slots.push_back({peek_u64(r.ram, r.slot_gpa(r.completed + i)), peek_u64(r.ram, r.slot_gpa(r.completed + i) + 8),
                       0, 0});
  const uint64_t completed_before = r.completed;
  r.completed = drain_free_ring(r.host, r.entries, r.completed, r.ram, r.stats, ring_thread ? &pauser : nullptr,
                                r.statuses);
  KVMEM_CHECK(!pauser.paused() && pauser.pauses <= 1, "{} pauses, paused at the end: {}", pauser.pauses,
              pauser.paused());
  if (pending == 0) {
    KVMEM_CHECK(r.completed == completed_before, "completed moved from {:#x} to {:#x} with nothing pending",
                completed_before, r.completed);
    return;
  }
  KVMEM_CHECK(r.completed == produced && peek_u64(r.ram, r.gpa + 8) == produced,
              "after a drain to {:#x}: completed {:#x}, the guest's copy {:#x}", produced, r.completed,
              peek_u64(r.ram, r.gpa + 8));
  if (pending > r.entries) {  // more than a lap: refused as a whole
    KVMEM_CHECK(pauser.pauses == 0, "parked for a refused lap");
    KVMEM_CHECK(peek_u64(r.ram, r.gpa + 16) == invalid_before + 1, "invalid {} -> {} for a refused lap",
                invalid_before, peek_u64(r.ram, r.gpa + 16));
    return;
  }
  // A slot that frees the ring itself zeroes the slots after it: the
  // promise per slot holds only when no accepted range touches the ring.
  for (const abi::FreeReport& s : slots)
    if (expected_free_status(s.gpa, s.length) == 0 && overlaps(s.gpa, s.length, r.gpa, r.bytes())) return;
  uint64_t refused = 0;
  for (uint64_t i = 0; i < pending; i++) {
    const int64_t want = expected_free_status(slots[i].gpa, slots[i].length);
    const auto got = static_cast<int64_t>(peek_u64(r.ram, r.slot_gpa(completed_before + i) + 16));
    KVMEM_CHECK(got == want, "slot {:#x} [{:#x}, +{:#x}): status {}, expected {}", completed_before + i,
                slots[i].gpa, slots[i].length, got, want);
    refused += want != 0;
    if (want == 0)
      KVMEM_CHECK(reads_zero(r.ram, slots[i].gpa, slots[i].length), "freed [{:#x}, +{:#x}) does not read zero",
                  slots[i].gpa, slots[i].length);
  }
  KVMEM_CHECK(peek_u64(r.ram, r.gpa + 16) == invalid_before + refused, "invalid {} -> {} for {} refused slots",
              invalid_before, peek_u64(r.ram, r.gpa + 16), refused);
}

void run_ops(Ring& r, Input& in) {
  for (int ops = 0; !in.empty() && ops < 512; ops++) {
    switch (in.byte() % 5) {
      case 0: {  // slot
        const uint64_t at = r.slot_gpa(in.below(r.entries));
        poke_u64(r.ram, at, shaped(in));
        poke_u64(r.ram, at + 8, shaped(in));
        break;
      }
      case 1: {  // produce: within a lap, or a little past it
        const uint64_t produced = peek_u64(r.ram, r.gpa);
        poke_u64(r.ram, r.gpa, produced + in.below(r.entries + 2));
        break;
      }
      case 2:
        poke_u64(r.ram, r.gpa + in.below(3) * 8, in.u64());  // any header word
        break;
      case 3: {
        const uint64_t gpa = shaped(in);
        size_t n = 0;
        const uint8_t* bytes = in.bytes(in.below(257), &n);
        poke(r.ram, gpa, bytes, n);
        break;
      }
      default:
        drain_op(r, in);
        break;
    }
  }
  drain_op(r, in);  // the stop's last drain
}

}  // namespace

int free_ring_one(const uint8_t* data, size_t size) {
  Input in(data, size);
  GuestMemory& ram = fresh_ram();
  const uint64_t entries = uint64_t{1} << in.below(13);  // 1..kRingMaxEntries
  const uint64_t gpa = shaped(in) & ~uint64_t{63};
  // Where kHcFreeRingSetup would refuse the ring, there is nothing to drain.
  auto range = GuestRange::of(gpa, sizeof(abi::FreeRingHeader) + entries * sizeof(abi::FreeReport));
  if (!range) return 0;
  const HostSpan span = ram.host_span(*range);
  if (span.empty()) return 0;
  poke_u64(ram, gpa, shaped(in));  // the guest's `produced` at setup
  Ring r(ram, gpa, entries, span.data());
  r.completed = peek_u64(ram, gpa);  // FreeRing::start begins where the producer stands
  poke_u64(ram, gpa + 8, r.completed);
  run_ops(r, in);
  return 0;
}

}  // namespace kvmem::fuzz

KVMEM_FUZZ_TARGET(kvmem::fuzz::free_ring_one)
