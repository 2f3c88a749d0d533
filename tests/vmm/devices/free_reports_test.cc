// Free-page reports from inside real guests: what reclaim did is read back
// by the guest itself, and commit is measured by the allocator and by the
// kernel (st_blocks).
#include <sys/mman.h>

#include <cerrno>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "guest/abi.h"
#include "guest/layout.h"
#include "tests/support.h"
#include "tests/vmm/guest_runner.h"
#include "config/vm_config.h"
#include "harness/runner.h"

using namespace kvmem;
using json = nlohmann::json;
using Outcome = RunResult::Outcome;

namespace {

json vm(json program, const char* memory = "32M") {
  return json{{"memory", memory}, {"timeout_ms", 20000}, {"ram_unit", "2M"}, {"program", std::move(program)}};
}

json fill(const char* at, const char* length, json pattern) {
  return {{"op", "fill"}, {"at", at}, {"length", length}, {"pattern", std::move(pattern)}};
}
json verify(const char* at, const char* length, json pattern) {
  return {{"op", "verify"}, {"at", at}, {"length", length}, {"pattern", std::move(pattern)}};
}
json free_step(const char* at, const char* length, const char* granule, const char* mode) {
  return {{"op", "free"}, {"at", at}, {"length", length}, {"granule", granule}, {"mode", mode}};
}

// Committed bytes as the allocator counts them (after update_usage) and as
// the kernel does (st_blocks).
struct Commit {
  uint64_t ours;
  uint64_t kernel;
};
Commit commit_of(MemoryFile& file) {
  REQUIRE(file.update_usage());
  auto kernel = file.total_usage();
  REQUIRE(kernel);
  return {file.usage().total(), *kernel};
}

}  // namespace

TEST_CASE("freed pages read zero, the rest keep their pattern, in both modes", "[kvm][free]") {
  REQUIRE_KVM();
  for (const char* mode : {"sync", "async"}) {
    for (const char* granule : {"4K", "64K", "2M"}) {
      INFO(mode << " " << granule);
      auto run = test::run_guest(vm({fill("2M", "8M", {{"seed", 11}}), free_step("4M", "4M", granule, mode),
                                     verify("2M", "2M", {{"seed", 11}}), verify("4M", "4M", "zero"),
                                     verify("8M", "2M", {{"seed", 11}})}));
      REQUIRE(run.setup_error == "");
      INFO(run.result.message);
      CHECK(run.result.outcome == Outcome::kExited);
      CHECK(run.result.bytes_reported_free == 4 << 20);
      CHECK(run.result.bytes_decommitted == 4 << 20);
      CHECK(run.result.free_ranges_invalid == 0);
      // Ring setup, exit, the step's final wait, and at most one wait per
      // lap of the 1024-slot ring: no exit per report (4 MiB in 4 KiB
      // ranges is 1024 of them).
      if (std::string(mode) == "async") CHECK(run.result.exits.at("io") <= 4);
    }
  }
}

TEST_CASE("commit drops by what the guest freed, by our count and the kernel's", "[kvm][free]") {
  REQUIRE_KVM();
  for (const char* mode : {"sync", "async"}) {
    INFO(mode);
    // Reading freed pages back commits fresh zero pages, so the guest
    // reports the range again after verifying it.
    auto run = test::run_guest(vm({fill("2M", "16M", "address"), free_step("4M", "8M", "4K", mode),
                                   verify("4M", "8M", "zero"), free_step("4M", "8M", "64K", mode)}));
    REQUIRE(run.setup_error == "");
    REQUIRE(run.result.outcome == Outcome::kExited);
    Commit c = commit_of(*run.file);
    // 16 MiB written, 8 MiB freed: what is left is the other 8 MiB and the
    // boot area's pages (boot structures, code, stack, and the free ring).
    std::span<uint8_t> boot = run.vm->memory().boot_area();
    std::vector<unsigned char> vec(boot.size() / 4096);
    REQUIRE(mincore(boot.data(), boot.size(), vec.data()) == 0);
    uint64_t boot_pages = 0;
    for (unsigned char v : vec) boot_pages += v & 1;
    INFO("ours " << c.ours << " kernel " << c.kernel << " boot pages " << boot_pages);
    CHECK(boot_pages <= 24);
    CHECK(c.ours == (8 << 20) + boot_pages * 4096);
    CHECK(c.kernel == c.ours);
  }
}

