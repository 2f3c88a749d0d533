// Regions of guest-physical memory and the immutable map that holds them.
//
// Synopsis
//   RegionKind           kRam (allocator ranges the VM owns), kFileWindow (a
//                        window onto file ranges someone else owns, maybe
//                        read-only); snapshots will add a lazily restored kind
//   Region               one guest range: its kind, its access, whether a guest
//                        may report it free, and its pieces (host-contiguous
//                        runs, one memory slot each); holds a reference on the
//                        file ranges behind it until the last map that has it goes.
//                        Anonymous RAM (backing anon) is one piece over a
//                        private anonymous mapping instead: its "file offsets"
//                        are offsets into that mapping, and it holds no
//                        file reference
//   RegionMap            a sorted, disjoint, immutable set of regions: lookups,
//                        contains, reportable, read, host_span, translate
//   HostSpan             host memory behind a guest range plus what keeps it
//                        mapped: valid while the HostSpan lives, even if its
//                        region is removed from the guest meanwhile
//
// A RegionMap is never changed: GuestMemory builds a new one for each change
// and publishes it, so a reader holding one (a View) needs no lock and sees
// either the map before a change or the one after it, never half of it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/mapping.h"
#include "memory/memory_file.h"
#include "memory/range.h"
#include "vmm/kvm/memslot.h"

namespace kvmem {

enum class RegionKind { kRam, kFileWindow };
const char* region_kind_name(RegionKind kind);

// A guest-contiguous run of a region whose file range, and so host memory,
// is contiguous too: one memory slot.
struct RegionPiece {
  GuestRange guest;
  FileOffset file;  // file offset of guest.start
  FileRange file_range() const { return FileRange(file.value, file.value + guest.length()); }
};

class Region {
 public:
  // Takes over one reference on each of `refs`, dropped by the destructor.
  // Preconditions: pieces are non-empty, sorted, touching, page-aligned.
  Region(MemoryFile& file, RegionKind kind, MemAccess access, std::vector<RegionPiece> pieces,
         std::vector<FileRange> refs);
  // RAM at [0, anon->size()) over the anonymous mapping `anon` (one piece;
  // `file` is the VM's MemoryFile, unused for this region's memory).
  Region(MemoryFile& file, std::shared_ptr<const Mapping> anon);
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  ~Region();

  RegionKind kind() const { return kind_; }
  MemAccess access() const { return access_; }
  GuestRange guest() const { return guest_; }
  // Only RAM may be reported free: punching a window would punch the file
  // it shows, which is not the guest's to give back.
  bool reportable() const { return kind_ == RegionKind::kRam; }
  const std::vector<RegionPiece>& pieces() const { return pieces_; }
  MemoryFile& file() const { return file_; }
  // True for RAM over an anonymous mapping (no file behind it).
  bool anonymous() const { return anon_ != nullptr; }

  // Preconditions: guest().contains(a).
  const RegionPiece& piece_at(GuestAddr a) const;
  FileOffset file_offset(GuestAddr a) const;
  uint8_t* host(GuestAddr a) const { return (anon_ ? anon_->data() : file_.base()) + file_offset(a).value; }

 private:
  MemoryFile& file_;
  RegionKind kind_;
  MemAccess access_;
  GuestRange guest_;
  std::vector<RegionPiece> pieces_;
  std::vector<FileRange> refs_;  // each holds one reference of ours
  std::shared_ptr<const Mapping> anon_;  // anonymous RAM's memory, else null
};

class HostSpan {
 public:
  HostSpan() = default;
  HostSpan(std::span<uint8_t> bytes, std::shared_ptr<const Region> pin) : bytes_(bytes), pin_(std::move(pin)) {}
  std::span<uint8_t> bytes() const { return bytes_; }
  uint8_t* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }
  bool empty() const { return bytes_.empty(); }

 private:
  std::span<uint8_t> bytes_;
  std::shared_ptr<const Region> pin_;  // keeps bytes_ mapped and allocated
};

class RegionMap {
 public:
  RegionMap() = default;
  // Preconditions: sorted by start, disjoint (checked).
  explicit RegionMap(std::vector<std::shared_ptr<const Region>> regions);

  const std::vector<std::shared_ptr<const Region>>& regions() const { return regions_; }
  // The region holding a, or null.
  const std::shared_ptr<const Region>* find(GuestAddr a) const;
  // True when no region overlaps r.
  bool free(GuestRange r) const;
  // A new map with r added; precondition free(r->guest()).
  RegionMap with(std::shared_ptr<const Region> r) const;
  // A new map without the region that is exactly `guest`; nullopt if none.
  std::optional<RegionMap> without(GuestRange guest) const;

  // Every byte of r lies in some region. An empty range is contained when
  // its address is in a region or just past one (as [0, size] was for RAM).
  bool contains(GuestRange r) const;
  // 0 when a guest may report r free; -EFAULT when a byte of r is in no
  // region, else -EPERM when one is in a region a guest may not report.
  int reportable(GuestRange r) const;
  // The file offset behind a, or nullopt when a is in no region.
  std::optional<FileOffset> translate(GuestAddr a) const;
  // Copies r out, across regions and pieces. Precondition: contains(r).
  std::string read(GuestRange r) const;
  // Host memory the VMM may write for the guest: r non-empty, wholly in one
  // piece of a writable region. Empty otherwise.
  HostSpan host_span(GuestRange r) const;

 private:
  std::vector<std::shared_ptr<const Region>> regions_;  // sorted by guest().start, disjoint
};

}  // namespace kvmem
