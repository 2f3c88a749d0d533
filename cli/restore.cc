// `kvmem restore SNAPSHOT...`: resume VMs from their snapshots and run
// them to their end, with run's report and exit codes (a damaged snapshot:
// 2). Every snapshot is opened, checked and made into a VM before any of
// them runs; then they run at once, each on a thread of its own.
#include <cstdio>
#include <functional>
#include <thread>

#include "base/thread.h"
#include "cli/cli.h"
#include "harness/interrupt.h"
#include "harness/report.h"
#include "harness/runner.h"
#include "harness/snapshot.h"
#include "vmm/kvm/kvm.h"

namespace kvmem::cli {
namespace {

nlohmann::json restore_json(const RestoredVm& r, const std::string& path) {
  nlohmann::json j = {{"snapshot", path},
                      {"mode", restore_mode_name(r.mode)},
                      {"restore_ms", r.restore_ms},
                      {"snapshot_bytes", r.snapshot_bytes},
                      {"extents", r.load.extents},
                      {"bytes", r.load.bytes},
                      {"files", r.files_restored}};
  // What the VM did before its snapshot: the report's console and counters
  // are the restored run's alone.
  const SnapshotDevices& b = r.before;
  j["before"] = {{"console", b.console.text},
                 {"console_dropped_bytes", b.console.dropped},
                 {"free_reports", b.frees.reports},
                 {"free_ranges", b.frees.ranges},
                 {"free_ranges_invalid", b.frees.invalid_ranges},
                 {"bytes_reported_free", b.frees.bytes_reported},
                 {"bytes_decommitted", b.frees.bytes_decommitted}};
  if (!r.lazy) return j;
  const LazyStats l = r.lazy_stats();
  j["lazy"] = {{"faults", l.faults},
               {"zero_faults", l.zero_faults},
               {"extents_on_demand", l.extents_on_demand},
               {"bytes_on_demand", l.bytes_on_demand},
               {"extents_filled", l.extents_filled},
               {"bytes_filled", l.bytes_filled},
               {"bytes_forgotten", l.bytes_forgotten},
               {"fill_ms", l.fill_ms},
               {"fill_busy_ms", l.fill_busy_ms},
               {"wait_ms", l.wait_ms},
               {"complete", l.complete},
               {"error", l.error.empty() ? nlohmann::json() : nlohmann::json(l.error)}};
  return j;
}

std::string restore_line(const RestoredVm& r) {
  const std::string files =
      r.files_restored ? fmt::format(", {} file{}", r.files_restored, r.files_restored == 1 ? "" : "s") : "";
  if (!r.lazy)
    return fmt::format("restored {} eagerly in {:.1f} ms ({} extents, {:.1f} MiB{})", r.config.name, r.restore_ms,
                       r.load.extents, static_cast<double>(r.load.bytes) / (1 << 20), files);
  const LazyStats l = r.lazy_stats();
  return fmt::format(
      "restored {} lazily: running after {:.1f} ms{}; {} faults ({} zero), {:.1f} MiB waited for, {:.1f} MiB "
      "filled behind it{}",
      r.config.name, r.restore_ms, files.empty() ? "" : fmt::format(" ({} restored first)", files.substr(2)), l.faults, l.zero_faults, static_cast<double>(l.bytes_on_demand) / (1 << 20),
      static_cast<double>(l.bytes_filled) / (1 << 20),
      l.complete ? fmt::format(" in {:.1f} ms", l.fill_ms) : std::string(" (not finished)"));
}

class RestoreCommand : public Command {
 public:
  explicit RestoreCommand(CLI::App& app) {
    cmd_ = app.add_subcommand("restore",
                              "Resume VMs from their snapshots (written by run --snapshot-to) right after their "
                              "snapshot step, and run them to their end, all at once (docs/snapshot.md)");
    cmd_->add_option("SNAPSHOT", paths_, "snapshot files, DIR/<vm name>.kvmsnap; one VM each")->required();
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
    // Every snapshot is checked and made into a VM before any runs.
    std::vector<RestoredVm> vms;
    for (const std::string& path : paths_) {
      RestoredVm r = restore_snapshot(*kvm, path, options);
      if (r.exit_code) return report_error(json_, r.exit_code, r.error);
      for (const RestoredVm& other : vms)
        if (other.config.name == r.config.name)
          return report_error(json_, kExitUsage,
                              fmt::format("snapshots {} and another both hold a VM named \"{}\"; names must differ",
                                          path, r.config.name));
      vms.push_back(std::move(r));
    }
    RunTotals totals;
    totals.vms.resize(vms.size());
    ConsoleEcho console(vms.size() > 1);  // several VMs: whole lines, each behind its VM's name
    auto echo_for = [&](const std::string& name) -> std::function<void(std::string_view)> {
      if (json_) return {};
      return [&console, name](std::string_view text) { console(name, text); };
    };
    auto run_one = [&](size_t i) {
      RestoredVm& r = vms[i];
      VmOutcome& out = totals.vms[i];
      out.name = r.config.name;
      out.memory_bytes = r.config.memory;
      out.backing = r.config.backing;
      {
        StopRegistration stoppable(*r.vm);  // a signal stops it (harness/interrupt.h)
        out.result = r.vm->run(echo_for(out.name));
      }
      if (r.lazy) r.lazy->stop();
      record_memory(*r.vm, out);
    };
    std::vector<std::thread> threads;
    for (size_t i = 1; i < vms.size(); i++) {
      auto t = start_thread(fmt::format("the thread of VM {}", vms[i].config.name), [&run_one, i] { run_one(i); });
      if (t) {
        threads.push_back(std::move(*t));
        continue;
      }
      VmOutcome& out = totals.vms[i];
      out.name = vms[i].config.name;
      out.setup_error = t.error().message;
    }
    run_one(0);
    for (auto& t : threads) t.join();
    for (const RestoredVm& r : vms)
      if (r.files)
        for (FileOutcome& f : file_outcomes(*r.files)) totals.files.push_back(std::move(f));
    totals.wall_ms = ms_since(start);
    if (json_) {
      nlohmann::json report = run_report(totals);
      for (size_t i = 0; i < vms.size(); i++) report["vms"][i]["restore"] = restore_json(vms[i], paths_[i]);
      print_json(report);
      return totals.exit_code();
    }
    console.flush();
    for (size_t i = 0; i < vms.size(); i++) {
      const VmOutcome& out = totals.vms[i];
      const std::string& why = out.setup_error.empty() ? out.result.message : out.setup_error;
      if (!why.empty()) std::fprintf(stderr, "kvmem: %s: %s\n", out.name.c_str(), terminal_safe(why).c_str());
      std::fprintf(stderr, "kvmem: %s\n", restore_line(vms[i]).c_str());
    }
    return totals.exit_code();
  }

 private:
  std::vector<std::string> paths_;
  bool eager_ = false, lazy_ = false, json_ = false;
};

}  // namespace

std::unique_ptr<Command> add_restore_command(CLI::App& app) { return std::make_unique<RestoreCommand>(app); }

}  // namespace kvmem::cli
