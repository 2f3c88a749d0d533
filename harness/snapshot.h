// VM snapshots as files (docs/snapshot.md): what `kvmem run --snapshot-to`
// writes when a guest reaches its snapshot step, and what `kvmem restore`
// resumes.
//
// A VM's snapshot, DIR/<vm name>.kvmsnap (snapshot/format.h), holds:
//   section config 0   the VM's config as one VM's JSON (VmConfig::source),
//                      with the files its windows show
//   section vcpu i     vCPU i's state (vmm/kvm/vcpu_state.h), or no bytes
//                      for a vCPU that had ended
//   section device d   the devices' state (harness/snapshot_parts.h): the
//                      console's record, each vCPU's free ring, the free
//                      report counters
//   section file s     file space s's size, seals and data map
//   space 0, RAM       guest RAM's populated, non-zero pages, of any backing
//   spaces 1..n, file  each file a window shows, its non-zero pages
// The write is whole or absent (the writer renames a finished .tmp).
//
// Eager restore: the config is parsed again (a config that no longer
// validates is refused), every section decoded and checked against it, the
// files made in a fresh tmpfs on a fresh memory file, the VM created on it
// with its windows onto them, all of its RAM decommitted and every extent
// of space 0 read into it (pages no extent covers read zero), the vCPUs set
// to their states and the free rings set up again; then it runs as `kvmem
// run` runs a VM. A damaged or hostile snapshot is refused (exit 2) before
// anything runs, naming what is wrong.
#pragma once

#include <memory>
#include <string>

#include "base/error.h"
#include "harness/snapshot_parts.h"
#include "memory/memory_file.h"
#include "memory/tmpfs/file_system.h"
#include "snapshot/memory.h"
#include "vmm/kvm/kvm.h"
#include "vmm/memory/lazy_ram.h"
#include "vmm/vm.h"

namespace kvmem {

// Writes each snapshot of the VM it is armed on to dir/<name>.kvmsnap.
Vm::SnapshotSink snapshot_to_dir(std::string dir);

// How guest RAM comes back (docs/snapshot.md, "Restoring").
enum class RestoreMode {
  kEager,  // every extent read into RAM before the first instruction
  kLazy,   // the guest starts at once; RAM is served as it is touched (userfaultfd) and filled behind it
};
const char* restore_mode_name(RestoreMode mode);

struct RestoreOptions {
  RestoreMode mode = RestoreMode::kEager;
  LazyOptions lazy;  // kLazy only
};

struct RestoredVm {
  // 0 ready; 2 the snapshot (or its config) is damaged or refused; 3 the
  // host could not make the VM.
  int exit_code = 0;
  std::string error;
  VmConfig config;
  std::unique_ptr<MemoryFile> file;  // declared before vm: the VM goes first
  // The files the VM's windows show, restored on `file` (null when it has
  // no windows); the VM's own copies. Between file and vm: it goes after
  // the VM's windows and before the memory file.
  std::unique_ptr<tmpfs::FileSystem> files;
  std::unique_ptr<Vm> vm;
  LoadStats load;        // eager: what was read before the run (RAM and files); lazy: the windows' files
  uint64_t files_restored = 0;
  // The devices' state the snapshot held. The rings are set up again; the
  // console record and the free counts are what came before the snapshot,
  // which the restored run's own report does not include (restore.before).
  SnapshotDevices before;
  uint64_t snapshot_bytes = 0;
  double restore_ms = 0;  // open to ready to run (lazy: RAM not yet in)
  RestoreMode mode = RestoreMode::kEager;
  std::unique_ptr<SnapshotReader> reader;  // lazy: read while the guest runs
  std::unique_ptr<LazyRam> lazy;           // kLazy: serves RAM; stopped before the VM goes

  // kLazy: the faults served and the fill's pace so far (all zero for kEager).
  LazyStats lazy_stats() const { return lazy ? lazy->stats() : LazyStats{}; }
  RestoredVm() = default;
  RestoredVm(RestoredVm&&) = default;
  RestoredVm& operator=(RestoredVm&&) = default;
  ~RestoredVm() {
    if (!lazy) return;
    lazy->stop();  // unregister before the VM gives its RAM back
    if (vm) vm->memory().set_decommit_observer(nullptr);
  }
};

// Opens and checks the snapshot, makes the VM on a fresh memory file and
// brings its RAM back as `options` says; the VM is then ready to run().
RestoredVm restore_snapshot(const Kvm& kvm, const std::string& path, const RestoreOptions& options = {});

}  // namespace kvmem
