#include "vmm/vcpu.h"

#include "vmm/memory/window.h"
#include "vmm/devices/snapshot_point.h"

#include <signal.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <x86intrin.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <utility>

#include "guest/abi.h"
#include "guest/boot.h"

namespace kvmem {
namespace {

// The watchdog sends kTimeoutSignal to the vCPU's thread; pause and stop
// send kKickSignal. Both handlers set immediate_exit (see vcpu.h, Kicks).
constexpr int kTimeoutSignal = SIGUSR1;
constexpr int kKickSignal = SIGUSR2;
thread_local kvm_run* t_run = nullptr;
thread_local volatile sig_atomic_t t_timed_out = 0;

void on_timeout(int) {
  t_timed_out = 1;
  if (t_run) t_run->immediate_exit = 1;
}

void on_kick(int) {
  if (t_run) t_run->immediate_exit = 1;
}

Status install_signal_handlers() {
  static std::once_flag once;
  static int err = 0;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = on_timeout;  // no SA_RESTART: KVM_RUN must return EINTR
    sigemptyset(&sa.sa_mask);
    if (sigaction(kTimeoutSignal, &sa, nullptr) < 0) err = errno;
    sa.sa_handler = on_kick;
    if (sigaction(kKickSignal, &sa, nullptr) < 0) err = errno;
  });
  if (err) return sys_fail("cannot install the vCPU's signal handlers", "sigaction", err);
  return {};
}

// A per-run POSIX timer aimed at the calling thread.
class Watchdog {
 public:
  static Result<Watchdog> arm(uint64_t timeout_ms) {
    sigevent sev{};
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = kTimeoutSignal;
    sev._sigev_un._tid = static_cast<pid_t>(syscall(SYS_gettid));
    timer_t timer;
    if (timer_create(CLOCK_MONOTONIC, &sev, &timer) < 0)
      return sys_fail("cannot create the watchdog timer", "timer_create", errno);
    itimerspec its{};
    its.it_value.tv_sec = static_cast<time_t>(timeout_ms / 1000);
    its.it_value.tv_nsec = static_cast<long>(timeout_ms % 1000) * 1'000'000;
    if (timer_settime(timer, 0, &its, nullptr) < 0) {
      int err = errno;
      timer_delete(timer);
      return sys_fail("cannot arm the watchdog timer", "timer_settime", err);
    }
    return Watchdog(timer);
  }
  Watchdog(Watchdog&& o) noexcept : timer_(o.timer_), armed_(std::exchange(o.armed_, false)) {}
  ~Watchdog() {
    if (armed_) timer_delete(timer_);
  }

 private:
  explicit Watchdog(timer_t t) : timer_(t), armed_(true) {}
  timer_t timer_;
  bool armed_;
};

// The host's TSC ticks per millisecond over a 20 ms sleep, measured once.
uint64_t measured_tsc_khz() {
  static const uint64_t khz = [] {
    timespec t0{}, t1{}, nap{0, 20'000'000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const uint64_t c0 = __rdtsc();
    while (nanosleep(&nap, &nap) != 0 && errno == EINTR) {
    }
    const uint64_t c1 = __rdtsc();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const int64_t ns = (t1.tv_sec - t0.tv_sec) * 1'000'000'000 + (t1.tv_nsec - t0.tv_nsec);
    return std::max<uint64_t>(1, (c1 - c0) * 1'000'000 / static_cast<uint64_t>(std::max<int64_t>(ns, 1)));
  }();
  return khz;
}

const char* exit_name(uint32_t reason) {
  switch (reason) {
    case KVM_EXIT_IO: return "io";
    case KVM_EXIT_HLT: return "hlt";
    case KVM_EXIT_MMIO: return "mmio";
    case KVM_EXIT_SHUTDOWN: return "shutdown";
    case KVM_EXIT_FAIL_ENTRY: return "fail_entry";
    case KVM_EXIT_INTERNAL_ERROR: return "internal_error";
    case KVM_EXIT_EXCEPTION: return "exception";
    case KVM_EXIT_DEBUG: return "debug";
    case KVM_EXIT_INTR: return "intr";
    case KVM_EXIT_SYSTEM_EVENT: return "system_event";
    default: return "other";
  }
}

bool end(VcpuRun& out, RunOutcome outcome, FailureKind kind, std::string message) {
  out.outcome = outcome;
  out.failure = kind;
  out.message = std::move(message);
  return true;
}

}  // namespace

