// `kvmem bench fault` (bench/fault.h): the measurements. The host facts,
// the table and the JSON helpers are in bench/fault_report.cc.
#include "bench/fault.h"

#include <sys/mman.h>
#include <x86intrin.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>

#include <fmt/format.h>

#include "base/mapping.h"
#include "guest/abi.h"
#include "guest/layout.h"
#include "guest/program.h"
#include "memory/memory_file.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/stats.h"
#include "vmm/memory/backing.h"
#include "vmm/memory/prefault.h"
#include "vmm/vm.h"

namespace kvmem {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
constexpr uint64_t k2M = 2ull << 20;

uint64_t align_2m(uint64_t x) { return (x + k2M - 1) / k2M * k2M; }

// The backings by name, and whether the host sweep maps anonymous memory
// (else a MemoryFile of that backing, as the guest's RAM).
struct Backing {
  const char* name;
  bool anon;
};
constexpr Backing kBackings[] = {{"memfd", false}, {"memfd-thp", false}, {"hugetlb", false}, {"anon", true}};

const Backing* find_backing(const std::string& name) {
  for (const Backing& b : kBackings)
    if (name == b.name) return &b;
  return nullptr;
}

bool known_prefault(const std::string& p) { return p == "none" || p == "eager" || p == "ahead"; }

// One sweep: a latency per access, and the sweep's wall time.
struct Sweep {
  std::vector<double> ns;
  double total_ms = 0;
};

// Sweeps of one kind over the repeats: the samples pooled, the totals kept.
struct Pooled {
  std::vector<double> ns;
  std::vector<double> totals_ms;
  void add(Sweep s) {
    ns.insert(ns.end(), s.ns.begin(), s.ns.end());
    totals_ms.push_back(s.total_ms);
  }
  // The median sweep's total: one slow repeat does not move it.
  double total_ms() const { return totals_ms.empty() ? 0 : summarize(totals_ms).p50; }
  json to_json() const { return latency_json(summarize(ns), total_ms()); }
};

RamBacking ram_backing(const Backing& b) { return *parse_ram_backing(b.name); }

// Why the host cannot give this backing for `bytes`, or nothing.
std::optional<std::string> unavailable(const Backing& b, uint64_t bytes) {
  auto why = ram_backing_unavailable(ram_backing(b), bytes);
  if (why) *why += " (or --setup-host)";
  return why;
}

MemoryFileOptions file_options(const Backing& b, uint64_t bytes) { return ram_file_options(ram_backing(b), bytes); }

// The host's own first touch of `size` fresh bytes of `b`, then its second
// pass over them (a plain write or read loop).
Result<std::pair<Sweep, Sweep>> host_sweeps(const Backing& b, const FaultBenchOptions& o, uint64_t khz) {
  std::unique_ptr<MemoryFile> file;
  Mapping anon;
  uint8_t* base = nullptr;
  if (b.anon) {
    anon = KVMEM_TRY(Mapping::create("cannot map anonymous memory for the host sweep", o.size,
                                     PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE));
    base = anon.data();
  } else {
    file = KVMEM_TRY(MemoryFile::create(file_options(b, o.size)));
    const FileRange r = KVMEM_TRY(file->allocate(o.size, UsageKind::Anonymous));
    base = KVMEM_TRY(file->map_internal(r)).data();
  }
  const uint64_t n = (o.size - 1) / o.stride + 1;
  std::vector<uint64_t> ticks(n);
  auto pass = [&] {
    const auto t0 = Clock::now();
    for (uint64_t i = 0; i < n; i++) {
      volatile uint64_t* p = reinterpret_cast<volatile uint64_t*>(base + i * o.stride);
      _mm_lfence();
      const uint64_t a = __rdtsc();
      if (o.write)
        *p = i;
      else
        (void)*p;
      _mm_lfence();
      ticks[i] = __rdtsc() - a;
    }
    Sweep s;
    s.total_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    s.ns.reserve(n);
    for (uint64_t t : ticks) s.ns.push_back(ticks_to_ns(t, khz));
    return s;
  };
  Sweep first = pass();
  Sweep second = pass();
  return std::pair{std::move(first), std::move(second)};
}

// Where things go in the benchmark's guest RAM: the measured range from
// 2 MiB, each vCPU's two sample arrays after it, result slots at the top.
struct GuestPlan {
  uint64_t measured = k2M;
  uint64_t slice = 0;     // bytes per vCPU
  uint64_t accesses = 0;  // per vCPU per pass
  uint64_t samples = 0;   // the first sample array
  uint64_t ram = 0;

