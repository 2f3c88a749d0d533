// `kvmem bench usage` (bench/usage.h): the option checks, a small real run
// whose rows must have every key and sane figures (the figures themselves
// are not asserted: a benchmark measures), its plot, and the command line:
// JSON lines, the SVG written, bad options refused with exit 2.
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

#include <catch2/catch.hpp>

#include "bench/usage.h"
#include "tests/bench/svg_check.h"
#include "tests/cli/cli_support.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

constexpr uint64_t kMiB = 1 << 20;

const char* const kRowKeys[] = {"bench", "mode",  "size", "committed",    "piece",
                                "pieces", "rounds", "ns",  "ns_per_piece", "speedup_vs_plain_mincore",
                                "found"};
const char* const kNsKeys[] = {"min", "p50", "p90", "p99", "max", "mean", "count"};
const char* const kModes[] = {"mincore", "seek_data", "elided", "plain_mincore"};

// Every key, the figures in order, and what each mode must have found.
void check_row(const json& r, uint64_t size, uint64_t committed, unsigned rounds) {
  INFO(r.dump());
  for (const char* k : kRowKeys) REQUIRE(r.contains(k));
  CHECK(r["bench"] == "usage");
  CHECK(r["size"] == size);
  CHECK(r["committed"] == committed);
  CHECK(r["pieces"].get<uint64_t>() * r["piece"].get<uint64_t>() == committed);
  CHECK(r["rounds"] == rounds);
  const json& ns = r["ns"];
  for (const char* k : kNsKeys) REQUIRE(ns.contains(k));
  CHECK(ns["count"] == rounds);
  CHECK(ns["min"].get<double>() > 0);
  CHECK(ns["min"].get<double>() <= ns["p50"].get<double>());
  CHECK(ns["p50"].get<double>() <= ns["p90"].get<double>());
  CHECK(ns["p90"].get<double>() <= ns["p99"].get<double>());
  CHECK(ns["p99"].get<double>() <= ns["max"].get<double>());
  CHECK(ns["mean"].get<double>() <= ns["max"].get<double>());
  CHECK(ns["max"].get<double>() < 10e9);  // no single call of these sizes takes 10 s
  CHECK(r["speedup_vs_plain_mincore"].get<double>() > 0);
  // Every mode sees exactly what was written (nothing here swaps).
  CHECK(r["found"] == committed);
  const std::string mode = r["mode"];
  const bool scan = mode == "mincore" || mode == "seek_data";
  CHECK(r["ns_per_piece"].is_number() == scan);
  if (mode == "plain_mincore") CHECK(r["speedup_vs_plain_mincore"] == 1.0);
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) n++;
  return n;
}

}  // namespace

TEST_CASE("bench usage refuses options that do not fit, naming the option", "[bench-usage]") {
  const UsageBenchOptions ok{.sizes = {64 * kMiB}, .rounds = 3};
  CHECK(check_usage_options(ok));
  CHECK(check_usage_options(UsageBenchOptions{}));  // the defaults
  auto refused = [](UsageBenchOptions o, const char* option) {
    auto s = check_usage_options(o);
    REQUIRE_FALSE(s);
    CHECK_THAT(s.error().message, Catch::StartsWith(option));
  };
  UsageBenchOptions o = ok;
  o.sizes = {};
  refused(o, "--size");
  o.sizes = {3 * kMiB};  // not whole 2 MiB pieces
  refused(o, "--size");
  o.sizes = {kMiB};  // smaller than a piece
  refused(o, "--size");
  o.sizes = {512ull << 30};
  refused(o, "--size");
  o = ok;
  o.piece = 1000;
  refused(o, "--piece");
  o = ok;
  o.committed = 128 * kMiB;  // larger than the file
  refused(o, "--committed");
  o.committed = 3 * kMiB;  // not whole pieces
  refused(o, "--committed");
  o = ok;
  o.rounds = 0;
  refused(o, "--rounds");
  // The default committed bytes: 1/64 of the file in whole pieces, at least one.
  CHECK(usage_committed(ok, 64ull << 30) == 1ull << 30);
  CHECK(usage_committed(ok, 64 * kMiB) == 2 * kMiB);
  CHECK(usage_committed(ok, 192 * kMiB) == 2 * kMiB);
}

