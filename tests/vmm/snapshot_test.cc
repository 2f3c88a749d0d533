// The snapshot step at the VM level: every vCPU meets at it, its state is
// captured on its own thread, and a fresh VM given that state and the RAM
// of the moment resumes right after the step, as its own reads prove.
// (The file format and `kvmem restore` are tested in tests/snapshot/ and
// tests/cli/.)
#include <cstring>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "config/vm_config.h"
#include "guest/abi.h"
#include "tests/support.h"
#include "tests/vmm/guest_runner.h"
#include "vmm/kvm/vcpu_state.h"

using namespace kvmem;
using namespace kvmem::test;
using json = nlohmann::json;
using Outcome = RunResult::Outcome;

namespace {

json fill(const char* at, const char* length, uint64_t seed) {
  return {{"op", "fill"}, {"at", at}, {"length", length}, {"pattern", {{"seed", seed}}}};
}
json verify(const char* at, const char* length, uint64_t seed) {
  return {{"op", "verify"}, {"at", at}, {"length", length}, {"pattern", {{"seed", seed}}}};
}
json snapshot(const char* then) { return {{"op", "snapshot"}, {"then", then}}; }
json print(const char* text) { return {{"op", "print"}, {"text", text}}; }

// What an in-memory sink keeps: every vCPU's state, all of RAM, and the
// devices' state.
struct Saved {
  SnapshotCapture capture;
  std::string ram;
  std::vector<FreeRingState> rings;
  ConsoleState console;
  FreeCounts frees;
  int calls = 0;
};

void arm(Vm& vm, Saved& saved) {
  vm.arm_snapshots([&saved](Vm& v, const SnapshotCapture& c) -> Status {
    saved.capture = c;
    saved.ram = v.memory().read(GuestRange(0, v.memory().ram_size()));
    saved.rings = v.free_ring_states();
    saved.console = v.console_state();
    saved.frees = v.free_counts();
    saved.calls++;
    return {};
  });
}

// A fresh VM of `config` with the saved RAM and vCPU states, not yet run.
GuestRun restored(const json& config, const Saved& saved) {
  GuestRun g = create_guest(config);
  REQUIRE(g.vm);
  GuestMemory& m = g.vm->memory();
  REQUIRE(saved.ram.size() == m.ram_size());
  for (uint64_t at = 0; at < m.ram_size();) {
    std::span<uint8_t> run = m.ram_run(GuestAddr(at), m.ram_size() - at);
    std::memcpy(run.data(), saved.ram.data() + at, run.size());
    at += run.size();
  }
  REQUIRE(g.vm->restore_vcpus(saved.capture.vcpus));
  return g;
}

}  // namespace

TEST_CASE("vCPU state survives its byte form, and damaged bytes are refused by what is wrong", "[snapshot]") {
  VcpuState s;
  s.regs.rip = 0x123456;
  s.regs.rax = 7;
  s.sregs.cr3 = 0x9000;
  s.fpu.fcw = 0x37f;
  s.xcrs.nr_xcrs = 1;
  s.xcrs.xcrs[0].value = 1;
  s.msrs.push_back({.index = 0x10, .reserved = 0, .data = 99});
  const std::vector<uint8_t> bytes = encode_vcpu_state(s);
  auto back = decode_vcpu_state(bytes);
  REQUIRE(back);
  CHECK(back->regs.rip == 0x123456);
  CHECK(back->regs.rax == 7);
  CHECK(back->sregs.cr3 == 0x9000);
  CHECK(back->fpu.fcw == 0x37f);
  CHECK(back->xcrs.xcrs[0].value == 1);
  REQUIRE(back->msrs.size() == 1);
  CHECK(back->msrs[0].data == 99);
  CHECK(std::memcmp(&back->events, &s.events, sizeof s.events) == 0);

  auto refused = [&](std::vector<uint8_t> b, const char* want) {
    auto r = decode_vcpu_state(b);
    REQUIRE_FALSE(r);
    INFO(r.error().message);
    CHECK_THAT(r.error().message, Catch::Contains(want));
  };
  refused({}, "too short");
  refused(std::vector<uint8_t>(bytes.begin(), bytes.end() - 8), "runs past the end");
  auto b = bytes;
  b[0] ^= 1;
  refused(b, "bad magic");
  b = bytes;
  b[4] = 9;
  refused(b, "version 9");
  b = bytes;
  b[16] = 2;  // the first part (regs) says it is sregs: sregs twice, or the wrong size
  refused(b, "part tag 2");
  b = bytes;
  b[20] ^= 0x40;  // the regs part's length
  refused(b, "part");
  b = bytes;
  b.push_back(0);
  refused(b, "after the last part");
}

