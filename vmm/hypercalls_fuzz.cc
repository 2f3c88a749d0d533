// Fuzz target "hypercalls": a hostile guest's registers and memory against
// handle_hypercall() and the free-report checks, on guest RAM without KVM.
//
// The input is a little program of ops, each one byte and its operands:
//   poke      write input bytes into guest RAM
//   report    write a FreeReport list into RAM, then call kHcReportFree on it
//   call      any hypercall number with any registers
// Addresses, lengths and counts are shaped (fuzz_ram.h) so that they often
// land in RAM or at its edges. Each call's outcome is checked against what
// docs/hypercalls.md promises, and accepted free ranges must read zero.
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/fuzz.h"
#include "guest/abi.h"
#include "vmm/devices/console.h"
#include "vmm/devices/free_reports.h"
#include "vmm/hypercalls.h"
#include "vmm/memory/fuzz_ram.h"

namespace kvmem::fuzz {
namespace {

struct Guest {
  explicit Guest(GuestMemory& r) : ram(r) {}
  GuestMemory& ram;
  HypercallStats stats;
  FreeStats frees;
  uint64_t calls = 0;
  uint64_t console_bytes = 0;  // of the last call
  Console console{[this](std::string_view t) { console_bytes += t.size(); }};  // echo sees every byte
  FreeReports reports{ram, frees};
  Devices devices{ram, console, reports, nullptr};

  HypercallOutcome call(const kvm_regs& regs) {
    console_bytes = 0;
    HypercallOutcome o = handle_hypercall(devices, stats, regs);
    calls++;
    const uint64_t counted = std::accumulate(stats.calls.begin(), stats.calls.end(), stats.unknown);
    KVMEM_CHECK(counted == calls, "{} calls counted for {} made", counted, calls);
    KVMEM_CHECK(frees.invalid_ranges <= frees.ranges && frees.bytes_decommitted <= frees.bytes_reported,
                "free counters: {} of {} ranges invalid, {} of {} bytes decommitted", frees.invalid_ranges.load(),
                frees.ranges.load(), frees.bytes_decommitted.load(), frees.bytes_reported.load());
    if (o.action == HypercallOutcome::Action::kFail) {
      KVMEM_CHECK(!o.message.empty(), "a failure without a message");
      (void)nlohmann::json{{"error", o.message}}.dump();  // run --json reports it
    }
    return o;
  }
};

void poke_op(Guest& g, Input& in) {
  const uint64_t gpa = shaped(in);
  size_t n = 0;
  const uint8_t* bytes = in.bytes(in.below(4097), &n);
  poke(g.ram, gpa, bytes, n);
}

// A FreeReport list at a guest-chosen place, then the call that reports it.
void report_op(Guest& g, Input& in) {
  const uint64_t list = shaped(in) & ~uint64_t{7};
  const uint64_t count = in.below(65);
  std::vector<abi::FreeReport> entries(count);
  for (abi::FreeReport& e : entries) {
    e.gpa = shaped(in);
    e.length = shaped(in);
    e.status = in.u64();
    poke(g.ram, list + (&e - entries.data()) * sizeof e, reinterpret_cast<const uint8_t*>(&e), sizeof e);
  }
  const uint64_t list_bytes = count * sizeof(abi::FreeReport);
  const bool placed = count > 0 && in_ram(g.ram, list, list_bytes);
  kvm_regs regs{};
  regs.rax = abi::kHcReportFree;
  regs.rdi = list;
  regs.rsi = in.byte() % 16 == 0 ? shaped(in) : count;
  const HypercallOutcome o = g.call(regs);
  KVMEM_CHECK(o.action == HypercallOutcome::Action::kResume, "report_free did not resume");
  if (o.status < 0) {
    KVMEM_CHECK(o.status == -EINVAL || o.status == -EFAULT, "report_free returned {}", o.status);
    return;
  }
  KVMEM_CHECK(static_cast<uint64_t>(o.status) <= regs.rsi, "{} of {} ranges decommitted", o.status, regs.rsi);
  if (!placed || regs.rsi != count) return;
  // An accepted range may free the list itself, and then later entries read
  // as zeros: the promise per entry holds only when no range touches the list.
  for (const abi::FreeReport& e : entries)
    if (expected_free_status(e.gpa, e.length) == 0 && overlaps(e.gpa, e.length, list, list_bytes)) return;
  int64_t accepted = 0;
  for (uint64_t i = 0; i < count; i++) {
    const abi::FreeReport& e = entries[i];
    const int64_t want = expected_free_status(e.gpa, e.length);
    const auto got = static_cast<int64_t>(peek_u64(g.ram, list + i * sizeof e + 16));
    KVMEM_CHECK(got == want, "entry {} [{:#x}, +{:#x}): status {}, expected {}", i, e.gpa, e.length, got, want);
    if (want == 0) {
      accepted++;
      KVMEM_CHECK(reads_zero(g.ram, e.gpa, e.length), "freed [{:#x}, +{:#x}) does not read zero", e.gpa, e.length);
    }
  }
  KVMEM_CHECK(o.status == accepted, "report_free returned {} for {} accepted ranges", o.status, accepted);
}

void call_op(Guest& g, Input& in) {
  kvm_regs regs{};
  const uint8_t nr = in.byte();
  regs.rax = nr < 0xf0 ? nr % (abi::kHypercallCount + 1) : in.u64();
  regs.rdi = shaped(in);
  regs.rsi = shaped(in);
  regs.rdx = shaped(in);
  regs.r10 = shaped(in);
  const HypercallOutcome o = g.call(regs);
  if ((regs.rax & 0xffffffff) == abi::kHcConsoleWrite && o.status >= 0) {
    KVMEM_CHECK(static_cast<uint64_t>(o.status) == regs.rsi && regs.rsi <= abi::kConsoleMax &&
                    g.console_bytes == regs.rsi,
                "console_write of {} bytes returned {}, passed on {}", regs.rsi, o.status, g.console_bytes);
  }
}

}  // namespace

int hypercalls_one(const uint8_t* data, size_t size) {
  Input in(data, size);
  Guest g(fresh_ram());
  for (int ops = 0; !in.empty() && ops < 256; ops++) {
    switch (in.byte() % 3) {
      case 0: poke_op(g, in); break;
      case 1: report_op(g, in); break;
      default: call_op(g, in); break;
    }
  }
  return 0;
}

}  // namespace kvmem::fuzz

KVMEM_FUZZ_TARGET(kvmem::fuzz::hypercalls_one)
