// Guest-physical memory of one VM: a map of regions, each registered with
// KVM as memory slots.
//
// The map (region.h) is keyed by guest-physical range. Today RAM is one
// region at [0, size), made of allocations from a shared MemoryFile; a file
// window (a file's pages shown to the guest, maybe read-only) is the second
// kind, and a lazily restored region (snapshots) will be a third. A region
// knows its kind, its access, its memory slots and whether a guest may
// report it free (RAM only: a free report that touches any other region
// gets -EPERM).
//
// RAM is allocated in units (allocation_unit, 2 MiB or more) so that a VM's
// memory is several allocations: freeing and reallocation across VM
// lifetimes get exercised, and a fragmented file still serves a large guest.
// Allocations the allocator placed side by side form one piece, since a
// contiguous file range is contiguous host memory (the MemoryFile maps its
// whole file inside one reservation), and each piece is one memory slot:
// RAM made of 64 neighbouring allocations is one slot, not 64.
//
// Readers and writers. The map is a sorted vector of regions, not a
// SegmentSet: it holds a handful of regions, each added and removed whole
// and never merged with its neighbours or split, and every change copies it
// (a few shared pointers) into a new immutable map that is then published
// under a lock held only for the pointer swap. Readers (the vCPU's thread,
// device threads such as the free ring's) take a View, a shared pointer to
// the current map (copied under that same short lock), and use it without
// a lock; host memory found through a View stays mapped and
// allocated while the View (or a HostSpan from it) lives, even if its region
// is removed meanwhile. Writers (add_window, remove, register_with) take mu_.
// Every address that comes from a guest is checked against a View before
// the VMM touches memory through it: a guest can only ever name its own
// regions.
//
// Commit after success. A region is built on the side (its references
// taken, its chunks mapped), then its memory slots are added, and only when
// every ioctl succeeded is it published; on failure the slots made so far
// are deleted again (Memslot is RAII). Removing a region publishes the map
// without it, then deletes its slots (Vm::create turned off
// KVM_X86_QUIRK_SLOT_ZAP_ALL where offered, so a deletion zaps only that
// slot's shadow pages).
//
// Lock order: GuestMemory::mu_ -> the KVM VM's slot mutex (memslot.h) ->
// MemoryFile's locks (a region's last reference dropped under mu_ releases
// its file ranges). publish_mu_ is a leaf: nothing is taken or freed under
// it. Readers take publish_mu_ for view(), and MemoryFile's in decommit().
//
// Lifetime: the MemoryFile outlives the GuestMemory and every View. The
// owner closes the KVM VM before the GuestMemory goes (memslot.h, "Teardown
// order"): the slots then go with the VM, and the destructor only drops
// this VM's references; the MemoryFile's reclaimer then punches the ranges
// and returns them to the pool.
//
// Cost: nothing here is proportional to the size of RAM. resident_bytes()
// asks the kernel (mincore) only about the file's data extents
// (MemoryFile::resident_in skips holes with SEEK_DATA), so its cost follows
// what the guest touched. Keep it that way. The one exception is anonymous
// RAM (create_anon, backing anon in vmm/memory/backing.h), which has no
// data extents to ask about: its resident_bytes() mincores all of it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "memory/memory_file.h"
#include "memory/range.h"
#include "vmm/kvm/memslot.h"
#include "vmm/memory/region.h"

namespace kvmem {

class KvmVm;

struct MemslotInfo {
  uint32_t slot;
  GuestRange guest;
  FileRange file;
  MemAccess access;
};

class GuestMemory {
 public:
  static constexpr uint64_t kDefaultUnit = 16ull << 20;
  using View = std::shared_ptr<const RegionMap>;

  // Allocates `size` bytes of RAM (kind Anonymous) in `unit`-sized pieces.
  // Preconditions: size and unit are multiples of 2 MiB, unit >= 2 MiB.
  // Errors: the allocator's, with the size asked for.
  static Result<std::unique_ptr<GuestMemory>> create(MemoryFile& file, uint64_t size,
                                                     uint64_t unit = kDefaultUnit);
  // RAM of `size` bytes (a multiple of 2 MiB) from a private anonymous
  // mapping (MAP_NORESERVE), one piece and one memory slot; `file` serves
  // the windows only. Its file_ranges() are empty (nothing of the file is
  // behind RAM), memslots() give offsets into the mapping as the file
  // range, decommit() is MADV_DONTNEED, and resident_bytes() mincores the
  // whole mapping: this one costs time in proportion to RAM. Errors: mmap's.
  static Result<std::unique_ptr<GuestMemory>> create_anon(MemoryFile& file, uint64_t size);
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory();

  // Registers every region's slots with `vm`; afterwards add_window() and
  // remove() keep the VM in step. On failure no slot is left registered.
  Status register_with(const KvmVm& vm);
  // Every registered slot, in guest order.
  std::vector<MemslotInfo> memslots() const;

