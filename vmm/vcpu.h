// One vCPU: its KVM vCPU, the loop that runs it, the watchdog that bounds
// its run, and the decoding of its exits.
//
// Life cycle: Vcpu::create() makes the KVM vCPU and sets its registers;
// run() drives it on the calling thread until the guest exits, fails,
// overstays its timeout, or request_stop() ends it. A Vcpu runs once.
//
// Kicks. A vCPU in KVM_RUN leaves the guest when its thread gets a signal:
// the watchdog's (a per-run POSIX timer aimed at the thread) or the kick
// that pause and stop send. The handlers set kvm_run's immediate_exit, so a
// kick that lands between the check and KVM_RUN is not lost: that KVM_RUN
// returns EINTR at once.
//
// The pause protocol. A pauser (the free rings' thread) must know that the
// vCPU is out of the guest and stays out while it punches, without a lock on
// the vCPU's hot path. Two seq_cst atomics make a Dekker pair:
//   pauser:  pause_requests_ += 1, then read in_guest_ (kick if set), then
//            wait on pause_cv_ until in_guest_ is false;
//   vCPU:    in_guest_ = true, then read pause_requests_ (and
//            stop_requested_); if either is set, in_guest_ = false and wait.
// Sequential consistency puts the four accesses in one order, so at least
// one side sees the other's store: either the vCPU sees the request and
// does not enter, or the pauser sees in_guest_ and kicks, and the kick
// cannot be lost (immediate_exit). in_guest_ falls, and pause_requests_
// drops, under mu_, and their waiters wait under mu_ with the condition
// variable: no wake-up is missed. stop uses the same pair with
// stop_requested_. Pauses nest (a count), so pausers need not know of one
// another.
//
// Thread safety: run() on one thread; request_stop(), begin_pause(),
// wait_paused() and resume() from any thread, before, during or after run().
#pragma once

#include <linux/kvm.h>
#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/error.h"
#include "vmm/failure.h"
#include "vmm/hypercalls.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/vcpu_state.h"

namespace kvmem {

enum class RunOutcome { kExited, kFailed, kTimeout, kStopped };

// How one vCPU's run ended.
struct VcpuRun {
  RunOutcome outcome = RunOutcome::kFailed;
  FailureKind failure = FailureKind::kHost;
  uint64_t exit_code = 0;  // kExited: 0..255
  std::string message;     // what happened, as a sentence (kStopped: empty, the Vm knows why)
  std::map<std::string, uint64_t> exits;  // VM exits by reason ("io", "hlt", ...)
  HypercallStats hypercalls;
};

class Vcpu {
 public:
  // Makes vCPU `id` of `vm` with CPUID `cpuid` (null: KVM's default),
  // long-mode system registers and `regs`.
  static Result<std::unique_ptr<Vcpu>> create(const Kvm& kvm, KvmVm& vm, unsigned id,
                                              const std::vector<kvm_cpuid_entry2>* cpuid, const kvm_regs& regs);
  Vcpu(const Vcpu&) = delete;
  Vcpu& operator=(const Vcpu&) = delete;

  // Runs the guest on the calling thread; hypercalls go to `devices`.
  VcpuRun run(const Devices& devices, uint64_t timeout_ms);

  // Ends run() soon (at once if it has not begun), with outcome kStopped.
  void request_stop();
  // pause() is begin_pause() then wait_paused(); pausing several vCPUs
  // begins every pause before waiting for any, so their kicks overlap.
  void begin_pause();
  void wait_paused();
  void resume();

  // Finishes what the last exit left to KVM (the `out` of a hypercall, the
  // registers set through kvm_run) with a KVM_RUN that returns at once
  // (immediate_exit), so that the state KVM reports is whole. On the run()
  // thread, between exits, or before run().
  Status settle();
  // settle(), then every part of the vCPU's state (vmm/kvm/vcpu_state.h).
  Result<VcpuState> capture_state();
  // Sets the vCPU to a captured state: before run(), on a fresh vCPU.
  Status restore_state(const VcpuState& state);

  unsigned id() const { return id_; }
  int fd() const { return vcpu_.fd(); }  // for KVM_GET_STATS_FD and the like

  // The rate of this vCPU's TSC in kHz, never 0: KVM_GET_TSC_KHZ, or, when
  // KVM refuses it, the host's TSC measured against CLOCK_MONOTONIC (once
  // per process, ~20 ms) — what the guest's runs at when KVM does not scale it.
  uint64_t tsc_khz() const;
  // Whether tsc_khz() comes from KVM_GET_TSC_KHZ (else from the calibration).
  bool tsc_khz_from_kvm() const;

 private:
  Vcpu(KvmVcpu vcpu, unsigned id, bool sync_regs) : vcpu_(std::move(vcpu)), id_(id), sync_regs_(sync_regs) {}

  // Before each KVM_RUN: waits out a pause, then marks the vCPU in the
  // guest. False when a pause or a stop began meanwhile (the caller looks
  // again).
  bool enter_guest();
  void left_guest();
  void kick_locked();  // mu_ held
  // Decodes the exit KVM_RUN reported. True when the run is over (out holds why).
  bool handle_exit(const Devices& devices, VcpuRun& out);
  bool handle_io(const Devices& devices, const kvm_regs& regs, VcpuRun& out);
  Result<kvm_regs> regs_at_exit() const;
  Status set_status(const kvm_regs& regs, int64_t status);

  KvmVcpu vcpu_;
  const unsigned id_;
  const bool sync_regs_;  // kvm_run carries the registers at every exit

  std::atomic<int> pause_requests_{0};  // pauses begun and not yet resumed
  std::atomic<bool> in_guest_{false};   // the vCPU is in (or about to enter) KVM_RUN
  std::atomic<bool> stop_requested_{false};
  std::mutex mu_;
  std::condition_variable cv_;  // with mu_: in_guest_ fell or pause_requests_ dropped
  pthread_t thread_{};          // protected by mu_: the thread in run(), while running_
  bool running_ = false;        // protected by mu_: thread_ is in run() and may be signalled
};

}  // namespace kvmem
