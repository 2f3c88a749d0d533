// `kvmem stress`: rounds of VMs that write, free and verify memory at
// random, on one shared MemoryFile (and, for VMs of other RAM backings, on
// the memory files run_vms makes for them, or on anonymous RAM), checking
// that nothing is lost and that commit comes back down.
//
// Every VM's program is generated on the host from (seed, round, vm), and
// so are its vCPU count, backing and prefault (from a stream of their own,
// so that a one-vCPU memfd VM's program does not depend on the lists). For
// each of its regions, one after another, the guest fills the region with a
// seeded pattern, reports a random sub-range free (sync or async, at a
// random granule), verifies it reads zero, reports it again (reading a hole
// commits a fresh page), verifies the rest still holds its pattern, and
// finally reports the whole region free. The guest's own reads are the
// oracle: a mismatch fails the VM with address, expected and actual.
//
// A VM of several vCPUs splits each region into one disjoint slice per vCPU
// (whole 2 MiB pages, as evenly as they go; a region of fewer pages than
// vCPUs leaves the last vCPUs idle for it), and its vCPUs do the above on
// their slices at once, after a barrier at the start of each region: they
// race each other on the VMM's free path and on the reclaimer. Their frees
// are sync (the free ring is for one-vCPU VMs).
//
// The host samples commit (st_blocks) while VMs run and fails the run if it
// ever passes the commit budget, which must fit under the host's memory
// limit (a VM that would pass the limit is stopped, and counts as a
// failure); after each round, with every VM gone and reclaimed, commit of
// every memory file must be back within `slack` of the baseline. Anonymous
// RAM is in no file and goes with its mapping, so each VM that ends well is
// also checked on its own: the VMM decommitted every byte its guest
// reported free (hugetlb: at least every whole region), and when its
// program ended it held no more RAM (mincore) than its prefault explains,
// plus `slack`.
//
// Snapshots (config "snapshots", harness/stress_restore.h): a VM chosen from
// the seed (a stream of its own) gets a snapshot step with then = exit in
// one region, on every vCPU: after the region was filled and its sub-range
// freed, before the sub-range is verified zero. The VM the round starts
// writes its snapshot there and exits; once the round's VMs are gone, the
// VM is restored from it (lazily or eagerly, also from the seed) and runs
// the rest of its program, whose verifies prove that the snapshot lost
// nothing: the pattern, and the zeros of what was freed before it. Any VM
// can be chosen (stress VMs have no windows): its RAM of any backing, and
// its free ring's state, are in the snapshot, so a chosen VM frees as it
// would unchosen; hugetlb and anon RAM are restored eagerly.
// Both halves are checked as a whole VM is, each for its own part of the
// frees, and the restored VM's memory file must be empty once it has gone.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "memory/host_limits.h"
#include "memory/memory_file.h"
#include "config/stress_config.h"
#include "guest/program.h"
#include "harness/runner.h"
#include "harness/snapshot.h"
#include "vmm/kvm/kvm.h"

namespace kvmem {

struct StressProgress {
  uint64_t round = 0;  // rounds finished
  uint64_t vms_booted = 0;
  uint64_t bytes_written = 0, bytes_freed = 0, bytes_reclaimed = 0;
  uint64_t commit_bytes = 0;  // st_blocks now
  uint64_t peak_commit_bytes = 0;
  double elapsed_s = 0;
};

// VMs of one RAM backing, over the run.
struct StressBackingTally {
  RamBacking backing = RamBacking::kMemfd;
  uint64_t vms = 0;     // that ran, or were to
  uint64_t failed = 0;  // of them, that failed a check or could not start
};

struct StressSummary {
  uint64_t seed = 0;
  uint64_t rounds = 0;
  uint64_t vms_booted = 0;
  uint64_t vcpus_booted = 0;
  uint64_t bytes_written = 0;
  uint64_t bytes_freed = 0;      // bytes the guests reported free
  uint64_t bytes_reclaimed = 0;  // bytes the VMM punched for those reports
  uint64_t baseline_commit_bytes = 0;
  uint64_t peak_commit_bytes = 0;
  uint64_t final_commit_bytes = 0;
  uint64_t commit_budget_bytes = 0;
  uint64_t integrity_errors = 0;  // a guest read something it did not expect
  uint64_t vm_failures = 0;       // VMs that failed in any other way
  uint64_t commit_leaks = 0;      // rounds after which commit stayed up
  // VMs that ended well but did not give back what their guest freed: a
  // report not decommitted in full, or RAM still held when the program ended.
  uint64_t vm_leaks = 0;
  std::vector<StressBackingTally> backings;  // each backing of the config, in its order
  // Snapshots (config "snapshots"). In a run where nothing fails,
  // snapshot_vms = snapshots_taken = restored_lazy + restored_eager.
  uint64_t snapshot_vms = 0;     // VMs given a snapshot step
  uint64_t snapshots_taken = 0;  // snapshot files written
  uint64_t restored_lazy = 0, restored_eager = 0;  // restores that gave a VM ready to run, by mode
  // VMs that reached their snapshot step but left no snapshot; snapshots
  // that could not be restored, or whose data turned out damaged while the
  // restored VM ran (kind snapshot). Each is also one of vm_failures.
  uint64_t snapshot_failures = 0, restore_failures = 0;
  std::string snapshot_dir;  // where the snapshots were kept; empty when removed
  bool budget_exceeded = false;
  double elapsed_s = 0;
  std::vector<std::string> problems;  // one sentence each: seed, round, VM, what

