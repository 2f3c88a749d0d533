// kvmem: the command line. This file holds the app and the dispatch; each
// subcommand lives in its own file (cli/cli.h).
#include <signal.h>

#include <csignal>
#include <cstdio>
#include <memory>
#include <vector>

#include "cli/cli.h"
#include "config/fields.h"
#include "guest/abi.h"
#include "harness/interrupt.h"

namespace kvmem::cli {
namespace {

constexpr const char* kVersion = "0.1.0";

int main_impl(int argc, char** argv) {
  const auto start = Clock::now();
  // A reader that goes away (`kvmem run ... | head`) must not kill the run
  // with SIGPIPE: writes fail with EPIPE instead, the output stops
  // (cli/common.cc), and the run ends with its own exit code.
  std::signal(SIGPIPE, SIG_IGN);
  // Before any other thread: SIGINT, SIGTERM and SIGHUP stop the VMs
  // (harness/interrupt.h). A host that cannot give us a thread is exit 3.
  if (auto st = start_signal_thread(); !st) {
    std::fprintf(stderr, "kvmem: %s\n", st.error().message.c_str());
    return kExitHost;
  }
  CLI::App app{"kvmem: a small KVM VMM whose heart is its memory backend.\n"
               "Exit codes: 0 success, 1 the guest or a check failed, 2 bad usage or config,\n"
               "3 the host cannot run it; 128 + N when signal N (INT, TERM, HUP) stopped it.",
               "kvmem"};
  app.set_version_flag("--version", fmt::format("kvmem {} (hypercall ABI {})", kVersion, abi::kVersion));
  app.require_subcommand(1);
  std::vector<std::unique_ptr<Command>> commands;
  commands.push_back(add_run_command(app));
  commands.push_back(add_restore_command(app));
  commands.push_back(add_validate_command(app));
  commands.push_back(add_stress_command(app));
  commands.push_back(add_bench_command(app));
  commands.push_back(add_fs_command(app));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  for (const auto& c : commands) {
    if (!c->chosen()) continue;
    const int code = c->run(start);
    // Stopped by a signal: what ran was reported; the code says which signal.
    if (const int sig = StopRequests::process().requested()) return 128 + sig;
    return code;
  }
  return kExitUsage;
}

}  // namespace
}  // namespace kvmem::cli

// The last net: no exception leaves main. The config parsers catch the JSON
// library's own, so one arriving here is a reader that missed it (exit 2,
// as it came from a config); anything else is a bug or the host.
int main(int argc, char** argv) {
  using namespace kvmem::cli;
  try {
    return main_impl(argc, argv);
  } catch (const nlohmann::json::exception& e) {
    std::fprintf(stderr, "kvmem: %s\n", kvmem::json_fields::library_error(e).message.c_str());
    return kExitUsage;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "kvmem: out of memory\n");
    return kExitHost;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvmem: internal error: %s\n", e.what());
    return kExitFailed;
  } catch (...) {
    std::fprintf(stderr, "kvmem: internal error: an unknown exception\n");
    return kExitFailed;
  }
}