TEST_CASE("a VM restored from a snapshot resumes after the step and reads what was written before it",
          "[snapshot][kvm]") {
  if (!kvm_available("snapshot restore")) return;
  for (const char* then : {"exit", "continue"}) {
    INFO("then " << then);
    const json config = {{"memory", "16M"},
                         {"program",
                          {fill("4M", "8M", 5), print("before\n"), snapshot(then), verify("4M", "8M", 5),
                           print("after\n")}}};
    GuestRun source = create_guest(config);
    REQUIRE(source.vm);
    Saved saved;
    arm(*source.vm, saved);
    RunResult r = source.vm->run(nullptr);
    INFO(r.message);
    REQUIRE(r.outcome == Outcome::kExited);
    CHECK(r.guest_exit_code == 0);
    CHECK(saved.calls == 1);
    CHECK(source.vm->snapshots_taken() == 1);
    // then exit ends the VM at the step; continue runs it on to its end.
    CHECK(r.console == (std::string(then) == "exit" ? "before\n" : "before\nafter\n"));
    REQUIRE(saved.capture.vcpus.size() == 1);
    REQUIRE(saved.capture.vcpus[0]);

    GuestRun copy = restored(config, saved);
    RunResult c = copy.vm->run(nullptr);
    INFO(c.message);
    CHECK(c.outcome == Outcome::kExited);
    CHECK(c.guest_exit_code == 0);
    CHECK(c.console == "after\n");  // it started after the step: no "before"
    CHECK(copy.vm->snapshots_taken() == 0);  // unarmed: nothing met

    // The restored guest really reads RAM: a word changed in the copy fails it.
    Saved damaged = saved;
    damaged.ram[(6u << 20) + 8] ^= 0x5a;
    GuestRun bad = restored(config, damaged);
    RunResult d = bad.vm->run(nullptr);
    CHECK(d.outcome == Outcome::kFailed);
    CHECK_THAT(d.message, Catch::Contains("verify failed at guest-physical 0x600008"));
  }
}

TEST_CASE("without a place to write it, the snapshot step does nothing", "[snapshot][kvm]") {
  if (!kvm_available("unarmed snapshot")) return;
  GuestRun g = run_guest({{"memory", "8M"},
                          {"program",
                           {snapshot("exit"),
                            {{"op", "hypercall"}, {"nr", abi::kHcSnapshot}, {"args", {0}}, {"expect", 1}},
                            {{"op", "hypercall"}, {"nr", abi::kHcSnapshot}, {"args", {2}}, {"expect", "-EINVAL"}},
                            print("ran on\n")}}});
  INFO(g.setup_error << g.result.message);
  CHECK(g.result.outcome == Outcome::kExited);
  CHECK(g.result.console == "ran on\n");
}

TEST_CASE("every vCPU meets at the snapshot, and a restored VM of two vCPUs resumes both", "[snapshot][kvm][vcpus]") {
  if (!kvm_available("snapshot of two vCPUs")) return;
  const json config = {
      {"memory", "32M"},
      {"vcpus", 2},
      {"programs",
       {{fill("4M", "8M", 1), snapshot("exit"), verify("4M", "8M", 1), print("0 after\n")},
        {fill("16M", "8M", 2), {{"op", "barrier"}}, snapshot("exit"), verify("16M", "8M", 2)}}}};
  // vCPU 1 passes a barrier vCPU 0 does not: refused. Without it, they match.
  json good = config;
  good["programs"][1].erase(1);
  GuestRun source = create_guest(good);
  REQUIRE(source.vm);
  Saved saved;
  arm(*source.vm, saved);
  RunResult r = source.vm->run(nullptr);
  INFO(r.message);
  REQUIRE(r.outcome == Outcome::kExited);
  CHECK(saved.calls == 1);
  REQUIRE(saved.capture.vcpus.size() == 2);
  CHECK(saved.capture.vcpus[0]);
  CHECK(saved.capture.vcpus[1]);
  // Each vCPU was captured at its own step: different stacks and code.
  CHECK(saved.capture.vcpus[0]->regs.rip != saved.capture.vcpus[1]->regs.rip);

  GuestRun copy = restored(good, saved);
  RunResult c = copy.vm->run(nullptr);
  INFO(c.message);
  CHECK(c.outcome == Outcome::kExited);
  CHECK(c.console == "0 after\n");
  CHECK_FALSE(create_guest(config).vm);  // the barrier mismatch is refused
}