  // Shows `file` (pages of this GuestMemory's MemoryFile that the caller
  // holds a reference on) at `guest`. The region takes a reference of its
  // own, dropped when it is removed and the last View that has it goes.
  // Errors: ranges unaligned, empty, of different lengths, or wrapping;
  // guest overlapping a region; the mapping or a slot failing (nothing is
  // left of the region then).
  Status add_window(GuestRange guest, FileRange file, MemAccess access);
  // Shows memory-file pages as a region of `kind` (not RAM) made of
  // `pieces`, taking over one reference on each of `refs`: they are dropped
  // when the region goes, or at once if it cannot be made. Errors: pieces
  // empty, unaligned or not touching; the range overlapping a region; the
  // mapping or a slot failing (nothing is left of the region then).
  Status add_region(RegionKind kind, MemAccess access, std::vector<RegionPiece> pieces,
                    std::vector<FileRange> refs);
  // Takes `hole` out of the region that is exactly `region`: what lies below
  // and above the hole stays, as regions of their own holding references of
  // their own; the slots of pieces wholly outside the hole stay registered
  // as they were (KVM zaps nothing of them), the slots the hole touches are
  // deleted, and the parts of them outside it registered again. A hole
  // that misses the region does nothing. Errors: no such region; RAM; a
  // slot failing (the map is right even so; memslots() tells what KVM has).
  Status cut(GuestRange region, GuestRange hole);
  // Removes the region that is exactly `guest`. Errors: no such region; RAM
  // (host() hands out unpinned pointers to it); deleting a slot failing
  // (the region is gone from the map even so, but its memory stays held
  // while KVM may still map it, and memslots() still lists the slot).
  Status remove(GuestRange guest);

  // The current map. Hold it while using host memory found through it.
  View view() const {
    std::lock_guard lock(publish_mu_);
    return map_;
  }

  // One View each (region.h has the semantics).
  bool contains(GuestRange r) const { return view()->contains(r); }
  int reportable(GuestRange r) const { return view()->reportable(r); }
  std::string read(GuestRange r) const { return view()->read(r); }
  HostSpan host_span(GuestRange r) const { return view()->host_span(r); }
  std::optional<FileOffset> translate(GuestAddr a) const { return view()->translate(a); }

  uint64_t ram_size() const { return ram_->guest().length(); }
  // RAM lives as long as the GuestMemory, so these need no pin.
  // Precondition: a lies in RAM.
  uint8_t* host(GuestAddr a) const { return ram_->host(a); }
  FileOffset file_offset(GuestAddr a) const { return ram_->file_offset(a); }
  // Host memory of RAM from a, at most `max` bytes and never past the end
  // of a's piece (host memory is contiguous only within one). Precondition:
  // a lies in RAM.
  std::span<uint8_t> ram_run(GuestAddr a, uint64_t max) const;
  // The boot area [0, abi::kBootAreaEnd), which always lies in one piece.
  std::span<uint8_t> boot_area() const;

  // Punches the backing of r now: the guest reads zeros there afterwards;
  // returns the bytes released. On a file of larger pages (hugetlb, 2 MiB)
  // only the whole pages inside r are punched (r rounded inward: the rest
  // keeps its contents and stays committed); anonymous RAM is
  // MADV_DONTNEED. Preconditions: 4 KiB-aligned (the hypercall layer
  // checks). Errors: r not wholly RAM (EPERM, EFAULT), the punch's.
  Result<uint64_t> decommit(GuestRange r);
  // Called with each RAM range just before decommit() punches it (a lazy
  // restore drops what it still owes there: vmm/memory/lazy_ram.h). Set
  // before the guest runs, cleared after; it runs on the reporting thread.
  void set_decommit_observer(std::function<void(GuestRange)> observer) { decommit_observer_ = std::move(observer); }
  // RAM over an anonymous mapping (create_anon), not the file.
  bool anonymous() const { return ram_->anonymous(); }
  // The MemoryFile behind RAM (anonymous RAM: behind the windows only).
  MemoryFile& file() const { return file_; }
  // Guest RAM the host holds for this VM: its share of the file by the
  // allocator's count (update_usage first, then committed_in per range),
  // or for anonymous RAM the kernel's (resident_bytes).
  Result<uint64_t> committed_bytes() const;
  // The file ranges behind RAM, in guest order (for accounting); empty for
  // anonymous RAM.
  std::vector<FileRange> file_ranges() const;
  // Bytes of RAM the host holds (mincore over the data extents of each
  // piece; anonymous RAM: over all of it).
  Result<uint64_t> resident_bytes() const;

 private:
  struct Registration {
    std::shared_ptr<const Region> region;  // pins the memory the slots point at
    std::vector<Memslot> slots;            // one per piece; declared last: they go first
  };

  GuestMemory(MemoryFile& file, std::shared_ptr<const Region> ram);
  Result<uint64_t> anon_resident_bytes() const;
  // Adds one slot per piece of r; all of them or none.
  Result<Registration> register_region_locked(std::shared_ptr<const Region> r) const;
  // Adds one slot per piece of r, reusing the slot in `old` with exactly a
  // piece's range where there is one. Precondition: the slots of `old` that
  // overlap r's pieces and are not reused have been removed.
  Result<Registration> reregister_locked(std::shared_ptr<const Region> r, std::vector<Memslot>& old) const;
  // A region of `kind` over the parts of `from`'s pieces inside `keep`,
  // with references of its own; null when nothing of it is inside.
  std::shared_ptr<const Region> part_of(const Region& from, GuestRange keep) const;

  MemoryFile& file_;
  std::shared_ptr<const Region> ram_;  // never removed
  std::function<void(GuestRange)> decommit_observer_;  // set while no guest runs
  // Replaces the published map; the old one is dropped after publish_mu_.
  void publish_locked(RegionMap next);

  mutable std::mutex mu_;  // writers: serialises changes to the map and the slots
  // Held only to copy or swap map_ (a pointer and a count): readers never
  // wait for a writer's ioctls. Not std::atomic<std::shared_ptr>: GCC 12's
  // guards its pointer with a lock bit that ThreadSanitizer cannot see, so
  // every reader would be reported as racing with every writer.
  mutable std::mutex publish_mu_;
  std::shared_ptr<const RegionMap> map_;  // protected by publish_mu_; replaced under mu_ too
  std::optional<VmSlots> vm_;         // protected by mu_: set by register_with
  std::vector<Registration> slots_;   // protected by mu_; declared last: slots go before the regions
};

}  // namespace kvmem
