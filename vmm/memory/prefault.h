// Prefault: the host populates guest RAM so that the guest's first touch of
// a page does not have to fault it in.
//
// Synopsis
//   Prefault               kNone, kEager, kAhead (prefault_name / parse_prefault)
//   PrefaultOptions        threads, chunk, lanes
//   PrefaultStats          what a prefault did: bytes, wall and CPU ms, threads, errors
//   populate(span)         one range: MADV_POPULATE_WRITE, or a touch per page
//   prefault_eager(mem, o) populates the lanes now, on the calling thread
//   PrefaultAhead          threads that populate the lanes while the guest runs
//
// Modes.
//   eager  everything before the guest starts (Vm::create): the guest then
//          pays only for the second-level fault of pages the host holds.
//   ahead  `threads` host threads populate RAM in chunks of `chunk` bytes
//          while the guest runs, in the order the guest uses it. The caller
//          names that order as lanes: guest ranges in RAM (one per vCPU's
//          slice, say; none means one lane of all RAM). Threads take chunk
//          numbers from one atomic counter and walk the lanes round-robin:
//          chunk 0 of lane 0, chunk 0 of lane 1, ..., chunk 1 of lane 0, ...
//          They end when every chunk is done or when stop() is called, and
//          stop() (and the destructor) joins them.
//
// Populating never changes what memory holds: MADV_POPULATE_WRITE only
// faults pages in, and the fallback (hosts whose madvise says EINVAL, older
// than Linux 5.14) does an atomic add of 0 to one byte per page, which is
// safe while the guest writes the same page. A failed call is counted and
// the first one is kept as a sentence naming the call and errno; it never
// stops the guest (its first touch faults the page in as it would have).
// Pages the guest reports free after they were populated are simply
// committed again if a thread reaches them later.
//
// Threads: ahead's threads read only a copy of the lanes and the RAM's host
// addresses (RAM lives as long as the GuestMemory, which outlives them).
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/error.h"
#include "memory/range.h"

namespace kvmem {

class GuestMemory;

enum class Prefault { kNone, kEager, kAhead };
const char* prefault_name(Prefault p);  // "none", "eager", "ahead"
std::optional<Prefault> parse_prefault(std::string_view name);

struct PrefaultOptions {
  // ahead: host threads; 0 picks (default_prefault_threads()).
  unsigned threads = 1;
  // ahead: bytes per chunk, a positive multiple of 4 KiB.
  uint64_t chunk = 2ull << 20;
  // Guest ranges in RAM in the order the guest uses them; empty: all RAM.
  std::vector<GuestRange> lanes;
};

// What 0 threads means: 2 when the host has two CPUs or more (the best of
// 1, 2 and 3 on a 2-CPU host, where two threads walking in one guest's
// footsteps kept its sweep at the host's own first-touch speed), else 1.
unsigned default_prefault_threads();

struct PrefaultStats {
  Prefault mode = Prefault::kNone;
  uint64_t bytes = 0;   // populated (failed calls not counted)
  double wall_ms = 0;   // from the start to the last thread's end
  double cpu_ms = 0;    // CPU time of the populating threads, summed
  unsigned threads = 0; // that populated (eager: 1, on the caller's thread)
  uint64_t errors = 0;  // populate calls that failed
  std::string error;    // the first of them, as a sentence; empty if none
  bool stopped = false; // ahead: stopped before it had done every chunk
};

// Populates `bytes` for writing. Errors: madvise's (other than EINVAL,
// which falls back to touching a byte per page).
Status populate(std::span<uint8_t> bytes);

// Checks lanes against RAM (each non-empty, page-aligned, inside RAM) and
// the chunk size; empty lanes become one lane of all RAM.
Result<std::vector<GuestRange>> prefault_lanes(const GuestMemory& memory, const PrefaultOptions& o);

// Populates every lane now on this thread. Errors: bad lanes only.
Result<PrefaultStats> prefault_eager(const GuestMemory& memory, const PrefaultOptions& o = {});

class PrefaultAhead {
 public:
  // Starts the threads. Errors: bad lanes or chunk; a thread that cannot
  // start (those started are stopped and joined first).
  static Result<std::unique_ptr<PrefaultAhead>> start(const GuestMemory& memory, const PrefaultOptions& o);
  PrefaultAhead(const PrefaultAhead&) = delete;
  PrefaultAhead& operator=(const PrefaultAhead&) = delete;
  ~PrefaultAhead() { stop(); }

  // Asks the threads to end after their current chunk and joins them.
  // Idempotent; safe to call from one thread at a time.
  void stop();
  // Waits for every chunk to be done (tests), then joins.
  void wait();
  // After stop() or wait(): what the threads did.
  PrefaultStats stats() const;

 private:
  PrefaultAhead(const GuestMemory& memory, std::vector<GuestRange> lanes, uint64_t chunk);
  void work();
  void join();

  const GuestMemory& memory_;
  const std::vector<GuestRange> lanes_;
  const uint64_t chunk_;
  uint64_t rounds_ = 0;  // chunks in the longest lane
  std::atomic<uint64_t> next_{0};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> cpu_ns_{0};
  std::atomic<uint64_t> errors_{0};
  std::atomic<int64_t> last_end_ns_{0};  // steady clock, the latest thread end
  int64_t start_ns_ = 0;
  mutable std::mutex error_mu_;  // a leaf
  std::string error_;    // protected by error_mu_
  std::vector<std::thread> threads_;
  bool joined_ = false;
};

}  // namespace kvmem
