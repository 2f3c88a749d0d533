// SnapshotReader: every check of reader.h, in the order the fields are
// needed; each refusal names the snapshot, the field and its value.
#include "snapshot/reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <tuple>

#include "base/check.h"
#include "memory/range.h"

namespace kvmem {
namespace {

// pread until n bytes or the end of the file; returns the bytes read or -errno.
int64_t pread_full(int fd, uint8_t* dst, uint64_t n, uint64_t at) {
  uint64_t done = 0;
  while (done < n) {
    ssize_t got = ::pread(fd, dst + done, n - done, static_cast<off_t>(at + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (got == 0) break;
    done += static_cast<uint64_t>(got);
  }
  return static_cast<int64_t>(done);
}

std::string range_str(uint64_t start, uint64_t end) { return fmt::format("[{:#x}, {:#x})", start, end); }

// start + length, or false when it overflows.
bool end_of(uint64_t start, uint64_t length, uint64_t* end) { return !__builtin_add_overflow(start, length, end); }

}  // namespace

Result<std::unique_ptr<SnapshotReader>> SnapshotReader::open(const std::string& path, const SnapshotLimits& limits) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sys_fail(fmt::format("cannot open snapshot {}", path), "open", errno);
  return open_fd(Fd(fd), path, limits);
}

Result<std::unique_ptr<SnapshotReader>> SnapshotReader::open_fd(Fd fd, const std::string& name,
                                                                const SnapshotLimits& limits) {
  std::unique_ptr<SnapshotReader> r(new SnapshotReader());
  r->name_ = name;
  r->fd_ = std::move(fd);
  struct stat st;
  if (fstat(r->fd_.get(), &st) != 0) return sys_fail(fmt::format("cannot read snapshot {}", name), "fstat", errno);
  if (!S_ISREG(st.st_mode)) return fail("snapshot {} is not a regular file", name);
  const auto real_size = static_cast<uint64_t>(st.st_size);
  if (real_size < kSnapshotHeaderBytes)
    return fail("snapshot {} is truncated: it is {} bytes, shorter than its {}-byte header", name, real_size,
                kSnapshotHeaderBytes);
  uint8_t raw[kSnapshotHeaderBytes];
  int64_t got = pread_full(r->fd_.get(), raw, kSnapshotHeaderBytes, 0);
  if (got < 0) return sys_fail(fmt::format("cannot read the header of snapshot {}", name), "pread", static_cast<int>(-got));
  if (static_cast<uint64_t>(got) < kSnapshotHeaderBytes)
    return fail("snapshot {} is truncated: its header ends after {} bytes", name, got);
  r->header_ = decode_header(raw);
  const SnapshotHeader& h = r->header_;
  if (std::memcmp(h.magic, kSnapshotMagic, 8) != 0)
    return fail("snapshot {} has magic {}, not a kvmem snapshot's {}", name, magic_hex(h.magic),
                magic_hex(kSnapshotMagic));
  if (h.version != kSnapshotVersion)
    return fail("snapshot {} has version {}; this kvmem reads version {}", name, h.version, kSnapshotVersion);
  if (const uint64_t sum = header_checksum_of(raw); sum != h.header_checksum)
    return fail("snapshot {}: header_checksum {:#x} does not match the header's bytes, which hash to {:#x}", name,
                h.header_checksum, sum);
  KVMEM_TRY(r->check_header(real_size, limits));

  // The metadata, whole: its size was checked against the file's.
  r->meta_.resize(h.file_size - h.meta_offset);
  got = pread_full(r->fd_.get(), r->meta_.data(), r->meta_.size(), h.meta_offset);
  if (got < 0)
    return sys_fail(fmt::format("cannot read the metadata of snapshot {}", name), "pread", static_cast<int>(-got));
  if (static_cast<uint64_t>(got) < r->meta_.size())
    return fail("snapshot {} is truncated: its metadata ends at {:#x}, not {:#x}", name,
                h.meta_offset + static_cast<uint64_t>(got), h.file_size);
  if (const uint64_t sum = snapshot_checksum(r->meta_); sum != h.meta_checksum)
    return fail("snapshot {}: meta_checksum {:#x} does not match the metadata {}, which hashes to {:#x}", name,
                h.meta_checksum, range_str(h.meta_offset, h.file_size), sum);
  KVMEM_TRY(r->check_layout(limits));
  KVMEM_TRY(r->check_sections(limits));
  KVMEM_TRY(r->check_spaces(limits));
  KVMEM_TRY(r->check_blobs());
  KVMEM_TRY(r->check_extents(limits));
  return r;
}

Status SnapshotReader::check_header(uint64_t real_size, const SnapshotLimits& limits) {
  const SnapshotHeader& h = header_;
  const std::string& n = name_;
  if (h.header_size != kSnapshotHeaderBytes)
    return fail("snapshot {}: header_size is {}, not {}", n, h.header_size, kSnapshotHeaderBytes);
  if (h.page_size != kSnapshotPageSize)
    return fail("snapshot {}: page_size is {}, not {}", n, h.page_size, kSnapshotPageSize);
  if (h.flags != 0) return fail("snapshot {}: flags {:#x} has bits this version does not know", n, h.flags);
  if (h.reserved != 0) return fail("snapshot {}: the reserved field is {:#x}, not 0", n, h.reserved);
  if (real_size < h.file_size)
    return fail("snapshot {} is truncated: file_size is {:#x} bytes, the file only {:#x}", n, h.file_size, real_size);
  if (real_size > h.file_size)
    return fail("snapshot {} has bytes past its end: file_size is {:#x} bytes, the file {:#x}", n, h.file_size,
                real_size);
  if (h.extent_cap < kSnapshotPageSize || h.extent_cap % kSnapshotPageSize != 0 || h.extent_cap > (uint64_t{1} << 31))
    return fail("snapshot {}: extent_cap {:#x} is not a multiple of 4 KiB between 4 KiB and 2 GiB", n, h.extent_cap);
  if (h.extent_cap > limits.max_extent_bytes)
    return fail("snapshot {}: extent_cap {:#x} is above the limit of {:#x} bytes", n, h.extent_cap,
                limits.max_extent_bytes);
  if (h.data_offset % kSnapshotPageSize != 0 || h.data_offset < kSnapshotHeaderBytes || h.data_offset > h.file_size)
    return fail("snapshot {}: data_offset {:#x} is not a 4 KiB-aligned offset between the header and the end of "
                "the file ({:#x})",
                n, h.data_offset, h.file_size);
  uint64_t data_end = 0;
  if (!end_of(h.data_offset, h.data_bytes, &data_end) || data_end != h.meta_offset)
    return fail("snapshot {}: data_offset {:#x} + data_bytes {:#x} is not meta_offset {:#x}", n, h.data_offset,
                h.data_bytes, h.meta_offset);
  if (h.meta_offset > h.file_size)
    return fail("snapshot {}: meta_offset {:#x} is past the end of the file ({:#x})", n, h.meta_offset, h.file_size);
  if (h.section_count > limits.max_sections)
    return fail("snapshot {}: section_count {} is above the limit of {}", n, h.section_count, limits.max_sections);
  if (h.space_count > limits.max_spaces)
    return fail("snapshot {}: space_count {} is above the limit of {}", n, h.space_count, limits.max_spaces);
  if (h.extent_count > limits.max_extents)
    return fail("snapshot {}: extent_count {} is above the limit of {}", n, h.extent_count, limits.max_extents);
  if (h.file_size - h.meta_offset > limits.max_metadata_bytes)
    return fail("snapshot {}: the metadata {} is {:#x} bytes, above the limit of {:#x}", n,
                range_str(h.meta_offset, h.file_size), h.file_size - h.meta_offset, limits.max_metadata_bytes);
  return {};
}

// Each table inside the metadata; then decoded. Overlaps: check_blobs.
Status SnapshotReader::check_layout(const SnapshotLimits&) {
  const SnapshotHeader& h = header_;
  struct Table {
    const char* what;
    uint64_t offset, count, entry;
  };
  const Table tables[] = {{"section table", h.section_table, h.section_count, kSnapshotSectionEntryBytes},
                          {"space table", h.space_table, h.space_count, kSnapshotSpaceEntryBytes},
                          {"extent table", h.extent_table, h.extent_count, kSnapshotExtentEntryBytes}};
  uint64_t ends[3] = {};
  for (int i = 0; i < 3; i++) {
    const Table& t = tables[i];
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(t.count, t.entry, &bytes) || !end_of(t.offset, bytes, &ends[i]) ||
        t.offset < h.meta_offset || ends[i] > h.file_size)
      return fail("snapshot {}: the {} at {:#x} ({} entries of {} bytes) lies outside the metadata {}", name_, t.what,
                  t.offset, t.count, t.entry, range_str(h.meta_offset, h.file_size));
  }
  // Before any entry is decoded: entries read from two tables at once
  // would give a confusing message. check_blobs covers the payloads.
  for (int i = 0; i < 3; i++)
    for (int j = i + 1; j < 3; j++)
      if (tables[i].offset < ends[j] && tables[j].offset < ends[i])
        return fail("snapshot {}: the {} {} overlaps the {} {}", name_, tables[i].what, range_str(tables[i].offset, ends[i]),
                    tables[j].what, range_str(tables[j].offset, ends[j]));
  sections_.reserve(h.section_count);
  for (uint64_t i = 0; i < h.section_count; i++)
    sections_.push_back(decode_section(meta_at(h.section_table + i * kSnapshotSectionEntryBytes)));
  spaces_.reserve(h.space_count);
  for (uint64_t i = 0; i < h.space_count; i++)
    spaces_.push_back(decode_space(meta_at(h.space_table + i * kSnapshotSpaceEntryBytes)));
  extents_.reserve(h.extent_count);
  for (uint64_t i = 0; i < h.extent_count; i++)
    extents_.push_back(decode_extent(meta_at(h.extent_table + i * kSnapshotExtentEntryBytes)));
  return {};
}

Status SnapshotReader::check_sections(const SnapshotLimits& limits) {
  const SnapshotHeader& h = header_;
  for (size_t i = 0; i < sections_.size(); i++) {
    const SnapshotSection& s = sections_[i];
    if (!is_known_section_type(s.type)) return fail("snapshot {}: section {} has unknown type {}", name_, i, s.type);
    const char* type = section_type_name(static_cast<SectionType>(s.type));
    if (s.length > limits.max_section_bytes)
      return fail("snapshot {}: section {} ({} {}) is {:#x} bytes, above the limit of {:#x}", name_, i, type, s.index,
                  s.length, limits.max_section_bytes);
    uint64_t end = 0;
    if (!end_of(s.offset, s.length, &end) || s.offset < h.meta_offset || end > h.file_size)
      return fail("snapshot {}: section {} ({} {}) at {:#x} of length {:#x} lies outside the metadata {}", name_, i,
                  type, s.index, s.offset, s.length, range_str(h.meta_offset, h.file_size));
  }
  std::vector<size_t> order(sections_.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = i;
  auto key = [&](size_t i) { return std::pair(sections_[i].type, sections_[i].index); };
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return key(a) < key(b); });
  for (size_t k = 1; k < order.size(); k++)
    if (key(order[k]) == key(order[k - 1])) {
      const size_t a = std::min(order[k - 1], order[k]), b = std::max(order[k - 1], order[k]);
      return fail("snapshot {}: sections {} and {} are both {} {}", name_, a, b,
                  section_type_name(static_cast<SectionType>(sections_[a].type)), sections_[a].index);
    }
  return {};
}