TEST_CASE("hostile free reports get the right errno and change nothing", "[kvm][free]") {
  REQUIRE_KVM();
  const json ranges = json::array({json::array({"0x2000000", 4096}),            // at the end of RAM
                                   json::array({"0x1fff000", "0x2000"}),        // runs past the end
                                   json::array({0, 4096}),                      // the boot area
                                   json::array({"0xff000", "0x2000"}),          // straddles its end
                                   json::array({"0x200800", 4096}),             // unaligned start
                                   json::array({"0x200000", 100}),              // unaligned length
                                   json::array({"0x200000", 0}),                // empty
                                   json::array({"0xfffffffffffff000", "0x2000"}),  // wraps past 2^64
                                   json::array({"0x8000000000000000", 4096}),   // far outside
                                   json::array({"0x400000", 4096})});           // fine
  const json expect = {"-EFAULT", "-EFAULT", "-EPERM", "-EPERM", "-EINVAL", "-EINVAL", "-EINVAL", "-EINVAL", "-EFAULT", 0};
  for (const char* mode : {"sync", "async"}) {
    INFO(mode);
    auto run = test::run_guest(vm({fill("1M", "31M", {{"seed", 3}}),
                                   {{"op", "report"}, {"mode", mode}, {"ranges", ranges}, {"expect", expect}},
                                   verify("1M", "3M", {{"seed", 3}}), verify("0x400000", "4K", "zero"),
                                   verify("0x401000", "0x1bff000", {{"seed", 3}})}));
    REQUIRE(run.setup_error == "");
    INFO(run.result.message);
    CHECK(run.result.outcome == Outcome::kExited);
    CHECK(run.result.free_ranges_invalid == 9);
    CHECK(run.result.bytes_decommitted == 4096);
  }
}

TEST_CASE("a status that differs from the expected one fails the run with both", "[kvm][free]") {
  REQUIRE_KVM();
  auto run = test::run_guest(vm({{{"op", "report"}, {"ranges", {{0, 4096}}}, {"expect", {0}}}}));
  CHECK(run.result.outcome == Outcome::kFailed);
  CHECK(run.result.message == fmt::format("free report of guest-physical 0x0 got status {}, expected 0", -EPERM));
}

TEST_CASE("hostile report_free and ring-setup calls are refused as a whole", "[kvm][free][hypercall]") {
  REQUIRE_KVM();
  auto hc = [](uint32_t nr, json args, json expect) {
    return json{{"op", "hypercall"}, {"nr", nr}, {"args", std::move(args)}, {"expect", std::move(expect)}};
  };
  auto run = test::run_guest(vm({
      hc(abi::kHcReportFree, {guest::layout::kReportListAddr, 0}, "-EINVAL"),                   // no entries
      hc(abi::kHcReportFree, {guest::layout::kReportListAddr, abi::kReportMax + 1}, "-EINVAL"), // too many
      hc(abi::kHcReportFree, {"0x1fffff0", 1}, "-EFAULT"),                            // list runs past RAM
      hc(abi::kHcReportFree, {"0xfffffffffffffff8", 1}, "-EFAULT"),                   // list wraps
      hc(abi::kHcReportFree, {guest::layout::kReportListAddr + 4, 1}, "-EFAULT"),               // list unaligned
      hc(abi::kHcFreeRingSetup, {guest::layout::kFreeRingAddr, 3}, "-EINVAL"),                  // not a power of two
      hc(abi::kHcFreeRingSetup, {guest::layout::kFreeRingAddr, 0}, "-EINVAL"),
      hc(abi::kHcFreeRingSetup, {guest::layout::kFreeRingAddr, abi::kRingMaxEntries * 2}, "-EINVAL"),
      hc(abi::kHcFreeRingSetup, {guest::layout::kFreeRingAddr + 8, 16}, "-EINVAL"),             // unaligned
      hc(abi::kHcFreeRingSetup, {"0x1ffff00", 1024}, "-EFAULT"),                      // past RAM
      hc(abi::kHcFreeRingWait, {0}, "-EINVAL"),                                       // no ring yet
      hc(abi::kHcFreeRingSetup, {guest::layout::kFreeRingAddr, 16}, 0),
      hc(abi::kHcFreeRingSetup, {guest::layout::kFreeRingAddr, 16}, "-EBUSY"),                  // only once
      hc(abi::kHcFreeRingWait, {0}, 0),                                               // nothing produced: done
      hc(abi::kHcFreeRingWait, {5}, "-EINVAL"),                                       // never produced
  }));
  REQUIRE(run.setup_error == "");
  INFO(run.result.message);
  CHECK(run.result.outcome == Outcome::kExited);
  CHECK(run.result.hypercalls.invalid == 13);
  CHECK(run.result.bytes_decommitted == 0);
}

TEST_CASE("a guest that lies about its ring's producer is refused once and nothing is damaged", "[kvm][free]") {
  REQUIRE_KVM();
  // A ring outside the boot area, so the program's own steps can scribble
  // on it: produced becomes 2^64 - 1, then the doorbell rings.
  auto run = test::run_guest(vm({fill("4M", "4M", "address"),
                                 {{"op", "hypercall"}, {"nr", abi::kHcFreeRingSetup}, {"args", {"0x200000", 64}}, {"expect", 0}},
                                 {{"op", "fill"}, {"at", "0x200000"}, {"length", 8}, {"pattern", {{"byte", 0xff}}}},
                                 {{"op", "out"}, {"port", abi::kDoorbellPort}},
                                 verify("4M", "4M", "address")}));
  REQUIRE(run.setup_error == "");
  INFO(run.result.message);
  CHECK(run.result.outcome == Outcome::kExited);
  CHECK(run.result.free_ranges_invalid == 1);
  CHECK(run.result.bytes_decommitted == 0);
  CHECK(run.result.exits.at("io") == 2);  // the doorbell is no exit
}

