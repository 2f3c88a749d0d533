// The SVG of latency CDFs (bench/plot.h): its structure (well-formed XML,
// by our checker and by xmllint when installed), its escaping, its hostile
// values, its "no data" case, and a real render with rsvg-convert to a PNG of the size
// the SVG asks for, whose bytes differ from a blank render's.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

#include <catch2/catch.hpp>

#include "bench/plot.h"
#include "tests/bench/svg_check.h"

using namespace kvmem;

namespace {

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) n++;
  return n;
}

std::vector<double> ramp(size_t n, double from, double factor) {
  std::vector<double> v;
  for (size_t i = 0; i < n; i++) v.push_back(from * (1 + factor * static_cast<double>(i) / static_cast<double>(n)));
  return v;
}

// Width and height from a PNG's IHDR chunk (big-endian, at bytes 16..23).
std::pair<uint32_t, uint32_t> png_size(const std::string& bytes) {
  auto be = [&](size_t at) {
    return (uint32_t(uint8_t(bytes[at])) << 24) | (uint32_t(uint8_t(bytes[at + 1])) << 16) |
           (uint32_t(uint8_t(bytes[at + 2])) << 8) | uint32_t(uint8_t(bytes[at + 3]));
  };
  if (bytes.size() < 24 || bytes.compare(1, 3, "PNG") != 0) return {0, 0};
  return {be(16), be(20)};
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

TEST_CASE("a CDF plot has a path and a legend line per series, decade ticks and escaped labels", "[plot]") {
  const std::string svg = cdf_svg("a <title> & more", {{"memfd / none", ramp(65536, 20000, 0.5)},
                                                        {"host \"floor\"", ramp(1000, 1500, 1), true},
                                                        {"empty", {}}});
  CHECK(svg.rfind("<?xml", 0) == 0);
  CHECK(count(svg, "<svg") == 1);
  CHECK(count(svg, "</svg>") == 1);
  CHECK(count(svg, "<path ") == 2);  // the empty series has a legend line, no path
  CHECK(count(svg, "stroke-dasharray") == 2);  // the floor's path and its legend sample
  CHECK_THAT(svg, Catch::Contains("a &lt;title&gt; &amp; more"));
  CHECK_THAT(svg, Catch::Contains("host &quot;floor&quot;"));
  CHECK_THAT(svg, Catch::Contains("empty — no samples"));
  // 1.5 us .. 30 us: ticks from 1 us to 100 us.
  CHECK_THAT(svg, Catch::Contains(">1 us<"));
  CHECK_THAT(svg, Catch::Contains(">10 us<"));
  CHECK_THAT(svg, Catch::Contains(">100 us<"));
  // 65,536 samples are drawn with at most 500 points.
  const size_t path = svg.find("<path d=\"");
  const std::string d = svg.substr(path, svg.find('"', path + 9) - path);
  CHECK(count(d, " L") < 500);
}

TEST_CASE("the plot is well-formed XML, and the checker catches what is not", "[plot]") {
  const std::string svg = cdf_svg("t <&> \"'", {{"a & b <c>", ramp(3000, 10, 1000)}, {"\x01ctl", {5, 50}, true}},
                                  "time per call & more");
  CHECK(test::xml_problem(svg) == "");
  CHECK_THAT(svg, Catch::Contains(">time per call &amp; more<"));
  CHECK_THAT(svg, Catch::Contains(">a &amp; b &lt;c&gt; — p50"));
  CHECK(test::xml_problem(cdf_svg("t", {})) == "");
  // The checker is not a rubber stamp.
  CHECK(test::xml_problem("<svg><g></svg>") != "");
  CHECK(test::xml_problem("<svg>a & b</svg>") != "");
  CHECK(test::xml_problem("<svg x=\"1>") != "");
  CHECK(test::xml_problem("<svg/><svg/>") != "");
  char path[] = "/tmp/kvmem-plot-XXXXXX.svg";
  const int fd = ::mkstemps(path, 4);
  REQUIRE(fd >= 0);
  ::close(fd);
  REQUIRE(write_text_file(path, svg));
  bool ran = false;
  CHECK(test::xmllint_accepts(path, &ran));
  if (!ran) WARN("xmllint is missing (Debian's libxml2-utils): only our own XML check ran");
  ::unlink(path);
}

TEST_CASE("the curve passes through the quoted percentiles, min and max", "[plot]") {
  // 0..9999 ns, one sample each: the rank of p99 is 9900, of p99.9 9990.
  std::vector<double> v;
  for (int i = 1; i <= 10000; i++) v.push_back(i);
  const std::string svg = cdf_svg("t", {{"a", v}});
  const size_t path = svg.find("<path d=\"");
  const std::string d = svg.substr(path, svg.find('"', path + 9) - path);
  CHECK(count(d, " L") < 500);
  // y of rank r is 40 + (1 - r/n) * 300: p50 at 190.0, p99 at 43.0, p99.9 at 40.3, max at 40.0.
  for (const char* y : {",190.0", ",43.0", ",40.3", ",40.0", ",340.0"}) CHECK_THAT(d, Catch::Contains(y));
}

TEST_CASE("hostile values: NaN and inf are left out, <= 0 clamps, a huge range keeps few labels", "[plot]") {
  const std::string svg = cdf_svg("t", {{"a", {NAN, INFINITY, -INFINITY, -5, 0, 100, 1000}},
                                        {"b", {1e-300, 1e300}}});
  CHECK(test::xml_problem(svg) == "");
  CHECK(count(svg, "<path ") == 2);
  CHECK(svg.find("nan") == std::string::npos);
  CHECK(svg.find("inf") == std::string::npos);
  // 600 decades: labelled every 50, not 600 labels on top of each other.
  CHECK(count(svg, "text-anchor=\"middle\"") < 20);
  const std::string only_bad = cdf_svg("t", {{"a", {NAN, INFINITY, -1}}});
  CHECK_THAT(only_bad, Catch::Contains("no data"));
}

TEST_CASE("a plot with no samples is still an SVG, saying so", "[plot]") {
  for (const auto& series : {std::vector<CdfSeries>{}, std::vector<CdfSeries>{{"x", {}}, {"y", {0, -1}}}}) {
    const std::string svg = cdf_svg("t", series);
    CHECK_THAT(svg, Catch::Contains("no data"));
    CHECK(count(svg, "</svg>") == 1);
  }
}

TEST_CASE("the plot renders to a PNG of its size that is not blank", "[plot]") {
  if (std::system("command -v rsvg-convert > /dev/null 2>&1") != 0) {
    WARN("rsvg-convert is missing (Debian's librsvg2-bin; make deps installs it): SKIPPING the render check");
    return;
  }
  char dir[] = "/tmp/kvmem-plot-XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string base = dir;
  REQUIRE(write_text_file(base + "/data.svg", cdf_svg("t", {{"a", ramp(5000, 300, 60)}, {"b", ramp(5000, 20000, 0.3), true}})));
  REQUIRE(write_text_file(base + "/empty.svg", cdf_svg("t", {{"a", {}}, {"b", {}}})));
  for (const char* name : {"data", "empty"}) {
    const std::string cmd = "rsvg-convert -o " + base + "/" + name + ".png " + base + "/" + name + ".svg";
    REQUIRE(std::system(cmd.c_str()) == 0);
  }
  const std::string data = slurp(base + "/data.png"), empty = slurp(base + "/empty.png");
  CHECK(png_size(data) == std::pair<uint32_t, uint32_t>(900, 442));  // 40 + 300 + 70 + 2 legend lines of 16
  CHECK(png_size(empty) == png_size(data));
  // Two curves, axes and a legend compress far worse than "no data" on white.
  CHECK(data.size() > 2 * empty.size());
  std::system(("rm -rf " + base).c_str());
}

TEST_CASE("writing a plot to a path that cannot be written names it", "[plot]") {
  auto s = write_text_file("/nonexistent-dir/x.svg", "x");
  REQUIRE_FALSE(s);
  CHECK_THAT(s.error().message, Catch::Contains("/nonexistent-dir/x.svg"));
  CHECK_THAT(s.error().message, Catch::Contains("ENOENT"));
}