Status SnapshotReader::check_spaces(const SnapshotLimits& limits) {
  const SnapshotHeader& h = header_;
  for (size_t i = 0; i < spaces_.size(); i++) {
    const SnapshotSpace& s = spaces_[i];
    if (i > 0 && s.id <= spaces_[i - 1].id)
      return fail("snapshot {}: space {} has id {}, not above the id {} before it (spaces are sorted by id, each id "
                  "once)",
                  name_, i, s.id, spaces_[i - 1].id);
    if (!is_known_space_kind(s.kind)) return fail("snapshot {}: space {} (id {}) has unknown kind {}", name_, i, s.id, s.kind);
    if (s.size > limits.max_space_bytes)
      return fail("snapshot {}: space {} (id {}) is {:#x} bytes, above the limit of {:#x}", name_, i, s.id, s.size,
                  limits.max_space_bytes);
    if (s.reserved != 0) return fail("snapshot {}: space {} (id {}) has reserved field {:#x}, not 0", name_, i, s.id, s.reserved);
    if (s.name_length == 0 || s.name_length > kSnapshotMaxNameBytes)
      return fail("snapshot {}: space {} (id {}) has name_length {}, not 1 to {}", name_, i, s.id, s.name_length,
                  kSnapshotMaxNameBytes);
    uint64_t end = 0;
    if (!end_of(s.name_offset, s.name_length, &end) || s.name_offset < h.meta_offset || end > h.file_size)
      return fail("snapshot {}: space {} (id {}) has its name at {:#x} of length {}, outside the metadata {}", name_, i,
                  s.id, s.name_offset, s.name_length, range_str(h.meta_offset, h.file_size));
    if (std::memchr(meta_at(s.name_offset), 0, s.name_length) != nullptr)
      return fail("snapshot {}: space {} (id {}) has a NUL in its name", name_, i, s.id);
  }
  return {};
}