Result<std::unique_ptr<Vcpu>> Vcpu::create(const Kvm& kvm, KvmVm& vm, unsigned id,
                                           const std::vector<kvm_cpuid_entry2>* cpuid, const kvm_regs& regs) {
  KvmVcpu c = KVMEM_TRY(vm.create_vcpu(id));
  if (cpuid) KVMEM_TRY(c.set_cpuid(*cpuid));
  kvm_sregs sregs = KVMEM_TRY(c.get_sregs());
  guest::long_mode_sregs(sregs);
  KVMEM_TRY(c.set_sregs(sregs));
  KVMEM_TRY(c.set_regs(regs));
  // Registers ride in kvm_run at every exit: a hypercall costs one exit and
  // no extra ioctl (each would be ~6 us here).
  const bool sync_regs = (kvm.check_extension(KVM_CAP_SYNC_REGS) & KVM_SYNC_X86_REGS) != 0;
  if (sync_regs) c.run_struct()->kvm_valid_regs = KVM_SYNC_X86_REGS;
  return std::unique_ptr<Vcpu>(new Vcpu(std::move(c), id, sync_regs));
}

void Vcpu::kick_locked() {
  if (running_) pthread_kill(thread_, kKickSignal);
}

void Vcpu::request_stop() {
  stop_requested_.store(true);
  std::lock_guard lock(mu_);
  if (in_guest_.load()) kick_locked();
}

void Vcpu::begin_pause() {
  pause_requests_.fetch_add(1);
  std::lock_guard lock(mu_);
  if (in_guest_.load()) kick_locked();
}

void Vcpu::wait_paused() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this] { return !in_guest_.load(); });
}

void Vcpu::resume() {
  {
    std::lock_guard lock(mu_);
    pause_requests_.fetch_sub(1);
  }
  cv_.notify_all();
}

bool Vcpu::enter_guest() {
  if (pause_requests_.load() > 0) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return pause_requests_.load() == 0; });
  }
  in_guest_.store(true);
  if (pause_requests_.load() == 0 && !stop_requested_.load()) return true;
  left_guest();
  return false;
}

void Vcpu::left_guest() {
  {
    std::lock_guard lock(mu_);
    in_guest_.store(false);
  }
  cv_.notify_all();
}

Result<kvm_regs> Vcpu::regs_at_exit() const {
  if (sync_regs_) return vcpu_.run_struct()->s.regs.regs;
  return vcpu_.get_regs();
}

Status Vcpu::set_status(const kvm_regs& regs, int64_t status) {
  kvm_run* run = vcpu_.run_struct();
  if (sync_regs_) {
    run->s.regs.regs.rax = static_cast<uint64_t>(status);
    run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
    return {};
  }
  kvm_regs r = regs;
  r.rax = static_cast<uint64_t>(status);
  return vcpu_.set_regs(r);
}

