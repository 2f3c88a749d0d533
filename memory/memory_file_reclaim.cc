// MemoryFile's reclaimer: the thread that punches ranges whose last
// reference went and only then makes them allocatable again, and
// wait_for_reclaim(). The rest of MemoryFile is in memory_file.cc.
#include <chrono>
#include <vector>

#include "base/check.h"
#include "memory/memory_file.h"

namespace kvmem {
namespace {

// At most this many ranges per reclaimer round. Large rounds matter when
// the allocator is busy: each round's lock traffic and the cache lines it
// pulls from the allocator's core cost the allocator more than the work
// itself. At 10^6 live fragmented allocations, Allocate+DecRef pairs/s with
// the reclaimer running went from ~0.75 M (64 ranges, 0.5 ms linger) to
// ~1.3 M (1024 ranges, 2 ms linger) on an idle 2-core machine.
constexpr size_t kReclaimRangesPerRound = 1024;

// A round's bookkeeping is done in chunks of this many ranges, with mu_
// dropped between chunks, to bound how long mu_ is held at a time.
constexpr size_t kReclaimFinishChunk = 128;

// Before a round that would be short, the reclaimer lingers this long so
// that neighbouring frees coalesce into fewer, larger punches (one 64 KiB
// punch costs about what one 4 KiB punch does) and rounds stay large,
// unless someone waits for it (wait_for_reclaim cuts the linger short).
constexpr auto kReclaimLinger = std::chrono::microseconds(2000);

}  // namespace

void MemoryFile::wait_for_reclaim() {
  std::unique_lock l(mu_);
  flush_waiters_++;
  idle_cv_.notify_all();  // cuts a lingering reclaimer short
  idle_cv_.wait(l, [&] { return destroyed_ || (reclaimable_.empty() && !reclaiming_); });
  flush_waiters_--;
}

void MemoryFile::reclaim_loop() {
  std::unique_lock l(mu_);
  std::vector<FileRange> batch;
  std::vector<Reclaim> done;
  for (;;) {
    reclaimer_asleep_ = true;
    reclaim_cv_.wait(l, [&] { return destroyed_ || !reclaimable_.empty(); });
    reclaimer_asleep_ = false;
    if (destroyed_) return;
    if (reclaimable_.size() < kReclaimRangesPerRound && flush_waiters_ == 0) {
      idle_cv_.wait_for(l, kReclaimLinger, [&] { return destroyed_ || flush_waiters_ > 0; });
      if (destroyed_) return;
    }
    // Take the lowest reclaimable ranges: allocation is lowest-first, so
    // these are the ones the next allocations most likely want.
    batch.clear();
    uint64_t bytes = 0;
    for (RangeSet::Seg s = reclaimable_.first_segment();
         s.ok() && batch.size() < kReclaimRangesPerRound && bytes < reclaim_batch_;) {
      if (s.range().length() > reclaim_batch_) s = reclaimable_.split(s, s.start() + reclaim_batch_).first;
      batch.push_back(s.range());
      bytes += s.range().length();
      s = reclaimable_.remove(s).next_segment();
    }
    reclaiming_ = true;
    l.unlock();
    done.clear();
    for (FileRange r : batch) done.push_back(reclaim_unlocked(r));
    // One lock round for the whole batch keeps the reclaimer out of the
    // allocator's way.
    l.lock();
    for (size_t i = 0; i < done.size(); i++) {
      finish_reclaim_locked(done[i]);
      if ((i + 1) % kReclaimFinishChunk == 0 && i + 1 < done.size()) {
        // Let a waiting allocator in; the unfinished ranges stay ours
        // (reclaiming_), so no one sees them half done.
        l.unlock();
        std::this_thread::yield();
        l.lock();
      }
    }
    reclaiming_ = false;
    if (reclaimable_.empty()) idle_cv_.notify_all();
  }
}

// Makes r, whose pages have no references, read as zero: punches it, or if
// that fails zeroes what holds data. Runs without mu_.
MemoryFile::Reclaim MemoryFile::reclaim_unlocked(FileRange r) {
  Reclaim rec{r, Reclaim::Punched, {}};
  if (host_->fallocate(fd_, kPunchHole, r.start, r.length()) == 0) return rec;

  // Holes read as zero, and so do pages fallocate committed but nobody
  // touched, which SEEK_DATA skips: writing only the data keeps holes holes.
  rec.how = Reclaim::Zeroed;
  uint64_t pos = r.start;
  while (pos < r.end) {
    off_t d = lseek(fd_, static_cast<off_t>(pos), SEEK_DATA);
    if (d < 0 || static_cast<uint64_t>(d) >= r.end) {
      if (d < 0 && errno != ENXIO) rec.how = Reclaim::Stuck;
      break;
    }
    off_t h = lseek(fd_, d, SEEK_HOLE);
    if (h < 0) {
      rec.how = Reclaim::Stuck;
      break;
    }
    FileRange piece(align_down(static_cast<uint64_t>(d), page_size_),
                    std::min<uint64_t>(static_cast<uint64_t>(h), r.end));
    piece = piece.intersect(r);
    if (piece.empty()) {  // punched between the two lseeks
      pos = std::max(pos + page_size_, piece.end);
      continue;
    }
    auto span = map_internal(piece);
    if (!span) {
      rec.how = Reclaim::Stuck;
      break;
    }
    std::memset(span->data(), 0, span->size());
    rec.data.push_back(piece);
    pos = piece.end;
  }
  return rec;
}

void MemoryFile::finish_reclaim_locked(const Reclaim& rec) {
  FileRange r = rec.range;
  if (rec.how == Reclaim::Punched) {
    // The common case, one lookup: r is one whole segment not known committed.
    if (auto s = usage_.find_segment(r.start);
        s.ok() && s.range() == r && !s.value().known_committed) {
      KVMEM_CHECK(s.value().refs == 0, "reclaimed {} is referenced\n{}", r.to_string(),
                  dump_locked());
      usage_.remove(s);
      stats_.reclaimed_ranges.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    mark_decommitted_locked(r, /*require_refs=*/false);
    usage_.remove_range(r);
    stats_.reclaimed_ranges.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (rec.how == Reclaim::Stuck) {
    // Neither punched nor zeroed: it may hold old data, so it must never be
    // allocated again. It stays System, refs 0, out of reclaimable_.
    stats_.quarantined_bytes.fetch_add(r.length(), std::memory_order_relaxed);
    std::fprintf(stderr, "kvmem: memory file: quarantined %s: cannot punch or zero it\n",
                 r.to_string().c_str());
    return;
  }
  // Zeroed pages stay committed: keep them counted as System in
  // free_committed_ until an allocation takes them over.
  usage_.apply_contiguous(r, [&](UsageSet::Seg s) {
    KVMEM_CHECK(s.value().refs == 0, "reclaim of {}: {} is referenced\n{}", r.to_string(),
                s.range().to_string(), dump_locked());
    if (s.value().known_committed) free_committed_.add(s.range(), Empty{});
  });
  for (FileRange d : rec.data) {
    usage_.apply_contiguous(d, [&](UsageSet::Seg s) {
      if (s.value().known_committed) return;
      s.value().known_committed = true;
      counters_.inc(UsageKind::System, s.range().length());
      usage_expected_ += s.range().length();
      free_committed_.add(s.range(), Empty{});
    });
  }
  usage_.remove_range(r);
  stats_.reclaimed_ranges.fetch_add(1, std::memory_order_relaxed);
  stats_.reclaim_fallbacks.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace kvmem
