// Guests booted under KVM: every step, every fault, hostile hypercalls.
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "guest/abi.h"
#include "vmm/devices/console.h"
#include "guest/layout.h"
#include "config/vm_config.h"
#include "guest/program.h"
#include "harness/runner.h"
#include "tests/support.h"
#include "tests/vmm/guest_runner.h"

using namespace kvmem;
using json = nlohmann::json;
using Outcome = RunResult::Outcome;

namespace {

json config_with(json program, const char* memory = "8M") {
  return json{{"memory", memory}, {"timeout_ms", 5000}, {"program", std::move(program)}};
}

uint64_t word_at(Vm& vm, uint64_t gpa) {
  uint64_t w;
  std::memcpy(&w, vm.memory().host(GuestAddr(gpa)), 8);
  return w;
}

}  // namespace

TEST_CASE("a guest prints, fills, verifies and exits 0", "[kvm][vm]") {
  REQUIRE_KVM();
  auto run = test::run_guest(config_with({{{"op", "print"}, {"text", "hello\n"}},
                                    {{"op", "fill"}, {"at", "2M"}, {"length", "64K"}, {"pattern", {{"seed", 42}}}},
                                    {{"op", "verify"}, {"at", "2M"}, {"length", "64K"}, {"pattern", {{"seed", 42}}}},
                                    {{"op", "exit"}, {"code", 0}}}));
  REQUIRE(run.setup_error == "");
  INFO(run.result.message);
  CHECK(run.result.outcome == Outcome::kExited);
  CHECK(run.result.guest_exit_code == 0);
  CHECK(run.result.process_exit_code() == 0);
  CHECK(run.result.console == "hello\n");
  CHECK(run.result.exits.at("io") == 2);  // one console write, one exit: nothing else leaves KVM
  CHECK(run.result.hypercalls.calls[abi::kHcConsoleWrite] == 1);
}

TEST_CASE("each pattern the guest writes is the word the host computes", "[kvm][vm]") {
  REQUIRE_KVM();
  const json patterns[] = {"zero", "address", {{"seed", 0}}, {{"seed", 0xdeadbeef}}, {{"byte", 0xa5}}};
  for (const json& p : patterns) {
    INFO(p.dump());
    auto run = test::run_guest(config_with({{{"op", "fill"}, {"at", "1M"}, {"length", "16K"}, {"pattern", {{"byte", 1}}}},
                                      {{"op", "fill"}, {"at", "1M"}, {"length", "16K"}, {"pattern", p}}}));
    REQUIRE(run.setup_error == "");
    REQUIRE(run.result.outcome == Outcome::kExited);
    auto c = parse_vm_config(config_with({{{"op", "fill"}, {"at", "1M"}, {"length", 8}, {"pattern", p}}}), "t");
    REQUIRE(c);
    const guest::Pattern pattern = c->program[0].as<guest::Fill>().pattern;
    for (uint64_t gpa = 1 << 20; gpa < (1 << 20) + (16 << 10); gpa += 8) {
      if (word_at(*run.vm, gpa) != pattern.word(gpa)) {
        FAIL(fmt::format("word at {:#x} is {:#x}, host expects {:#x}", gpa, word_at(*run.vm, gpa), pattern.word(gpa)));
      }
    }
    CHECK(word_at(*run.vm, (1 << 20) + (16 << 10)) == 0);  // nothing past the range
  }
}

TEST_CASE("verify reports the first mismatching word with both values", "[kvm][vm]") {
  REQUIRE_KVM();
  auto run = test::run_guest(config_with({{{"op", "fill"}, {"at", "2M"}, {"length", "4K"}, {"pattern", "address"}},
                                    {{"op", "fill"}, {"at", "0x200ff8"}, {"length", 8}, {"pattern", {{"byte", 0xff}}}},
                                    {{"op", "verify"}, {"at", "2M"}, {"length", "4K"}, {"pattern", "address"}},
                                    {{"op", "print"}, {"text", "not reached"}}}));
  REQUIRE(run.setup_error == "");
  CHECK(run.result.outcome == Outcome::kFailed);
  CHECK(run.result.process_exit_code() == 1);
  CHECK(run.result.console == "");
  CHECK(run.result.message ==
        "verify failed at guest-physical 0x200ff8: expected 0x0000000000200ff8, read 0xffffffffffffffff");
}

