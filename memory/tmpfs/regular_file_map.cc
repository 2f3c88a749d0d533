// RegularFile: truncate, fallocate, and the Mappable contract (mappable.h).
#include <algorithm>
#include <cerrno>

#include <fmt/format.h>

#include "base/check.h"
#include "memory/tmpfs/offset_policy.h"
#include "memory/tmpfs/regular_file.h"

namespace kvmem::tmpfs {

struct RegularFile::DataPolicy : OffsetPolicy {};

namespace {

uint64_t round_up_to(uint64_t x, uint64_t align) {
  uint64_t r = 0;
  KVMEM_CHECK(align_up(x, align, &r), "{:#x} rounded up to {:#x} overflows", x, align);
  return r;
}

}  // namespace

void RegularFile::invalidate_locked(MappableRange r) {
  for (const Mapping& m : mappings_) {
    const MappableRange hit = m.range.intersect(r);
    if (!hit.empty()) m.space->invalidate(m.addr + (hit.start - m.range.start), hit);
  }
}

Status RegularFile::truncate(uint64_t size) {
  if (size > kMaxFileSize)
    return error(EINVAL, fmt::format("truncate to {:#x}", size), "the size is negative as off_t");
  std::lock_guard m(maps_mu_);
  uint64_t old = 0;
  {
    std::unique_lock l(data_mu_);
    const auto what = [&] { return fmt::format("truncate from {:#x} to {:#x}", size_, size); };
    if (size < size_ && (seals_ & kSealShrink))
      return error(EPERM, what(), "the file is sealed against shrinking");
    if (size > size_ && (seals_ & kSealGrow))
      return error(EPERM, what(), "the file is sealed against growing");
    old = size_;
    // The new size first, so that nothing translates the dropped pages again
    // between the invalidation and the drop: they are past the end now.
    size_ = size;
    if (size > old) return {};  // growing allocates nothing, and zeroes nothing
  }
  // From here on the size is the same or smaller: 6.18's shmem truncates
  // the page cache from the new size in both cases, so even a truncate to
  // the same size zeroes what mappings wrote past the end.
  const MappableRange gone(round_up_to(size, page_), round_up_to(old, page_));
  if (!gone.empty()) invalidate_locked(gone);
  std::unique_lock l(data_mu_);
  if (!gone.empty()) drop_locked(gone);
  // Linux zeroes the rest of the last page: grown again, it reads as zero,
  // even where a mapping wrote past the old end.
  if (size % page_) KVMEM_TRY(zero_locked(size, round_up_to(size, page_) - size));
  return {};
}

Status RegularFile::fallocate(FallocateMode mode, uint64_t offset, uint64_t length) {
  const char* name = mode == FallocateMode::kPunchHole ? "punch"
                     : mode == FallocateMode::kKeepSize ? "fallocate (keep size)"
                                                         : "fallocate";
  const auto what = [&] { return fmt::format("{} {:#x} bytes at {:#x}", name, length, offset); };
  // vfs_fallocate's checks, in its order: signed offset and length, then the
  // end against s_maxbytes.
  if (offset > kMaxFileSize || length == 0 || length > kMaxFileSize)
    return error(EINVAL, what(), "the offset is negative or the length not positive");
  if (offset + length > kMaxFileSize)
    return error(EFBIG, what(), "the range passes the largest file size");
  const uint64_t end = offset + length;
  std::lock_guard m(maps_mu_);
  std::unique_lock l(data_mu_);
  if (mode == FallocateMode::kPunchHole) {
    if (seals_ & (kSealWrite | kSealFutureWrite))
      return error(EPERM, what(), "the file is sealed against writes");
    const uint64_t a = round_up_to(offset, page_), b = align_down(end, page_);
    if (a > b) return zero_locked(offset, length);  // inside one page
    // Mappings let go of the whole pages before they go (as Linux unmaps
    // them first); once more after, for anything translated in between.
    l.unlock();
    if (a < b) invalidate_locked(MappableRange(a, b));
    l.lock();
    if (a < b) drop_locked(MappableRange(a, b));
    if (offset < a) KVMEM_TRY(zero_locked(offset, a - offset));
    if (b < end) KVMEM_TRY(zero_locked(b, end - b));
    l.unlock();
    if (a < b) invalidate_locked(MappableRange(a, b));
    return {};
  }
  // shmem refuses under GROW any range that ends past the end, keep-size
  // or not.
  if ((seals_ & kSealGrow) && end > size_)
    return error(EPERM, what(), "the file is sealed against growing");
  // Keep-size allocates only below the end: pages past it are never in the
  // map (Linux keeps them; they would read as zero all the same).
  const uint64_t limit = mode == FallocateMode::kKeepSize ? eof_locked() : round_up_to(end, page_);
  const MappableRange fill(align_down(offset, page_), std::min(round_up_to(end, page_), limit));
  if (fill.start < fill.end) {
    // Committed, as shmem's fallocate allocates its pages: the memory is
    // the host's now, or the call fails.
    if (Status st = fill_locked(fill, CommitMode::Fallocate); !st) {
      const uint64_t eof = eof_locked();
      if (eof < DataSet::kMaxKey) drop_locked(MappableRange(eof, DataSet::kMaxKey));
      return st;
    }
  }
  if (mode == FallocateMode::kDefault) size_ = std::max(size_, end);
  return {};
}

// ---- the Mappable contract ----

Status RegularFile::add_mapping(MappingSpace* space, uint64_t addr, MappableRange range,
                                bool writable) {
  const auto what = [&] {
    return fmt::format("map {}{}", range.to_string(), writable ? " writable" : "");
  };
  if (!range.well_formed() || range.empty() || !range.is_aligned(page_) || addr % page_ != 0 ||
      addr + range.length() < addr)
    return error(EINVAL, what(), "the range is empty, unaligned or overflowing");
  // mmap's file_mmap_ok: the mapping must end at or below the largest file
  // size rounded down to a page.
  if (range.end > kMaxFileSize + 1 - kPageSize)
    return error(EOVERFLOW, what(), "the range passes the largest file size");
  std::lock_guard m(maps_mu_);
  {
    std::shared_lock l(data_mu_);
    if (writable && (seals_ & (kSealWrite | kSealFutureWrite)))
      return error(EPERM, what(), "the file is sealed against writes");
  }
  mappings_.push_back(Mapping{space, addr, range, writable});
  if (writable) writable_mapped_pages_ += range.length() / kPageSize;
  return {};
}

void RegularFile::remove_mapping(MappingSpace* space, uint64_t addr, MappableRange range,
                                 bool writable) {
  std::lock_guard m(maps_mu_);
  auto it = std::find_if(mappings_.begin(), mappings_.end(), [&](const Mapping& mp) {
    return mp.space == space && mp.addr == addr && mp.range == range && mp.writable == writable;
  });
  KVMEM_CHECK(it != mappings_.end(), "file {}: no mapping {} at {:#x} to remove", name_,
              range.to_string(), addr);
  mappings_.erase(it);
  if (writable) writable_mapped_pages_ -= range.length() / kPageSize;
}

TranslateResult RegularFile::translate(MappableRange required, MappableRange optional,
                                       Access at) {
  (void)at;  // every page is readable and writable; the mapping limits access
  KVMEM_CHECK(required.well_formed() && !required.empty() && required.is_aligned(page_),
              "translate: required {} must be non-empty and aligned to {:#x}",
              required.to_string(), page_);
  KVMEM_CHECK(optional.well_formed() && optional.is_aligned(page_) &&
                  optional.is_superset_of(required),
              "translate: optional {} must be aligned and hold required {}", optional.to_string(),
              required.to_string());
  std::unique_lock l(data_mu_);
  TranslateResult res = translate_locked(required, optional);
  for (const Translation& t : res.translations) memory_.inc_ref(t.file_range());
  return res;
}

TranslateResult RegularFile::translate_locked(MappableRange required, MappableRange optional) {
  TranslateResult res;
  const uint64_t eof = eof_locked();
  const auto beyond = [&](uint64_t page) {
    res.error = TranslateError::kBeyondEof;
    res.message = fmt::format("page {:#x} is beyond the end of file {} (size {})", page, name_,
                              size_);
  };
  if (required.start >= eof) {
    beyond(required.start);
    return res;
  }
  const MappableRange opt = optional.intersect(MappableRange(0, eof));
  const MappableRange req = required.intersect(opt);
  // All of optional's holes if the allocator can; else required's.
  if (!fill_locked(opt, CommitMode::None)) (void)fill_locked(req, CommitMode::None);
  DataSet::Seg s = data_->find_segment(req.start);
  while (s.ok()) {
    const MappableRange src = s.range().intersect(opt);
    res.translations.push_back(
        Translation{src, FileOffset(s.value() + (src.start - s.start())), Access::kReadWrite});
    if (src.end >= req.end) break;
    DataSet::Seg next = s.next_segment();
    s = next.ok() && next.start() == s.end() ? next : DataSet::Seg();
  }
  const uint64_t reached = res.translations.empty() ? req.start : res.translations.back().source.end;
  if (reached < req.end) {
    res.error = TranslateError::kNoMemory;
    res.message = fmt::format("cannot allocate page {:#x} of file {}: no memory", reached, name_);
  } else if (required.end > eof) {
    beyond(eof);
  }
  return res;
}

}  // namespace kvmem::tmpfs
