// Result slots: a buffer at the top of guest RAM, sized by the program, read
// back into the run result and the --json report.
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <set>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "guest/layout.h"
#include "harness/report.h"
#include "harness/runner.h"
#include "tests/support.h"
#include "tests/vmm/guest_runner.h"

using namespace kvmem;
using json = nlohmann::json;
using Outcome = RunResult::Outcome;

TEST_CASE("a sample per page of 256 MiB: 65,536 result slots come back in the run result", "[kvm][vm][results]") {
  REQUIRE_KVM();
  const uint64_t ram = 256ull << 20, slots = ram / 4096;
  auto run = test::run_guest(json{{"memory", "256M"},
                                  {"timeout_ms", 5000},
                                  {"program",
                                   {{{"op", "timestamp"}, {"slot", 0}},
                                    {{"op", "touch"}, {"at", "2M"}, {"length", "64M"}},
                                    {{"op", "timestamp"}, {"slot", slots / 2}},
                                    {{"op", "timestamp"}, {"slot", slots - 1}}}}});
  REQUIRE(run.setup_error == "");
  INFO(run.result.message);
  REQUIRE(run.result.outcome == Outcome::kExited);
  const auto& t = run.result.timestamps;
  REQUIRE(t.size() == slots);
  CHECK(t[0] != 0);
  CHECK(t[slots / 2] > t[0]);
  CHECK(t[slots - 1] >= t[slots / 2]);
  for (uint64_t i = 1; i < slots - 1; i++)
    if (i != slots / 2 && t[i] != 0) FAIL("slot " << i << " holds " << t[i] << ", but no step wrote it");
  // The slots are the last 512 KiB of RAM, not the boot area.
  uint64_t last;
  std::memcpy(&last, run.vm->memory().host(GuestAddr(ram - 8)), 8);
  CHECK(last == t[slots - 1]);
}

TEST_CASE("a program without timestamp steps has no result slots", "[kvm][vm][results]") {
  REQUIRE_KVM();
  auto run = test::run_guest(json{{"memory", "8M"}, {"program", {{{"op", "print"}, {"text", "x"}}}}});
  REQUIRE(run.setup_error == "");
  REQUIRE(run.result.outcome == Outcome::kExited);
  CHECK(run.result.timestamps.empty());
}

TEST_CASE("a VM's report carries its timestamps, or null when it has none", "[results]") {
  VmOutcome with;
  with.result.outcome = RunResult::Outcome::kExited;
  with.result.timestamps = {0, 12345, 0};
  CHECK(vm_report(with).at("timestamps") == json::array({0, 12345, 0}));
  VmOutcome without;
  without.result.outcome = RunResult::Outcome::kExited;
  REQUIRE(vm_report(without).contains("timestamps"));
  CHECK(vm_report(without).at("timestamps").is_null());
}

TEST_CASE("run --json reports the timestamps the guest wrote", "[kvm][cli][results]") {
  REQUIRE_KVM();
  char path[] = "/tmp/kvmem-results-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  std::ofstream(path) << R"({"memory": "8M", "program": [{"op": "timestamp", "slot": 2},
                           {"op": "fill", "at": "2M", "length": "64K", "pattern": "address"},
                           {"op": "timestamp", "slot": 0}]})";
  auto r = test::run_command({test::kvmem_binary(), "run", "--json", path});
  unlink(path);
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  const json vm = json::parse(r.out).at("vms").at(0);
  const json& t = vm.at("timestamps");
  REQUIRE(t.is_array());
  REQUIRE(t.size() == 3);
  CHECK(t[1] == 0);
  CHECK(t[0].get<uint64_t>() > t[2].get<uint64_t>());  // slot 0 was written second
  auto hello = test::run_command({test::kvmem_binary(), "run", "--json", "configs/hello.json"});
  REQUIRE(hello.exit_code == 0);
  CHECK(json::parse(hello.out).at("vms").at(0).at("timestamps").is_null());
}

TEST_CASE("configs/steps.json runs every op a successful guest can, and exits 0", "[kvm][vm]") {
  REQUIRE_KVM();
  std::ifstream in("configs/steps.json");
  REQUIRE(in);
  const json config = json::parse(in);
  std::set<std::string> ops;
  std::function<void(const json&)> collect = [&](const json& steps) {
    for (const json& s : steps) {
      ops.insert(s.at("op").get<std::string>());
      if (s.contains("body")) collect(s.at("body"));
    }
  };
  collect(config.at("program"));
  // Every op but `fault`, which always ends a run with a failure.
  CHECK(ops == std::set<std::string>{"print", "fill", "touch", "verify", "loop", "hypercall", "exit", "free",
                                     "report", "out", "timestamp", "store_word", "wait_word"});
  auto run = test::run_guest(config);
  REQUIRE(run.setup_error == "");
  INFO(run.result.message);
  CHECK(run.result.outcome == Outcome::kExited);
  CHECK(run.result.process_exit_code() == 0);
  CHECK(run.result.console.find("...\n") != std::string::npos);
  REQUIRE(run.result.timestamps.size() == 2);
  CHECK(run.result.timestamps[1] > run.result.timestamps[0]);
  CHECK(run.result.free_ranges_invalid == 2);
}
