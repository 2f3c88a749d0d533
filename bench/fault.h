// `kvmem bench fault`: what a guest's first touch of a page costs, per
// backing and prefault mode, as a distribution, beside what the host itself
// pays for the same memory, all in one run.
//
// For each backing (memfd, memfd-thp, hugetlb, anon) the benchmark measures,
// in this order:
//   host      a host thread's first touch of `size` fresh bytes of that
//             backing, one word per `stride`, each access timed (rdtsc
//             with lfence around it), then a second pass over the same bytes
//             (the host's plain write loop);
//   eager     a VM whose RAM the host populated before it started: the
//             guest's first touch is then the pure virtualisation fault;
//   each mode of `prefaults` (none, eager, ahead): a fresh VM whose
//             vCPUs each sweep their own slice of `size` (as the KVM
//             selftests' memstress does), timed per access at CPL3 where
//             rdtsc is native, then sweep it again (the second pass).
// The guest keeps its samples in its own RAM, outside the measured range,
// and the host reads them after the VM ended: the measured loop makes no
// exit. The guest's ticks are the host's TSC (KVM_GET_TSC_KHZ, or a
// calibration against CLOCK_MONOTONIC where that ioctl fails).
//
// A backing the host cannot give is a row with "skipped": true and a
// reason that names the setting that would enable it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "bench/plot.h"
#include "bench/stats.h"

namespace kvmem {

class Kvm;

struct FaultBenchOptions {
  std::vector<std::string> backings{"memfd", "anon"};  // memfd, memfd-thp, hugetlb, anon
  std::vector<std::string> prefaults{"none", "ahead"};  // none, eager, ahead
  uint64_t size = 256ull << 20;  // bytes swept, split evenly among the vCPUs
  unsigned vcpus = 1;
  uint64_t stride = 4096;  // bytes between accesses
  bool write = true;       // false: reads
  unsigned repeat = 1;     // each measurement this many times; samples pooled
  unsigned prefault_threads = 0;  // ahead: 0 lets the engine choose
  // An unrecorded host sweep per backing before the measured ones (see
  // "Warm-up" in docs/benchmarks.md).
  bool warmup = true;
};

// The options' values checked against each other: names known, size a
// multiple of 2 MiB × vcpus, stride a multiple of 8 that divides a slice.
Status check_fault_options(const FaultBenchOptions& o);

// Ticks of a `tsc_khz` counter as nanoseconds. tsc_khz > 0.
double ticks_to_ns(uint64_t ticks, uint64_t tsc_khz);

// The latency object of the JSON rows: p50, p90, p99, p999, max, mean (ns)
// and total_ms. An empty sample list gives nulls.
nlohmann::json latency_json(const Summary& s, double total_ms);

// What the run was measured on: kernel, KVM flavour, CPU model, THP policy,
// huge pages, TSC kHz and where that figure came from.
nlohmann::json fault_host_facts(uint64_t tsc_khz, const std::string& tsc_source);

// Bytes of guest RAM each benchmark VM has (the swept range, the samples,
// the boot area and the result slots): what a hugetlb run needs free.
uint64_t fault_guest_ram(const FaultBenchOptions& o);

// One JSON object per backing and prefault mode (see docs/benchmarks.md for
// the keys). `progress` (may be empty) gets a line per phase. With `plot`,
// each guest first-touch distribution and each host floor (dashed) is
// added to it, for cdf_svg().
std::vector<nlohmann::json> run_fault_bench(const Kvm& kvm, const FaultBenchOptions& o,
                                            const std::function<void(const std::string&)>& progress,
                                            std::vector<CdfSeries>* plot = nullptr);

// The rows as a table, and the selftests' two lines per row
// ("Total guest execution time", "Overall demand paging rate").
std::string format_fault_bench(const std::vector<nlohmann::json>& rows);

}  // namespace kvmem
