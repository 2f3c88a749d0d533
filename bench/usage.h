// `kvmem bench usage`: what MemoryFile::update_usage() costs per call, by
// scan mode and file size, against one plain mincore of the whole mapping.
//
// For each file size, two fresh MemoryFiles (UsageScan::Mincore, the
// default, and UsageScan::SeekData), each with `committed` bytes written
// through the mapping as pieces of `piece` bytes spread evenly over the
// file (one data extent each). In each file:
//   plain_mincore  (the Mincore file only) `rounds` mincores of the whole
//                  mapping, in a loop of their own: what a scan that knew
//                  nothing of holes would pay;
// then `rounds` times:
//   mincore / seek_data
//                  forget_known_committed(), then one timed update_usage():
//                  a fresh scan in that file's mode, st_blocks disagreeing
//                  with nothing known;
//   elided         a second update_usage() straight after, which st_blocks
//                  lets skip (reported from the Mincore file).
// Every call is timed on its own (steady_clock), and every scan must find
// exactly `committed` bytes.
//
// One JSON row per mode and size (keys in docs/benchmarks.md); with `plot`
// one CDF series per mode and size, plain mincore dashed.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "bench/plot.h"

namespace kvmem {

struct UsageBenchOptions {
  std::vector<uint64_t> sizes{uint64_t{4} << 30, uint64_t{64} << 30};  // file sizes
  // Bytes committed in each file; 0: 1/64 of its size (1 GiB of 64 GiB),
  // rounded down to whole pieces, at least one.
  uint64_t committed = 0;
  uint64_t piece = uint64_t{2} << 20;  // bytes per committed piece
  unsigned rounds = 20;                // timed calls per mode and size
};

// Largest file the benchmark takes: a plain mincore of it needs a vector of
// one byte per page (64 MiB here).
inline constexpr uint64_t kUsageBenchMaxSize = uint64_t{256} << 30;

// The options checked against each other, each refusal naming the option:
// sizes in [piece, 256 GiB] and multiples of the piece, the piece a
// multiple of 4 KiB, committed whole pieces and no larger than any size,
// nor than half of the machine's memory.
Status check_usage_options(const UsageBenchOptions& o);

// The bytes committed in a file of `size` bytes.
uint64_t usage_committed(const UsageBenchOptions& o, uint64_t size);

// The rows, in size order: mincore, seek_data, elided, plain_mincore. A size
// that fails gives one row with "error" instead. `progress` (may be empty)
// gets a line per file; with `plot`, each mode's per-call times are added.
std::vector<nlohmann::json> run_usage_bench(const UsageBenchOptions& o,
                                            const std::function<void(const std::string&)>& progress = {},
                                            std::vector<CdfSeries>* plot = nullptr);

// The rows as a table, times in microseconds.
std::string format_usage_bench(const std::vector<nlohmann::json>& rows);

}  // namespace kvmem