// The tables, section payloads and names are disjoint.
Status SnapshotReader::check_blobs() {
  const SnapshotHeader& h = header_;
  struct Blob {
    uint64_t start, end;
    int kind;  // 0..2 the tables, 3 a section, 4 a space's name
    size_t index;
  };
  std::vector<Blob> blobs;
  blobs.reserve(3 + sections_.size() + spaces_.size());
  blobs.push_back({h.section_table, h.section_table + h.section_count * kSnapshotSectionEntryBytes, 0, 0});
  blobs.push_back({h.space_table, h.space_table + h.space_count * kSnapshotSpaceEntryBytes, 1, 0});
  blobs.push_back({h.extent_table, h.extent_table + h.extent_count * kSnapshotExtentEntryBytes, 2, 0});
  for (size_t i = 0; i < sections_.size(); i++)
    blobs.push_back({sections_[i].offset, sections_[i].offset + sections_[i].length, 3, i});
  for (size_t i = 0; i < spaces_.size(); i++)
    blobs.push_back({spaces_[i].name_offset, spaces_[i].name_offset + spaces_[i].name_length, 4, i});
  std::erase_if(blobs, [](const Blob& b) { return b.start == b.end; });
  std::sort(blobs.begin(), blobs.end(),
            [](const Blob& a, const Blob& b) { return std::tie(a.start, a.kind, a.index) < std::tie(b.start, b.kind, b.index); });
  auto what = [&](const Blob& b) {
    static const char* const kTables[] = {"the section table", "the space table", "the extent table"};
    std::string s = b.kind < 3 ? kTables[b.kind]
                    : b.kind == 3 ? fmt::format("section {}", b.index)
                                  : fmt::format("the name of space {}", b.index);
    return s + " " + range_str(b.start, b.end);
  };
  for (size_t i = 1; i < blobs.size(); i++)
    if (blobs[i].start < blobs[i - 1].end)
      return fail("snapshot {}: {} overlaps {}", name_, what(blobs[i - 1]), what(blobs[i]));
  return {};
}

