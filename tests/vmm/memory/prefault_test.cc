// The prefault engine: eager and ahead over guest RAM, with and without a
// guest running on it, on memfd, anon and hugetlb RAM.
#include <catch2/catch.hpp>

#include "tests/vmm/memory/backing_host.h"
#include "tests/vmm/memory/ram_helpers.h"
#include <nlohmann/json.hpp>

#include "tests/support.h"
#include "tests/vmm/guest_runner.h"
#include "vmm/memory/guest_memory.h"
#include "vmm/memory/prefault.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

using test::file_usage;
using test::resident;

constexpr uint64_t kMiB = 1 << 20;

test::Ram make_ram(uint64_t size, uint64_t unit) { return test::make_ram(size, unit, 1ull << 34); }

}  // namespace

TEST_CASE("prefault names parse both ways", "[backing]") {
  for (Prefault p : {Prefault::kNone, Prefault::kEager, Prefault::kAhead}) CHECK(parse_prefault(prefault_name(p)) == p);
  CHECK_FALSE(parse_prefault("lazy"));
  CHECK(default_prefault_threads() >= 1);
}

TEST_CASE("eager prefault makes every page of RAM resident, across pieces", "[backing]") {
  test::Ram ram = make_ram(16 * kMiB, 2 * kMiB);  // several allocations
  CHECK(resident(*ram.memory) == 0);
  auto st = prefault_eager(*ram.memory);
  REQUIRE(st);
  CHECK(st->mode == Prefault::kEager);
  CHECK(st->bytes == 16 * kMiB);
  CHECK(st->errors == 0);
  CHECK(st->threads == 1);
  CHECK(resident(*ram.memory) == 16 * kMiB);
  // Populating wrote nothing.
  CHECK(ram.memory->read(GuestRange(0, 4096)) == std::string(4096, '\0'));
}

TEST_CASE("ahead prefault walks every lane to its end", "[backing]") {
  test::Ram ram = make_ram(32 * kMiB, 4 * kMiB);
  PrefaultOptions o;
  o.threads = 2;
  o.chunk = 256 * 1024;
  // Lanes of different lengths, one not chunk-aligned at its end.
  o.lanes = {GuestRange(2 * kMiB, 10 * kMiB), GuestRange(10 * kMiB, 11 * kMiB + 4096),
             GuestRange(16 * kMiB, 32 * kMiB)};
  auto a = PrefaultAhead::start(*ram.memory, o);
  REQUIRE(a);
  (*a)->wait();
  const PrefaultStats st = (*a)->stats();
  const uint64_t want = 8 * kMiB + kMiB + 4096 + 16 * kMiB;
  CHECK(st.bytes == want);
  CHECK(st.threads == 2);
  CHECK(st.errors == 0);
  CHECK_FALSE(st.stopped);
  CHECK(st.wall_ms >= 0);
  CHECK(st.cpu_ms > 0);
  CHECK(resident(*ram.memory) == want);
  (*a)->stop();  // after wait: nothing left to join
}

TEST_CASE("ahead prefault stops when asked and joins its threads", "[backing]") {
  test::Ram ram = make_ram(512 * kMiB, 512 * kMiB);
  PrefaultOptions o;
  o.threads = 0;  // the engine picks
  o.chunk = 4096;
  auto a = PrefaultAhead::start(*ram.memory, o);
  REQUIRE(a);
  (*a)->stop();
  const PrefaultStats st = (*a)->stats();
  CHECK(st.threads == default_prefault_threads());
  CHECK(st.bytes <= 512 * kMiB);
  CHECK(st.stopped == (st.bytes < 512 * kMiB));
  a->reset();  // the destructor after stop(): no second join
}

TEST_CASE("prefault refuses lanes outside RAM and bad chunks", "[backing]") {
  test::Ram ram = make_ram(8 * kMiB, 8 * kMiB);
  PrefaultOptions o;
  o.lanes = {GuestRange(4 * kMiB, 12 * kMiB)};
  auto e = prefault_eager(*ram.memory, o);
  REQUIRE_FALSE(e);
  CHECK_THAT(e.error().message, Catch::Contains("prefault lane") && Catch::Contains("RAM [0, 0x800000)"));
  o.lanes = {GuestRange(4096, 4096 + 100)};
  CHECK_FALSE(PrefaultAhead::start(*ram.memory, o));
  o.lanes = {};
  o.chunk = 1000;
  auto c = PrefaultAhead::start(*ram.memory, o);
  REQUIRE_FALSE(c);
  CHECK_THAT(c.error().message, Catch::Contains("chunk"));
}

