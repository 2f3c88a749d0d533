// MemoryFile: usage accounting (update_usage and its scan), dump, invariants.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "base/check.h"
#include "memory/memory_file.h"

namespace kvmem {
namespace {

// mincore at most this much at once: 16 KiB of vector per call.
constexpr uint64_t kMincoreSlice = uint64_t{64} << 20;

// No data at or after the cursor: lseek(SEEK_DATA) said ENXIO.
constexpr uint64_t kNoMoreData = ~uint64_t{0};

}  // namespace

Result<uint64_t> MemoryFile::total_usage() const {
  struct stat st;
  if (fstat(fd_, &st) != 0) return sys_fail("cannot read the memory file's usage", "fstat", errno);
  // st_blocks is in 512-byte units whatever the file system's block size.
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

Result<std::vector<FileRange>> MemoryFile::data_extents(FileRange r) const {
  const uint64_t size = file_size_.load(std::memory_order_acquire);
  if (!r.well_formed() || !r.is_page_aligned() || r.end > size)
    return fail("cannot list the data extents of {} of the memory file: the range is ill-formed, "
                "not page-aligned or beyond the file's {:#x} bytes",
                r.to_string(), size);
  std::vector<FileRange> out;
  for (uint64_t pos = r.start; pos < r.end;) {
    off_t d = lseek(fd_, static_cast<off_t>(pos), SEEK_DATA);
    if (d < 0) {
      if (errno == ENXIO) break;  // no data at or after pos
      return sys_fail(fmt::format("cannot list the data extents of {} of the memory file", r.to_string()),
                      "lseek(SEEK_DATA)", errno);
    }
    const uint64_t start = std::max(pos, align_down(static_cast<uint64_t>(d), kPageSize));
    if (start >= r.end) break;
    off_t h = lseek(fd_, d, SEEK_HOLE);
    if (h < 0)
      return sys_fail(fmt::format("cannot list the data extents of {} of the memory file", r.to_string()),
                      "lseek(SEEK_HOLE)", errno);
    uint64_t end = r.end;
    if (uint64_t up = 0; align_up(static_cast<uint64_t>(h), kPageSize, &up)) end = std::min(end, up);
    // Punched between the two lseeks: go on after the page.
    if (end <= start) {
      pos = start + kPageSize;
      continue;
    }
    if (!out.empty() && out.back().end == start)
      out.back().end = end;
    else
      out.emplace_back(start, end);
    pos = end;
  }
  return out;
}

Result<uint64_t> MemoryFile::resident_in(FileRange r) {
  auto extents = data_extents(r);
  if (!extents)
    return std::unexpected(extents.error().context(fmt::format("cannot count resident pages of {}", r.to_string())));
  std::vector<unsigned char> vec;
  uint64_t pages = 0;
  for (FileRange e : *extents) {
    for (uint64_t at = e.start; at < e.end;) {
      const FileRange slice(at, std::min(e.end, at + kMincoreSlice));
      auto span = map_internal(slice);
      if (!span) return std::unexpected(span.error().context("cannot count resident pages"));
      vec.resize(slice.length() / kPageSize);
      if (mincore(span->data(), span->size(), vec.data()) != 0)
        return sys_fail(fmt::format("cannot count resident pages of {} of the memory file", slice.to_string()),
                        "mincore", errno);
      for (unsigned char v : vec) pages += v & 1;
      at = slice.end;
    }
  }
  return pages * kPageSize;
}

Status MemoryFile::update_usage() {
  std::lock_guard l(mu_);
  auto kernel = total_usage();
  if (!kernel) return std::unexpected(kernel.error());
  // st_blocks counts every committed page, those fallocate committed
  // included. When it matches what is already known, nothing is unknown.
  if (*kernel == usage_expected_) {
    stats_.scans_elided.fetch_add(1, std::memory_order_relaxed);
    return {};
  }
  stats_.scans.fetch_add(1, std::memory_order_relaxed);
  return scan_locked();
}

Status MemoryFile::scan_locked() {
  // The cursor moves forward only: segments inside one data extent share its
  // lseeks, and segments inside a hole are skipped with one tree lookup.
  ScanCursor cursor;
  std::vector<FileRange> committed;
  auto s = usage_.first_segment();
  while (s.ok()) {
    if (s.value().known_committed) {
      s = s.next_segment();
      continue;
    }
    FileRange r = s.range();
    committed.clear();
    if (auto st = scan_segment_locked(r, &cursor, &committed); !st) return st;
    for (FileRange c : committed) {
      usage_.apply_and_merge(c, [&](UsageSet::Seg seg) {
        Usage& u = seg.value();
        if (u.known_committed) return;
        u.known_committed = true;
        counters_.inc(u.kind, seg.range().length());
        usage_expected_ += seg.range().length();
      });
    }
    if (cursor.data == kNoMoreData) break;
    s = usage_.lower_bound_segment(std::max(r.end, cursor.data));
  }
  return {};
}

namespace {

void add_run(std::vector<FileRange>* runs, FileRange r) {
  if (!runs->empty() && runs->back().end == r.start)
    runs->back().end = r.end;
  else
    runs->push_back(r);
}

}  // namespace

// Finds the committed pages of r (one segment not known committed), moving
// the cursor along. Pages in holes are not committed except those fallocate
// committed, which the allocator marks itself.
//   SeekData: every data extent [SEEK_DATA, SEEK_HOLE) is committed. Exact,
//     swapped pages included, but SEEK_HOLE walks the extent page by page
//     (about 30 ns a page here).
//   Mincore: SEEK_DATA finds where data starts, then mincore runs over
//     windows that double while they end resident and SEEK_DATA says data
//     continues; otherwise SEEK_DATA's answer is where the next extent
//     starts. mincore reads present page-table entries, a few ns a page, so
//     the cost is mostly one SEEK_DATA per extent.
Status MemoryFile::scan_segment_locked(FileRange r, ScanCursor* c,
                                       std::vector<FileRange>* committed) {
  uint64_t pos = r.start;
  while (pos < r.end) {
    bool known = c->from <= pos && (scan_mincore_ ? pos <= c->data : pos < c->hole);
    if (!known) {
      c->from = pos;
      off_t d = lseek(fd_, static_cast<off_t>(pos), SEEK_DATA);
      if (d < 0) {
        if (errno != ENXIO)
          return sys_fail(fmt::format("cannot scan the memory file from {:#x}", pos),
                          "lseek(SEEK_DATA)", errno);
        c->data = c->hole = kNoMoreData;
        return {};
      }
      c->data = std::max(pos, align_down(static_cast<uint64_t>(d), kPageSize));
      if (!scan_mincore_) {
        off_t h = lseek(fd_, d, SEEK_HOLE);
        if (h < 0)
          return sys_fail(fmt::format("cannot scan the memory file from {:#x}", d),
                          "lseek(SEEK_HOLE)", errno);
        uint64_t up = 0;
        c->hole = align_up(static_cast<uint64_t>(h), kPageSize, &up) ? up : kNoMoreData;
      }
    }
    if (c->data >= r.end) return {};

    if (!scan_mincore_) {
      FileRange piece(std::max(pos, c->data), std::min(c->hole, r.end));
      pos = std::max(pos + kPageSize, piece.end);
      // Empty when the reclaimer punched the extent between the two lseeks.
      if (!piece.empty()) add_run(committed, piece);
      continue;
    }

    uint64_t at = std::max(pos, c->data);
    uint64_t window = uint64_t{2} << 20;
    for (;;) {
      FileRange slice(at, std::min(r.end, at + window));
      auto span = map_internal(slice);
      if (!span) return std::unexpected(span.error().context("cannot scan the memory file"));
      scan_vec_.resize(slice.length() / kPageSize);
      if (mincore(span->data(), span->size(), scan_vec_.data()) != 0)
        return sys_fail(fmt::format("cannot scan {} of the memory file", slice.to_string()),
                        "mincore", errno);
      for (size_t i = 0; i < scan_vec_.size(); i++) {
        if (!(scan_vec_[i] & 1)) continue;
        uint64_t p = slice.start + i * kPageSize;
        add_run(committed, FileRange(p, p + kPageSize));
      }
      at = slice.end;
      if (!(scan_vec_.back() & 1) || at >= r.end) break;
      // Ended resident: ask SEEK_DATA (cheap) whether data goes on, rather
      // than mincore into what may be a long hole. Its answer is the next
      // extent's start either way.
      off_t d = lseek(fd_, static_cast<off_t>(at), SEEK_DATA);
      c->from = at;
      if (d < 0) {
        if (errno != ENXIO)
          return sys_fail(fmt::format("cannot scan the memory file from {:#x}", at),
                          "lseek(SEEK_DATA)", errno);
        c->data = kNoMoreData;
        break;
      }
      c->data = std::max(at, align_down(static_cast<uint64_t>(d), kPageSize));
      if (c->data != at) break;
      window = std::min(window * 2, kMincoreSlice);
    }
    pos = at;
    if (c->data == kNoMoreData) return {};
  }
  return {};
}

void MemoryFile::forget_known_committed() {
  std::lock_guard l(mu_);
  for (auto s = usage_.first_segment(); s.ok(); s = s.next_segment()) {
    Usage& u = s.value();
    if (!u.known_committed) continue;
    counters_.dec(u.kind, s.range().length());
    usage_expected_ -= s.range().length();
    u.known_committed = false;
  }
  usage_.merge_range(FileRange(0, file_size_.load(std::memory_order_relaxed)));
}

std::string MemoryFile::dump_locked() const {
  auto& usage = const_cast<UsageSet&>(usage_);
  std::string out = fmt::format("memory file: {:#x} bytes, {} usage segments\n",
                                file_size_.load(std::memory_order_relaxed), usage.size());
  out += usage.dump([](const Usage& u) {
    return fmt::format("refs={} {}{}", u.refs, usage_kind_name(u.kind),
                       u.known_committed ? " committed" : "");
  });
  auto& free_committed = const_cast<RangeSet&>(free_committed_);
  for (auto s = free_committed.first_segment(); s.ok(); s = s.next_segment())
    out += fmt::format("{} free, zeroed, committed\n", s.range().to_string());
  auto& reclaimable = const_cast<RangeSet&>(reclaimable_);
  for (auto s = reclaimable.first_segment(); s.ok(); s = s.next_segment())
    out += fmt::format("{} waiting for reclaim\n", s.range().to_string());
  UsageSnapshot snap = counters_.snapshot();
  out += "committed:";
  for (size_t i = 0; i < kUsageKinds; i++)
    out += fmt::format(" {}={:#x}", usage_kind_name(static_cast<UsageKind>(i)), snap.committed[i]);
  out += fmt::format("; known {:#x}\n", usage_expected_);
  return out;
}

std::string MemoryFile::dump_usage() const {
  std::lock_guard l(mu_);
  return dump_locked();
}

void MemoryFile::check_invariants() const {
  std::lock_guard l(mu_);
  check_invariants_locked();
}

void MemoryFile::check_invariants_locked() const {
  auto& usage = const_cast<UsageSet&>(usage_);
  auto& reclaimable = const_cast<RangeSet&>(reclaimable_);
  auto& free_committed = const_cast<RangeSet&>(free_committed_);
  usage.check_invariants();
  reclaimable.check_invariants();
  free_committed.check_invariants();

  uint64_t size = file_size_.load(std::memory_order_relaxed);
  std::array<uint64_t, kUsageKinds> want{};
  for (auto s = usage.first_segment(); s.ok(); s = s.next_segment()) {
    const Usage& u = s.value();
    KVMEM_CHECK(s.end() <= size && s.range().is_aligned(page_size_),
                "usage segment {} is outside the {:#x}-byte file or unaligned\n{}",
                s.range().to_string(), size, dump_locked());
    KVMEM_CHECK(u.refs > 0 || u.kind == UsageKind::System,
                "free pages {} are accounted to {}, not System\n{}", s.range().to_string(),
                usage_kind_name(u.kind), dump_locked());
    if (u.known_committed) want[static_cast<size_t>(u.kind)] += s.range().length();
  }
  for (auto s = free_committed.first_segment(); s.ok(); s = s.next_segment()) {
    auto g = usage.find_gap(s.start());
    KVMEM_CHECK(g.ok() && g.end() >= s.end(), "free zeroed pages {} overlap an allocation\n{}",
                s.range().to_string(), dump_locked());
    want[static_cast<size_t>(UsageKind::System)] += s.range().length();
  }
  for (auto s = reclaimable.first_segment(); s.ok(); s = s.next_segment()) {
    uint64_t covered = s.start();
    // A free usage segment may begin before the reclaimable range (free
    // neighbours merge), so the first one need only contain its start.
    for (auto u = usage.find_segment(s.start()); u.ok() && u.start() <= covered && covered < s.end();
         u = u.next_segment()) {
      KVMEM_CHECK(u.value().refs == 0, "reclaimable pages {} are referenced\n{}",
                  u.range().to_string(), dump_locked());
      covered = u.end();
    }
    KVMEM_CHECK(covered >= s.end(), "reclaimable range {} is not wholly freed pages\n{}",
                s.range().to_string(), dump_locked());
  }
  UsageSnapshot got = counters_.snapshot();
  uint64_t total = 0;
  for (size_t i = 0; i < kUsageKinds; i++) {
    KVMEM_CHECK(got.committed[i] == want[i], "{} counter is {:#x}, its segments hold {:#x}\n{}",
                usage_kind_name(static_cast<UsageKind>(i)), got.committed[i], want[i],
                dump_locked());
    total += want[i];
  }
  KVMEM_CHECK(total == usage_expected_, "known committed is {:#x}, segments hold {:#x}\n{}",
              usage_expected_, total, dump_locked());
}

}  // namespace kvmem
