// Keeping a run of VMs under the host's memory limit (memory/host_limits.h).
//
// Under a memory cgroup, a process that passes its limit is killed by the
// kernel (137) and every VM's report dies with it, the honest VMs' too. So:
//   - Up front, a run is refused (exit 3, naming the limit) when what its VMs
//     are sure to need does not fit what the limit leaves: estimate_run() for
//     `kvmem run`, check_stress_fits() for a stress config and its budget.
//   - While VMs run, MemoryWatch (called by the runner's CommitSampler every
//     5 ms) reads the cgroup's usage and, when it passes keep_under(), stops
//     the VM holding the most guest RAM with FailureKind::kMemoryLimit and a
//     message that names the limit. The others run on; every VM is reported.
//
// The line: 90% of each bound, and at least 16 MiB below it. The kernel
// counts everything the process uses (the memory file's pages, the heap,
// KVM's kernel memory), so the watch compares the cgroup's own usage with
// the line: the guest RAM it may still add is the line minus what the
// process already holds. Page cache the kernel can drop (memory.stat's file
// LRUs) is not held against it.
//
// Which VM goes: the one holding the most guest RAM when the line is passed
// (GuestMemory::committed_bytes: its share of its memory file, or for
// anonymous RAM what mincore finds resident). Stopping it frees the
// most, and the VM that ran the process up to its limit is almost always
// that one; "the one that grew most since the last sample" would need a
// per-VM scan every 5 ms and picks whichever VM happened to be touching
// during those 5 ms. A stopped VM's RAM counts as gone (it is reclaimed as
// soon as its thread tears it down) until its thread says it is, so one
// crossing stops one VM, not every VM that is running while memory comes back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "config/stress_config.h"
#include "memory/host_limits.h"
#include "memory/memory_file.h"
#include "vmm/vm.h"
#include "vmm/vm_config.h"

namespace kvmem {

// The usage kvmem keeps the bound's cgroup under.
uint64_t keep_under(const CgroupMemoryBound& bound);

// What the VMs of a run need at least, whatever the timing.
struct MemoryEstimate {
  uint64_t guest_bytes = 0;  // guest RAM their programs touch at their peaks, summed
  uint64_t kvm_bytes = 0;    // kernel memory KVM keeps per memory slot (kvm_slot_bytes)
  uint64_t total() const { return guest_bytes + kvm_bytes; }
};

// The most guest RAM `program` holds at once, at least: steps that write or
// read (fill, touch, verify) commit their pages, free and report steps give
// them back (at once, though an async free gives them back later). The
// simulation stops at the first step whose memory effect it cannot know (a
// raw hypercall, an exit, a fault), and runs a loop's body once: a lower
// bound either way, since what it simulates is a prefix of the real run.
// The boot area is not counted (a few pages), nor what lies at or above
// `ram` (windows: their pages are the shared files', held once per run).
uint64_t program_peak_bytes(const std::vector<guest::Step>& program, uint64_t ram = UINT64_MAX);

// Kernel memory KVM allocates when a slot of `ram_bytes` is registered,
// at least. Without the TDP MMU (shadow paging: PVM here, or tdp_mmu=N on
// hardware) KVM keeps an 8-byte rmap entry per 4 KiB page of every slot,
// charged to the cgroup: 64 MiB per 32 GiB VM (82 MiB measured here, with
// write tracking). With the TDP MMU it allocates rmaps only if it ever needs
// shadow pages, so this says 0.
uint64_t kvm_slot_bytes(uint64_t ram_bytes);

// Every VM starts at once and holds its RAM until it ends, so the sum of
// their peaks is what the run is sure to need; a run that would fit only
// because some VMs end before others reach their peak is refused too.
MemoryEstimate estimate_run(const std::vector<VmConfig>& vms);

// An error naming the limit when `need` cannot fit under the line of some
// bound, given what the process already uses; `what` says what needs it.
Status check_fits(const MemoryLimit& limit, uint64_t need, const std::string& what);
Status check_run_fits(const MemoryLimit& limit, const std::vector<VmConfig>& vms);
// A stress run: its commit budget must fit, and so must what a round is sure
// to need (every VM fills a region of at least region_min at once).
Status check_stress_fits(const MemoryLimit& limit, const StressConfig& config);

// Lock order: mu_ before MemoryFile's locks and before Vm::stop_mu_ (then each Vcpu::mu_)
// (check() scans usage and stops VMs with mu_ held). VM threads call add,
// remove and released with no lock of theirs held.
class MemoryWatch {
 public:
  MemoryWatch(MemoryLimit limit, size_t vms);
  bool active() const { return !limit_.none(); }
  const MemoryLimit& limit() const { return limit_; }

  // VM `index` exists and may be stopped from now on.
  void add(size_t index, Vm& vm);
  // VM `index` is about to go. True when the watch stopped it: the caller
  // then lets its RAM go, waits for the reclaimer and calls released().
  bool remove(size_t index);
  void released(size_t index);

  // One sample: stops at most one VM when a bound's cgroup is past its line.
  void check();
  uint64_t stops() const;
  // The first error reading the cgroup while VMs ran; empty if none.
  std::string error() const;

 private:
  struct Entry {
    Vm* vm = nullptr;           // protected by mu_; set between add and remove
    bool stopped = false;       // protected by mu_
    bool released = false;      // protected by mu_
    uint64_t held = 0;          // protected by mu_: guest RAM when stopped
  };
  uint64_t pending_locked() const;
  void stop_largest_locked(const CgroupMemoryBound& bound, uint64_t usage, uint64_t line);

  const MemoryLimit limit_;
  mutable std::mutex mu_;
  std::vector<Entry> entries_;  // protected by mu_
  uint64_t stops_ = 0;          // protected by mu_
  std::string error_;           // protected by mu_
};

}  // namespace kvmem
