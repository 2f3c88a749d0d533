// A reader that goes away does not kill kvmem: SIGPIPE is ignored, EPIPE on
// stdout stops the output, and the exit code is the run's own.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/cli/cli_support.h"

namespace {

// Runs kvmem with stdout a pipe nobody reads (its read end closed before
// the start) and stderr discarded; returns the exit code, or 128 + signal.
int run_with_reader_gone(const std::vector<std::string>& args) {
  int p[2];
  REQUIRE(pipe(p) == 0);
  close(p[0]);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(p[1], 1);
    const int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 2);
    std::vector<std::string> all = args;
    all.insert(all.begin(), kvmem::test::kvmem_binary());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    signal(SIGPIPE, SIG_DFL);  // as a shell would start it
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(p[1]);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

TEST_CASE("run whose reader has gone still exits with the run's own code", "[cli][kvm]") {
  REQUIRE_KVM();
  CHECK(run_with_reader_gone({"run", "configs/hello.json"}) == 0);
  CHECK(run_with_reader_gone({"run", "--json", "configs/hello.json"}) == 0);
  CHECK(run_with_reader_gone({"run", "configs/many-vms.json"}) == 1);  // one of its VMs fails
}

TEST_CASE("validate whose reader has gone still exits with its own code", "[cli]") {
  CHECK(run_with_reader_gone({"validate", "configs/hello.json"}) == 0);
  CHECK(run_with_reader_gone({"validate", "--json", "/nonexistent.json"}) == 2);
}