VcpuRun Vcpu::run(const Devices& devices, uint64_t timeout_ms) {
  VcpuRun out;
  if (auto s = install_signal_handlers(); !s) {
    end(out, RunOutcome::kFailed, FailureKind::kHost, s.error().message);
    return out;
  }
  kvm_run* run = vcpu_.run_struct();
  t_run = run;
  t_timed_out = 0;
  auto watchdog = Watchdog::arm(timeout_ms);
  if (!watchdog) {
    t_run = nullptr;
    end(out, RunOutcome::kFailed, FailureKind::kHost, watchdog.error().message);
    return out;
  }
  {
    std::lock_guard lock(mu_);
    thread_ = pthread_self();
    running_ = true;
  }
  for (bool done = false; !done;) {
    if (stop_requested_.load()) {
      done = end(out, RunOutcome::kStopped, FailureKind::kStopped, {});
      break;
    }
    if (!enter_guest()) continue;
    auto entered = vcpu_.run();
    left_guest();
    if (!entered) {
      done = end(out, RunOutcome::kFailed, FailureKind::kHost, entered.error().message);
    } else if (!*entered) {  // EINTR: the watchdog, a pause, a stop, or a stray signal
      out.exits["intr"]++;
      // Clear first, then look: a watchdog kick landing after the clear sets
      // immediate_exit again, so it cannot be lost.
      run->immediate_exit = 0;
      if (t_timed_out) {
        auto regs = vcpu_.get_regs();
        done = end(out, RunOutcome::kTimeout, FailureKind::kTimeout,
                   regs ? fmt::format("guest did not finish within {} ms; it was at rip {:#x}", timeout_ms, regs->rip)
                        : fmt::format("guest did not finish within {} ms", timeout_ms));
      }
    } else {
      out.exits[exit_name(run->exit_reason)]++;
      done = handle_exit(devices, out);
    }
  }
  {
    // After this the thread may go: nobody signals it any more.
    std::lock_guard lock(mu_);
    running_ = false;
  }
  t_run = nullptr;
  return out;
}

bool Vcpu::handle_exit(const Devices& devices, VcpuRun& out) {
  kvm_run* run = vcpu_.run_struct();
  auto regs = regs_at_exit();
  const uint64_t rip = regs ? regs->rip : 0;
  switch (run->exit_reason) {
    case KVM_EXIT_IO:
      if (!regs) return end(out, RunOutcome::kFailed, FailureKind::kHost, regs.error().message);
      return handle_io(devices, *regs, out);
    case KVM_EXIT_HLT:
      return end(out, RunOutcome::kFailed, FailureKind::kGuest,
                 fmt::format("guest halted without calling exit (rip {:#x})", rip));
    case KVM_EXIT_MMIO:
      if (devices.windows) {
        // KVM_MEM_READONLY writes and pages a window has not mapped (yet,
        // or any more) come here.
        const uint32_t len = std::min<uint32_t>(run->mmio.len, sizeof(run->mmio.data));
        auto m = devices.windows->mmio(GuestAddr(run->mmio.phys_addr), std::span<uint8_t>(run->mmio.data, len),
                                       run->mmio.is_write);
        if (m.action == Windows::Mmio::Action::kDone) return false;
        if (m.action == Windows::Mmio::Action::kFail)
          return end(out, RunOutcome::kFailed, m.host ? FailureKind::kHost : FailureKind::kGuest,
                     fmt::format("{} (rip {:#x})", m.message, rip));
      }
      return end(out, RunOutcome::kFailed, FailureKind::kGuest,
                 fmt::format("guest {} guest-physical {:#x}, which is not RAM (rip {:#x})",
                             run->mmio.is_write ? "wrote to" : "read from", run->mmio.phys_addr, rip));
    case KVM_EXIT_SHUTDOWN:
      return end(out, RunOutcome::kFailed, FailureKind::kGuest,
                 fmt::format("guest shut down (triple fault) near rip {:#x}", rip));
    case KVM_EXIT_FAIL_ENTRY:
      return end(out, RunOutcome::kFailed, FailureKind::kHost,
                 fmt::format("KVM could not enter the guest (hardware reason {:#x})",
                             run->fail_entry.hardware_entry_failure_reason));
    case KVM_EXIT_INTERNAL_ERROR:
      return end(out, RunOutcome::kFailed, FailureKind::kHost,
                 fmt::format("KVM internal error (suberror {}) at rip {:#x}", run->internal.suberror, rip));
    default:
      return end(out, RunOutcome::kFailed, FailureKind::kHost,
                 fmt::format("unexpected VM exit reason {} at rip {:#x}", run->exit_reason, rip));
  }
}

