// `kvmem run FILE`: boot the VMs of a config and run them to their end.
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>

#include "cli/cli.h"
#include "harness/files.h"
#include "harness/memory_limit.h"
#include "harness/report.h"
#include "harness/runner.h"
#include "memory/host_limits.h"
#include "memory/memory_file.h"
#include "vmm/kvm/kvm.h"

namespace kvmem::cli {
namespace {

class RunCommand : public Command {
 public:
  explicit RunCommand(CLI::App& app) {
    cmd_ = app.add_subcommand("run", "Boot the VM (or VMs) a JSON config describes and run them to their end");
    cmd_->add_option("FILE", file_, "the config: one VM, or {\"vms\": [...]} (see docs/config.md)")->required();
    cmd_->add_flag("--json", json_, "print one JSON report on stdout instead of the console text");
    cmd_->add_option("--snapshot-to", snapshot_dir_,
                     "a folder where each VM's snapshot steps write it, as DIR/<vm name>.kvmsnap (kvmem restore "
                     "resumes it); without it snapshot steps do nothing")
        ->check(CLI::ExistingDirectory);
  }

  int run(Clock::time_point start) override {
    auto p = prepare(file_);
    if (!p) return report_error(json_, kExitUsage, p.error().message);
    auto kvm = Kvm::open();
    if (!kvm) return report_error(json_, kExitHost, kvm.error().message);
    // Under a memory cgroup, refuse what cannot fit, and keep the rest under it.
    auto limit = host_memory_limit();
    if (!limit) return report_error(json_, kExitHost, limit.error().message);
    if (auto s = check_run_fits(*limit, p->config.vms); !s) return report_error(json_, kExitHost, s.error().message);
    uint64_t guest_bytes = 0;
    for (const VmConfig& vm : p->config.vms) guest_bytes += vm.memory;
    auto file = MemoryFile::create(memory_file_options_for(guest_bytes + file_bytes(p->config.files)));
    if (!file) return report_error(json_, kExitHost, file.error().message);
    auto files = make_files(**file, p->config.files);
    if (!files) return report_error(json_, kExitHost, files.error().message);
    ConsoleEcho console(p->config.vms.size() > 1);
    std::function<void(std::string_view, std::string_view)> echo;
    if (!json_) echo = [&console](std::string_view vm, std::string_view text) { console(vm, text); };
    RunTotals totals = run_vms(*kvm, **file, p->config.vms, p->images, echo, RunOptions{*limit, 5, files->get(), snapshot_dir_});
    totals.wall_ms = ms_since(start);
    if (json_) {
      print_json(run_report(totals));
      return totals.exit_code();
    }
    console.flush();
    print_summary(totals);
    return totals.exit_code();
  }

 private:
  // Why each VM failed, and with several VMs how many succeeded (stderr).
  static void print_summary(const RunTotals& totals) {
    for (const VmOutcome& v : totals.vms) {
      const std::string& why = v.setup_error.empty() ? v.result.message : v.setup_error;
      if (!why.empty()) std::fprintf(stderr, "kvmem: %s: %s\n", v.name.c_str(), terminal_safe(why).c_str());
    }
    if (totals.vms.size() > 1) {
      size_t ok = 0;
      for (const VmOutcome& v : totals.vms) ok += v.exit_code() == 0;
      std::fprintf(stderr, "kvmem: %zu of %zu VMs succeeded; peak commit %.1f MiB, %.1f MiB after reclaim\n", ok,
                   totals.vms.size(), static_cast<double>(totals.peak_committed_bytes) / (1 << 20),
                   static_cast<double>(totals.host_committed_bytes_after) / (1 << 20));
    }
  }

  std::string file_;
  std::string snapshot_dir_;
  bool json_ = false;
};

}  // namespace

std::unique_ptr<Command> add_run_command(CLI::App& app) { return std::make_unique<RunCommand>(app); }

}  // namespace kvmem::cli
