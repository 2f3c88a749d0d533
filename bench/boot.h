// `kvmem bench boot`: whole-process cost of `kvmem run FILE`.
//
// Spawns this very binary `runs` times as `kvmem run --json FILE`, after a
// few warm-up runs, and measures each child from spawn to reap: wall time,
// peak RSS (wait4's ru_maxrss) and the guest RAM the child's report says was
// resident, so RSS beyond guest memory can be told apart.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace kvmem {

struct BootBenchOptions {
  std::string config;  // empty: default_boot_config()
  unsigned runs = 200;
  unsigned warmup = 5;
};

// configs/hello.json: under the current directory when it is there, else
// beside the kvmem binary's build directory (found through /proc/self/exe),
// so `bench boot` works from any directory.
std::string default_boot_config();

// A child's wait status in words: "exited 1", "killed by signal SIGSEGV".
std::string describe_wait_status(int status);

// One JSON object with "bench":"boot" and the figures; see docs/benchmarks.md.
Result<nlohmann::json> run_boot_bench(const BootBenchOptions& options);

// The same figures as a few human lines.
std::string format_boot_bench(const nlohmann::json& row);

}  // namespace kvmem
