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
  std::string config = "configs/hello.json";
  unsigned runs = 200;
  unsigned warmup = 5;
};

// One JSON object with "bench":"boot" and the figures; see docs/benchmarks.md.
Result<nlohmann::json> run_boot_bench(const BootBenchOptions& options);

// The same figures as a few human lines.
std::string format_boot_bench(const nlohmann::json& row);

}  // namespace kvmem
