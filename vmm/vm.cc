#include "vmm/vm.h"

#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>

#include "guest/abi.h"
#include "guest/layout.h"
#include "guest/boot.h"

namespace kvmem {
namespace {

// The watchdog: a per-run POSIX timer sends kKickSignal to the vCPU thread.
// The handler sets immediate_exit, so a kick that lands between two KVM_RUN
// calls is not lost: the next KVM_RUN returns EINTR at once.
constexpr int kKickSignal = SIGUSR1;
thread_local kvm_run* t_run = nullptr;
thread_local volatile sig_atomic_t t_kicked = 0;

void on_kick(int) {
  t_kicked = 1;
  if (t_run) t_run->immediate_exit = 1;
}

// The free ring's thread sends kPauseSignal to get the vCPU out of the
// guest for a moment: the same immediate_exit, without the timeout.
constexpr int kPauseSignal = SIGUSR2;
void on_pause(int) {
  if (t_run) t_run->immediate_exit = 1;
}

Status install_kick_handler() {
  static std::once_flag once;
  static int err = 0;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = on_kick;  // no SA_RESTART: KVM_RUN must return EINTR
    sigemptyset(&sa.sa_mask);
    if (sigaction(kKickSignal, &sa, nullptr) < 0) err = errno;
    sa.sa_handler = on_pause;
    if (sigaction(kPauseSignal, &sa, nullptr) < 0) err = errno;
  });
  if (err) return sys_fail("cannot install the watchdog's signal handler", "sigaction", err);
  return {};
}

