// `kvmem restore SNAPSHOT`: resume a VM from its snapshot and run it to its
// end, with run's report and exit codes (a damaged snapshot: 2).
#include <cstdio>

#include "cli/cli.h"
#include "harness/report.h"
#include "harness/runner.h"
#include "harness/snapshot.h"
#include "vmm/kvm/kvm.h"

namespace kvmem::cli {
namespace {

class RestoreCommand : public Command {
 public:
  explicit RestoreCommand(CLI::App& app) {
    cmd_ = app.add_subcommand("restore",
                              "Resume a VM from a snapshot (written by run --snapshot-to) right after its snapshot "
                              "step, and run it to its end (docs/snapshot.md)");
    cmd_->add_option("SNAPSHOT", path_, "the snapshot file, DIR/<vm name>.kvmsnap")->required();
    auto* eager = cmd_->add_flag("--eager", eager_, "read all of RAM back before the guest starts (the default)");
    auto* lazy = cmd_->add_flag("--lazy", lazy_,
                                "start the guest at once and serve RAM as it touches it (userfaultfd), while a "
                                "background thread fills the rest; memfd and memfd-thp RAM only");
    eager->excludes(lazy);
    cmd_->add_flag("--json", json_, "print one JSON report on stdout instead of the console text");
  }

  int run(Clock::time_point start) override {
    auto kvm = Kvm::open();
    if (!kvm) return report_error(json_, kExitHost, kvm.error().message);
    RestoreOptions options;
    options.mode = lazy_ ? RestoreMode::kLazy : RestoreMode::kEager;
    RestoredVm r = restore_snapshot(*kvm, path_, options);
    if (r.exit_code) return report_error(json_, r.exit_code, r.error);
    RunTotals totals;
    VmOutcome& out = totals.vms.emplace_back();
    out.name = r.config.name;
    out.memory_bytes = r.config.memory;
    out.backing = r.config.backing;
    TerminalText console;
    std::function<void(std::string_view)> echo;
    if (!json_) echo = [&console](std::string_view text) { write_stdout(console.feed(text)); };
    out.result = r.vm->run(echo);
    if (r.lazy) r.lazy->stop();
    const LazyStats lazy = r.lazy_stats();
    record_memory(*r.vm, out);
    totals.wall_ms = ms_since(start);
    if (json_) {
      nlohmann::json report = run_report(totals);
      report["restore"] = {{"mode", restore_mode_name(options.mode)},
                           {"restore_ms", r.restore_ms},
                           {"snapshot_bytes", r.snapshot_bytes},
                           {"extents", r.load.extents},
                           {"bytes", r.load.bytes}};
      if (r.lazy)
        report["restore"]["lazy"] = {{"faults", lazy.faults},
                                     {"zero_faults", lazy.zero_faults},
                                     {"extents_on_demand", lazy.extents_on_demand},
                                     {"bytes_on_demand", lazy.bytes_on_demand},
                                     {"extents_filled", lazy.extents_filled},
                                     {"bytes_filled", lazy.bytes_filled},
                                     {"bytes_forgotten", lazy.bytes_forgotten},
                                     {"fill_ms", lazy.fill_ms},
                                     {"fill_busy_ms", lazy.fill_busy_ms},
                                     {"wait_ms", lazy.wait_ms},
                                     {"complete", lazy.complete},
                                     {"error", lazy.error.empty() ? nlohmann::json() : nlohmann::json(lazy.error)}};
      print_json(report);
      return totals.exit_code();
    }
    write_stdout(console.finish());
    if (!out.result.message.empty())
      std::fprintf(stderr, "kvmem: %s: %s\n", out.name.c_str(), terminal_safe(out.result.message).c_str());
    if (!r.lazy) {
      std::fprintf(stderr, "kvmem: restored %s eagerly in %.1f ms (%llu extents, %.1f MiB)\n", out.name.c_str(),
                   r.restore_ms, static_cast<unsigned long long>(r.load.extents),
                   static_cast<double>(r.load.bytes) / (1 << 20));
    } else {
      std::fprintf(stderr,
                   "kvmem: restored %s lazily: running after %.1f ms; %llu faults (%llu zero), %.1f MiB waited for, "
                   "%.1f MiB filled behind it%s\n",
                   out.name.c_str(), r.restore_ms, static_cast<unsigned long long>(lazy.faults),
                   static_cast<unsigned long long>(lazy.zero_faults),
                   static_cast<double>(lazy.bytes_on_demand) / (1 << 20),
                   static_cast<double>(lazy.bytes_filled) / (1 << 20),
                   lazy.complete ? fmt::format(" in {:.1f} ms", lazy.fill_ms).c_str() : " (not finished)");
    }
    return totals.exit_code();
  }

 private:
  std::string path_;
  bool eager_ = false, lazy_ = false, json_ = false;
};

}  // namespace

std::unique_ptr<Command> add_restore_command(CLI::App& app) { return std::make_unique<RestoreCommand>(app); }

}  // namespace kvmem::cli
