#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "guest/abi.h"
#include "base/thread.h"
#include "tests/support.h"
#include "harness/report.h"
#include "harness/runner.h"
#include "harness/stress.h"
#include "harness/stress_restore.h"
#include "config/vm_config.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

StressConfig small() {
  StressConfig c;
  c.rounds = 2;
  c.duration_s = 0;
  c.vms_per_round = 2;
  c.vm_memory = 32ull << 20;
  c.ram_unit = 2ull << 20;
  c.regions_per_vm = 3;
  c.region_min = 2ull << 20;
  c.region_max = 6ull << 20;
  c.commit_budget = 64ull << 20;
  c.slack = 1ull << 20;
  c.timeout_ms = 60'000;
  return c;
}

// Runs stress with c on a fresh KVM handle and memory file.
Result<StressSummary> stress(const StressConfig& c) {
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  auto file = MemoryFile::create(memory_file_options_for(c.vms_per_round * c.vm_memory));
  REQUIRE(file);
  return run_stress(*kvm, **file, c, nullptr);
}

}  // namespace

TEST_CASE("stress programs are a function of seed, round and VM", "[stress]") {
  StressConfig c = small();
  StressVm a = make_stress_vm(c, 42, 0, 1), b = make_stress_vm(c, 42, 0, 1), other = make_stress_vm(c, 43, 0, 1);
  auto img = [](const StressVm& v) { return guest::build(v.config.program, {.ram_bytes = v.config.memory})->bytes; };
  CHECK(img(a) == img(b));
  CHECK(img(a) != img(other));
  CHECK(a.bytes_written == b.bytes_written);
  CHECK(a.config.name == "r0-vm1");
  // Every range a program touches lies in RAM above the boot area's 2 MiB page.
  for (const auto& s : a.config.program) {
    uint64_t at = 0, length = 0;
    if (const auto* f = std::get_if<guest::Fill>(&s)) {
      at = f->at, length = f->length;
    } else if (const auto* v = std::get_if<guest::Verify>(&s)) {
      at = v->at, length = v->length;
    } else if (const auto* fr = std::get_if<guest::Free>(&s)) {
      at = fr->at, length = fr->length;
      CHECK(fr->length % fr->granule == 0);
    } else {
      FAIL("a stress program has only fill, verify and free steps, not " << guest::op_name(s));
    }
    CHECK(at >= (2u << 20));
    CHECK(at + length <= c.vm_memory);
  }
}

TEST_CASE("every bit of a 64-bit stress seed, round and VM index changes the program", "[stress]") {
  StressConfig c = small();
  auto img = [&](uint64_t seed, uint64_t round, uint64_t index) {
    return guest::build(make_stress_vm(c, seed, round, index).config.program, {.ram_bytes = c.vm_memory})
        ->bytes;
  };
  CHECK(img(5, 0, 0) != img(4294967301ull, 0, 0));  // 5 + 2^32
  CHECK(img(5, 0, 0) != img(5 | (1ull << 63), 0, 0));
  CHECK(img(5, 1, 0) != img(5, 1 + (1ull << 32), 0));
  CHECK(img(5, 0, 1) != img(5, 0, 1 + (1ull << 32)));
}

TEST_CASE("the stress JSON summary carries the seed as a string too", "[stress]") {
  StressSummary sum;
  sum.seed = 18446744073709551557ull;  // above 2^53: a double cannot hold it
  const json j = stress_report(sum);
  CHECK(j["seed"] == 18446744073709551557ull);
  CHECK(j["seed_string"] == "18446744073709551557");
}

TEST_CASE("a short stress run loses nothing and gives all commit back", "[stress][kvm]") {
  REQUIRE_KVM();
  StressConfig c = small();
  c.seed = 20261122;
  auto sum = stress(c);
  REQUIRE(sum);
  INFO(sum->to_text());
  CHECK(sum->exit_code() == 0);
  CHECK(sum->rounds == 2);
  CHECK(sum->vms_booted == 4);
  CHECK(sum->integrity_errors == 0);
  CHECK(sum->vm_failures == 0);
  CHECK(sum->commit_leaks == 0);
  CHECK_FALSE(sum->budget_exceeded);
  CHECK(sum->bytes_written > 0);
  CHECK(sum->bytes_reclaimed == sum->bytes_freed);  // every reported byte was punched
  CHECK(sum->peak_commit_bytes > 0);
  CHECK(sum->final_commit_bytes == 0);
}

TEST_CASE("stress catches a guest that reads what it did not write, and names seed, VM and address", "[stress][kvm]") {
  REQUIRE_KVM();
  StressConfig c = small();
  c.seed = 7;
  c.rounds = 1;
  c.inject_corruption = true;
  auto sum = stress(c);
  REQUIRE(sum);
  CHECK(sum->exit_code() == 1);
  CHECK(sum->integrity_errors == 1);
  REQUIRE(sum->problems.size() == 1);
  CHECK(sum->problems[0].rfind("seed 7 round 0 vm r0-vm0: verify failed at guest-physical 0x", 0) == 0);
  CHECK(sum->final_commit_bytes == 0);  // the failed VM's memory came back too
}

TEST_CASE("stress fails a run whose commit passes the budget", "[stress][kvm]") {
  REQUIRE_KVM();
  StressConfig c = small();
  c.rounds = 1;
  c.commit_budget = 1 << 20;  // less than one region
  auto sum = stress(c);
  REQUIRE(sum);
  CHECK(sum->budget_exceeded);
  CHECK(sum->exit_code() == 1);
  CHECK(sum->integrity_errors == 0);
}

