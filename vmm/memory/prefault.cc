#include "vmm/memory/prefault.h"

#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

#include "base/thread.h"
#include "vmm/memory/guest_memory.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older uapi headers lack the name
#endif

namespace kvmem {
namespace {

constexpr uint64_t kPage = 4096;

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

uint64_t thread_cpu_ns() {
  timespec ts{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Populates the guest range g of RAM, piece by piece; the bytes done, and
// the first error.
uint64_t populate_guest(const GuestMemory& memory, GuestRange g, Status& status) {
  uint64_t done = 0;
  for (uint64_t at = g.start; at < g.end;) {
    std::span<uint8_t> run = memory.ram_run(GuestAddr(at), g.end - at);
    if (auto s = populate(run); !s) {
      if (status) status = std::unexpected(s.error().context(fmt::format("cannot prefault guest-physical {}",
                                                                         GuestRange(at, at + run.size()))));
    } else {
      done += run.size();
    }
    at += run.size();
  }
  return done;
}

}  // namespace

const char* prefault_name(Prefault p) {
  switch (p) {
    case Prefault::kNone: return "none";
    case Prefault::kEager: return "eager";
    case Prefault::kAhead: return "ahead";
  }
  return "?";
}

std::optional<Prefault> parse_prefault(std::string_view name) {
  for (Prefault p : {Prefault::kNone, Prefault::kEager, Prefault::kAhead})
    if (name == prefault_name(p)) return p;
  return std::nullopt;
}

unsigned default_prefault_threads() {
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return cpus >= 2 ? 2 : 1;
}

Status populate(std::span<uint8_t> bytes) {
  if (bytes.empty()) return {};
  if (madvise(bytes.data(), bytes.size(), MADV_POPULATE_WRITE) == 0) return {};
  const int err = errno;
  if (err != EINVAL) return sys_fail(fmt::format("cannot populate {} bytes", bytes.size()), "madvise(MADV_POPULATE_WRITE)", err);
  // No MADV_POPULATE_WRITE: a write fault per page that changes nothing,
  // even while a guest writes the same byte.
  for (size_t off = 0; off < bytes.size(); off += kPage) __atomic_fetch_add(&bytes[off], uint8_t{0}, __ATOMIC_RELAXED);
  return {};
}

Result<std::vector<GuestRange>> prefault_lanes(const GuestMemory& memory, const PrefaultOptions& o) {
  if (o.chunk == 0 || o.chunk % kPage != 0)
    return fail("the prefault chunk ({} bytes) must be a positive multiple of 4 KiB", o.chunk);
  if (o.lanes.empty()) return std::vector<GuestRange>{GuestRange(0, memory.ram_size())};
  for (const GuestRange& l : o.lanes)
    if (!l.well_formed() || l.empty() || !l.is_page_aligned() || l.end > memory.ram_size())
      return fail("prefault lane {} is not a non-empty, page-aligned range of RAM [0, {:#x})", l, memory.ram_size());
  return o.lanes;
}

Result<PrefaultStats> prefault_eager(const GuestMemory& memory, const PrefaultOptions& o) {
  const std::vector<GuestRange> lanes = KVMEM_TRY(prefault_lanes(memory, o));
  PrefaultStats st;
  st.mode = Prefault::kEager;
  st.threads = 1;
  const int64_t t0 = steady_ns();
  const uint64_t cpu0 = thread_cpu_ns();
  for (const GuestRange& l : lanes) {
    Status status;
    st.bytes += populate_guest(memory, l, status);
    if (!status) {
      st.errors++;
      if (st.error.empty()) st.error = status.error().message;
    }
  }
  st.cpu_ms = static_cast<double>(thread_cpu_ns() - cpu0) / 1e6;
  st.wall_ms = static_cast<double>(steady_ns() - t0) / 1e6;
  return st;
}

PrefaultAhead::PrefaultAhead(const GuestMemory& memory, std::vector<GuestRange> lanes, uint64_t chunk)
    : memory_(memory), lanes_(std::move(lanes)), chunk_(chunk) {
  for (const GuestRange& l : lanes_) rounds_ = std::max(rounds_, (l.length() + chunk_ - 1) / chunk_);
}

Result<std::unique_ptr<PrefaultAhead>> PrefaultAhead::start(const GuestMemory& memory, const PrefaultOptions& o) {
  std::vector<GuestRange> lanes = KVMEM_TRY(prefault_lanes(memory, o));
  std::unique_ptr<PrefaultAhead> p(new PrefaultAhead(memory, std::move(lanes), o.chunk));
  const unsigned n = o.threads ? o.threads : default_prefault_threads();
  p->start_ns_ = steady_ns();
  p->last_end_ns_.store(p->start_ns_);
  for (unsigned i = 0; i < n; i++) {
    auto t = start_thread(fmt::format("prefault thread {}", i), [q = p.get()] { q->work(); });
    if (!t) {
      p->stop();  // joins those that started
      return std::unexpected(t.error());
    }
    p->threads_.push_back(std::move(*t));
  }
  return p;
}

void PrefaultAhead::work() {
  const uint64_t total = rounds_ * lanes_.size();
  Status first;
  uint64_t errors = 0;
  for (uint64_t k; !stop_.load(std::memory_order_relaxed) && (k = next_.fetch_add(1)) < total;) {
    const GuestRange& lane = lanes_[k % lanes_.size()];
    const uint64_t at = lane.start + (k / lanes_.size()) * chunk_;
    if (at >= lane.end) continue;  // a shorter lane, already done
    Status status;
    bytes_.fetch_add(populate_guest(memory_, GuestRange(at, std::min(lane.end, at + chunk_)), status));
    if (!status) {
      errors++;
      if (first) first = status;
    }
  }
  cpu_ns_.fetch_add(thread_cpu_ns());
  errors_.fetch_add(errors);
  if (!first) {
    std::lock_guard lock(error_mu_);
    if (error_.empty()) error_ = first.error().message;
  }
  const int64_t end = steady_ns();
  for (int64_t seen = last_end_ns_.load(); seen < end && !last_end_ns_.compare_exchange_weak(seen, end);) {
  }
}

void PrefaultAhead::join() {
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  joined_ = true;
}

void PrefaultAhead::stop() {
  if (joined_) return;
  stop_.store(true);
  join();
}

void PrefaultAhead::wait() {
  if (!joined_) join();
}

PrefaultStats PrefaultAhead::stats() const {
  PrefaultStats st;
  st.mode = Prefault::kAhead;
  st.bytes = bytes_.load();
  st.wall_ms = static_cast<double>(last_end_ns_.load() - start_ns_) / 1e6;
  st.cpu_ms = static_cast<double>(cpu_ns_.load()) / 1e6;
  st.threads = static_cast<unsigned>(threads_.size());
  st.errors = errors_.load();
  {
    std::lock_guard lock(error_mu_);
    st.error = error_;
  }
  st.stopped = next_.load() < rounds_ * lanes_.size();
  return st;
}

}  // namespace kvmem
