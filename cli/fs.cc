// `kvmem fs replay [FILE|-]`: a JSON Lines script of operations on the
// tmpfs file layer, run without a guest; one JSON result per line on stdout
// (harness/fs_replay.h, docs/fs-replay.md).
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include "cli/cli.h"
#include "config/vm_config.h"
#include "harness/fs_replay.h"
#include "harness/interrupt.h"
#include "harness/report.h"
#include "memory/memory_file.h"

namespace kvmem::cli {
namespace {

constexpr const char* kReplayFooter =
    "Each line is one JSON object, {\"op\": ..., ...}: create, write, read, truncate, fallocate,\n"
    "add_seals, get_seals, stat, list, unlink, map, unmap, mwrite, mread (docs/fs-replay.md).\n"
    "Each prints one JSON line: {\"ok\":true,...}; {\"ok\":false,\"errno\":...,\"message\":...} when\n"
    "the layer refused it (\"signal\" too for a mapping access a real mmap would fault on);\n"
    "{\"ok\":false,\"error\":...} when the line was not run (malformed, or past a limit).\n"
    "Exit codes: 0 every line was well formed (refusals are results), 2 bad usage, an\n"
    "unreadable script, or any line not run, 3 the host cannot create the memory file,\n"
    "128 + N when signal N (INT, TERM, HUP) stopped it.";

class FsCommand : public Command {
 public:
  explicit FsCommand(CLI::App& app) {
    cmd_ = app.add_subcommand("fs", "The tmpfs file layer without a guest: replay a script of file operations");
    cmd_->require_subcommand(1);
    replay_ = cmd_->add_subcommand("replay", "Run a JSON Lines script of file operations, one JSON result per line");
    replay_->add_option("FILE", file_, "the script; - or nothing reads stdin")->type_name("FILE|-");
    replay_->add_option("--memory-limit", limit_text_,
                        "the memory the files may hold together, a power of two from 16M to 64G (default 1G); "
                        "past it an operation fails with ENOMEM")
        ->type_name("SIZE");
    replay_->add_flag("--check-invariants", check_, "check each touched file's invariants after every operation");
    replay_->footer(kReplayFooter);
  }

  int run(Clock::time_point) override {
    uint64_t limit = kFsReplayDefaultMemory;
    if (!limit_text_.empty()) {
      auto l = parse_size_string(limit_text_);
      if (!l) return report_error(false, kExitUsage, fmt::format("--memory-limit: {}", l.error().message));
      limit = *l;
    }
    if (auto s = check_fs_replay_memory(limit); !s)
      return report_error(false, kExitUsage, fmt::format("--memory-limit: {}", s.error().message));
    const bool from_stdin = file_.empty() || file_ == "-";
    const std::string what = from_stdin ? "stdin" : file_;
    const int fd = from_stdin ? 0 : open(file_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return report_error(false, kExitUsage, sys_fail("cannot read script " + what, "open", errno).error().message);
    auto memory = MemoryFile::create(fs_replay_memory_options(limit));
    if (!memory) {
      if (!from_stdin) close(fd);
      return report_error(false, kExitHost, memory.error().message);
    }
    const int code = replay(fd, what, **memory);
    if (!from_stdin) close(fd);
    return code;
  }

 private:
  int replay(int fd, const std::string& what, MemoryFile& memory) {
    FsReplay replay(memory, FsReplayOptions{.check_invariants = check_});
    FsReplayScript script(replay,
                          [](std::string_view result, std::string_view) { write_stdout(std::string(result) + "\n"); });
    static char buf[64 << 10];
    while (!StopRequests::process().requested()) {
      // A script on a pipe or a terminal may go quiet: wait for it in
      // slices, so that a signal stops the replay without more input.
      pollfd p{fd, POLLIN, 0};
      const int ready = poll(&p, 1, 100);
      if (ready == 0 || (ready < 0 && errno == EINTR)) continue;
      const ssize_t n = read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        script.finish();
        return report_error(false, kExitUsage, sys_fail("cannot read script " + what, "read", errno).error().message);
      }
      if (n == 0) break;
      script.feed(std::span<const char>(buf, static_cast<size_t>(n)));
    }
    // Stopped by a signal: what ran was printed; a line cut short is not run.
    if (StopRequests::process().requested()) return kExitOk;
    script.finish();
    const FsReplayCounts& c = replay.counts();
    if (c.errors == 0) return kExitOk;
    return report_error(false, kExitUsage,
                        fmt::format("{}: {} of {} lines not run (malformed or past a limit), the first line {}", what,
                                    c.errors, c.lines, c.first_error_line));
  }

  CLI::App* replay_ = nullptr;
  std::string file_;
  std::string limit_text_;
  bool check_ = false;
};

}  // namespace

std::unique_ptr<Command> add_fs_command(CLI::App& app) { return std::make_unique<FsCommand>(app); }

}  // namespace kvmem::cli
