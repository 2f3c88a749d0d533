// Saving and loading memory-file ranges: the allocator's SaveTo/LoadFrom
// (gVisor's platform.Memory), for the pages of one snapshot space.
//
// Synopsis
//   SpaceRange{space_offset, file}                 where a file range sits in a space
//   save_ranges(file, space, ranges, writer)       the committed, non-zero pages
//   load_extents(reader, space, file, ranges)      -> Result<LoadStats>
//   save_host_ranges(space, memory, ranges, writer) host memory: anonymous RAM
//   load_extents_into(reader, space, memory)       -> Result<LoadStats>
//
// A space (guest RAM, a tmpfs file) is made of memory-file ranges that need
// not touch in the file: RAM of several allocations, a file's data map.
// `ranges` says where each lies in the space; sorted by space_offset,
// disjoint, page-aligned, non-empty.
//
// save_ranges reads only what the file holds (MemoryFile::data_extents:
// SEEK_DATA/SEEK_HOLE), so holes cost nothing and never-touched pages are
// never faulted in; the writer then drops the pages that read as zero.
// Preconditions: the caller holds references on the ranges and nothing
// writes to them meanwhile (the VM is paused), else the snapshot holds
// whatever the pages held when they were read.
//
// load_extents pwrites each extent of the space into the memfd at the file
// offsets the ranges give. Pages no extent covers are not written, so they
// stay holes. pwrite into a memfd raises no userfaultfd events on a
// mapping of it: what a lazy restore's background filler needs. (A hugetlb
// file, where pwrite is not supported, is written through its mapping.)
// The ranges must be fresh allocations (all holes); load_extents refuses
// ranges that hold data, so the result is exactly the snapshot.
//
// Host memory that is in no memory file (anonymous guest RAM,
// vmm/memory/backing.h) has its own pair: save_host_ranges adds the pages
// the caller found populated (memory/page_map.h), and load_extents_into
// reads each extent straight into the space's memory, which must read as
// zero beforehand (fresh, or MADV_DONTNEED'd).
#pragma once

#include <cstdint>
#include <span>

#include "base/error.h"
#include "memory/memory_file.h"
#include "memory/range.h"
#include "snapshot/reader.h"
#include "snapshot/writer.h"

namespace kvmem {

struct SpaceRange {
  uint64_t space_offset = 0;
  FileRange file;
};

// Adds the committed non-zero pages of `ranges` to space `space` of the
// writer (which must have the space, and no memory added past the first
// range's space offset yet). Errors: ranges unsorted, overlapping, empty or
// unaligned; data_extents or a mapping failing; the writer's errors.
Status save_ranges(MemoryFile& file, uint32_t space, std::span<const SpaceRange> ranges, SnapshotWriter& writer);

struct LoadStats {
  uint64_t extents = 0;
  uint64_t bytes = 0;
  double seconds = 0;  // from the first extent's read to the last one's write (a load's MB/s: bytes / this)
};

// Writes every extent of space `space` into `file` at the ranges. Errors:
// the space not in the snapshot; ranges unsorted, overlapping, unaligned,
// outside the file or holding data; an extent not wholly covered by the
// ranges; read_extent's errors (a checksum mismatch names the extent); a
// failed pwrite. On an error, pages may have been written: the caller
// drops the ranges.
Result<LoadStats> load_extents(const SnapshotReader& reader, uint32_t space, MemoryFile& file,
                               std::span<const SpaceRange> ranges);

// Adds the pages of `ranges` (host addresses inside `memory`, which is the
// whole space: space offset 0 is memory.data()) to space `space` of the
// writer, in order; the writer drops the zero pages. Errors: ranges
// unsorted, overlapping, empty, unaligned or outside `memory`; the
// writer's errors. Preconditions as save_ranges': nothing writes to them
// meanwhile.
Status save_host_ranges(uint32_t space, std::span<const uint8_t> memory, std::span<const HostRange> ranges,
                        SnapshotWriter& writer);

// Reads every extent of space `space` into `memory` at its space offset,
// checking each one's checksum. Pages no extent covers are not written: the
// caller gives memory that reads as zero. Errors: the space not in the
// snapshot or larger than `memory`; read_extent's (an extent's data may be
// in memory even so: the caller drops it).
Result<LoadStats> load_extents_into(const SnapshotReader& reader, uint32_t space, std::span<uint8_t> memory);

}  // namespace kvmem
