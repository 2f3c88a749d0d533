#include "bench/usage.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "bench/stats.h"
#include "bench/table.h"
#include "memory/memory_file.h"

namespace kvmem {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double ns_since(Clock::time_point t0) { return std::chrono::duration<double, std::nano>(Clock::now() - t0).count(); }

// To one decimal, so that the JSON prints 48.8, not 48.800000000000004.
double round1(double v) { return std::round(v * 10) / 10; }

// Where the committed pieces of one file lie.
struct Layout {
  uint64_t size = 0, committed = 0, piece = 0, pieces = 0, stride = 0;
};

Layout layout_of(const UsageBenchOptions& o, uint64_t size) {
  Layout l{.size = size, .committed = usage_committed(o, size), .piece = o.piece};
  l.pieces = l.committed / l.piece;
  l.stride = size / l.pieces / kPageSize * kPageSize;  // >= piece: committed <= size
  return l;
}

// Per-call times in ns, and what the last call of each kind found.
struct Samples {
  std::vector<double> scan, elided, plain;
  uint64_t scan_found = 0, elided_found = 0, plain_found = 0;
};

// One file of layout l in scan mode, its pieces written, timed `rounds`
// times. The plain mincores (with_plain) come first, in a loop of their
// own: one sweeps the page cache of the whole file and would leave every
// scan after it with cold caches, in one mode and not the other. Then each
// round is the same in both modes: forget, a fresh scan, an elided call.
Status time_file(const Layout& l, UsageScan scan, unsigned rounds, bool with_plain, Samples* s) {
  uint64_t reservation = kChunkSize;
  while (reservation < 2 * l.size) reservation *= 2;
  auto created = MemoryFile::create({.name = "kvmem-bench-usage", .reservation = reservation, .usage_scan = scan});
  if (!created) return std::unexpected(created.error());
  MemoryFile& mf = **created;
  auto r = mf.allocate(l.size, UsageKind::Anonymous);
  if (!r) return std::unexpected(r.error());
  auto span = mf.map_internal(*r);
  if (!span) return std::unexpected(span.error());
  for (uint64_t i = 0; i < l.pieces; i++) std::memset(span->data() + i * l.stride, 1, l.piece);

  if (with_plain) {
    std::vector<unsigned char> vec(l.size / kPageSize);
    for (unsigned i = 0; i < rounds; i++) {
      const auto t0 = Clock::now();
      if (mincore(span->data(), span->size(), vec.data()) != 0)
        return sys_fail("cannot time a plain mincore", "mincore", errno);
      s->plain.push_back(ns_since(t0));
      const auto pages = std::count_if(vec.begin(), vec.end(), [](unsigned char v) { return v & 1; });
      s->plain_found = static_cast<uint64_t>(pages) * kPageSize;
    }
  }
  for (unsigned i = 0; i < rounds; i++) {
    mf.forget_known_committed();
    const uint64_t scans = mf.stats().scans;
    auto t0 = Clock::now();
    if (auto st = mf.update_usage(); !st) return st;
    s->scan.push_back(ns_since(t0));
    s->scan_found = mf.usage().of(UsageKind::Anonymous);
    if (mf.stats().scans != scans + 1) return fail("update_usage did not scan after forget_known_committed");
    if (s->scan_found != l.committed)
      return fail("the scan found {} bytes committed, not the {} written", s->scan_found, l.committed);
    const uint64_t elided = mf.stats().scans_elided;
    t0 = Clock::now();
    if (auto st = mf.update_usage(); !st) return st;
    s->elided.push_back(ns_since(t0));
    s->elided_found = mf.usage().of(UsageKind::Anonymous);
    if (mf.stats().scans_elided != elided + 1)
      return fail("the second update_usage scanned again: st_blocks did not match the {} bytes known", l.committed);
  }
  return {};  // the file goes with mf, its allocation and all
}

json ns_json(const Summary& s) {
  return {{"min", round1(s.min)}, {"p50", round1(s.p50)},  {"p90", round1(s.p90)},
          {"p99", round1(s.p99)}, {"max", round1(s.max)},  {"mean", round1(s.mean)},
          {"count", s.count}};
}

json usage_row(const char* mode, const Layout& l, const std::vector<double>& ns, double plain_p50, uint64_t found,
               bool scan) {
  const Summary s = summarize(ns);
  return {{"bench", "usage"},
          {"mode", mode},
          {"size", l.size},
          {"committed", l.committed},
          {"piece", l.piece},
          {"pieces", l.pieces},
          {"rounds", s.count},
          {"ns", ns_json(s)},
          {"ns_per_piece", scan ? json(round1(s.p50 / static_cast<double>(l.pieces))) : json(nullptr)},
          {"speedup_vs_plain_mincore", round1(plain_p50 / s.p50)},
          {"found", found}};
}

}  // namespace

