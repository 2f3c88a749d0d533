// Guests under KVM for the steps that share memory with the host and with
// other VMs: store_word and wait_word (a word stored is a word seen; a wait
// never satisfied fails the run after its timeout, no sooner), and patterns
// with an origin (the guest's words are the host's).
#include <cstring>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "config/vm_config.h"
#include "guest/abi.h"
#include "guest/layout.h"
#include "tests/support.h"
#include "tests/vmm/guest_runner.h"

using namespace kvmem;
using json = nlohmann::json;
using Outcome = RunResult::Outcome;

namespace {

json config_with(json program) {
  return json{{"memory", "8M"}, {"timeout_ms", 10000}, {"program", std::move(program)}};
}

uint64_t word_at(Vm& vm, uint64_t gpa) {
  uint64_t w;
  std::memcpy(&w, vm.memory().host(GuestAddr(gpa)), 8);
  return w;
}

}  // namespace

TEST_CASE("a word store_word stores is the word wait_word waits for, without an exit", "[kvm][guest][wait]") {
  REQUIRE_KVM();
  auto run = test::run_guest(config_with({{{"op", "store_word"}, {"at", "2M"}, {"value", "0xfeedf00dcafe0001"}},
                                          {{"op", "wait_word"}, {"at", "2M"}, {"value", "0xfeedf00dcafe0001"},
                                           {"timeout_ms", 5000}},
                                          {{"op", "store_word"}, {"at", "0x200008"}, {"value", 3}}}));
  REQUIRE(run.setup_error == "");
  INFO(run.result.message);
  REQUIRE(run.result.outcome == Outcome::kExited);
  CHECK(run.result.guest_exit_code == 0);
  CHECK(word_at(*run.vm, 0x200000) == 0xfeedf00dcafe0001ull);
  CHECK(word_at(*run.vm, 0x200008) == 3);
  CHECK(run.result.exits.at("io") == 1);  // the exit hypercall, nothing else
  // The VMM told the guest its TSC's rate.
  CHECK(word_at(*run.vm, guest::layout::kBootInfoAddr + offsetof(abi::BootInfo, tsc_khz)) > 0);
}

TEST_CASE("a wait_word that is never satisfied fails the run, naming the address, both words and the timeout",
          "[kvm][guest][wait]") {
  REQUIRE_KVM();
  auto run = test::run_guest(config_with({{{"op", "store_word"}, {"at", "2M"}, {"value", 5}},
                                          {{"op", "wait_word"}, {"at", "2M"}, {"value", 7}, {"timeout_ms", 50}},
                                          {{"op", "print"}, {"text", "not reached"}}}));
  REQUIRE(run.setup_error == "");
  CHECK(run.result.outcome == Outcome::kFailed);
  CHECK(run.result.failure == FailureKind::kGuest);
  CHECK(run.result.process_exit_code() == 1);
  CHECK(run.result.message ==
        "wait_word at guest-physical 0x200000 for 0x0000000000000007 timed out after 50 ms: it read "
        "0x0000000000000005 last");
  CHECK(run.result.console == "");
}

TEST_CASE("a wait_word's timeout is honoured: the failing run lasts at least that long", "[kvm][guest][wait]") {
  REQUIRE_KVM();
  const uint64_t timeout_ms = 300;
  auto run = test::run_guest(config_with({{{"op", "wait_word"}, {"at", "2M"}, {"value", 1}, {"timeout_ms", timeout_ms}}}));
  REQUIRE(run.setup_error == "");
  INFO(run.result.message);
  // It ended by itself, well before the VM's own 10 s watchdog.
  REQUIRE(run.result.outcome == Outcome::kFailed);
  CHECK(run.result.message.find("timed out after 300 ms") != std::string::npos);
  CHECK(run.result.run_ms >= static_cast<double>(timeout_ms));
  // No upper bound: the machine is shared, and a loaded host only makes it longer.
  fmt::print("wait_word of {} ms: the run took {:.1f} ms\n", timeout_ms, run.result.run_ms);
}

TEST_CASE("the guest's words of a pattern with an origin are the host's, and verify uses them",
          "[kvm][guest][origin]") {
  REQUIRE_KVM();
  // Origins above, inside and below the range (the last wraps in both).
  const json patterns[] = {{{"seed", 7}, {"origin", "1G"}}, {{"seed", 7}, {"origin", "0x200008"}},
                           {{"address", true}, {"origin", "2M"}}, {{"address", true}, {"origin", "3M"}}};
  for (const json& p : patterns) {
    INFO(p.dump());
    auto c = parse_vm_config(config_with({{{"op", "fill"}, {"at", "2M"}, {"length", 8}, {"pattern", p}}}), "t");
    REQUIRE(c);
    const guest::Pattern pattern = c->program[0].as<guest::Fill>().pattern;
    auto run = test::run_guest(config_with({{{"op", "fill"}, {"at", "2M"}, {"length", "16K"}, {"pattern", p}},
                                            {{"op", "verify"}, {"at", "2M"}, {"length", "16K"}, {"pattern", p}}}));
    REQUIRE(run.setup_error == "");
    INFO(run.result.message);
    REQUIRE(run.result.outcome == Outcome::kExited);
    for (uint64_t gpa = 2 << 20; gpa < (2 << 20) + (16 << 10); gpa += 8)
      if (word_at(*run.vm, gpa) != pattern.word(gpa))
        FAIL(fmt::format("word at {:#x} is {:#x}, host expects {:#x}", gpa, word_at(*run.vm, gpa), pattern.word(gpa)));
  }
}

TEST_CASE("words the host wrote as a pattern of offsets verify in the guest with the origin where they lie",
          "[kvm][guest][origin]") {
  REQUIRE_KVM();
  // As a file filled on the host and seen through a window at 3M would be.
  const uint64_t at = 3 << 20, length = 64 << 10;
  const guest::Pattern of_offsets{guest::Pattern::Kind::kSeed, 99};
  auto verify_with = [&](const char* origin) {
    auto g = test::create_guest(config_with(
        {{{"op", "verify"}, {"at", at}, {"length", length}, {"pattern", {{"seed", 99}, {"origin", origin}}}}}));
    REQUIRE(g.setup_error == "");
    for (uint64_t off = 0; off < length; off += 8) {
      const uint64_t w = of_offsets.word(off);
      std::memcpy(g.vm->memory().host(GuestAddr(at + off)), &w, 8);
    }
    return g.vm->run({});
  };
  const RunResult right = verify_with("3M");
  INFO(right.message);
  CHECK(right.outcome == Outcome::kExited);
  const RunResult wrong = verify_with("0x300008");  // one word off
  CHECK(wrong.outcome == Outcome::kFailed);
  CHECK(wrong.failure == FailureKind::kIntegrity);
  CHECK(wrong.message.rfind("verify failed at guest-physical 0x300000: expected", 0) == 0);
}
