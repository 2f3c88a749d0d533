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

namespace {

// One vCPU's part of one region, [at, at + length): its pattern, granule,
// free mode, batch and sub-range, drawn in the order a one-vCPU VM always
// drew them (so its programs did not change when vCPUs came).
RegionPlan plan_slice(std::mt19937_64& rng, uint64_t at, uint64_t length, unsigned vcpus, bool corrupt) {
  const uint64_t granules[] = {4096, 64 << 10, k2M};
  const uint64_t batches[] = {1, 7, 64, 512};
  RegionPlan plan{};
  plan.at = at;
  plan.length = length;
  plan.pattern = Pattern{Pattern::Kind::kSeed, rng()};
  plan.granule = granules[rng() % 3];
  plan.mode = rng() % 2 ? FreeMode::kSync : FreeMode::kAsync;
  if (vcpus > 1) plan.mode = FreeMode::kSync;  // the ring is for one vCPU
  const uint64_t max_batch =
      plan.mode == FreeMode::kSync ? guest::layout::report_list_entries(vcpus) : guest::layout::kFreeRingEntries;
  plan.batch = std::min<uint64_t>(batches[rng() % 4], max_batch);
  // A sub-range of whole granules, smaller than the slice when it can be.
  const uint64_t units = plan.length / plan.granule;
  const uint64_t free_units = units > 1 ? pick(rng, 1, units - 1) : 1;
  plan.free_at = plan.at + pick(rng, 0, units - free_units) * plan.granule;
  plan.free_len = free_units * plan.granule;
  plan.corrupt = corrupt;
  plan.final_mode = rng() % 2 ? FreeMode::kSync : FreeMode::kAsync;
  if (vcpus > 1) plan.final_mode = FreeMode::kSync;
  return plan;
}

// Bytes of [from, memory) that none of `ranges` covers.
uint64_t uncovered_bytes(std::vector<GuestRange> ranges, uint64_t from, uint64_t memory) {
  std::sort(ranges.begin(), ranges.end(), [](const GuestRange& a, const GuestRange& b) { return a.start < b.start; });
  uint64_t covered = 0, reach = from;
  for (const GuestRange& r : ranges) {
    const uint64_t start = std::max(r.start, reach);
    if (r.end > start) covered += r.end - start;
    reach = std::max(reach, r.end);
  }
  return memory - from - covered;
}

// The vCPUs' programs as the VM takes them: one `program`, or `programs`.
void set_programs(VmConfig& config, std::vector<std::vector<Step>> programs) {
  if (programs.size() == 1)
    config.program = std::move(programs[0]);
  else
    config.programs = std::move(programs);
}

}  // namespace