TEST_CASE("kvmem stress --json prints the summary keys and replays a seed", "[stress][cli][kvm]") {
  REQUIRE_KVM();
  std::vector<json> runs;
  for (int i = 0; i < 2; i++) {
    auto r = test::run_command({test::kvmem_binary(), "stress", "configs/stress-quick.json", "--json", "--rounds", "1",
                                "--seed", "99"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    runs.push_back(json::parse(r.out));
  }
  for (const char* key : {"rounds", "vms_booted", "bytes_written", "bytes_freed", "bytes_reclaimed",
                          "baseline_commit_bytes", "peak_commit_bytes", "final_commit_bytes", "integrity_errors"})
    CHECK(runs[0].contains(key));
  CHECK(runs[0]["seed"] == 99);
  CHECK(runs[0]["rounds"] == 1);
  CHECK(runs[0]["integrity_errors"] == 0);
  CHECK(runs[0]["bytes_written"] == runs[1]["bytes_written"]);
  CHECK(runs[0]["bytes_freed"] == runs[1]["bytes_freed"]);
}

TEST_CASE("bad stress configs exit 2 with the pointer", "[stress][cli]") {
  char path[] = "/tmp/kvmem-stress-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  std::ofstream(path) << R"({"stress": {"vm_memory": "64M", "region_max": "128M"}})";
  auto r = test::run_command({test::kvmem_binary(), "stress", path});
  unlink(path);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("/stress/region_max: leaves no room") != std::string::npos);
  auto bad = parse_stress_config(json{{"stress", {{"vms_per_round", 0}}}});
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message.rfind("/stress/vms_per_round: must be 0x1..0x40", 0) == 0);
  auto unknown = parse_stress_config(json{{"stress", {{"vms", 1}}}});
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().message.rfind("/stress/vms: unknown key", 0) == 0);
}

TEST_CASE("a later round whose program cannot be assembled is an error, not an abort", "[stress][kvm]") {
  REQUIRE_KVM();
  // Find a size at which round 0's program fits the program area and round 1's does not.
  StressConfig c = small();
  c.vms_per_round = 1;
  c.rounds = 2;
  c.commit_budget = 0;
  auto fits = [&](uint64_t seed, uint64_t round) {
    return guest::build(make_stress_vm(c, seed, round, 0).config.program, {.ram_bytes = c.vm_memory})
        .has_value();
  };
  bool found = false;
  for (uint64_t seed = 1; seed < 40 && !found; seed++) {
    c.seed = seed;
    uint64_t n = 1;
    for (c.regions_per_vm = 1; c.regions_per_vm <= 1000 && fits(seed, 0); c.regions_per_vm *= 2) n = c.regions_per_vm;
    for (c.regions_per_vm = n; c.regions_per_vm <= 1000 && fits(seed, 0); c.regions_per_vm++)
      if (!fits(seed, 1)) {
        found = true;
        break;
      }
  }
  REQUIRE(found);
  INFO("seed " << c.seed << ", " << c.regions_per_vm << " regions per VM");
  auto sum = stress(c);
  REQUIRE_FALSE(sum);
  CHECK(sum.error().message.find("bytes it may use") != std::string::npos);
}

TEST_CASE("the progress line fits the terminal's width and never wraps", "[stress]") {
  StressConfig c = small();
  c.rounds = 1000;
  c.commit_budget = 2ull << 30;
  StressProgress p;
  p.round = 999;
  p.vms_booted = 123456;
  p.bytes_written = p.bytes_freed = p.bytes_reclaimed = 1234ull << 30;
  p.commit_bytes = p.peak_commit_bytes = 2000ull << 20;
  p.elapsed_s = 86399;
  const std::string full = format_progress_line(p, c, 0, true);
  CHECK(full.size() > 130);  // longer than most terminals, so the cut matters
  for (size_t width : {40, 80, 200}) {
    INFO("width " << width);
    const std::string line = format_progress_line(p, c, width, true);
    CHECK(line.size() <= width);
    CHECK(line.find('\n') == std::string::npos);
    CHECK(full.rfind(line, 0) == 0);  // a cut of the whole line, not another line
  }
  CHECK(format_progress_line(p, c, 200, true) == full);  // it fits whole in 200
  CHECK(format_progress_line(p, c, 40, true).rfind("[###################.] round 999/1000", 0) == 0);
}

TEST_CASE("no stress program is larger than the worst case validate assembles", "[stress]") {
  for (bool inject : {false, true}) {
    StressConfig c = small();
    c.regions_per_vm = 40;
    c.vm_memory = 8ull << 30;  // addresses past 4 GiB take the widest immediates
    c.region_max = 64ull << 20;
    c.inject_corruption = inject;
    size_t worst = 0;
    for (const StressVm& vm : worst_case_stress_vms(c))
      worst = std::max(worst, guest::build(vm.config.program, {.ram_bytes = vm.config.memory})->bytes.size());
    for (uint64_t seed = 1; seed <= 60; seed++) {
      const StressVm vm = make_stress_vm(c, seed * 0x9e3779b97f4a7c15ull, seed % 7, seed % 3);
      auto img = guest::build(vm.config.program, {.ram_bytes = vm.config.memory});
      REQUIRE(img);
      CHECK(img->bytes.size() <= worst);
    }
  }
}