bool Vcpu::handle_io(const Devices& devices, const kvm_regs& regs, VcpuRun& out) {
  kvm_run* run = vcpu_.run_struct();
  if (run->io.port != abi::kHypercallPort || run->io.direction != KVM_EXIT_IO_OUT)
    return end(out, RunOutcome::kFailed, FailureKind::kGuest,
               fmt::format("guest {} I/O port {:#x}, which has no device (rip {:#x})",
                           run->io.direction == KVM_EXIT_IO_OUT ? "wrote to" : "read from", run->io.port, regs.rip));
  HypercallOutcome o = handle_hypercall(devices, out.hypercalls, regs, id_);
  switch (o.action) {
    case HypercallOutcome::Action::kResume:
      if (auto s = set_status(regs, o.status); !s)
        return end(out, RunOutcome::kFailed, FailureKind::kHost, s.error().message);
      return false;
    case HypercallOutcome::Action::kExit:
      out.exit_code = o.exit_code;
      return end(out, RunOutcome::kExited, FailureKind::kNone,
                 o.exit_code ? fmt::format("guest exited with code {}", o.exit_code) : std::string());
    case HypercallOutcome::Action::kFail:
      return end(out, RunOutcome::kFailed, o.kind, std::move(o.message));
    case HypercallOutcome::Action::kSnapshot: {
      // The call returns 0 in the VM that goes on and in every VM restored
      // from the snapshot: rax is set, and the `out` finished, before the
      // state is read.
      Result<VcpuState> state = [&]() -> Result<VcpuState> {
        KVMEM_TRY(set_status(regs, 0));
        return capture_state();
      }();
      SnapshotArrival met = devices.snapshot->arrive(id_, std::move(state), o.exit_code);
      switch (met.next) {
        case SnapshotArrival::Next::kGoOn: return false;
        case SnapshotArrival::Next::kExit:
          out.exit_code = 0;
          return end(out, RunOutcome::kExited, FailureKind::kNone, {});
        case SnapshotArrival::Next::kStopped: return end(out, RunOutcome::kStopped, FailureKind::kStopped, {});
        case SnapshotArrival::Next::kFailed: break;
      }
      return end(out, RunOutcome::kFailed, FailureKind::kHost, std::move(met.message));
    }
  }
  return end(out, RunOutcome::kFailed, FailureKind::kHost, "unknown hypercall outcome");
}

Status Vcpu::settle() {
  kvm_run* run = vcpu_.run_struct();
  run->immediate_exit = 1;
  auto entered = vcpu_.run();
  // A watchdog kick that landed meanwhile must still end the next KVM_RUN
  // (pauses and stops are flags enter_guest() reads again).
  run->immediate_exit = t_timed_out ? 1 : 0;
  if (!entered) return std::unexpected(entered.error().context("cannot settle the vCPU"));
  if (*entered)
    return fail("cannot settle the vCPU: KVM_RUN with immediate_exit entered the guest (exit reason {})",
                run->exit_reason);
  return {};
}

Result<VcpuState> Vcpu::capture_state() {
  KVMEM_TRY(settle());
  return capture_vcpu_state(vcpu_);
}

Status Vcpu::restore_state(const VcpuState& state) {
  vcpu_.run_struct()->kvm_dirty_regs = 0;  // nothing of the boot registers may be applied over it
  return restore_vcpu_state(vcpu_, state);
}

bool Vcpu::tsc_khz_from_kvm() const { return ::ioctl(vcpu_.fd(), KVM_GET_TSC_KHZ, 0) > 0; }

uint64_t Vcpu::tsc_khz() const {
  const int khz = ::ioctl(vcpu_.fd(), KVM_GET_TSC_KHZ, 0);
  return khz > 0 ? static_cast<uint64_t>(khz) : measured_tsc_khz();
}

}  // namespace kvmem