  uint64_t slice_at(unsigned i) const { return measured + i * slice; }
  uint64_t samples_at(unsigned i, int pass) const { return samples + (2 * i + pass) * accesses * 8; }
};

GuestPlan plan(const FaultBenchOptions& o) {
  GuestPlan p;
  p.slice = o.size / o.vcpus;
  p.accesses = (p.slice - 1) / o.stride + 1;
  p.samples = p.measured + o.size;
  p.ram = align_2m(p.samples + 2ull * o.vcpus * p.accesses * 8) + k2M;  // + the result slots' pages
  return p;
}

std::vector<guest::Step> vcpu_steps(const GuestPlan& p, const FaultBenchOptions& o, unsigned i) {
  using namespace guest;
  const uint64_t at = p.slice_at(i);
  auto timed = [&](int pass) {
    Touch t{.at = at, .length = p.slice, .stride = o.stride, .write = o.write};
    t.samples = p.samples_at(i, pass);
    return t;
  };
  return {
      // The sample arrays committed first: no fault of theirs in the sweeps.
      Touch{.at = p.samples_at(i, 0), .length = 2 * p.accesses * 8, .stride = 4096, .write = true},
      Barrier{}, Timestamp{0}, timed(0), Timestamp{1},
      Barrier{}, Timestamp{2}, timed(1), Timestamp{3},
  };
}

struct VmSweeps {
  Sweep first, second;
  uint64_t exits = 0;      // to userspace, other than each vCPU's exit hypercall
  json kvm = nullptr;      // the kernel's counters over the run (KVM_GET_STATS_FD), or null
  double prefault_cpu_ms = 0;
  unsigned prefault_threads = 0;
};

// The configured run of one fresh VM on backing `b` with prefault `mode`.
Result<VmSweeps> vm_sweeps(const Kvm& kvm, const Backing& b, const std::string& mode, const FaultBenchOptions& o,
                           uint64_t* khz_out, bool* khz_from_kvm) {
  const GuestPlan p = plan(o);
  VmConfig c;
  c.name = fmt::format("fault-{}-{}", b.name, mode);
  c.memory = p.ram;
  c.vcpus = o.vcpus;
  c.timeout_ms = 600'000;
  c.ram_unit = p.ram;  // one allocation: one memory slot
  for (unsigned i = 0; i < o.vcpus; i++) c.programs.push_back(vcpu_steps(p, o, i));
  c.prefault = *parse_prefault(mode);
  c.prefault_threads = o.prefault_threads;
  // Ahead walks each vCPU's slice in its footsteps; eager takes all RAM.
  if (c.prefault == Prefault::kAhead)
    for (unsigned i = 0; i < o.vcpus; i++) c.prefault_lanes.emplace_back(p.slice_at(i), p.slice_at(i) + p.slice);
  c.backing = ram_backing(b);
  // anon RAM is an anonymous mapping of the VM's own; its file (plain
  // memfd) is only for windows.
  auto file = KVMEM_TRY(MemoryFile::create(file_options(b, p.ram)));
  const guest::Image img = KVMEM_TRY(guest::build_vcpus(c.vcpu_programs(), c.machine()));
  auto vm = KVMEM_TRY(Vm::create(kvm, *file, c, img));
  const uint64_t khz = vm->tsc_khz();
  *khz_out = khz;
  *khz_from_kvm = vm->tsc_khz_from_kvm();
  // The kernel's own counters (exits it handled itself, shadow page
  // faults) over the whole run: the sweeps are nearly all of it.
  std::vector<KvmStats> stats;
  std::vector<std::map<std::string, uint64_t>> before;
  for (unsigned i = 0; i < o.vcpus; i++)
    if (auto s = KvmStats::open(vm->vcpu_fd(i)))
      if (auto counters = s->read()) {
        stats.push_back(std::move(*s));
        before.push_back(std::move(*counters));
      }
  RunResult r = vm->run(nullptr);
  if (r.outcome != RunOutcome::kExited || r.guest_exit_code != 0)
    return fail("the guest did not finish its sweeps: {} ({})", r.outcome_name(), r.message);
  VmSweeps out;
  uint64_t start[2] = {UINT64_MAX, UINT64_MAX}, end[2] = {0, 0};
  for (unsigned i = 0; i < o.vcpus; i++) {
    const auto& ts = r.vcpu_timestamps.at(i);
    if (ts.size() < 4) return fail("vCPU {} left {} timestamps, not 4", i, ts.size());
    for (int pass = 0; pass < 2; pass++) {
      start[pass] = std::min(start[pass], ts[2 * pass]);
      end[pass] = std::max(end[pass], ts[2 * pass + 1]);
      Sweep& s = pass ? out.second : out.first;
      const auto* words = reinterpret_cast<const uint64_t*>(vm->memory().host(GuestAddr(p.samples_at(i, pass))));
      for (uint64_t k = 0; k < p.accesses; k++) s.ns.push_back(ticks_to_ns(words[k], khz));
    }
  }
  for (int pass = 0; pass < 2; pass++)
    (pass ? out.second : out.first).total_ms = end[pass] > start[pass] ? ticks_to_ns(end[pass] - start[pass], khz) / 1e6 : 0;
  if (stats.size() == o.vcpus) {
    std::map<std::string, uint64_t> sum;
    for (size_t i = 0; i < stats.size(); i++)
      if (auto after = stats[i].read())
        for (const auto& [name, v] : stats_delta(before[i], *after)) sum[name] += v;
    out.kvm = json::object();
    for (const char* name : {"exits", "pf_taken", "pf_fixed", "pf_spurious", "pf_emulate", "pf_guest", "io_exits",
                             "signal_exits", "halt_exits", "irq_exits"})
      if (sum.count(name)) out.kvm[name] = sum[name];
  }
  out.prefault_cpu_ms = r.prefault.cpu_ms;
  out.prefault_threads = r.prefault.threads;
  if (!r.prefault.error.empty()) return fail("prefault {}: {}", mode, r.prefault.error);
  uint64_t exits = 0;
  for (const auto& [reason, count] : r.exits) exits += count;
  out.exits = exits > o.vcpus ? exits - o.vcpus : 0;
  return out;
}

json skipped_row(const Backing& b, const std::string& mode, const FaultBenchOptions& o, const std::string& reason) {
  return {{"bench", "fault"}, {"backing", b.name}, {"prefault", mode}, {"vcpus", o.vcpus},
          {"skipped", true},  {"reason", reason}};
}

// Every row of one backing: the host's sweeps, the prefaulted guest's
// touch (the virtualisation floor), then each mode asked for.
std::vector<json> backing_rows(const Kvm& kvm, const Backing& b, const FaultBenchOptions& o,
                               const std::function<void(const std::string&)>& say, uint64_t* khz,
                               std::string* tsc_source, std::vector<CdfSeries>* plot) {
  std::vector<json> rows;
  if (auto why = unavailable(b, plan(o).ram)) {
    for (const auto& m : o.prefaults) rows.push_back(skipped_row(b, m, o, *why));
    return rows;
  }
  const uint64_t host_khz = *khz;
  if (o.warmup) {
    // This machine may itself be a VM whose memory its own host backs on
    // first use: the first sweep in a process over memory the kernel never
    // handed out pays for that too. An unrecorded sweep first puts every
    // measured sweep after it on the same footing.
    say(fmt::format("fault: {}: warm-up sweep of {} MiB (not recorded)", b.name, o.size >> 20));
    FaultBenchOptions warm = o;
    warm.size = plan(o).ram;  // as much as a VM will take
    warm.stride = 4096;
    (void)host_sweeps(b, warm, host_khz);
  }
  Pooled host_first, host_second;
  for (unsigned k = 0; k < o.repeat; k++) {
    say(fmt::format("fault: {}: host first touch of {} MiB ({}/{})", b.name, o.size >> 20, k + 1, o.repeat));
    auto h = host_sweeps(b, o, host_khz);
    if (!h) {
      for (const auto& m : o.prefaults) rows.push_back(skipped_row(b, m, o, h.error().message));
      return rows;
    }
    host_first.add(std::move(h->first));
    host_second.add(std::move(h->second));
  }
  std::vector<std::string> modes = o.prefaults;
  // The prefaulted touch comes from an eager run, measured once per
  // backing, first, whether or not eager was asked for.
  std::map<std::string, std::pair<Pooled, Pooled>> guest;
  std::map<std::string, VmSweeps> last;
  std::map<std::string, std::string> errors;
  std::vector<std::string> order = {"eager"};
  for (const auto& m : modes)
    if (m != "eager") order.push_back(m);
  for (const auto& m : order) {
    for (unsigned k = 0; k < o.repeat && !errors.count(m); k++) {
      say(fmt::format("fault: {}: guest sweep, prefault {} ({} vCPU{}, {}/{})", b.name, m, o.vcpus,
                      o.vcpus == 1 ? "" : "s", k + 1, o.repeat));
      bool from_kvm = false;
      auto s = vm_sweeps(kvm, b, m, o, khz, &from_kvm);
      if (!s) {
        errors[m] = s.error().message;
        break;
      }
      *tsc_source = from_kvm ? "KVM_GET_TSC_KHZ" : "calibrated";
      guest[m].first.add(std::move(s->first));
      guest[m].second.add(std::move(s->second));
      last[m] = *s;
    }
  }
  if (plot) {
    for (const auto& m : modes)
      if (!errors.count(m)) plot->push_back({fmt::format("{} / {}", b.name, m), guest[m].first.ns});
    plot->push_back({fmt::format("{}: the host's own first touch", b.name), host_first.ns, true});
  }
  const Summary hs = summarize(host_first.ns);
  const double host_total = host_first.total_ms();
  for (const auto& m : modes) {
    if (errors.count(m)) {
      json row = skipped_row(b, m, o, errors[m]);
      row["error"] = errors[m];
      rows.push_back(row);
      continue;
    }
    const Pooled& first = guest[m].first;
    const Summary fs = summarize(first.ns);
    json row = {{"bench", "fault"}, {"backing", b.name}, {"prefault", m}, {"vcpus", o.vcpus},
                {"skipped", false}, {"reason", nullptr}, {"size", o.size}, {"stride", o.stride},
                {"access", o.write ? "write" : "read"}, {"repeat", o.repeat},
                {"first_touch_ns", first.to_json()}, {"second_pass_ns", guest[m].second.to_json()},
                {"host_first_touch_ns", host_first.to_json()}, {"host_second_pass_ns", host_second.to_json()},
                {"prefaulted_touch_ns", errors.count("eager") ? json(nullptr) : guest["eager"].first.to_json()},
                {"ratio_p50", hs.p50 > 0 ? json(fs.p50 / hs.p50) : json(nullptr)},
                {"ratio_total", host_total > 0 ? json(first.total_ms() / host_total) : json(nullptr)},
                {"pages_per_s", first.total_ms() > 0 ? json(static_cast<double>(first.ns.size() / o.repeat) / (first.total_ms() / 1e3)) : json(nullptr)},
                {"prefault_cpu_ms", last[m].prefault_cpu_ms}, {"prefault_threads", last[m].prefault_threads},
                {"exits_during_measure", last[m].exits}, {"kvm_stats_run", last[m].kvm}};
    rows.push_back(row);
  }
  return rows;
}

}  // namespace

