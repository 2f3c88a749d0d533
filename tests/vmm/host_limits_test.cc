// The host's limits are the host's: out of file descriptors or threads, a
// VM ends as kHost (exit 3) or its guest gets -EAGAIN, and kvmem never
// aborts. Limits are imposed in a forked child, so the test process keeps
// its own.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "base/thread.h"
#include "config/vm_config.h"
#include "guest/abi.h"
#include "guest/layout.h"
#include "harness/report.h"
#include "harness/runner.h"
#include "tests/support.h"
#include "tests/vmm/guest_runner.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

json config_with(json program) {
  return json{{"memory", "16M"}, {"timeout_ms", 10'000}, {"ram_unit", "2M"}, {"program", std::move(program)}};
}

// An async free: it sets up the free ring (an eventfd pair and a thread).
json async_free_program() {
  return config_with({{{"op", "fill"}, {"at", "2M"}, {"length", "2M"}, {"pattern", "address"}},
                      {{"op", "free"}, {"at", "2M"}, {"length", "2M"}, {"granule", "64K"}, {"mode", "async"}},
                      {{"op", "verify"}, {"at", "2M"}, {"length", "2M"}, {"pattern", "zero"}}});
}

struct ChildResult {
  int status = -1;     // the child's exit status, or 128 + signal
  std::string output;  // what fn returned
};

// Runs fn in a forked child and hands back what it returned.
ChildResult in_child(const std::function<std::string()>& fn) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  std::fflush(nullptr);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    std::string out;
    try {  // an exception must not run the rest of the tests in the child
      out = fn();
    } catch (const std::exception& e) {
      out = fmt::format("exception: {}", e.what());
    }
    (void)!write(fds[1], out.data(), out.size());
    _exit(0);
  }
  close(fds[1]);
  ChildResult r;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) r.output.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

// The lowest fd number not open: a limit of this many leaves no fd free.
rlim_t next_fd() {
  const int fd = dup(0);
  close(fd);
  return static_cast<rlim_t>(fd);
}

std::string describe(const RunResult& r) {
  return fmt::format("{} {} {} {}", r.outcome_name(), failure_kind_name(r.failure), r.process_exit_code(), r.message);
}

// Threads of this process.
rlim_t thread_count() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("Threads:", 0) == 0) return std::stoul(line.substr(8));
  return 0;
}

// Makes the host unable to start `spare` threads more than this process
// has: as nobody, whose processes RLIMIT_NPROC counts (root is exempt).
// KVM starts a worker task of the VM's owner on a VM's first KVM_RUN; a
// spare of 1 leaves room for it. Returns what failed, or an empty string.
std::string limit_threads(rlim_t spare) {
  const rlim_t n = thread_count() + spare;
  if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) return "setresuid";
  const rlimit lim{n, n};
  if (setrlimit(RLIMIT_NPROC, &lim) != 0) return "setrlimit";
  return {};
}

class TempConfig {
 public:
  explicit TempConfig(const json& config) {
    char tmpl[] = "/tmp/kvmem-limits-XXXXXX";
    const int fd = mkstemp(tmpl);
    REQUIRE(fd >= 0);
    close(fd);
    path_ = tmpl;
    std::ofstream(path_) << config.dump();
  }
  ~TempConfig() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace

TEST_CASE("a VM whose free ring finds the host out of fds ends as the host's failure, naming the limit",
          "[kvm][vm][limits][fork]") {
  REQUIRE_KVM();
#if defined(__SANITIZE_ADDRESS__)
  // UBSan's vptr check opens a pipe to probe memory, and with no fd left it
  // reports a false "invalid vptr" (vm.cc's ~Vm calling the ring device).
  WARN("skipped under the sanitizers: their runtime needs file descriptors of its own");
  return;
#endif
  ChildResult r = in_child([] {
    auto g = test::create_guest(async_free_program());
    if (!g.vm) return "setup: " + g.setup_error;
    const rlimit lim{next_fd(), next_fd()};
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0) return std::string("setrlimit");
    return describe(g.vm->run(nullptr));
  });
  REQUIRE(r.status == 0);
  CHECK(r.output ==
        "failed host 3 the host is out of file descriptors (eventfd: EMFILE); raise the limit with ulimit -n");
}

TEST_CASE("kvmem run under any fd limit exits 0 or 3, never blames the guest", "[kvm][vm][limits]") {
  REQUIRE_KVM();
  TempConfig cfg(async_free_program());
  bool ring_refused = false, ran = false;
  for (int n = 4; n <= 24 && !ran; n++) {
    auto r = test::run_command(
        {"/bin/sh", "-c", fmt::format("ulimit -n {} && exec {} run --json {}", n, test::kvmem_binary(), cfg.path())});
    INFO("ulimit -n " << n << ": exit " << r.exit_code << "\n" << r.out << r.err);
#if defined(__SANITIZE_ADDRESS__)
    // UBSan's vptr check opens a pipe to probe memory; without a free fd it
    // reports a false "invalid vptr". That is the sanitizer's fd, not ours.
    if (r.err.find("which does not point to an object of type") != std::string::npos) continue;
#endif
    REQUIRE((r.exit_code == 0 || r.exit_code == 3));
    CHECK(r.out.find("hypercall 6 returned") == std::string::npos);
    ring_refused |= r.out.find("the host is out of file descriptors (eventfd: EMFILE)") != std::string::npos;
    ran = r.exit_code == 0;
  }
  CHECK(ring_refused);  // some limit let the VM start and left the ring no fd
  CHECK(ran);
}