TEST_CASE("touch writes one word per stride and leaves the rest alone", "[kvm][vm]") {
  REQUIRE_KVM();
  auto run = test::run_guest(config_with({{{"op", "touch"}, {"at", "1M"}, {"length", "64K"}, {"stride", "16K"}},
                                    {{"op", "touch"}, {"at", "2M"}, {"length", "64K"}, {"write", false}}}));
  REQUIRE(run.setup_error == "");
  REQUIRE(run.result.outcome == Outcome::kExited);
  for (uint64_t off = 0; off < (64 << 10); off += 8) {
    const uint64_t gpa = (1 << 20) + off;
    const uint64_t want = off % (16 << 10) == 0 ? gpa : 0;
    if (word_at(*run.vm, gpa) != want) FAIL(fmt::format("word at {:#x}", gpa));
  }
  CHECK(word_at(*run.vm, 2 << 20) == 0);  // a read touch writes nothing
}

TEST_CASE("loops repeat their body, nested ones multiply", "[kvm][vm]") {
  REQUIRE_KVM();
  auto run = test::run_guest(config_with(
      {{{"op", "loop"},
        {"count", 2},
        {"body",
         {{{"op", "print"}, {"text", "["}},
          {{"op", "loop"}, {"count", 3}, {"body", {{{"op", "print"}, {"text", "x"}}}}},
          {{"op", "print"}, {"text", "]"}}}}}}));
  REQUIRE(run.setup_error == "");
  CHECK(run.result.outcome == Outcome::kExited);
  CHECK(run.result.console == "[xxx][xxx]");
}

TEST_CASE("the exit code reaches the result; a program without exit ends with 0", "[kvm][vm]") {
  REQUIRE_KVM();
  auto seven = test::run_guest(config_with({{{"op", "exit"}, {"code", 7}}, {{"op", "print"}, {"text", "not reached"}}}));
  REQUIRE(seven.setup_error == "");
  CHECK(seven.result.outcome == Outcome::kExited);
  CHECK(seven.result.guest_exit_code == 7);
  CHECK(seven.result.process_exit_code() == 1);
  CHECK(seven.result.console == "");
  auto empty = test::run_guest(config_with(json::array()));
  REQUIRE(empty.setup_error == "");
  CHECK(empty.result.outcome == Outcome::kExited);
  CHECK(empty.result.guest_exit_code == 0);
}

TEST_CASE("every guest fault ends the run with a message that says what and where", "[kvm][vm]") {
  REQUIRE_KVM();
  struct Case {
    const char* kind;
    Outcome outcome;
    const char* want;
  } cases[] = {
      {"divide-by-zero", Outcome::kFailed, "guest exception #DE divide error (vector 0) at rip 0x5"},
      {"invalid-opcode", Outcome::kFailed, "guest exception #UD invalid opcode (vector 6) at rip 0x50000"},
      {"breakpoint", Outcome::kFailed, "guest exception #BP breakpoint (vector 3)"},
      {"unmapped-read", Outcome::kFailed, "guest exception #PF page fault (vector 14)"},
      {"halt", Outcome::kFailed, "guest exception #GP general protection (vector 13) at rip 0x50000"},
      {"unknown-port", Outcome::kFailed, "guest wrote to I/O port 0x80, which has no device"},
      {"spin", Outcome::kTimeout, "guest did not finish within 200 ms; it was at rip 0x50000"},
  };
  for (const auto& c : cases) {
    INFO(c.kind);
    json config = config_with({{{"op", "fault"}, {"kind", c.kind}}});
    config["timeout_ms"] = 200;
    auto run = test::run_guest(config);
    REQUIRE(run.setup_error == "");
    CHECK(run.result.outcome == c.outcome);
    CHECK(run.result.process_exit_code() == 1);
    INFO(run.result.message);
    CHECK(run.result.message.rfind(c.want, 0) == 0);
  }
}