uint64_t fault_guest_ram(const FaultBenchOptions& o) { return plan(o).ram; }

Status check_fault_options(const FaultBenchOptions& o) {
  if (o.backings.empty()) return fail("--backing: name at least one of memfd, memfd-thp, hugetlb, anon");
  for (const auto& b : o.backings)
    if (!find_backing(b)) return fail("--backing: unknown backing \"{}\" (expected memfd, memfd-thp, hugetlb or anon)", b);
  if (o.prefaults.empty()) return fail("--prefault: name at least one of none, eager, ahead");
  for (const auto& p : o.prefaults)
    if (!known_prefault(p)) return fail("--prefault: unknown mode \"{}\" (expected none, eager or ahead)", p);
  if (o.vcpus < 1 || o.vcpus > guest::layout::kMaxVcpus)
    return fail("--vcpus: {} is not in 1..{}", o.vcpus, guest::layout::kMaxVcpus);
  if (o.size == 0 || o.size % (k2M * o.vcpus) != 0)
    return fail("--size: {:#x} is not a positive multiple of 2 MiB × {} vCPU(s)", o.size, o.vcpus);
  if (o.size > (uint64_t{64} << 30)) return fail("--size: {:#x} is over 64 GiB", o.size);
  if (o.stride == 0 || o.stride % 8 != 0 || (o.size / o.vcpus) % o.stride != 0)
    return fail("--stride: {} must be a non-zero multiple of 8 that divides each vCPU's slice ({:#x} bytes)",
                o.stride, o.size / o.vcpus);
  if (o.repeat < 1 || o.repeat > 1000) return fail("--repeat: {} is not in 1..1000", o.repeat);
  return {};
}

