// VMs of several vCPUs: configs, per-vCPU programs, barriers, how a run
// ends, sync free reports from several vCPUs at once, pause and stop.
#include <chrono>
#include <string>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "config/vm_config.h"
#include "guest/program.h"
#include "tests/support.h"
#include "tests/vmm/guest_runner.h"

using namespace kvmem;
using json = nlohmann::json;
using Outcome = RunResult::Outcome;

namespace {

json vm_of(unsigned vcpus, json programs, const char* memory = "64M") {
  return json{{"memory", memory}, {"timeout_ms", 10000}, {"vcpus", vcpus}, {"programs", std::move(programs)}};
}

json fill(uint64_t at, uint64_t length) {
  return {{"op", "fill"}, {"at", at}, {"length", length}, {"pattern", "address"}};
}
json verify(uint64_t at, uint64_t length) {
  return {{"op", "verify"}, {"at", at}, {"length", length}, {"pattern", "address"}};
}
const json kBarrier = {{"op", "barrier"}};

std::string parse_error(const json& j) {
  auto c = parse_vm_config(j, "t");
  return c ? "" : c.error().message;
}

}  // namespace

TEST_CASE("vcpus 1..16 parse and other counts are refused with the pointer", "[vcpus]") {
  auto c = parse_vm_config(vm_of(4, json::array({json::array(), json::array(), json::array(), json::array()})), "t");
  REQUIRE(c);
  CHECK(c->vcpus == 4);
  CHECK(c->programs.size() == 4);
  CHECK(c->vcpu_programs().size() == 4);
  CHECK(parse_error({{"memory", "8M"}, {"vcpus", 0}, {"program", json::array()}}).find("/vcpus: must be 1..16") !=
        std::string::npos);
  CHECK(parse_error({{"memory", "8M"}, {"vcpus", 17}, {"program", json::array()}}).find("/vcpus") != std::string::npos);
  auto same = parse_vm_config({{"memory", "8M"}, {"vcpus", 3}, {"program", json::array({kBarrier})}}, "t");
  REQUIRE(same);
  CHECK(same->vcpu_programs().size() == 3);
}

TEST_CASE("a VM config takes exactly one of program and programs, one list per vCPU", "[vcpus]") {
  CHECK(parse_error({{"memory", "8M"}, {"vcpus", 2}, {"program", json::array()}, {"programs", json::array()}})
            .find("exactly one of") != std::string::npos);
  CHECK(parse_error(vm_of(2, json::array({json::array()}))).find("/programs: expected an array of 2") !=
        std::string::npos);
  CHECK(parse_error(vm_of(2, json::array({json::array(), json::array({{{"op", "nope"}}})})))
            .find("/programs/1/0/op") != std::string::npos);
}

TEST_CASE("every vCPU must pass the same number of barriers, loops counted", "[vcpus]") {
  CHECK(parse_error(vm_of(2, json::array({json::array({kBarrier}), json::array()}))).find("/programs/1: vCPU 1 passes 0 barriers") !=
        std::string::npos);
  json loop = {{"op", "loop"}, {"count", 2}, {"body", json::array({kBarrier})}};
  CHECK(parse_error(vm_of(2, json::array({json::array({loop}), json::array({kBarrier, kBarrier})}))) == "");
  CHECK(parse_error(vm_of(1, json::array({json::array({{{"op", "barrier"}, {"x", 1}}})}))).find("/programs/0/0") !=
        std::string::npos);
}

TEST_CASE("async free parses on a VM of several vCPUs, and sync and async batches fit its slices", "[vcpus]") {
  json async = {{"op", "free"}, {"at", "4M"}, {"length", "1M"}, {"mode", "async"}};
  CHECK(parse_error(vm_of(2, json::array({json::array({async}), json::array({async})}))) == "");
  json async_big = {{"op", "free"}, {"at", "4M"}, {"length", "1M"}, {"mode", "async"}, {"batch", 1024}};
  CHECK(parse_error(vm_of(2, json::array({json::array({async_big}), json::array()}))).find("/programs/0/0/batch: must be 1..512") !=
        std::string::npos);
  json big = {{"op", "free"}, {"at", "4M"}, {"length", "1M"}, {"batch", 200}};
  CHECK(parse_error(vm_of(16, json::array({json::array({big}), json::array(), json::array(), json::array(),
                                           json::array(), json::array(), json::array(), json::array(), json::array(),
                                           json::array(), json::array(), json::array(), json::array(), json::array(),
                                           json::array(), json::array()})))
            .find("/programs/0/0/batch: must be 1..128") != std::string::npos);
}