TEST_CASE("an unmapped read reports the faulting address in cr2", "[kvm][vm]") {
  REQUIRE_KVM();
  auto run = test::run_guest(config_with({{{"op", "fault"}, {"kind", "unmapped-read"}}}));
  CHECK(run.result.message.find("error code 0x4, cr2 0x7ffffffffff8") != std::string::npos);
}

TEST_CASE("hostile hypercall arguments get a negative errno and are counted", "[kvm][vm][hypercall]") {
  REQUIRE_KVM();
  const uint64_t ram = 8 << 20;
  auto hc = [](uint32_t nr, json args, json expect) {
    return json{{"op", "hypercall"}, {"nr", nr}, {"args", std::move(args)}, {"expect", std::move(expect)}};
  };
  auto run = test::run_guest(config_with({
      hc(abi::kHcVersion, json::array(), abi::kVersion),
      hc(abi::kHcConsoleWrite, {guest::layout::kProgramAddr, 0}, 0),                      // empty write is fine
      hc(abi::kHcConsoleWrite, {ram - 4, 8}, "-EFAULT"),                         // runs past RAM
      hc(abi::kHcConsoleWrite, {ram, 1}, "-EFAULT"),                             // starts at the end
      hc(abi::kHcConsoleWrite, {"0xfffffffffffffff0", "0x20"}, "-EFAULT"),      // wraps past 2^64
      hc(abi::kHcConsoleWrite, {"0x8000000000000000", 1}, "-EFAULT"),           // far outside
      hc(abi::kHcConsoleWrite, {guest::layout::kProgramAddr, abi::kConsoleMax + 1}, "-EINVAL"),  // too long
      hc(abi::kHcConsoleWrite, {"0xffffffffffffffff", "0xffffffffffffffff"}, "-EINVAL"),
      hc(99, json::array(), "-ENOSYS"),
      hc(0xffffffff, {1, 2, 3, 4, 5, 6}, "-ENOSYS"),
      {{"op", "print"}, {"text", "still here\n"}},
  }));
  REQUIRE(run.setup_error == "");
  INFO(run.result.message);
  CHECK(run.result.outcome == Outcome::kExited);
  CHECK(run.result.console == "still here\n");
  CHECK(run.result.hypercalls.invalid == 8);
  CHECK(run.result.hypercalls.unknown == 2);
  CHECK(run.result.hypercalls.calls[abi::kHcConsoleWrite] == 8);
}

TEST_CASE("a hypercall step whose status differs fails with number, expected and actual", "[kvm][vm][hypercall]") {
  REQUIRE_KVM();
  auto run = test::run_guest(config_with({{{"op", "hypercall"}, {"nr", 42}, {"expect", 0}}}));
  REQUIRE(run.setup_error == "");
  CHECK(run.result.outcome == Outcome::kFailed);
  CHECK(run.result.message == fmt::format("hypercall 42 returned {}, expected 0", -ENOSYS));
}

TEST_CASE("a guest can fake neither an exit nor a success after failing", "[kvm][vm][hypercall]") {
  REQUIRE_KVM();
  // kHcFail from the program itself ends the run, whatever follows.
  auto run = test::run_guest(config_with({{{"op", "hypercall"}, {"nr", abi::kHcFail}, {"args", {1, 0x100000, 1, 2}}},
                                    {{"op", "exit"}, {"code", 0}}}));
  CHECK(run.result.outcome == Outcome::kFailed);
  CHECK(run.result.message == "verify failed at guest-physical 0x100000: expected 0x0000000000000001, read 0x0000000000000002");
}

TEST_CASE("a guest with 1 GiB pages boots where the host offers them", "[kvm][vm]") {
  REQUIRE_KVM();
  json config = config_with({{{"op", "fill"}, {"at", "0x3ff00000"}, {"length", "1M"}, {"pattern", "address"}},
                       {{"op", "verify"}, {"at", "0x3ff00000"}, {"length", "1M"}, {"pattern", "address"}}},
                      "1G");
  config["guest_page_size"] = "1G";
  auto run = test::run_guest(config);
  if (run.setup_error.find("does not offer 1 GiB guest pages") != std::string::npos) {
    WARN("host has no 1 GiB pages: " << run.setup_error);
    return;
  }
  REQUIRE(run.setup_error == "");
  INFO(run.result.message);
  CHECK(run.result.outcome == Outcome::kExited);
}