namespace {

const json& ring_refused_program() {
  static const json program = config_with(
      {{{"op", "hypercall"}, {"nr", abi::kHcFreeRingSetup}, {"args", {guest::layout::kFreeRingAddr, 1024}}, {"expect", "-EAGAIN"}},
       {{"op", "free"}, {"at", "2M"}, {"length", "2M"}, {"granule", "64K"}, {"mode", "sync"}},
       {{"op", "print"}, {"text", "still here"}}});
  return program;
}

}  // namespace

// Forked children: TSan cannot follow a multi-threaded fork, so [fork]
// tests stay out of make tsan.
TEST_CASE("a free ring whose thread cannot start under a thread limit answers -EAGAIN and the guest goes on",
          "[kvm][vm][limits][fork]") {
  REQUIRE_KVM();
  ChildResult r = in_child([&] {
    auto g = test::create_guest(ring_refused_program());
    if (!g.vm) return "setup: " + g.setup_error;
    if (std::string e = limit_threads(1); !e.empty()) return "cannot impose a thread limit: " + e;
    RunResult res = g.vm->run(nullptr);
    return describe(res) + "|" + res.console;
  });
  if (r.output.rfind("cannot impose", 0) == 0) {
    WARN(r.output);
    return;
  }
  CHECK(r.status == 0);
  CHECK(r.output == "exited none 0 |still here");
}

TEST_CASE("a free ring whose thread fails to start (injected) answers -EAGAIN", "[kvm][vm][limits][threads]") {
  REQUIRE_KVM();
  auto g = test::create_guest(ring_refused_program());
  REQUIRE(g.setup_error == "");
  fail_next_thread_starts(1);
  RunResult res = g.vm->run(nullptr);
  fail_next_thread_starts(0);
  INFO(res.message);
  CHECK(res.outcome == RunResult::Outcome::kExited);
  CHECK(res.console == "still here");
  CHECK(res.hypercalls.invalid == 1);
}

namespace {

// Two VMs that print their names, and a runner over a fresh file.
struct TwoVms {
  std::vector<VmConfig> configs;
  std::vector<guest::Image> images;
  std::unique_ptr<MemoryFile> file;
};

TwoVms two_vms() {
  TwoVms t;
  for (const char* name : {"a", "b"}) {
    json j = config_with({{{"op", "print"}, {"text", name}}});
    j["name"] = name;
    auto c = parse_vm_config(j, name);
    REQUIRE(c);
    auto img = guest::build(c->program, {.ram_bytes = c->memory});
    REQUIRE(img);
    t.configs.push_back(*c);
    t.images.push_back(*img);
  }
  auto file = MemoryFile::create(memory_file_options_for(32 << 20));
  REQUIRE(file);
  t.file = std::move(*file);
  return t;
}

}  // namespace

TEST_CASE("a VM the runner cannot start a thread for is not started, as the host's failure, and the rest run",
          "[kvm][vm][limits][threads]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  TwoVms v = two_vms();
  fail_next_thread_starts(2);  // the commit sampler's thread, then VM a's
  RunTotals t = run_vms(*kvm, *v.file, v.configs, v.images, nullptr);
  fail_next_thread_starts(0);
  const VmOutcome& a = t.vms[0];
  INFO(a.setup_error);
  CHECK(a.setup_error == "cannot start the thread of VM a: pthread_create: EAGAIN (Resource temporarily unavailable)");
  CHECK(a.result.failure == FailureKind::kHost);
  CHECK(a.exit_code() == 3);
  CHECK(vm_report(a)["outcome"] == "not_started");
  CHECK(t.vms[1].setup_error == "");
  CHECK(t.vms[1].result.console == "b");
  CHECK(t.exit_code() == 3);
}

TEST_CASE("VMs under a thread limit are not started, and nothing aborts", "[kvm][vm][limits][fork]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  TwoVms v = two_vms();  // the file's reclaimer thread starts before the limit
  ChildResult r = in_child([&] {
    if (std::string e = limit_threads(0); !e.empty()) return "cannot impose a thread limit: " + e;
    RunTotals t = run_vms(*kvm, *v.file, v.configs, v.images, nullptr);
    return fmt::format("{} {} {}", t.exit_code(), vm_report(t.vms[0])["outcome"].get<std::string>(),
                       vm_report(t.vms[1])["outcome"].get<std::string>());
  });
  if (r.output.rfind("cannot impose", 0) == 0) {
    WARN(r.output);
    return;
  }
  CHECK(r.status == 0);
  CHECK(r.output == "3 not_started not_started");
}
