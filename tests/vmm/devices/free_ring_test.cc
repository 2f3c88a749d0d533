// The free ring from several vCPUs at once: a ring and a doorbell per
// vCPU, one host thread draining them all, and the refusals a hostile
// guest's ring setups get. [vcpus] and [free] put these in `make tsan`.
#include <cerrno>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "guest/abi.h"
#include "guest/layout.h"
#include "tests/support.h"
#include "tests/vmm/guest_runner.h"

using namespace kvmem;
using json = nlohmann::json;
using Outcome = RunResult::Outcome;
namespace layout = guest::layout;

namespace {

json vm_of(unsigned vcpus, json programs, const char* memory = "64M") {
  return json{{"memory", memory}, {"timeout_ms", 20000}, {"vcpus", vcpus}, {"programs", std::move(programs)}};
}
json fill(uint64_t at, uint64_t length, uint64_t seed) {
  return {{"op", "fill"}, {"at", at}, {"length", length}, {"pattern", {{"seed", seed}}}};
}
json verify(uint64_t at, uint64_t length, json pattern) {
  return {{"op", "verify"}, {"at", at}, {"length", length}, {"pattern", std::move(pattern)}};
}
json hc(uint32_t nr, json args, json expect) {
  return json{{"op", "hypercall"}, {"nr", nr}, {"args", std::move(args)}, {"expect", std::move(expect)}};
}
const json kBarrier = {{"op", "barrier"}};

}  // namespace

TEST_CASE("each vCPU's ring gets its own slice of the ring area, with fewer slots", "[vcpus][free]") {
  CHECK(layout::free_ring_entries(1) == 1024);
  CHECK(layout::free_ring_entries(2) == 512);
  CHECK(layout::free_ring_entries(4) == 256);
  CHECK(layout::free_ring_entries(16) == 64);
  for (unsigned n = 1; n <= layout::kMaxVcpus; n++) {
    INFO(n << " vCPUs");
    const uint64_t bytes = sizeof(abi::FreeRingHeader) + layout::free_ring_entries(n) * sizeof(abi::FreeReport);
    CHECK(layout::free_ring_addr(0, n) == layout::kFreeRingAddr);
    CHECK(layout::free_ring_addr(n - 1, n) + bytes <= layout::kFreeRingEnd);
    for (unsigned i = 0; i + 1 < n; i++) CHECK(layout::free_ring_addr(i, n) + bytes <= layout::free_ring_addr(i + 1, n));
  }
  CHECK(abi::doorbell_port(0) == abi::kDoorbellPort);
  CHECK(abi::doorbell_port(layout::kMaxVcpus - 1) == 0xf8);
}

// Each vCPU fills a slice of its own, meets the others, frees half of its
// slice through its ring (4 KiB ranges every 8 KiB, so each drain makes
// many punches and parks the vCPUs), verifies, and does it again: the
// rings are drained while the other vCPUs fill, verify and free.
TEST_CASE("2 and 4 vCPUs async-free disjoint slices at once and read zeros where they freed", "[vcpus][free][kvm]") {
  REQUIRE_KVM();
  constexpr uint64_t kSlice = 1 << 20, kBase = 4 << 20, kRounds = 3;
  for (unsigned n : {2u, 4u}) {
    INFO(n << " vCPUs");
    json programs = json::array();
    for (unsigned i = 0; i < n; i++) {
      const uint64_t at = kBase + i * kSlice;
      json body = {fill(at, kSlice, i + 1),
                   kBarrier,
                   {{"op", "free"}, {"at", at}, {"length", kSlice}, {"granule", "4K"}, {"stride", "8K"},
                    {"batch", 32}, {"mode", "async"}},
                   verify(at, 4096, "zero"),
                   verify(at + 4096, 4096, {{"seed", i + 1}}),
                   verify(at + kSlice - 8192, 4096, "zero"),
                   verify(at + kSlice - 4096, 4096, {{"seed", i + 1}})};
      programs.push_back({{{"op", "loop"}, {"count", kRounds}, {"body", body}},
                          {{"op", "report"}, {"mode", "async"},
                           {"ranges", {{at + 4096, 4096}, {at + 3 * 4096, 4096}}},
                           {"expect", {0, 0}}},
                          verify(at + 4096, 3 * 4096, "zero")});
    }
    auto run = test::run_guest(vm_of(n, programs));
    REQUIRE(run.setup_error == "");
    INFO(run.result.message);
    REQUIRE(run.result.outcome == Outcome::kExited);
    // Half of each slice per round, then two more pages per vCPU.
    CHECK(run.result.bytes_decommitted == n * (kRounds * kSlice / 2 + 2 * 4096));
    CHECK(run.result.free_ranges == n * (kRounds * kSlice / 8192 + 2));
    CHECK(run.result.free_ranges_invalid == 0);
    CHECK(run.result.hypercalls.calls[abi::kHcFreeRingSetup] == n);
  }
}

