// The VMM side of the hypercall ABI (guest/abi.h, docs/hypercalls.md).
//
// handle_hypercall() gets the guest's registers as they were at the `out`,
// hands the call to the device that serves it (the console, the free-report
// devices) and decides what happens next. It trusts no register: every
// length and address is checked against the VM's RAM before memory is
// touched, and a bad argument comes back to the guest as a negative errno in
// rax (and is counted), never as a VMM failure. A device that cannot go on
// because of the host (out of file descriptors) ends the run as kHost.
#pragma once

#include <linux/kvm.h>

#include <array>
#include <cstdint>
#include <string>

#include "guest/abi.h"
#include "vmm/failure.h"

namespace kvmem {

class GuestMemory;

// One per vCPU, written only by its thread; the Vm sums them after the run.
struct HypercallStats {
  std::array<uint64_t, abi::kHypercallCount> calls{};  // by number, valid numbers only
  uint64_t unknown = 0;  // numbers the ABI does not define
  uint64_t invalid = 0;  // calls refused with a negative errno
};

struct HypercallOutcome {
  // kSnapshot: the vCPU settles, captures its state and arrives at the
  // VM's SnapshotPoint (vmm/devices/snapshot_point.h), which decides.
  enum class Action { kResume, kExit, kFail, kSnapshot };
  Action action = Action::kResume;
  int64_t status = 0;      // kResume: written to the guest's rax
  uint64_t exit_code = 0;  // kExit: 0..255; kSnapshot: the guest's `then`
  std::string message;     // kFail: a sentence saying what went wrong
  FailureKind kind = FailureKind::kNone;  // kFail: whose fault, and what kind
};

class Barriers;
class Console;
class FreeReports;
class FreeRingDevice;
class SnapshotPoint;
class Windows;

// The devices of one VM that hypercalls reach; they outlive every vCPU.
struct Devices {
  const GuestMemory& memory;
  Console& console;
  FreeReports& free_reports;
  // Null in a VM without the asynchronous ring (the hypercall fuzz target,
  // which has no KVM to bind a doorbell with): setup gets -ENODEV, wait
  // -EINVAL.
  FreeRingDevice* free_ring;
  // The VM's file windows: MMIO exits inside one are theirs. Null: none.
  Windows* windows = nullptr;
  // Where kHcSnapshot's vCPUs meet. Null: no snapshots (the call answers
  // kSnapshotNotTaken).
  SnapshotPoint* snapshot = nullptr;
  // Names the barrier of a barrier's kHcFail. Null: the message gives
  // the guest's numbers only.
  const Barriers* barriers = nullptr;
};

// "console_write" for kHcConsoleWrite; nr < abi::kHypercallCount.
const char* hypercall_name(uint32_t nr);

// Called on vCPU `vcpu`'s thread; `stats` is that vCPU's. The free ring
// calls reach that vCPU's ring.
HypercallOutcome handle_hypercall(const Devices& devices, HypercallStats& stats, const kvm_regs& regs,
                                  unsigned vcpu = 0);

}  // namespace kvmem
