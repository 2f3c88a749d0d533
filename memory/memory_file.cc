// MemoryFile: creation, mappings, allocation and references.
// Usage accounting (update_usage and the scan) is in memory_file_usage.cc,
// the reclaimer in memory_file_reclaim.cc.
#include "memory/memory_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "base/check.h"
#include "base/thread.h"

#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

namespace kvmem {
namespace {

std::unexpected<Error> error_with(int code, std::string message) {
  return std::unexpected(Error{code, std::move(message)});
}

}  // namespace

HugePageSupport probe_huge_pages() {
  HugePageSupport s;
  {
    std::ifstream meminfo("/proc/meminfo");
    std::string line;
    long free_pages = -1, size_kb = 0;
    while (std::getline(meminfo, line)) {
      std::istringstream in(line);
      std::string key;
      in >> key;
      if (key == "HugePages_Free:") in >> free_pages;
      if (key == "Hugepagesize:") in >> size_kb;
    }
    if (free_pages < 0) {
      s.hugetlb_reason = "the host does not report hugetlb pages (no HugePages_Free in /proc/meminfo)";
    } else if (free_pages == 0) {
      s.hugetlb_reason =
          "the host has no free hugetlb pages (HugePages_Free is 0 in /proc/meminfo; "
          "reserve some with /proc/sys/vm/nr_hugepages)";
    } else if (size_kb != 2048) {
      s.hugetlb_reason = fmt::format("the host's default huge page is {} KiB, not 2 MiB", size_kb);
    } else {
      s.hugetlb = true;
    }
  }
  {
    const char* path = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
    std::ifstream f(path);
    std::string all, mode;
    std::getline(f, all);
    size_t open = all.find('['), close = all.find(']');
    if (open != std::string::npos && close != std::string::npos && close > open)
      mode = all.substr(open + 1, close - open - 1);
    if (mode.empty()) {
      s.thp_reason = fmt::format("the host does not say its shmem THP policy ({} unreadable)", path);
    } else if (mode == "never" || mode == "deny") {
      s.thp_reason = fmt::format(
          "the host's shmem THP policy is '{}' ({}), so MADV_HUGEPAGE has no effect", mode, path);
    } else {
      s.thp = true;
    }
  }
  return s;
}

Result<std::unique_ptr<MemoryFile>> MemoryFile::create(const MemoryFileOptions& options) {
  if (!is_power_of_two(options.reservation) || options.reservation < kChunkSize)
    return error_with(EINVAL, fmt::format("cannot create memory file: its reservation {:#x} is "
                                          "not a power of two of at least 16 MiB",
                                          options.reservation));
  std::unique_ptr<MemoryFile> f(new MemoryFile);
  f->host_ = options.host ? options.host : &kernel_host_ops();
  f->reservation_ = options.reservation;

  unsigned flags = MFD_CLOEXEC;
  if (options.huge != HugePages::None) {
    HugePageSupport support = probe_huge_pages();
    if (options.huge == HugePages::Hugetlb) {
      if (!support.hugetlb)
        return error_with(ENOTSUP, "cannot back the memory file with hugetlb pages: " +
                                       support.hugetlb_reason);
      flags |= MFD_HUGETLB | MFD_HUGE_2MB;
      f->page_size_ = kHugePageSize;
    } else {
      if (!support.thp)
        return error_with(ENOTSUP, "cannot advise transparent huge pages for the memory file: " +
                                       support.thp_reason);
      f->thp_ = true;
    }
  }
  if (options.reclaim_batch < f->page_size_ || options.reclaim_batch % f->page_size_ != 0)
    return error_with(EINVAL, fmt::format("cannot create memory file: reclaim batch {:#x} is not "
                                          "a positive multiple of the page size",
                                          options.reclaim_batch));
  f->reclaim_batch_ = options.reclaim_batch;
  if (options.usage_scan == UsageScan::SeekData && options.huge == HugePages::Hugetlb)
    return error_with(EINVAL, "cannot create memory file: hugetlbfs reports every page as data, "
                              "so its usage cannot be scanned with SEEK_DATA alone");
  f->scan_mincore_ = options.usage_scan != UsageScan::SeekData;

  f->fd_ = memfd_create(options.name.c_str(), flags);
  if (f->fd_ < 0) return sys_fail("cannot create memory file", "memfd_create", errno);

  // One reservation for every chunk mapping ever made, so that contiguous
  // file offsets are contiguous host addresses. MAP_NORESERVE|PROT_NONE: no
  // memory, no commit charge; chunk mappings replace pieces of it.
  // 2 MiB-aligned: a hugetlb chunk cannot be mapped (MAP_FIXED) at any other
  // address (EINVAL), and THP maps a 2 MiB page only where the address and
  // the file offset agree modulo 2 MiB. Kernels since 6.7 align large
  // anonymous mappings so; older ones need the 2 MiB of slack trimmed here.
  void* base = nullptr;
  if (int err = f->host_->mmap(nullptr, f->reservation_ + kHugePageSize, PROT_NONE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0, &base))
    return sys_fail(fmt::format("cannot reserve {:#x} bytes of address space for the memory file",
                                f->reservation_),
                    "mmap", err);
  {
    const uintptr_t at = reinterpret_cast<uintptr_t>(base);
    const uintptr_t head = ((at + kHugePageSize - 1) & ~uintptr_t{kHugePageSize - 1}) - at;
    if (head) munmap(base, head);
    munmap(reinterpret_cast<void*>(at + head + f->reservation_), kHugePageSize - head);
    base = reinterpret_cast<void*>(at + head);
  }
  f->base_ = static_cast<uint8_t*>(base);
  f->chunks_ = f->reservation_ >> kChunkShift;
  f->chunk_mapped_ = std::make_unique<std::atomic<bool>[]>(f->chunks_);

  if (int err = f->host_->ftruncate(f->fd_, kChunkSize))
    return sys_fail(fmt::format("cannot size the memory file to {:#x} bytes", kChunkSize),
                    "ftruncate", err);
  f->file_size_.store(kChunkSize, std::memory_order_release);

  // Through start_thread: under a thread limit, creating the file is an
  // error (the run's host failure), not std::thread's exception.
  auto reclaimer = start_thread("the memory file's reclaimer", [p = f.get()] { p->reclaim_loop(); });
  if (!reclaimer) return std::unexpected(reclaimer.error());
  f->reclaimer_ = std::move(*reclaimer);
  return f;
}

MemoryFile::~MemoryFile() { destroy(); }

void MemoryFile::destroy() {
  {
    std::lock_guard l(mu_);
    destroyed_ = true;
  }
  reclaim_cv_.notify_all();
  idle_cv_.notify_all();
  if (reclaimer_.joinable()) reclaimer_.join();
  if (base_) {
    munmap(base_, reservation_);
    base_ = nullptr;
  }
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
}

void MemoryFile::check_range(FileRange r, const char* op) const {
  KVMEM_CHECK(r.well_formed() && !r.empty() && r.is_aligned(page_size_),
              "{}({}): the range must be non-empty and aligned to {:#x}", op, r.to_string(),
              page_size_);
}

// ---- mappings ----

Status MemoryFile::map_chunk(uint64_t chunk) {
  std::lock_guard g(mappings_mu_);
  if (chunk_mapped_[chunk].load(std::memory_order_relaxed)) return {};
  // Map ahead: the unmapped chunks after this one, up to the end of its
  // group of kMapAheadChunks and of the file, go in the same mmap. A VM's
  // RAM is mapped a unit at a time, and one mmap per 16 MiB chunk cost
  // ~9 us each, 19 ms for a 32 GiB guest; mapping costs no memory until
  // touched, and the pieces merge into one VMA either way.
  const uint64_t file_chunks = file_size_.load(std::memory_order_acquire) >> kChunkShift;
  const uint64_t group_end = std::min(align_down(chunk, kMapAheadChunks) + kMapAheadChunks, std::max(file_chunks, chunk + 1));
  uint64_t end = chunk + 1;
  while (end < group_end && !chunk_mapped_[end].load(std::memory_order_relaxed)) end++;
  const FileRange run(chunk << kChunkShift, end << kChunkShift);
  // MAP_SHARED, never MAP_PRIVATE: a private mapping would copy pages on
  // write, so punching the file would free nothing the guest touched.
  void* out = nullptr;
  if (int err = host_->mmap(base_ + run.start, run.length(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd_,
                            run.start, &out))
    return sys_fail(fmt::format("cannot map chunk{} {} of the memory file", end - chunk > 1 ? "s" : "",
                                run.to_string()),
                    "mmap", err);
  if (thp_) madvise(out, run.length(), MADV_HUGEPAGE);  // advice; the policy was checked at create
  for (uint64_t c = chunk; c < end; c++) chunk_mapped_[c].store(true, std::memory_order_release);
  return {};
}

Result<std::span<uint8_t>> MemoryFile::map_internal(FileRange r) {
  if (!r.well_formed() || r.empty())
    return error_with(EINVAL, fmt::format("cannot map {} of the memory file: the range is empty "
                                          "or ill-formed",
                                          r.to_string()));
  uint64_t size = file_size_.load(std::memory_order_acquire);
  if (r.end > size)
    return error_with(EINVAL, fmt::format("cannot map {} of the memory file: the file is only "
                                          "{:#x} bytes long",
                                          r.to_string(), size));
  for (uint64_t c = r.start >> kChunkShift; c <= (r.end - 1) >> kChunkShift; c++) {
    if (chunk_mapped_[c].load(std::memory_order_acquire)) continue;
    if (auto st = map_chunk(c); !st) return std::unexpected(st.error());
  }
  return std::span<uint8_t>(base_ + r.start, r.length());
}

// ---- allocation ----

Status MemoryFile::grow_locked(uint64_t end) {
  uint64_t size = file_size_.load(std::memory_order_relaxed);
  if (end <= size) return {};
  // Doubling: uncommitted pages cost nothing, and a power-of-two size keeps
  // every chunk either wholly inside the file or wholly outside it.
  // end <= reservation_ (a power of two) bounds the loop.
  while (size < end) size *= 2;
  if (int err = host_->ftruncate(fd_, size))
    return sys_fail(fmt::format("cannot grow the memory file to {:#x} bytes", size), "ftruncate",
                    err);
  file_size_.store(size, std::memory_order_release);
  return {};
}

Result<FileRange> MemoryFile::allocate(uint64_t length, UsageKind kind,
                                       const AllocateOptions& opts) {
  if (length == 0 || length % page_size_ != 0)
    return error_with(EINVAL, fmt::format("cannot allocate {:#x} bytes: the length must be a "
                                          "positive multiple of the {:#x}-byte page size",
                                          length, page_size_));
  uint64_t align = opts.alignment;
  if (align == 0) {
    // Huge-aligned when the length allows, so hugetlb/THP pages and 2 MiB
    // guest mappings can back it.
    align = length >= kHugePageSize ? std::max(kHugePageSize, page_size_) : page_size_;
  } else if (!is_power_of_two(align) || align < page_size_) {
    return error_with(EINVAL, fmt::format("cannot allocate {:#x} bytes at alignment {:#x}: the "
                                          "alignment must be a power of two of at least {:#x}",
                                          length, align, page_size_));
  }

  FileRange r;
  {
    std::lock_guard l(mu_);
    if (destroyed_)
      return error_with(EINVAL, fmt::format("cannot allocate {:#x} bytes: the memory file is "
                                            "destroyed",
                                            length));
    // Lowest address first: keeps the file compact and its reclaim local.
    UsageSet::Fit fit = usage_.first_fit(0, length, align);
    if (!fit.ok() || fit.start > reservation_ || reservation_ - fit.start < length)
      return error_with(ENOMEM, fmt::format("cannot allocate {:#x} bytes: the memory file's "
                                            "{:#x}-byte reservation has no free range that long",
                                            length, reservation_));
    r = FileRange(fit.start, fit.start + length);
    if (auto st = grow_locked(r.end); !st)
      return std::unexpected(st.error().context(fmt::format("cannot allocate {:#x} bytes", length)));
    usage_.insert(fit.gap, r, Usage{kind, false, 1});

    // Pages the reclaimer zeroed instead of punching are still committed:
    // the allocation takes them over as known committed.
    if (!free_committed_.empty()) {
      for (auto s = free_committed_.lower_bound_segment(r.start); s.ok() && s.start() < r.end;) {
        s = free_committed_.isolate(s, r);
        FileRange piece = s.range();
        s = free_committed_.remove(s).next_segment();
        usage_.apply_and_merge(piece, [&](UsageSet::Seg u) { u.value().known_committed = true; });
        counters_.move(piece.length(), kind, UsageKind::System);
      }
    }
  }

  if (opts.commit != CommitMode::None) {
    if (auto st = commit(r, opts.commit); !st) {
      dec_ref(r);
      return std::unexpected(st.error());
    }
  }
  return r;
}

Status MemoryFile::commit(FileRange r, CommitMode mode) {
  if (mode == CommitMode::Fallocate) {
    if (int err = host_->fallocate(fd_, 0, r.start, r.length()))
      return sys_fail(fmt::format("cannot commit {} of the memory file", r.to_string()),
                      "fallocate", err);
  } else {
    auto span = map_internal(r);
    if (!span) return std::unexpected(span.error());
    if (madvise(span->data(), span->size(), MADV_POPULATE_WRITE) != 0)
      return sys_fail(fmt::format("cannot commit {} of the memory file", r.to_string()),
                      "madvise(MADV_POPULATE_WRITE)", errno);
  }
  // mincore and SEEK_DATA do not see pages that fallocate committed and
  // nobody touched (st_blocks does): only this mark makes them count.
  std::lock_guard l(mu_);
  mark_committed_locked(r);
  return {};
}

void MemoryFile::mark_committed_locked(FileRange r) {
  UsageSet::Gap gap = usage_.apply_and_merge(r, [&](UsageSet::Seg s) {
    Usage& u = s.value();
    if (u.known_committed) return;
    u.known_committed = true;
    counters_.inc(u.kind, s.range().length());
    usage_expected_ += s.range().length();
  });
  KVMEM_CHECK(!gap.ok(), "marking {} committed: pages {} are not allocated\n{}", r.to_string(),
              gap.range().intersect(r).to_string(), dump_locked());
}

// ---- references ----

void MemoryFile::inc_ref(FileRange r) {
  check_range(r, "inc_ref");
  std::lock_guard l(mu_);
  UsageSet::Gap gap = usage_.apply_and_merge(r, [&](UsageSet::Seg s) {
    KVMEM_CHECK(s.value().refs > 0, "inc_ref({}): pages {} were already freed\n{}", r.to_string(),
                s.range().to_string(), dump_locked());
    s.value().refs++;
  });
  KVMEM_CHECK(!gap.ok(), "inc_ref({}): pages {} are not allocated\n{}", r.to_string(),
              gap.range().intersect(r).to_string(), dump_locked());
}

void MemoryFile::dec_ref(FileRange r) {
  check_range(r, "dec_ref");
  bool freed = false;  // and the reclaimer needs waking
  {
    std::lock_guard l(mu_);
    UsageSet::Gap gap = usage_.apply_and_merge(r, [&](UsageSet::Seg s) {
      Usage& u = s.value();
      KVMEM_CHECK(u.refs > 0, "dec_ref({}): pages {} have no references left\n{}", r.to_string(),
                  s.range().to_string(), dump_locked());
      if (--u.refs > 0) return;
      // Freed pages are System's until the reclaimer has punched them.
      if (u.known_committed) counters_.move(s.range().length(), UsageKind::System, u.kind);
      u.kind = UsageKind::System;
      bool added = reclaimable_.add(s.range(), Empty{});
      KVMEM_CHECK(added, "dec_ref({}): {} is already reclaimable\n{}", r.to_string(),
                  s.range().to_string(), dump_locked());
      freed = reclaimer_asleep_;
    });
    KVMEM_CHECK(!gap.ok(), "dec_ref({}): pages {} are not allocated\n{}", r.to_string(),
                gap.range().intersect(r).to_string(), dump_locked());
  }
  // Only a sleeping reclaimer needs waking; a busy one takes the new range
  // in its next round. (A wake is a futex call: too dear for every free.)
  if (freed) reclaim_cv_.notify_one();
}

// ---- decommit and reclaim ----

Status MemoryFile::decommit(FileRange r) {
  check_range(r, "decommit");
  // The punch runs without mu_; the pages are marked uncommitted only after
  // it, so a concurrent usage scan can never leave them counted.
  if (int err = host_->fallocate(fd_, kPunchHole, r.start, r.length()))
    return sys_fail(fmt::format("cannot punch hole {} in memory file", r.to_string()),
                    "fallocate", err);
  std::lock_guard l(mu_);
  mark_decommitted_locked(r, /*require_refs=*/true);
  return {};
}

void MemoryFile::mark_decommitted_locked(FileRange r, bool require_refs) {
  // A read-only pass first: checks the preconditions and, in the common case
  // where no page of r is known committed, leaves the set untouched (no
  // split, no merge).
  bool any_known = false;
  uint64_t at = r.start;
  for (auto s = usage_.find_segment(r.start);; s = s.next_segment()) {
    KVMEM_CHECK(s.ok() && s.start() <= at, "decommit({}): pages {} are not allocated\n{}",
                r.to_string(),
                FileRange(at, s.ok() ? std::min(s.start(), r.end) : r.end).to_string(),
                dump_locked());
    if (require_refs)
      KVMEM_CHECK(s.value().refs > 0, "decommit({}): pages {} were freed\n{}", r.to_string(),
                  s.range().intersect(r).to_string(), dump_locked());
    any_known |= s.value().known_committed;
    at = s.end();
    if (at >= r.end) break;
  }
  if (!any_known) return;
  UsageSet::Gap gap = usage_.apply_and_merge(r, [&](UsageSet::Seg s) {
    Usage& u = s.value();
    if (require_refs)
      KVMEM_CHECK(u.refs > 0, "decommit({}): pages {} were freed\n{}", r.to_string(),
                  s.range().to_string(), dump_locked());
    if (!u.known_committed) return;
    counters_.dec(u.kind, s.range().length());
    usage_expected_ -= s.range().length();
    u.known_committed = false;
  });
  KVMEM_CHECK(!gap.ok(), "decommit({}): pages {} are not allocated\n{}", r.to_string(),
              gap.range().intersect(r).to_string(), dump_locked());
}

uint64_t MemoryFile::committed_in(FileRange r) {
  std::lock_guard lock(mu_);
  uint64_t bytes = 0;
  for (auto seg = usage_.lower_bound_segment(r.start); seg.ok() && seg.start() < r.end; seg = seg.next_segment())
    if (seg.value().known_committed) bytes += seg.range().intersect(r).length();
  return bytes;
}

MemoryFile::Stats MemoryFile::stats() const {
  Stats s;
  s.scans = stats_.scans.load(std::memory_order_relaxed);
  s.scans_elided = stats_.scans_elided.load(std::memory_order_relaxed);
  s.reclaimed_ranges = stats_.reclaimed_ranges.load(std::memory_order_relaxed);
  s.reclaim_fallbacks = stats_.reclaim_fallbacks.load(std::memory_order_relaxed);
  s.quarantined_bytes = stats_.quarantined_bytes.load(std::memory_order_relaxed);
  return s;
}

}  // namespace kvmem
