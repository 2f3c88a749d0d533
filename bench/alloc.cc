#include "bench/alloc.h"
#include "harness/report.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>

#include <fmt/format.h>

#include "bench/table.h"
#include "memory/memory_file.h"

namespace kvmem {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB, kGiB = 1024 * kMiB;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void say(const std::function<void(const std::string&)>& progress, const std::string& s) {
  if (progress) progress(s);
}

json error_row(const char* bench, const std::string& what) {
  return json{{"bench", bench}, {"error", what}};
}

// ---- alloc: pairs per second over a fragmented file ----

// Lets the benchmark hold the reclaimer's punches, to time the allocator's
// own work without a reclaimer racing it for the lock.
class GatedHost : public HostOps {
 public:
  void close_gate() {
    std::lock_guard l(mu_);
    closed_ = true;
  }
  void open_gate() {
    {
      std::lock_guard l(mu_);
      closed_ = false;
    }
    cv_.notify_all();
  }
  int fallocate(int fd, int mode, uint64_t offset, uint64_t length) override {
    if (mode & FALLOC_FL_PUNCH_HOLE) {
      std::unique_lock l(mu_);
      cv_.wait(l, [&] { return !closed_; });
    }
    return HostOps::fallocate(fd, mode, offset, length);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = false;
};

json bench_alloc_pairs(uint64_t live, uint64_t pairs,
                       const std::function<void(const std::string&)>& progress) {
  GatedHost host;
  // Room for the 2*live pages and as many again for the pairs to walk into;
  // no larger, so sanitizer builds with tight address spaces still run it.
  uint64_t reservation = uint64_t{1} << 30;
  while (reservation < (4 * live + 2 * (pairs + 20000)) * kPageSize) reservation *= 2;
  auto created = MemoryFile::create({.reservation = reservation, .host = &host});
  if (!created) return error_row("alloc", created.error().message);
  MemoryFile& mf = **created;

  say(progress, fmt::format("alloc: fragmenting the file into {} live allocations", live));
  // One allocation of 2*live pages, then every other page freed: live
  // one-page allocations separated by one-page gaps once reclaimed.
  auto all = mf.allocate(2 * live * kPageSize, UsageKind::Anonymous, {.alignment = kPageSize});
  if (!all) return error_row("alloc", all.error().message);
  for (uint64_t i = 0; i < live; i++) {
    uint64_t p = all->start + (2 * i + 1) * kPageSize;
    mf.dec_ref(FileRange(p, p + kPageSize));
  }
  mf.wait_for_reclaim();

  say(progress, fmt::format("alloc: {} allocate+dec_ref pairs with {} live", pairs, live));
  // Warm up the path, then measure.
  for (uint64_t i = 0; i < std::min<uint64_t>(pairs / 10, 10000); i++) {
    auto r = mf.allocate(kPageSize, UsageKind::Anonymous);
    if (!r) return error_row("alloc", r.error().message);
    mf.dec_ref(*r);
  }
  mf.wait_for_reclaim();
  auto t0 = Clock::now();
  for (uint64_t i = 0; i < pairs; i++) {
    auto r = mf.allocate(kPageSize, UsageKind::Anonymous);
    if (!r) return error_row("alloc", r.error().message);
    mf.dec_ref(*r);
  }
  double t = seconds_since(t0);
  mf.wait_for_reclaim();

  // Again with the reclaimer's punches held: the allocator alone (freed
  // pages queue up for reclaim instead of coming back).
  host.close_gate();
  t0 = Clock::now();
  for (uint64_t i = 0; i < pairs; i++) {
    auto r = mf.allocate(kPageSize, UsageKind::Anonymous);
    if (!r) {
      host.open_gate();
      return error_row("alloc", r.error().message);
    }
    mf.dec_ref(*r);
  }
  double held = seconds_since(t0);
  host.open_gate();
  mf.wait_for_reclaim();
  auto per_s = [&](double secs) {
    return static_cast<uint64_t>(static_cast<double>(pairs) / secs);
  };
  return json{{"bench", "alloc"},
              {"live", live},
              {"pairs", pairs},
              {"pairs_per_s", per_s(t)},
              {"ns_per_pair", static_cast<uint64_t>(t * 1e9 / static_cast<double>(pairs))},
              {"pairs_per_s_reclaim_held", per_s(held)}};
}

// ---- decommit: ours against raw PUNCH_HOLE ----

// Seconds to punch region in `size` pieces, one fallocate each.
double punch_raw(int fd, uint8_t* map, uint64_t region, uint64_t size) {
  std::memset(map, 0x5a, region);
  auto t0 = Clock::now();
  for (uint64_t off = 0; off < region; off += size)
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                  static_cast<off_t>(size)) != 0)
      return -1;
  return seconds_since(t0);
}