TEST_CASE("a VM with eager prefault has all RAM resident before it runs", "[backing][kvm]") {
  REQUIRE_KVM();
  const json config = {{"memory", "32M"},
                       {"program",
                        {{{"op", "fill"}, {"at", "1M"}, {"length", "31M"}, {"pattern", {{"seed", 5}}}},
                         {{"op", "verify"}, {"at", "1M"}, {"length", "31M"}, {"pattern", {{"seed", 5}}}}}}};
  auto g = test::create_guest(config, [](VmConfig& c) { c.prefault = Prefault::kEager; });
  REQUIRE(g.setup_error == "");
  CHECK(resident(g.vm->memory()) == 32 * kMiB);
  g.result = g.vm->run(nullptr);
  INFO(g.result.message);
  CHECK(g.result.process_exit_code() == 0);
  CHECK(g.result.prefault.mode == Prefault::kEager);
  CHECK(g.result.prefault.bytes == 32 * kMiB);
  CHECK(g.result.prefault.errors == 0);
}

TEST_CASE("ahead prefault runs beside a guest that fills and verifies its slices", "[backing][kvm]") {
  REQUIRE_KVM();
  const json fill = {{"op", "fill"}, {"at", "0"}, {"length", "31M"}, {"pattern", {{"seed", 9}}}};
  json a = fill, b = fill;
  a["at"] = "1M";
  a["length"] = "31M";
  b["at"] = "32M";
  b["length"] = "32M";
  json va = a, vb = b;
  va["op"] = vb["op"] = "verify";
  const json config = {{"memory", "64M"}, {"vcpus", 2}, {"programs", {{a, va}, {b, vb}}}};
  auto g = test::create_guest(config, [](VmConfig& c) {
    c.prefault = Prefault::kAhead;
    c.prefault_threads = 2;
    c.prefault_lanes = {GuestRange(1 * kMiB, 32 * kMiB), GuestRange(32 * kMiB, 64 * kMiB)};
  });
  REQUIRE(g.setup_error == "");
  g.result = g.vm->run(nullptr);
  INFO(g.result.message);
  CHECK(g.result.process_exit_code() == 0);
  const PrefaultStats& st = g.result.prefault;
  CHECK(st.mode == Prefault::kAhead);
  CHECK(st.threads == 2);
  CHECK(st.errors == 0);
  CHECK(st.bytes <= 63 * kMiB);
  CHECK(st.bytes % 4096 == 0);
  CHECK(resident(g.vm->memory()) >= 63 * kMiB);
}

TEST_CASE("ahead prefault stops cleanly when the guest fails at once", "[backing][kvm]") {
  REQUIRE_KVM();
  const json config = {{"memory", "1G"}, {"program", {{{"op", "fault"}, {"kind", "invalid-opcode"}}}}};
  auto g = test::create_guest(config, [](VmConfig& c) {
    c.prefault = Prefault::kAhead;
    c.prefault_chunk = 4096;
  });
  REQUIRE(g.setup_error == "");
  g.result = g.vm->run(nullptr);
  CHECK(g.result.outcome == RunOutcome::kFailed);
  CHECK(g.result.prefault.threads == 1);
  CHECK(g.result.prefault.errors == 0);
  CHECK(g.result.prefault.stopped == (g.result.prefault.bytes < (1ull << 30)));
}

TEST_CASE("bad prefault lanes fail Vm::create", "[backing][kvm]") {
  REQUIRE_KVM();
  const json config = {{"memory", "8M"}, {"program", json::array()}};
  auto g = test::create_guest(config, [](VmConfig& c) {
    c.prefault = Prefault::kAhead;
    c.prefault_lanes = {GuestRange(0, 16 * kMiB)};
  });
  CHECK_THAT(g.setup_error, Catch::Contains("prefault lane"));
}