TEST_CASE("a small usage run yields a row per mode and size with every key, and a series each", "[bench-usage]") {
  const UsageBenchOptions o{.sizes = {64 * kMiB, 256 * kMiB}, .committed = 8 * kMiB, .piece = kMiB, .rounds = 4};
  REQUIRE(check_usage_options(o));
  std::vector<std::string> lines;
  std::vector<CdfSeries> series;
  auto rows = run_usage_bench(o, [&](const std::string& s) { lines.push_back(s); }, &series);
  REQUIRE(rows.size() == 8);
  for (size_t i = 0; i < rows.size(); i++) {
    REQUIRE_FALSE(rows[i].contains("error"));
    check_row(rows[i], o.sizes[i / 4], 8 * kMiB, 4);
    CHECK(rows[i]["mode"] == kModes[i % 4]);
    CHECK(rows[i]["pieces"] == 8);
  }
  CHECK(lines.size() == 4);  // two files a size
  REQUIRE(series.size() == 8);
  for (size_t i = 0; i < series.size(); i++) {
    CHECK(series[i].values_ns.size() == 4);
    CHECK(series[i].dashed == (i % 4 == 3));  // plain mincore, the baseline
  }
  CHECK_THAT(series[0].label, Catch::Contains("64 MiB"));
  CHECK_THAT(series[4].label, Catch::Contains("256 MiB"));
  const std::string table = format_usage_bench(rows);
  for (const char* mode : kModes) CHECK_THAT(table, Catch::Contains(mode));
  CHECK_THAT(table, Catch::Contains("256 MiB"));
  // A size that failed is a line after the table, not a row in it.
  rows.push_back({{"bench", "usage"}, {"size", 64 * kMiB}, {"error", "the scan found 0 bytes"}});
  CHECK_THAT(format_usage_bench(rows), Catch::EndsWith("usage, 64 MiB: the scan found 0 bytes\n"));
  CHECK(format_usage_bench({rows.back()}) == "usage, 64 MiB: the scan found 0 bytes\n");
}

TEST_CASE("kvmem bench usage --json --plot prints the rows and writes a valid SVG", "[bench-usage][cli]") {
  char path[] = "/tmp/kvmem-usage-XXXXXX.svg";
  const int fd = ::mkstemps(path, 4);
  REQUIRE(fd >= 0);
  ::close(fd);
  auto r = test::run_kvmem({"bench", "usage", "--size", "32M,64M", "--rounds", "3", "--json", "--plot", path});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::istringstream out(r.out);
  std::map<std::string, int> modes;
  int n = 0;
  for (std::string line; std::getline(out, line); n++) {
    const json row = json::parse(line);
    check_row(row, n < 4 ? 32 * kMiB : 64 * kMiB, 2 * kMiB, 3);
    modes[row["mode"]]++;
  }
  CHECK(n == 8);
  for (const char* mode : kModes) CHECK(modes[mode] == 2);
  const std::string svg = slurp(path);
  CHECK(test::xml_problem(svg) == "");
  bool ran = false;
  CHECK(test::xmllint_accepts(path, &ran));
  CHECK(count(svg, "<path ") == 8);
  CHECK(count(svg, "stroke-dasharray") == 4);  // two baselines, their paths and legend samples
  CHECK_THAT(svg, Catch::Contains("time per call (log scale)"));
  ::unlink(path);
  // Without --json: the table on stdout, progress and the file's name on stderr.
  auto table = test::run_kvmem({"bench", "usage", "--size", "32M", "--rounds", "2"});
  REQUIRE(table.exit_code == 0);
  CHECK_THAT(table.out, Catch::Contains("plain_mincore"));
  CHECK_THAT(table.err, Catch::Contains("usage: 1 pieces of 2 MiB over 32 MiB"));
}

TEST_CASE("kvmem bench usage refuses bad options with exit 2 and a message", "[bench-usage][cli]") {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--size", "1x"}, "--size: \"1x\" is not a size"},
      {{"--size", "3M"}, "--size: 3145728 is not a multiple of the piece"},
      {{"--size", "32M", "--committed", "64M"}, "--committed: 67108864 bytes do not fit"},
      {{"--piece", "1000"}, "--piece: 1000 is not a positive multiple of 4 KiB"},
      {{"--piece", "0"}, "--piece: must not be 0"},
      {{"--rounds", "0"}, "--rounds"},
      {{"--rounds", "-1"}, "--rounds"},
      {{"--bogus"}, "--bogus"},
  };
  for (const auto& [args, message] : cases) {
    std::vector<std::string> argv = {"bench", "usage"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = test::run_kvmem(argv);
    INFO(args[0] << " " << (args.size() > 1 ? args[1] : "") << ": " << r.err);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains(message));
    CHECK(r.out.empty());
  }
  // With --json the refusal is the one JSON report.
  auto j = test::run_kvmem({"bench", "usage", "--size", "1x", "--json"});
  CHECK(j.exit_code == 2);
  const json report = json::parse(j.out);
  CHECK(report["exit_code"] == 2);
  CHECK_THAT(report["error"].get<std::string>(), Catch::Contains("--size"));
  // A plot that cannot be written is the host's refusal (3), naming the path.
  auto p = test::run_kvmem({"bench", "usage", "--size", "32M", "--rounds", "1", "--plot", "/nonexistent-dir/u.svg"});
  CHECK(p.exit_code == 3);
  CHECK_THAT(p.err, Catch::Contains("/nonexistent-dir/u.svg"));
}
