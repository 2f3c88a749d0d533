#include "bench/plot.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>

#include <fmt/format.h>

#include "bench/stats.h"

namespace kvmem {
namespace {

constexpr double kWidth = 900, kPlotHeight = 300;
constexpr double kLeft = 70, kRight = 20, kTop = 40;  // the legend goes below the plot, a line a series
constexpr size_t kMaxPoints = 500;
constexpr const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                    "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // Control characters are not allowed in XML 1.0 text.
        out += static_cast<unsigned char>(c) < 0x20 ? ' ' : c;
    }
  }
  return out;
}

std::string duration(double ns) {
  if (ns >= 1e9) return fmt::format("{:.3g} s", ns / 1e9);
  if (ns >= 1e6) return fmt::format("{:.3g} ms", ns / 1e6);
  if (ns >= 1e3) return fmt::format("{:.3g} us", ns / 1e3);
  return fmt::format("{:.3g} ns", ns);
}

// The sorted samples of a series that can be drawn: NaN and +inf dropped
// (they have no place on the axis, and NaN would break the sort).
std::vector<double> drawable(const std::vector<double>& values) {
  std::vector<double> v;
  v.reserve(values.size());
  for (double x : values)
    if (!std::isnan(x) && x != INFINITY) v.push_back(x);
  std::sort(v.begin(), v.end());
  return v;
}

// The ranks drawn for n sorted samples, at most kMaxPoints: evenly spaced
// quantiles (the first and the last among them), plus the ranks of the
// percentiles the legends and the JSON rows quote, so that the curve
// passes exactly through them.
constexpr double kKeptPercentiles[] = {50, 90, 99, 99.9};
std::vector<size_t> ranks_to_draw(size_t n) {
  const size_t points = std::min(n, kMaxPoints - std::size(kKeptPercentiles));
  std::vector<size_t> ranks;
  for (size_t k = 0; k < points; k++) ranks.push_back(points == 1 ? n - 1 : (n - 1) * k / (points - 1));
  for (double p : kKeptPercentiles) {
    const double r = std::ceil(p / 100 * static_cast<double>(n) - 1e-9);
    ranks.push_back(std::min(n - 1, r < 1 ? size_t{0} : static_cast<size_t>(r) - 1));
  }
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  return ranks;
}

struct Axes {
  double d0 = 0, d1 = 1;  // decades at the left and right edges
  double plot_w = kWidth - kLeft - kRight, plot_h = kPlotHeight;
  double x(double v) const {
    const double l = v > 0 ? std::log10(v) : d0;
    return kLeft + (std::clamp(l, d0, d1) - d0) / (d1 - d0) * plot_w;
  }
  double y(double q) const { return kTop + (1 - q) * plot_h; }
};

// Grid lines and labels at each decade (every few decades when the range
// is wide, so labels do not overlap), 0..100% up the side, the frame.
std::string draw_axes(const Axes& a, const std::string& x_label) {
  std::string out;
  const double step = std::max(1.0, std::ceil((a.d1 - a.d0) / 12));
  for (double d = a.d0; d <= a.d1; d += step) {
    const double at = a.x(std::pow(10, d));
    out += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#ddd\"/>\n", at, kTop,
                       kTop + a.plot_h);
    out += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", at, kTop + a.plot_h + 16,
                       duration(std::pow(10, d)));
  }
  for (int p = 0; p <= 100; p += 25) {
    out += fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#ddd\"/>\n", kLeft,
                       a.y(p / 100.0), kLeft + a.plot_w);
    out += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}%</text>\n", kLeft - 6, a.y(p / 100.0) + 4, p);
  }
  out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>\n", kLeft,
                     kTop, a.plot_w, a.plot_h);
  out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", kLeft + a.plot_w / 2,
                     kTop + a.plot_h + 34, escape(x_label));
  return out;
}

}  // namespace

std::string cdf_svg(const std::string& title, const std::vector<CdfSeries>& series, const std::string& x_label) {
  const double height = kTop + kPlotHeight + 70 + 16.0 * static_cast<double>(series.size());
  std::string out = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"24\" font-size=\"15\">{3}</text>\n",
      kWidth, height, kLeft, escape(title));
  std::vector<std::vector<double>> sorted;
  double lo = INFINITY, hi = 0;
  for (const auto& s : series) {
    sorted.push_back(drawable(s.values_ns));
    for (double v : sorted.back())
      if (v > 0) lo = std::min(lo, v), hi = std::max(hi, v);
  }
  if (!(hi > 0)) {
    out += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"20\">no data</text>\n</svg>\n", kWidth / 2 - 40,
                       height / 2);
    return out;
  }
  Axes a;
  a.d0 = std::floor(std::log10(lo));
  a.d1 = std::max(a.d0 + 1, std::ceil(std::log10(hi)));
  out += draw_axes(a, x_label);
  // One path per series, and its legend line.
  for (size_t i = 0; i < series.size(); i++) {
    const std::vector<double>& v = sorted[i];
    const char* colour = kPalette[i % std::size(kPalette)];
    const double ly = kTop + a.plot_h + 58 + 16.0 * static_cast<double>(i);
    const std::string dash = series[i].dashed ? " stroke-dasharray=\"6,4\"" : "";
    std::string legend = escape(series[i].label);
    if (!v.empty()) {
      const size_t n = v.size();
      std::string d;
      for (size_t rank : ranks_to_draw(n))
        d += fmt::format("{}{:.1f},{:.1f}", d.empty() ? "M" : " L", a.x(v[rank]),
                         a.y(static_cast<double>(rank + 1) / static_cast<double>(n)));
      out += fmt::format("<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{}/>\n", d, colour, dash);
      legend += fmt::format(" — p50 {}, p99 {}", duration(percentile(v, 50)), duration(percentile(v, 99)));
    } else {
      legend += " — no samples";
    }
    out += fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"{3}\" stroke-width=\"2\"{4}/>\n",
                       kLeft, ly - 4, kLeft + 30, colour, dash);
    out += fmt::format("<text x=\"{}\" y=\"{:.1f}\">{}</text>\n", kLeft + 38, ly, legend);
  }
  out += "</svg>\n";
  return out;
}

Status write_text_file(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return sys_fail(fmt::format("cannot write {}", path), "open", errno);
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t w = ::write(fd, text.data() + done, text.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = w < 0 ? errno : EIO;
      ::close(fd);
      return sys_fail(fmt::format("cannot write {}", path), "write", err);
    }
    done += static_cast<size_t>(w);
  }
  if (::close(fd) != 0) return sys_fail(fmt::format("cannot write {}", path), "close", errno);
  return {};
}

}  // namespace kvmem
