// `kvmem stress`: rounds of VMs that write, free and verify memory at
// random, on one shared MemoryFile, checking that nothing is lost and that
// commit comes back down.
//
// Every VM's program is generated on the host from (seed, round, vm). For
// each of its regions, one after another, the guest fills the region with a
// seeded pattern, reports a random sub-range free (sync or async, at a
// random granule), verifies it reads zero, reports it again (reading a hole
// commits a fresh page), verifies the rest still holds its pattern, and
// finally reports the whole region free. The guest's own reads are the
// oracle: a mismatch fails the VM with address, expected and actual.
//
// The host samples commit (st_blocks) while VMs run and fails the run if it
// ever passes the commit budget, which must fit under the host's memory
// limit (a VM that would pass the limit is stopped, and counts as a failure); after each round, with every VM gone and
// reclaimed, commit must be back within `slack` of the baseline.
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

struct StressSummary {
  uint64_t seed = 0;
  uint64_t rounds = 0;
  uint64_t vms_booted = 0;
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
  bool budget_exceeded = false;
  double elapsed_s = 0;
  std::vector<std::string> problems;  // one sentence each: seed, round, VM, what

  int exit_code() const {
    return integrity_errors || vm_failures || commit_leaks || budget_exceeded ? 1 : 0;
  }
  std::string to_text() const;  // the JSON is harness/report.h's stress_report()
};

// One progress line, at most `width` columns (ASCII only; 0: no limit).
// With `bar`, it starts with a 20-column bar of rounds done (or of time,
// when only a duration bounds the run); a line that does not fit is cut,
// never wrapped, so a terminal can redraw it in place.
std::string format_progress_line(const StressProgress& p, const StressConfig& config, size_t width, bool bar);

// One VM of one round, with what its program will write and free.
struct StressVm {
  VmConfig config;
  uint64_t bytes_written = 0;
  uint64_t bytes_freed = 0;
};
StressVm make_stress_vm(const StressConfig& c, uint64_t seed, uint64_t round, uint64_t index);

// Programs at least as large as any make_stress_vm() can generate for this
// config, for any seed, round or VM; and a check that they assemble, so that
// `validate` and `stress` refuse up front what a later round could not build.
std::vector<StressVm> worst_case_stress_vms(const StressConfig& c);
Status check_stress_programs(const StressConfig& c);

// A random non-zero seed, for a config that names none.
uint64_t random_stress_seed();

// Runs the stress test; a config seed of 0 means random_stress_seed().
// `progress` is called from a ticker thread about every 250 ms and once
// after each round. Rounds run under `limit` (nullopt: this process's own,
// host_memory_limit()); a config that cannot fit under it is an error
// before anything runs (check_stress_fits), as is a limit that cannot be read.
Result<StressSummary> run_stress(const Kvm& kvm, MemoryFile& file, const StressConfig& config,
                                 const std::function<void(const StressProgress&)>& progress,
                                 std::optional<MemoryLimit> limit = std::nullopt);

}  // namespace kvmem
