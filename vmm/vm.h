// One VM: its KVM VM, guest RAM, the program in it, its devices and its
// vCPUs.
//
// Life cycle: Vm::create() builds everything (KVM VM, RAM, boot area,
// program, memory slots, the vCPUs and their registers) and fails with an
// Error naming the host call when the host cannot run it; run() then drives
// every vCPU until all have exited 0, or one of them ends otherwise (exits
// with another code, fails, or overstays its timeout), or stop() is
// called, and returns what happened. A Vm runs once.
//
// vCPU 0 runs on the thread that calls run(), each other one on a thread
// of its own. A vCPU that exits 0 leaves the others running (and is marked
// departed in the barrier page, so one waiting at a barrier it never
// reached fails: vmm/devices/barriers.h); the first
// vCPU to end any other way decides the outcome (its message starts
// "vCPU i: " on a VM of several) and stops the rest. pause() holds every
// vCPU out of the guest; stop() stops every vCPU.
//
// Lock order (docs/design.md, "Locks", has the tree across components):
//   stop_mu_, end_mu_ -> Vcpu::mu_ (each vCPU's, one at a time).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "guest/program.h"
#include "vmm/devices/barriers.h"
#include "vmm/devices/console.h"
#include "vmm/devices/free_reports.h"
#include "vmm/devices/free_ring.h"
#include "vmm/devices/snapshot_point.h"
#include "vmm/failure.h"
#include "vmm/hypercalls.h"
#include "vmm/kvm/kvm.h"
#include "vmm/memory/guest_memory.h"
#include "vmm/memory/window.h"
#include "vmm/vcpu.h"
#include "memory/tmpfs/file_system.h"
#include "vmm/vm_config.h"

namespace kvmem {

struct RunResult {
  using Outcome = RunOutcome;
  Outcome outcome = Outcome::kFailed;
  FailureKind failure = FailureKind::kHost;
  uint64_t guest_exit_code = 0;  // kExited: 0..255, as the guest's exit code is reduced
  std::string message;           // kFailed, kTimeout, kStopped: what happened, as a sentence
  std::string console;           // what the guest wrote: the head and the tail (Console)
  uint64_t console_dropped_bytes = 0;  // written between the two and not kept
  std::map<std::string, uint64_t> exits;  // VM exits by reason ("io", "hlt", ...), every vCPU's
  HypercallStats hypercalls;              // every vCPU's
  // Free-page reports, both paths.
  uint64_t free_reports = 0;
  uint64_t free_ranges = 0;
  uint64_t free_ranges_invalid = 0;
  uint64_t bytes_reported_free = 0;
  uint64_t bytes_decommitted = 0;
  double run_ms = 0;  // wall time from the first KVM_RUN to the end
  // The program's result slots (timestamp steps), read when the run ended:
  // one per slot, empty when the program has none. vCPU 0's.
  std::vector<uint64_t> timestamps;
  // Every vCPU's, one list per vCPU (vcpu_timestamps[0] == timestamps).
  std::vector<std::vector<uint64_t>> vcpu_timestamps;
  // What the host populated of RAM for it (mode kNone: nothing): eager's
  // in Vm::create, ahead's while the guest ran (its threads stopped and
  // joined when the run ended).
  PrefaultStats prefault;

  // 0 when the guest exited with 0; 3 when the host could not go on; 2
  // when the snapshot it was restored from turned out damaged; 1 for any
  // other end (DESIGN.md exit codes).
  int process_exit_code() const {
    if (outcome == Outcome::kExited && guest_exit_code == 0) return 0;
    if (failure == FailureKind::kSnapshot) return 2;
    return failure == FailureKind::kHost ? 3 : 1;
  }
  const char* outcome_name() const;
};

class Vm : public VcpuPauser {
 public:
  // Guest RAM comes from `file`, which several VMs may share; it must
  // outlive the Vm. The config's windows show files of `files` (which
  // must be on the same MemoryFile and outlive the Vm; null when the
  // config has no windows).
  static Result<std::unique_ptr<Vm>> create(const Kvm& kvm, MemoryFile& file, const VmConfig& config,
                                            const guest::Image& program, tmpfs::FileSystem* files = nullptr);
  ~Vm() override;

  // Runs the guest to its end. With prefault ahead, its threads start just
  // before the vCPUs and are stopped and joined before run() returns. `echo` (may be empty) receives console bytes
  // as the guest writes them, all of them; the result keeps a bounded record.
  RunResult run(const std::function<void(std::string_view)>& echo);

