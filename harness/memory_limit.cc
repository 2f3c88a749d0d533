#include "harness/memory_limit.h"

#include <algorithm>
#include <fstream>

#include "guest/abi.h"
#include "memory/segment_set.h"

namespace kvmem {
namespace {

using guest::Step;

constexpr uint64_t kMinHeadroom = 16ull << 20;
// A strided touch adds its pages one by one, up to this many; the rest are
// left out (the estimate stays a lower bound).
constexpr uint64_t kMaxTouchPages = 4096;

double mib(uint64_t b) { return static_cast<double>(b) / (1 << 20); }

// The pages a program holds, as a set of guest ranges with their total.
class Touched {
 public:
  // Only [0, ram) counts: what lies above is a window onto a shared file,
  // whose pages the run's files hold once, whichever VMs touch them.
  explicit Touched(uint64_t ram) : ram_(ram) {}
  void add(uint64_t at, uint64_t length) {
    auto r = pages(at, length);
    if (!r || r->start >= ram_) return;
    if (r->end > ram_) r->end = ram_;
    drop(*r);
    set_.add(*r, Empty{});
    bytes_ += r->length();
    peak_ = std::max(peak_, bytes_);
  }
  void remove(uint64_t at, uint64_t length) {
    if (auto r = pages(at, length)) drop(*r);
  }
  uint64_t peak() const { return peak_; }