TEST_CASE("validate refuses a stress config whose largest program cannot be assembled", "[stress][cli]") {
  // A size at which seed 1's round 0, VM 0 (all that validate built) fits and the worst case does not.
  StressConfig c = small();
  c.seed = 1;
  auto fits = [&] {
    return guest::build(make_stress_vm(c, 1, 0, 0).config.program, {.ram_bytes = c.vm_memory})
        .has_value();
  };
  for (c.regions_per_vm = 64; fits(); c.regions_per_vm += 64) {}
  while (!fits()) c.regions_per_vm--;
  REQUIRE_FALSE(check_stress_programs(c));
  char path[] = "/tmp/kvmem-stress-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  std::ofstream(path) << json{{"stress", {{"seed", 1}, {"rounds", 2}, {"vms_per_round", 2}, {"vm_memory", "32M"},
                                          {"ram_unit", "2M"}, {"regions_per_vm", c.regions_per_vm},
                                          {"region_max", "6M"}}}}
                             .dump();
  auto v = test::run_command({test::kvmem_binary(), "validate", path});
  auto s = test::run_command({test::kvmem_binary(), "stress", path});
  unlink(path);
  CHECK(v.exit_code == 2);
  CHECK(v.err.find("/stress/regions_per_vm: the largest program a stress VM can get") != std::string::npos);
  CHECK(s.exit_code == 2);
}

TEST_CASE("a stress run whose progress thread cannot start is an error, not an abort", "[kvm][stress]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  StressConfig c = small();
  auto file = MemoryFile::create(memory_file_options_for(c.vms_per_round * c.vm_memory));
  REQUIRE(file);
  fail_next_thread_starts(1);
  auto sum = run_stress(*kvm, **file, c, nullptr);
  fail_next_thread_starts(0);
  REQUIRE(!sum);
  CHECK(sum.error().message.find("the stress progress thread") != std::string::npos);
}

namespace {

// The Fill steps of each region of one vCPU's program (its regions start at barriers).
std::vector<std::vector<GuestRange>> fills_by_region(const std::vector<guest::Step>& program) {
  std::vector<std::vector<GuestRange>> out;
  for (const guest::Step& s : program) {
    if (s.is<guest::Barrier>()) out.emplace_back();
    if (const auto* f = std::get_if<guest::Fill>(&s)) {
      REQUIRE(!out.empty());
      out.back().emplace_back(f->at, f->at + f->length);
    }
  }
  return out;
}

// The backings of a multi-backing test: memfd and anon, and those of the
// others this host can give (a WARN, once, for each it cannot).
std::vector<RamBacking> test_backings() {
  std::vector<RamBacking> out{RamBacking::kMemfd, RamBacking::kAnon};
  static bool warned = false;
  for (RamBacking b : {RamBacking::kHugetlb, RamBacking::kMemfdThp}) {
    if (auto why = ram_backing_unavailable(b, 64ull << 20)) {
      if (!warned) WARN("stress tests run without " << ram_backing_name(b) << ": " << *why);
    } else {
      out.push_back(b);
    }
  }
  warned = true;
  return out;
}

StressConfig multi_vcpu() {
  StressConfig c = small();
  c.vcpus_min = 2;
  c.vcpus_max = 4;
  c.region_min = 4ull << 20;
  c.region_max = 10ull << 20;
  c.commit_budget = 0;
  c.backings = test_backings();
  return c;
}

}  // namespace

TEST_CASE("the stress keys vcpus, backings and prefault parse, and their errors name the pointer", "[stress]") {
  auto ok = parse_stress_config(json::parse(
      R"({"stress": {"vcpus": [2, 4], "backings": ["memfd", "anon", "anon"], "prefault": "eager"}})"));
  REQUIRE(ok);
  CHECK(ok->vcpus_min == 2);
  CHECK(ok->vcpus_max == 4);
  CHECK(ok->backings == std::vector{RamBacking::kMemfd, RamBacking::kAnon, RamBacking::kAnon});
  CHECK(ok->prefaults == std::vector{Prefault::kEager});
  auto one = parse_stress_config(json::parse(R"({"stress": {"vcpus": 3}})"));
  REQUIRE(one);
  CHECK((one->vcpus_min == 3 && one->vcpus_max == 3));
  auto defaults = parse_stress_config(json::parse(R"({"stress": {}})"));
  REQUIRE(defaults);
  CHECK((defaults->vcpus_min == 1 && defaults->vcpus_max == 1));
  CHECK(defaults->backings == std::vector{RamBacking::kMemfd});
  CHECK(defaults->prefaults == std::vector{Prefault::kNone});
  struct {
    const char* stress;
    const char* error;
  } cases[] = {
      {R"({"vcpus": 0})", "/stress/vcpus: must be 1..16, found 0"},
      {R"({"vcpus": [1, 17]})", "/stress/vcpus/1: must be 1..16, found 17"},
      {R"({"vcpus": [4, 2]})", "/stress/vcpus: min 4 is larger than max 2"},
      {R"({"vcpus": [1, 2, 3]})", "/stress/vcpus: expected a number or a [min, max] pair, found an array of 3"},
      {R"({"vcpus": "many"})", "/stress/vcpus: "},
      {R"({"backings": []})", "/stress/backings: expected a non-empty array of backing names"},
      {R"({"backings": ["memfd", "zfs"]})", "/stress/backings/1: unknown backing \"zfs\" (expected \"memfd\""},
      {R"({"backings": {"memfd": 1}})", "/stress/backings: expected a non-empty array"},
      {R"({"prefault": ["none", 3]})", "/stress/prefault/1: "},
      {R"({"prefault": ["later"]})", "/stress/prefault/0: unknown prefault \"later\" (expected \"none\""},
  };
  for (const auto& t : cases) {
    INFO(t.stress);
    auto bad = parse_stress_config(json{{"stress", json::parse(t.stress)}});
    REQUIRE_FALSE(bad);
    CHECK(bad.error().message.rfind(t.error, 0) == 0);
  }
}

