#include "harness/stress.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "base/thread.h"
#include "guest/abi.h"
#include "guest/layout.h"
#include "harness/interrupt.h"
#include "harness/runner.h"

namespace kvmem {
namespace {

using guest::FreeMode;
using guest::Pattern;
using guest::Step;
constexpr uint64_t k2M = 2ull << 20;
constexpr uint64_t kFirstByte = 2ull << 20;  // regions start above the boot area's 2 MiB page

uint64_t pick(std::mt19937_64& rng, uint64_t lo, uint64_t hi) {  // uniform in [lo, hi]
  return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
}

double gib(uint64_t b) { return static_cast<double>(b) / (1ull << 30); }
double mib(uint64_t b) { return static_cast<double>(b) / (1ull << 20); }

}  // namespace

uint64_t random_stress_seed() {
  std::random_device rd;
  const uint64_t seed = (uint64_t{rd()} << 32) | rd();
  return seed ? seed : 1;
}

std::string format_progress_line(const StressProgress& p, const StressConfig& config, size_t width, bool bar) {
  std::string line = fmt::format(
      "round {}{} | {} VMs | written {:.2f} GiB, freed {:.2f}, reclaimed {:.2f} | commit {:.0f} MiB (peak {:.0f}{}) "
      "| {:.0f} s",
      p.round, config.rounds ? fmt::format("/{}", config.rounds) : std::string(), p.vms_booted, gib(p.bytes_written),
      gib(p.bytes_freed), gib(p.bytes_reclaimed), mib(p.commit_bytes), mib(p.peak_commit_bytes),
      config.commit_budget ? fmt::format(" of {:.0f}", mib(config.commit_budget)) : "", p.elapsed_s);
  if (bar) {
    const double limit = config.rounds ? static_cast<double>(config.rounds) : static_cast<double>(config.duration_s);
    const double done = config.rounds ? static_cast<double>(p.round) : p.elapsed_s;
    const double frac = limit > 0 ? std::clamp(done / limit, 0.0, 1.0) : 0.0;
    const size_t filled = static_cast<size_t>(frac * 20);
    line = fmt::format("[{}{}] {}", std::string(filled, '#'), std::string(20 - filled, '.'), line);
  }
  if (width > 0 && line.size() > width) line.resize(width);
  return line;
}

namespace {

// One region's part of a stress program: what make_stress_vm draws, and
// what worst_case_stress_vms() sets to the largest values.
struct RegionPlan {
  uint64_t at, length;
  Pattern pattern;
  uint64_t granule;
  FreeMode mode;
  uint64_t batch;
  uint64_t free_at, free_len;  // the sub-range freed first
  bool corrupt;                // fault injection: verify a pattern it never held
  FreeMode final_mode;   // the free of the whole region
};

void append_region(std::vector<Step>& p, const RegionPlan& r) {
  const guest::Free free_part{.at = r.free_at, .length = r.free_len, .granule = r.granule, .batch = r.batch, .mode = r.mode};
  p.push_back(guest::Fill{r.at, r.length, r.pattern});
  p.push_back(free_part);
  p.push_back(guest::Verify{r.free_at, r.free_len, Pattern{}});
  // Reading the holes committed fresh zero pages: hand them back again.
  p.push_back(free_part);
  if (r.corrupt) p.push_back(guest::Verify{r.at, r.length, Pattern{Pattern::Kind::kSeed, r.pattern.arg + 1}});
  if (r.free_at > r.at) p.push_back(guest::Verify{r.at, r.free_at - r.at, r.pattern});
  if (r.free_at + r.free_len < r.at + r.length)
    p.push_back(guest::Verify{r.free_at + r.free_len, r.at + r.length - r.free_at - r.free_len, r.pattern});
  // Done with the region: all of it goes back, so a VM's commit stays small.
  p.push_back(guest::Free{.at = r.at, .length = r.length, .granule = k2M, .batch = 64, .mode = r.final_mode});
}

StressVm empty_stress_vm(const StressConfig& c, std::string name) {
  StressVm vm;
  vm.config.name = std::move(name);
  vm.config.memory = c.vm_memory;
  vm.config.ram_unit = c.ram_unit;
  vm.config.timeout_ms = c.timeout_ms;
  return vm;
}

}  // namespace

StressVm make_stress_vm(const StressConfig& c, uint64_t seed, uint64_t round, uint64_t index) {
  // seed_seq keeps 32 bits of each value: give it both halves of each.
  const auto lo = [](uint64_t v) { return static_cast<uint32_t>(v); };
  const auto hi = [](uint64_t v) { return static_cast<uint32_t>(v >> 32); };
  std::seed_seq seq{lo(seed), hi(seed), lo(round), hi(round), lo(index), hi(index)};
  std::mt19937_64 rng(seq);
  StressVm vm = empty_stress_vm(c, fmt::format("r{}-vm{}", round, index));
  const uint64_t granules[] = {4096, 64 << 10, k2M};
  const uint64_t batches[] = {1, 7, 64, 512};
  for (uint64_t r = 0; r < c.regions_per_vm; r++) {
    RegionPlan plan{};
    plan.length = pick(rng, c.region_min / k2M, c.region_max / k2M) * k2M;
    plan.at = pick(rng, kFirstByte / k2M, (c.vm_memory - plan.length) / k2M) * k2M;
    plan.pattern = Pattern{Pattern::Kind::kSeed, rng()};
    plan.granule = granules[rng() % 3];
    plan.mode = rng() % 2 ? FreeMode::kSync : FreeMode::kAsync;
    plan.batch = std::min<uint64_t>(batches[rng() % 4], guest::layout::kFreeRingEntries);
    // A sub-range of whole granules, smaller than the region when it can be.
    const uint64_t units = plan.length / plan.granule;
    const uint64_t free_units = units > 1 ? pick(rng, 1, units - 1) : 1;
    plan.free_at = plan.at + pick(rng, 0, units - free_units) * plan.granule;
    plan.free_len = free_units * plan.granule;
    plan.corrupt = c.inject_corruption && index == 0 && r == 0;
    plan.final_mode = rng() % 2 ? FreeMode::kSync : FreeMode::kAsync;
    append_region(vm.config.program, plan);
    vm.bytes_written += plan.length;
    vm.bytes_freed += 2 * plan.free_len + plan.length;
  }
  return vm;
}

std::vector<StressVm> worst_case_stress_vms(const StressConfig& c) {
  // Every region at its largest and highest (the widest immediates), with
  // every optional step (both verifies around the freed sub-range, the
  // injected one on region 0), the largest batch. Which free mode encodes
  // longer is the assembler's business, and the ring's setup comes once per
  // program: all sync, all async, and all sync but one async cover it.
  std::vector<StressVm> out;
  for (int variant = 0; variant < 3; variant++) {
    StressVm vm = empty_stress_vm(c, fmt::format("worst-case-{}", variant));
    for (uint64_t r = 0; r < c.regions_per_vm; r++) {
      const bool async = variant == 1 || (variant == 2 && r == 0);
      const FreeMode mode = async ? FreeMode::kAsync : FreeMode::kSync;
      RegionPlan plan{};
      plan.length = c.region_max;
      plan.at = (c.vm_memory - plan.length) / k2M * k2M;
      plan.pattern = Pattern{Pattern::Kind::kSeed, ~0ull};
      plan.granule = 4096;
      plan.mode = mode;
      plan.batch = std::min<uint64_t>(512, guest::layout::kFreeRingEntries);
      plan.free_at = plan.at + plan.granule;
      plan.free_len = plan.length > 2 * plan.granule ? plan.length - 2 * plan.granule : plan.granule;
      plan.corrupt = c.inject_corruption && r == 0;
      plan.final_mode = mode;
      append_region(vm.config.program, plan);
    }
    out.push_back(std::move(vm));
  }
  return out;
}

Status check_stress_programs(const StressConfig& c) {
  for (const StressVm& vm : worst_case_stress_vms(c)) {
    auto img = guest::build(vm.config.program, {.ram_bytes = vm.config.memory});
    if (!img)
      return fail("/stress/regions_per_vm: the largest program a stress VM can get ({} regions of up to {:#x} bytes) "
                  "cannot be assembled: {}",
                  c.regions_per_vm, c.region_max, img.error().message);
  }
  return {};
}

std::string StressSummary::to_text() const {
  std::string out = fmt::format(
      "stress: seed {}: {} rounds, {} VMs in {:.1f} s ({:.1f} VMs/s)\n"
      "  written {:.2f} GiB, freed {:.2f} GiB, reclaimed {:.2f} GiB ({:.2f} GiB/s)\n"
      "  commit: baseline {:.1f} MiB, peak {:.1f} MiB{}, final {:.1f} MiB\n"
      "  integrity errors {}, other VM failures {}, rounds with a commit leak {}\n",
      seed, rounds, vms_booted, elapsed_s, elapsed_s > 0 ? static_cast<double>(vms_booted) / elapsed_s : 0.0,
      gib(bytes_written), gib(bytes_freed), gib(bytes_reclaimed), elapsed_s > 0 ? gib(bytes_reclaimed) / elapsed_s : 0.0,
      mib(baseline_commit_bytes), mib(peak_commit_bytes),
      commit_budget_bytes ? fmt::format(" of a {:.0f} MiB budget{}", mib(commit_budget_bytes),
                                        budget_exceeded ? " (EXCEEDED)" : "")
                          : std::string(),
      mib(final_commit_bytes), integrity_errors, vm_failures, commit_leaks);
  for (const std::string& p : problems) out += "  " + p + "\n";
  return out;
}

Result<StressSummary> run_stress(const Kvm& kvm, MemoryFile& file, const StressConfig& config,
                                 const std::function<void(const StressProgress&)>& progress,
                                 std::optional<MemoryLimit> limit) {
  if (!limit) {
    auto host = host_memory_limit();
    if (!host) return std::unexpected(host.error());
    limit = std::move(*host);
  }
  if (auto s = check_stress_fits(*limit, config); !s) return std::unexpected(s.error());
  const RunOptions run_options{*limit, 5};
  StressSummary sum;
  sum.seed = config.seed ? config.seed : random_stress_seed();
  sum.commit_budget_bytes = config.commit_budget;
  if (auto s = file.update_usage(); !s) return std::unexpected(s.error());
  auto base = file.total_usage();
  if (!base) return std::unexpected(base.error());
  sum.baseline_commit_bytes = std::max(*base, file.usage().total());

  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };

  // The ticker: progress about every 250 ms, and the budget watched
  // throughout (a round's own sampler watches at 5 ms).
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::atomic<uint64_t> peak{0};
  StressProgress shown;  // protected by mu
  // Joined on every way out of this function, the error returns included:
  // a joinable std::thread destroyed is std::terminate (exit 134).
  struct TickerJoiner {
    std::mutex& mu;
    std::condition_variable& cv;
    bool& done;
    std::thread thread;
    ~TickerJoiner() {
      {
        std::lock_guard lock(mu);
        done = true;
      }
      cv.notify_all();
      if (thread.joinable()) thread.join();
    }
  } ticker{mu, cv, done, {}};
  auto thread = start_thread("the stress progress thread", [&] {
    std::unique_lock lock(mu);
    while (!done) {
      cv.wait_for(lock, std::chrono::milliseconds(250));
      if (done) break;
      if (auto b = file.total_usage()) {
        shown.commit_bytes = *b;
        if (*b > peak.load()) peak.store(*b);
      }
      shown.peak_commit_bytes = peak.load();
      shown.elapsed_s = elapsed();
      if (progress) progress(shown);
    }
  });
  if (!thread) return std::unexpected(thread.error());
  ticker.thread = std::move(*thread);

  for (uint64_t round = 0;; round++) {
    if (config.rounds && round >= config.rounds) break;
    if (StopRequests::process().requested()) break;  // a signal: report what ran
    if (config.duration_s && round > 0 && elapsed() >= static_cast<double>(config.duration_s)) break;
    std::vector<VmConfig> vms;
    std::vector<guest::Image> images;
    uint64_t written = 0, freed = 0;
    for (uint64_t i = 0; i < config.vms_per_round; i++) {
      StressVm v = make_stress_vm(config, sum.seed, round, i);
      auto img = guest::build(v.config.program, {.ram_bytes = v.config.memory});
      if (!img) return std::unexpected(img.error());
      written += v.bytes_written;
      freed += v.bytes_freed;
      vms.push_back(std::move(v.config));
      images.push_back(std::move(*img));
    }
    RunTotals totals = run_vms(kvm, file, vms, images, nullptr, run_options);
    sum.rounds++;
    for (const VmOutcome& v : totals.vms) {
      sum.vms_booted += v.setup_error.empty();
      sum.bytes_reclaimed += v.result.bytes_decommitted;
      if (v.exit_code() == 0) {
        continue;
      }
      const std::string& why = v.setup_error.empty() ? v.result.message : v.setup_error;
      const bool integrity = v.setup_error.empty() && v.result.failure == FailureKind::kIntegrity;
      (integrity ? sum.integrity_errors : sum.vm_failures)++;
      sum.problems.push_back(fmt::format("seed {} round {} vm {}: {}", sum.seed, round, v.name, why));
    }
    sum.bytes_written += written;
    sum.bytes_freed += freed;
    const uint64_t after = std::max(totals.committed_bytes_after, totals.host_committed_bytes_after);
    if (after > sum.baseline_commit_bytes + config.slack) {
      sum.commit_leaks++;
      sum.problems.push_back(fmt::format(
          "seed {} round {}: commit is {} bytes after every VM exited and was reclaimed, more than the baseline "
          "{} plus slack {} (ours {}, st_blocks {})",
          sum.seed, round, after, sum.baseline_commit_bytes, config.slack, totals.committed_bytes_after,
          totals.host_committed_bytes_after));
    }
    if (totals.peak_committed_bytes > peak.load()) peak.store(totals.peak_committed_bytes);
    {
      std::lock_guard lock(mu);
      shown.round = sum.rounds;
      shown.vms_booted = sum.vms_booted;
      shown.bytes_written = sum.bytes_written;
      shown.bytes_freed = sum.bytes_freed;
      shown.bytes_reclaimed = sum.bytes_reclaimed;
      shown.commit_bytes = after;
      shown.peak_commit_bytes = peak.load();
      shown.elapsed_s = elapsed();
      if (progress) progress(shown);
    }
  }
  {
    std::lock_guard lock(mu);
    done = true;
  }
  cv.notify_all();
  ticker.thread.join();
  sum.elapsed_s = elapsed();
  sum.peak_commit_bytes = peak.load();
  if (config.commit_budget && sum.peak_commit_bytes > config.commit_budget) {
    sum.budget_exceeded = true;
    sum.problems.push_back(fmt::format("seed {}: commit peaked at {} bytes, over the budget of {}", sum.seed,
                                       sum.peak_commit_bytes, config.commit_budget));
  }
  file.wait_for_reclaim();
  if (auto s = file.update_usage(); s) sum.final_commit_bytes = file.usage().total();
  if (auto b = file.total_usage()) sum.final_commit_bytes = std::max(sum.final_commit_bytes, *b);
  return sum;
}

}  // namespace kvmem