TEST_CASE("a batch may fill the vCPU's own ring and no more", "[vcpus][config][free]") {
  auto parse = [](unsigned vcpus, uint64_t batch) {
    json programs = json::array();
    for (unsigned i = 0; i < vcpus; i++)
      programs.push_back({{{"op", "free"}, {"at", "4M"}, {"length", "4M"}, {"batch", batch}, {"mode", "async"}}});
    auto c = test::create_guest(vm_of(vcpus, programs));
    return c.setup_error;
  };
  CHECK(parse(2, 512) == "");
  CHECK(parse(2, 513).find("/programs/0/0/batch: must be 1..512") != std::string::npos);
  CHECK(parse(4, 256) == "");
  CHECK(parse(4, 257).find("must be 1..256") != std::string::npos);
}

// vCPU 1 sets its ring up by hand; vCPU 0's comes from its async free.
TEST_CASE("hostile ring setups from several vCPUs are refused with the right errno", "[vcpus][free][hypercall][kvm]") {
  REQUIRE_KVM();
  const uint64_t ring0 = layout::free_ring_addr(0, 2), ring1 = layout::free_ring_addr(1, 2);
  const uint64_t entries = layout::free_ring_entries(2);
  json vcpu0 = {{{"op", "free"}, {"at", "4M"}, {"length", "64K"}, {"mode", "async"}},  // sets up ring0
                kBarrier, kBarrier};
  json vcpu1 = {
      kBarrier,
      hc(abi::kHcFreeRingWait, {0}, "-EINVAL"),                                // no ring of its own yet
      hc(abi::kHcFreeRingSetup, {ring0, entries}, "-EBUSY"),                   // vCPU 0's ring
      hc(abi::kHcFreeRingSetup, {ring0 + 64 * 32, 16}, "-EBUSY"),              // inside vCPU 0's ring
      hc(abi::kHcFreeRingSetup, {ring0 + 0x4000, 16}, "-EBUSY"),              // over its last slots
      hc(abi::kHcFreeRingSetup, {"0x3ffff00", 16}, "-EFAULT"),                 // past RAM
      hc(abi::kHcFreeRingSetup, {"0xffffffffffffffc0", 16}, "-EFAULT"),        // wraps past 2^64
      hc(abi::kHcFreeRingSetup, {ring1, 0}, "-EINVAL"),                        // no slots
      hc(abi::kHcFreeRingSetup, {ring1, 48}, "-EINVAL"),                       // not a power of two
      hc(abi::kHcFreeRingSetup, {ring1, abi::kRingMaxEntries * 2}, "-EINVAL"), // too many
      hc(abi::kHcFreeRingSetup, {ring1 + 8, 16}, "-EINVAL"),                   // unaligned
      hc(abi::kHcFreeRingSetup, {ring1, entries}, 0),
      hc(abi::kHcFreeRingSetup, {ring1, entries}, "-EBUSY"),                   // only once per vCPU
      hc(abi::kHcFreeRingWait, {0}, 0),
      hc(abi::kHcFreeRingWait, {1}, "-EINVAL"),                                // never produced
      kBarrier};
  auto run = test::run_guest(vm_of(2, {vcpu0, vcpu1}));
  REQUIRE(run.setup_error == "");
  INFO(run.result.message);
  CHECK(run.result.outcome == Outcome::kExited);
  CHECK(run.result.hypercalls.invalid == 12);
  CHECK(run.result.bytes_decommitted == 64 * 1024);
}

// vCPU 1 rings vCPU 0's doorbell with nothing produced, and its own before
// it has a ring: the first is a drain of nothing, the second an exit to a
// port with no device.
TEST_CASE("a doorbell without a ring is a port with no device; another vCPU's rings harmlessly", "[vcpus][free][kvm]") {
  REQUIRE_KVM();
  json vcpu0 = {{{"op", "free"}, {"at", "4M"}, {"length", "64K"}, {"mode", "async"}}, kBarrier, kBarrier};
  json vcpu1 = {kBarrier, {{"op", "out"}, {"port", abi::doorbell_port(0)}}, kBarrier,
                {{"op", "out"}, {"port", abi::doorbell_port(1)}}};
  auto run = test::run_guest(vm_of(2, {vcpu0, vcpu1}));
  REQUIRE(run.setup_error == "");
  CHECK(run.result.outcome == Outcome::kFailed);
  CHECK(run.result.message.find("vCPU 1: guest wrote to I/O port 0xea, which has no device") == 0);
  CHECK(run.result.bytes_decommitted == 64 * 1024);
}