  int exit_code() const {
    return integrity_errors || vm_failures || commit_leaks || vm_leaks || budget_exceeded ? 1 : 0;
  }
  std::string to_text() const;  // the JSON is harness/report.h's stress_report()
};

// One progress line, at most `width` columns (ASCII only; 0: no limit).
// With `bar`, it starts with a 20-column bar of rounds done (or of time,
// when only a duration bounds the run); a line that does not fit is cut,
// never wrapped, so a terminal can redraw it in place.
std::string format_progress_line(const StressProgress& p, const StressConfig& config, size_t width, bool bar);

// Where a VM's snapshot step is, and how it comes back.
struct StressSnapshotPlan {
  uint64_t region = 0;  // the step comes after this region's first free
  RestoreMode mode = RestoreMode::kEager;
  // Of the VM's bytes_freed, what the steps before the snapshot free; and
  // of its bytes_written, the regions freed whole before it.
  uint64_t bytes_freed_before = 0;
  uint64_t regions_freed_before = 0;
};

// One VM of one round, with what its program will write and free.
struct StressVm {
  VmConfig config;  // `program` for one vCPU, `programs` for several
  uint64_t bytes_written = 0;
  uint64_t bytes_freed = 0;  // the bytes its free reports name, repeats counted
  // The most RAM it may hold when its program has ended: the boot area's
  // 2 MiB; with eager prefault also the RAM no region covers; with ahead,
  // all of RAM (a prefault thread may commit again what the guest freed).
  uint64_t max_end_commit = 0;
  std::optional<StressSnapshotPlan> snapshot{};  // config.source is set with it
};
StressVm make_stress_vm(const StressConfig& c, uint64_t seed, uint64_t round, uint64_t index);
// Its image: every vCPU's program (guest::build_vcpus).
Result<guest::Image> build_stress_vm(const StressVm& vm);

// Which part of a VM's program a run ran: all of it, or the part before
// or after its snapshot step (vm.snapshot).
enum class StressPart { kWhole, kBeforeSnapshot, kAfterSnapshot };

// For a VM that ran `out` (exit 0) from `vm`: why it did not give back
// what its guest freed, as a sentence, or nothing. Its guest must have
// reported exactly vm.bytes_freed with no range refused; the VMM must have
// decommitted all of it (hugetlb: no more, and at least every whole region,
// vm.bytes_written); and the RAM it held when the program ended (mincore)
// may pass vm.max_end_commit by `slack` at most. For a part, the frees and
// whole regions are that part's (StressSnapshotPlan); the part before the
// snapshot still holds the region it stopped in, so its RAM is not
// checked here (it goes with the VM, and the round's check sees it).
std::optional<std::string> stress_vm_leak(const StressVm& vm, const VmOutcome& out, uint64_t slack,
                                          StressPart part = StressPart::kWhole);

// Programs at least as large as any make_stress_vm() can generate for this
// config, for any seed, round or VM; and a check that they assemble, so that
// `validate` and `stress` refuse up front what a later round could not build.
std::vector<StressVm> worst_case_stress_vms(const StressConfig& c);
Status check_stress_programs(const StressConfig& c);

// Why this host cannot give a backing of the config (for all VMs of a
// round at once), naming the backing and the setting that would enable it;
// nothing when it can give them all.
Status check_stress_backings(const StressConfig& c);

// A random non-zero seed, for a config that names none.
uint64_t random_stress_seed();

// Runs the stress test; a config seed of 0 means random_stress_seed().
// `progress` is called from a ticker thread about every 250 ms and once
// after each round. Rounds run under `limit` (nullopt: this process's own,
// host_memory_limit()); a config that cannot fit under it is an error
// before anything runs (check_stress_fits), as is a limit that cannot be
// read or a backing the host cannot give (check_stress_backings).
Result<StressSummary> run_stress(const Kvm& kvm, MemoryFile& file, const StressConfig& config,
                                 const std::function<void(const StressProgress&)>& progress,
                                 std::optional<MemoryLimit> limit = std::nullopt);

}  // namespace kvmem