TEST_CASE("a multi-vCPU stress VM gives each vCPU its own slice of every region, after a barrier", "[stress]") {
  StressConfig c = multi_vcpu();
  c.regions_per_vm = 5;
  c.backings = {RamBacking::kMemfd, RamBacking::kAnon};
  c.prefaults = {Prefault::kNone, Prefault::kEager};
  std::set<unsigned> vcpus_seen;
  std::set<RamBacking> backings_seen;
  for (uint64_t index = 0; index < 24; index++) {
    const StressVm vm = make_stress_vm(c, 11, 0, index);
    INFO("VM " << index << ", " << vm.config.vcpus << " vCPUs");
    vcpus_seen.insert(vm.config.vcpus);
    backings_seen.insert(vm.config.backing);
    REQUIRE(vm.config.vcpus >= 2);
    REQUIRE(vm.config.vcpus <= 4);
    REQUIRE(vm.config.programs.size() == vm.config.vcpus);
    std::vector<std::vector<std::vector<GuestRange>>> fills;
    for (const auto& p : vm.config.programs) {
      fills.push_back(fills_by_region(p));
      REQUIRE(fills.back().size() == c.regions_per_vm);  // one barrier per region
      for (const guest::Step& s : p)
        if (const auto* f = std::get_if<guest::Free>(&s)) CHECK(f->mode == guest::FreeMode::kSync);
    }
    for (size_t r = 0; r < c.regions_per_vm; r++) {
      std::vector<GuestRange> all;
      for (const auto& per_vcpu : fills) all.insert(all.end(), per_vcpu[r].begin(), per_vcpu[r].end());
      CHECK(!fills[0][r].empty());  // vCPU 0 always has a slice
      for (size_t i = 0; i < all.size(); i++)
        for (size_t j = i + 1; j < all.size(); j++) CHECK_FALSE(all[i].overlaps(all[j]));
    }
    auto img = build_stress_vm(vm);
    REQUIRE(img);
    CHECK(img->vcpus.size() == vm.config.vcpus);
  }
  CHECK(vcpus_seen == std::set<unsigned>{2, 3, 4});
  CHECK(backings_seen.size() == 2);
  // The shape has a stream of its own: a one-vCPU VM's program does not
  // depend on the lists the config gives.
  StressConfig plain = small(), listed = small();
  listed.backings = {RamBacking::kAnon, RamBacking::kMemfd};
  listed.prefaults = {Prefault::kAhead};
  CHECK(build_stress_vm(make_stress_vm(plain, 5, 1, 0))->bytes == build_stress_vm(make_stress_vm(listed, 5, 1, 0))->bytes);
}

TEST_CASE("no multi-vCPU stress program is larger than the worst case validate assembles", "[stress]") {
  StressConfig c = small();
  c.vcpus_min = 1;
  c.vcpus_max = 16;
  c.regions_per_vm = 8;
  c.vm_memory = 8ull << 30;
  c.region_max = 64ull << 20;
  c.inject_corruption = true;
  REQUIRE(check_stress_programs(c));
  size_t worst = 0;
  for (const StressVm& vm : worst_case_stress_vms(c)) worst = std::max(worst, build_stress_vm(vm)->bytes.size());
  for (uint64_t seed = 1; seed <= 40; seed++) {
    const StressVm vm = make_stress_vm(c, seed * 0x9e3779b97f4a7c15ull, seed % 5, seed % 3);
    auto img = build_stress_vm(vm);
    REQUIRE(img);
    CHECK(img->bytes.size() <= worst);
  }
  c.regions_per_vm = 400;  // fits one vCPU's code, not sixteen copies of it
  c.vcpus_min = 2;
  auto s = check_stress_programs(c);
  REQUIRE_FALSE(s);
  CHECK(s.error().message.find("on each of 16 vCPUs") != std::string::npos);
}

TEST_CASE("the stress leak check catches RAM a VM did not give back", "[stress]") {
  StressConfig c = small();
  StressVm vm = make_stress_vm(c, 3, 0, 0);
  VmOutcome out;
  out.result.outcome = RunOutcome::kExited;
  out.result.bytes_reported_free = out.result.bytes_decommitted = vm.bytes_freed;
  out.host_committed_bytes = 2ull << 20;  // the boot area
  CHECK_FALSE(stress_vm_leak(vm, out, 0));
  out.host_committed_bytes += 4096;
  CHECK(stress_vm_leak(vm, out, 0)->find("held 2101248 bytes of RAM when its program ended") != std::string::npos);
  CHECK_FALSE(stress_vm_leak(vm, out, 4096));
  out.result.bytes_decommitted -= 4096;
  CHECK(stress_vm_leak(vm, out, 4096)->find("the VMM decommitted") != std::string::npos);
  vm.config.backing = RamBacking::kHugetlb;  // sub-ranges round inward: fewer is fine, down to the regions
  CHECK_FALSE(stress_vm_leak(vm, out, 4096));
  out.result.bytes_decommitted = vm.bytes_written - 1;
  CHECK(stress_vm_leak(vm, out, 4096));
  out.result.bytes_reported_free -= 4096;
  CHECK(stress_vm_leak(vm, out, 4096)->find("its guest reported") != std::string::npos);
}

