// Staying under the host's memory limit: the up-front estimate, the refusal,
// and the watch that stops the VM that would pass it (against cgroup files
// the test writes itself; memory_limit_cgroup_test.cc uses a real cgroup).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "guest/abi.h"
#include "harness/report.h"
#include "harness/memory_limit.h"
#include "harness/runner.h"
#include "tests/support.h"

using namespace kvmem;
using guest::Pattern;
using guest::Step;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kMiB = 1ull << 20;

// A v2-style cgroup directory whose usage and statistics the test sets.
class FakeCgroup {
 public:
  explicit FakeCgroup(uint64_t limit) {
    char tmpl[] = "/tmp/kvmem-watch-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    bound_ = CgroupMemoryBound{tmpl, "memory.max", limit, true};
    set_usage(0);
    set_page_cache(0);
  }
  ~FakeCgroup() { fs::remove_all(bound_.dir); }
  void set_usage(uint64_t bytes) { std::ofstream(bound_.usage_path()) << bytes << "\n"; }
  void set_page_cache(uint64_t bytes) {
    std::ofstream(bound_.stat_path()) << "anon 0\nactive_file " << bytes << "\ninactive_file 0\n";
  }
  MemoryLimit limit() const { return MemoryLimit{{bound_}}; }
  const CgroupMemoryBound& bound() const { return bound_; }

 private:
  CgroupMemoryBound bound_;
};

Step fill(uint64_t at, uint64_t length) { return guest::Fill{at, length, Pattern{Pattern::Kind::kSeed, 1}}; }
Step free(uint64_t at, uint64_t length, guest::FreeMode mode) {
  return guest::Free{.at = at, .length = length, .granule = 4096, .batch = 64, .mode = mode};
}

VmConfig vm_with(const std::string& name, uint64_t memory, std::vector<Step> program) {
  VmConfig c;
  c.name = name;
  c.memory = memory;
  c.ram_unit = 2 * kMiB;
  c.program = std::move(program);
  return c;
}

}  // namespace

TEST_CASE("a program's peak is what it holds at once, freed pages and loops counted once", "[limits]") {
  const uint64_t A = 4 * kMiB, B = 64 * kMiB;
  CHECK(program_peak_bytes({fill(A, 16 * kMiB)}) == 16 * kMiB);
  CHECK(program_peak_bytes({fill(A, 16 * kMiB), fill(B, 8 * kMiB)}) == 24 * kMiB);
  CHECK(program_peak_bytes({fill(A, 16 * kMiB), fill(A + 8 * kMiB, 16 * kMiB)}) == 24 * kMiB);  // overlap once
  CHECK(program_peak_bytes({fill(A, 16 * kMiB), free(A, 16 * kMiB, guest::FreeMode::kSync),
                            fill(B, 8 * kMiB)}) == 16 * kMiB);
  // Reading freed pages commits them again.
  CHECK(program_peak_bytes({fill(A, 16 * kMiB), free(A, 16 * kMiB, guest::FreeMode::kAsync),
                            guest::Verify{A, 16 * kMiB, Pattern{}}, fill(B, 8 * kMiB)}) == 24 * kMiB);
  // A 12-byte fill commits its page.
  CHECK(program_peak_bytes({fill(A + 100, 12)}) == 4096);
  Step loop = guest::Loop{1000, {fill(A, 2 * kMiB), free(A, 2 * kMiB, guest::FreeMode::kSync)}};
  CHECK(program_peak_bytes({loop}) == 2 * kMiB);
  // A touch every 64 KiB commits one page per touch.
  Step touch = guest::Touch{.at = A, .length = 64 * kMiB, .stride = 64 << 10, .pattern = Pattern{}};
  CHECK(program_peak_bytes({touch}) == 1024 * 4096);
  // What a raw hypercall or an exit does next is not known: the rest is left out.
  Step exit = guest::Exit{};
  CHECK(program_peak_bytes({fill(A, 2 * kMiB), exit, fill(B, 64 * kMiB)}) == 2 * kMiB);
}

TEST_CASE("the line is 90% of the limit, and at least 16 MiB below it", "[limits]") {
  CHECK(keep_under(CgroupMemoryBound{"/x", "memory.max", 1000 * kMiB, true}) == 900 * kMiB);
  CHECK(keep_under(CgroupMemoryBound{"/x", "memory.max", 100 * kMiB, true}) == 84 * kMiB);
  CHECK(keep_under(CgroupMemoryBound{"/x", "memory.max", 8 * kMiB, true}) == 0);
}

TEST_CASE("a run or a stress budget that cannot fit under the limit is refused, naming it", "[limits]") {
  FakeCgroup cg(256 * kMiB);
  cg.set_usage(10 * kMiB);
  const std::vector<VmConfig> small{vm_with("a", 64 * kMiB, {fill(4 * kMiB, 16 * kMiB)})};
  CHECK(check_run_fits(cg.limit(), small));
  const std::vector<VmConfig> big{vm_with("a", 512 * kMiB, {fill(4 * kMiB, 200 * kMiB)}),
                                  vm_with("b", 512 * kMiB, {fill(4 * kMiB, 100 * kMiB)})};
  auto refused = check_run_fits(cg.limit(), big);
  REQUIRE(!refused);
  INFO(refused.error().message);
  CHECK(refused.error().message.find("300.0 MiB of guest RAM") != std::string::npos);
  CHECK(refused.error().message.find("the memory cgroup limit of 256 MiB (memory.max of " + cg.bound().dir + ")") !=
        std::string::npos);
  CHECK(refused.error().message.find("already uses 10.0 MiB") != std::string::npos);
  // What the process already uses counts: the small run no longer fits.
  cg.set_usage(220 * kMiB);
  CHECK(!check_run_fits(cg.limit(), small));
  CHECK(check_run_fits(MemoryLimit{}, big));  // no limit, no refusal

  cg.set_usage(10 * kMiB);
  StressConfig s;
  s.vms_per_round = 2;
  s.vm_memory = 64 * kMiB;
  s.commit_budget = 2048 * kMiB;
  auto budget = check_stress_fits(cg.limit(), s);
  REQUIRE(!budget);
  CHECK(budget.error().message.find("the stress commit budget of 2048.0 MiB") != std::string::npos);
  CHECK(budget.error().message.find("limit of 256 MiB") != std::string::npos);
  s.commit_budget = 128 * kMiB;
  CHECK(check_stress_fits(cg.limit(), s));
  s.commit_budget = 0;
  s.vms_per_round = 64;
  s.region_min = 8 * kMiB;  // 64 VMs fill 512 MiB at once, whatever the seed
  CHECK(!check_stress_fits(cg.limit(), s));
}