TEST_CASE("booting commits only the pages of the boot structures", "[kvm][vm]") {
  REQUIRE_KVM();
  auto run = test::run_guest(config_with(json::array(), "64M"));
  REQUIRE(run.setup_error == "");
  REQUIRE(run.result.outcome == Outcome::kExited);
  auto resident = run.vm->memory().resident_bytes();
  REQUIRE(resident);
  // GDT, IDT, TSS, stubs, a stack page, PML4, PDPT, PD, code: 9 pages at most.
  CHECK(*resident <= 9 * 4096);
  CHECK(*resident >= 4 * 4096);
}

TEST_CASE("each way a run ends has its failure kind", "[kvm][vm]") {
  REQUIRE_KVM();
  struct Case {
    json step;
    FailureKind kind;
  } cases[] = {
      {{{"op", "exit"}, {"code", 3}}, FailureKind::kNone},
      {{{"op", "verify"}, {"at", "2M"}, {"length", 64}, {"pattern", "address"}}, FailureKind::kIntegrity},
      {{{"op", "fault"}, {"kind", "invalid-opcode"}}, FailureKind::kGuest},
      {{{"op", "fault"}, {"kind", "unknown-port"}}, FailureKind::kGuest},
      {{{"op", "fault"}, {"kind", "spin"}}, FailureKind::kTimeout},
  };
  for (const auto& c : cases) {
    INFO(c.step.dump());
    json config = config_with({c.step});
    config["timeout_ms"] = 200;
    auto run = test::run_guest(config);
    REQUIRE(run.setup_error == "");
    CHECK(run.result.failure == c.kind);
  }
}

TEST_CASE("a VM stopped from another thread ends at once with the stop's kind and message", "[kvm][vm][threads]") {
  REQUIRE_KVM();
  json config = config_with({{{"op", "fault"}, {"kind", "spin"}}});
  config["timeout_ms"] = 60'000;
  auto g = test::create_guest(config);
  REQUIRE(g.setup_error == "");
  const auto start = std::chrono::steady_clock::now();
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    g.vm->stop(FailureKind::kStopped, "stopped by SIGINT");
    g.vm->stop(FailureKind::kMemoryLimit, "a second stop is ignored");
  });
  RunResult r = g.vm->run(nullptr);
  stopper.join();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(r.outcome == RunResult::Outcome::kStopped);
  CHECK(r.failure == FailureKind::kStopped);
  CHECK(r.message == "stopped by SIGINT");
  CHECK(r.process_exit_code() == 1);
  CHECK(s < 10);  // not the 60 s watchdog
}

TEST_CASE("a VM stopped before it runs does not run", "[kvm][vm]") {
  REQUIRE_KVM();
  auto g = test::create_guest(config_with({{{"op", "print"}, {"text", "never"}}}));
  REQUIRE(g.setup_error == "");
  g.vm->stop(FailureKind::kMemoryLimit, "over the memory limit");
  RunResult r = g.vm->run(nullptr);
  CHECK(r.outcome == RunResult::Outcome::kStopped);
  CHECK(r.failure == FailureKind::kMemoryLimit);
  CHECK(r.console == "");
  g.vm->stop(FailureKind::kStopped, "after the run: harmless");
}

