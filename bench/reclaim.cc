#include "bench/reclaim.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <x86intrin.h>

#include <chrono>
#include <cstring>
#include <string_view>
#include <thread>

#include "bench/stats.h"
#include "bench/table.h"
#include "guest/abi.h"
#include "guest/layout.h"
#include "memory/memory_file.h"
#include "harness/runner.h"
#include "vmm/vm.h"

namespace kvmem {
namespace {

using guest::FreeMode;
using guest::Pattern;
using guest::Step;
using Clock = std::chrono::steady_clock;
constexpr uint64_t kRegion = 2ull << 20;  // guest-physical start of the region

// TSC ticks per second, against the monotonic clock over ~50 ms.
double tsc_hz() {
  const auto t0 = Clock::now();
  const uint64_t c0 = __rdtsc();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const uint64_t c1 = __rdtsc();
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  return static_cast<double>(c1 - c0) / s;
}

Step fill(uint64_t at, uint64_t length) {
  return guest::Fill{at, length, Pattern{Pattern::Kind::kAddress, 0}};
}


struct GuestRun {
  std::unique_ptr<Vm> vm;
  RunResult result;
};

Result<GuestRun> run_program(const Kvm& kvm, MemoryFile& file, uint64_t memory, std::vector<Step> program) {
  VmConfig c;
  c.name = "bench";
  c.memory = memory;
  c.timeout_ms = 600'000;
  c.program = std::move(program);
  auto img = guest::build(c.program, {.ram_bytes = c.memory});
  if (!img) return std::unexpected(img.error());
  auto vm = Vm::create(kvm, file, c, *img);
  if (!vm) return std::unexpected(vm.error());
  GuestRun g{std::move(*vm), {}};
  g.result = g.vm->run(nullptr);
  if (g.result.outcome != RunResult::Outcome::kExited || g.result.guest_exit_code != 0)
    return fail("the benchmark guest failed: {}", g.result.message);
  return g;
}

// Seconds to punch `count` ranges of `size` bytes, `stride` apart, each
// touched first, in a bare memfd.
Result<double> raw_punch_seconds(uint64_t size, uint64_t count, uint64_t stride) {
  const uint64_t total = stride * count;
  int fd = memfd_create("kvmem-bench-raw", MFD_CLOEXEC);
  if (fd < 0) return sys_fail("cannot create the raw memfd", "memfd_create", errno);
  if (ftruncate(fd, static_cast<off_t>(total)) < 0) {
    close(fd);
    return sys_fail("cannot size the raw memfd", "ftruncate", errno);
  }
  void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    close(fd);
    return sys_fail("cannot map the raw memfd", "mmap", errno);
  }
  std::memset(p, 1, total);
  const auto t0 = Clock::now();
  for (uint64_t i = 0; i < count; i++)
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(i * stride),
                  static_cast<off_t>(size)) < 0) {
      munmap(p, total);
      close(fd);
      return sys_fail("cannot punch the raw memfd", "fallocate", errno);
    }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  munmap(p, total);
  close(fd);
  return s;
}

const char* mode_name(FreeMode m) { return m == FreeMode::kSync ? "sync" : "async"; }

}  // namespace

