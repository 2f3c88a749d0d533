#include "vmm/hypercalls.h"

#include <cerrno>
#include <iterator>

#include <fmt/format.h>

#include "guest/boot.h"
#include "vmm/devices/barriers.h"
#include "vmm/devices/console.h"
#include "vmm/devices/free_reports.h"
#include "vmm/devices/free_ring.h"
#include "vmm/devices/snapshot_point.h"

namespace kvmem {
namespace {

HypercallOutcome resume(int64_t status) { return {HypercallOutcome::Action::kResume, status, 0, {}, FailureKind::kNone}; }

HypercallOutcome guest_failed(FailureKind kind, std::string message) {
  return {HypercallOutcome::Action::kFail, 0, 0, std::move(message), kind};
}

// A verify that read the wrong data, or a free report answered unexpectedly,
// means memory was lost or corrupted; any other failure the guest reports is
// its own.
FailureKind fail_kind(uint64_t reason) {
  return reason == abi::kFailVerify || reason == abi::kFailReportStatus ? FailureKind::kIntegrity
                                                                         : FailureKind::kGuest;
}

// A device's status for the guest: negative ones are counted as refusals.
HypercallOutcome answer(HypercallStats& stats, int64_t status) {
  if (status < 0) stats.invalid++;
  return resume(status);
}

std::string fail_message(uint64_t reason, uint64_t addr, uint64_t expected, uint64_t actual, uint64_t extra) {
  switch (reason) {
    case abi::kFailVerify:
      return fmt::format("verify failed at guest-physical {:#x}: expected {:#018x}, read {:#018x}", addr,
                         expected, actual);
    case abi::kFailHypercallStatus:
      return fmt::format("hypercall {} returned {}, expected {}", addr, static_cast<int64_t>(actual),
                         static_cast<int64_t>(expected));
    case abi::kFailReportStatus:
      return fmt::format("free report of guest-physical {:#x} got status {}, expected {}", addr,
                         static_cast<int64_t>(actual), static_cast<int64_t>(expected));
    case abi::kFailBarrierTimeout:
      return fmt::format("barrier {} (barrier step {}) timed out after {} ms with {} vCPUs there", expected, addr,
                         extra, actual);
    case abi::kFailBarrierStranded:
      return fmt::format("barrier {} (barrier step {}) cannot complete: a vCPU exited without arriving (mask {:#x})",
                         expected, addr, extra);
    case abi::kFailWaitTimeout:
      return fmt::format("wait_word at guest-physical {:#x} for {:#018x} timed out after {} ms: it read {:#018x} last",
                         addr, expected, extra, actual);
    default:
      return fmt::format("guest reported failure (reason {}) at {:#x}: expected {:#x}, actual {:#x}", reason,
                         addr, expected, actual);
  }
}

}  // namespace

const char* hypercall_name(uint32_t nr) {
  static const char* const names[] = {"version",     "console_write",   "exit",          "fail",
                                      "exception",   "report_free",     "free_ring_setup", "free_ring_wait",
                                      "snapshot"};
  static_assert(std::size(names) == abi::kHypercallCount);
  return nr < abi::kHypercallCount ? names[nr] : "unknown";
}

HypercallOutcome handle_hypercall(const Devices& devices, HypercallStats& stats, const kvm_regs& regs, unsigned vcpu) {
  const uint64_t nr = regs.rax & 0xffffffff;  // `out` sends eax; the upper half is noise
  if (nr >= abi::kHypercallCount) {
    stats.unknown++;
    return answer(stats, -ENOSYS);
  }
  stats.calls[nr]++;
  switch (nr) {
    case abi::kHcVersion:
      return resume(abi::kVersion);
    case abi::kHcConsoleWrite:
      return answer(stats, devices.console.write_from(devices.memory, regs.rdi, regs.rsi));
    case abi::kHcExit:
      // As a process's exit status is: only the low 8 bits count.
      return {HypercallOutcome::Action::kExit, 0, regs.rdi & 0xff, {}, FailureKind::kNone};
    case abi::kHcFail:
      if (devices.barriers && (regs.rdi == abi::kFailBarrierTimeout || regs.rdi == abi::kFailBarrierStranded))
        return guest_failed(FailureKind::kGuest,
                            devices.barriers->failure(vcpu, regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8));
      return guest_failed(fail_kind(regs.rdi), fail_message(regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8));
    case abi::kHcException:
      return guest_failed(FailureKind::kGuest,
              fmt::format("guest exception {} (vector {}) at rip {:#x}: error code {:#x}, cr2 {:#x}",
                          guest::exception_name(regs.rdi), regs.rdi, regs.rsi, regs.rdx, regs.r10));
    case abi::kHcReportFree:
      return answer(stats, devices.free_reports.report(regs.rdi, regs.rsi));
    case abi::kHcFreeRingWait:
      return answer(stats, devices.free_ring ? devices.free_ring->wait(vcpu, regs.rdi) : -EINVAL);
    case abi::kHcSnapshot:
      if (regs.rdi != abi::kSnapshotContinue && regs.rdi != abi::kSnapshotExit) return answer(stats, -EINVAL);
      if (!devices.snapshot || !devices.snapshot->armed()) return resume(abi::kSnapshotNotTaken);
      return {HypercallOutcome::Action::kSnapshot, 0, regs.rdi, {}, FailureKind::kNone};
    case abi::kHcFreeRingSetup: {
      if (!devices.free_ring) return answer(stats, -ENODEV);
      auto r = devices.free_ring->setup(vcpu, regs.rdi, regs.rsi);
      if (!r) return guest_failed(FailureKind::kHost, r.error().message);
      return answer(stats, *r);
    }
  }
  return answer(stats, -ENOSYS);
}

}  // namespace kvmem
