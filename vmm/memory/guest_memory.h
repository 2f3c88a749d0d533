// Guest-physical memory of one VM: RAM at [0, size), made of allocations
// from a shared MemoryFile and registered with KVM as memory slots.
//
// The guest-physical map is a SegmentSet from guest ranges to the file
// offset behind them. Neighbouring segments merge when their file ranges are
// contiguous too, and a contiguous file range is contiguous host memory (the
// MemoryFile maps its whole file inside one reservation), so each segment of
// the map is exactly one memory slot: RAM made of 64 allocations that the
// allocator placed side by side is one slot, not 64.
//
// RAM is allocated in units (allocation_unit, 2 MiB or more) so that a VM's
// memory is several allocations: freeing and reallocation across VM
// lifetimes get exercised, and a fragmented file still serves a large guest.
//
// The map is built once, in create(), and kept as the sorted array of its
// segments, immutable afterwards: translation from the vCPU's thread and
// the free ring's thread takes no lock. Every address that comes from a guest is
// checked with contains() before the VMM touches memory through it: a guest
// can only ever name its own RAM.
//
// Lifetime: the owner destroys the KVM VM (or stops its vCPUs for good)
// before its GuestMemory: the destructor drops this VM's reference on every
// allocation without deleting the memory slots, and the MemoryFile's
// reclaimer then punches the ranges and returns them to the pool.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "memory/memory_file.h"
#include "memory/range.h"
#include "memory/segment_set.h"

namespace kvmem {

class KvmVm;

// Lowest-free memory slot numbers, so a removed slot's number is reused.
class SlotAllocator {
 public:
  explicit SlotAllocator(uint32_t limit) : limit_(limit) {}
  Result<uint32_t> acquire();
  void release(uint32_t slot);
  uint32_t in_use() const;

 private:
  uint32_t limit_;
  std::vector<bool> used_;
};

struct MemSlot {
  uint32_t slot;
  GuestRange guest;
  FileRange file;
};

class GuestMemory {
 public:
  static constexpr uint64_t kDefaultUnit = 16ull << 20;

  // Allocates `size` bytes of RAM (kind Anonymous) in `unit`-sized pieces.
  // Preconditions: size and unit are multiples of 2 MiB, unit >= 2 MiB.
  // Errors: the allocator's, with the size asked for.
  static Result<std::unique_ptr<GuestMemory>> create(MemoryFile& file, uint64_t size,
                                                     uint64_t unit = kDefaultUnit);
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory();

  // Registers one memory slot per segment of the map, numbered from `slots`.
  // On failure the slots made so far are deleted again; on success the
  // slots are committed to memslots() at once.
  Status register_with(KvmVm& vm, SlotAllocator& slots);
  const std::vector<MemSlot>& memslots() const { return memslots_; }

  uint64_t size() const { return size_; }
  // True when [gpa, gpa + length) lies wholly inside RAM and does not wrap.
  bool contains(uint64_t gpa, uint64_t length) const { return gpa <= size_ && length <= size_ - gpa; }

  // Host address of gpa. Precondition: contains(gpa, 1). Host memory is
  // contiguous only within one segment: use read() for ranges.
  uint8_t* host(uint64_t gpa) const;
  // The file offset behind gpa. Precondition: contains(gpa, 1).
  uint64_t file_offset(uint64_t gpa) const;
  // Copies [gpa, gpa + length) out, across segments. Precondition: contains().
  std::string read(uint64_t gpa, uint64_t length) const;
  // Host memory of [gpa, gpa + length) when it lies in RAM in one
  // host-contiguous piece; an empty span otherwise.
  std::span<uint8_t> host_span(uint64_t gpa, uint64_t length) const;
  // The boot area [0, abi::kBootAreaEnd), which always lies in one segment.
  std::span<uint8_t> boot_area() const;

  // Punches the backing of r now: the guest reads zeros there afterwards.
  // Preconditions: contains(r), page-aligned (the hypercall layer checks).
  Status decommit(GuestRange r);
  // The file ranges behind RAM, in guest order (for accounting).
  std::vector<FileRange> file_ranges() const;
  // Bytes of RAM the host holds (mincore over the data of each segment).
  Result<uint64_t> resident_bytes() const;

 private:
  struct Backing {
    uint64_t file_start = 0;  // file offset of the segment's first byte
    bool operator==(const Backing&) const = default;
  };
  // Touching segments merge when the file ranges behind them touch too.
  struct ContiguousPolicy {
    static std::optional<Backing> merge(const GuestRange& a, const Backing& va, const GuestRange&,
                                        const Backing& vb) {
      if (va.file_start + a.length() == vb.file_start) return va;
      return std::nullopt;
    }
    static std::pair<Backing, Backing> split(const GuestRange& r, const Backing& v, uint64_t at) {
      return {v, Backing{v.file_start + (at - r.start)}};
    }
  };
  using Map = SegmentSet<GuestRange, Backing, ContiguousPolicy>;

  GuestMemory(MemoryFile& file, uint64_t size) : file_(file), size_(size) {}

  MemoryFile& file_;
  uint64_t size_;
  struct Segment {
    GuestRange guest;
    uint64_t file_start;
  };
  // The segment holding gpa. Precondition: gpa < size_.
  const Segment& segment_at(uint64_t gpa) const;

  std::vector<Segment> segments_;  // the map's segments in order, for lookups
  std::vector<FileRange> allocations_;  // each holds one reference of ours
  std::vector<MemSlot> memslots_;
};

}  // namespace kvmem
