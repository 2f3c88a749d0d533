#include "vmm/memory/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

#include "base/check.h"
#include "guest/abi.h"
#include "vmm/kvm/kvm.h"

namespace kvmem {

Result<uint32_t> SlotAllocator::acquire() {
  for (uint32_t i = 0; i < used_.size(); i++)
    if (!used_[i]) {
      used_[i] = true;
      return i;
    }
  if (used_.size() >= limit_) return fail("all {} KVM memory slots are in use", limit_);
  used_.push_back(true);
  return static_cast<uint32_t>(used_.size() - 1);
}

void SlotAllocator::release(uint32_t slot) {
  KVMEM_CHECK(slot < used_.size() && used_[slot], "releasing memory slot {} that is not in use", slot);
  used_[slot] = false;
}

uint32_t SlotAllocator::in_use() const {
  uint32_t n = 0;
  for (bool u : used_) n += u;
  return n;
}

Result<std::unique_ptr<GuestMemory>> GuestMemory::create(MemoryFile& file, uint64_t size, uint64_t unit) {
  KVMEM_CHECK(size > 0 && size % kHugePageSize == 0 && unit >= kHugePageSize && unit % kHugePageSize == 0,
              "guest RAM of {:#x} bytes in units of {:#x}", size, unit);
  std::unique_ptr<GuestMemory> m(new GuestMemory(file, size));
  Map map;
  for (uint64_t gpa = 0; gpa < size; gpa += unit) {
    const uint64_t length = std::min(unit, size - gpa);
    auto r = file.allocate(length, UsageKind::Anonymous);
    if (!r) return std::unexpected(r.error().context(fmt::format("cannot allocate {} MiB of guest RAM", size >> 20)));
    m->allocations_.push_back(*r);
    // Make the chunks behind the range accessible before KVM sees them.
    if (auto span = file.map_internal(*r); !span)
      return std::unexpected(span.error().context("cannot map guest RAM"));
    const bool added = map.add(GuestRange(gpa, gpa + length), Backing{r->start});
    KVMEM_CHECK(added, "guest range [{:#x}, {:#x}) already mapped", gpa, gpa + length);
  }
  for (auto seg = map.first_segment(); seg.ok(); seg = seg.next_segment())
    m->segments_.push_back(Segment{seg.range(), seg.value().file_start});
  return m;
}

GuestMemory::~GuestMemory() {
  for (const FileRange& r : allocations_) file_.dec_ref(r);
}

Status GuestMemory::register_with(KvmVm& vm, SlotAllocator& slots) {
  KVMEM_CHECK(memslots_.empty(), "guest memory registered twice");
  std::vector<MemSlot> made;
  auto undo = [&] {
    for (const MemSlot& s : made) {
      (void)vm.set_memory_region(s.slot, 0, s.guest.start, 0, nullptr);
      slots.release(s.slot);
    }
  };
  for (const Segment& seg : segments_) {
    auto slot = slots.acquire();
    if (!slot) {
      undo();
      return std::unexpected(slot.error());
    }
    const GuestRange g = seg.guest;
    const FileRange f(seg.file_start, seg.file_start + g.length());
    if (auto s = vm.set_memory_region(*slot, 0, g.start, g.length(), file_.base() + f.start); !s) {
      slots.release(*slot);
      undo();
      return s;
    }
    made.push_back(MemSlot{*slot, g, f});
  }
  // Commit only after every ioctl succeeded.
  memslots_ = std::move(made);
  return {};
}

const GuestMemory::Segment& GuestMemory::segment_at(uint64_t gpa) const {
  KVMEM_CHECK(gpa < size_, "guest-physical {:#x} is not RAM", gpa);
  auto it = std::upper_bound(segments_.begin(), segments_.end(), gpa,
                             [](uint64_t a, const Segment& s) { return a < s.guest.start; });
  return *(it - 1);  // RAM is [0, size_) without holes, so gpa's segment starts at or before it
}

uint64_t GuestMemory::file_offset(uint64_t gpa) const {
  const Segment& seg = segment_at(gpa);
  return seg.file_start + (gpa - seg.guest.start);
}

uint8_t* GuestMemory::host(uint64_t gpa) const { return file_.base() + file_offset(gpa); }

std::string GuestMemory::read(uint64_t gpa, uint64_t length) const {
  KVMEM_CHECK(contains(gpa, length), "read of [{:#x}, +{:#x}) outside RAM", gpa, length);
  std::string out;
  out.reserve(length);
  while (length > 0) {
    const uint64_t n = std::min(length, segment_at(gpa).guest.end - gpa);
    out.append(reinterpret_cast<const char*>(host(gpa)), n);
    gpa += n;
    length -= n;
  }
  return out;
}

std::span<uint8_t> GuestMemory::host_span(uint64_t gpa, uint64_t length) const {
  if (length == 0 || !contains(gpa, length)) return {};
  if (length > segment_at(gpa).guest.end - gpa) return {};
  return {host(gpa), length};
}

std::span<uint8_t> GuestMemory::boot_area() const {
  KVMEM_CHECK(segment_at(0).guest.end >= abi::kBootAreaEnd, "boot area not in one segment");
  return {host(0), abi::kBootAreaEnd};
}

Status GuestMemory::decommit(GuestRange r) {
  KVMEM_CHECK(contains(r.start, r.length()) && r.is_page_aligned(), "decommit of {} outside RAM", r);
  uint64_t gpa = r.start;
  while (gpa < r.end) {
    const Segment& seg = segment_at(gpa);
    const uint64_t end = std::min(r.end, seg.guest.end);
    const uint64_t f = seg.file_start + (gpa - seg.guest.start);
    if (auto s = file_.decommit(FileRange(f, f + (end - gpa))); !s)
      return std::unexpected(s.error().context(fmt::format("cannot decommit guest-physical {}", r)));
    gpa = end;
  }
  return {};
}

std::vector<FileRange> GuestMemory::file_ranges() const {
  std::vector<FileRange> out;
  for (const Segment& seg : segments_) out.emplace_back(seg.file_start, seg.file_start + seg.guest.length());
  return out;
}

Result<uint64_t> GuestMemory::resident_bytes() const {
  // The file counts over its data extents only: the cost follows what the
  // guest touched, not its size (a mincore of all of a 32 GiB guest took
  // ~0.5 s).
  uint64_t bytes = 0;
  for (const FileRange& f : file_ranges()) {
    auto r = file_.resident_in(f);
    if (!r) return std::unexpected(r.error().context("cannot count resident guest RAM"));
    bytes += *r;
  }
  return bytes;
}

}  // namespace kvmem
