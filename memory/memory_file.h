// MemoryFile: a page allocator over one host memfd, in the style of gVisor's
// filemem/pgalloc.
//
// Synopsis
//   MemoryFile::create(options)              -> Result<unique_ptr<MemoryFile>>
//   allocate(length, kind, {alignment, commit}) -> Result<FileRange>, one reference
//   inc_ref(r)  dec_ref(r)                   references; at zero, reclaim
//   decommit(r)                              punch now, keep the allocation
//   update_usage()                           make per-kind committed bytes exact
//   usage()  total_usage()  total_size()     counters, st_blocks, file size
//   map_internal(r)                          -> Result<span>: host memory of r
//   resident_in(r)                           bytes of r the host holds (mincore over data only)
//   data_extents(r)                          -> Result<vector<FileRange>>: the pieces of r holding data
//   base()                                   host address of file offset 0
//   wait_for_reclaim()  destroy()  dump_usage()  check_invariants()
//
// Pages. Each page of the file is in exactly one of these states:
//   free          in no usage segment and not in free_committed_; a hole (reads
//                 zero, holds no host memory); allocatable.
//   free, zeroed  in free_committed_: the reclaimer could not punch it, so it
//                 zeroed it instead; the host still holds it (counted as
//                 System); allocatable, and an allocation takes it over as
//                 known committed.
//   allocated     in a usage segment with refs > 0, of the caller's kind.
//   reclaimable   refs == 0, kind System, waiting in reclaimable_ for the
//                 reclaimer, or held by the reclaimer while it punches.
//   quarantined   refs == 0, kind System, neither punchable nor zeroable (both
//                 failed); never allocated again. Counted in stats().
// A page is committed when the host holds memory for it (resident or
// swapped). Touching an uncommitted page, or fallocate(mode 0), commits it;
// only punching a hole uncommits it. known_committed on a
// segment means the allocator has seen its pages committed, so later scans
// skip them; only a punch clears it.
//
// Invariants (check_invariants() verifies all of them):
//   - usage segments lie inside the file, are disjoint and maximally merged;
//   - a page belongs to at most one allocation: allocate only takes gaps;
//   - refs == 0 implies kind System; reclaimable_ lies inside refs == 0
//     segments; free_committed_ lies in usage gaps;
//   - the per-kind counters equal the lengths of the known_committed segments
//     of each kind (free_committed_ counts as System), and usage_expected_ is
//     their sum;
//   - a page returns to the free pool only after it reads as zero.
// After update_usage() with no concurrent writers, the per-kind sum equals the
// kernel's own count (st_blocks, which sees everything mincore sees plus pages
// committed by fallocate, which the allocator marks itself).
//
// Thread safety. Every public function may be called from any thread.
//   mu_ guards usage_, reclaimable_, free_committed_, usage_expected_,
//       destroyed_, reclaiming_ and the writes of file_size_.
//   mappings_mu_ guards the creation of chunk mappings. Reading the chunk
//       table (chunk_mapped_) is lock-free: an acquire load per chunk.
//   counters_ and stats_ are atomics, written with mu_ held, read without.
// Lock order: mu_ before mappings_mu_. No syscall that punches holes or
// commits memory runs with mu_ held; update_usage's scan does run under mu_
// so that no decommit can be marked in the middle of it (a decommit marks its
// pages uncommitted only after its punch, under mu_, so a scan either sees
// the page before the punch and the mark then clears it, or after).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "base/error.h"
#include "memory/host_ops.h"
#include "memory/range.h"
#include "memory/segment_set.h"
#include "memory/usage.h"

