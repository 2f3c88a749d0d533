// Stress VMs' programs: made on the host from (seed, round, VM), and the
// largest any config can give (harness/stress.h).
#include <algorithm>
#include <random>

#include "base/check.h"
#include "config/vm_json.h"
#include "guest/layout.h"
#include "harness/stress.h"

namespace kvmem {
namespace {

using guest::FreeMode;
using guest::Pattern;
using guest::Step;
constexpr uint64_t k2M = 2ull << 20;
constexpr uint64_t kFirstByte = 2ull << 20;  // regions start above the boot area's 2 MiB page

uint64_t pick(std::mt19937_64& rng, uint64_t lo, uint64_t hi) {  // uniform in [lo, hi]
  return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
}

// One region's part of a stress program: what make_stress_vm draws, and
// what worst_case_stress_vms() sets to the largest values.
struct RegionPlan {
  uint64_t at, length;
  Pattern pattern;
  uint64_t granule;
  FreeMode mode;
  uint64_t batch;
  uint64_t free_at, free_len;  // the sub-range freed first
  bool corrupt;                // fault injection: verify a pattern it never held
  FreeMode final_mode;   // the free of the whole region
};

// With `snapshot`, the VM is saved, and ends, right after the sub-range's
// first free: what the restored VM verifies next was all in the snapshot.
void append_region(std::vector<Step>& p, const RegionPlan& r, bool snapshot = false) {
  const guest::Free free_part{.at = r.free_at, .length = r.free_len, .granule = r.granule, .batch = r.batch, .mode = r.mode};
  p.push_back(guest::Fill{r.at, r.length, r.pattern});
  p.push_back(free_part);
  if (snapshot) p.push_back(guest::Snapshot{.exit = true});
  p.push_back(guest::Verify{r.free_at, r.free_len, Pattern{}});
  // Reading the holes committed fresh zero pages: hand them back again.
  p.push_back(free_part);
  if (r.corrupt) p.push_back(guest::Verify{r.at, r.length, Pattern{Pattern::Kind::kSeed, r.pattern.arg + 1}});
  if (r.free_at > r.at) p.push_back(guest::Verify{r.at, r.free_at - r.at, r.pattern});
  if (r.free_at + r.free_len < r.at + r.length)
    p.push_back(guest::Verify{r.free_at + r.free_len, r.at + r.length - r.free_at - r.free_len, r.pattern});
  // Done with the region: all of it goes back, so a VM's commit stays small.
  p.push_back(guest::Free{.at = r.at, .length = r.length, .granule = k2M, .batch = 64, .mode = r.final_mode});
}

StressVm empty_stress_vm(const StressConfig& c, std::string name) {
  StressVm vm;
  vm.config.name = std::move(name);
  vm.config.memory = c.vm_memory;
  vm.config.ram_unit = c.ram_unit;
  vm.config.timeout_ms = c.timeout_ms;
  return vm;
}

}  // namespace

namespace {

// One vCPU's part of one region, [at, at + length): its pattern, granule,
// free mode, batch and sub-range, drawn in the order a one-vCPU VM always
// drew them (so its programs did not change when vCPUs came). With
// `sync_only` (a VM of several vCPUs) the modes are drawn and then made
// sync, so the rest of the draws stay the same.
RegionPlan plan_slice(std::mt19937_64& rng, uint64_t at, uint64_t length, unsigned vcpus, bool corrupt,
                      bool sync_only) {
  const uint64_t granules[] = {4096, 64 << 10, k2M};
  const uint64_t batches[] = {1, 7, 64, 512};
  RegionPlan plan{};
  plan.at = at;
  plan.length = length;
  plan.pattern = Pattern{Pattern::Kind::kSeed, rng()};
  plan.granule = granules[rng() % 3];
  plan.mode = rng() % 2 ? FreeMode::kSync : FreeMode::kAsync;
  if (sync_only) plan.mode = FreeMode::kSync;
  const uint64_t max_batch =
      plan.mode == FreeMode::kSync ? guest::layout::report_list_entries(vcpus) : guest::layout::kFreeRingEntries;
  plan.batch = std::min<uint64_t>(batches[rng() % 4], max_batch);
  // A sub-range of whole granules, smaller than the slice when it can be.
  const uint64_t units = plan.length / plan.granule;
  const uint64_t free_units = units > 1 ? pick(rng, 1, units - 1) : 1;
  plan.free_at = plan.at + pick(rng, 0, units - free_units) * plan.granule;
  plan.free_len = free_units * plan.granule;
  plan.corrupt = corrupt;
  plan.final_mode = rng() % 2 ? FreeMode::kSync : FreeMode::kAsync;
  if (sync_only) plan.final_mode = FreeMode::kSync;
  return plan;
}

// Bytes of [from, memory) that none of `ranges` covers.
uint64_t uncovered_bytes(std::vector<GuestRange> ranges, uint64_t from, uint64_t memory) {
  std::sort(ranges.begin(), ranges.end(), [](const GuestRange& a, const GuestRange& b) { return a.start < b.start; });
  uint64_t covered = 0, reach = from;
  for (const GuestRange& r : ranges) {
    const uint64_t start = std::max(r.start, reach);
    if (r.end > start) covered += r.end - start;
    reach = std::max(reach, r.end);
  }
  return memory - from - covered;
}

// The vCPUs' programs as the VM takes them: one `program`, or `programs`.
void set_programs(VmConfig& config, std::vector<std::vector<Step>> programs) {
  if (programs.size() == 1)
    config.program = std::move(programs[0]);
  else
    config.programs = std::move(programs);
}

}  // namespace

StressVm make_stress_vm(const StressConfig& c, uint64_t seed, uint64_t round, uint64_t index) {
  // seed_seq keeps 32 bits of each value: give it both halves of each.
  const auto lo = [](uint64_t v) { return static_cast<uint32_t>(v); };
  const auto hi = [](uint64_t v) { return static_cast<uint32_t>(v >> 32); };
  std::seed_seq seq{lo(seed), hi(seed), lo(round), hi(round), lo(index), hi(index)};
  std::mt19937_64 rng(seq);
  // The VM's shape has a stream of its own (the tag makes it differ from
  // rng's): the regions do not depend on how many vCPUs, backings or
  // prefaults the config lists.
  std::seed_seq shape_seq{lo(seed), hi(seed), lo(round), hi(round), lo(index), hi(index), 0x73686170u};
  std::mt19937_64 shape(shape_seq);
  StressVm vm = empty_stress_vm(c, fmt::format("r{}-vm{}", round, index));
  const unsigned vcpus = static_cast<unsigned>(pick(shape, c.vcpus_min, c.vcpus_max));
  vm.config.vcpus = vcpus;
  vm.config.backing = c.backings[shape() % c.backings.size()];
  vm.config.prefault = c.prefaults[shape() % c.prefaults.size()];
  // Snapshots have a stream of their own too, drawn whatever the config
  // says: turning them on changes only the VMs they choose.
  std::seed_seq snap_seq{lo(seed), hi(seed), lo(round), hi(round), lo(index), hi(index), 0x736e6170u};
  std::mt19937_64 snap(snap_seq);
  const double chosen = std::uniform_real_distribution<double>(0, 1)(snap);
  const double lazy = std::uniform_real_distribution<double>(0, 1)(snap);
  const uint64_t snapshot_region = pick(snap, 0, c.regions_per_vm - 1);
  if (chosen < c.snapshots.probability) {
    // The lazy restore serves memfd and memfd-thp RAM only (docs/snapshot.md):
    // hugetlb and anon RAM come back eagerly, or restore_snapshot refuses them.
    const bool lazy_ok = vm.config.backing != RamBacking::kHugetlb && vm.config.backing != RamBacking::kAnon;
    StressSnapshotPlan plan;
    plan.region = snapshot_region;
    plan.mode = lazy < c.snapshots.lazy && lazy_ok ? RestoreMode::kLazy : RestoreMode::kEager;
    vm.snapshot = plan;
  }
  // A snapshot keeps each vCPU's free ring, so a chosen VM frees as it would unchosen.
  const bool sync_only = vcpus > 1;  // the free ring is for one-vCPU VMs
  std::vector<std::vector<Step>> programs(vcpus);
  std::vector<GuestRange> regions;
  for (uint64_t r = 0; r < c.regions_per_vm; r++) {
    const uint64_t length = pick(rng, c.region_min / k2M, c.region_max / k2M) * k2M;
    const uint64_t at = pick(rng, kFirstByte / k2M, (c.vm_memory - length) / k2M) * k2M;
    regions.emplace_back(at, at + length);
    // vCPU v takes the v-th of `vcpus` runs of whole 2 MiB pages, the
    // first ones a page longer when they do not divide evenly.
    const uint64_t pages = length / k2M;
    uint64_t slice_at = at;
    const bool snapshot_here = vm.snapshot && vm.snapshot->region == r;
    for (unsigned v = 0; v < vcpus; v++) {
      if (vcpus > 1) programs[v].push_back(guest::Barrier{});  // a region's slices start together
      const uint64_t slice = (pages / vcpus + (v < pages % vcpus ? 1 : 0)) * k2M;
      if (!slice) {
        // Every vCPU meets at the snapshot, this one with nothing to do.
        if (snapshot_here) programs[v].push_back(guest::Snapshot{.exit = true});
        continue;
      }
      const bool corrupt = c.inject_corruption && index == 0 && r == 0 && v == 0;
      const RegionPlan plan = plan_slice(rng, slice_at, slice, vcpus, corrupt, sync_only);
      slice_at += slice;
      append_region(programs[v], plan, snapshot_here);
      vm.bytes_written += plan.length;
      vm.bytes_freed += 2 * plan.free_len + plan.length;
      if (vm.snapshot && r < vm.snapshot->region) {
        vm.snapshot->bytes_freed_before += 2 * plan.free_len + plan.length;
        vm.snapshot->regions_freed_before += plan.length;
      }
      if (snapshot_here) vm.snapshot->bytes_freed_before += plan.free_len;
    }
  }
  set_programs(vm.config, std::move(programs));
  switch (vm.config.prefault) {
    case Prefault::kNone: vm.max_end_commit = kFirstByte; break;
    case Prefault::kEager: vm.max_end_commit = kFirstByte + uncovered_bytes(regions, kFirstByte, c.vm_memory); break;
    case Prefault::kAhead: vm.max_end_commit = c.vm_memory; break;
  }
  if (vm.snapshot) {
    // A snapshot keeps the config's text, and a restore parses it again.
    auto source = vm_config_source(vm.config);
    KVMEM_CHECK(source, "a stress program has no print step, so its config is JSON: {}", source.error().message);
    vm.config.source = std::move(*source);
  }
  return vm;
}

Result<guest::Image> build_stress_vm(const StressVm& vm) {
  const auto programs = vm.config.vcpu_programs();
  return guest::build_vcpus(programs, vm.config.machine());
}

std::vector<StressVm> worst_case_stress_vms(const StressConfig& c) {
  // Every region at its largest and highest (the widest immediates), with
  // every optional step (both verifies around the freed sub-range, the
  // injected one on region 0), the largest batch. Which free mode encodes
  // longer is the assembler's business, and the ring's setup comes once per
  // program: for one vCPU, all sync, all async, and all sync but one async
  // cover it. Several vCPUs' programs lie one after another in the program
  // area, so the most vCPUs, each with a slice of every region (sync, a
  // barrier before each), is their worst.
  const auto plan_of = [&](uint64_t r, FreeMode mode, unsigned vcpus) {
    RegionPlan plan{};
    plan.length = c.region_max;
    plan.at = (c.vm_memory - plan.length) / k2M * k2M;
    plan.pattern = Pattern{Pattern::Kind::kSeed, ~0ull};
    plan.granule = 4096;
    plan.mode = mode;
    plan.batch = std::min<uint64_t>(512, mode == FreeMode::kSync ? guest::layout::report_list_entries(vcpus)
                                                                  : guest::layout::kFreeRingEntries);
    plan.free_at = plan.at + plan.granule;
    plan.free_len = plan.length > 2 * plan.granule ? plan.length - 2 * plan.granule : plan.granule;
    plan.corrupt = c.inject_corruption && r == 0;
    plan.final_mode = mode;
    return plan;
  };
  // With snapshots, every program has the step (in region 0), so each
  // variant is also the worst of the VMs a snapshot is taken of, sync or async.
  const bool snapshot = c.snapshots.on();
  std::vector<StressVm> out;
  for (int variant = 0; variant < 3 && c.vcpus_min == 1; variant++) {
    StressVm vm = empty_stress_vm(c, fmt::format("worst-case-{}", variant));
    for (uint64_t r = 0; r < c.regions_per_vm; r++) {
      const bool async = variant == 1 || (variant == 2 && r == 0);
      append_region(vm.config.program, plan_of(r, async ? FreeMode::kAsync : FreeMode::kSync, 1),
                    snapshot && r == 0);
    }
    out.push_back(std::move(vm));
  }
  if (c.vcpus_max > 1) {
    StressVm vm = empty_stress_vm(c, fmt::format("worst-case-{}-vcpus", c.vcpus_max));
    vm.config.vcpus = c.vcpus_max;
    std::vector<std::vector<Step>> programs(c.vcpus_max);
    for (uint64_t r = 0; r < c.regions_per_vm; r++)
      for (unsigned v = 0; v < c.vcpus_max; v++) {
        programs[v].push_back(guest::Barrier{});
        RegionPlan plan = plan_of(r, FreeMode::kSync, c.vcpus_max);
        plan.corrupt = plan.corrupt && v == 0;
        append_region(programs[v], plan, snapshot && r == 0);
      }
    set_programs(vm.config, std::move(programs));
    out.push_back(std::move(vm));
  }
  return out;
}

Status check_stress_programs(const StressConfig& c) {
  for (const StressVm& vm : worst_case_stress_vms(c)) {
    auto img = build_stress_vm(vm);
    if (!img)
      return fail("/stress/regions_per_vm: the largest program a stress VM can get ({} regions of up to {:#x} bytes{}) "
                  "cannot be assembled: {}",
                  c.regions_per_vm, c.region_max,
                  vm.config.vcpus > 1 ? fmt::format(", on each of {} vCPUs", vm.config.vcpus) : std::string(),
                  img.error().message);
  }
  return {};
}

}  // namespace kvmem
