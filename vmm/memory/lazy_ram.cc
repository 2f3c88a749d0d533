// LazyRam (lazy_ram.h): a userfaultfd handler thread and a filler thread
// over one space of a snapshot.
#include "vmm/memory/lazy_ram.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "base/check.h"
#include "base/fd.h"
#include "base/thread.h"

namespace kvmem {
namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Holes between runs of data up to this long are registered with the runs
// around them (and served zero pages while the restore lasts), so that a
// fragmented snapshot does not split the mapping into a VMA per run.
constexpr uint64_t kMergeGap = 2ull << 20;
// At most this many registrations: closer runs are merged first.
constexpr size_t kMaxRegistrations = 1024;
// A fault on a hole is served a zero page for the holes around it, this
// much aligned, so that a guest reading a hole does not take a round trip
// per 4 KiB page while the restore lasts.
constexpr uint64_t kZeroBlock = 64ull << 10;

enum class ExtentState : uint8_t { kOwed, kLoading, kIn };

// A registered run of the space: [start, end), the extents in it
// [first, last), and how many of them are not in yet.
struct Registration {
  uint64_t start = 0, end = 0;
  size_t first = 0, last = 0;
  size_t left = 0;
  bool registered = false;
};

}  // namespace

struct LazyRam::State {
  const SnapshotReader& reader;
  MemoryFile& file;
  std::vector<SpaceRange> ranges;  // by space offset
  std::span<const SnapshotExtent> extents;
  size_t first_index = 0;  // extents[0]'s index in the reader
  ErrorSink on_error;
  Clock::time_point started;

  Fd uffd;
  Fd stop_fd;  // an eventfd: the handler's poll wakes on it
  std::thread handler, filler;
  std::atomic<bool> stopping{false};

  mutable std::mutex mu;
  std::condition_variable changed;                // an extent finished loading
  std::vector<ExtentState> state;                 // protected by mu, per extent
  std::vector<Clock::time_point> waiting_since;   // protected by mu: a fault waits on a filler's load
  std::vector<uint64_t> owed;                     // protected by mu: a bit per page of the space
  std::vector<Registration> regs;                 // protected by mu (start/end fixed after start())
  size_t extents_left = 0;                        // protected by mu
  bool failed = false;                            // protected by mu
  LazyStats stats;                                // protected by mu

  State(const SnapshotReader& r, MemoryFile& f) : reader(r), file(f) {}

  // --- the space -------------------------------------------------------
  bool page_owed(uint64_t page) const { return owed[page / 64] >> (page % 64) & 1; }
  void clear_owed(uint64_t page) { owed[page / 64] &= ~(uint64_t{1} << (page % 64)); }

  // The range holding space offset `at`, or null.
  const SpaceRange* range_at(uint64_t at) const {
    auto it = std::upper_bound(ranges.begin(), ranges.end(), at,
                               [](uint64_t a, const SpaceRange& r) { return a < r.space_offset; });
    if (it == ranges.begin()) return nullptr;
    --it;
    return at < it->space_offset + it->file.length() ? &*it : nullptr;
  }
  // Space offset of host address `a`, or UINT64_MAX when none of ours.
  uint64_t space_of(uint64_t a) const {
    const uint64_t base = reinterpret_cast<uint64_t>(file.base());
    if (a < base) return UINT64_MAX;
    const uint64_t f = a - base;
    for (const SpaceRange& r : ranges)
      if (f >= r.file.start && f < r.file.end) return r.space_offset + (f - r.file.start);
    return UINT64_MAX;
  }
  // Calls fn(host address, length) for each host-contiguous piece of the
  // space range [start, end).
  template <class Fn>
  void host_pieces(uint64_t start, uint64_t end, Fn&& fn) const {
    for (const SpaceRange& r : ranges) {
      const uint64_t lo = std::max(start, r.space_offset), hi = std::min(end, r.space_offset + r.file.length());
      if (lo < hi) fn(file.base() + r.file.start + (lo - r.space_offset), hi - lo);
    }
  }
  // The extent covering space offset `at`, or -1.
  long extent_at(uint64_t at) const {
    auto it = std::upper_bound(extents.begin(), extents.end(), at,
                               [](uint64_t a, const SnapshotExtent& e) { return a < e.offset; });
    if (it == extents.begin()) return -1;
    --it;
    return at < it->offset + it->length ? static_cast<long>(it - extents.begin()) : -1;
  }
  // The registration holding extent j (they are in extent order).
  Registration& reg_of(size_t j) {
    auto it = std::upper_bound(regs.begin(), regs.end(), j, [](size_t x, const Registration& r) { return x < r.first; });
    KVMEM_CHECK(it != regs.begin(), "extent {} is in no registration", j);
    return *--it;
  }