TEST_CASE("eager and ahead prefault populate anonymous RAM, and it still reads as zeros", "[backing]") {
  test::Ram eager = test::make_backed_ram(RamBacking::kAnon, 16 * kMiB);
  auto st = prefault_eager(*eager.memory);
  REQUIRE(st);
  CHECK(st->bytes == 16 * kMiB);
  CHECK(st->errors == 0);
  CHECK(resident(*eager.memory) == 16 * kMiB);
  CHECK(eager.memory->read(GuestRange(15 * kMiB, 16 * kMiB)) == std::string(kMiB, '\0'));
  CHECK(file_usage(*eager.file) == 0);  // none of it in the file

  test::Ram ahead = test::make_backed_ram(RamBacking::kAnon, 16 * kMiB);
  PrefaultOptions o;
  o.threads = 2;
  o.chunk = 512 * 1024;
  o.lanes = {GuestRange(2 * kMiB, 6 * kMiB), GuestRange(8 * kMiB, 9 * kMiB + 4096)};
  auto a = PrefaultAhead::start(*ahead.memory, o);
  REQUIRE(a);
  (*a)->wait();
  CHECK((*a)->stats().bytes == 5 * kMiB + 4096);
  CHECK((*a)->stats().errors == 0);
  CHECK(resident(*ahead.memory) == 5 * kMiB + 4096);
}

TEST_CASE("eager and ahead prefault populate hugetlb RAM a whole 2 MiB page at a time", "[backing]") {
  test::BackingHost host(RamBacking::kHugetlb, 16 * kMiB, "prefault on hugetlb RAM");
  if (!host.ok()) return;
  test::Ram ram = test::make_backed_ram(RamBacking::kHugetlb, 16 * kMiB);
  PrefaultOptions o;
  o.lanes = {GuestRange(2 * kMiB, 6 * kMiB)};
  auto st = prefault_eager(*ram.memory, o);
  REQUIRE(st);
  CHECK(st->bytes == 4 * kMiB);
  CHECK(st->errors == 0);
  CHECK(file_usage(*ram.file) == 4 * kMiB);
  // A lane of one 4 KiB page commits the huge page around it.
  o.lanes = {GuestRange(8 * kMiB + 4096, 8 * kMiB + 8192)};
  st = prefault_eager(*ram.memory, o);
  REQUIRE(st);
  INFO(st->error);
  CHECK(st->bytes == 4096);
  CHECK(st->errors == 0);
  CHECK(file_usage(*ram.file) == 6 * kMiB);

  o.threads = 2;
  o.chunk = 2 * kMiB;
  o.lanes = {GuestRange(10 * kMiB, 16 * kMiB)};
  auto a = PrefaultAhead::start(*ram.memory, o);
  REQUIRE(a);
  (*a)->wait();
  CHECK((*a)->stats().bytes == 6 * kMiB);
  CHECK((*a)->stats().errors == 0);
  CHECK(file_usage(*ram.file) == 12 * kMiB);
  CHECK(ram.memory->read(GuestRange(10 * kMiB, 12 * kMiB)) == std::string(2 * kMiB, '\0'));
}

TEST_CASE("an anon guest with eager prefault and a hugetlb guest with ahead prefault read what they wrote",
          "[backing][kvm]") {
  REQUIRE_KVM();
  const json seed = {{"seed", 11}};
  const json program = {{{"op", "fill"}, {"at", "1M"}, {"length", "31M"}, {"pattern", seed}},
                        {{"op", "verify"}, {"at", "1M"}, {"length", "31M"}, {"pattern", seed}}};
  {
    auto g = test::create_guest({{"memory", "32M"}, {"backing", "anon"}, {"prefault", "eager"}, {"program", program}});
    REQUIRE(g.setup_error == "");
    CHECK(resident(g.vm->memory()) == 32 * kMiB);
    g.result = g.vm->run(nullptr);
    INFO(g.result.message);
    CHECK(g.result.process_exit_code() == 0);
    CHECK(g.result.prefault.mode == Prefault::kEager);
    CHECK(g.result.prefault.bytes == 32 * kMiB);
    CHECK(g.result.prefault.errors == 0);
  }
  test::BackingHost host(RamBacking::kHugetlb, 32 * kMiB, "a hugetlb guest with ahead prefault");
  if (!host.ok()) return;
  auto g = test::create_guest(
      {{"memory", "32M"}, {"backing", "hugetlb"}, {"prefault", "ahead"}, {"prefault_threads", 2}, {"program", program}});
  REQUIRE(g.setup_error == "");
  g.result = g.vm->run(nullptr);
  INFO(g.result.message);
  CHECK(g.result.process_exit_code() == 0);
  CHECK(g.result.prefault.mode == Prefault::kAhead);
  CHECK(g.result.prefault.errors == 0);
  CHECK(g.result.prefault.bytes % (2 * kMiB) == 0);
  // Whatever the threads did not reach, the guest did: all of RAM is held.
  CHECK(file_usage(*g.file) == 32 * kMiB);
}