  // Ends a run from another thread: run() returns soon with outcome
  // kStopped, this kind and message (the first stop wins). Safe before,
  // during and after run(); a stop before run() makes it return at once.
  void stop(FailureKind kind, std::string message);

  const VmConfig& config() const { return config_; }
  GuestMemory& memory() { return *memory_; }
  const Windows& windows() const { return windows_; }
  size_t vcpu_count() const { return vcpus_.size(); }
  // vCPU 0's TSC rate in kHz (Vcpu::tsc_khz) and whether KVM gave it.
  uint64_t tsc_khz() const { return vcpus_[0]->tsc_khz(); }
  bool tsc_khz_from_kvm() const { return vcpus_[0]->tsc_khz_from_kvm(); }
  // vCPU i's fd (i < vcpu_count()), for its KVM statistics (vmm/kvm/stats.h).
  int vcpu_fd(size_t i) const { return vcpus_.at(i)->fd(); }

  // Snapshots (kHcSnapshot; vmm/devices/snapshot_point.h). Before run():
  // from now on the guest's snapshot calls are taken, and `sink` writes
  // each one, on the thread of the vCPU that completed the set, with every
  // live vCPU out of the guest and the free ring drained. Unarmed, the
  // call does nothing (kSnapshotNotTaken).
  using SnapshotSink = std::function<Status(Vm&, const SnapshotCapture&)>;
  void arm_snapshots(SnapshotSink sink);
  // Before run(), on a VM created from the snapshot's config: sets each
  // vCPU to its captured state; a vCPU without one (it had ended when the
  // snapshot was taken) does not run, and counts as exited with 0. Guest
  // RAM is the caller's to fill. Errors: a count that is not the VM's, the
  // ioctl KVM refused (with the vCPU).
  Status restore_vcpus(const std::vector<std::optional<VcpuState>>& states);
  // Snapshot rounds finished (taken or failed).
  uint64_t snapshots_taken() const { return snapshot_->taken(); }
  // The devices' state a snapshot keeps (vmm/devices/device_state.h). For a
  // sink: every vCPU is out of the guest and the rings are quiesced.
  ConsoleState console_state() const { return {console_.text(), console_.dropped()}; }
  FreeCounts free_counts() const;
  std::vector<FreeRingState> free_ring_states() { return free_ring_->state(); }
  // Before run(), on a VM made from the snapshot's config whose RAM is
  // back: each vCPU's free ring as the snapshot had it
  // (FreeRingDevice::restore; its errors).
  Status restore_free_rings(const std::vector<FreeRingState>& rings) { return free_ring_->restore(rings); }

  // VcpuPauser (the free rings' thread): holds every vCPU out of the guest
  // until resume(). Safe from any thread, before, during and after run().
  void pause() override;
  void resume() override;

 private:
  explicit Vm(VmConfig config) : config_(std::move(config)) {}

  // Runs vCPU i and records it; the first to end other than by exit 0
  // stops the others.
  void run_vcpu(size_t i, const Devices& devices, std::vector<VcpuRun>& runs);
  void vcpu_ended(size_t i, const VcpuRun& run);
  RunResult gather(std::vector<VcpuRun>& runs);

  // Declaration order is teardown order reversed: the devices and vCPUs go
  // before the VM and the RAM behind them; the memory slots go with the VM,
  // so the GuestMemory's Memslots find nothing left to delete
  // (vmm/kvm/memslot.h). The free ring (its thread touches RAM) is stopped
  // in run() and again, to be sure, first in the destructor.
  VmConfig config_;
  std::vector<guest::ResultSlots> results_;  // each vCPU's, read back when the run ends
  std::unique_ptr<GuestMemory> memory_;
  Windows windows_;  // their regions are in memory_; they go after the VM, before it
  std::optional<KvmVm> vm_;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;  // fixed after create()
  FreeStats frees_;
  Console console_;
  std::optional<FreeReports> free_reports_;
  std::optional<FreeRingDevice> free_ring_;
  std::optional<SnapshotPoint> snapshot_;
  std::vector<bool> restored_ended_;  // by vCPU: ended before the snapshot it was restored from
  std::optional<Barriers> barriers_;
  PrefaultStats prefault_;  // eager's, from create()

  std::mutex stop_mu_;
  bool stopped_ = false;                           // protected by stop_mu_: the first stop won
  FailureKind stop_kind_ = FailureKind::kStopped;  // protected by stop_mu_
  std::string stop_message_;                       // protected by stop_mu_
  std::mutex end_mu_;
  // Protected by end_mu_: the first vCPU to end other than by exit 0 (none:
  // every vCPU exited 0).
  std::optional<size_t> decider_;
};

}  // namespace kvmem