TEST_CASE("timestamps of every vCPU keep clear of each other's result slots", "[vcpus]") {
  // 64M of RAM; vCPU 0's slot page is the top page, vCPU 1's the one below.
  json ts = {{"op", "timestamp"}, {"slot", 0}};
  json fill_top = fill((64ull << 20) - 0x2000, 0x1000);
  CHECK(parse_error(vm_of(2, json::array({json::array({ts}), json::array({ts, fill_top})}))).find("/programs/1/1") !=
        std::string::npos);
  auto c = parse_vm_config(vm_of(2, json::array({json::array({ts}), json::array({ts})})), "t");
  REQUIRE(c);
  auto img = guest::build_vcpus(c->vcpu_programs(), c->machine());
  REQUIRE(img);
  REQUIRE(img->vcpus.size() == 2);
  CHECK(img->vcpus[0].results.gpa == (64ull << 20) - 0x1000);
  CHECK(img->vcpus[1].results.gpa == (64ull << 20) - 0x2000);
  CHECK(img->vcpus[1].entry > img->vcpus[0].entry);
}

TEST_CASE("one program builds the same bytes through build and build_vcpus", "[vcpus]") {
  auto c = parse_vm_config({{"memory", "8M"},
                            {"program", json::array({fill(0x200000, 0x1000), verify(0x200000, 0x1000),
                                                     {{"op", "timestamp"}, {"slot", 1}},
                                                     {{"op", "free"}, {"at", "2M"}, {"length", "1M"}},
                                                     {{"op", "print"}, {"text", "hi"}}})}},
                           "t");
  REQUIRE(c);
  auto a = guest::build(c->program, {.ram_bytes = c->memory});
  auto b = guest::build_vcpus(c->vcpu_programs(), c->machine());
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->bytes == b->bytes);
  CHECK(a->entry == b->entry);
  CHECK(a->results.gpa == b->results.gpa);
}

TEST_CASE("2 and 4 vCPUs fill and verify disjoint slices", "[vcpus][kvm]") {
  REQUIRE_KVM();
  for (unsigned n : {2u, 4u}) {
    json programs = json::array();
    for (unsigned i = 0; i < n; i++) {
      const uint64_t at = (4ull << 20) + i * (4ull << 20);
      programs.push_back(json::array({fill(at, 4ull << 20), kBarrier, verify(at, 4ull << 20)}));
    }
    auto run = test::run_guest(vm_of(n, programs));
    REQUIRE(run.setup_error == "");
    INFO(n << " vCPUs: " << run.result.message);
    CHECK(run.result.outcome == Outcome::kExited);
    CHECK(run.result.guest_exit_code == 0);
    CHECK(run.vm->vcpu_count() == n);
  }
}

TEST_CASE("a barrier holds a fast vCPU until a slow one arrives", "[vcpus][kvm]") {
  REQUIRE_KVM();
  // vCPU 1 fills 32 MiB before the barrier; vCPU 0 verifies it after: it
  // can only pass if the barrier held it. Twice, so the barrier is reused.
  const uint64_t at = 16ull << 20, len = 32ull << 20;
  json ts0 = {{"op", "timestamp"}, {"slot", 0}}, ts1 = {{"op", "timestamp"}, {"slot", 1}};
  json programs = json::array({json::array({ts0, kBarrier, ts1, verify(at, len), kBarrier, kBarrier}),
                               json::array({fill(at, len), ts0, kBarrier, ts1, kBarrier,
                                            {{"op", "fill"}, {"at", at}, {"length", len}, {"pattern", "zero"}},
                                            kBarrier})});
  auto run = test::run_guest(vm_of(2, programs));
  REQUIRE(run.setup_error == "");
  INFO(run.result.message);
  REQUIRE(run.result.outcome == Outcome::kExited);
  REQUIRE(run.result.vcpu_timestamps.size() == 2);
  const auto& t0 = run.result.vcpu_timestamps[0];
  const auto& t1 = run.result.vcpu_timestamps[1];
  REQUIRE(t0.size() == 2);
  REQUIRE(t1.size() == 2);
  // vCPU 0 reached the barrier long before vCPU 1 and left it after vCPU 1
  // arrived (the vCPUs' TSCs are one clock under KVM).
  CHECK(t0[0] < t1[0]);
  CHECK(t0[1] > t1[0]);
  CHECK(run.result.timestamps == t0);
}

