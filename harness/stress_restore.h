// The second half of stress VMs that were snapshotted in the middle of a
// round (harness/stress.h, "Snapshots"): where their snapshots go, and how
// they come back.
//
// Synopsis
//   SnapshotFolder::open(config)   the run's folder: made under $TMPDIR, or the config's
//   folder.file_of(vm name)        DIR/<name>.kvmsnap, as snapshot_to_dir writes it
//   folder.done_with(vm name)      removes that snapshot (unless kept)
//   run_restored(kvm, jobs, limit) restores each snapshot, runs the VMs side
//                                  by side to their end, lets each go and
//                                  reads its memory file after
//
// A restored VM's RAM lives on the memory file restore_snapshot made for it
// (one per VM), so the round's shared files do not see it: each file is
// read once its VM has gone and the reclaimer is done, and must then be
// empty. The VMs run as run_vms runs its own (harness/runner.h): each on a
// thread of its own, registered for signals, under the memory limit's
// watch, their files' commit sampled every 5 ms for the peak.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"
#include "config/stress_config.h"
#include "harness/runner.h"
#include "harness/snapshot.h"
#include "memory/host_limits.h"
#include "vmm/kvm/kvm.h"

namespace kvmem {

// Where a run's snapshots go. Without a folder in the config, one made for
// the run (mkdtemp under $TMPDIR, else /tmp), removed with what is in it
// when the SnapshotFolder goes; the config's is made when missing and never
// removed. With `keep`, no snapshot and no folder is removed. Move-only.
class SnapshotFolder {
 public:
  static Result<SnapshotFolder> open(const StressSnapshots& config);
  SnapshotFolder(SnapshotFolder&& other) noexcept;
  SnapshotFolder& operator=(SnapshotFolder&&) = delete;
  ~SnapshotFolder();

  const std::string& path() const { return path_; }
  bool kept() const { return keep_; }
  std::string file_of(const std::string& vm_name) const;
  // The VM's snapshot has served: it goes, unless kept. A snapshot that
  // is not there (never written) is no error.
  void done_with(const std::string& vm_name) const;

 private:
  SnapshotFolder(std::string path, bool made, bool keep) : path_(std::move(path)), made_(made), keep_(keep) {}
  std::string path_;
  bool made_ = false;  // made by open() for this run: removed at the end
  bool keep_ = false;
};

// One snapshot to restore, and how.
struct RestoreJob {
  std::string path;
  RestoreMode mode = RestoreMode::kEager;
};

// What became of one RestoreJob.
struct RestoredRun {
  RestoreMode mode = RestoreMode::kEager;
  // restore_snapshot's answer: 0 a VM ready to run; 2 the snapshot (or its
  // config) is damaged or refused; 3 the host could not make the VM.
  int restore_exit_code = 0;
  std::string restore_error;
  double restore_ms = 0;
  VmOutcome out;  // its run, when restored: its setup_error is set when its thread could not start
  LazyStats lazy;  // kLazy: the loader's stats once the run ended
  // Its memory file once the VM had gone and the reclaimer was done: the
  // allocator's count (update_usage) and the kernel's (st_blocks).
  uint64_t file_committed_after = 0;
  uint64_t file_host_committed_after = 0;

  bool restored() const { return restore_exit_code == 0; }
};

struct RestoredTotals {
  std::vector<RestoredRun> runs;  // one per job, in order
  uint64_t peak_committed_bytes = 0;  // the restored VMs' files, summed, sampled while they ran
  uint64_t memory_limit_stops = 0;
};

// Restores every job's snapshot (one after another, on this thread), then
// runs the restored VMs side by side, each to its end, under `limit`.
RestoredTotals run_restored(const Kvm& kvm, const std::vector<RestoreJob>& jobs, const MemoryLimit& limit);

}  // namespace kvmem
