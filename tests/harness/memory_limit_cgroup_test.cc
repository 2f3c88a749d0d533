// Under a real memory cgroup: a hungry VM is stopped before the kernel kills
// the process, the honest VMs beside it finish, and `kvmem run` refuses up
// front what cannot fit. Needs root and a memory controller (v1 or v2); skips
// with one loud line without them.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <optional>
#include <thread>

#include "guest/abi.h"
#include "harness/report.h"
#include "harness/runner.h"
#include "memory/host_limits.h"
#include "tests/support.h"

using namespace kvmem;
using guest::Pattern;
using guest::Step;
using json = nlohmann::json;

namespace {

constexpr uint64_t kMiB = 1ull << 20;

bool write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  f.flush();
  return static_cast<bool>(f);
}

// A memory cgroup of the test's own, below the process's own (v1) or beside
// it (v2, where a cgroup with processes cannot enable controllers for its
// children), with a limit. Removed when the test ends.
class TestCgroup {
 public:
  static std::optional<TestCgroup> make(uint64_t limit, std::string* why) {
    auto cgroups = host_memory_cgroups();
    if (!cgroups || cgroups->empty()) {
      *why = "this process is in no memory cgroup that can be found";
      return std::nullopt;
    }
    const std::string name = fmt::format("kvmem-test-{}", getpid());
    for (const MemoryCgroup& cg : *cgroups) {
      std::vector<std::string> parents{cg.dir};
      if (cg.v2 && cg.dir.size() > cg.mount.size()) parents.push_back(cg.dir.substr(0, cg.dir.find_last_of('/')));
      for (const std::string& parent : parents) {
        TestCgroup t(parent + "/" + name, cg.v2);
        if (mkdir(t.dir_.c_str(), 0755) != 0) {
          *why = fmt::format("cannot make {}: {}", t.dir_, errno_name(errno));
          t.dir_.clear();
          continue;
        }
        const char* file = cg.v2 ? "memory.max" : "memory.limit_in_bytes";
        if (write_file(t.dir_ + "/" + file, std::to_string(limit))) return t;
        *why = fmt::format("cannot set {}/{} (no memory controller there?)", t.dir_, file);
      }
    }
    return std::nullopt;
  }
  TestCgroup(TestCgroup&& o) noexcept : dir_(std::exchange(o.dir_, {})), v2_(o.v2_) {}
  ~TestCgroup() {
    if (dir_.empty()) return;
    // The processes in it have exited; the kernel may take a moment to let
    // go of the cgroup (EBUSY until it has).
    int err = 0;
    for (int i = 0; i < 250; i++) {
      if (rmdir(dir_.c_str()) == 0 || errno == ENOENT) return;
      err = errno;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::fprintf(stderr, "!!! cannot remove the test's cgroup %s: %s\n", dir_.c_str(), errno_name(err).c_str());
  }
  const std::string& dir() const { return dir_; }
  // Run in a child, before anything else: moves the calling process in.
  bool join() const { return write_file(dir_ + "/cgroup.procs", std::to_string(getpid())); }

 private:
  TestCgroup(std::string dir, bool v2) : dir_(std::move(dir)), v2_(v2) {}
  std::string dir_;
  bool v2_;
};

VmConfig vm_with(const std::string& name, uint64_t memory, std::vector<Step> program) {
  VmConfig c;
  c.name = name;
  c.memory = memory;
  c.timeout_ms = 60'000;
  c.program = std::move(program);
  return c;
}

Step fill(uint64_t at, uint64_t length, uint64_t seed) {
  return guest::Fill{at, length, Pattern{Pattern::Kind::kSeed, seed}};
}

// In the child: the run's report on `out`, then exit 0; 10 + n on a setup failure.
[[noreturn]] void child_runs(const TestCgroup& cg, int out) {
  if (!cg.join()) _exit(10);
  auto limit = host_memory_limit();
  if (!limit || limit->none()) _exit(11);
  auto kvm = Kvm::open();
  if (!kvm) _exit(12);
  auto file = MemoryFile::create(memory_file_options_for(4096 * kMiB));
  if (!file) _exit(13);
  // One VM would touch 1 GiB; three honest ones 16 MiB each, and they stay
  // busy re-reading it while the hungry one grows.
  std::vector<VmConfig> vms{vm_with("hungry", 2048 * kMiB, {fill(4 * kMiB, 1024 * kMiB, 1)})};
  for (int i = 0; i < 3; i++) {
    Step loop = guest::Loop{200, {guest::Verify{4 * kMiB, 16 * kMiB, Pattern{Pattern::Kind::kSeed, 2}}}};
    vms.push_back(vm_with(fmt::format("honest{}", i), 64 * kMiB, {fill(4 * kMiB, 16 * kMiB, 2), loop}));
  }
  std::vector<guest::Image> images;
  for (const VmConfig& v : vms) {
    auto img = guest::build(v.program, {.ram_bytes = v.memory});
    if (!img) _exit(14);
    images.push_back(std::move(*img));
  }
  RunTotals t = run_vms(*kvm, **file, vms, images, nullptr, RunOptions{*limit, 5, nullptr, {}});
  const std::string report = run_report(t).dump();
  if (write(out, report.data(), report.size()) != static_cast<ssize_t>(report.size())) _exit(15);
  _exit(0);
}

std::string read_all(int fd) {
  std::string s;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) s.append(buf, static_cast<size_t>(n));
  return s;
}

}  // namespace

