// kvmem: the command line.
//
// Exit codes (DESIGN.md): 0 success · 1 the guest or a check failed ·
// 2 bad usage or config · 3 the host cannot run it.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <mutex>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "guest/abi.h"
#include "bench/alloc.h"
#include "memory/memory_file.h"
#include "bench/boot.h"
#include "bench/reclaim.h"
#include "harness/runner.h"
#include "harness/stress.h"
#include "config/stress_config.h"
#include "config/vm_config.h"
#include "vmm/kvm/kvm.h"
#include "vmm/vm.h"

namespace kvmem {
namespace {

constexpr const char* kVersion = "0.1.0";
constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2, kExitHost = 3;

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// Prints an error the human way (stderr) or as the one JSON report (stdout).
int report_error(bool as_json, int code, const std::string& message) {
  if (as_json) {
    std::printf("%s\n", json{{"exit_code", code}, {"error", message}}.dump().c_str());
  } else {
    std::fprintf(stderr, "kvmem: %s\n", message.c_str());
  }
  return code;
}

// Loads and assembles every VM of a config; errors are the config's (exit 2).
struct Prepared {
  RunConfig config;
  std::vector<guest::Image> images;
};
Result<Prepared> prepare(const std::string& path) {
  auto config = load_run_config(path);
  if (!config) return std::unexpected(config.error());
  Prepared p{std::move(*config), {}};
  for (const VmConfig& vm : p.config.vms) {
    auto image = guest::build(vm.program, {.ram_bytes = vm.memory});
    if (!image) return std::unexpected(image.error().context(fmt::format("{}: vm {}", path, vm.name)));
    p.images.push_back(std::move(*image));
  }
  return p;
}

// A stress config validates as one, with what a round will run.
int validate_stress(const std::string& path, bool as_json) {
  auto c = load_stress_config(path);
  if (!c) return report_error(as_json, kExitUsage, c.error().message);
  // Assemble one VM's program to be sure a round can be built.
  StressVm vm = make_stress_vm(*c, c->seed ? c->seed : 1, 0, 0);
  auto img = guest::build(vm.config.program, {.ram_bytes = vm.config.memory});
  if (!img) return report_error(as_json, kExitUsage, img.error().context(path).message);
  if (as_json) {
    std::printf("%s\n", json{{"exit_code", 0},
                             {"stress", {{"vms_per_round", c->vms_per_round},
                                         {"vm_memory_bytes", c->vm_memory},
                                         {"rounds", c->rounds},
                                         {"duration_s", c->duration_s},
                                         {"commit_budget_bytes", c->commit_budget}}}}
                            .dump()
                            .c_str());
  } else {
    std::printf("%s: ok (stress: %llu VMs of %llu MiB per round, %s)\n", path.c_str(),
                static_cast<unsigned long long>(c->vms_per_round), static_cast<unsigned long long>(c->vm_memory >> 20),
                c->rounds ? fmt::format("{} rounds", c->rounds).c_str() : fmt::format("{} s", c->duration_s).c_str());
  }
  return kExitOk;
}

int cmd_validate(const std::string& path, bool as_json) {
  if (auto j = read_config_json(path); j && j->is_object() && j->contains("stress")) return validate_stress(path, as_json);
  auto p = prepare(path);
  if (!p) return report_error(as_json, kExitUsage, p.error().message);
  json vms = json::array();
  std::string text;
  for (size_t i = 0; i < p->config.vms.size(); i++) {
    const VmConfig& c = p->config.vms[i];
    vms.push_back({{"name", c.name},
                   {"memory_bytes", c.memory},
                   {"steps", c.program.size()},
                   {"code_bytes", p->images[i].bytes.size()}});
    text += fmt::format("{}vm {}, {} MiB, {} steps, {} bytes of guest code", text.empty() ? "" : "; ", c.name,
                        c.memory >> 20, c.program.size(), p->images[i].bytes.size());
  }
  if (as_json)
    std::printf("%s\n", json{{"exit_code", 0}, {"vms", vms}}.dump().c_str());
  else
    std::printf("%s: ok (%s)\n", path.c_str(), text.c_str());
  return kExitOk;
}

// Console text to stdout; with several VMs each line starts with "[name] ".
class ConsoleEcho {
 public:
  explicit ConsoleEcho(bool prefix) : prefix_(prefix) {}
  void operator()(std::string_view vm, std::string_view text) {
    std::lock_guard lock(mu_);
    if (!prefix_) {
      std::fwrite(text.data(), 1, text.size(), stdout);
    } else {
      std::string& pending = pending_[std::string(vm)];
      pending.append(text);
      for (size_t nl; (nl = pending.find('\n')) != std::string::npos; pending.erase(0, nl + 1))
        std::fprintf(stdout, "[%.*s] %.*s\n", static_cast<int>(vm.size()), vm.data(), static_cast<int>(nl),
                     pending.data());
    }
    std::fflush(stdout);
  }
  // Lines a guest left unfinished.
  void flush() {
    for (auto& [vm, pending] : pending_)
      if (!pending.empty()) std::fprintf(stdout, "[%s] %s\n", vm.c_str(), pending.c_str());
    pending_.clear();
  }

