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
    auto* lazy = cmd_->add_flag("--lazy", lazy_, "serve RAM as the guest touches it (not built yet: refused)");
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
    record_memory(*r.vm, out);
    if (r.files) totals.files = file_outcomes(*r.files);
    totals.wall_ms = ms_since(start);
    if (json_) {
      nlohmann::json report = run_report(totals);
      const SnapshotDevices& b = r.before;
      report["restore"] = {{"mode", restore_mode_name(options.mode)},
                           {"restore_ms", r.restore_ms},
                           {"snapshot_bytes", r.snapshot_bytes},
                           {"extents", r.load.extents},
                           {"bytes", r.load.bytes},
                           {"files", r.files_restored},
                           // What the VM did before its snapshot: the
                           // report's console and counters are the
                           // restored run's alone.
                           {"before",
                            {{"console", b.console.text},
                             {"console_dropped_bytes", b.console.dropped},
                             {"free_reports", b.frees.reports},
                             {"free_ranges", b.frees.ranges},
                             {"free_ranges_invalid", b.frees.invalid_ranges},
                             {"bytes_reported_free", b.frees.bytes_reported},
                             {"bytes_decommitted", b.frees.bytes_decommitted}}}};
      print_json(report);
      return totals.exit_code();
    }
    write_stdout(console.finish());
    if (!out.result.message.empty())
      std::fprintf(stderr, "kvmem: %s: %s\n", out.name.c_str(), terminal_safe(out.result.message).c_str());
    std::fprintf(stderr, "kvmem: restored %s eagerly in %.1f ms (%llu extents, %.1f MiB%s)\n", out.name.c_str(),
                 r.restore_ms, static_cast<unsigned long long>(r.load.extents),
                 static_cast<double>(r.load.bytes) / (1 << 20),
                 r.files_restored ? fmt::format(", {} file{}", r.files_restored, r.files_restored == 1 ? "" : "s").c_str()
                                  : "");
    return totals.exit_code();
  }

 private:
  std::string path_;
  bool eager_ = false, lazy_ = false, json_ = false;
};

}  // namespace

std::unique_ptr<Command> add_restore_command(CLI::App& app) { return std::make_unique<RestoreCommand>(app); }

}  // namespace kvmem::cli