 private:
  struct Empty {
    bool operator==(const Empty&) const = default;
  };
  // [at, at + length) rounded out to pages; nullopt when empty or wrapping.
  static std::optional<GuestRange> pages(uint64_t at, uint64_t length) {
    if (length == 0 || length > ~uint64_t{0} - at) return std::nullopt;
    uint64_t end = 0;
    if (!align_up(at + length, kPageSize, &end)) return std::nullopt;
    return GuestRange(align_down(at, kPageSize), end);
  }
  void drop(GuestRange r) {
    for (auto s = set_.lower_bound_segment(r.start); s.ok() && s.start() < r.end; s = s.next_segment())
      bytes_ -= s.range().intersect(r).length();
    set_.remove_range(r);
  }
  SegmentSet<GuestRange, Empty> set_;
  uint64_t ram_;
  uint64_t bytes_ = 0, peak_ = 0;
};

// Simulates steps in order; false once it reaches one whose effect it
// cannot know (the rest of the program is then left out).
bool simulate(const std::vector<Step>& steps, Touched* t) {
  for (const Step& s : steps) {
    if (const auto* f = std::get_if<guest::Fill>(&s)) {
      t->add(f->at, f->length);
    } else if (const auto* v = std::get_if<guest::Verify>(&s)) {
      t->add(v->at, v->length);
    } else if (const auto* sw = std::get_if<guest::StoreWord>(&s)) {
      t->add(sw->at, 8);
    } else if (const auto* ww = std::get_if<guest::WaitWord>(&s)) {
      t->add(ww->at, 8);
    } else if (const auto* tc = std::get_if<guest::Touch>(&s)) {
      if (tc->stride <= kPageSize) {
        t->add(tc->at, tc->length);
      } else {
        for (uint64_t k = 0; k < kMaxTouchPages && k * tc->stride < tc->length; k++) t->add(tc->at + k * tc->stride, 8);
      }
      if (tc->samples) t->add(tc->samples, tc->accesses() * 8);
    } else if (const auto* fr = std::get_if<guest::Free>(&s)) {
      // A strided free leaves pages between its ranges: dropping the whole
      // span says too little is held, never too much.
      t->remove(fr->at, fr->length);
    } else if (const auto* r = std::get_if<guest::Report>(&s)) {
      for (const auto& [gpa, length] : r->ranges) t->remove(gpa, length);
    } else if (const auto* l = std::get_if<guest::Loop>(&s)) {
      if (!simulate(l->body, t)) return false;
    } else if (s.is<guest::Hypercall>() || s.is<guest::Exit>() || s.is<guest::Fault>()) {
      return false;
    }
    // print, timestamp and out touch no RAM of the steps'.
  }
  return true;
}

bool tdp_mmu_off() {
  static const bool off = [] {
    std::ifstream f("/sys/module/kvm/parameters/tdp_mmu");
    std::string v;
    return static_cast<bool>(f >> v) && (v == "N" || v == "0");
  }();
  return off;
}

}  // namespace

uint64_t keep_under(const CgroupMemoryBound& bound) {
  const uint64_t headroom = std::max(bound.bytes / 10, kMinHeadroom);
  return bound.bytes > headroom ? bound.bytes - headroom : 0;
}

uint64_t program_peak_bytes(const std::vector<guest::Step>& program, uint64_t ram) {
  Touched t(ram);
  (void)simulate(program, &t);
  return t.peak();
}

uint64_t kvm_slot_bytes(uint64_t ram_bytes) { return tdp_mmu_off() ? ram_bytes / kPageSize * 8 : 0; }

MemoryEstimate estimate_run(const std::vector<VmConfig>& vms) {
  MemoryEstimate e;
  for (const VmConfig& vm : vms) {
    e.guest_bytes += program_peak_bytes(vm.program, vm.memory);
    e.kvm_bytes += kvm_slot_bytes(vm.memory);
  }
  return e;
}

Status check_fits(const MemoryLimit& limit, uint64_t need, const std::string& what) {
  for (const CgroupMemoryBound& b : limit.bounds) {
    auto usage = read_cgroup_usage(b);
    if (!usage) return std::unexpected(usage.error());
    const uint64_t line = keep_under(b);
    const uint64_t room = line > *usage ? line - *usage : 0;
    if (need > room)
      return fail("{} needs at least {:.1f} MiB, more than the {:.1f} MiB that {} leaves: kvmem keeps the cgroup "
                  "under {:.1f} MiB and the process already uses {:.1f} MiB",
                  what, mib(need), mib(room), b.describe(), mib(line), mib(*usage));
  }
  return {};
}

Status check_run_fits(const MemoryLimit& limit, const std::vector<VmConfig>& vms) {
  if (limit.none()) return {};
  const MemoryEstimate e = estimate_run(vms);
  return check_fits(limit, e.total(),
                    fmt::format("the run's {} VMs touch {:.1f} MiB of guest RAM at their peaks and KVM keeps {:.1f} "
                                "MiB for their memory slots, so the run",
                                vms.size(), mib(e.guest_bytes), mib(e.kvm_bytes)));
}

Status check_stress_fits(const MemoryLimit& limit, const StressConfig& c) {
  if (limit.none()) return {};
  if (c.commit_budget)
    if (auto s = check_fits(limit, c.commit_budget, fmt::format("the stress commit budget of {:.1f} MiB", mib(c.commit_budget)));
        !s)
      return s;
  const uint64_t guest = c.vms_per_round * c.region_min, kvm = c.vms_per_round * kvm_slot_bytes(c.vm_memory);
  return check_fits(limit, guest + kvm,
                    fmt::format("a stress round of {} VMs fills at least {:.1f} MiB of guest RAM at once and KVM keeps "
                                "{:.1f} MiB for their memory slots, so it",
                                c.vms_per_round, mib(guest), mib(kvm)));
}

MemoryWatch::MemoryWatch(MemoryLimit limit, size_t vms) : limit_(std::move(limit)), entries_(vms) {}

void MemoryWatch::add(size_t index, Vm& vm) {
  std::lock_guard lock(mu_);
  entries_.at(index).vm = &vm;
}

bool MemoryWatch::remove(size_t index) {
  std::lock_guard lock(mu_);
  Entry& e = entries_.at(index);
  e.vm = nullptr;
  if (!e.stopped) e.released = true;
  return e.stopped;
}

void MemoryWatch::released(size_t index) {
  std::lock_guard lock(mu_);
  entries_.at(index).released = true;
}

uint64_t MemoryWatch::stops() const {
  std::lock_guard lock(mu_);
  return stops_;
}

std::string MemoryWatch::error() const {
  std::lock_guard lock(mu_);
  return error_;
}

uint64_t MemoryWatch::pending_locked() const {
  uint64_t bytes = 0;
  for (const Entry& e : entries_)
    if (e.stopped && !e.released) bytes += e.held;
  return bytes;
}

void MemoryWatch::check() {
  if (!active()) return;
  std::lock_guard lock(mu_);
  auto noted = [this](const Error& e) {
    if (error_.empty()) error_ = e.message;
  };
  for (const CgroupMemoryBound& b : limit_.bounds) {
    auto usage = read_cgroup_usage(b);
    if (!usage) {
      noted(usage.error());
      continue;
    }
    const uint64_t line = keep_under(b);
    // What the cgroup will hold once the VMs already stopped are gone.
    const uint64_t pending = pending_locked();
    uint64_t held = *usage > pending ? *usage - pending : 0;
    if (held <= line) continue;
    // Past the line: page cache does not count, the kernel drops it first.
    auto cache = read_cgroup_reclaimable(b);
    if (!cache) noted(cache.error());
    held -= std::min(held, cache ? *cache : 0);
    if (held <= line) continue;
    stop_largest_locked(b, *usage, line);
    return;
  }
}

void MemoryWatch::stop_largest_locked(const CgroupMemoryBound& bound, uint64_t usage, uint64_t line) {
  Entry* victim = nullptr;
  uint64_t most = 0;
  for (Entry& e : entries_) {
    if (!e.vm || e.stopped) continue;
    uint64_t held = 0;
    if (auto c = e.vm->memory().committed_bytes()) held = *c;
    else if (error_.empty()) error_ = c.error().message;
    // Ties (say, nothing committed yet) go to the larger VM: its memory slot
    // is what KVM's kernel memory grows with.
    if (!victim || held > most || (held == most && e.vm->config().memory > victim->vm->config().memory)) {
      victim = &e;
      most = held;
    }
  }
  if (!victim) return;  // every VM still here is already stopping
  victim->stopped = true;
  victim->held = most;
  stops_++;
  victim->vm->stop(FailureKind::kMemoryLimit,
                   fmt::format("stopped to keep the process under {}: the cgroup held {:.1f} MiB, past the {:.1f} "
                               "MiB kvmem keeps it under, and this VM held the most guest RAM of the VMs running "
                               "({:.1f} MiB)",
                               bound.describe(), mib(usage), mib(line), mib(most)));
}

}  // namespace kvmem