TEST_CASE("a short stress run of 2..4 vCPUs per VM on mixed backings loses nothing and gives all commit back",
          "[stress][kvm][vcpus][backing]") {
  REQUIRE_KVM();
  StressConfig c = multi_vcpu();
  c.seed = 20261203;
  c.vms_per_round = 3;
  c.prefaults = {Prefault::kNone, Prefault::kEager};
  auto sum = stress(c);
  REQUIRE(sum);
  INFO(sum->to_text());
  CHECK(sum->exit_code() == 0);
  CHECK(sum->vms_booted == 6);
  CHECK(sum->vcpus_booted >= 12);
  CHECK(sum->integrity_errors == 0);
  CHECK(sum->vm_failures == 0);
  CHECK(sum->vm_leaks == 0);
  CHECK(sum->commit_leaks == 0);
  REQUIRE(sum->backings.size() == c.backings.size());
  uint64_t vms = 0;
  for (const StressBackingTally& t : sum->backings) {
    vms += t.vms;
    CHECK(t.failed == 0);
  }
  CHECK(vms == 6);
  CHECK(sum->final_commit_bytes == 0);
  const json j = stress_report(*sum);
  CHECK(j["backings"]["memfd"]["failed"] == 0);
  CHECK(j["backings"]["anon"].contains("vms"));
  CHECK(j["vm_leaks"] == 0);
}

TEST_CASE("stress catches a multi-vCPU guest that reads what it did not write", "[stress][kvm][vcpus]") {
  REQUIRE_KVM();
  StressConfig c = multi_vcpu();
  c.vcpus_min = c.vcpus_max = 3;
  c.backings = {RamBacking::kAnon};
  c.seed = 8;
  c.rounds = 1;
  c.inject_corruption = true;
  auto sum = stress(c);
  REQUIRE(sum);
  INFO(sum->to_text());
  CHECK(sum->exit_code() == 1);
  CHECK(sum->integrity_errors == 1);
  CHECK(sum->vm_leaks == 0);
  REQUIRE(sum->problems.size() == 1);
  CHECK(sum->problems[0].rfind("seed 8 round 0 vm r0-vm0: vCPU 0: verify failed at guest-physical 0x", 0) == 0);
  CHECK(sum->problems[0].find("(anon, 3 vCPUs, prefault none)") != std::string::npos);
  REQUIRE(sum->backings.size() == 1);
  CHECK(sum->backings[0].vms == 2);
  CHECK(sum->backings[0].failed == 1);
}

TEST_CASE("a stress config with a backing the host cannot give is refused before anything runs",
          "[stress][cli][backing]") {
  auto why = ram_backing_unavailable(RamBacking::kHugetlb, 64ull << 20);
  if (!why) {
    WARN("this host gives hugetlb RAM: nothing to refuse");
    return;
  }
  StressConfig c = small();
  c.backings = {RamBacking::kMemfd, RamBacking::kHugetlb};
  auto s = check_stress_backings(c);
  REQUIRE_FALSE(s);
  CHECK(s.error().message.rfind("/stress/backings: this host cannot give hugetlb RAM", 0) == 0);
  CHECK(s.error().message.find(*why) != std::string::npos);
  REQUIRE_KVM();  // the CLI opens /dev/kvm first
  char path[] = "/tmp/kvmem-stress-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  std::ofstream(path) << R"({"stress": {"rounds": 1, "vm_memory": "16M", "region_max": "4M",
                                       "backings": ["memfd", "hugetlb"]}})";
  auto r = test::run_command({test::kvmem_binary(), "stress", path});
  unlink(path);
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("this host cannot give hugetlb RAM") != std::string::npos);
}

// Snapshots in stress (harness/stress.h, "Snapshots"; harness/stress_restore.h).

