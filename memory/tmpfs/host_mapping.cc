#include "memory/tmpfs/host_mapping.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <shared_mutex>

#include <fmt/format.h>

#include "base/check.h"

namespace kvmem::tmpfs {

Result<std::unique_ptr<HostMapping>> HostMapping::create(std::shared_ptr<RegularFile> file,
                                                         uint64_t offset, uint64_t length,
                                                         bool writable) {
  const uint64_t page = file->memory().page_size();
  uint64_t end = 0;
  if (offset % page != 0 || length == 0 || length > UINT64_MAX - offset ||
      !align_up(offset + length, page, &end))
    return std::unexpected(Error{
        EINVAL, fmt::format("cannot map {:#x} bytes at {:#x} of file {}: the offset is unaligned, "
                            "the length zero, or the range overflows: EINVAL",
                            length, offset, file->name())});
  const MappableRange range(offset, end);
  std::unique_ptr<HostMapping> m(new HostMapping(file, range, writable));
  KVMEM_TRY(file->add_mapping(m.get(), 0, range, writable));
  m->added_ = true;
  return m;
}

HostMapping::~HostMapping() {
  // First out of the file's list, so that no invalidate() comes after.
  if (added_) file_->remove_mapping(this, 0, range_, writable_);
  std::lock_guard l(mu_);
  for (Cache::Seg s = cache_.first_segment(); s.ok(); s = s.next_segment())
    file_->memory().dec_ref(FileRange(s.value(), s.value() + s.range().length()));
}

uint64_t HostMapping::cached_bytes() const {
  std::lock_guard l(mu_);
  uint64_t n = 0;
  auto& cache = const_cast<Cache&>(cache_);  // lookups write nothing
  for (Cache::Seg s = cache.first_segment(); s.ok(); s = s.next_segment()) n += s.range().length();
  return n;
}

void HostMapping::invalidate(uint64_t addr, MappableRange range) {
  KVMEM_CHECK(!range.empty() && range.is_page_aligned() && range_.is_superset_of(range) &&
                  addr == range.start - range_.start,
              "invalidate({:#x}, {}) outside mapping {}", addr, range.to_string(),
              range_.to_string());
  const MappableRange r(addr, addr + range.length());
  std::lock_guard l(mu_);
  Cache::Seg s = cache_.lower_bound_segment(r.start);
  while (s.ok() && s.start() < r.end) {
    s = cache_.isolate(s, r);
    file_->memory().dec_ref(FileRange(s.value(), s.value() + s.range().length()));
    s = cache_.remove(s).next_segment();
  }
}

Status HostMapping::read(uint64_t offset, std::span<uint8_t> dst) {
  return access(offset, dst.data(), dst.size(), false);
}

Status HostMapping::write(uint64_t offset, std::span<const uint8_t> src) {
  return access(offset, const_cast<uint8_t*>(src.data()), src.size(), true);
}

Status HostMapping::fill_locked(uint64_t page, uint64_t access_end, bool write) {
  // required: from this page to the end of the access, or to the next page
  // already translated; optional: the untranslated run around it.
  const uint64_t ps = file_->memory().page_size();
  Cache::Gap gap = cache_.find_gap(page);
  KVMEM_CHECK(gap.ok(), "mapping offset {:#x} is already translated", page);
  const uint64_t gap_end = std::min(gap.end(), range_.length());
  uint64_t req_end = 0;
  KVMEM_CHECK(align_up(access_end, ps, &req_end), "access end {:#x} overflows", access_end);
  req_end = std::min(req_end, gap_end);
  const uint64_t base = range_.start;
  const MappableRange required(base + page, base + req_end);
  const MappableRange optional(base + gap.start(), base + gap_end);
  TranslateResult res =
      file_->translate(required, optional, write ? Access::kWrite : Access::kRead);
  for (const Translation& t : res.translations) {
    const bool added =
        cache_.add(MappableRange(t.source.start - base, t.source.end - base), t.offset.value);
    KVMEM_CHECK(added, "translation {} overlaps the cache", t.source.to_string());
  }
  if (res.translations.empty() || res.translations.front().source.start > required.start) {
    const int code = res.error == TranslateError::kNoMemory ? ENOMEM : EFAULT;
    return std::unexpected(Error{code, fmt::format("cannot {} page {:#x} of a mapping of file {}: "
                                                   "{}: {}",
                                                   write ? "write" : "read", page, file_->name(),
                                                   res.message, errno_name(code))});
  }
  return {};
}

Status HostMapping::access(uint64_t offset, uint8_t* buf, uint64_t length, bool write) {
  const char* verb = write ? "write" : "read";
  if (offset > range_.length() || length > range_.length() - offset)
    return std::unexpected(
        Error{EFAULT, fmt::format("cannot {} {:#x} bytes at {:#x} of a {:#x}-byte mapping of file "
                                  "{}: outside the mapping: EFAULT",
                                  verb, length, offset, range_.length(), file_->name())});
  if (write && !writable_)
    return std::unexpected(
        Error{EACCES, fmt::format("cannot write through a read-only mapping of file {}: EACCES",
                                  file_->name())});
  const uint64_t end = offset + length;
  std::lock_guard l(mu_);
  for (uint64_t pos = offset; pos < end;) {
    Cache::Found f = cache_.find(pos);
    if (!f.seg.ok()) {
      KVMEM_TRY(fill_locked(align_down(pos, file_->memory().page_size()), end, write));
      continue;
    }
    const uint64_t run_end = std::min(f.seg.end(), end);
    const uint64_t at = f.seg.value() + (pos - f.seg.start());
    auto span = KVMEM_TRY(file_->memory().map_internal(FileRange(at, at + (run_end - pos))));
    uint8_t* b = buf + (pos - offset);
    if (write) {
      std::unique_lock d(file_->data_mu_);
      std::memcpy(span.data(), b, span.size());
    } else {
      std::shared_lock d(file_->data_mu_);
      std::memcpy(b, span.data(), span.size());
    }
    pos = run_end;
  }
  return {};
}

}  // namespace kvmem::tmpfs