TEST_CASE("RAM made of many allocations becomes few memory slots", "[kvm][free]") {
  REQUIRE_KVM();
  json config = vm(json::array(), "1G");
  config["ram_unit"] = "2M";
  auto run = test::run_guest(config);
  REQUIRE(run.setup_error == "");
  REQUIRE(run.result.outcome == Outcome::kExited);
  // 512 allocations placed side by side by a fresh allocator: one slot.
  CHECK(run.vm->memory().memslots().size() == 1);
  CHECK(run.vm->memory().memslots()[0].slot == 0);
  CHECK(run.vm->memory().memslots()[0].guest == GuestRange(0, 1ull << 30));
}

TEST_CASE("a VM cannot free another VM's memory: its addresses name only its own RAM", "[kvm][free]") {
  REQUIRE_KVM();
  // Both VMs share one MemoryFile. "small" reports, over and over, a range
  // that exists only in "big"'s guest-physical space; "big" verifies its
  // data there throughout.
  auto config = parse_run_config(
      json{{"vms",
            {json{{"name", "small"},
                  {"memory", "8M"},
                  {"program",
                   {{{"op", "loop"},
                     {"count", 200},
                     {"body",
                      {{{"op", "report"}, {"ranges", json::array({json::array({"16M", "64K"})})}, {"expect", {"-EFAULT"}}},
                       {{"op", "report"}, {"mode", "async"}, {"ranges", json::array({json::array({"16M", "64K"})})}, {"expect", {"-EFAULT"}}}}}}}}},
             json{{"name", "big"},
                  {"memory", "32M"},
                  {"program",
                   {fill("16M", "1M", {{"seed", 9}}),
                    {{"op", "loop"}, {"count", 50}, {"body", {verify("16M", "1M", {{"seed", 9}})}}}}}}}}},
      "t");
  REQUIRE(config);
  std::vector<guest::Image> images;
  for (const auto& c : config->vms) images.push_back(*guest::build(c.program, {.ram_bytes = c.memory}));
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  auto file = MemoryFile::create(memory_file_options_for(256ull << 20));
  REQUIRE(file);
  RunTotals totals = run_vms(*kvm, **file, config->vms, images, nullptr);
  for (const auto& v : totals.vms) {
    INFO(v.name << ": " << v.setup_error << v.result.message);
    CHECK(v.exit_code() == 0);
  }
  CHECK(totals.vms[0].result.free_ranges_invalid == 400);
  CHECK(totals.vms[0].result.bytes_decommitted == 0);
  CHECK(totals.committed_bytes_after == 0);
}

TEST_CASE("RAM a VM gave back serves the next VM: the file does not grow", "[kvm][free]") {
  REQUIRE_KVM();
  auto config = parse_run_config(vm({fill("1M", "31M", "address")}), "t");
  REQUIRE(config);
  std::vector<guest::Image> images{*guest::build(config->vms[0].program, {.ram_bytes = config->vms[0].memory})};
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  auto file = MemoryFile::create(memory_file_options_for(256ull << 20));
  REQUIRE(file);
  uint64_t size_after_first = 0;
  for (int lifetime = 0; lifetime < 5; lifetime++) {
    RunTotals totals = run_vms(*kvm, **file, config->vms, images, nullptr);
    REQUIRE(totals.exit_code() == 0);
    CHECK(totals.committed_bytes_after == 0);
    CHECK(totals.host_committed_bytes_after == 0);
    // The same slot numbers come back in every lifetime.
    CHECK(totals.vms[0].memslots == 1);
    if (lifetime == 0) size_after_first = (*file)->total_size();
    CHECK((*file)->total_size() == size_after_first);
  }
}

TEST_CASE("a free with a stride hands back every other range and leaves the gaps alone", "[kvm][free]") {
  REQUIRE_KVM();
  for (const char* mode : {"sync", "async"}) {
    INFO(mode);
    json scattered = {{"op", "free"}, {"at", "2M"}, {"length", "1M"}, {"granule", "4K"}, {"stride", "8K"}, {"mode", mode}};
    auto run = test::run_guest(vm({fill("2M", "1M", {{"seed", 5}}), scattered, verify("2M", "4K", "zero"),
                                   verify("0x201000", "4K", {{"seed", 5}}), verify("0x2fe000", "4K", "zero"),
                                   verify("0x2ff000", "4K", {{"seed", 5}})}));
    REQUIRE(run.setup_error == "");
    INFO(run.result.message);
    CHECK(run.result.outcome == Outcome::kExited);
    CHECK(run.result.free_ranges == 128);
    CHECK(run.result.bytes_decommitted == 512 << 10);
  }
}
