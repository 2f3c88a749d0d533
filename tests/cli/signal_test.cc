// SIGINT, SIGTERM and SIGHUP stop the VMs, report what ran (with the stress
// seed) and exit 128 + the signal.
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
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

// The child's CPU time (user + system, all threads) in clock ticks, from
// /proc/PID/stat; -1 when it cannot be read. A guest's time counts as user.
long cpu_ticks(pid_t pid) {
  std::string stat = slurp(fmt::format("/proc/{}/stat", pid));
  const size_t paren = stat.rfind(')');  // the command name may hold spaces
  if (paren == std::string::npos) return -1;
  std::istringstream fields(stat.substr(paren + 2));
  std::string f;
  long utime = -1, stime = -1;
  for (int i = 3; fields >> f; i++) {  // field 3 is the state
    if (i == 14) utime = std::stol(f);
    if (i == 15) stime = std::stol(f);
  }
  return utime < 0 || stime < 0 ? -1 : utime + stime;
}

// Readiness signs, polled until they hold: the child is past starting its
// signal thread and is doing what the signal should interrupt.
using ReadySign = std::function<bool(pid_t pid, const std::string& err_path)>;

// Spinning guests burn CPU: a quarter of a second of it means they run
// (setting up a small VM takes a few milliseconds of CPU).
bool guests_spinning(pid_t pid, const std::string&) {
  const long ticks = cpu_ticks(pid);
  return ticks >= 0 && ticks * 1000 / sysconf(_SC_CLK_TCK) >= 250;
}

// Stress prints a progress line to stderr once a round has begun.
bool stress_progressing(pid_t, const std::string& err_path) {
  return slurp(err_path).find("round ") != std::string::npos;
}

// Starts kvmem with args, waits until `ready` holds (up to 30 s, polling
// every 10 ms; it fails the test if it never does), sends `sig`, and waits
// for the child.
test::CommandResult run_and_signal(std::vector<std::string> args, int sig, const ReadySign& ready) {
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
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  bool was_ready = false;
  while (!(was_ready = ready(pid, err_path)) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(was_ready);
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
    auto r = run_and_signal({"run", "--json", spin.path()}, sig, guests_spinning);
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
                          SIGINT, stress_progressing);
  INFO(r.err);
  CHECK(r.exit_code == 130);
  CHECK(r.err.find("seed 12345") != std::string::npos);
  const json sum = json::parse(r.out);
  CHECK(sum["seed_string"] == "12345");
  CHECK(sum["final_commit_bytes"] == 0);
}
