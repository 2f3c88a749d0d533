// Typed configuration of a kvmem run, parsed from JSON.
//
// Everything in a config is untrusted. Each rejection names the JSON pointer
// of the bad value and why: "/program/3/length: must be a multiple of 8".
// docs/config.md documents every key.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "guest/boot.h"
#include "guest/program.h"

namespace kvmem {

struct VmConfig {
  std::string name;
  uint64_t memory = 0;  // bytes of guest RAM at guest-physical 0
  unsigned vcpus = 1;
  uint64_t timeout_ms = 10'000;
  guest::PageSize page_size = guest::PageSize::k2M;
  uint64_t ram_unit = 16ull << 20;  // RAM is allocated in pieces of this size
  std::vector<guest::Step> program;
};

// What one `kvmem run` boots: one VM, or several sharing one MemoryFile.
struct RunConfig {
  std::vector<VmConfig> vms;
};

inline constexpr uint64_t kMaxTimeoutMs = 3'600'000;
inline constexpr size_t kMaxVms = 64;
inline constexpr size_t kMaxSteps = 10'000;
inline constexpr unsigned kMaxLoopDepth = 8;

// Parses a size: a non-negative integer, or a string holding a decimal or
// 0x-hex number with an optional K, M, G or T suffix (powers of 1024):
// "4K", "64M", "0x200000". Returns an error sentence (no pointer) on failure.
Result<uint64_t> parse_size_string(std::string_view s);

// Parses one VM's config. `default_name` is used when the config has no "name".
Result<VmConfig> parse_vm_config(const nlohmann::json& j, std::string_view default_name);

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
};
Result<StressConfig> load_stress_config(const std::string& path);
// The JSON of a config file, for a caller that must look before it parses.
Result<nlohmann::json> read_config_json(const std::string& path);
Result<StressConfig> parse_stress_config(const nlohmann::json& j);

// Parses either form: one VM's config, or {"vms": [VM config, ...]} whose
// VMs are named "<default_name>-<index>" unless they say otherwise. Names
// must differ.
Result<RunConfig> parse_run_config(const nlohmann::json& j, std::string_view default_name);

// Reads and parses a config file (either form). Errors start with the path.
Result<RunConfig> load_run_config(const std::string& path);

}  // namespace kvmem
