#include "harness/stress.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <unistd.h>

#include "base/check.h"
#include "base/thread.h"
#include "harness/interrupt.h"
#include "harness/runner.h"
#include "harness/stress_restore.h"

namespace kvmem {
namespace {

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
  if (snapshot_vms || !snapshot_dir.empty())
    out += fmt::format("  snapshots: {} VMs, {} taken, restored {} lazily and {} eagerly; {} failed to be taken, {} to be "
                       "restored{}\n",
                       snapshot_vms, snapshots_taken, restored_lazy, restored_eager, snapshot_failures,
                       restore_failures, snapshot_dir.empty() ? "" : fmt::format("; kept in {}", snapshot_dir));
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

std::optional<std::string> stress_vm_leak(const StressVm& vm, const VmOutcome& out, uint64_t slack, StressPart part) {
  const RunResult& r = out.result;
  // This part's frees, and the bytes of the regions it frees whole.
  uint64_t freed = vm.bytes_freed, regions = vm.bytes_written;
  const char* whose = "its program";
  if (part != StressPart::kWhole) {
    KVMEM_CHECK(vm.snapshot, "VM {} has no snapshot step to split its program at", vm.config.name);
    const bool before = part == StressPart::kBeforeSnapshot;
    freed = before ? vm.snapshot->bytes_freed_before : vm.bytes_freed - vm.snapshot->bytes_freed_before;
    regions = before ? vm.snapshot->regions_freed_before : vm.bytes_written - vm.snapshot->regions_freed_before;
    whose = before ? "its program before the snapshot" : "its program after the snapshot";
  }
  if (r.bytes_reported_free != freed || r.free_ranges_invalid != 0)
    return fmt::format("its guest reported {} bytes free ({} ranges refused), {} frees {}", r.bytes_reported_free,
                       r.free_ranges_invalid, whose, freed);
  if (vm.config.backing == RamBacking::kHugetlb) {
    // Sub-ranges are rounded inward to whole 2 MiB pages; whole regions are not.
    if (r.bytes_decommitted < regions || r.bytes_decommitted > r.bytes_reported_free)
      return fmt::format("the VMM decommitted {} bytes of {} reported free; its regions alone are {}",
                         r.bytes_decommitted, r.bytes_reported_free, regions);
  } else if (r.bytes_decommitted != r.bytes_reported_free) {
    return fmt::format("the VMM decommitted {} bytes of the {} reported free", r.bytes_decommitted,
                       r.bytes_reported_free);
  }
  if (part == StressPart::kBeforeSnapshot) return std::nullopt;  // it stopped holding a region
  if (out.host_committed_bytes > vm.max_end_commit + slack)
    return fmt::format("it held {} bytes of RAM when its program ended, more than {} (prefault {}) plus slack {}",
                       out.host_committed_bytes, vm.max_end_commit, prefault_name(vm.config.prefault), slack);
  return std::nullopt;
}

namespace {

const char* restored_how(RestoreMode m) { return m == RestoreMode::kLazy ? "lazily" : "eagerly"; }

// What one round's VMs add to the summary: each VM's run, and each
// restored VM's, counted once as failed in its backing's tally however many
// checks it fails.
struct RoundTally {
  StressSummary& sum;
  const StressConfig& config;
  const std::vector<StressVm>& plans;
  uint64_t round;
  const SnapshotFolder* folder;  // null without snapshots
  std::vector<bool> failed = std::vector<bool>(plans.size(), false);
  std::vector<RestoreJob> jobs{};    // the snapshots the round left
  std::vector<size_t> restore_of{};  // the VM of each job

  // What the seed made of VM i, after a message: replaying the seed remakes it.
  std::string shape(size_t i) const {
    const VmConfig& c = plans[i].config;
    std::string s = fmt::format("{}, {} vCPU{}, prefault {}", ram_backing_name(c.backing), c.vcpus,
                                c.vcpus == 1 ? "" : "s", prefault_name(c.prefault));
    if (const auto& snap = plans[i].snapshot)
      s += fmt::format(", snapshot in region {}, restored {}", snap->region, restored_how(snap->mode));
    return s;
  }
  // `who`: the VM's name, and for its restored half which one.
  void problem(size_t i, const std::string& who, const std::string& what) {
    sum.problems.push_back(fmt::format("seed {} round {} vm {}: {} ({})", sum.seed, round, who, what, shape(i)));
  }
  void mark_failed(size_t i) {
    if (failed[i]) return;
    failed[i] = true;
    tally_of(sum, plans[i].config.backing).failed++;
  }
  // A VM that did not end with 0: integrity, or any other failure.
  void count_failure(size_t i, const std::string& who, const VmOutcome& v) {
    mark_failed(i);
    const bool integrity = v.setup_error.empty() && v.result.failure == FailureKind::kIntegrity;
    (integrity ? sum.integrity_errors : sum.vm_failures)++;
    problem(i, who, v.setup_error.empty() ? v.result.message : v.setup_error);
  }