  // The registration whose range holds space offset `at`, or null.
  const Registration* reg_at(uint64_t at) const {
    auto it = std::upper_bound(regs.begin(), regs.end(), at,
                               [](uint64_t a, const Registration& r) { return a < r.start; });
    if (it == regs.begin()) return nullptr;
    --it;
    return at < it->end ? &*it : nullptr;
  }

  // --- userfaultfd -------------------------------------------------------
  Status ioctl_range(unsigned long request, const char* name, uint64_t host, uint64_t len) const {
    uffdio_range r{.start = host, .len = len};
    if (::ioctl(uffd.get(), request, &r) != 0)
      return sys_fail(fmt::format("lazy restore of {}: {:#x} bytes at {:#x}", reader.name(), len, host), name, errno);
    return {};
  }
  Status register_range(const Registration& r) const {
    Status out;
    host_pieces(r.start, r.end, [&](uint8_t* host, uint64_t len) {
      if (!out) return;
      uffdio_register reg{};
      reg.range = {.start = reinterpret_cast<uint64_t>(host), .len = len};
      reg.mode = UFFDIO_REGISTER_MODE_MISSING;
      if (::ioctl(uffd.get(), UFFDIO_REGISTER, &reg) != 0) {
        out = sys_fail(fmt::format("lazy restore of {}: cannot register guest RAM [{:#x}, {:#x})", reader.name(),
                                   r.start, r.end),
                       "ioctl(UFFDIO_REGISTER)", errno);
        return;
      }
      const uint64_t need = (uint64_t{1} << _UFFDIO_ZEROPAGE) | (uint64_t{1} << _UFFDIO_WAKE);
      if ((reg.ioctls & need) != need)
        out = fail("lazy restore of {}: the kernel offers no UFFDIO_ZEROPAGE or UFFDIO_WAKE on guest RAM",
                   reader.name());
    });
    return out;
  }
  // Unregistering wakes every fault waiting in the range; they retry and
  // find the pages (or the kernel's own fault for a hole).
  void unregister_locked(Registration& r) {
    if (!r.registered) return;
    r.registered = false;
    host_pieces(r.start, r.end, [&](uint8_t* host, uint64_t len) {
      (void)ioctl_range(UFFDIO_UNREGISTER, "ioctl(UFFDIO_UNREGISTER)", reinterpret_cast<uint64_t>(host), len);
    });
  }
  void wake(uint64_t start, uint64_t end) const {
    host_pieces(start, end, [&](uint8_t* host, uint64_t len) {
      (void)ioctl_range(UFFDIO_WAKE, "ioctl(UFFDIO_WAKE)", reinterpret_cast<uint64_t>(host), len);
    });
  }

  void fail_locked(const std::string& message) {
    if (failed) return;
    failed = true;
    stats.error = message;
    // Tell first, then unregister: unregistering wakes the faults waiting
    // in the ranges, and they go on with the pages that were never loaded
    // (zeros). A VM that on_error stops is stopped before they wake (a
    // vCPU with a stop pending leaves KVM_RUN rather than enter the guest
    // again), so it ends as the snapshot's failure, not as whatever the
    // guest does with zeros; and a waiter that wakes finds the error set.
    if (on_error) on_error(message);
    for (Registration& r : regs) unregister_locked(r);
  }

  // --- loading -----------------------------------------------------------
  // Claims extent j for the caller if it is owed (true); the caller then
  // loads it with load_claimed.
  bool claim_locked(size_t j) {
    if (state[j] != ExtentState::kOwed || failed) return false;
    state[j] = ExtentState::kLoading;
    return true;
  }