double punch_ours(MemoryFile& mf, FileRange r, uint64_t size, bool known) {
  auto span = mf.map_internal(r);
  if (!span) return -1;
  std::memset(span->data(), 0x5a, span->size());
  if (known && !mf.update_usage()) return -1;
  auto t0 = Clock::now();
  for (uint64_t off = r.start; off < r.end; off += size)
    if (!mf.decommit(FileRange(off, off + size))) return -1;
  return seconds_since(t0);
}

std::vector<json> bench_decommit(uint64_t region, int rounds,
                                 const std::function<void(const std::string&)>& progress) {
  std::vector<json> rows;
  int fd = memfd_create("kvmem-bench-raw", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(region)) != 0) {
    if (fd >= 0) close(fd);
    return {error_row("decommit", fmt::format("cannot create the raw memfd: {}", strerror(errno)))};
  }
  void* m = mmap(nullptr, region, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) {
    close(fd);
    return {error_row("decommit", fmt::format("cannot map the raw memfd: {}", strerror(errno)))};
  }
  auto* raw_map = static_cast<uint8_t*>(m);
  auto created = MemoryFile::create({.reservation = uint64_t{1} << 36});
  if (!created) {
    munmap(m, region);
    close(fd);
    return {error_row("decommit", created.error().message)};
  }
  MemoryFile& mf = **created;
  auto r = mf.allocate(region, UsageKind::Anonymous);
  if (!r) return {error_row("decommit", r.error().message)};

  for (bool known : {false, true}) {
    for (uint64_t size : {4 * kKiB, 64 * kKiB, 2 * kMiB}) {
      say(progress, fmt::format("decommit: {} KiB pieces of {} MiB, pages {}known committed",
                                size / kKiB, region / kMiB, known ? "" : "not "));
      double raw = 1e30, ours = 1e30;
      for (int i = 0; i < rounds; i++) {  // alternate, keep the best of each
        double a = punch_raw(fd, raw_map, region, size);
        double b = punch_ours(mf, *r, size, known);
        if (a < 0 || b < 0) return {error_row("decommit", "a punch failed")};
        raw = std::min(raw, a);
        ours = std::min(ours, b);
      }
      double calls = static_cast<double>(region / size);
      rows.push_back(json{{"bench", "decommit"},
                          {"size", size},
                          {"known_committed", known},
                          {"calls", region / size},
                          {"ns_per_call", static_cast<uint64_t>(ours * 1e9 / calls)},
                          {"raw_ns_per_call", static_cast<uint64_t>(raw * 1e9 / calls)},
                          {"gb_per_s", std::round(static_cast<double>(region) / ours / 1e7) / 100},
                          {"ratio_to_raw", std::round(raw / ours * 1000) / 1000}});
    }
  }
  munmap(m, region);
  close(fd);
  return rows;
}

// ---- usage: hole-aware scan against a plain mincore ----

struct UsageTimes {
  double mincore_s = 1e30, scan_s = 1e30, elided_s = 1e30;
};

// One file of `file` bytes with `pieces` committed 2 MiB pieces spread
// evenly; times, best of `rounds`: a mincore of the whole mapping, a fresh
// update_usage (nothing known committed), and an update_usage st_blocks elides.
Result<UsageTimes> time_usage(UsageScan scan, uint64_t file, uint64_t pieces, int rounds) {
  uint64_t reservation = kChunkSize;
  while (reservation < 2 * file) reservation *= 2;
  auto created = MemoryFile::create({.reservation = reservation, .usage_scan = scan});
  if (!created) return std::unexpected(created.error());
  MemoryFile& mf = **created;
  auto r = mf.allocate(file, UsageKind::Anonymous);
  if (!r) return std::unexpected(r.error());
  auto span = mf.map_internal(*r);
  if (!span) return std::unexpected(span.error());
  uint64_t piece = 2 * kMiB, stride = file / pieces, committed = pieces * piece;
  for (uint64_t i = 0; i < pieces; i++) std::memset(span->data() + i * stride, 1, piece);

  std::vector<unsigned char> vec(file / kPageSize);
  UsageTimes t;
  for (int i = 0; i < rounds; i++) {
    auto t0 = Clock::now();
    if (mincore(span->data(), span->size(), vec.data()) != 0)
      return sys_fail("cannot time mincore", "mincore", errno);
    t.mincore_s = std::min(t.mincore_s, seconds_since(t0));

    mf.forget_known_committed();
    t0 = Clock::now();
    if (auto st = mf.update_usage(); !st) return std::unexpected(st.error());
    t.scan_s = std::min(t.scan_s, seconds_since(t0));
    if (mf.usage().of(UsageKind::Anonymous) != committed)
      return fail("the scan found {:#x} bytes, not {:#x}", mf.usage().of(UsageKind::Anonymous),
                  committed);
    t0 = Clock::now();
    if (auto st = mf.update_usage(); !st) return std::unexpected(st.error());
    t.elided_s = std::min(t.elided_s, seconds_since(t0));
  }
  return t;
}

