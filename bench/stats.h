// One summary of a benchmark's samples, for every `kvmem bench`.
//
//   Summary s = summarize(samples);      // count, min, max, mean, p10 … p99.9
//   double q = percentile(sorted, 95);   // any other percentile
//
// Percentiles are nearest-rank: the p-th percentile of n sorted samples is
// the sample of rank ceil(p/100 · n) (1-based), the smallest sample with at
// least p% of the samples at or below it; percentile 0 is the minimum. It is
// always one of the samples, never an interpolation, so a p99 over 64
// samples is honestly the maximum. Samples are doubles in whatever unit the
// caller measured (ms, us, ns per call).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kvmem {

struct Summary {
  uint64_t count = 0;  // 0: no samples, and every figure below is 0
  double min = 0;
  double p10 = 0;
  double p50 = 0;  // the median
  double p90 = 0;
  double p99 = 0;
  double p999 = 0;  // p99.9
  double max = 0;
  double mean = 0;
};

// The nearest-rank p-th percentile (0 <= p <= 100) of samples sorted in
// ascending order. Precondition (checked): samples is not empty, p in range.
double percentile(std::span<const double> sorted, double p);

// The summary of samples in any order (taken by value: they are sorted).
Summary summarize(std::vector<double> samples);

}  // namespace kvmem