TEST_CASE("under a real memory cgroup the hungry VM is stopped and the honest ones finish", "[limits][cgroup][kvm]") {
  REQUIRE_KVM();
  std::string why;
  auto cg = TestCgroup::make(256 * kMiB, &why);
  if (!cg) {
    std::fprintf(stderr, "!!! SKIPPED (cannot make a memory cgroup: %s): %s\n", why.c_str(),
                 Catch::getResultCapture().getCurrentTestName().c_str());
    return;
  }
  int p[2];
  REQUIRE(pipe(p) == 0);
  std::fflush(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(p[0]);
    child_runs(*cg, p[1]);
  }
  close(p[1]);
  const std::string report = read_all(p[0]);
  close(p[0]);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  INFO("cgroup " << cg->dir() << "; report: " << report);
  // Killed by the kernel (SIGKILL, 137 in a shell) is what this is about.
  REQUIRE_FALSE(WIFSIGNALED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  const json j = json::parse(report);
  REQUIRE(j["vms"].size() == 4);
  const json& hungry = j["vms"][0];
  CHECK(hungry["outcome"] == "stopped");
  CHECK(hungry["failure"] == "memory_limit");
  const std::string message = hungry.value("message", "");
  CHECK(message.find("limit of 256 MiB") != std::string::npos);
  CHECK(message.find(cg->dir()) != std::string::npos);
  for (int i = 1; i <= 3; i++) CHECK(j["vms"][i]["exit_code"] == 0);
  CHECK(j["memory"]["limit_stops"] == 1);
  CHECK(j["memory"]["limit_bytes"] == 256 * kMiB);
}

TEST_CASE("kvmem run under a memory cgroup refuses a run that cannot fit, naming the limit", "[limits][cgroup][cli]") {
  std::string why;
  auto cg = TestCgroup::make(128 * kMiB, &why);
  if (!cg) {
    std::fprintf(stderr, "!!! SKIPPED (cannot make a memory cgroup: %s): %s\n", why.c_str(),
                 Catch::getResultCapture().getCurrentTestName().c_str());
    return;
  }
  char path[] = "/tmp/kvmem-limit-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  std::ofstream(path) << R"({"memory": "1G", "program": [{"op": "fill", "at": "4M", "length": "512M", "pattern": "address"}]})";
  // A shell moves itself into the cgroup, then becomes kvmem.
  auto r = test::run_command({"/bin/sh", "-c", "echo $$ > \"$0\"/cgroup.procs && exec \"$1\" run \"$2\"", cg->dir(),
                              test::kvmem_binary(), path});
  unlink(path);
  INFO(r.err);
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("512.0 MiB of guest RAM") != std::string::npos);
  CHECK(r.err.find("the memory cgroup limit of 128 MiB") != std::string::npos);
  CHECK(r.err.find(cg->dir()) != std::string::npos);
}

TEST_CASE("kvmem stress under a memory cgroup refuses a commit budget above the limit", "[limits][cgroup][stress]") {
  REQUIRE_KVM();
  std::string why;
  auto cg = TestCgroup::make(128 * kMiB, &why);
  if (!cg) {
    std::fprintf(stderr, "!!! SKIPPED (cannot make a memory cgroup: %s): %s\n", why.c_str(),
                 Catch::getResultCapture().getCurrentTestName().c_str());
    return;
  }
  // The shipped stress config's budget is 2 GiB.
  auto r = test::run_command({"/bin/sh", "-c", "echo $$ > \"$0\"/cgroup.procs && exec \"$1\" stress \"$2\" --rounds 1",
                              cg->dir(), test::kvmem_binary(), "configs/reclaim-stress.json"});
  INFO(r.err);
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("the stress commit budget of 2048.0 MiB") != std::string::npos);
  CHECK(r.err.find("the memory cgroup limit of 128 MiB") != std::string::npos);
}
