#include "bench/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/check.h"

namespace kvmem {

double percentile(std::span<const double> sorted, double p) {
  KVMEM_CHECK(!sorted.empty());
  KVMEM_CHECK(p >= 0 && p <= 100);
  const double n = static_cast<double>(sorted.size());
  // A hair below the product, so that 90% of 10 samples is rank 9 and not
  // 10 when 0.9 * 10 rounds up to 9.000000000000002 in binary.
  const double rank = std::ceil(p / 100 * n - 1e-9);
  const size_t i = rank < 1 ? 0 : static_cast<size_t>(rank) - 1;
  return sorted[std::min(i, sorted.size() - 1)];
}

Summary summarize(std::vector<double> samples) {
  if (samples.empty()) return {};
  std::sort(samples.begin(), samples.end());
  const double sum = std::accumulate(samples.begin(), samples.end(), 0.0);
  return Summary{.count = samples.size(),
                 .min = samples.front(),
                 .p10 = percentile(samples, 10),
                 .p50 = percentile(samples, 50),
                 .p90 = percentile(samples, 90),
                 .p99 = percentile(samples, 99),
                 .p999 = percentile(samples, 99.9),
                 .max = samples.back(),
                 .mean = sum / static_cast<double>(samples.size())};
}

}  // namespace kvmem