namespace {

StressConfig with_snapshots(double probability, double lazy) {
  StressConfig c = small();
  c.snapshots.probability = probability;
  c.snapshots.lazy = lazy;
  return c;
}

// A fresh empty folder under /tmp, removed with what is in it at the end of the scope.
struct TempFolder {
  std::string path;
  TempFolder() {
    char name[] = "/tmp/kvmem-stress-test-XXXXXX";
    REQUIRE(mkdtemp(name));
    path = name;
  }
  ~TempFolder() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(path)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

// Where the snapshot step lies in one vCPU's program, and what the steps
// before it free.
struct SnapshotSpot {
  size_t index = 0;
  uint64_t freed_before = 0;
};
std::optional<SnapshotSpot> snapshot_spot(const std::vector<guest::Step>& program) {
  std::optional<SnapshotSpot> spot;
  uint64_t freed = 0;
  for (size_t i = 0; i < program.size(); i++) {
    if (program[i].is<guest::Snapshot>()) {
      CHECK_FALSE(spot);  // one snapshot step
      CHECK(program[i].as<guest::Snapshot>().exit);
      spot = SnapshotSpot{i, freed};
    }
    if (const auto* f = std::get_if<guest::Free>(&program[i])) freed += f->length;
  }
  return spot;
}

// The VM without its snapshot steps: what it would be unchosen.
StressVm without_snapshot_steps(StressVm vm) {
  const auto drop = [](std::vector<guest::Step>& p) {
    std::erase_if(p, [](const guest::Step& s) { return s.is<guest::Snapshot>(); });
  };
  drop(vm.config.program);
  for (auto& p : vm.config.programs) drop(p);
  return vm;
}

// Whether a vCPU of the VM frees through its free ring.
bool frees_async(const StressVm& vm) {
  for (const auto& program : vm.config.vcpu_programs())
    for (const guest::Step& s : program)
      if (const auto* f = std::get_if<guest::Free>(&s); f && f->mode == guest::FreeMode::kAsync) return true;
  return false;
}

}  // namespace

TEST_CASE("stress snapshots: any VM is chosen, anon and hugetlb restore eagerly, frees stay as drawn, and every vCPU "
          "meets at one step mid-region",
          "[stress][snapshot]") {
  StressConfig c = with_snapshots(0.5, 0.5);
  c.vcpus_min = 1;
  c.vcpus_max = 3;
  c.regions_per_vm = 4;
  c.backings = {RamBacking::kMemfd, RamBacking::kAnon, RamBacking::kHugetlb};
  StressConfig off = c;
  off.snapshots = {};
  std::set<RestoreMode> modes;
  uint64_t chosen = 0, chosen_anon = 0, chosen_async = 0;
  const uint64_t vms = 60;
  for (uint64_t index = 0; index < vms; index++) {
    const StressVm vm = make_stress_vm(c, 17, 2, index);
    const StressVm plain = make_stress_vm(off, 17, 2, index);
    INFO("VM " << index << ", " << ram_backing_name(vm.config.backing) << ", " << vm.config.vcpus << " vCPUs");
    // Reproducible: the same seed makes the same choice.
    CHECK(make_stress_vm(c, 17, 2, index).snapshot.has_value() == vm.snapshot.has_value());
    if (!vm.snapshot) {
      // Turning snapshots on changes only the VMs they choose.
      CHECK(build_stress_vm(vm)->bytes == build_stress_vm(plain)->bytes);
      CHECK(vm.config.source.empty());
      continue;
    }
    chosen++;
    modes.insert(vm.snapshot->mode);
    chosen_anon += vm.config.backing == RamBacking::kAnon;
    chosen_async += frees_async(vm);
    // Only a restore from the memory file can be lazy.
    if (vm.config.backing == RamBacking::kHugetlb || vm.config.backing == RamBacking::kAnon)
      CHECK(vm.snapshot->mode == RestoreMode::kEager);
    CHECK(vm.snapshot->region < c.regions_per_vm);
    // The same program as without snapshots (free modes too: the free ring
    // is in the snapshot): only the step differs.
    CHECK(build_stress_vm(without_snapshot_steps(vm))->bytes == build_stress_vm(plain)->bytes);
    CHECK(vm.bytes_written == plain.bytes_written);
    CHECK(vm.bytes_freed == plain.bytes_freed);
    uint64_t freed_before = 0;
    for (const auto& program : vm.config.vcpu_programs()) {
      const auto spot = snapshot_spot(program);
      REQUIRE(spot);  // every vCPU, with a slice or not, meets at the snapshot
      freed_before += spot->freed_before;
      // With a slice: after the region's fill and first free, before its zero verify.
      if (spot->index >= 2 && program[spot->index - 1].is<guest::Free>()) {
        CHECK(program[spot->index - 2].is<guest::Fill>());
        REQUIRE(spot->index + 1 < program.size());
        const auto& verify = program[spot->index + 1];
        REQUIRE(verify.is<guest::Verify>());
        CHECK(verify.as<guest::Verify>().pattern.kind == guest::Pattern::Kind::kZero);
        CHECK(verify.as<guest::Verify>().at == program[spot->index - 1].as<guest::Free>().at);
      } else {
        CHECK(program[spot->index - 1].is<guest::Barrier>());  // no slice in that region
      }
    }
    CHECK(freed_before == vm.snapshot->bytes_freed_before);
    // The config a snapshot keeps parses back to the same VM.
    auto again = parse_run_config(json::parse(vm.config.source), "vm");
    REQUIRE(again);
    REQUIRE(again->vms.size() == 1);
    CHECK(again->vms[0].name == vm.config.name);
    CHECK(again->vms[0].backing == vm.config.backing);
    CHECK(again->vms[0].prefault == vm.config.prefault);
    CHECK(build_stress_vm(StressVm{.config = again->vms[0]})->bytes == build_stress_vm(vm)->bytes);
  }
  CHECK(chosen > vms / 4);
  CHECK(chosen < vms);
  CHECK(chosen_anon > 0);
  CHECK(chosen_async > 0);
  CHECK(modes.size() == 2);
  // Every program, with its step, fits the worst case validate assembles.
  REQUIRE(check_stress_programs(c));
}

TEST_CASE("the stress leak check splits a snapshotted VM's frees at its snapshot", "[stress][snapshot]") {
  StressConfig c = with_snapshots(1, 0);
  StressVm vm = make_stress_vm(c, 3, 0, 0);
  REQUIRE(vm.snapshot);
  const uint64_t before = vm.snapshot->bytes_freed_before, after = vm.bytes_freed - before;
  REQUIRE(before > 0);
  REQUIRE(after > 0);
  VmOutcome out;
  out.result.outcome = RunOutcome::kExited;
  out.result.bytes_reported_free = out.result.bytes_decommitted = before;
  out.host_committed_bytes = 64ull << 20;  // the part before holds its region: not checked
  CHECK_FALSE(stress_vm_leak(vm, out, 0, StressPart::kBeforeSnapshot));
  CHECK(stress_vm_leak(vm, out, 0, StressPart::kAfterSnapshot)->find("after the snapshot frees") != std::string::npos);
  CHECK(stress_vm_leak(vm, out, 0, StressPart::kWhole));
  out.result.bytes_reported_free = out.result.bytes_decommitted = after;
  out.host_committed_bytes = 2ull << 20;
  CHECK_FALSE(stress_vm_leak(vm, out, 0, StressPart::kAfterSnapshot));
  out.host_committed_bytes += 4096;  // the restored VM's end is checked as a whole VM's is
  CHECK(stress_vm_leak(vm, out, 0, StressPart::kAfterSnapshot)->find("when its program ended") != std::string::npos);
}

TEST_CASE("a short stress run with snapshots restores lazily and eagerly, anon RAM and async frees too, loses nothing "
          "and gives all commit back",
          "[stress][kvm][snapshot]") {
  REQUIRE_KVM();
  StressConfig c = with_snapshots(0.6, 0.5);
  c.vms_per_round = 3;
  c.vcpus_min = 1;
  c.vcpus_max = 2;
  c.backings = {RamBacking::kMemfd, RamBacking::kAnon};
  c.prefaults = {Prefault::kNone, Prefault::kEager};
  // The first seed whose rounds restore both ways, and snapshot an anon VM
  // and one that frees through its free ring (the choice is the seed's alone).
  uint64_t anon = 0, async = 0;
  for (c.seed = 1;; c.seed++) {
    REQUIRE(c.seed < 100);
    std::set<RestoreMode> modes;
    anon = async = 0;
    for (uint64_t round = 0; round < c.rounds; round++)
      for (uint64_t i = 0; i < c.vms_per_round; i++) {
        const StressVm vm = make_stress_vm(c, c.seed, round, i);
        if (!vm.snapshot) continue;
        modes.insert(vm.snapshot->mode);
        anon += vm.config.backing == RamBacking::kAnon;
        async += frees_async(vm);
      }
    if (modes.size() == 2 && anon > 0 && async > 0) break;
  }
  INFO("seed " << c.seed << ": " << anon << " anon and " << async << " async VMs snapshotted");
  TempFolder folder;
  c.snapshots.dir = folder.path;
  auto sum = stress(c);
  REQUIRE(sum);
  INFO(sum->to_text());
  CHECK(sum->exit_code() == 0);
  CHECK(sum->integrity_errors == 0);
  CHECK(sum->vm_failures == 0);
  CHECK(sum->vm_leaks == 0);
  CHECK(sum->commit_leaks == 0);
  CHECK(sum->snapshot_vms > 0);
  CHECK(sum->snapshots_taken == sum->snapshot_vms);
  CHECK(sum->restored_lazy > 0);
  CHECK(sum->restored_eager > 0);
  CHECK(sum->restored_lazy + sum->restored_eager == sum->snapshots_taken);
  CHECK(sum->restored_eager >= anon);
  CHECK(sum->snapshot_failures == 0);
  CHECK(sum->restore_failures == 0);
  CHECK(sum->bytes_reclaimed == sum->bytes_freed);  // both halves of every VM freed all they reported
  CHECK(sum->final_commit_bytes == 0);
  CHECK(sum->snapshot_dir.empty());
  CHECK(folder.entries().empty());  // each snapshot went once its VM had run; the folder is the config's and stays
  const json j = stress_report(*sum);
  CHECK(j["snapshots"]["taken"] == sum->snapshots_taken);
  CHECK(j["snapshots"]["restored_lazy"] == sum->restored_lazy);
  CHECK(j["snapshots"]["dir"].is_null());

  SECTION("kept, the snapshots stay, one per VM snapshotted, and the summary says where") {
    c.snapshots.keep = true;
    c.rounds = 1;
    auto kept = stress(c);
    REQUIRE(kept);
    CHECK(kept->exit_code() == 0);
    CHECK(kept->snapshot_dir == folder.path);
    std::vector<std::string> want;
    for (uint64_t i = 0; i < c.vms_per_round; i++)
      if (make_stress_vm(c, c.seed, 0, i).snapshot) want.push_back(fmt::format("r0-vm{}.kvmsnap", i));
    REQUIRE(!want.empty());
    CHECK(folder.entries() == want);
    CHECK(kept->to_text().find("kept in " + folder.path) != std::string::npos);
  }
}

TEST_CASE("a restored stress VM still catches corruption: its verify runs after the restore",
          "[stress][kvm][snapshot]") {
  REQUIRE_KVM();
  for (double lazy : {1.0, 0.0}) {
    // One region, so the snapshot comes before the injected verify of region 0.
    StressConfig c = with_snapshots(1, lazy);
    c.seed = 7;
    c.rounds = 1;
    c.regions_per_vm = 1;
    c.inject_corruption = true;
    const char* how = lazy ? "lazily" : "eagerly";
    INFO("restored " << how);
    auto sum = stress(c);
    REQUIRE(sum);
    INFO(sum->to_text());
    CHECK(sum->exit_code() == 1);
    CHECK(sum->integrity_errors == 1);
    CHECK(sum->vm_failures == 0);
    CHECK(sum->vm_leaks == 0);  // the failed restored VM's file came back empty too
    CHECK(sum->snapshots_taken == 2);
    CHECK((lazy ? sum->restored_lazy : sum->restored_eager) == 2);
    REQUIRE(sum->problems.size() == 1);
    CHECK(sum->problems[0].rfind(
              fmt::format("seed 7 round 0 vm r0-vm0, restored {}: verify failed at guest-physical 0x", how), 0) == 0);
    CHECK(sum->problems[0].find(fmt::format("snapshot in region 0, restored {})", how)) != std::string::npos);
    CHECK(sum->final_commit_bytes == 0);
  }
}

TEST_CASE("a damaged stress snapshot is refused eagerly and fails its VM lazily, and the file still comes back empty",
          "[stress][kvm][snapshot]") {
  REQUIRE_KVM();
  StressConfig c = with_snapshots(1, 1);
  c.seed = 5;
  c.rounds = 1;
  c.vms_per_round = 1;
  TempFolder folder;
  c.snapshots.dir = folder.path;
  c.snapshots.keep = true;
  auto sum = stress(c);
  REQUIRE(sum);
  REQUIRE(sum->snapshots_taken == 1);
  const std::string path = folder.path + "/r0-vm0.kvmsnap";
  {
    // The first extent's data starts at 4096 (docs/snapshot.md): flip a byte of it.
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    REQUIRE(f);
    f.seekg(4096);
    char b = 0;
    f.read(&b, 1);
    b = static_cast<char>(b ^ 0x5a);
    f.seekp(4096);
    f.write(&b, 1);
  }
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  const RestoredTotals t =
      run_restored(*kvm, {RestoreJob{path, RestoreMode::kEager}, RestoreJob{path, RestoreMode::kLazy}}, MemoryLimit{});
  REQUIRE(t.runs.size() == 2);
  const RestoredRun& eager = t.runs[0];
  CHECK(eager.restore_exit_code == 2);
  CHECK(eager.restore_error.find("checksum") != std::string::npos);
  const RestoredRun& lazy = t.runs[1];
  REQUIRE(lazy.restored());
  CHECK(lazy.out.exit_code() == 2);
  CHECK(lazy.out.result.failure == FailureKind::kSnapshot);
  CHECK_FALSE(lazy.lazy.error.empty());
  CHECK(lazy.file_committed_after == 0);
  CHECK(lazy.file_host_committed_after == 0);
}

TEST_CASE("the stress key snapshots parses, and its errors name the pointer", "[stress][snapshot]") {
  auto ok = parse_stress_config(
      json::parse(R"({"stress": {"snapshots": {"probability": 0.25, "lazy": 1, "dir": "/tmp/x", "keep": true}}})"));
  REQUIRE(ok);
  CHECK(ok->snapshots.probability == 0.25);
  CHECK(ok->snapshots.lazy == 1.0);
  CHECK(ok->snapshots.dir == "/tmp/x");
  CHECK(ok->snapshots.keep);
  auto defaults = parse_stress_config(json::parse(R"({"stress": {"snapshots": {"probability": 1}}})"));
  REQUIRE(defaults);
  CHECK(defaults->snapshots.lazy == 0.5);
  CHECK(defaults->snapshots.dir.empty());
  CHECK_FALSE(defaults->snapshots.keep);
  CHECK_FALSE(parse_stress_config(json::parse(R"({"stress": {}})"))->snapshots.on());
  // Anon RAM is in snapshots: anon alone is fine, on or off.
  CHECK(parse_stress_config(json::parse(R"({"stress": {"backings": ["anon"], "snapshots": {"probability": 0}}})")));
  CHECK(parse_stress_config(json::parse(R"({"stress": {"backings": ["anon"], "snapshots": {"probability": 0.5}}})")));
  struct {
    const char* stress;
    const char* error;
  } cases[] = {
      {R"({"snapshots": {}})", "/stress/snapshots: missing required key \"probability\""},
      {R"({"snapshots": 0.5})", "/stress/snapshots: expected an object"},
      {R"({"snapshots": {"probability": 1.5}})", "/stress/snapshots/probability: must be from 0 to 1, found 1.5"},
      {R"({"snapshots": {"probability": -0.1}})", "/stress/snapshots/probability: must be from 0 to 1, found -0.1"},
      {R"({"snapshots": {"probability": "half"}})", "/stress/snapshots/probability: expected a number from 0 to 1"},
      {R"({"snapshots": {"probability": 1, "lazy": 2}})", "/stress/snapshots/lazy: must be from 0 to 1, found 2"},
      {R"({"snapshots": {"probability": 1, "dir": ""}})", "/stress/snapshots/dir: expected the path of a folder"},
      {R"({"snapshots": {"probability": 1, "dir": 3}})", "/stress/snapshots/dir: expected a string"},
      {R"({"snapshots": {"probability": 1, "keep": "yes"}})", "/stress/snapshots/keep: expected true or false"},
      {R"({"snapshots": {"probability": 1, "eager": 1}})", "/stress/snapshots/eager: unknown key"},
  };
  for (const auto& t : cases) {
    INFO(t.stress);
    auto bad = parse_stress_config(json{{"stress", json::parse(t.stress)}});
    REQUIRE_FALSE(bad);
    CHECK(bad.error().message.rfind(t.error, 0) == 0);
  }
}

TEST_CASE("kvmem stress with snapshots: --json counts, --keep-snapshots, a temp folder removed, bad usage exits 2",
          "[stress][cli][kvm][snapshot]") {
  REQUIRE_KVM();
  TempFolder tmp;
  auto r = test::run_command({test::kvmem_binary(), "stress", "configs/stress-snapshots.json", "--json", "--rounds",
                              "1", "--seed", "3"},
                             {"TMPDIR=" + tmp.path});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const json j = json::parse(r.out);
  for (const char* key : {"vms", "taken", "restored_lazy", "restored_eager", "snapshot_failures", "restore_failures",
                          "dir"})
    CHECK(j["snapshots"].contains(key));
  CHECK(j["snapshots"]["taken"].get<uint64_t>() ==
        j["snapshots"]["restored_lazy"].get<uint64_t>() + j["snapshots"]["restored_eager"].get<uint64_t>());
  CHECK(j["snapshots"]["taken"] == j["snapshots"]["vms"]);
  CHECK(j["integrity_errors"] == 0);
  CHECK(tmp.entries().empty());  // the run's own folder under TMPDIR went with it

  TempFolder kept;
  auto k = test::run_command({test::kvmem_binary(), "stress", "configs/stress-snapshots.json", "--json", "--rounds",
                              "1", "--seed", "3", "--snapshot-dir", kept.path, "--keep-snapshots"});
  REQUIRE(k.exit_code == 0);
  const json kj = json::parse(k.out);
  CHECK(kj["snapshots"]["dir"] == kept.path);
  CHECK(kept.entries().size() == kj["snapshots"]["taken"].get<size_t>());

  auto bad = test::run_command({test::kvmem_binary(), "stress", "configs/stress-quick.json", "--keep-snapshots"});
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find("--snapshot-dir and --keep-snapshots need \"snapshots\"") != std::string::npos);
  auto v = test::run_command({test::kvmem_binary(), "validate", "configs/stress-snapshots.json", "--json"});
  REQUIRE(v.exit_code == 0);
  CHECK(json::parse(v.out)["stress"]["snapshots"]["probability"] == 0.6);
}