  // Loads claimed extent j: reads and checks it, pwrites its owed pages.
  // `buf` holds the extent cap. Returns false on a failure (reported).
  bool load_claimed(size_t j, std::vector<uint8_t>& buf, bool on_demand) {
    const SnapshotExtent& e = extents[j];
    const auto t0 = Clock::now();
    std::span<uint8_t> data(buf.data(), e.length);
    Status s = reader.read_extent(first_index + j, data);
    // Which pages to write: owed ones (forget() waits for this load, so
    // the bits do not change under us).
    std::vector<std::pair<uint64_t, uint64_t>> runs;
    if (s) {
      std::lock_guard lock(mu);
      for (uint64_t p = e.offset / kPageSize, end = (e.offset + e.length) / kPageSize; p < end; p++) {
        if (!page_owed(p)) continue;
        if (!runs.empty() && runs.back().second == p * kPageSize)
          runs.back().second += kPageSize;
        else
          runs.emplace_back(p * kPageSize, (p + 1) * kPageSize);
      }
    }
    uint64_t written = 0;
    for (auto [lo, hi] : runs) {
      if (!s) break;
      for (uint64_t at = lo; at < hi && s;) {
        const SpaceRange* r = range_at(at);
        if (!r) {
          s = fail("lazy restore of {}: space offset {:#x} is in no RAM range", reader.name(), at);
          break;
        }
        const uint64_t piece_end = std::min(hi, r->space_offset + r->file.length());
        s = pwrite_all(data.subspan(at - e.offset, piece_end - at), r->file.start + (at - r->space_offset), j);
        written += piece_end - at;
        at = piece_end;
      }
    }
    std::lock_guard lock(mu);
    if (!s) {
      state[j] = ExtentState::kIn;  // nobody waits for it any more
      changed.notify_all();
      fail_locked(s.error().message);
      return false;
    }
    for (uint64_t p = e.offset / kPageSize, end = (e.offset + e.length) / kPageSize; p < end; p++) clear_owed(p);
    state[j] = ExtentState::kIn;
    const auto t1 = Clock::now();
    if (on_demand) {
      stats.extents_on_demand++;
      stats.bytes_on_demand += written;
    } else {
      stats.extents_filled++;
      stats.bytes_filled += written;
      stats.fill_busy_ms += ms_between(t0, t1);
    }
    // Faults that came while the filler loaded it: wake them.
    if (waiting_since[j] != Clock::time_point{}) {
      stats.wait_ms += ms_between(waiting_since[j], t1);
      waiting_since[j] = Clock::time_point{};
      wake(e.offset, e.offset + e.length);
    }
    extent_in_locked(j);
    changed.notify_all();
    return true;
  }

  // Extent j is in: its registration may be done, and so may the restore.
  void extent_in_locked(size_t j) {
    Registration& r = reg_of(j);
    if (--r.left == 0) unregister_locked(r);
    if (--extents_left == 0) {
      stats.complete = true;
      stats.fill_ms = ms_between(started, Clock::now());
    }
  }