class Watchdog {
 public:
  static Result<Watchdog> arm(uint64_t timeout_ms) {
    sigevent sev{};
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = kKickSignal;
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

// KVM_X86_QUIRK_SLOT_ZAP_ALL (Linux 6.12); older uapi headers lack the name.
constexpr uint64_t kQuirkSlotZapAll = 1 << 7;

// CPUID.80000001h:EDX[26] in KVM's supported list.
bool gib_pages_supported(const std::vector<kvm_cpuid_entry2>& supported) {
  for (const auto& e : supported)
    if (e.function == 0x80000001) return (e.edx >> 26) & 1;
  return false;
}

}  // namespace

const char* RunResult::outcome_name() const {
  switch (outcome) {
    case Outcome::kExited: return "exited";
    case Outcome::kFailed: return "failed";
    case Outcome::kTimeout: return "timeout";
    case Outcome::kStopped: return "stopped";
  }
  return "?";
}


Result<std::unique_ptr<Vm>> Vm::create(const Kvm& kvm, MemoryFile& file, const VmConfig& config,
                                       const guest::Image& program) {
  std::unique_ptr<Vm> v(new Vm(config));
  auto vm = kvm.create_vm();
  if (!vm) return std::unexpected(vm.error());
  v->vm_.emplace(std::move(*vm));
  // By default deleting any memory slot zaps every shadow page of the VM;
  // turn that off where the host lets us (slots come and go with RAM).
  if (v->vm_->check_extension(KVM_CAP_DISABLE_QUIRKS2) & kQuirkSlotZapAll)
    if (auto s = v->vm_->enable_cap(KVM_CAP_DISABLE_QUIRKS2, kQuirkSlotZapAll); !s)
      return std::unexpected(s.error());

  // Hardware KVM wants the guest's CPUID set (long mode needs its LM bit).
  // PVM answers KVM_GET_SUPPORTED_CPUID with EINVAL and runs long mode
  // without it, so an error here is not fatal: the vCPU keeps KVM's default.
  auto cpuid = kvm.supported_cpuid();
  if (config.page_size == guest::PageSize::k1G) {
    if (!cpuid)
      return fail("this host's KVM does not offer 1 GiB guest pages: it cannot report CPUID ({}), so the "
                  "guest cannot be given pdpe1gb; use \"guest_page_size\": \"2M\"",
                  cpuid.error().message);
    if (!gib_pages_supported(*cpuid))
      return fail("this host's KVM does not offer 1 GiB guest pages (CPUID pdpe1gb); use \"guest_page_size\": \"2M\"");
  }

  auto memory = GuestMemory::create(file, config.memory, config.ram_unit);
  if (!memory) return std::unexpected(memory.error());
  v->memory_ = std::move(*memory);
  // Guest memory must hold its contents before the vCPU can see it.
  if (auto s = guest::write_boot_area(v->memory_->boot_area(), config.memory, config.page_size); !s)
    return std::unexpected(s.error());
  if (program.base + program.bytes.size() > guest::layout::kProgramEnd || program.base < guest::layout::kProgramAddr)
    return fail("the guest program does not fit its area of the boot area");
  std::memcpy(v->memory_->host(GuestAddr(program.base)), program.bytes.data(), program.bytes.size());
  if (program.results.count &&
      !v->memory_->contains(GuestRange(program.results.gpa, program.results.gpa + program.results.count * sizeof(uint64_t))))
    return fail("the guest program's result slots lie outside RAM");
  v->results_ = program.results;
  if (auto s = v->memory_->register_with(*v->vm_); !s) return std::unexpected(s.error());

  auto vcpu = v->vm_->create_vcpu(0);
  if (!vcpu) return std::unexpected(vcpu.error());
  v->vcpu_.emplace(std::move(*vcpu));
  KvmVcpu& c = *v->vcpu_;
  if (cpuid)
    if (auto s = c.set_cpuid(*cpuid); !s) return std::unexpected(s.error());
  auto sregs = c.get_sregs();
  if (!sregs) return std::unexpected(sregs.error());
  guest::long_mode_sregs(*sregs);
  if (auto s = c.set_sregs(*sregs); !s) return std::unexpected(s.error());
  if (auto s = c.set_regs(guest::user_regs(program.entry)); !s) return std::unexpected(s.error());

  // Registers ride in kvm_run at every exit: a hypercall costs one exit and
  // no extra ioctl (each would be ~6 us here).
  v->sync_regs_ = (kvm.check_extension(KVM_CAP_SYNC_REGS) & KVM_SYNC_X86_REGS) != 0;
  if (v->sync_regs_) c.run_struct()->kvm_valid_regs = KVM_SYNC_X86_REGS;
  return v;
}

void Vm::pause() {
  pause_requested_.store(true);
  if (in_guest_.load()) pthread_kill(vcpu_thread_, kPauseSignal);
  std::unique_lock lock(pause_mu_);
  pause_cv_.wait(lock, [this] { return !in_guest_.load(); });
}

void Vm::resume() {
  {
    std::lock_guard lock(pause_mu_);
    pause_requested_.store(false);
  }
  pause_cv_.notify_all();
}

void Vm::stop(FailureKind kind, std::string message) {
  std::lock_guard lock(pause_mu_);
  if (stop_requested_.load()) return;  // the first stop wins
  stop_kind_ = kind;
  stop_message_ = std::move(message);
  // Dekker with enter_guest(): set the flag, then look at in_guest_. A vCPU
  // that entered after this store sees the flag; one already in the guest
  // is kicked out (the handler sets immediate_exit, so a kick that lands
  // just before KVM_RUN is not lost). running_ keeps the thread alive while
  // we signal it: run() clears it under pause_mu_ before it returns.
  stop_requested_.store(true);
  if (running_ && in_guest_.load()) pthread_kill(vcpu_thread_, kPauseSignal);
}

bool Vm::enter_guest() {
  if (pause_requested_.load()) {
    std::unique_lock lock(pause_mu_);
    pause_cv_.wait(lock, [this] { return !pause_requested_.load(); });
  }
  in_guest_.store(true);
  if (!pause_requested_.load() && !stop_requested_.load()) return true;
  left_guest();
  return false;
}

void Vm::left_guest() {
  {
    std::lock_guard lock(pause_mu_);
    in_guest_.store(false);
  }
  pause_cv_.notify_all();
}

Result<kvm_regs> Vm::regs_at_exit() const {
  if (sync_regs_) return vcpu_->run_struct()->s.regs.regs;
  return vcpu_->get_regs();
}

Status Vm::set_status(const kvm_regs& regs, int64_t status) {
  kvm_run* run = vcpu_->run_struct();
  if (sync_regs_) {
    run->s.regs.regs.rax = static_cast<uint64_t>(status);
    run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
    return {};
  }
  kvm_regs r = regs;
  r.rax = static_cast<uint64_t>(status);
  return vcpu_->set_regs(r);
}

RunResult Vm::run(const std::function<void(std::string_view)>& echo) {
  RunResult result;
  HypercallContext hc{*memory_, result.hypercalls,
                      [&](std::string_view text) {
                        result.console.append(text);
                        if (echo) echo(text);
                      },
                      frees_,
                      [this](uint64_t gpa, uint64_t entries) -> int64_t {
                        if (free_ring_) return -EBUSY;
                        int64_t status = 0;
                        free_ring_ = FreeRing::start(*vm_, *memory_, frees_, this, gpa, entries, &status);
                        return status;
                      },
                      [this](uint64_t target) -> int64_t {
                        return free_ring_ ? free_ring_->wait(target) : -EINVAL;
                      }};
  auto finish = [&](RunResult::Outcome o, FailureKind kind, std::string message) {
    result.outcome = o;
    result.failure = kind;
    result.message = std::move(message);
  };
  if (auto s = install_kick_handler(); !s) {
    finish(RunResult::Outcome::kFailed, FailureKind::kHost, s.error().message);
    return result;
  }
  kvm_run* run = vcpu_->run_struct();
  t_run = run;
  t_kicked = 0;
  auto watchdog = Watchdog::arm(config_.timeout_ms);
  if (!watchdog) {
    t_run = nullptr;
    finish(RunResult::Outcome::kFailed, FailureKind::kHost, watchdog.error().message);
    return result;
  }
  {
    std::lock_guard lock(pause_mu_);
    vcpu_thread_ = pthread_self();
    running_ = true;
  }
  const auto start = std::chrono::steady_clock::now();
  for (bool done = false; !done;) {
    if (stop_requested_.load()) {
      std::lock_guard lock(pause_mu_);
      finish(RunResult::Outcome::kStopped, stop_kind_, stop_message_);
      break;
    }
    if (!enter_guest()) continue;
    auto entered = vcpu_->run();
    left_guest();
    if (!entered) {
      finish(RunResult::Outcome::kFailed, FailureKind::kHost, entered.error().message);
      break;
    }
    if (!*entered) {  // EINTR: the watchdog, a pause, or a stray signal
      result.exits["intr"]++;
      // Clear first, then look: a watchdog kick landing after the clear sets
      // immediate_exit again, so it cannot be lost.
      run->immediate_exit = 0;
      if (t_kicked) {
        auto regs = vcpu_->get_regs();
        finish(RunResult::Outcome::kTimeout, FailureKind::kTimeout,
               regs ? fmt::format("guest did not finish within {} ms; it was at rip {:#x}", config_.timeout_ms,
                                  regs->rip)
                    : fmt::format("guest did not finish within {} ms", config_.timeout_ms));
        done = true;
      }
      continue;
    }
    result.exits[exit_name(run->exit_reason)]++;
    auto regs = regs_at_exit();
    const uint64_t rip = regs ? regs->rip : 0;
    switch (run->exit_reason) {
      case KVM_EXIT_IO: {
        if (run->io.port != abi::kHypercallPort || run->io.direction != KVM_EXIT_IO_OUT) {
          finish(RunResult::Outcome::kFailed, FailureKind::kGuest,
                 fmt::format("guest {} I/O port {:#x}, which has no device (rip {:#x})",
                             run->io.direction == KVM_EXIT_IO_OUT ? "wrote to" : "read from", run->io.port, rip));
          done = true;
          break;
        }
        if (!regs) {
          finish(RunResult::Outcome::kFailed, FailureKind::kHost, regs.error().message);
          done = true;
          break;
        }
        HypercallOutcome o = handle_hypercall(hc, *regs);
        switch (o.action) {
          case HypercallOutcome::Action::kResume:
            if (auto s = set_status(*regs, o.status); !s) {
              finish(RunResult::Outcome::kFailed, FailureKind::kHost, s.error().message);
              done = true;
            }
            break;
          case HypercallOutcome::Action::kExit:
            result.guest_exit_code = o.exit_code;
            finish(RunResult::Outcome::kExited, FailureKind::kNone,
                   o.exit_code ? fmt::format("guest exited with code {}", o.exit_code) : std::string());
            done = true;
            break;
          case HypercallOutcome::Action::kFail:
            finish(RunResult::Outcome::kFailed, o.kind, o.message);
            done = true;
            break;
        }
        break;
      }
      case KVM_EXIT_HLT:
        finish(RunResult::Outcome::kFailed, FailureKind::kGuest, fmt::format("guest halted without calling exit (rip {:#x})", rip));
        done = true;
        break;
      case KVM_EXIT_MMIO:
        finish(RunResult::Outcome::kFailed, FailureKind::kGuest,
               fmt::format("guest {} guest-physical {:#x}, which is not RAM (rip {:#x})",
                           run->mmio.is_write ? "wrote to" : "read from", run->mmio.phys_addr, rip));
        done = true;
        break;
      case KVM_EXIT_SHUTDOWN:
        finish(RunResult::Outcome::kFailed, FailureKind::kGuest,
               fmt::format("guest shut down (triple fault) near rip {:#x}", rip));
        done = true;
        break;
      case KVM_EXIT_FAIL_ENTRY:
        finish(RunResult::Outcome::kFailed, FailureKind::kHost,
               fmt::format("KVM could not enter the guest (hardware reason {:#x})",
                           run->fail_entry.hardware_entry_failure_reason));
        done = true;
        break;
      case KVM_EXIT_INTERNAL_ERROR:
        finish(RunResult::Outcome::kFailed, FailureKind::kHost,
               fmt::format("KVM internal error (suberror {}) at rip {:#x}", run->internal.suberror, rip));
        done = true;
        break;
      default:
        finish(RunResult::Outcome::kFailed, FailureKind::kHost,
               fmt::format("unexpected VM exit reason {} at rip {:#x}", run->exit_reason, rip));
        done = true;
        break;
    }
  }
  result.run_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  {
    std::lock_guard lock(pause_mu_);
    running_ = false;
  }
  t_run = nullptr;
  free_ring_.reset();  // answers what the guest rang for, then stops
  result.free_reports = frees_.reports.load();
  result.free_ranges = frees_.ranges.load();
  result.free_ranges_invalid = frees_.invalid_ranges.load();
  result.bytes_reported_free = frees_.bytes_reported.load();
  result.bytes_decommitted = frees_.bytes_decommitted.load();
  if (results_.count) {
    const std::string slots = memory_->read(GuestRange(results_.gpa, results_.gpa + results_.count * sizeof(uint64_t)));
    result.timestamps.resize(results_.count);
    std::memcpy(result.timestamps.data(), slots.data(), slots.size());
  }
  return result;
}

}  // namespace kvmem