std::vector<json> run_fault_bench(const Kvm& kvm, const FaultBenchOptions& o,
                                  const std::function<void(const std::string&)>& progress,
                                  std::vector<CdfSeries>* plot) {
  auto say = [&](const std::string& line) {
    if (progress) progress(line);
  };
  uint64_t khz = 0;
  std::string source = "calibrated";
  {
    // The rate the host's samples convert with is the guest's: ask a VM.
    FaultBenchOptions tiny = o;
    tiny.size = k2M * o.vcpus;
    tiny.repeat = 1;
    const GuestPlan p = plan(tiny);
    VmConfig c;
    c.name = "fault-tsc";
    c.memory = p.ram;
    c.ram_unit = p.ram;
    c.program = {guest::Exit{0}};
    auto file = MemoryFile::create(file_options(kBackings[0], p.ram));
    auto img = guest::build(c.program, c.machine());
    if (file && img)
      if (auto vm = Vm::create(kvm, **file, c, *img)) {
        khz = (*vm)->tsc_khz();
        source = (*vm)->tsc_khz_from_kvm() ? "KVM_GET_TSC_KHZ" : "calibrated";
      }
  }
  if (khz == 0) return {{{"bench", "fault"}, {"error", "cannot make a VM to read the TSC rate from"}}};
  std::vector<json> rows;
  for (const auto& name : o.backings) {
    const Backing& b = *find_backing(name);
    uint64_t k = khz;
    auto more = backing_rows(kvm, b, o, say, &k, &source, plot);
    rows.insert(rows.end(), more.begin(), more.end());
  }
  const json facts = fault_host_facts(khz, source);
  for (json& r : rows) r["host"] = facts;
  return rows;
}

}  // namespace kvmem