StressVm make_stress_vm(const StressConfig& c, uint64_t seed, uint64_t round, uint64_t index) {
  // seed_seq keeps 32 bits of each value: give it both halves of each.
  const auto lo = [](uint64_t v) { return static_cast<uint32_t>(v); };
  const auto hi = [](uint64_t v) { return static_cast<uint32_t>(v >> 32); };
  std::seed_seq seq{lo(seed), hi(seed), lo(round), hi(round), lo(index), hi(index)};
  std::mt19937_64 rng(seq);
  // The VM's shape has a stream of its own (the tag makes it differ from
  // rng's): the regions do not depend on how many vCPUs, backings or
  // prefaults the config lists.
  std::seed_seq shape_seq{lo(seed), hi(seed), lo(round), hi(round), lo(index), hi(index), 0x73686170u};
  std::mt19937_64 shape(shape_seq);
  StressVm vm = empty_stress_vm(c, fmt::format("r{}-vm{}", round, index));
  const unsigned vcpus = static_cast<unsigned>(pick(shape, c.vcpus_min, c.vcpus_max));
  vm.config.vcpus = vcpus;
  vm.config.backing = c.backings[shape() % c.backings.size()];
  vm.config.prefault = c.prefaults[shape() % c.prefaults.size()];
  std::vector<std::vector<Step>> programs(vcpus);
  std::vector<GuestRange> regions;
  for (uint64_t r = 0; r < c.regions_per_vm; r++) {
    const uint64_t length = pick(rng, c.region_min / k2M, c.region_max / k2M) * k2M;
    const uint64_t at = pick(rng, kFirstByte / k2M, (c.vm_memory - length) / k2M) * k2M;
    regions.emplace_back(at, at + length);
    // vCPU v takes the v-th of `vcpus` runs of whole 2 MiB pages, the
    // first ones a page longer when they do not divide evenly.
    const uint64_t pages = length / k2M;
    uint64_t slice_at = at;
    for (unsigned v = 0; v < vcpus; v++) {
      if (vcpus > 1) programs[v].push_back(guest::Barrier{});  // a region's slices start together
      const uint64_t slice = (pages / vcpus + (v < pages % vcpus ? 1 : 0)) * k2M;
      if (!slice) continue;
      const bool corrupt = c.inject_corruption && index == 0 && r == 0 && v == 0;
      const RegionPlan plan = plan_slice(rng, slice_at, slice, vcpus, corrupt);
      slice_at += slice;
      append_region(programs[v], plan);
      vm.bytes_written += plan.length;
      vm.bytes_freed += 2 * plan.free_len + plan.length;
    }
  }
  set_programs(vm.config, std::move(programs));
  switch (vm.config.prefault) {
    case Prefault::kNone: vm.max_end_commit = kFirstByte; break;
    case Prefault::kEager: vm.max_end_commit = kFirstByte + uncovered_bytes(regions, kFirstByte, c.vm_memory); break;
    case Prefault::kAhead: vm.max_end_commit = c.vm_memory; break;
  }
  return vm;
}

Result<guest::Image> build_stress_vm(const StressVm& vm) {
  const auto programs = vm.config.vcpu_programs();
  return guest::build_vcpus(programs, vm.config.machine());
}

std::vector<StressVm> worst_case_stress_vms(const StressConfig& c) {
  // Every region at its largest and highest (the widest immediates), with
  // every optional step (both verifies around the freed sub-range, the
  // injected one on region 0), the largest batch. Which free mode encodes
  // longer is the assembler's business, and the ring's setup comes once per
  // program: for one vCPU, all sync, all async, and all sync but one async
  // cover it. Several vCPUs' programs lie one after another in the program
  // area, so the most vCPUs, each with a slice of every region (sync, a
  // barrier before each), is their worst.
  const auto plan_of = [&](uint64_t r, FreeMode mode, unsigned vcpus) {
    RegionPlan plan{};
    plan.length = c.region_max;
    plan.at = (c.vm_memory - plan.length) / k2M * k2M;
    plan.pattern = Pattern{Pattern::Kind::kSeed, ~0ull};
    plan.granule = 4096;
    plan.mode = mode;
    plan.batch = std::min<uint64_t>(512, mode == FreeMode::kSync ? guest::layout::report_list_entries(vcpus)
                                                                  : guest::layout::kFreeRingEntries);
    plan.free_at = plan.at + plan.granule;
    plan.free_len = plan.length > 2 * plan.granule ? plan.length - 2 * plan.granule : plan.granule;
    plan.corrupt = c.inject_corruption && r == 0;
    plan.final_mode = mode;
    return plan;
  };
  std::vector<StressVm> out;
  for (int variant = 0; variant < 3 && c.vcpus_min == 1; variant++) {
    StressVm vm = empty_stress_vm(c, fmt::format("worst-case-{}", variant));
    for (uint64_t r = 0; r < c.regions_per_vm; r++) {
      const bool async = variant == 1 || (variant == 2 && r == 0);
      append_region(vm.config.program, plan_of(r, async ? FreeMode::kAsync : FreeMode::kSync, 1));
    }
    out.push_back(std::move(vm));
  }
  if (c.vcpus_max > 1) {
    StressVm vm = empty_stress_vm(c, fmt::format("worst-case-{}-vcpus", c.vcpus_max));
    vm.config.vcpus = c.vcpus_max;
    std::vector<std::vector<Step>> programs(c.vcpus_max);
    for (uint64_t r = 0; r < c.regions_per_vm; r++)
      for (unsigned v = 0; v < c.vcpus_max; v++) {
        programs[v].push_back(guest::Barrier{});
        RegionPlan plan = plan_of(r, FreeMode::kSync, c.vcpus_max);
        plan.corrupt = plan.corrupt && v == 0;
        append_region(programs[v], plan);
      }
    set_programs(vm.config, std::move(programs));
    out.push_back(std::move(vm));
  }
  return out;
}

