// The VMM side of the hypercall ABI (guest/abi.h, docs/hypercalls.md).
//
// handle_hypercall() gets the guest's registers as they were at the `out`
// and decides what happens next. It trusts no register: every length and
// address is checked against the VM's RAM before memory is touched, and a
// bad argument comes back to the guest as a negative errno in rax (and is
// counted), never as a VMM failure.
#pragma once

#include <linux/kvm.h>

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "guest/abi.h"
#include "vmm/failure.h"

namespace kvmem {

class GuestMemory;

struct HypercallStats {
  std::array<uint64_t, abi::kHypercallCount> calls{};  // by number, valid numbers only
  uint64_t unknown = 0;  // numbers the ABI does not define
  uint64_t invalid = 0;  // calls refused with a negative errno
};

struct HypercallOutcome {
  enum class Action { kResume, kExit, kFail };
  Action action = Action::kResume;
  int64_t status = 0;      // kResume: written to the guest's rax
  uint64_t exit_code = 0;  // kExit
  std::string message;     // kFail: a sentence saying what went wrong
  FailureKind kind = FailureKind::kNone;  // kFail: whose fault, and what kind
};

struct FreeStats;

struct HypercallContext {
  GuestMemory& memory;
  HypercallStats& stats;
  std::function<void(std::string_view)> console;  // receives console text
  FreeStats& frees;
  // kHcFreeRingSetup: returns the status for the guest.
  std::function<int64_t(uint64_t ring_gpa, uint64_t entries)> setup_free_ring;
  // kHcFreeRingWait: returns the status for the guest.
  std::function<int64_t(uint64_t target)> wait_free_ring;
};

// "console_write" for kHcConsoleWrite; nr < abi::kHypercallCount.
const char* hypercall_name(uint32_t nr);

HypercallOutcome handle_hypercall(HypercallContext& ctx, const kvm_regs& regs);

}  // namespace kvmem