  Status pwrite_all(std::span<const uint8_t> bytes, uint64_t off, size_t j) const {
    while (!bytes.empty()) {
      ssize_t n = ::pwrite(file.fd(), bytes.data(), bytes.size(), static_cast<off_t>(off));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0)
        return sys_fail(fmt::format("lazy restore of {}: extent {} into the memory file at {:#x}", reader.name(),
                                    first_index + j, off),
                        "pwrite", n < 0 ? errno : EIO);
      bytes = bytes.subspan(static_cast<size_t>(n));
      off += static_cast<uint64_t>(n);
    }
    return {};
  }

  // --- the handler ---------------------------------------------------------
  void serve(uint64_t address, std::vector<uint8_t>& buf) {
    const auto t0 = Clock::now();
    const uint64_t host_page = address & ~(kPageSize - 1);
    const uint64_t at = space_of(host_page);
    std::unique_lock lock(mu);
    stats.faults++;
    if (at == UINT64_MAX || failed) {
      // Not ours (cannot happen: only our ranges are registered), or the
      // restore failed and everything is unregistered: let it retry.
      lock.unlock();
      (void)ioctl_range(UFFDIO_WAKE, "ioctl(UFFDIO_WAKE)", host_page, kPageSize);
      return;
    }
    if (page_owed(at / kPageSize)) {
      const long j = extent_at(at);
      KVMEM_CHECK(j >= 0, "page {:#x} of the space is owed but no extent covers it", at);
      const size_t x = static_cast<size_t>(j);
      if (state[x] == ExtentState::kLoading) {
        // The filler has it: it wakes the extent when it is done.
        if (waiting_since[x] == Clock::time_point{}) waiting_since[x] = t0;
        return;
      }
      KVMEM_CHECK(claim_locked(x), "extent {} is owed but cannot be claimed", x);
      lock.unlock();
      if (!load_claimed(x, buf, true)) return;
      const SnapshotExtent& e = extents[x];
      wake(e.offset, e.offset + e.length);
      lock.lock();
      stats.wait_ms += ms_between(t0, Clock::now());
      return;
    }
    // A hole: no data in the snapshot (or forgotten). Zero pages for the
    // holes of its block that are not owed, inside its registration (a
    // zero page is refused outside a registered range) and its RAM range
    // (one host mapping).
    const Registration* reg = reg_at(at);
    if (!reg || !reg->registered) {
      // Unregistered since the event was queued: the retry is the kernel's.
      lock.unlock();
      (void)ioctl_range(UFFDIO_WAKE, "ioctl(UFFDIO_WAKE)", host_page, kPageSize);
      return;
    }
    stats.zero_faults++;
    const SpaceRange* r = range_at(at);
    uint64_t lo = std::max({at & ~(kZeroBlock - 1), r->space_offset, reg->start});
    uint64_t hi = std::min({(at & ~(kZeroBlock - 1)) + kZeroBlock, r->space_offset + r->file.length(), reg->end});
    std::vector<bool> zero;
    for (uint64_t p = lo; p < hi; p += kPageSize) zero.push_back(!page_owed(p / kPageSize));
    lock.unlock();
    uint8_t* host = file.base() + r->file.start + (lo - r->space_offset);
    std::vector<unsigned char> resident((hi - lo) / kPageSize);
    if (::mincore(host, hi - lo, resident.data()) != 0) std::fill(resident.begin(), resident.end(), 0);
    for (size_t i = 0; i < zero.size();) {
      if (!zero[i] || (resident[i] & 1)) {
        i++;
        continue;
      }
      size_t k = i;
      while (k < zero.size() && zero[k] && !(resident[k] & 1)) k++;
      uffdio_zeropage z{};
      z.range = {.start = reinterpret_cast<uint64_t>(host) + i * kPageSize, .len = (k - i) * kPageSize};
      z.mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE;
      // EEXIST: a page appeared meanwhile; EAGAIN: part done, a page in
      // the run appeared; ENOENT: the range was unregistered meanwhile.
      // Each is fine: the wake below lets the fault retry.
      if (::ioctl(uffd.get(), UFFDIO_ZEROPAGE, &z) != 0 && errno != EEXIST && errno != EAGAIN && errno != ENOENT) {
        const int err = errno;
        lock.lock();
        if (!reg->registered) {  // unregistered under us: the retry is the kernel's
          lock.unlock();
          break;
        }
        fail_locked(sys_fail(fmt::format("lazy restore of {}: a zero page at space offset {:#x}", reader.name(),
                                         lo + i * kPageSize),
                             "ioctl(UFFDIO_ZEROPAGE)", err)
                        .error()
                        .message);
        return;
      }
      i = k;
    }
    (void)ioctl_range(UFFDIO_WAKE, "ioctl(UFFDIO_WAKE)", reinterpret_cast<uint64_t>(host), hi - lo);
    lock.lock();
    stats.wait_ms += ms_between(t0, Clock::now());
  }

  void handler_loop() {
    std::vector<uint8_t> buf(reader.header().extent_cap);
    uffd_msg msgs[64];
    for (;;) {
      pollfd fds[2] = {{uffd.get(), POLLIN, 0}, {stop_fd.get(), POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        std::lock_guard lock(mu);
        fail_locked(sys_fail(fmt::format("lazy restore of {}: the fault handler", reader.name()), "poll", errno)
                        .error()
                        .message);
        return;
      }
      if (fds[1].revents) return;
      const ssize_t n = ::read(uffd.get(), msgs, sizeof msgs);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        std::lock_guard lock(mu);
        fail_locked(
            sys_fail(fmt::format("lazy restore of {}: the fault handler", reader.name()), "read(userfaultfd)", errno)
                .error()
                .message);
        return;
      }
      for (size_t i = 0; i < static_cast<size_t>(n) / sizeof(uffd_msg); i++)
        if (msgs[i].event == UFFD_EVENT_PAGEFAULT) serve(msgs[i].arg.pagefault.address, buf);
    }
  }

  // --- the filler, and complete() ------------------------------------------
  // Loads every owed extent in order; with `wait`, also waits for loads in
  // flight elsewhere. Returns false when stopped or failed.
  bool fill_all(bool wait) {
    std::vector<uint8_t> buf(reader.header().extent_cap);
    for (size_t j = 0; j < extents.size(); j++) {
      if (stopping.load(std::memory_order_relaxed) && !wait) return false;
      std::unique_lock lock(mu);
      if (failed) return false;
      if (!claim_locked(j)) {
        if (wait) changed.wait(lock, [&] { return state[j] != ExtentState::kLoading; });
        continue;
      }
      lock.unlock();
      if (!load_claimed(j, buf, false)) return false;
    }
    return true;
  }
};

