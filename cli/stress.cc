// `kvmem stress FILE`: rounds of VMs that write, free and verify at random.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <optional>

#include "cli/cli.h"
#include "config/stress_config.h"
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
  }

  int run(Clock::time_point) override {
    auto config = load_stress_config(file_);
    if (!config) return report_error(json_, kExitUsage, config.error().message);
    if (rounds_) config->rounds = *rounds_;
    if (duration_s_) config->duration_s = *duration_s_;
    if (rounds_ && !duration_s_) config->duration_s = 0;  // --rounds alone: exactly that many
    if (duration_s_ && !rounds_) config->rounds = 0;
    if (seed_) config->seed = *seed_;
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
    // A host call's failure carries its errno (exit 3); without one the
    // config made a program that cannot be assembled (exit 2).
    if (!sum) return report_error(json_, sum.error().code ? kExitHost : kExitUsage, sum.error().message);
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
  // The progress line: redrawn in place on a terminal, one line per round elsewhere.
  static std::function<void(const StressProgress&)> progress_printer(const StressConfig& config, bool tty) {
    return [config, tty, printed_round = uint64_t{0}](const StressProgress& p) mutable {
      auto gib = [](uint64_t b) { return static_cast<double>(b) / (1ull << 30); };
      auto mib = [](uint64_t b) { return static_cast<double>(b) / (1ull << 20); };
      std::string line = fmt::format(
          "round {}{} | {} VMs | written {:.2f} GiB, freed {:.2f}, reclaimed {:.2f} | commit {:.0f} MiB (peak {:.0f}{}) "
          "| {:.0f} s",
          p.round, config.rounds ? fmt::format("/{}", config.rounds) : std::string(), p.vms_booted,
          gib(p.bytes_written), gib(p.bytes_freed), gib(p.bytes_reclaimed), mib(p.commit_bytes),
          mib(p.peak_commit_bytes), config.commit_budget ? fmt::format(" of {:.0f}", mib(config.commit_budget)) : "",
          p.elapsed_s);
      if (tty) {
        // The bar fills with rounds done, or with time when only a duration bounds the run.
        const double frac =
            std::min(1.0, config.rounds ? static_cast<double>(p.round) / static_cast<double>(config.rounds)
                                        : p.elapsed_s / static_cast<double>(config.duration_s));
        const int filled = static_cast<int>(frac * 20);
        std::fprintf(stderr, "\r\033[K[%s%s] %s", std::string(static_cast<size_t>(filled), '#').c_str(),
                     std::string(static_cast<size_t>(20 - filled), '.').c_str(), line.c_str());
      } else if (p.round != printed_round) {
        printed_round = p.round;
        std::fprintf(stderr, "%s\n", line.c_str());
      }
    };
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
};

}  // namespace

std::unique_ptr<Command> add_stress_command(CLI::App& app) { return std::make_unique<StressCommand>(app); }

}  // namespace kvmem::cli