Status SnapshotReader::check_extents(const SnapshotLimits&) {
  const SnapshotHeader& h = header_;
  space_first_.assign(spaces_.size(), 0);
  space_count_.assign(spaces_.size(), 0);
  long prev_space = -1;
  uint64_t prev_end = 0, prev_data_end = h.data_offset;
  for (size_t i = 0; i < extents_.size(); i++) {
    const SnapshotExtent& e = extents_[i];
    const long s = find_space(e.space);
    if (s < 0) return fail("snapshot {}: extent {} names space {}, which is not in the space table", name_, i, e.space);
    const SnapshotSpace& sp = spaces_[static_cast<size_t>(s)];
    if (e.length == 0 || e.length % kSnapshotPageSize != 0 || e.length > h.extent_cap)
      return fail("snapshot {}: extent {} has length {:#x}, not a multiple of 4 KiB from 4 KiB to extent_cap {:#x}",
                  name_, i, e.length, h.extent_cap);
    uint64_t end = 0, space_end = 0;
    if (e.offset % kSnapshotPageSize != 0 || !end_of(e.offset, e.length, &end))
      return fail("snapshot {}: extent {} has offset {:#x}: not 4 KiB-aligned, or its end overflows", name_, i,
                  e.offset);
    if (!align_up(sp.size, kSnapshotPageSize, &space_end) || end > space_end)
      return fail("snapshot {}: extent {} {} lies outside space {} ({} {}), which is {:#x} bytes", name_, i,
                  range_str(e.offset, end), sp.id, space_kind_name(static_cast<SpaceKind>(sp.kind)), space_name(static_cast<size_t>(s)),
                  sp.size);
    if (s < prev_space)
      return fail("snapshot {}: extent {} of space {} comes after an extent of space {}: extents are sorted by space, "
                  "then offset",
                  name_, i, e.space, spaces_[static_cast<size_t>(prev_space)].id);
    if (s == prev_space && e.offset < extents_[i - 1].offset)
      return fail("snapshot {}: extent {} {} of space {} comes after extent {} {}: extents are sorted by space, then "
                  "offset",
                  name_, i, range_str(e.offset, end), e.space, i - 1,
                  range_str(extents_[i - 1].offset, prev_end));
    if (s == prev_space && e.offset < prev_end)
      return fail("snapshot {}: extent {} {} of space {} overlaps extent {} {}", name_, i, range_str(e.offset, end),
                  e.space, i - 1, range_str(extents_[i - 1].offset, prev_end));
    uint64_t data_end = 0;
    if (e.data_offset % kSnapshotPageSize != 0)
      return fail("snapshot {}: extent {} has data_offset {:#x}, not 4 KiB-aligned", name_, i, e.data_offset);
    if (e.data_offset < h.data_offset || !end_of(e.data_offset, e.length, &data_end) || data_end > h.meta_offset)
      return fail("snapshot {}: extent {} has its data at {:#x} of length {:#x}, outside the data region {}", name_, i,
                  e.data_offset, e.length, range_str(h.data_offset, h.meta_offset));
    if (e.data_offset < prev_data_end)
      return fail("snapshot {}: extent {} has its data at {:#x}, before the end of extent {}'s data at {:#x} (data "
                  "follows the extent table's order)",
                  name_, i, e.data_offset, i - 1, prev_data_end);
    if (s != prev_space) space_first_[static_cast<size_t>(s)] = i;
    space_count_[static_cast<size_t>(s)]++;
    prev_space = s;
    prev_end = end;
    prev_data_end = data_end;
  }
  return {};
}

