// What kvmem's subcommands share: exit codes, the way an error is reported,
// and the one way a JSON report reaches stdout.
//
// Each subcommand lives in its own file (run.cc, validate.cc, stress.cc,
// bench.cc, fs.cc) as a class that adds itself to the CLI::App in its constructor
// and runs when the user chose it; main.cc only parses and dispatches.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "config/vm_config.h"
#include "guest/program.h"
#include "harness/report.h"

namespace kvmem::cli {

// Exit codes (DESIGN.md): 0 success · 1 the guest or a check failed ·
// 2 bad usage or config · 3 the host cannot run it.
inline constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2, kExitHost = 3;

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t);

// Prints an error the human way (stderr: "kvmem: message", made
// terminal-safe: it may quote a config or a file name) or as the one JSON
// report ({"exit_code": code, "error": message} on stdout). Returns code.
int report_error(bool as_json, int code, const std::string& message);

// Writes bytes to stdout and flushes. Once a write fails (EPIPE: the
// reader left) nothing more is written; the run goes on regardless.
void write_stdout(std::string_view bytes);

// Console text to stdout; with several VMs each line starts with "[name] ".
// Guest bytes are untrusted: what reaches the reader is valid UTF-8 with
// control characters (but \n and \t) escaped, so a guest cannot drive the
// user's terminal. Safe from several VMs' threads at once.
class ConsoleEcho {
 public:
  explicit ConsoleEcho(bool prefix) : prefix_(prefix) {}
  void operator()(std::string_view vm, std::string_view text);
  // Writes what is still pending: an unfinished line of each VM.
  void flush();

 private:
  bool prefix_;
  std::mutex mu_;
  TerminalText raw_;                            // protected by mu_
  std::map<std::string, std::string> pending_;  // protected by mu_
};

// Prints one JSON report as one line on stdout, through dump_report()
// (harness/report.h): invalid UTF-8 is replaced, never thrown.
void print_json(const json& j);

// A CLI11 check for a whole number in [min, max], decimal digits only: "-1"
// (which CLI11 would read into a uint64_t as 2^64-1), "1e3" and numbers past
// 64 bits (which it would saturate) are refused with what was wrong.
CLI::Validator whole_number(uint64_t min, uint64_t max);

// A run config with every VM's program assembled (for run and validate);
// errors are the config's (exit 2) and start with the path.
struct Prepared {
  RunConfig config;
  std::vector<guest::Image> images;
};
Result<Prepared> prepare(const std::string& path);
Result<Prepared> assemble(RunConfig config, const std::string& path);

// One subcommand: it registers its options on construction and runs when
// the command line chose it.
class Command {
 public:
  virtual ~Command() = default;
  bool chosen() const { return cmd_ != nullptr && cmd_->parsed(); }
  virtual int run(Clock::time_point start) = 0;

 protected:
  CLI::App* cmd_ = nullptr;
};

std::unique_ptr<Command> add_run_command(CLI::App& app);
std::unique_ptr<Command> add_restore_command(CLI::App& app);
std::unique_ptr<Command> add_validate_command(CLI::App& app);
std::unique_ptr<Command> add_stress_command(CLI::App& app);
std::unique_ptr<Command> add_bench_command(CLI::App& app);
std::unique_ptr<Command> add_fs_command(CLI::App& app);

}  // namespace kvmem::cli