Result<std::unique_ptr<LazyRam>> LazyRam::start(const SnapshotReader& reader, uint32_t space, MemoryFile& file,
                                                std::vector<SpaceRange> ranges, const LazyOptions& options,
                                                ErrorSink on_error) {
  const std::string what = fmt::format("lazy restore of {}", reader.name());
  const long sp = reader.find_space(space);
  if (sp < 0) return fail("cannot start the {}: the snapshot has no space {}", what, space);
  if (file.page_size() != kPageSize)
    return fail("cannot start the {}: RAM on {} KiB pages (hugetlb) is restored eagerly only", what,
                file.page_size() >> 10);
  std::sort(ranges.begin(), ranges.end(),
            [](const SpaceRange& a, const SpaceRange& b) { return a.space_offset < b.space_offset; });
  uint64_t space_end = 0;
  for (const SpaceRange& r : ranges) {
    if (!r.file.well_formed() || r.file.empty() || !r.file.is_page_aligned() || r.space_offset % kPageSize ||
        r.space_offset < space_end || r.file.end > file.total_size())
      return fail("cannot start the {}: RAM range {} at space offset {:#x} is unaligned, overlapping or outside "
                  "the memory file",
                  what, r.file.to_string(), r.space_offset);
    space_end = r.space_offset + r.file.length();
    auto data = KVMEM_TRY_CTX(file.data_extents(r.file), fmt::format("cannot start the {}", what));
    if (!data.empty())
      return fail("cannot start the {}: RAM range {} is not fresh: {} holds data", what, r.file.to_string(),
                  data.front().to_string());
  }
  auto s = std::make_unique<State>(reader, file);
  s->ranges = std::move(ranges);
  s->extents = reader.extents_of(space);
  s->first_index = reader.first_extent_of(space);
  s->on_error = std::move(on_error);
  const size_t n = s->extents.size();
  s->state.assign(n, ExtentState::kOwed);
  s->waiting_since.assign(n, Clock::time_point{});
  s->owed.assign((space_end / kPageSize + 63) / 64, 0);
  s->extents_left = n;
  for (size_t j = 0; j < n; j++) {
    const SnapshotExtent& e = s->extents[j];
    for (uint64_t at = e.offset; at < e.offset + e.length; at += kPageSize) {
      if (!s->range_at(at))
        return fail("cannot start the {}: extent {} [{:#x}, {:#x}) lies outside guest RAM", what,
                    s->first_index + j, e.offset, e.offset + e.length);
      s->owed[at / kPageSize / 64] |= uint64_t{1} << (at / kPageSize % 64);
    }
  }
  // Registrations: runs of extents, merged across small holes, then the
  // closest merged until there are few enough; never across a hole in RAM.
  for (size_t j = 0; j < n; j++) {
    const SnapshotExtent& e = s->extents[j];
    if (!s->regs.empty() && e.offset - s->regs.back().end <= kMergeGap) {
      Registration& last = s->regs.back();
      last.end = e.offset + e.length;
      last.last = j + 1;
      last.left++;
      continue;
    }
    s->regs.push_back({e.offset, e.offset + e.length, j, j + 1, 1, false});
  }
  while (s->regs.size() > kMaxRegistrations) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < s->regs.size(); i++)
      if (s->regs[i + 1].start - s->regs[i].end < s->regs[best + 1].start - s->regs[best].end) best = i;
    Registration& a = s->regs[best];
    const Registration& b = s->regs[best + 1];
    a.end = b.end;
    a.last = b.last;
    a.left += b.left;
    s->regs.erase(s->regs.begin() + static_cast<long>(best) + 1);
  }

  const int fd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd < 0) return sys_fail(fmt::format("cannot start the {}", what), "userfaultfd", errno);
  s->uffd = Fd(fd);
  uffdio_api api{.api = UFFD_API, .features = 0, .ioctls = 0};
  if (::ioctl(fd, UFFDIO_API, &api) != 0)
    return sys_fail(fmt::format("cannot start the {}", what), "ioctl(UFFDIO_API)", errno);
  const int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) return sys_fail(fmt::format("cannot start the {}", what), "eventfd", errno);
  s->stop_fd = Fd(efd);
  for (Registration& r : s->regs) {
    KVMEM_TRY(s->register_range(r));  // closing the uffd drops what was registered
    r.registered = true;
  }
  s->started = Clock::now();
  if (n == 0) s->stats.complete = true;
  State* raw = s.get();
  s->handler = KVMEM_TRY(start_thread(fmt::format("the fault handler of the {}", what), [raw] { raw->handler_loop(); }));
  std::unique_ptr<LazyRam> out(new LazyRam(std::move(s)));
  if (options.fill) {
    auto t = start_thread(fmt::format("the filler of the {}", what), [raw] { raw->fill_all(false); });
    if (!t) return std::unexpected(t.error());  // out's destructor stops the handler
    out->s_->filler = std::move(*t);
  }
  return out;
}