std::span<const uint8_t> SnapshotReader::section_bytes(size_t i) const {
  KVMEM_CHECK(i < sections_.size(), "section {} of {}", i, sections_.size());
  return std::span(meta_at(sections_[i].offset), sections_[i].length);
}

std::string SnapshotReader::space_name(size_t i) const {
  KVMEM_CHECK(i < spaces_.size(), "space {} of {}", i, spaces_.size());
  const auto* p = reinterpret_cast<const char*>(meta_at(spaces_[i].name_offset));
  return std::string(p, spaces_[i].name_length);
}

long SnapshotReader::find_section(SectionType type, uint32_t index) const {
  for (size_t i = 0; i < sections_.size(); i++)
    if (sections_[i].type == static_cast<uint32_t>(type) && sections_[i].index == index) return static_cast<long>(i);
  return -1;
}

long SnapshotReader::find_space(uint32_t id) const {
  // Sorted by id once check_spaces passed.
  auto it = std::lower_bound(spaces_.begin(), spaces_.end(), id,
                             [](const SnapshotSpace& s, uint32_t v) { return s.id < v; });
  if (it == spaces_.end() || it->id != id) return -1;
  return static_cast<long>(it - spaces_.begin());
}

size_t SnapshotReader::first_extent_of(uint32_t id) const {
  const long s = find_space(id);
  return s < 0 ? 0 : space_first_[static_cast<size_t>(s)];
}

std::span<const SnapshotExtent> SnapshotReader::extents_of(uint32_t id) const {
  const long s = find_space(id);
  if (s < 0) return {};
  return std::span(extents_).subspan(space_first_[static_cast<size_t>(s)], space_count_[static_cast<size_t>(s)]);
}

Status SnapshotReader::read_extent(size_t i, std::span<uint8_t> dst) const {
  KVMEM_CHECK(i < extents_.size(), "extent {} of {}", i, extents_.size());
  const SnapshotExtent& e = extents_[i];
  KVMEM_CHECK(dst.size() == e.length, "extent {} is {:#x} bytes, the buffer {:#x}", i, e.length, dst.size());
  int64_t got = pread_full(fd_.get(), dst.data(), e.length, e.data_offset);
  if (got < 0)
    return sys_fail(fmt::format("cannot read extent {} of snapshot {}", i, name_), "pread", static_cast<int>(-got));
  if (static_cast<uint64_t>(got) < e.length)
    return fail("snapshot {}: extent {}'s data ends at {:#x}, not {:#x}: the file was cut short after it was opened",
                name_, i, e.data_offset + static_cast<uint64_t>(got), e.data_offset + e.length);
  if (const uint64_t sum = snapshot_checksum(dst); sum != e.checksum)
    return fail("snapshot {}: extent {} (space {} {}) has checksum {:#x}, but its data {} hashes to {:#x}", name_, i,
                e.space, range_str(e.offset, e.offset + e.length), e.checksum,
                range_str(e.data_offset, e.data_offset + e.length), sum);
  return {};
}

}  // namespace kvmem