Status check_stress_programs(const StressConfig& c) {
  for (const StressVm& vm : worst_case_stress_vms(c)) {
    auto img = build_stress_vm(vm);
    if (!img)
      return fail("/stress/regions_per_vm: the largest program a stress VM can get ({} regions of up to {:#x} bytes{}) "
                  "cannot be assembled: {}",
                  c.regions_per_vm, c.region_max,
                  vm.config.vcpus > 1 ? fmt::format(", on each of {} vCPUs", vm.config.vcpus) : std::string(),
                  img.error().message);
  }
  return {};
}

Status check_stress_backings(const StressConfig& c) {
  for (RamBacking b : c.backings)
    if (auto why = ram_backing_unavailable(b, c.vms_per_round * c.vm_memory))
      return fail("/stress/backings: this host cannot give {} RAM ({} VMs of {:#x} bytes a round): {}",
                  ram_backing_name(b), c.vms_per_round, c.vm_memory, *why);
  return {};
}

std::string StressSummary::to_text() const {
  std::string out = fmt::format(
      "stress: seed {}: {} rounds, {} VMs ({} vCPUs) in {:.1f} s ({:.1f} VMs/s)\n"
      "  written {:.2f} GiB, freed {:.2f} GiB, reclaimed {:.2f} GiB ({:.2f} GiB/s)\n"
      "  commit: baseline {:.1f} MiB, peak {:.1f} MiB{}, final {:.1f} MiB\n"
      "  integrity errors {}, other VM failures {}, rounds with a commit leak {}, VMs with a leak {}\n",
      seed, rounds, vms_booted, vcpus_booted, elapsed_s,
      elapsed_s > 0 ? static_cast<double>(vms_booted) / elapsed_s : 0.0, gib(bytes_written), gib(bytes_freed),
      gib(bytes_reclaimed), elapsed_s > 0 ? gib(bytes_reclaimed) / elapsed_s : 0.0, mib(baseline_commit_bytes),
      mib(peak_commit_bytes),
      commit_budget_bytes ? fmt::format(" of a {:.0f} MiB budget{}", mib(commit_budget_bytes),
                                        budget_exceeded ? " (EXCEEDED)" : "")
                          : std::string(),
      mib(final_commit_bytes), integrity_errors, vm_failures, commit_leaks, vm_leaks);
  std::string by_backing;
  for (const StressBackingTally& t : backings)
    by_backing += fmt::format("{}{} {} VMs ({} failed)", by_backing.empty() ? "" : ", ", ram_backing_name(t.backing),
                              t.vms, t.failed);
  if (!by_backing.empty()) out += "  backings: " + by_backing + "\n";
  for (const std::string& p : problems) out += "  " + p + "\n";
  return out;
}

namespace {

// The tally of backing b (one the config lists).
StressBackingTally& tally_of(StressSummary& sum, RamBacking b) {
  for (StressBackingTally& t : sum.backings)
    if (t.backing == b) return t;
  return sum.backings.emplace_back(StressBackingTally{.backing = b});
}

}  // namespace

