// `kvmem stress FILE`: rounds of VMs that write, free and verify at random.
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "cli/cli.h"
#include "config/stress_config.h"
#include "harness/interrupt.h"
#include "harness/report.h"
#include "harness/runner.h"
#include "harness/stress.h"
#include "memory/memory_file.h"
#include "vmm/kvm/kvm.h"

namespace kvmem::cli {
namespace {

class StressCommand : public Command {
 public:
  explicit StressCommand(CLI::App& app) {
    cmd_ = app.add_subcommand(
        "stress", "Rounds of VMs that write, free and verify memory at random; nothing may be lost and commit must "
                  "come back down");
    cmd_->add_option("FILE", file_, "the stress config (see docs/config.md)")->required();
    cmd_->add_flag("--json", json_, "print one JSON summary on stdout");
    cmd_->add_option("--rounds", rounds_, "run exactly this many rounds (overrides the config)")
        ->check(whole_number(0, kMaxStressRounds));
    cmd_->add_option("--duration", duration_s_, "run for about this many seconds (overrides the config)")
        ->check(whole_number(0, kMaxStressDurationS));
    cmd_->add_option("--seed", seed_, "replay a run: the seed it printed (0 picks one)")
        ->check(whole_number(0, UINT64_MAX));
    cmd_->add_option("--snapshot-dir", snapshot_dir_,
                     "where the config's snapshots go (made when missing; overrides \"snapshots\": {\"dir\"}); "
                     "without either, a new folder under $TMPDIR");
    cmd_->add_flag("--keep-snapshots", keep_snapshots_,
                   "keep each snapshot after its VM was restored and ran (the summary says where)");
  }

  int run(Clock::time_point) override {
    auto config = load_stress_config(file_);
    if (!config) return report_error(json_, kExitUsage, config.error().message);
    if (auto ok = check_stress_programs(*config); !ok)
      return report_error(json_, kExitUsage, ok.error().context(file_).message);
    if (rounds_) config->rounds = *rounds_;
    if (duration_s_) config->duration_s = *duration_s_;
    if (rounds_ && !duration_s_) config->duration_s = 0;  // --rounds alone: exactly that many
    if (duration_s_ && !rounds_) config->rounds = 0;
    if (seed_) config->seed = *seed_;
    if (!snapshot_dir_.empty()) config->snapshots.dir = snapshot_dir_;
    if (keep_snapshots_) config->snapshots.keep = true;
    if ((!snapshot_dir_.empty() || keep_snapshots_) && !config->snapshots.on())
      return report_error(json_, kExitUsage,
                          fmt::format("{}: --snapshot-dir and --keep-snapshots need \"snapshots\": "
                                      "{{\"probability\": P}} with P above 0 in the config",
                                      file_));
    if (config->seed == 0) config->seed = random_stress_seed();
    if (config->rounds == 0 && config->duration_s == 0) return report_error(json_, kExitUsage, never_ends());
    auto kvm = Kvm::open();
    if (!kvm) return report_error(json_, kExitHost, kvm.error().message);
    auto file = MemoryFile::create(memory_file_options_for(config->vms_per_round * config->vm_memory));
    if (!file) return report_error(json_, kExitHost, file.error().message);
    const bool tty = isatty(2);
    if (!json_ || tty)
      std::fprintf(stderr, "stress: %s, seed %llu (replay with --seed %llu)\n", file_.c_str(),
                   static_cast<unsigned long long>(config->seed), static_cast<unsigned long long>(config->seed));
    auto sum = run_stress(*kvm, **file, *config, progress_printer(*config, tty));
    if (tty) std::fprintf(stderr, "\n");
    if (StopRequests::process().requested())  // the seed, even with --json on a pipe
      std::fprintf(stderr, "kvmem: stress interrupted; seed %llu (replay with --seed %llu)\n",
                   static_cast<unsigned long long>(config->seed), static_cast<unsigned long long>(config->seed));
    // A program that cannot be assembled was refused above (exit 2), by
    // check_stress_programs; what is left is the host's (exit 3).
    if (!sum) return report_error(json_, kExitHost, sum.error().message);
    if (json_)
      print_json(stress_report(*sum));
    else
      std::printf("%s", terminal_safe(sum->to_text()).c_str());
    if (sum->exit_code() != 0 && !json_)
      std::fprintf(stderr, "kvmem: stress failed; replay with --seed %llu\n",
                   static_cast<unsigned long long>(sum->seed));
    return sum->exit_code();
  }

 private:
  // The progress line: redrawn in place on a terminal (cut to its width,
  // one column short so the cursor never wraps), one line per round elsewhere.
  static std::function<void(const StressProgress&)> progress_printer(const StressConfig& config, bool tty) {
    return [config, tty, printed_round = uint64_t{0}](const StressProgress& p) mutable {
      if (tty) {
        const size_t width = terminal_width(2);
        std::fprintf(stderr, "\r\033[K%s", format_progress_line(p, config, width > 1 ? width - 1 : 0, true).c_str());
      } else if (p.round != printed_round) {
        printed_round = p.round;
        std::fprintf(stderr, "%s\n", format_progress_line(p, config, 0, false).c_str());
      }
    };
  }

  // The terminal's columns (TIOCGWINSZ), else $COLUMNS, else 80.
  static size_t terminal_width(int fd) {
    winsize ws{};
    if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    if (const char* c = std::getenv("COLUMNS")) {
      const size_t n = std::strtoul(c, nullptr, 10);
      if (n > 0 && n < 10000) return n;
    }
    return 80;
  }

  // Why a run with neither a round limit nor a time limit was asked for,
  // in terms of what the user passed.
  std::string never_ends() const {
    if (rounds_ && duration_s_) return "--rounds 0 with --duration 0 would never end";
    if (rounds_) return "--rounds 0 alone sets no limit at all: give 1 or more rounds, or --duration";
    return "--duration 0 alone sets no limit at all: give 1 or more seconds, or --rounds";
  }

  std::string file_;
  bool json_ = false;
  std::optional<uint64_t> rounds_, duration_s_, seed_;
  std::string snapshot_dir_;
  bool keep_snapshots_ = false;
};

}  // namespace

std::unique_ptr<Command> add_stress_command(CLI::App& app) { return std::make_unique<StressCommand>(app); }

}  // namespace kvmem::cli