LazyRam::LazyRam(std::unique_ptr<State> state) : s_(std::move(state)) {}

LazyRam::~LazyRam() { stop(); }

void LazyRam::forget(uint64_t start, uint64_t end) {
  State& s = *s_;
  std::unique_lock lock(s.mu);
  const uint64_t lo_page = start / kPageSize;
  const uint64_t hi_page = std::min(end / kPageSize, s.owed.size() * 64);
  // Extents overlapping it, and a wait for any being loaded.
  auto first = std::upper_bound(s.extents.begin(), s.extents.end(), start,
                                [](uint64_t a, const SnapshotExtent& e) { return a < e.offset + e.length; });
  for (auto it = first; it != s.extents.end() && it->offset < end; ++it) {
    const size_t j = static_cast<size_t>(it - s.extents.begin());
    s.changed.wait(lock, [&] { return s.state[j] != ExtentState::kLoading; });
  }
  for (uint64_t p = lo_page; p < hi_page; p++) {
    if (!s.page_owed(p)) continue;
    s.clear_owed(p);
    s.stats.bytes_forgotten += kPageSize;
  }
  // An extent nothing is owed of any more is in.
  for (auto it = first; it != s.extents.end() && it->offset < end; ++it) {
    const size_t j = static_cast<size_t>(it - s.extents.begin());
    if (s.state[j] != ExtentState::kOwed) continue;
    bool any = false;
    for (uint64_t p = it->offset / kPageSize; p < (it->offset + it->length) / kPageSize && !any; p++)
      any = s.page_owed(p);
    if (any) continue;
    s.state[j] = ExtentState::kIn;
    s.extent_in_locked(j);
  }
}

Status LazyRam::complete() {
  State& s = *s_;
  s.fill_all(true);
  std::lock_guard lock(s.mu);
  if (s.failed) return fail("{}", s.stats.error);
  return {};
}

LazyStats LazyRam::stats() const {
  std::lock_guard lock(s_->mu);
  return s_->stats;
}

void LazyRam::stop() {
  State& s = *s_;
  if (s.stopping.exchange(true)) return;
  if (s.filler.joinable()) s.filler.join();
  const uint64_t one = 1;
  if (s.handler.joinable()) {
    (void)!::write(s.stop_fd.get(), &one, sizeof one);
    s.handler.join();
  }
  // Closing the userfaultfd drops its registrations and wakes any fault
  // still waiting (nothing of the guest runs now).
  s.uffd.reset();
}

}  // namespace kvmem