std::optional<std::string> stress_vm_leak(const StressVm& vm, const VmOutcome& out, uint64_t slack) {
  const RunResult& r = out.result;
  if (r.bytes_reported_free != vm.bytes_freed || r.free_ranges_invalid != 0)
    return fmt::format("its guest reported {} bytes free ({} ranges refused), its program frees {}",
                       r.bytes_reported_free, r.free_ranges_invalid, vm.bytes_freed);
  if (vm.config.backing == RamBacking::kHugetlb) {
    // Sub-ranges are rounded inward to whole 2 MiB pages; whole regions are not.
    if (r.bytes_decommitted < vm.bytes_written || r.bytes_decommitted > r.bytes_reported_free)
      return fmt::format("the VMM decommitted {} bytes of {} reported free; its regions alone are {}",
                         r.bytes_decommitted, r.bytes_reported_free, vm.bytes_written);
  } else if (r.bytes_decommitted != r.bytes_reported_free) {
    return fmt::format("the VMM decommitted {} bytes of the {} reported free", r.bytes_decommitted,
                       r.bytes_reported_free);
  }
  if (out.host_committed_bytes > vm.max_end_commit + slack)
    return fmt::format("it held {} bytes of RAM when its program ended, more than {} (prefault {}) plus slack {}",
                       out.host_committed_bytes, vm.max_end_commit, prefault_name(vm.config.prefault), slack);
  return std::nullopt;
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
  if (auto s = check_stress_backings(config); !s) return std::unexpected(s.error());
  const RunOptions run_options{*limit, 5};
  StressSummary sum;
  sum.seed = config.seed ? config.seed : random_stress_seed();
  sum.commit_budget_bytes = config.commit_budget;
  for (RamBacking b : config.backings) tally_of(sum, b);
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
    std::vector<StressVm> plans;
    std::vector<VmConfig> vms;
    std::vector<guest::Image> images;
    uint64_t written = 0, freed = 0;
    for (uint64_t i = 0; i < config.vms_per_round; i++) {
      StressVm v = make_stress_vm(config, sum.seed, round, i);
      auto img = build_stress_vm(v);
      if (!img) return std::unexpected(img.error());
      written += v.bytes_written;
      freed += v.bytes_freed;
      vms.push_back(v.config);
      plans.push_back(std::move(v));
      images.push_back(std::move(*img));
    }
    RunTotals totals = run_vms(kvm, file, vms, images, nullptr, run_options);
    sum.rounds++;
    for (size_t i = 0; i < totals.vms.size(); i++) {
      const VmOutcome& v = totals.vms[i];
      const StressVm& plan = plans[i];
      StressBackingTally& tally = tally_of(sum, plan.config.backing);
      tally.vms++;
      sum.vms_booted += v.setup_error.empty();
      if (v.setup_error.empty()) sum.vcpus_booted += plan.config.vcpus;
      sum.bytes_reclaimed += v.result.bytes_decommitted;
      // What the seed made of it, after the message: replaying the seed remakes it.
      const std::string shape = fmt::format("{}, {} vCPU{}, prefault {}", ram_backing_name(plan.config.backing),
                                            plan.config.vcpus, plan.config.vcpus == 1 ? "" : "s",
                                            prefault_name(plan.config.prefault));
      if (v.exit_code() == 0) {
        if (auto leak = stress_vm_leak(plan, v, config.slack)) {
          sum.vm_leaks++;
          tally.failed++;
          sum.problems.push_back(fmt::format("seed {} round {} vm {}: {} ({})", sum.seed, round, v.name, *leak, shape));
        }
        continue;
      }
      tally.failed++;
      const std::string& why = v.setup_error.empty() ? v.result.message : v.setup_error;
      const bool integrity = v.setup_error.empty() && v.result.failure == FailureKind::kIntegrity;
      (integrity ? sum.integrity_errors : sum.vm_failures)++;
      sum.problems.push_back(fmt::format("seed {} round {} vm {}: {} ({})", sum.seed, round, v.name, why, shape));
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
