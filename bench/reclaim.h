// `kvmem bench reclaim`: how fast guest free-page reports turn into pages
// the host no longer holds, against raw fallocate(PUNCH_HOLE).
//
// For each range size (4 KiB, 64 KiB, 2 MiB) and mode (sync, async), a guest
// fills a region, then reports all of it free in ranges of that size,
// batches of 64, and takes a TSC timestamp (rdtsc, native at CPL3) before
// and after the free step. The step ends when the VMM has punched every
// range (sync: the hypercall returns after the punches; async: the guest
// waits for the ring's completion index), so the interval runs from the
// first report to the last page gone, exits and doorbells included. After
// the run, st_blocks confirms the pages are gone. The raw figure punches the
// same number of ranges of the same size in a bare memfd whose pages were
// all touched first, in the same run. Two layouts: contiguous ranges (which
// the VMM punches as runs) and scattered ones, every other range, which it
// must punch one by one as raw does.
//
// A second measurement: the guest-side latency of one 4 KiB report in each
// mode, as the median over 64 reports each of a page the guest had just
// written.
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace kvmem {

struct ReclaimBenchOptions {
  bool quick = false;  // a small region: a smoke check, not figures to quote
};

// JSON rows: {"bench":"reclaim", "size", "mode", "ratio_to_raw", ...} and
// {"bench":"reclaim_latency", "mode", "median_us", ...}.
Result<std::vector<nlohmann::json>> run_reclaim_bench(const ReclaimBenchOptions& options);
std::string format_reclaim_bench(const std::vector<nlohmann::json>& rows);

}  // namespace kvmem
