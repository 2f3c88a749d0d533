// Latency CDFs as an SVG, written by hand: one line per series on a log-10
// x axis (decade ticks: 10 ns, 100 ns, 1 us, ...), y from 0 to 100%, a
// legend with each series' p50 and p99. Host floors are drawn dashed.
//
//   std::string svg = cdf_svg("bench fault", {{"memfd / none", ns}, {"host memfd", host_ns, true}});
//
// Each series is cut down to at most ~500 points (its quantiles: the
// minimum, the maximum and the p50, p90, p99 and p99.9 among them), so a
// run of 65,536 samples a series stays a small file. Values <= 0 sit on
// the axis minimum; NaN and +inf are left out; labels are XML-escaped. A
// range of many decades is labelled every few decades. No series, or only
// empty ones, still gives a valid SVG that says "no data".
#pragma once

#include <string>
#include <vector>

#include "base/error.h"

namespace kvmem {

struct CdfSeries {
  std::string label;
  std::vector<double> values_ns;
  bool dashed = false;  // a floor to compare with, such as the host's own touch
};

// x_label goes under the x axis (bench usage plots time per call).
std::string cdf_svg(const std::string& title, const std::vector<CdfSeries>& series,
                    const std::string& x_label = "latency per access (log scale)");

// Writes text to path (created or truncated). Errors name the path and errno.
Status write_text_file(const std::string& path, const std::string& text);

}  // namespace kvmem
