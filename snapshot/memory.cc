// save_ranges and load_extents: memory-file ranges to and from a snapshot.
#include "snapshot/memory.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

namespace kvmem {
namespace {

// Ranges sorted by space offset, disjoint in the space, page-aligned,
// non-empty, with no space offset overflowing.
Status check_ranges(std::span<const SpaceRange> ranges, const char* what) {
  uint64_t prev_end = 0;
  for (size_t i = 0; i < ranges.size(); i++) {
    const SpaceRange& r = ranges[i];
    uint64_t end = 0;
    if (!r.file.well_formed() || r.file.empty() || !r.file.is_page_aligned() || r.space_offset % kPageSize != 0 ||
        __builtin_add_overflow(r.space_offset, r.file.length(), &end))
      return fail("cannot {}: range {} (file {} at space offset {:#x}) is empty, ill-formed or not page-aligned",
                  what, i, r.file.to_string(), r.space_offset);
    if (i > 0 && r.space_offset < prev_end)
      return fail("cannot {}: range {} at space offset {:#x} is not after the range before it, which ends at {:#x}",
                  what, i, r.space_offset, prev_end);
    prev_end = end;
  }
  return {};
}

}  // namespace

Status save_ranges(MemoryFile& file, uint32_t space, std::span<const SpaceRange> ranges, SnapshotWriter& writer) {
  const std::string what = fmt::format("save space {} to snapshot {}", space, writer.path());
  KVMEM_TRY(check_ranges(ranges, what.c_str()));
  for (const SpaceRange& r : ranges) {
    auto extents = KVMEM_TRY_CTX(file.data_extents(r.file), fmt::format("cannot {}", what));
    for (FileRange e : extents) {
      auto span = KVMEM_TRY_CTX(file.map_internal(e), fmt::format("cannot {}", what));
      KVMEM_TRY(writer.add_memory(space, r.space_offset + (e.start - r.file.start), span));
    }
  }
  return {};
}

Result<LoadStats> load_extents(const SnapshotReader& reader, uint32_t space, MemoryFile& file,
                               std::span<const SpaceRange> ranges) {
  const std::string what = fmt::format("load space {} of snapshot {}", space, reader.name());
  if (reader.find_space(space) < 0) return fail("cannot {}: the snapshot has no space {}", what, space);
  KVMEM_TRY(check_ranges(ranges, what.c_str()));
  const uint64_t size = file.total_size();
  for (const SpaceRange& r : ranges) {
    if (r.file.end > size)
      return fail("cannot {}: file range {} is beyond the memory file's {:#x} bytes", what, r.file.to_string(), size);
    auto data = KVMEM_TRY_CTX(file.data_extents(r.file), fmt::format("cannot {}", what));
    if (!data.empty())
      return fail("cannot {}: file range {} is not fresh: {} holds data", what, r.file.to_string(),
                  data.front().to_string());
  }
  // pwrite is shmem's; hugetlbfs has none, so its pages are copied in
  // through the mapping.
  const bool through_mapping = file.page_size() != kPageSize;
  std::vector<uint8_t> buf(reader.header().extent_cap);
  LoadStats stats;
  const auto start = std::chrono::steady_clock::now();
  const size_t first = reader.first_extent_of(space);
  const auto extents = reader.extents_of(space);
  size_t k = 0;  // the first range that may cover the next extent
  for (size_t j = 0; j < extents.size(); j++) {
    const SnapshotExtent& e = extents[j];
    const size_t index = first + j;
    std::span<uint8_t> data(buf.data(), e.length);
    KVMEM_TRY(reader.read_extent(index, data));
    // Extents and ranges are both sorted by space offset: walk them together.
    uint64_t at = e.offset;
    const uint64_t end = e.offset + e.length;
    while (at < end) {
      while (k < ranges.size() && ranges[k].space_offset + ranges[k].file.length() <= at) k++;
      if (k == ranges.size() || ranges[k].space_offset > at)
        return fail("cannot {}: extent {} [{:#x}, {:#x}) is not covered by the ranges given, from {:#x}", what,
                    index, e.offset, end, at);
      const SpaceRange& r = ranges[k];
      const uint64_t piece_end = std::min(end, r.space_offset + r.file.length());
      const uint64_t file_at = r.file.start + (at - r.space_offset);
      std::span<const uint8_t> piece = data.subspan(at - e.offset, piece_end - at);
      if (through_mapping) {
        auto dst = KVMEM_TRY_CTX(file.map_internal(FileRange(file_at, file_at + piece.size())),
                                 fmt::format("cannot {}", what));
        std::memcpy(dst.data(), piece.data(), piece.size());
      } else {
        for (uint64_t off = file_at; !piece.empty();) {
          ssize_t n = ::pwrite(file.fd(), piece.data(), piece.size(), static_cast<off_t>(off));
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0)
            return sys_fail(fmt::format("cannot {}: extent {} into the memory file at {:#x}", what, index, off),
                            "pwrite", n < 0 ? errno : EIO);
          piece = piece.subspan(static_cast<size_t>(n));
          off += static_cast<uint64_t>(n);
        }
      }
      at = piece_end;
    }
    stats.extents++;
    stats.bytes += e.length;
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

Status save_host_ranges(uint32_t space, std::span<const uint8_t> memory, std::span<const HostRange> ranges,
                        SnapshotWriter& writer) {
  const uint64_t base = reinterpret_cast<uint64_t>(memory.data());
  const HostRange all(base, base + memory.size());
  uint64_t prev_end = base;
  for (size_t i = 0; i < ranges.size(); i++) {
    const HostRange& r = ranges[i];
    if (!r.well_formed() || r.empty() || !r.is_page_aligned() || !all.is_superset_of(r) || r.start < prev_end)
      return fail("cannot save space {} to snapshot {}: host range {} ({} of {}) is empty, unaligned, out of "
                  "order or outside the space's memory {}",
                  space, writer.path(), r, i, ranges.size(), all);
    prev_end = r.end;
    KVMEM_TRY(writer.add_memory(space, r.start - base, memory.subspan(r.start - base, r.length())));
  }
  return {};
}

Result<LoadStats> load_extents_into(const SnapshotReader& reader, uint32_t space, std::span<uint8_t> memory) {
  const std::string what = fmt::format("load space {} of snapshot {}", space, reader.name());
  const long at = reader.find_space(space);
  if (at < 0) return fail("cannot {}: the snapshot has no space {}", what, space);
  const uint64_t size = reader.spaces()[static_cast<size_t>(at)].size;
  if (size > memory.size())
    return fail("cannot {}: the space is {:#x} bytes, the memory given for it {:#x}", what, size, memory.size());
  LoadStats stats;
  const size_t first = reader.first_extent_of(space);
  const auto extents = reader.extents_of(space);
  for (size_t j = 0; j < extents.size(); j++) {
    const SnapshotExtent& e = extents[j];
    // The reader keeps every extent inside its space rounded up to pages.
    if (e.offset > memory.size() || e.length > memory.size() - e.offset)
      return fail("cannot {}: extent {} [{:#x}, {:#x}) lies past the memory given, {:#x} bytes", what, first + j,
                  e.offset, e.offset + e.length, memory.size());
    KVMEM_TRY(reader.read_extent(first + j, memory.subspan(e.offset, e.length)));
    stats.extents++;
    stats.bytes += e.length;
  }
  return stats;
}

}  // namespace kvmem