TEST_CASE("the watch stops the VM holding the most RAM, once, and leaves page cache alone", "[limits][kvm]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  auto file = MemoryFile::create(memory_file_options_for(128 * kMiB));
  REQUIRE(file);
  auto image = guest::build({}, {.ram_bytes = 64 * kMiB});
  REQUIRE(image);
  auto hungry = Vm::create(*kvm, **file, vm_with("hungry", 64 * kMiB, {}), *image);
  auto honest = Vm::create(*kvm, **file, vm_with("honest", 64 * kMiB, {}), *image);
  REQUIRE(hungry);
  REQUIRE(honest);
  // The hungry VM holds 8 MiB, the honest one 1 MiB (written by the host).
  for (uint64_t gpa = 4 * kMiB; gpa < 12 * kMiB; gpa += 4096) *(*hungry)->memory().host(GuestAddr(gpa)) = 1;
  for (uint64_t gpa = 4 * kMiB; gpa < 5 * kMiB; gpa += 4096) *(*honest)->memory().host(GuestAddr(gpa)) = 1;

  FakeCgroup cg(256 * kMiB);
  const uint64_t line = keep_under(cg.bound());
  MemoryWatch watch(cg.limit(), 2);
  watch.add(0, **hungry);
  watch.add(1, **honest);
  cg.set_usage(line);  // at the line is not past it
  watch.check();
  CHECK(watch.stops() == 0);
  cg.set_usage(line + 4 * kMiB);
  cg.set_page_cache(8 * kMiB);  // ... and what is past it is page cache
  watch.check();
  CHECK(watch.stops() == 0);
  cg.set_page_cache(0);
  watch.check();
  CHECK(watch.stops() == 1);
  // The hungry VM's 8 MiB will come back: still past the line by 4 MiB is
  // not a reason to stop the honest one.
  watch.check();
  CHECK(watch.stops() == 1);
  CHECK(watch.error().empty());

  RunResult h = (*hungry)->run(nullptr);
  CHECK(h.outcome == RunResult::Outcome::kStopped);
  CHECK(h.failure == FailureKind::kMemoryLimit);
  INFO(h.message);
  CHECK(h.message.find("the memory cgroup limit of 256 MiB (memory.max of " + cg.bound().dir + ")") !=
        std::string::npos);
  CHECK(h.message.find("held the most guest RAM") != std::string::npos);
  RunResult o = (*honest)->run(nullptr);
  CHECK(o.process_exit_code() == 0);
  CHECK(watch.remove(0));
  CHECK_FALSE(watch.remove(1));
}

TEST_CASE("run_vms reports the limit it kept under and every VM when one is stopped", "[limits][kvm]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  auto file = MemoryFile::create(memory_file_options_for(256 * kMiB));
  REQUIRE(file);
  // The fake cgroup is already past its line: the first sample after the
  // VMs exist stops the larger one; the small one runs to its end.
  FakeCgroup cg(64 * kMiB);
  cg.set_usage(63 * kMiB);
  Step spin = guest::Fault{guest::FaultKind::kSpin};
  std::vector<VmConfig> vms{vm_with("spinner", 128 * kMiB, {fill(4 * kMiB, 32 * kMiB), spin}),
                            vm_with("quick", 16 * kMiB, {})};
  vms[0].timeout_ms = 20'000;
  std::vector<guest::Image> images;
  for (const VmConfig& v : vms) images.push_back(*guest::build(v.program, {.ram_bytes = v.memory}));
  RunTotals t = run_vms(*kvm, **file, vms, images, nullptr, RunOptions{cg.limit(), 5, nullptr, {}});
  REQUIRE(t.vms.size() == 2);
  INFO(run_report(t).dump(2));
  CHECK(t.vms[0].result.failure == FailureKind::kMemoryLimit);
  CHECK(t.vms[0].result.run_ms < 15'000);  // stopped, not timed out
  CHECK(t.memory_limit_stops >= 1);
  const auto j = run_report(t);
  CHECK(j["memory"]["limit_bytes"] == 64 * kMiB);
  CHECK(j["memory"]["limit"] == cg.bound().describe());
  CHECK(j["vms"][0]["failure"] == "memory_limit");
}

TEST_CASE("a program's peak counts its words in RAM and not what it writes in a window above", "[limits][windows]") {
  std::vector<guest::Step> p = {guest::Fill{2ull << 20, 4ull << 20, {}}, guest::StoreWord{8ull << 20, 1},
                                guest::WaitWord{8ull << 20, 1, 10}, guest::Fill{1ull << 30, 2ull << 20, {}}};
  CHECK(program_peak_bytes(p, 16ull << 20) == (4ull << 20) + 4096);
  CHECK(program_peak_bytes(p) == (6ull << 20) + 4096);  // with no RAM bound, everything counts
}
