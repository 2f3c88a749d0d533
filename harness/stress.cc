#include "harness/stress.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "guest/abi.h"
#include "harness/runner.h"

namespace kvmem {
namespace {

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

StressVm make_stress_vm(const StressConfig& c, uint64_t seed, uint64_t round, uint64_t index) {
  // seed_seq keeps 32 bits of each value: give it both halves of each.
  const auto lo = [](uint64_t v) { return static_cast<uint32_t>(v); };
  const auto hi = [](uint64_t v) { return static_cast<uint32_t>(v >> 32); };
  std::seed_seq seq{lo(seed), hi(seed), lo(round), hi(round), lo(index), hi(index)};
  std::mt19937_64 rng(seq);
  StressVm vm;
  vm.config.name = fmt::format("r{}-vm{}", round, index);
  vm.config.memory = c.vm_memory;
  vm.config.ram_unit = c.ram_unit;
  vm.config.timeout_ms = c.timeout_ms;
  const uint64_t granules[] = {4096, 64 << 10, k2M};
  const uint64_t batches[] = {1, 7, 64, 512};
  for (uint64_t r = 0; r < c.regions_per_vm; r++) {
    const uint64_t length = pick(rng, c.region_min / k2M, c.region_max / k2M) * k2M;
    const uint64_t at = pick(rng, kFirstByte / k2M, (c.vm_memory - length) / k2M) * k2M;
    const Pattern pattern{Pattern::Kind::kSeed, rng()};
    const uint64_t granule = granules[rng() % 3];
    const Step::FreeMode mode = rng() % 2 ? Step::FreeMode::kSync : Step::FreeMode::kAsync;
    const uint64_t batch = std::min<uint64_t>(batches[rng() % 4], abi::kFreeRingEntries);
    // A sub-range of whole granules, smaller than the region when it can be.
    const uint64_t units = length / granule;
    const uint64_t free_units = units > 1 ? pick(rng, 1, units - 1) : 1;
    const uint64_t free_at = at + pick(rng, 0, units - free_units) * granule;
    const uint64_t free_len = free_units * granule;

    auto& p = vm.config.program;
    p.push_back(Step::range(Step::Op::kFill, at, length, pattern));
    p.push_back(Step::free(free_at, free_len, granule, mode, batch));
    p.push_back(Step::range(Step::Op::kVerify, free_at, free_len, Pattern{}));
    // Reading the holes committed fresh zero pages: hand them back again.
    p.push_back(Step::free(free_at, free_len, granule, mode, batch));
    if (c.inject_corruption && index == 0 && r == 0) {
      // Fault injection: a pattern this region never held.
      p.push_back(Step::range(Step::Op::kVerify, at, length, Pattern{Pattern::Kind::kSeed, pattern.arg + 1}));
    }
    if (free_at > at) p.push_back(Step::range(Step::Op::kVerify, at, free_at - at, pattern));
    if (free_at + free_len < at + length)
      p.push_back(Step::range(Step::Op::kVerify, free_at + free_len, at + length - free_at - free_len, pattern));
    // Done with the region: all of it goes back, so a VM's commit stays small.
    p.push_back(Step::free(at, length, k2M, rng() % 2 ? Step::FreeMode::kSync : Step::FreeMode::kAsync, 64));
    vm.bytes_written += length;
    vm.bytes_freed += 2 * free_len + length;
  }
  return vm;
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
  ticker.thread = std::thread([&] {
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

  for (uint64_t round = 0;; round++) {
    if (config.rounds && round >= config.rounds) break;
    if (config.duration_s && round > 0 && elapsed() >= static_cast<double>(config.duration_s)) break;
    std::vector<VmConfig> vms;
    std::vector<guest::Image> images;
    uint64_t written = 0, freed = 0;
    for (uint64_t i = 0; i < config.vms_per_round; i++) {
      StressVm v = make_stress_vm(config, sum.seed, round, i);
      auto img = guest::build_program(v.config.program, abi::kProgramAddr, abi::kProgramEnd);
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
