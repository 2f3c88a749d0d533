// One VM: its KVM objects, guest RAM, the program in it, and the vCPU loop.
//
// Life cycle: Vm::create() builds everything (KVM VM, RAM, boot area,
// program, memory slot, vCPU registers) and fails with an Error naming the
// host call when the host cannot run it; run() then drives the vCPU until the
// guest exits, fails, or overstays its timeout, and returns what happened.
// A Vm runs once.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>

#include <pthread.h>
#include <string_view>

#include "base/error.h"
#include "guest/program.h"
#include "vmm/vm_config.h"
#include "vmm/devices/free_reports.h"
#include "vmm/failure.h"
#include "vmm/memory/guest_memory.h"
#include "vmm/hypercalls.h"
#include "vmm/kvm/kvm.h"

namespace kvmem {


struct RunResult {
  enum class Outcome { kExited, kFailed, kTimeout, kStopped };
  Outcome outcome = Outcome::kFailed;
  FailureKind failure = FailureKind::kHost;
  uint64_t guest_exit_code = 0;  // kExited
  std::string message;           // kFailed, kTimeout: what happened, as a sentence
  std::string console;           // everything the guest wrote
  std::map<std::string, uint64_t> exits;  // VM exits by reason ("io", "hlt", ...)
  HypercallStats hypercalls;
  // Free-page reports, both paths.
  uint64_t free_reports = 0;
  uint64_t free_ranges = 0;
  uint64_t free_ranges_invalid = 0;
  uint64_t bytes_reported_free = 0;
  uint64_t bytes_decommitted = 0;
  double run_ms = 0;  // wall time from the first KVM_RUN to the end
  // The program's result slots (timestamp steps), read when the run ended:
  // one per slot, empty when the program has none.
  std::vector<uint64_t> timestamps;

  // 0 when the guest exited with 0; 3 when the host could not go on; 1 for
  // any other end (DESIGN.md exit codes).
  int process_exit_code() const {
    if (outcome == Outcome::kExited && guest_exit_code == 0) return 0;
    return failure == FailureKind::kHost ? 3 : 1;
  }
  const char* outcome_name() const;
};

class Vm : private VcpuPauser {
 public:
  // Guest RAM comes from `file`, which several VMs may share; it must
  // outlive the Vm.
  static Result<std::unique_ptr<Vm>> create(const Kvm& kvm, MemoryFile& file, const VmConfig& config,
                                            const guest::Image& program);

  // Runs the guest to its end. `echo` (may be empty) receives console text as
  // the guest writes it; the result holds all of it too.
  RunResult run(const std::function<void(std::string_view)>& echo);

  // Ends a run from another thread: run() returns soon with outcome
  // kStopped, this kind and message (the first stop wins). Safe before,
  // during and after run(); a stop before run() makes it return at once.
  void stop(FailureKind kind, std::string message);

  const VmConfig& config() const { return config_; }
  GuestMemory& memory() { return *memory_; }

 private:
  explicit Vm(VmConfig config) : config_(std::move(config)) {}

  // VcpuPauser, for the free ring's thread.
  void pause() override;
  void resume() override;
  // Before each KVM_RUN: waits out a pause, then marks the vCPU in the
  // guest. False when a pause began meanwhile (the caller tries again).
  bool enter_guest();
  void left_guest();

  Result<kvm_regs> regs_at_exit() const;
  Status set_status(const kvm_regs& regs, int64_t status);

  // Declaration order is teardown order reversed: the vCPU and the VM go
  // before the RAM behind them; the memory slots go with the VM, so the
  // GuestMemory's Memslots find nothing left to delete (vmm/kvm/memslot.h).
  VmConfig config_;
  guest::ResultSlots results_;  // the program's, read back when the run ends
  std::unique_ptr<GuestMemory> memory_;
  std::optional<KvmVm> vm_;
  std::optional<KvmVcpu> vcpu_;
  FreeStats frees_;
  std::unique_ptr<FreeRing> free_ring_;  // first to go: its thread touches RAM

  // The pause protocol (Dekker-style, seq_cst): pause() sets
  // pause_requested_ and then reads in_guest_; enter_guest() sets in_guest_
  // and then reads pause_requested_, so at least one of them sees the other.
  std::atomic<bool> pause_requested_{false};
  std::atomic<bool> in_guest_{false};
  std::mutex pause_mu_;
  std::condition_variable pause_cv_;  // with pause_mu_: either flag fell
  pthread_t vcpu_thread_{};           // set by run()
  bool running_ = false;              // protected by pause_mu_: vcpu_thread_ is in run()
  std::atomic<bool> stop_requested_{false};
  FailureKind stop_kind_ = FailureKind::kStopped;  // protected by pause_mu_
  std::string stop_message_;                       // protected by pause_mu_
  bool sync_regs_ = false;  // kvm_run carries the registers at every exit
};

}  // namespace kvmem