Result<std::vector<nlohmann::json>> run_reclaim_bench(const ReclaimBenchOptions& o) {
  auto kvm = Kvm::open();
  if (!kvm) return std::unexpected(kvm.error());
  const uint64_t region = o.quick ? (8ull << 20) : (128ull << 20);
  const uint64_t memory = region + (4ull << 20);
  auto file = MemoryFile::create(memory_file_options_for(memory));
  if (!file) return std::unexpected(file.error());
  const double hz = tsc_hz();
  std::vector<nlohmann::json> rows;

  // Contiguous ranges (neighbours coalesce into one punch), then scattered
  // ones (every other range: one punch each, as raw does).
  for (const char* layout : {"contiguous", "scattered"}) {
    const bool scattered = std::string_view(layout) == "scattered";
    for (uint64_t size : {uint64_t{4096}, uint64_t{64} << 10, uint64_t{2} << 20}) {
      const uint64_t stride = scattered ? 2 * size : size;
      const uint64_t ranges = region / stride, bytes = ranges * size;
      for (FreeMode mode : {FreeMode::kSync, FreeMode::kAsync}) {
        const guest::Free free{.at = kRegion, .length = region, .granule = size, .stride = stride, .batch = 64, .mode = mode};
        auto run = run_program(*kvm, **file, memory, {fill(kRegion, region), guest::Timestamp{0}, free, guest::Timestamp{1}});
        if (!run) return std::unexpected(run.error());
        const double guest_s = static_cast<double>(run->result.timestamps[1] - run->result.timestamps[0]) / hz;
        // The pages must be gone for the figure to count: the kernel's view.
        auto held = (*file)->total_usage();
        if (!held) return std::unexpected(held.error());
        const bool gone = *held <= region - bytes + (1ull << 20);  // what is left: the rest, and boot pages
        auto raw = raw_punch_seconds(size, ranges, stride);
        if (!raw) return std::unexpected(raw.error());
        const double gbps = static_cast<double>(bytes) / guest_s / 1e9;
        const double raw_gbps = static_cast<double>(bytes) / *raw / 1e9;
        rows.push_back({{"bench", "reclaim"},
                        {"layout", layout},
                        {"size", size},
                        {"mode", mode_name(mode)},
                        {"batch", 64},
                        {"ranges", ranges},
                        {"bytes", bytes},
                        {"gb_per_s", gbps},
                        {"raw_gb_per_s", raw_gbps},
                        {"ratio_to_raw", gbps / raw_gbps},
                        {"exits", run->result.exits["io"]},
                        {"pages_gone", gone},
                        {"host_bytes_after", *held}});
        run->vm.reset();
        (*file)->wait_for_reclaim();
      }
    }
  }

  // One 4 KiB report at a time, each of a page just written.
  constexpr uint64_t kReports = 64;
  for (FreeMode mode : {FreeMode::kSync, FreeMode::kAsync}) {
    std::vector<Step> program{fill(kRegion, kReports * 4096)};
    for (uint64_t i = 0; i < kReports; i++) {
      program.push_back(guest::Timestamp{2 * i});
      program.push_back(guest::Free{.at = kRegion + i * 4096, .length = 4096, .granule = 4096, .batch = 1, .mode = mode});
      program.push_back(guest::Timestamp{2 * i + 1});
    }
    auto run = run_program(*kvm, **file, 8ull << 20, std::move(program));
    if (!run) return std::unexpected(run.error());
    std::vector<double> us;
    for (uint64_t i = 0; i < kReports; i++)
      us.push_back(static_cast<double>(run->result.timestamps[2 * i + 1] - run->result.timestamps[2 * i]) / hz * 1e6);
    const Summary lat = summarize(std::move(us));
    rows.push_back({{"bench", "reclaim_latency"},
                    {"size", 4096},
                    {"mode", mode_name(mode)},
                    {"reports", kReports},
                    {"median_us", lat.p50},
                    {"p10_us", lat.p10},
                    {"p90_us", lat.p90},
                    {"min_us", lat.min}});
    run->vm.reset();
    (*file)->wait_for_reclaim();
  }
  return rows;
}

std::string format_reclaim_bench(const std::vector<nlohmann::json>& rows) {
  Table reclaim({{"layout"},
                 {"size", "B"},
                 {"mode"},
                 {"ranges"},
                 {"ours", "GB/s"},
                 {"raw", "GB/s"},
                 {"ratio"},
                 {"exits"},
                 {.header = "", .align = TableColumn::Align::kLeft}});
  Table latency({{"mode"}, {"median", "us"}, {"p10", "us"}, {"p90", "us"}, {"min", "us"}});
  for (const auto& r : rows) {
    if (r["bench"] == "reclaim")
      reclaim.add_row({r["layout"].get<std::string>(), std::to_string(r["size"].get<uint64_t>()),
                       r["mode"].get<std::string>(), std::to_string(r["ranges"].get<uint64_t>()),
                       fixed(r["gb_per_s"].get<double>(), 2), fixed(r["raw_gb_per_s"].get<double>(), 2),
                       fixed(r["ratio_to_raw"].get<double>(), 2), std::to_string(r["exits"].get<uint64_t>()),
                       r["pages_gone"].get<bool>() ? "" : "(pages NOT gone)"});
    else if (r["bench"] == "reclaim_latency")
      latency.add_row({r["mode"].get<std::string>(), fixed(r["median_us"].get<double>(), 1),
                       fixed(r["p10_us"].get<double>(), 1), fixed(r["p90_us"].get<double>(), 1),
                       fixed(r["min_us"].get<double>(), 1)});
  }
  return "reclaim: report -> pages gone, batches of 64, vs raw fallocate(PUNCH_HOLE)\n" + reclaim.render() +
         "one 4 KiB report, guest-side latency\n" + latency.render();
}

}  // namespace kvmem
