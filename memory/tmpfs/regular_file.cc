// RegularFile: construction, seals, read and write, stat and invariants.
// Truncate, fallocate and the Mappable contract are in regular_file_map.cc.
#include "memory/tmpfs/regular_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <unistd.h>

#include <fmt/format.h>

#include "base/check.h"
#include "memory/tmpfs/offset_policy.h"

namespace kvmem::tmpfs {

struct RegularFile::DataPolicy : OffsetPolicy {};

namespace {

// MAX_RW_COUNT: the kernel moves at most INT_MAX rounded down to a page in
// one read or write, after checking the whole range.
constexpr uint64_t kMaxRwCount = 0x7ffff000;

constexpr const char* kSealNames[] = {"seal", "shrink", "grow", "write", "future_write"};

uint64_t round_up_to(uint64_t x, uint64_t align) {
  uint64_t r = 0;
  KVMEM_CHECK(align_up(x, align, &r), "{:#x} rounded up to {:#x} overflows", x, align);
  return r;
}

}  // namespace

std::vector<std::string> seal_names(uint32_t seals) {
  std::vector<std::string> out;
  for (uint32_t i = 0; i < 5; i++)
    if (seals & (1u << i)) out.emplace_back(kSealNames[i]);
  return out;
}

Result<uint32_t> parse_seal(std::string_view name) {
  for (uint32_t i = 0; i < 5; i++)
    if (name == kSealNames[i]) return 1u << i;
  return fail("unknown seal '{}' (seal, shrink, grow, write or future_write)", name);
}

RegularFile::RegularFile(MemoryFile& memory, std::string name, bool allow_seals)
    : memory_(memory), name_(std::move(name)), page_(memory.page_size()), data_(new DataSet) {
  if (!allow_seals) seals_ = kSealSeal;
}

RegularFile::~RegularFile() {
  std::lock_guard m(maps_mu_);
  KVMEM_CHECK(mappings_.empty(), "file {} destroyed with {} mappings left", name_,
              mappings_.size());
  std::unique_lock l(data_mu_);
  if (!data_->empty()) drop_locked(MappableRange(0, DataSet::kMaxKey));
  delete data_;
}

std::unexpected<Error> RegularFile::error(int code, std::string_view what,
                                          std::string_view why) const {
  return std::unexpected(
      Error{code, fmt::format("cannot {} of file {}: {}: {}", what, name_, why, errno_name(code))});
}

uint64_t RegularFile::eof_locked() const { return round_up_to(size_, page_); }

// ---- the data map ----

Status RegularFile::fill_locked(MappableRange r, CommitMode commit) {
  uint64_t pos = r.start;
  while (pos < r.end) {
    DataSet::Gap gap = data_->lower_bound_gap(pos);
    const uint64_t start = std::max(gap.start(), pos), end = std::min(gap.end(), r.end);
    if (start >= r.end) break;
    if (start < end) {
      // One allocation per hole: a fresh file mapped whole is one range of
      // the memory file, so one memslot for a guest.
      auto got = memory_.allocate(end - start, UsageKind::Tmpfs, {.commit = commit});
      if (!got)
        return error(got.error().code ? got.error().code : ENOMEM,
                     fmt::format("allocate {}", MappableRange(start, end).to_string()),
                     got.error().message);
      data_->insert(gap, MappableRange(start, end), got->start);
      allocated_ += end - start;
    }
    pos = start < end ? end : gap.end();  // an empty gap between touching segments
  }
  return {};
}

void RegularFile::drop_locked(MappableRange r) {
  DataSet::Seg s = data_->lower_bound_segment(r.start);
  while (s.ok() && s.start() < r.end) {
    s = data_->isolate(s, r);
    const uint64_t len = s.range().length();
    memory_.dec_ref(FileRange(s.value(), s.value() + len));
    allocated_ -= len;
    s = data_->remove(s).next_segment();
  }
}

Status RegularFile::zero_locked(uint64_t offset, uint64_t length) {
  DataSet::Seg s = data_->find_segment(offset);
  if (!s.ok() || length == 0) return {};
  const uint64_t at = s.value() + (offset - s.start());
  auto span = KVMEM_TRY(memory_.map_internal(FileRange(at, at + length)));
  std::memset(span.data(), 0, span.size());
  return {};
}

Status RegularFile::read_locked(uint64_t offset, std::span<uint8_t> dst) const {
  const uint64_t end = offset + dst.size();
  uint64_t pos = offset;
  DataSet::Seg s = data_->lower_bound_segment(pos);
  while (pos < end) {
    const uint64_t next = s.ok() ? std::min(s.start(), end) : end;
    if (pos < next) {  // a hole
      std::memset(dst.data() + (pos - offset), 0, next - pos);
      pos = next;
      continue;
    }
    // One map_internal and one copy per run of the memory file.
    const uint64_t run_end = std::min(s.end(), end);
    const uint64_t at = s.value() + (pos - s.start());
    auto span = KVMEM_TRY(memory_.map_internal(FileRange(at, at + (run_end - pos))));
    std::memcpy(dst.data() + (pos - offset), span.data(), span.size());
    pos = run_end;
    s = s.next_segment();
  }
  return {};
}

Status RegularFile::write_locked(uint64_t offset, std::span<const uint8_t> src) {
  const uint64_t end = offset + src.size();
  uint64_t pos = offset;
  for (DataSet::Seg s = data_->find_segment(pos); pos < end; s = s.next_segment()) {
    KVMEM_CHECK(s.ok() && s.start() <= pos, "file {}: writing {:#x} into a hole", name_, pos);
    const uint64_t run_end = std::min(s.end(), end);
    const uint64_t at = s.value() + (pos - s.start());
    // One pwrite per run on the memory file, not a copy through
    // map_internal: a fresh page is then filled once, where a copy would
    // fault it in (the kernel zeroing it) and write it again, and a page
    // pwrite filled would cost the copy a fault later. About the cost of a
    // memfd's own pwrite, fresh or not (docs/tmpfs.md, "Cost"). What
    // pwrite leaves (hugetlbfs has no write) goes through the mapping.
    const uint8_t* from = src.data() + (pos - offset);
    uint64_t done = 0;
    while (done < run_end - pos) {
      const ssize_t n = pwrite(memory_.fd(), from + done, run_end - pos - done,
                               static_cast<off_t>(at + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += static_cast<uint64_t>(n);
    }
    if (done < run_end - pos) {
      auto span = KVMEM_TRY(memory_.map_internal(FileRange(at + done, at + (run_end - pos))));
      std::memcpy(span.data(), from + done, span.size());
    }
    pos = run_end;
  }
  return {};
}

// ---- read and write ----

Result<uint64_t> RegularFile::read(uint64_t offset, std::span<uint8_t> dst) const {
  // pread's offset is a signed loff_t: past kMaxFileSize it is negative,
  // and the kernel checks the whole range before it shortens the count.
  if (offset > kMaxFileSize || dst.size() > kMaxFileSize - offset)
    return error(EINVAL, fmt::format("read {:#x} bytes at {:#x}", dst.size(), offset),
                 "the range passes the largest file offset");
  std::shared_lock l(data_mu_);
  if (offset >= size_) return 0;
  const uint64_t n = std::min({uint64_t{dst.size()}, kMaxRwCount, size_ - offset});
  if (n == 0) return 0;
  KVMEM_TRY(read_locked(offset, dst.first(n)));
  return n;
}

Result<uint64_t> RegularFile::write(uint64_t offset, std::span<const uint8_t> src) {
  if (offset > kMaxFileSize || src.size() > kMaxFileSize - offset)
    return error(EINVAL, fmt::format("write {:#x} bytes at {:#x}", src.size(), offset),
                 "the range passes the largest file offset");
  if (src.empty()) return 0;  // even when sealed, as pwrite(2) does
  uint64_t n = std::min(uint64_t{src.size()}, kMaxRwCount);
  std::lock_guard m(maps_mu_);
  std::unique_lock l(data_mu_);
  const auto what = [&] { return fmt::format("write {:#x} bytes at {:#x}", n, offset); };
  if (seals_ & (kSealWrite | kSealFutureWrite))
    return error(EPERM, what(), "the file is sealed against writes");
  if ((seals_ & kSealGrow) && offset + n > size_) {
    // The kernel copies one page-sized piece at a time and refuses the
    // first piece that ends past the end: what came before it is written.
    const uint64_t allowed = align_down(size_, kPageSize);
    if (allowed <= offset) return error(EPERM, what(), "the file is sealed against growing");
    n = allowed - offset;
  }
  const uint64_t end = offset + n;
  Status filled = fill_locked(MappableRange(align_down(offset, page_), round_up_to(end, page_)),
                              CommitMode::None);
  if (!filled) {
    // Nothing is written; pages the failed fill left past the end go.
    const uint64_t eof = eof_locked();
    if (eof < DataSet::kMaxKey) drop_locked(MappableRange(eof, DataSet::kMaxKey));
    return std::unexpected(filled.error());
  }
  KVMEM_TRY(write_locked(offset, src.first(n)));
  size_ = std::max(size_, end);
  return n;
}

// ---- seals and stat ----

Status RegularFile::add_seals(uint32_t seals) {
  const auto what = [&] { return fmt::format("add seals {:#x}", seals); };
  if (seals & ~kAllSeals) return error(EINVAL, what(), "unknown seal bits");
  std::lock_guard m(maps_mu_);
  std::unique_lock l(data_mu_);
  if (seals_ & kSealSeal) return error(EPERM, what(), "the file is sealed against new seals");
  if ((seals & kSealWrite) && !(seals_ & kSealWrite) && writable_mapped_pages_ > 0)
    return error(EBUSY, what(),
                 fmt::format("{} pages are mapped writable", writable_mapped_pages_));
  seals_ |= seals;
  return {};
}

uint32_t RegularFile::seals() const {
  std::shared_lock l(data_mu_);
  return seals_;
}

uint64_t RegularFile::size() const {
  std::shared_lock l(data_mu_);
  return size_;
}

FileStat RegularFile::stat() const {
  std::lock_guard m(maps_mu_);
  std::shared_lock l(data_mu_);
  return FileStat{.size = size_,
                  .allocated = allocated_,
                  .seals = seals_,
                  .mappings = mappings_.size(),
                  .writable_mapped_pages = writable_mapped_pages_};
}

FileImage RegularFile::image() const {
  std::shared_lock l(data_mu_);
  FileImage img{.size = size_, .seals = seals_, .runs = {}};
  for (DataSet::Seg s = data_->first_segment(); s.ok(); s = s.next_segment()) {
    img.runs.push_back(Translation{s.range(), FileOffset(s.value()), Access::kReadWrite});
    memory_.inc_ref(img.runs.back().file_range());
  }
  return img;
}

Status RegularFile::fill_holes(MappableRange range) {
  const auto what = [&] { return fmt::format("fill the holes of {}", range.to_string()); };
  if (!range.well_formed() || range.empty() || !range.is_aligned(page_))
    return error(EINVAL, what(), "the range is empty or unaligned");
  std::lock_guard m(maps_mu_);
  std::unique_lock l(data_mu_);
  if (range.end > eof_locked())
    return error(EINVAL, what(), fmt::format("the range passes the end of the file (size {:#x})", size_));
  return fill_locked(range, CommitMode::None);
}

void RegularFile::check_invariants() const {
  std::lock_guard m(maps_mu_);
  std::shared_lock l(data_mu_);
  const auto dump = [&] {
    return fmt::format("file {}: size {:#x}, seals {:#x}, allocated {:#x}\n{}", name_, size_,
                       seals_, allocated_,
                       data_->dump([](uint64_t off) { return fmt::format("at {:#x}", off); }));
  };
  data_->check_invariants();
  uint64_t sum = 0;
  const uint64_t eof = eof_locked();
  for (DataSet::Seg s = data_->first_segment(); s.ok(); s = s.next_segment()) {
    KVMEM_CHECK(s.range().is_aligned(page_) && s.value() % page_ == 0,
                "segment {} is not aligned to the page size\n{}", s.range().to_string(), dump());
    KVMEM_CHECK(s.end() <= eof, "segment {} lies past the end\n{}", s.range().to_string(),
                dump());
    sum += s.range().length();
  }
  KVMEM_CHECK(sum == allocated_, "allocated_ is {:#x} but the map holds {:#x}\n{}", allocated_,
              sum, dump());
  KVMEM_CHECK(size_ <= kMaxFileSize && (seals_ & ~kAllSeals) == 0, "bad size or seals\n{}",
              dump());
  uint64_t writable = 0;
  for (const Mapping& mp : mappings_) {
    KVMEM_CHECK(!mp.range.empty() && mp.range.is_page_aligned(), "mapping {} is malformed",
                mp.range.to_string());
    if (mp.writable) writable += mp.range.length() / kPageSize;
  }
  KVMEM_CHECK(writable == writable_mapped_pages_,
              "writable_mapped_pages_ is {} but the mappings hold {}\n{}", writable_mapped_pages_,
              writable, dump());
  KVMEM_CHECK(writable == 0 || !(seals_ & kSealWrite), "writable mappings under WRITE\n{}",
              dump());
}

}  // namespace kvmem::tmpfs