TEST_CASE("a snapshot step refused by the config: bad then, and counts that differ between vCPUs", "[snapshot]") {
  auto error = [](const json& j) {
    auto c = parse_vm_config(j, "t");
    return c ? std::string() : c.error().message;
  };
  CHECK_THAT(error({{"memory", "4M"}, {"program", {{{"op", "snapshot"}, {"then", "pause"}}}}}),
             Catch::StartsWith("/program/0/then: expected \"continue\" or \"exit\""));
  CHECK_THAT(error({{"memory", "4M"}, {"program", {{{"op", "snapshot"}, {"when", 1}}}}}),
             Catch::StartsWith("/program/0/when: unknown key"));
  CHECK_THAT(error({{"memory", "4M"}, {"vcpus", 2}, {"programs", {{snapshot("exit")}, json::array()}}}),
             Catch::StartsWith("/programs/1: vCPU 1 passes 0 snapshot steps and vCPU 0 passes 1"));
}

TEST_CASE("a restored guest frees through the ring it set up before the snapshot, once the ring is restored",
          "[snapshot][kvm][free]") {
  if (!kvm_available("free ring restore")) return;
  const json async_free = {{"op", "free"}, {"at", "4M"}, {"length", "1M"}, {"granule", "64K"}, {"mode", "async"}};
  json again = async_free;
  again["at"] = "6M";
  const json config = {{"memory", "16M"},
                       {"program",
                        {fill("4M", "4M", 3), async_free, print("before\n"), snapshot("exit"),
                         verify("5M", "1M", 3), again,
                         {{"op", "verify"}, {"at", "6M"}, {"length", "1M"}, {"pattern", "zero"}},
                         verify("7M", "1M", 3), print("after\n")}}};
  GuestRun source = create_guest(config);
  REQUIRE(source.vm);
  Saved saved;
  arm(*source.vm, saved);
  RunResult r = source.vm->run(nullptr);
  INFO(r.message);
  REQUIRE(r.outcome == Outcome::kExited);
  // The ring's host side as the snapshot saw it: set up, nothing in flight.
  REQUIRE(saved.rings.size() == 1);
  CHECK(saved.rings[0].present());
  CHECK(saved.rings[0].completed == 16);  // 1 MiB in 64 KiB ranges
  CHECK(saved.console.text == "before\n");
  CHECK(saved.frees.bytes_decommitted == 1 << 20);

  // Without its ring, the guest's doorbell is a port with no device, and
  // its wait for the ring (free_ring_wait, hypercall 7) is refused.
  GuestRun bare = restored(config, saved);
  RunResult b = bare.vm->run(nullptr);
  CHECK(b.outcome == Outcome::kFailed);
  CHECK_THAT(b.message, Catch::Contains("port") || Catch::Contains("hypercall 7 returned -22"));

  GuestRun copy = restored(config, saved);
  REQUIRE(copy.vm->restore_free_rings(saved.rings));
  RunResult c = copy.vm->run(nullptr);
  INFO(c.message);
  CHECK(c.outcome == Outcome::kExited);
  CHECK(c.guest_exit_code == 0);
  CHECK(c.console == "after\n");
  CHECK(c.bytes_decommitted == 1 << 20);  // the restored run's own frees only
  // A ring state the VM cannot have is refused, naming the vCPU.
  GuestRun other = restored(config, saved);
  std::vector<FreeRingState> twice = saved.rings;
  twice.push_back(saved.rings[0]);
  CHECK_FALSE(other.vm->restore_free_rings(twice));
  std::vector<FreeRingState> outside = saved.rings;
  outside[0].gpa = 64ull << 20;
  auto s = other.vm->restore_free_rings(outside);
  REQUIRE_FALSE(s);
  CHECK_THAT(s.error().message, Catch::Contains("vCPU 0's free ring") && Catch::Contains("not in guest memory"));
}