namespace kvmem {

inline constexpr uint64_t kChunkShift = 24;
inline constexpr uint64_t kChunkSize = uint64_t{1} << kChunkShift;  // 16 MiB
// A chunk's first mapping maps the unmapped chunks after it in its group of
// this many (1 GiB), as far as the file reaches, in the same mmap.
inline constexpr uint64_t kMapAheadChunks = 64;

enum class HugePages {
  None,     // 4 KiB shmem pages
  Hugetlb,  // MFD_HUGETLB, 2 MiB pages; allocation granularity becomes 2 MiB
  Thp,      // 4 KiB shmem with MADV_HUGEPAGE on every chunk mapping
};

// What the host allows, and why not when it does not.
struct HugePageSupport {
  bool hugetlb = false;
  std::string hugetlb_reason;  // empty when hugetlb is usable
  bool thp = false;
  std::string thp_reason;  // empty when THP advice can take effect
};
HugePageSupport probe_huge_pages();

// How update_usage finds committed pages among those not known committed.
enum class UsageScan {
  Auto,      // Mincore
  // Holes skipped with SEEK_DATA, then mincore over what is left, in
  // windows that grow while they end resident. Cost: about one SEEK_DATA
  // per data extent plus a few ns per mapped page. mincore does not count
  // swapped-out pages (st_blocks does; the difference stays visible as a
  // mismatch that makes the next update_usage scan again).
  Mincore,
  // Data extents from SEEK_DATA/SEEK_HOLE are the committed pages: shmem
  // reports a page as data exactly when it holds it, resident or swapped
  // (an uptodate page or a swap entry). Exact with swap, but SEEK_HOLE
  // walks every page of an extent (~30 ns a page here). Not for hugetlbfs,
  // which reports everything as data.
  SeekData,
};

struct MemoryFileOptions {
  std::string name = "kvmem-memory";
  // Address space reserved at creation for all chunk mappings; the file never
  // grows past it. A power of two, at least one chunk. PROT_NONE and
  // MAP_NORESERVE: it costs no memory.
  uint64_t reservation = uint64_t{1} << 40;
  HugePages huge = HugePages::None;
  // Not owned; must outlive the MemoryFile. Null: the kernel.
  HostOps* host = nullptr;
  // Largest range the reclaimer punches in one call (shmem serialises
  // fallocate, so a huge punch would stall every other punch for its length).
  uint64_t reclaim_batch = uint64_t{128} << 20;
  UsageScan usage_scan = UsageScan::Auto;
};

enum class CommitMode {
  None,           // pages commit when first touched
  Fallocate,      // fallocate(mode 0): reserved, not touched; mincore won't see them
  PopulateWrite,  // madvise(MADV_POPULATE_WRITE) through the mapping
};

struct AllocateOptions {
  // 0: kHugePageSize when length >= kHugePageSize, else the page size.
  // Otherwise a power of two no smaller than the page size.
  uint64_t alignment = 0;
  CommitMode commit = CommitMode::None;
};

class MemoryFile {
 public:
  struct Stats {
    uint64_t scans = 0;               // update_usage calls that scanned
    uint64_t scans_elided = 0;        // ... that st_blocks let skip
    uint64_t reclaimed_ranges = 0;    // ranges the reclaimer returned to the pool
    uint64_t reclaim_fallbacks = 0;   // ... of which were zeroed, not punched
    uint64_t quarantined_bytes = 0;   // neither punchable nor zeroable
  };

  static Result<std::unique_ptr<MemoryFile>> create(const MemoryFileOptions& options = {});
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;
  ~MemoryFile();

  // A range of `length` bytes with one reference, the lowest that fits.
  // Errors: length zero or not a multiple of page_size(); a bad alignment;
  // ENOMEM when the reservation is full or the file cannot grow; the commit
  // failing (the range is then released).
  Result<FileRange> allocate(uint64_t length, UsageKind kind, const AllocateOptions& opts = {});

  // Preconditions (checked, abort): r is well formed, non-empty and aligned
  // to page_size(); every page of r is allocated with refs > 0.
  void inc_ref(FileRange r);
  // Same preconditions. A page whose count reaches zero becomes System and
  // is handed to the reclaimer; dec_ref past zero aborts.
  void dec_ref(FileRange r);

  // Punches r now; the allocation and its references stay, and its pages
  // read as zero. Preconditions as for inc_ref (checked after the punch).
  // Errors: the punch failing (nothing is marked then).
  Status decommit(FileRange r);

  // Makes the per-kind counters exact: nothing when st_blocks equals the
  // bytes already known committed; else, for segments not known committed,
  // skips holes with SEEK_DATA/SEEK_HOLE and counts the data (or mincores
  // it: see UsageScan).
  Status update_usage();

  UsageSnapshot usage() const { return counters_.snapshot(); }
  // Bytes of r known committed: exact right after update_usage() when
  // nothing has written to r since (one VM's share of usage(), say).
  uint64_t committed_in(FileRange r);
  // Bytes the host holds for the file, from st_blocks (one fstat).
  Result<uint64_t> total_usage() const;
  // Bytes of r resident in the host's memory, by the kernel's count: mincore
  // over the data extents of r only (SEEK_DATA skips holes), so the cost
  // follows what r holds, not its length (a 32 GiB range whose guest touched
  // a few MiB: ~0.1 ms, against ~500 ms for a mincore of all of it). Pages
  // fallocate committed and nobody touched are not resident. Errors: r
  // outside the file, a failed lseek or mincore.
  Result<uint64_t> resident_in(FileRange r);
  // The pieces of r that hold data, page-rounded, in order and maximally
  // merged, by lseek(SEEK_DATA) and lseek(SEEK_HOLE): on shmem exactly the
  // pages the file holds, resident or swapped. Holes, and pages fallocate
  // committed but nobody touched (they read as zero), are left out; on
  // hugetlbfs every page counts as data. What a snapshot of r must save
  // (snapshot/memory.h). Cost: two lseeks per extent, and SEEK_HOLE walks
  // the extent page by page (~30 ns a page here). A page punched or touched
  // meanwhile may or may not be in the answer. Errors: r ill-formed, not
  // page-aligned or outside the file; a failed lseek.
  Result<std::vector<FileRange>> data_extents(FileRange r) const;
  // The file's current size; grows by doubling, never shrinks.
  uint64_t total_size() const { return file_size_.load(std::memory_order_acquire); }
  uint64_t page_size() const { return page_size_; }
  // Created with HugePages::Thp (MADV_HUGEPAGE on its mappings).
  bool thp() const { return thp_; }
  uint64_t reservation() const { return reservation_; }
  int fd() const { return fd_; }
  // Host address of file offset 0; offset x lives at base() + x once mapped.
  uint8_t* base() const { return base_; }

