// `kvmem stress` configs: {"stress": {...}} (docs/config.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "config/vm_config.h"

namespace kvmem {

inline constexpr uint64_t kMaxStressRounds = 1'000'000;
inline constexpr uint64_t kMaxStressDurationS = 86'400;

// `"snapshots"`: some VMs are snapshotted in the middle of a region and
// restored (harness/stress.h says where and which).
struct StressSnapshots {
  // The share of the VMs that are snapshotted, each chosen from the seed;
  // 0: none, and no folder is made.
  double probability = 0;
  // The share of the snapshots restored lazily (the rest eagerly); hugetlb
  // and anon RAM are always restored eagerly.
  double lazy = 0.5;
  // Where the snapshots go: empty for a new folder under $TMPDIR (or /tmp).
  std::string dir;
  // Keep each snapshot (and the folder) after its VM ran; else each goes
  // once its restored VM has ended, and a folder made for the run with it.
  bool keep = false;

  bool on() const { return probability > 0; }
};

// `kvmem stress`: rounds of VMs that write, free and verify at random.
struct StressConfig {
  uint64_t seed = 0;            // 0: pick one at random (and print it)
  uint64_t rounds = 0;          // 0: no limit; the run ends at duration_s
  uint64_t duration_s = 60;     // 0: no limit; the run ends after `rounds`
  uint64_t vms_per_round = 4;   // run concurrently
  uint64_t vm_memory = 256ull << 20;
  uint64_t ram_unit = 16ull << 20;
  uint64_t regions_per_vm = 6;  // written, partly freed and verified one after another
  uint64_t region_min = 2ull << 20;
  uint64_t region_max = 16ull << 20;
  uint64_t commit_budget = 0;   // 0: none; else measured commit may never pass it
  uint64_t slack = 16ull << 20; // commit after a round may exceed the baseline by this
  uint64_t timeout_ms = 120'000;
  // Fault injection, to prove the checker: the first VM of every round
  // verifies its first region against a pattern it never wrote.
  bool inject_corruption = false;
  // Each VM's vCPUs, picked from the seed in [vcpus_min, vcpus_max]
  // (1..guest::layout::kMaxVcpus); each works on its own slice of every region.
  unsigned vcpus_min = 1, vcpus_max = 1;
  // Each VM's RAM backing and prefault, picked from the seed from these
  // lists (not empty; a name listed twice is picked twice as often).
  std::vector<RamBacking> backings{RamBacking::kMemfd};
  std::vector<Prefault> prefaults{Prefault::kNone};
  StressSnapshots snapshots;
};
Result<StressConfig> load_stress_config(const std::string& path);
// The JSON of a config file, for a caller that must look before it parses.
Result<nlohmann::json> read_config_json(const std::string& path);
Result<StressConfig> parse_stress_config(const nlohmann::json& j);
// Parses a config read from `path`; errors start with the path.
Result<StressConfig> stress_config_from(const nlohmann::json& j, const std::string& path);
// True when j is a stress config ({"stress": ...}) rather than a run config.
bool is_stress_config(const nlohmann::json& j);

}  // namespace kvmem
