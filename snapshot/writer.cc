// SnapshotWriter: data first, then metadata, then the header; fsync, rename.
#include "snapshot/writer.h"

#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "base/check.h"
#include "memory/range.h"

namespace kvmem {
namespace {

uint64_t now_ns() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// True when the page at p is all zero. 64 bytes at a time, so a page with
// data usually stops at its first block.
bool page_is_zero(const uint8_t* p) {
  for (uint64_t at = 0; at < kSnapshotPageSize; at += 64) {
    uint64_t acc = 0;
    for (uint64_t i = 0; i < 64; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + at + i, 8);
      acc |= w;
    }
    if (acc != 0) return false;
  }
  return true;
}

constexpr size_t kMaxIov = IOV_MAX < 1024 ? IOV_MAX : 1024;

}  // namespace

Result<std::unique_ptr<SnapshotWriter>> SnapshotWriter::create(const std::string& path,
                                                               const SnapshotWriterOptions& options) {
  if (options.extent_cap < kSnapshotPageSize || options.extent_cap % kSnapshotPageSize != 0 ||
      options.extent_cap > (uint64_t{1} << 31))
    return fail("cannot write snapshot {}: extent cap {:#x} is not a multiple of 4 KiB between "
                "4 KiB and 2 GiB",
                path, options.extent_cap);
  if (path.empty()) return fail("cannot write a snapshot: the path is empty");
  std::unique_ptr<SnapshotWriter> w(new SnapshotWriter());
  w->path_ = path;
  w->options_ = options;
  w->options_.write_batch = std::max(options.write_batch, options.extent_cap);
  w->start_ns_ = now_ns();
  int fd = ::open(w->tmp_path().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return sys_fail(fmt::format("cannot write snapshot {}", w->tmp_path()), "open", errno);
  w->fd_ = Fd(fd);
  return w;
}

SnapshotWriter::~SnapshotWriter() {
  if (!finished_ && fd_.valid()) {
    fd_.reset();
    ::unlink(tmp_path().c_str());
  }
}

Status SnapshotWriter::usable(const char* what) const {
  if (finished_) return fail("cannot {} snapshot {}: it is already finished", what, path_);
  if (failed_) return fail("cannot {} snapshot {}: an earlier write failed", what, path_);
  return {};
}

Status SnapshotWriter::add_section(SectionType type, uint32_t index, std::span<const uint8_t> bytes) {
  KVMEM_TRY(usable("add a section to"));
  const auto t = static_cast<uint32_t>(type);
  if (!is_known_section_type(t)) return fail("cannot add a section of unknown type {} to snapshot {}", t, path_);
  for (const PendingSection& s : sections_)
    if (s.type == t && s.index == index)
      return fail("cannot add section {} {} to snapshot {} twice", section_type_name(type), index, path_);
  sections_.push_back(PendingSection{t, index, std::vector<uint8_t>(bytes.begin(), bytes.end())});
  return {};
}

Status SnapshotWriter::add_space(uint32_t id, SpaceKind kind, const std::string& name, uint64_t size) {
  KVMEM_TRY(usable("add a space to"));
  if (name.empty() || name.size() > kSnapshotMaxNameBytes || name.find('\0') != std::string::npos)
    return fail("cannot add space {} to snapshot {}: its name must be 1 to {} bytes without NUL", id,
                path_, kSnapshotMaxNameBytes);
  if (!is_known_space_kind(static_cast<uint32_t>(kind)))
    return fail("cannot add space {} of unknown kind {} to snapshot {}", id, static_cast<uint32_t>(kind), path_);
  for (const PendingSpace& s : spaces_)
    if (s.id == id) return fail("cannot add space {} to snapshot {} twice", id, path_);
  spaces_.push_back(PendingSpace{id, kind, name, size});
  return {};
}

Status SnapshotWriter::add_memory(uint32_t space, uint64_t offset, std::span<const uint8_t> bytes) {
  KVMEM_TRY(usable("add memory to"));
  auto sp = std::find_if(spaces_.begin(), spaces_.end(), [&](const PendingSpace& s) { return s.id == space; });
  if (sp == spaces_.end())
    return fail("cannot add memory to snapshot {}: space {} was not added", path_, space);
  const uint64_t len = bytes.size();
  if (offset % kSnapshotPageSize != 0 || len % kSnapshotPageSize != 0)
    return fail("cannot add memory at {:#x} of length {:#x} to space {} of snapshot {}: not page-aligned",
                offset, len, space, path_);
  uint64_t rounded = 0;
  if (!align_up(sp->size, kSnapshotPageSize, &rounded) || offset > rounded || len > rounded - offset)
    return fail("cannot add memory at {:#x} of length {:#x} to space {} of snapshot {}: the space is {:#x} bytes",
                offset, len, space, path_, sp->size);
  if (any_memory_ && (space < last_space_ || (space == last_space_ && offset < last_end_)))
    return fail("cannot add memory at {:#x} of space {} to snapshot {}: it comes before the memory added "
                "last (space {}, up to {:#x}); add memory by space id, then offset",
                offset, space, path_, last_space_, last_end_);
  if (len == 0) return {};
  any_memory_ = true;
  last_space_ = space;
  last_end_ = offset + len;
  stats_.offered_bytes += len;

  // Runs of non-zero pages, cut at the cap.
  uint64_t run = 0, run_len = 0;
  for (uint64_t at = 0; at < len; at += kSnapshotPageSize) {
    if (page_is_zero(bytes.data() + at)) {
      stats_.zero_pages++;
      if (run_len > 0) KVMEM_TRY(add_extent(space, offset + run, bytes.subspan(run, run_len)));
      run_len = 0;
      continue;
    }
    if (run_len == 0) run = at;
    run_len += kSnapshotPageSize;
    if (run_len == options_.extent_cap) {
      KVMEM_TRY(add_extent(space, offset + run, bytes.subspan(run, run_len)));
      run_len = 0;
    }
  }
  if (run_len > 0) KVMEM_TRY(add_extent(space, offset + run, bytes.subspan(run, run_len)));
  return flush();
}

Status SnapshotWriter::add_extent(uint32_t space, uint64_t space_offset, std::span<const uint8_t> data) {
  extents_.push_back(SnapshotExtent{space, static_cast<uint32_t>(data.size()), space_offset, pos_,
                                    snapshot_checksum(data)});
  pending_.push_back(iovec{const_cast<uint8_t*>(data.data()), data.size()});
  pending_bytes_ += data.size();
  pos_ += data.size();
  stats_.extents++;
  stats_.data_bytes += data.size();
  if (pending_bytes_ >= options_.write_batch || pending_.size() >= kMaxIov) return flush();
  return {};
}

Status SnapshotWriter::flush() {
  size_t first = 0;
  uint64_t at = pending_at_;
  while (first < pending_.size()) {
    const int n = static_cast<int>(std::min(pending_.size() - first, kMaxIov));
    ssize_t got = ::pwritev(fd_.get(), pending_.data() + first, n, static_cast<off_t>(at));
    if (got < 0) {
      if (errno == EINTR) continue;
      failed_ = true;
      return sys_fail(fmt::format("cannot write the memory data of snapshot {} at {:#x}", tmp_path(), at),
                      "pwritev", errno);
    }
    if (got == 0) {
      failed_ = true;
      return fail("cannot write the memory data of snapshot {} at {:#x}: pwritev wrote nothing", tmp_path(), at);
    }
    at += static_cast<uint64_t>(got);
    // Drop what was written; a short write leaves part of one iovec.
    auto left = static_cast<uint64_t>(got);
    while (left > 0) {
      iovec& v = pending_[first];
      if (left >= v.iov_len) {
        left -= v.iov_len;
        first++;
      } else {
        v.iov_base = static_cast<uint8_t*>(v.iov_base) + left;
        v.iov_len -= left;
        left = 0;
      }
    }
  }
  pending_.clear();
  pending_bytes_ = 0;
  pending_at_ = at;
  return {};
}

Status SnapshotWriter::write_all(uint64_t offset, std::span<const uint8_t> bytes, const char* what) {
  while (!bytes.empty()) {
    ssize_t got = ::pwrite(fd_.get(), bytes.data(), bytes.size(), static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      failed_ = true;
      return sys_fail(fmt::format("cannot write the {} of snapshot {} at {:#x}", what, tmp_path(), offset),
                      "pwrite", got < 0 ? errno : EIO);
    }
    bytes = bytes.subspan(static_cast<size_t>(got));
    offset += static_cast<uint64_t>(got);
  }
  return {};
}

Result<SnapshotStats> SnapshotWriter::finish() {
  KVMEM_TRY(usable("finish"));
  KVMEM_TRY(flush());
  std::sort(spaces_.begin(), spaces_.end(), [](const PendingSpace& a, const PendingSpace& b) { return a.id < b.id; });

  // The metadata: section payloads and names, then the three tables.
  const uint64_t meta = pos_;
  std::vector<uint8_t> out;
  std::vector<SnapshotSection> sections;
  for (const PendingSection& s : sections_) {
    sections.push_back(SnapshotSection{s.type, s.index, meta + out.size(), s.bytes.size()});
    out.insert(out.end(), s.bytes.begin(), s.bytes.end());
  }
  std::vector<SnapshotSpace> spaces;
  for (const PendingSpace& s : spaces_) {
    spaces.push_back(SnapshotSpace{s.id, static_cast<uint32_t>(s.kind), s.size, meta + out.size(),
                                   static_cast<uint32_t>(s.name.size()), 0});
    out.insert(out.end(), s.name.begin(), s.name.end());
  }
  SnapshotHeader h;
  std::memcpy(h.magic, kSnapshotMagic, 8);
  h.version = kSnapshotVersion;
  h.header_size = static_cast<uint32_t>(kSnapshotHeaderBytes);
  h.page_size = static_cast<uint32_t>(kSnapshotPageSize);
  h.extent_cap = options_.extent_cap;
  h.data_offset = kSnapshotPageSize;
  h.data_bytes = pos_ - kSnapshotPageSize;
  h.meta_offset = meta;
  h.section_count = static_cast<uint32_t>(sections.size());
  h.space_count = static_cast<uint32_t>(spaces.size());
  h.extent_count = extents_.size();
  auto table = [&](uint64_t count, uint64_t entry) {
    const uint64_t at = meta + out.size();
    out.resize(out.size() + count * entry);
    return at;
  };
  h.section_table = table(sections.size(), kSnapshotSectionEntryBytes);
  for (size_t i = 0; i < sections.size(); i++)
    encode_section(sections[i], out.data() + (h.section_table - meta) + i * kSnapshotSectionEntryBytes);
  h.space_table = table(spaces.size(), kSnapshotSpaceEntryBytes);
  for (size_t i = 0; i < spaces.size(); i++)
    encode_space(spaces[i], out.data() + (h.space_table - meta) + i * kSnapshotSpaceEntryBytes);
  h.extent_table = table(extents_.size(), kSnapshotExtentEntryBytes);
  for (size_t i = 0; i < extents_.size(); i++)
    encode_extent(extents_[i], out.data() + (h.extent_table - meta) + i * kSnapshotExtentEntryBytes);
  h.file_size = meta + out.size();
  h.meta_checksum = snapshot_checksum(out);
  uint8_t header[kSnapshotHeaderBytes] = {};
  encode_header(h, header);
  h.header_checksum = header_checksum_of(header);
  encode_header(h, header);

  KVMEM_TRY(write_all(meta, out, "metadata"));
  // The header last: a file cut short anywhere before it has no magic.
  KVMEM_TRY(write_all(0, header, "header"));
  if (::fsync(fd_.get()) != 0) {
    failed_ = true;
    return sys_fail(fmt::format("cannot write snapshot {}", tmp_path()), "fsync", errno);
  }
  if (::rename(tmp_path().c_str(), path_.c_str()) != 0) {
    failed_ = true;
    return sys_fail(fmt::format("cannot rename snapshot {} to {}", tmp_path(), path_), "rename", errno);
  }
  finished_ = true;
  fd_.reset();
  // The rename is durable once the folder is synced.
  std::string dir = std::filesystem::path(path_).parent_path().string();
  if (dir.empty()) dir = ".";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return sys_fail(fmt::format("cannot sync the folder of snapshot {}", path_), "open", errno);
  Fd dir_fd(dfd);
  if (::fsync(dfd) != 0) return sys_fail(fmt::format("cannot sync the folder of snapshot {}", path_), "fsync", errno);
  stats_.file_size = h.file_size;
  stats_.seconds = static_cast<double>(now_ns() - start_ns_) / 1e9;
  return stats_;
}

}  // namespace kvmem