 private:
  bool prefix_;
  std::mutex mu_;
  std::map<std::string, std::string> pending_;
};

int cmd_run(const std::string& path, bool as_json, Clock::time_point start) {
  auto p = prepare(path);
  if (!p) return report_error(as_json, kExitUsage, p.error().message);
  auto kvm = Kvm::open();
  if (!kvm) return report_error(as_json, kExitHost, kvm.error().message);
  // Under a memory cgroup, refuse what cannot fit, and keep the rest under it.
  auto limit = host_memory_limit();
  if (!limit) return report_error(as_json, kExitHost, limit.error().message);
  if (auto s = check_run_fits(*limit, p->config.vms); !s) return report_error(as_json, kExitHost, s.error().message);
  uint64_t guest_bytes = 0;
  for (const VmConfig& vm : p->config.vms) guest_bytes += vm.memory;
  auto file = MemoryFile::create(memory_file_options_for(guest_bytes));
  if (!file) return report_error(as_json, kExitHost, file.error().message);
  ConsoleEcho console(p->config.vms.size() > 1);
  std::function<void(std::string_view, std::string_view)> echo;
  if (!as_json) echo = [&console](std::string_view vm, std::string_view text) { console(vm, text); };
  RunTotals totals = run_vms(*kvm, **file, p->config.vms, p->images, echo, RunOptions{*limit});
  totals.wall_ms = ms_since(start);
  if (as_json) {
    std::printf("%s\n", totals.to_json().dump().c_str());
    return totals.exit_code();
  }
  console.flush();
  for (const VmOutcome& v : totals.vms) {
    const std::string& why = v.setup_error.empty() ? v.result.message : v.setup_error;
    if (!why.empty()) std::fprintf(stderr, "kvmem: %s: %s\n", v.name.c_str(), why.c_str());
  }
  if (totals.vms.size() > 1) {
    size_t ok = 0;
    for (const VmOutcome& v : totals.vms) ok += v.exit_code() == 0;
    std::fprintf(stderr, "kvmem: %zu of %zu VMs succeeded; peak commit %.1f MiB, %.1f MiB after reclaim\n", ok,
                 totals.vms.size(), static_cast<double>(totals.peak_committed_bytes) / (1 << 20),
                 static_cast<double>(totals.host_committed_bytes_after) / (1 << 20));
  }
  return totals.exit_code();
}

struct StressArgs {
  std::string file;
  bool json = false;
  std::optional<uint64_t> rounds, duration_s, seed;
};

int cmd_stress(const StressArgs& a) {
  auto config = load_stress_config(a.file);
  if (!config) return report_error(a.json, kExitUsage, config.error().message);
  if (a.rounds) config->rounds = *a.rounds;
  if (a.duration_s) config->duration_s = *a.duration_s;
  if (a.rounds && !a.duration_s) config->duration_s = 0;  // --rounds alone: exactly that many
  if (a.duration_s && !a.rounds) config->rounds = 0;
  if (a.seed) config->seed = *a.seed;
  if (config->seed == 0) config->seed = random_stress_seed();
  if (config->rounds == 0 && config->duration_s == 0)
    return report_error(a.json, kExitUsage, "--rounds 0 with --duration 0 would never end");
  auto kvm = Kvm::open();
  if (!kvm) return report_error(a.json, kExitHost, kvm.error().message);
  auto file = MemoryFile::create(memory_file_options_for(config->vms_per_round * config->vm_memory));
  if (!file) return report_error(a.json, kExitHost, file.error().message);
  const bool tty = isatty(2);
  uint64_t printed_round = 0;
  auto progress = [&](const StressProgress& p) {
    auto gib = [](uint64_t b) { return static_cast<double>(b) / (1ull << 30); };
    auto mib = [](uint64_t b) { return static_cast<double>(b) / (1ull << 20); };
    std::string line = fmt::format(
        "round {}{} | {} VMs | written {:.2f} GiB, freed {:.2f}, reclaimed {:.2f} | commit {:.0f} MiB (peak {:.0f}{}) | {:.0f} s",
        p.round, config->rounds ? fmt::format("/{}", config->rounds) : std::string(), p.vms_booted,
        gib(p.bytes_written), gib(p.bytes_freed), gib(p.bytes_reclaimed), mib(p.commit_bytes),
        mib(p.peak_commit_bytes), config->commit_budget ? fmt::format(" of {:.0f}", mib(config->commit_budget)) : "",
        p.elapsed_s);
    if (tty) {
      // The bar fills with rounds done, or with time when only a duration bounds the run.
      const double frac = std::min(1.0, config->rounds ? static_cast<double>(p.round) / static_cast<double>(config->rounds)
                                                       : p.elapsed_s / static_cast<double>(config->duration_s));
      const int filled = static_cast<int>(frac * 20);
      std::fprintf(stderr, "\r\033[K[%s%s] %s", std::string(static_cast<size_t>(filled), '#').c_str(),
                   std::string(static_cast<size_t>(20 - filled), '.').c_str(), line.c_str());
    } else if (p.round != printed_round) {
      printed_round = p.round;
      std::fprintf(stderr, "%s\n", line.c_str());
    }
  };
  if (!a.json || tty)
    std::fprintf(stderr, "stress: %s, seed %llu (replay with --seed %llu)\n", a.file.c_str(),
                 static_cast<unsigned long long>(config->seed), static_cast<unsigned long long>(config->seed));
  auto sum = run_stress(*kvm, **file, *config, progress);
  if (tty) std::fprintf(stderr, "\n");
  if (!sum) return report_error(a.json, kExitHost, sum.error().message);
  if (a.json)
    std::printf("%s\n", sum->to_json().dump().c_str());
  else
    std::printf("%s", sum->to_text().c_str());
  if (sum->exit_code() != 0 && !a.json)
    std::fprintf(stderr, "kvmem: stress failed; replay with --seed %llu\n", static_cast<unsigned long long>(sum->seed));
  return sum->exit_code();
}

int main_impl(int argc, char** argv) {
  const auto start = Clock::now();
  CLI::App app{"kvmem: a small KVM VMM whose heart is its memory backend.\n"
               "Exit codes: 0 success, 1 the guest or a check failed, 2 bad usage or config,\n"
               "3 the host cannot run it.",
               "kvmem"};
  app.set_version_flag("--version", fmt::format("kvmem {} (hypercall ABI {})", kVersion, abi::kVersion));
  app.require_subcommand(1);

  std::string run_file, validate_file;
  bool run_json = false, validate_json = false;
  auto* run = app.add_subcommand("run", "Boot the VM (or VMs) a JSON config describes and run them to their end");
  run->add_option("FILE", run_file, "the config: one VM, or {\"vms\": [...]} (see docs/config.md)")->required();
  run->add_flag("--json", run_json, "print one JSON report on stdout instead of the console text");
  auto* validate = app.add_subcommand("validate", "Check a VM, many-VM or stress config (and assemble its programs) without running it");
  validate->add_option("FILE", validate_file, "the VM config")->required();
  validate->add_flag("--json", validate_json, "print the result as JSON");

  StressArgs stress_args;
  auto* stress = app.add_subcommand(
      "stress", "Rounds of VMs that write, free and verify memory at random; nothing may be lost and commit must "
                "come back down");
  stress->add_option("FILE", stress_args.file, "the stress config (see docs/config.md)")->required();
  stress->add_flag("--json", stress_args.json, "print one JSON summary on stdout");
  stress->add_option("--rounds", stress_args.rounds, "run exactly this many rounds (overrides the config)");
  stress->add_option("--duration", stress_args.duration_s, "run for about this many seconds (overrides the config)");
  stress->add_option("--seed", stress_args.seed, "replay a run: the seed it printed");

  auto* bench = app.add_subcommand("bench", "Measure kvmem; each benchmark prints a table, or JSON lines with --json");
  bench->require_subcommand(1);
  BootBenchOptions boot_opts;
  bool boot_json = false;
  auto* boot = bench->add_subcommand(
      "boot", "Whole-process wall time and peak RSS of `kvmem run FILE`, over many runs");
  boot->add_option("FILE", boot_opts.config, "the config to run")->capture_default_str();
  boot->add_option("--runs", boot_opts.runs, "measured runs (after a few warm-up runs)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 100000u));
  boot->add_flag("--json", boot_json, "print one JSON object instead of the table");

  AllocBenchOptions alloc_opts;
  bool alloc_json = false;
  auto* alloc = bench->add_subcommand(
      "alloc", "The allocator: Allocate+DecRef pairs/s by live count, decommit vs raw fallocate, usage scans vs mincore");
  alloc->add_flag("--quick", alloc_opts.quick, "a short run with smaller sizes (a smoke check; not figures to quote)");
  alloc->add_flag("--json", alloc_json, "print one JSON object per line instead of the table");

  ReclaimBenchOptions reclaim_opts;
  bool reclaim_json = false;
  auto* reclaim = bench->add_subcommand(
      "reclaim", "Free-page reports (sync and async) from report to pages gone, against raw fallocate; and one report's latency");
  reclaim->add_flag("--quick", reclaim_opts.quick, "a small region (a smoke check; not figures to quote)");
  reclaim->add_flag("--json", reclaim_json, "print one JSON object per line instead of the table");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  if (*run) return cmd_run(run_file, run_json, start);
  if (*validate) return cmd_validate(validate_file, validate_json);
  if (*stress) return cmd_stress(stress_args);
  if (*reclaim) {
    auto rows = run_reclaim_bench(reclaim_opts);
    if (!rows) return report_error(reclaim_json, kExitHost, rows.error().message);
    if (reclaim_json)
      for (const auto& row : *rows) std::printf("%s\n", row.dump().c_str());
    else
      std::printf("%s", format_reclaim_bench(*rows).c_str());
    return kExitOk;
  }
  if (*alloc) {
    std::function<void(const std::string&)> progress;
    if (!alloc_json) progress = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    auto rows = run_alloc_bench(alloc_opts, progress);
    bool failed = false;
    for (const auto& row : rows) failed = failed || row.contains("error");
    if (alloc_json)
      for (const auto& row : rows) std::printf("%s\n", row.dump().c_str());
    else
      std::printf("%s", format_alloc_bench_table(rows).c_str());
    return failed ? kExitFailed : kExitOk;
  }
  if (*boot) {
    if (!boot_json) std::fprintf(stderr, "running %s %u times...\n", boot_opts.config.c_str(), boot_opts.runs);
    auto r = run_boot_bench(boot_opts);
    if (!r) return report_error(boot_json, kExitFailed, r.error().message);
    if (boot_json) std::printf("%s\n", r->dump().c_str());
    else std::printf("%s", format_boot_bench(*r).c_str());
    return kExitOk;
  }
  return kExitUsage;
}

}  // namespace
}  // namespace kvmem

int main(int argc, char** argv) { return kvmem::main_impl(argc, argv); }