std::vector<json> bench_usage(uint64_t file, uint64_t pieces, int rounds,
                              const std::function<void(const std::string&)>& progress) {
  auto row = [&](const char* mode, double s, double mincore_s) {
    return json{{"bench", "usage"},
                {"mode", mode},
                {"file", file},
                {"committed", pieces * 2 * kMiB},
                {"pieces", pieces},
                {"us", std::round(s * 1e7) / 10},
                {"mincore_us", std::round(mincore_s * 1e7) / 10},
                {"speedup_vs_mincore", std::round(mincore_s / s * 10) / 10}};
  };
  std::vector<json> rows;
  say(progress, fmt::format("usage: {} pieces of 2 MiB over {} GiB, default scan (SEEK_DATA, "
                            "then mincore)",
                            pieces, file / kGiB));
  auto minc = time_usage(UsageScan::Mincore, file, pieces, rounds);
  if (!minc) return {error_row("usage", minc.error().message)};
  rows.push_back(row("scan", minc->scan_s, minc->mincore_s));
  rows.push_back(row("elided", minc->elided_s, minc->mincore_s));
  say(progress, "usage: the same with UsageScan::SeekData (SEEK_DATA/SEEK_HOLE extents)");
  auto seek = time_usage(UsageScan::SeekData, file, pieces, rounds);
  if (!seek) return {error_row("usage", seek.error().message)};
  rows.push_back(row("scan_seek_data", seek->scan_s, seek->mincore_s));
  return rows;
}

}  // namespace

std::vector<json> run_alloc_bench(const AllocBenchOptions& options,
                                  const std::function<void(const std::string&)>& progress) {
  std::vector<json> rows;
  const bool q = options.quick;
  std::vector<uint64_t> lives = q ? std::vector<uint64_t>{1000, 10000}
                                  : std::vector<uint64_t>{1000, 100000, 1000000};
  for (uint64_t live : lives) rows.push_back(bench_alloc_pairs(live, q ? 20000 : 500000, progress));
  for (json& j : bench_decommit(q ? 4 * kMiB : 64 * kMiB, q ? 1 : 5, progress))
    rows.push_back(std::move(j));
  for (json& j : bench_usage(q ? 4 * kGiB : 64 * kGiB, q ? 32 : 512, q ? 1 : 5, progress))
    rows.push_back(std::move(j));
  return rows;
}

std::string format_alloc_bench_table(const std::vector<json>& rows) {
  // Sections in first-seen order; columns are the union of keys in each.
  std::vector<std::string> order;
  std::map<std::string, std::vector<const json*>> by_bench;
  for (const json& r : rows) {
    std::string b = r.value("bench", "?");
    if (!by_bench.count(b)) order.push_back(b);
    by_bench[b].push_back(&r);
  }
  std::string out;
  for (const std::string& b : order) {
    std::vector<std::string> keys;
    for (const json* r : by_bench[b])
      for (auto it = r->begin(); it != r->end(); ++it)
        if (it.key() != "bench" && std::find(keys.begin(), keys.end(), it.key()) == keys.end())
          keys.push_back(it.key());
    std::vector<TableColumn> columns;
    for (const std::string& k : keys) columns.push_back({.header = k});
    Table table(std::move(columns));
    for (const json* r : by_bench[b]) {
      std::vector<std::string> cells;
      for (const std::string& k : keys) {
        const json* x = r->contains(k) ? &(*r)[k] : nullptr;
        cells.push_back(!x ? "" : x->is_string() ? x->get<std::string>() : dump_report(*x));
      }
      table.add_row(std::move(cells));
    }
    out += b + "\n" + table.render();
  }
  return out;
}

}  // namespace kvmem