TEST_CASE("a fault on vCPU 1 stops the VM and names vCPU 1", "[vcpus][kvm]") {
  REQUIRE_KVM();
  json spin = {{"op", "fault"}, {"kind", "spin"}};
  json ud = {{"op", "fault"}, {"kind", "invalid-opcode"}};
  auto run = test::run_guest(vm_of(3, json::array({json::array({spin}), json::array({ud}), json::array()})));
  REQUIRE(run.setup_error == "");
  CHECK(run.result.outcome == Outcome::kFailed);
  CHECK(run.result.message.rfind("vCPU 1: ", 0) == 0);
  CHECK(run.result.message.find("invalid opcode") != std::string::npos);
  CHECK(run.result.run_ms < 5000);  // vCPU 0's spin was stopped, not timed out
}

TEST_CASE("a VM ends when every vCPU exited 0, and a nonzero exit decides it", "[vcpus][kvm]") {
  REQUIRE_KVM();
  // vCPU 0 exits at once; vCPU 1 works on and its fill is seen.
  auto run = test::run_guest(vm_of(2, json::array({json::array(), json::array({fill(8ull << 20, 32ull << 20)})})));
  REQUIRE(run.setup_error == "");
  CHECK(run.result.outcome == Outcome::kExited);
  CHECK(run.result.guest_exit_code == 0);
  const uint64_t last = (40ull << 20) - 8;
  uint64_t w = 0;
  std::memcpy(&w, run.vm->memory().host(GuestAddr(last)), 8);
  CHECK(w == last);
  json spin = {{"op", "fault"}, {"kind", "spin"}};
  auto code = test::run_guest(vm_of(2, json::array({json::array({spin}), json::array({{{"op", "exit"}, {"code", 7}}})})));
  REQUIRE(code.setup_error == "");
  CHECK(code.result.outcome == Outcome::kExited);
  CHECK(code.result.guest_exit_code == 7);
  CHECK(code.result.message == "vCPU 1: guest exited with code 7");
}

TEST_CASE("two vCPUs report free ranges synchronously at once", "[vcpus][kvm]") {
  REQUIRE_KVM();
  json programs = json::array();
  for (uint64_t i = 0; i < 2; i++) {
    const uint64_t at = (8ull << 20) + i * (16ull << 20);
    programs.push_back(json::array({fill(at, 16ull << 20), kBarrier,
                                    {{"op", "loop"}, {"count", 4}, {"body", json::array({
                                        {{"op", "free"}, {"at", at}, {"length", 16ull << 20}, {"batch", 16}},
                                        fill(at, 1ull << 20)})}},
                                    verify(at, 1ull << 20)}));
  }
  auto run = test::run_guest(vm_of(2, programs, "64M"));
  REQUIRE(run.setup_error == "");
  INFO(run.result.message);
  CHECK(run.result.outcome == Outcome::kExited);
  CHECK(run.result.free_ranges == 2 * 4 * 4096);
  CHECK(run.result.free_ranges_invalid == 0);
  CHECK(run.result.bytes_reported_free == 2 * 4 * (16ull << 20));
}

TEST_CASE("stop and pause reach every vCPU of a VM", "[vcpus][kvm]") {
  REQUIRE_KVM();
  json spin = {{"op", "fault"}, {"kind", "spin"}};
  auto g = test::create_guest(vm_of(4, json::array({json::array({spin}), json::array({spin}), json::array({spin}),
                                                    json::array({spin})})));
  REQUIRE(g.setup_error == "");
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    g.vm->pause();  // returns only when all four are out of the guest
    g.vm->resume();
    g.vm->stop(FailureKind::kStopped, "test stop");
  });
  RunResult r = g.vm->run(nullptr);
  stopper.join();
  CHECK(r.outcome == Outcome::kStopped);
  CHECK(r.message == "test stop");
  CHECK(r.run_ms < 5000);
}