  // Host memory of r, mapping its chunks on first use; contiguous for any r.
  // Valid while a reference is held on r. Errors: r outside the file, or a
  // chunk mapping failing.
  Result<std::span<uint8_t>> map_internal(FileRange r);

  // Blocks until every page freed so far is back in the free pool.
  void wait_for_reclaim();

  // Stops the reclaimer, unmaps everything, closes the file. Idempotent.
  // Precondition: no other thread is using the MemoryFile.
  void destroy();

  // The usage set, one line per segment, then totals.
  std::string dump_usage() const;
  // Aborts with a dump unless the invariants above hold.
  void check_invariants() const;
  Stats stats() const;

  // For benchmarks: forgets which pages are known committed (and zeroes the
  // counters) so that the next update_usage scans from nothing.
  void forget_known_committed();

 private:
  struct Usage {
    UsageKind kind = UsageKind::System;
    bool known_committed = false;
    uint64_t refs = 0;
    bool operator==(const Usage&) const = default;
  };
  struct Empty {
    bool operator==(const Empty&) const = default;
  };
  using UsageSet = SegmentSet<FileRange, Usage>;
  using RangeSet = SegmentSet<FileRange, Empty>;

  MemoryFile() = default;

  void check_range(FileRange r, const char* op) const;
  Status grow_locked(uint64_t end);
  Status map_chunk(uint64_t chunk);
  Status commit(FileRange r, CommitMode mode);
  void mark_committed_locked(FileRange r);
  void mark_decommitted_locked(FileRange r, bool require_refs);
  // Where update_usage's scan stands: SEEK_DATA from `from` found `data`;
  // with SeekData, [data, hole) is the extent. from > data: nothing known.
  struct ScanCursor {
    uint64_t from = 1, data = 0, hole = 0;
  };
  Status scan_locked();
  Status scan_segment_locked(FileRange r, ScanCursor* c, std::vector<FileRange>* committed);
  // What the reclaimer did to one range without mu_, finished under it.
  struct Reclaim {
    FileRange range;
    enum { Punched, Zeroed, Stuck } how = Punched;
    std::vector<FileRange> data;  // Zeroed: the pieces that held data
  };
  void reclaim_loop();
  Reclaim reclaim_unlocked(FileRange r);
  void finish_reclaim_locked(const Reclaim& rec);
  std::string dump_locked() const;
  void check_invariants_locked() const;

  HostOps* host_ = nullptr;
  int fd_ = -1;
  uint8_t* base_ = nullptr;
  uint64_t reservation_ = 0;
  uint64_t page_size_ = kPageSize;
  uint64_t reclaim_batch_ = 0;
  bool thp_ = false;
  bool scan_mincore_ = false;

  // One flag per chunk of the reservation: true once mapped. Set only with
  // mappings_mu_ held, with release order; read with acquire, no lock.
  std::unique_ptr<std::atomic<bool>[]> chunk_mapped_;
  uint64_t chunks_ = 0;
  std::mutex mappings_mu_;

  mutable std::mutex mu_;
  UsageSet usage_;             // protected by mu_
  RangeSet reclaimable_;       // protected by mu_
  RangeSet free_committed_;    // protected by mu_
  uint64_t usage_expected_ = 0;  // protected by mu_: known committed bytes
  std::vector<unsigned char> scan_vec_;  // protected by mu_: mincore's vector
  bool destroyed_ = false;     // protected by mu_
  bool reclaiming_ = false;    // protected by mu_: the reclaimer holds ranges
  bool reclaimer_asleep_ = false;  // protected by mu_: waiting on reclaim_cv_
  int flush_waiters_ = 0;          // protected by mu_: threads in wait_for_reclaim
  std::atomic<uint64_t> file_size_{0};  // written with mu_ held
  std::condition_variable reclaim_cv_;  // with mu_: reclaimable_ or destroyed_
  std::condition_variable idle_cv_;     // with mu_: the reclaimer went idle

  UsageCounters counters_;
  struct AtomicStats {
    std::atomic<uint64_t> scans{0}, scans_elided{0}, reclaimed_ranges{0},
        reclaim_fallbacks{0}, quarantined_bytes{0};
  } stats_;

  std::thread reclaimer_;
};

}  // namespace kvmem