uint64_t usage_committed(const UsageBenchOptions& o, uint64_t size) {
  if (o.committed != 0) return o.committed;
  return std::max(o.piece, size / 64 / o.piece * o.piece);
}

Status check_usage_options(const UsageBenchOptions& o) {
  if (o.sizes.empty()) return fail("--size: give at least one size");
  if (o.rounds < 1 || o.rounds > 100000) return fail("--rounds: {} is not in [1, 100000]", o.rounds);
  if (o.piece == 0 || o.piece % kPageSize != 0)
    return fail("--piece: {} is not a positive multiple of 4 KiB", o.piece);
  if (o.committed != 0 && o.committed % o.piece != 0)
    return fail("--committed: {} is not a whole number of {}-byte pieces", o.committed, o.piece);
  const long pages = sysconf(_SC_PHYS_PAGES);
  const uint64_t half_ram = pages > 0 ? static_cast<uint64_t>(pages) * kPageSize / 2 : UINT64_MAX;
  for (uint64_t size : o.sizes) {
    if (size < o.piece || size > kUsageBenchMaxSize)
      return fail("--size: {} is not in [{} (the piece), {}]", size, o.piece, kUsageBenchMaxSize);
    if (size % o.piece != 0) return fail("--size: {} is not a multiple of the piece, {} bytes", size, o.piece);
    if (o.committed > size) return fail("--committed: {} bytes do not fit in a file of {}", o.committed, size);
    if (usage_committed(o, size) > half_ram)
      return fail("--committed: {} bytes are more than half of this machine's memory ({} bytes)",
                  usage_committed(o, size), 2 * half_ram);
  }
  return {};
}

std::vector<json> run_usage_bench(const UsageBenchOptions& o, const std::function<void(const std::string&)>& progress,
                                  std::vector<CdfSeries>* plot) {
  std::vector<json> rows;
  for (uint64_t size : o.sizes) {
    const Layout l = layout_of(o, size);
    Samples minc, seek;
    Status st;
    for (UsageScan scan : {UsageScan::Mincore, UsageScan::SeekData}) {
      const bool is_minc = scan == UsageScan::Mincore;
      if (progress)
        progress(fmt::format("usage: {} pieces of {} over {}, {} scans{}", l.pieces, size_name(l.piece),
                             size_name(size), is_minc ? "mincore" : "seek_data",
                             is_minc ? ", elided calls and plain mincores" : ""));
      st = time_file(l, scan, o.rounds, is_minc, is_minc ? &minc : &seek);
      if (!st) break;
    }
    if (!st) {
      rows.push_back({{"bench", "usage"}, {"size", size}, {"error", st.error().message}});
      continue;
    }
    const double plain_p50 = summarize(minc.plain).p50;
    rows.push_back(usage_row("mincore", l, minc.scan, plain_p50, minc.scan_found, true));
    rows.push_back(usage_row("seek_data", l, seek.scan, plain_p50, seek.scan_found, true));
    rows.push_back(usage_row("elided", l, minc.elided, plain_p50, minc.elided_found, false));
    rows.push_back(usage_row("plain_mincore", l, minc.plain, plain_p50, minc.plain_found, false));
    if (plot) {
      const std::string of = ", " + size_name(size);
      plot->push_back({"update_usage, mincore scan" + of, minc.scan});
      plot->push_back({"update_usage, seek_data scan" + of, seek.scan});
      plot->push_back({"update_usage, elided (st_blocks matches)" + of, minc.elided});
      plot->push_back({"one plain mincore of the mapping" + of, minc.plain, true});
    }
  }
  return rows;
}

std::string format_usage_bench(const std::vector<json>& rows) {
  Table t({{"mode", "", TableColumn::Align::kLeft},
           {"size"},
           {"committed"},
           {"pieces"},
           {"p50", "us"},
           {"p90", "us"},
           {"p99", "us"},
           {"max", "us"},
           {"per piece", "ns"},
           {"vs plain mincore", "x"}});
  std::string errors;
  for (const json& r : rows) {
    if (r.contains("error")) {
      errors += fmt::format("usage, {}: {}\n", size_name(r.value("size", uint64_t{0})), r["error"].get<std::string>());
      continue;
    }
    const json& ns = r["ns"];
    auto us = [&](const char* k) { return fixed(ns[k].get<double>() / 1000, 1); };
    t.add_row({r["mode"].get<std::string>(), size_name(r["size"].get<uint64_t>()),
               size_name(r["committed"].get<uint64_t>()), std::to_string(r["pieces"].get<uint64_t>()), us("p50"),
               us("p90"), us("p99"), us("max"),
               r["ns_per_piece"].is_number() ? fixed(r["ns_per_piece"].get<double>(), 0) : "-",
               fixed(r["speedup_vs_plain_mincore"].get<double>(), 1)});
  }
  return (t.rows() ? t.render() : "") + errors;
}

}  // namespace kvmem
