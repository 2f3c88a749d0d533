// kvmem: the command line.
//
// Exit codes (DESIGN.md): 0 success · 1 the guest or a check failed ·
// 2 bad usage or config · 3 the host cannot run it.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "guest/abi.h"
#include "memory/memory_file.h"
#include "vmm/bench_boot.h"
#include "vmm/config.h"
#include "vmm/kvm.h"
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

json run_report(const VmConfig& c, const RunResult& r, double wall_ms, const GuestMemory& memory) {
  json hc = json::object();
  for (uint32_t i = 0; i < abi::kHypercallCount; i++)
    if (r.hypercalls.calls[i]) hc[hypercall_name(i)] = r.hypercalls.calls[i];
  json j{{"name", c.name},
         {"exit_code", r.process_exit_code()},
         {"outcome", r.outcome_name()},
         {"console", r.console},
         {"exits", r.exits},
         {"hypercalls", hc},
         {"hypercalls_unknown", r.hypercalls.unknown},
         {"hypercalls_invalid", r.hypercalls.invalid},
         {"memory_bytes", c.memory},
         {"free_reports", r.free_reports},
         {"free_ranges", r.free_ranges},
         {"free_ranges_invalid", r.free_ranges_invalid},
         {"bytes_reported_free", r.bytes_reported_free},
         {"bytes_decommitted", r.bytes_decommitted},
         {"run_ms", r.run_ms},
         {"wall_ms", wall_ms}};
  if (r.outcome == RunResult::Outcome::kExited) j["guest_exit_code"] = r.guest_exit_code;
  if (auto resident = memory.resident_bytes()) j["guest_resident_bytes"] = *resident;
  if (!r.message.empty()) j["message"] = r.message;
  return j;
}

// Loads and assembles; on failure prints and returns the exit code.
struct Prepared {
  VmConfig config;
  guest::Image image;
};
Result<Prepared> prepare(const std::string& path) {
  auto config = load_config(path);
  if (!config) return std::unexpected(config.error());
  auto image = guest::build_program(config->program, abi::kProgramAddr, abi::kProgramEnd);
  if (!image) return std::unexpected(image.error().context(path));
  return Prepared{std::move(*config), std::move(*image)};
}

int cmd_validate(const std::string& path, bool as_json) {
  auto p = prepare(path);
  if (!p) return report_error(as_json, kExitUsage, p.error().message);
  if (as_json) {
    std::printf("%s\n", json{{"exit_code", 0},
                             {"name", p->config.name},
                             {"memory_bytes", p->config.memory},
                             {"steps", p->config.program.size()},
                             {"code_bytes", p->image.bytes.size()}}
                            .dump()
                            .c_str());
  } else {
    std::printf("%s: ok (vm %s, %llu MiB, %zu steps, %zu bytes of guest code)\n", path.c_str(),
                p->config.name.c_str(), static_cast<unsigned long long>(p->config.memory >> 20),
                p->config.program.size(), p->image.bytes.size());
  }
  return kExitOk;
}

int cmd_run(const std::string& path, bool as_json, Clock::time_point start) {
  auto p = prepare(path);
  if (!p) return report_error(as_json, kExitUsage, p.error().message);
  auto kvm = Kvm::open();
  if (!kvm) return report_error(as_json, kExitHost, kvm.error().message);
  auto file = MemoryFile::create();
  if (!file) return report_error(as_json, kExitHost, file.error().message);
  auto vm = Vm::create(*kvm, **file, p->config, p->image);
  if (!vm) return report_error(as_json, kExitHost, fmt::format("{}: {}", p->config.name, vm.error().message));
  std::function<void(std::string_view)> echo;
  if (!as_json)
    echo = [](std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    };
  RunResult r = (*vm)->run(echo);
  if (as_json) {
    std::printf("%s\n", run_report(p->config, r, ms_since(start), (*vm)->memory()).dump().c_str());
  } else if (!r.message.empty()) {
    std::fprintf(stderr, "kvmem: %s: %s\n", p->config.name.c_str(), r.message.c_str());
  }
  return r.process_exit_code();
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
  auto* run = app.add_subcommand("run", "Boot the guest a JSON config describes and run it to its end");
  run->add_option("FILE", run_file, "the VM config (see docs/config.md)")->required();
  run->add_flag("--json", run_json, "print one JSON report on stdout instead of the console text");
  auto* validate = app.add_subcommand("validate", "Check a config (and assemble its program) without running it");
  validate->add_option("FILE", validate_file, "the VM config")->required();
  validate->add_flag("--json", validate_json, "print the result as JSON");

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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  if (*run) return cmd_run(run_file, run_json, start);
  if (*validate) return cmd_validate(validate_file, validate_json);
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