TEST_CASE("a guest that prints in a loop keeps the console at its bound, head and tail", "[kvm][vm]") {
  REQUIRE_KVM();
  // 100,000 prints of 16 bytes: 1.6 MB, twelve times the console's bound.
  const std::string line = "0123456789abcd\n";
  const uint64_t count = 100'000;
  json config = config_with({{{"op", "loop"}, {"count", count}, {"body", {{{"op", "print"}, {"text", line}}}}},
                             {{"op", "print"}, {"text", "the end\n"}}});
  config["timeout_ms"] = 60'000;
  auto run = test::run_guest(config);
  REQUIRE(run.setup_error == "");
  INFO(run.result.message);
  REQUIRE(run.result.outcome == Outcome::kExited);
  const uint64_t written = count * line.size() + 8;
  const size_t bound = Console::kHeadBytes + Console::kTailBytes;
  CHECK(run.result.console.size() == bound);
  CHECK(run.result.console_dropped_bytes == written - bound);
  CHECK(run.result.console.rfind(line + line, 0) == 0);  // the head starts at the start
  CHECK(run.result.console.ends_with(line + "the end\n"));  // the tail ends at the end
}

TEST_CASE("a guest's exit code is reduced to 0..255, as abi.h says", "[kvm][vm]") {
  REQUIRE_KVM();
  struct Case {
    uint64_t code;
    uint64_t reduced;
    int process_exit;
  } cases[] = {{2147811379, 0x33, 1}, {256, 0, 0}, {0xffffffffffffffff, 255, 1}, {255, 255, 1}};
  for (const Case& c : cases) {
    INFO(c.code);
    auto run = test::run_guest(config_with(
        {{{"op", "hypercall"}, {"nr", abi::kHcExit}, {"args", {fmt::format("{:#x}", c.code)}}}}));
    REQUIRE(run.setup_error == "");
    CHECK(run.result.outcome == Outcome::kExited);
    CHECK(run.result.guest_exit_code == c.reduced);
    CHECK(run.result.process_exit_code() == c.process_exit);
  }
}

TEST_CASE("a paused VM makes no progress until it is resumed", "[kvm][vm][threads]") {
  REQUIRE_KVM();
  json config = config_with({{{"op", "loop"}, {"count", 100'000'000}, {"body", {{{"op", "print"}, {"text", "x"}}}}}});
  config["timeout_ms"] = 60'000;
  auto g = test::create_guest(config);
  REQUIRE(g.setup_error == "");
  std::atomic<uint64_t> printed{0};
  uint64_t before = 0, during = 0, after = 0;
  std::thread pauser([&] {
    auto wait_for_progress = [&](uint64_t from) {
      for (int i = 0; i < 2000 && printed.load() <= from + 10; i++) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    };
    wait_for_progress(0);
    g.vm->pause();
    before = printed.load();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    during = printed.load();
    g.vm->resume();
    wait_for_progress(during);
    after = printed.load();
    g.vm->stop(FailureKind::kStopped, "test over");
  });
  RunResult r = g.vm->run([&](std::string_view s) { printed += s.size(); });
  pauser.join();
  CHECK(r.outcome == Outcome::kStopped);
  INFO("before " << before << " during " << during << " after " << after);
  CHECK(before > 0);
  CHECK(during - before <= 1);  // a hypercall under way when the pause began may finish
  CHECK(after > during + 10);
}

TEST_CASE("a touch whose cursor would wrap past 2^64 stops there, in the guest's code too", "[kvm][vm]") {
  REQUIRE_KVM();
  // Built on the host, past config validation: the cursor after the first
  // word would wrap to the report list, which the program may write.
  const uint64_t at = 0x100000, target = guest::layout::kReportListAddr;
  std::vector<guest::Step> steps{guest::Touch{.at = at, .length = 2 << 20, .stride = target - at}};
  auto image = guest::build(steps, {.ram_bytes = 8 << 20});
  REQUIRE(image);
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  auto file = MemoryFile::create(memory_file_options_for(8 << 20));
  REQUIRE(file);
  VmConfig c;
  c.name = "wrap";
  c.memory = 8 << 20;
  c.timeout_ms = 5000;
  c.program = steps;
  auto vm = Vm::create(*kvm, **file, c, *image);
  REQUIRE(vm);
  auto r = (*vm)->run(nullptr);
  INFO(r.message);
  CHECK(r.outcome == Outcome::kExited);
  CHECK(word_at(**vm, at) == at);
  CHECK(word_at(**vm, target) == 0);
}
