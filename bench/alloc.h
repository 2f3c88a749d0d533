// `kvmem bench alloc`: the allocator's three benchmarks.
//
//   alloc     Allocate+DecRef pairs per second with 10^3, 10^5 and 10^6 live,
//             fragmented allocations (every other page live): the gap index
//             should keep the curve flat. Measured with the reclaimer running
//             (pairs_per_s) and with its punches held (…_reclaim_held).
//   decommit  decommit() throughput for 4 KiB, 64 KiB and 2 MiB ranges as a
//             ratio to raw fallocate(PUNCH_HOLE) on a bare memfd, same run.
//   usage     update_usage() on a 64 GiB sparse file with 1 GiB committed as
//             512 pieces of 2 MiB, scanning from nothing, against one mincore
//             of the whole mapping; and the st_blocks-elided case apart.
//
// Each row is one JSON object with a "bench" name; print_alloc_bench_table
// renders them for people. The method is written up in docs/benchmarks.md.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvmem {

struct AllocBenchOptions {
  // A short run (smaller sizes, one repetition) for tests and smoke checks;
  // its figures are not the ones to quote.
  bool quick = false;
};

// Runs all three benchmarks. progress receives one line per phase (may be
// empty). Rows carry an "error" key instead of figures when a phase fails.
std::vector<nlohmann::json> run_alloc_bench(
    const AllocBenchOptions& options,
    const std::function<void(const std::string&)>& progress = {});

// A table with one section per "bench", one column per key.
std::string format_alloc_bench_table(const std::vector<nlohmann::json>& rows);

}  // namespace kvmem
