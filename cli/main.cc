// kvmem: the command line. This file holds the app and the dispatch; each
// subcommand lives in its own file (cli/cli.h).
#include <cstdio>
#include <memory>
#include <vector>

#include "cli/cli.h"
#include "guest/abi.h"

namespace kvmem::cli {
namespace {

constexpr const char* kVersion = "0.1.0";

int main_impl(int argc, char** argv) {
  const auto start = Clock::now();
  CLI::App app{"kvmem: a small KVM VMM whose heart is its memory backend.\n"
               "Exit codes: 0 success, 1 the guest or a check failed, 2 bad usage or config,\n"
               "3 the host cannot run it.",
               "kvmem"};
  app.set_version_flag("--version", fmt::format("kvmem {} (hypercall ABI {})", kVersion, abi::kVersion));
  app.require_subcommand(1);
  std::vector<std::unique_ptr<Command>> commands;
  commands.push_back(add_run_command(app));
  commands.push_back(add_validate_command(app));
  commands.push_back(add_stress_command(app));
  commands.push_back(add_bench_command(app));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  }
  for (const auto& c : commands)
    if (c->chosen()) return c->run(start);
  return kExitUsage;
}

}  // namespace
}  // namespace kvmem::cli

int main(int argc, char** argv) { return kvmem::cli::main_impl(argc, argv); }
