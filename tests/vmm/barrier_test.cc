// Barriers that cannot complete: a vCPU that exits before a barrier the
// others wait at fails the VM at once, and a barrier's own timeout_ms
// fails the vCPU that waited, both naming the barrier and who never came.
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "config/vm_config.h"
#include "tests/support.h"
#include "tests/vmm/guest_runner.h"

using namespace kvmem;
using json = nlohmann::json;
using Outcome = RunResult::Outcome;

namespace {

json vm_of(unsigned vcpus, json programs) {
  return json{{"memory", "64M"}, {"timeout_ms", 10000}, {"vcpus", vcpus}, {"programs", std::move(programs)}};
}
const json kBarrier = {{"op", "barrier"}};
const json kExit0 = {{"op", "exit"}, {"code", 0}};

std::string parse_error(const json& j) {
  auto c = parse_vm_config(j, "t");
  return c ? "" : c.error().message;
}

}  // namespace

TEST_CASE("a barrier's timeout_ms is optional, 1..the VM's limit", "[vcpus][config]") {
  auto with = [](json timeout) {
    return vm_of(2, {json::array({{{"op", "barrier"}, {"timeout_ms", timeout}}}), json::array({kBarrier})});
  };
  CHECK(parse_error(with(50)) == "");
  CHECK(parse_error(with(0)).find("/programs/0/0/timeout_ms: must be 1..") != std::string::npos);
  CHECK(parse_error(with("soon")).find("/programs/0/0/timeout_ms") != std::string::npos);
}

TEST_CASE("a vCPU that exits before a barrier fails the VM at once, naming the barrier and who never arrived",
          "[vcpus][kvm]") {
  REQUIRE_KVM();
  // vCPUs 0 and 2 wait at the second barrier (step 1); vCPU 1 exits 0
  // after the first.
  auto run = test::run_guest(vm_of(3, {json::array({kBarrier, kBarrier}), json::array({kBarrier, kExit0, kBarrier}),
                                       json::array({kBarrier, kBarrier})}));
  REQUIRE(run.setup_error == "");
  INFO(run.result.message);
  CHECK(run.result.outcome == Outcome::kFailed);
  CHECK(run.result.failure == FailureKind::kGuest);
  CHECK(run.result.message.find("barrier 2 (step 1 of vCPU ") != std::string::npos);
  // Whichever of vCPUs 0 and 2 sees the departure first may do so before
  // the other has arrived: the list of who never arrived is vCPU 1 with,
  // at most, that other one.
  CHECK_THAT(run.result.message,
             Catch::Matches(".*cannot complete: vCPU 1 exited without arriving; (vCPU 1|vCPUs 0, 1|vCPUs 1, 2) never "
                            "arrived.*"));
  CHECK(run.result.run_ms < 2000);  // not the VM's 10 s timeout

  // vCPU 1 is gone before vCPU 0 arrives, inside a loop.
  json late = {{"op", "fill"}, {"at", "8M"}, {"length", "16M"}, {"pattern", "address"}};
  json loop = {{"op", "loop"}, {"count", 2}, {"body", {late, kBarrier}}};
  auto gone = test::run_guest(vm_of(2, {json::array({loop}), json::array({kExit0, kBarrier, kBarrier})}));
  REQUIRE(gone.setup_error == "");
  INFO(gone.result.message);
  CHECK(gone.result.outcome == Outcome::kFailed);
  CHECK(gone.result.message.rfind("vCPU 0: barrier 1 (step 0/body/1 of vCPU 0's program) cannot complete", 0) == 0);
}

TEST_CASE("vCPUs that all leave early, or exit right after their last barrier, end the run cleanly", "[vcpus][kvm]") {
  REQUIRE_KVM();
  // Every vCPU exits after the first of its two barriers: nobody waits.
  auto early = test::run_guest(vm_of(2, {json::array({kBarrier, kExit0, kBarrier}),
                                         json::array({kBarrier, kExit0, kBarrier})}));
  REQUIRE(early.setup_error == "");
  INFO(early.result.message);
  CHECK(early.result.outcome == Outcome::kExited);
  // The last to arrive exits at once while the other may still spin: it
  // must see the barrier complete, not the departure.
  // Two vCPUs: on a 2-core host a third spinning one starves the others.
  json loop = {{"op", "loop"}, {"count", 20}, {"body", {kBarrier}}};
  for (int i = 0; i < 10; i++) {
    auto run = test::run_guest(vm_of(2, {json::array({loop}), json::array({loop})}));
    REQUIRE(run.setup_error == "");
    INFO(run.result.message);
    CHECK(run.result.outcome == Outcome::kExited);
  }
}

TEST_CASE("a barrier with timeout_ms fails the vCPU that waited, naming the barrier and who never arrived",
          "[vcpus][kvm][wait]") {
  REQUIRE_KVM();
  // vCPU 1 waits 3 s for a word nobody writes before its barrier; vCPU 0
  // gives up on its barrier after 50 ms.
  json never = {{"op", "wait_word"}, {"at", "8M"}, {"value", 1}, {"timeout_ms", 3000}};
  auto run = test::run_guest(vm_of(3, {json::array({{{"op", "barrier"}, {"timeout_ms", 50}}}),
                                       json::array({never, kBarrier}), json::array({kBarrier})}));
  REQUIRE(run.setup_error == "");
  INFO(run.result.message);
  CHECK(run.result.outcome == Outcome::kFailed);
  CHECK(run.result.failure == FailureKind::kGuest);
  CHECK(run.result.message.rfind("vCPU 0: barrier 1 (step 0 of vCPU 0's program) timed out after 50 ms", 0) == 0);
  CHECK(run.result.message.find("vCPU 1 never arrived") != std::string::npos);
  CHECK(run.result.run_ms < 2000);
}
