// The prefault engine: eager and ahead over guest RAM, with and without a
// guest running on it.
#include <catch2/catch.hpp>

#include "tests/vmm/memory/ram_helpers.h"
#include <nlohmann/json.hpp>

#include "tests/support.h"
#include "tests/vmm/guest_runner.h"
#include "vmm/memory/guest_memory.h"
#include "vmm/memory/prefault.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

constexpr uint64_t kMiB = 1 << 20;

test::Ram make_ram(uint64_t size, uint64_t unit) { return test::make_ram(size, unit, 1ull << 34); }

uint64_t resident(const GuestMemory& m) {
  auto r = m.resident_bytes();
  REQUIRE(r);
  return *r;
}

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
