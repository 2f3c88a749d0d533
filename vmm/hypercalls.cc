#include "vmm/hypercalls.h"

#include <cerrno>
#include <iterator>

#include <fmt/format.h>

#include "guest/boot.h"
#include "vmm/devices/free_reports.h"
#include "vmm/memory/guest_memory.h"

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

HypercallOutcome refuse(HypercallContext& ctx, int err) {
  ctx.stats.invalid++;
  return resume(-err);
}

HypercallOutcome console_write(HypercallContext& ctx, uint64_t gpa, uint64_t length) {
  if (length > abi::kConsoleMax) return refuse(ctx, EINVAL);
  auto range = GuestRange::of(gpa, length);  // the registers, checked: from here typed
  if (!range || !ctx.memory.contains(*range)) return refuse(ctx, EFAULT);
  if (length > 0 && ctx.console) ctx.console(ctx.memory.read(*range));
  return resume(static_cast<int64_t>(length));
}

std::string fail_message(uint64_t reason, uint64_t addr, uint64_t expected, uint64_t actual) {
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
    default:
      return fmt::format("guest reported failure (reason {}) at {:#x}: expected {:#x}, actual {:#x}", reason,
                         addr, expected, actual);
  }
}

}  // namespace

const char* hypercall_name(uint32_t nr) {
  static const char* const names[] = {"version",     "console_write",   "exit",          "fail",
                                      "exception",   "report_free",     "free_ring_setup", "free_ring_wait"};
  static_assert(std::size(names) == abi::kHypercallCount);
  return nr < abi::kHypercallCount ? names[nr] : "unknown";
}

HypercallOutcome handle_hypercall(HypercallContext& ctx, const kvm_regs& regs) {
  const uint64_t nr = regs.rax & 0xffffffff;  // `out` sends eax; the upper half is noise
  if (nr >= abi::kHypercallCount) {
    ctx.stats.unknown++;
    return refuse(ctx, ENOSYS);
  }
  ctx.stats.calls[nr]++;
  switch (nr) {
    case abi::kHcVersion:
      return resume(abi::kVersion);
    case abi::kHcConsoleWrite:
      return console_write(ctx, regs.rdi, regs.rsi);
    case abi::kHcExit:
      return {HypercallOutcome::Action::kExit, 0, regs.rdi, {}, FailureKind::kNone};
    case abi::kHcFail:
      return guest_failed(fail_kind(regs.rdi), fail_message(regs.rdi, regs.rsi, regs.rdx, regs.r10));
    case abi::kHcException:
      return guest_failed(FailureKind::kGuest,
              fmt::format("guest exception {} (vector {}) at rip {:#x}: error code {:#x}, cr2 {:#x}",
                          guest::exception_name(regs.rdi), regs.rdi, regs.rsi, regs.rdx, regs.r10));
    case abi::kHcReportFree: {
      const int64_t r = report_free_list(ctx.memory, ctx.frees, regs.rdi, regs.rsi);
      if (r < 0) ctx.stats.invalid++;
      return resume(r);
    }
    case abi::kHcFreeRingWait: {
      const int64_t r = ctx.wait_free_ring ? ctx.wait_free_ring(regs.rdi) : -EINVAL;
      if (r < 0) ctx.stats.invalid++;
      return resume(r);
    }
    case abi::kHcFreeRingSetup: {
      const int64_t r = ctx.setup_free_ring ? ctx.setup_free_ring(regs.rdi, regs.rsi) : -ENODEV;
      if (r < 0) ctx.stats.invalid++;
      return resume(r);
    }
  }
  return refuse(ctx, ENOSYS);
}

}  // namespace kvmem