  // VM i of the round, as run_vms ran it: up to its snapshot step, if it has one.
  void count_run(size_t i, const VmOutcome& v) {
    const StressVm& plan = plans[i];
    tally_of(sum, plan.config.backing).vms++;
    sum.vms_booted += v.setup_error.empty();
    if (v.setup_error.empty()) sum.vcpus_booted += plan.config.vcpus;
    sum.bytes_reclaimed += v.result.bytes_decommitted;
    sum.snapshot_vms += plan.snapshot.has_value();
    if (v.exit_code() != 0) {
      // One that failed at its snapshot (the sink's error) had reached it.
      if (plan.snapshot && v.snapshots > 0) sum.snapshot_failures++;
      count_failure(i, v.name, v);
      return;
    }
    const StressPart part = plan.snapshot ? StressPart::kBeforeSnapshot : StressPart::kWhole;
    if (auto leak = stress_vm_leak(plan, v, config.slack, part)) {
      sum.vm_leaks++;
      mark_failed(i);
      problem(i, v.name, *leak);
    }
    if (!plan.snapshot) return;
    KVMEM_CHECK(folder, "VM {} has a snapshot step in a run without a snapshot folder", plan.config.name);
    const std::string path = folder->file_of(plan.config.name);
    if (::access(path.c_str(), R_OK) != 0) {
      sum.snapshot_failures++;
      sum.vm_failures++;
      mark_failed(i);
      problem(i, v.name, fmt::format("it exited at its snapshot step but left no snapshot at {}", path));
      return;
    }
    sum.snapshots_taken++;
    jobs.push_back(RestoreJob{path, plan.snapshot->mode});
    restore_of.push_back(i);
  }

  // The restored half of VM i: from its snapshot to the end of its program.
  void count_restored(size_t i, const RestoredRun& r) {
    const StressVm& plan = plans[i];
    const std::string who = fmt::format("{}, restored {}", plan.config.name, restored_how(r.mode));
    if (!r.restored()) {
      sum.restore_failures++;
      sum.vm_failures++;
      mark_failed(i);
      problem(i, who, fmt::format("cannot restore its snapshot: {}", r.restore_error));
      return;
    }
    (r.mode == RestoreMode::kLazy ? sum.restored_lazy : sum.restored_eager)++;
    sum.bytes_reclaimed += r.out.result.bytes_decommitted;
    if (r.out.setup_error.empty() && (r.file_committed_after || r.file_host_committed_after)) {
      // Whatever its outcome, its RAM must all come back once it has gone.
      sum.vm_leaks++;
      mark_failed(i);
      problem(i, who,
              fmt::format("its memory file still held {} bytes ({} by st_blocks) after it had gone",
                          r.file_committed_after, r.file_host_committed_after));
    }
    if (r.out.exit_code() == 0) {
      if (auto leak = stress_vm_leak(plan, r.out, config.slack, StressPart::kAfterSnapshot)) {
        sum.vm_leaks++;
        mark_failed(i);
        problem(i, who, *leak);
      }
      return;
    }
    // Its snapshot's data turned out damaged while it ran lazily.
    if (r.out.setup_error.empty() && r.out.result.failure == FailureKind::kSnapshot) sum.restore_failures++;
    count_failure(i, who, r.out);
  }
};

}  // namespace

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
  std::optional<SnapshotFolder> folder;
  if (config.snapshots.on()) {
    auto f = SnapshotFolder::open(config.snapshots);
    if (!f) return std::unexpected(f.error());
    folder.emplace(std::move(*f));
  }
  const RunOptions run_options{*limit, 5, nullptr, folder ? folder->path() : std::string()};
  StressSummary sum;
  if (folder && folder->kept()) sum.snapshot_dir = folder->path();
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
    RoundTally tally{sum, config, plans, round, folder ? &*folder : nullptr};
    for (size_t i = 0; i < totals.vms.size(); i++) tally.count_run(i, totals.vms[i]);
    if (!tally.jobs.empty() && !StopRequests::process().requested()) {
      const RestoredTotals restored = run_restored(kvm, tally.jobs, *limit);
      for (size_t k = 0; k < restored.runs.size(); k++) tally.count_restored(tally.restore_of[k], restored.runs[k]);
      if (restored.peak_committed_bytes > peak.load()) peak.store(restored.peak_committed_bytes);
    }
    for (const StressVm& plan : plans)
      if (plan.snapshot && folder) folder->done_with(plan.config.name);
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
