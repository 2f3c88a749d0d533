// SIGINT, SIGTERM and SIGHUP stop the VMs, report what ran (with the stress
// seed) and exit 128 + the signal.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/cli/cli_support.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Starts kvmem with args, sends `sig` after `delay`, and waits for it.
test::CommandResult run_and_signal(std::vector<std::string> args, int sig, std::chrono::milliseconds delay) {
  char out_path[] = "/tmp/kvmem-sig-out-XXXXXX", err_path[] = "/tmp/kvmem-sig-err-XXXXXX";
  const int out = mkstemp(out_path), err = mkstemp(err_path);
  REQUIRE(out >= 0);
  REQUIRE(err >= 0);
  args.insert(args.begin(), test::kvmem_binary());
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(out, 1);
    dup2(err, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  std::this_thread::sleep_for(delay);
  kill(pid, sig);
  int status = 0;
  waitpid(pid, &status, 0);
  test::CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  close(out);
  close(err);
  unlink(out_path);
  unlink(err_path);
  return r;
}

}  // namespace

TEST_CASE("a signal during run stops the VMs, reports them and exits 128 + the signal", "[cli][kvm]") {
  REQUIRE_KVM();
  test::TempConfig spin(R"({"vms": [{"name": "a", "memory": "4M", "timeout_ms": 60000, "program": [{"op": "fault", "kind": "spin"}]},
                                   {"name": "b", "memory": "4M", "timeout_ms": 60000, "program": [{"op": "fault", "kind": "spin"}]}]})");
  for (auto [sig, code] : {std::pair{SIGINT, 130}, std::pair{SIGTERM, 143}, std::pair{SIGHUP, 129}}) {
    INFO("signal " << sig);
    const auto start = std::chrono::steady_clock::now();
    auto r = run_and_signal({"run", "--json", spin.path()}, sig, std::chrono::milliseconds(700));
    INFO(r.err);
    CHECK(r.exit_code == code);
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(20));  // not the 60 s watchdog
    const json report = json::parse(r.out);
    REQUIRE(report["vms"].size() == 2);
    for (const json& vm : report["vms"]) CHECK(vm["message"].get<std::string>().find("stopped by SIG") != std::string::npos);
    CHECK(report["memory"]["committed_bytes_after"] == 0);  // the memory went back
  }
}

TEST_CASE("a signal during stress prints the summary with the seed, on the JSON path too", "[cli][stress][kvm]") {
  REQUIRE_KVM();
  auto r = run_and_signal({"stress", "--json", "configs/stress-quick.json", "--duration", "600", "--seed", "12345"},
                          SIGINT, std::chrono::milliseconds(1500));
  INFO(r.err);
  CHECK(r.exit_code == 130);
  CHECK(r.err.find("seed 12345") != std::string::npos);
  const json sum = json::parse(r.out);
  CHECK(sum["seed_string"] == "12345");
  CHECK(sum["final_commit_bytes"] == 0);
}
