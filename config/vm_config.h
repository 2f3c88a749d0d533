// VM and run configs, parsed from untrusted JSON into vmm::VmConfig.
//
// Everything in a config is untrusted. Each rejection names the JSON pointer
// of the bad value and why: "/program/3/length: must be a multiple of 8".
// docs/config.md documents every key.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "config/steps.h"
#include "vmm/vm_config.h"

namespace kvmem {

// A shared file of the run (the tmpfs layer), made before any VM starts
// and seen by every VM that has a window onto it.
struct FileConfig {
  std::string name;
  uint64_t size = 0;
  std::optional<guest::Pattern> pattern;  // fills the file (word at offset x: pattern.word(x))
  uint32_t seals = 0;                     // tmpfs::kSeal* bits, added after the pattern
};

// What one `kvmem run` boots: one VM, or several sharing one MemoryFile,
// and the files they share.
struct RunConfig {
  std::vector<FileConfig> files;
  std::vector<VmConfig> vms;
};

inline constexpr size_t kMaxFiles = 64;
inline constexpr size_t kMaxWindows = 16;  // per VM
inline constexpr uint64_t kMaxFileBytes = 64ull << 30;

inline constexpr unsigned kMaxPrefaultThreads = 64;
inline constexpr size_t kMaxPrefaultLanes = 64;

inline constexpr uint64_t kMaxTimeoutMs = 3'600'000;
inline constexpr size_t kMaxVms = 64;

// Parses a size: a non-negative integer, or a string holding a decimal or
// 0x-hex number with an optional K, M, G or T suffix (powers of 1024):
// "4K", "64M", "0x200000". Returns an error sentence (no pointer) on failure.
Result<uint64_t> parse_size_string(std::string_view s);

// Parses one VM's config. `default_name` is used when the config has no "name".
Result<VmConfig> parse_vm_config(const nlohmann::json& j, std::string_view default_name);

// Parses either form: one VM's config, or {"vms": [VM config, ...]} whose
// VMs are named "<default_name>-<index>" unless they say otherwise. Names
// must differ.
Result<RunConfig> parse_run_config(const nlohmann::json& j, std::string_view default_name);

// Parses a config read from `path` (either form); VMs are named after the
// file unless they say otherwise. Errors start with the path.
Result<RunConfig> run_config_from(const nlohmann::json& j, const std::string& path);

// Reads and parses a config file (either form). Errors start with the path.
Result<RunConfig> load_run_config(const std::string& path);

// Every parse_* and load_* function catches what the JSON library throws
// and returns it as an error with the pointer: no exception leaves config/.

}  // namespace kvmem
