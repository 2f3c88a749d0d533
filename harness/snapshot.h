// VM snapshots as files (docs/snapshot.md): what `kvmem run --snapshot-to`
// writes when a guest reaches its snapshot step, and what `kvmem restore`
// resumes.
//
// A VM's snapshot, DIR/<vm name>.kvmsnap (snapshot/format.h), holds:
//   section config 0   the VM's config as one VM's JSON (VmConfig::source)
//   section vcpu i     vCPU i's state (vmm/kvm/vcpu_state.h), or no bytes
//                      for a vCPU that had ended
//   space 0, RAM       guest RAM's committed, non-zero pages
//                      (MemoryFile::data_extents over its file ranges)
// The write is whole or absent (the writer renames a finished .tmp).
//
// Eager restore: the config is parsed again (a config that no longer
// validates is refused), the VM is created on a fresh memory file, all of
// its RAM punched, every extent of space 0 pwritten into the memfd behind
// it (pages no extent covers stay holes and read zero), and the vCPUs set
// to their states; then it runs as `kvmem run` runs a VM.
//
// Not yet: anon RAM, windows and their files, and the free rings' host
// side are not saved: a VM that has any of them is refused when its
// snapshot is taken, naming what (the lazy restore and these come next).
#pragma once

#include <memory>
#include <string>

#include "base/error.h"
#include "memory/memory_file.h"
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
  std::unique_ptr<Vm> vm;
  LoadStats load;        // eager: what was read before the run; lazy: the windows' files
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
