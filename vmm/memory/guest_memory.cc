#include "vmm/memory/guest_memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>

#include "base/check.h"
#include "guest/abi.h"
#include "memory/segment_set.h"
#include "vmm/kvm/kvm.h"

namespace kvmem {
namespace {

// RAM's allocations, keyed by guest range: touching ones merge when the
// file ranges behind them touch too, so each segment is one piece.
struct Backing {
  uint64_t file_start = 0;  // file offset of the segment's first byte
  bool operator==(const Backing&) const = default;
};
struct ContiguousPolicy {
  static std::optional<Backing> merge(const GuestRange& a, const Backing& va, const GuestRange&, const Backing& vb) {
    if (va.file_start + a.length() == vb.file_start) return va;
    return std::nullopt;
  }
  static std::pair<Backing, Backing> split(const GuestRange& r, const Backing& v, uint64_t at) {
    return {v, Backing{v.file_start + (at - r.start)}};
  }
};

// Drops the references of a region that was never made.
struct RefGuard {
  MemoryFile& file;
  std::vector<FileRange> refs;
  ~RefGuard() {
    for (const FileRange& r : refs) file.dec_ref(r);
  }
};

}  // namespace

Result<std::unique_ptr<GuestMemory>> GuestMemory::create(MemoryFile& file, uint64_t size, uint64_t unit) {
  KVMEM_CHECK(size > 0 && size % kHugePageSize == 0 && unit >= kHugePageSize && unit % kHugePageSize == 0,
              "guest RAM of {:#x} bytes in units of {:#x}", size, unit);
  RefGuard allocations{file, {}};
  SegmentSet<GuestRange, Backing, ContiguousPolicy> map;
  for (uint64_t gpa = 0; gpa < size; gpa += unit) {
    const uint64_t length = std::min(unit, size - gpa);
    auto r = file.allocate(length, UsageKind::Anonymous);
    if (!r) return std::unexpected(r.error().context(fmt::format("cannot allocate {} MiB of guest RAM", size >> 20)));
    allocations.refs.push_back(*r);
    // Make the chunks behind the range accessible before KVM sees them.
    if (auto span = file.map_internal(*r); !span) return std::unexpected(span.error().context("cannot map guest RAM"));
    const bool added = map.add(GuestRange(gpa, gpa + length), Backing{r->start});
    KVMEM_CHECK(added, "guest range [{:#x}, {:#x}) already mapped", gpa, gpa + length);
  }
  std::vector<RegionPiece> pieces;
  for (auto seg = map.first_segment(); seg.ok(); seg = seg.next_segment())
    pieces.push_back(RegionPiece{seg.range(), FileOffset(seg.value().file_start)});
  auto ram = std::make_shared<const Region>(file, RegionKind::kRam, MemAccess::kReadWrite, std::move(pieces),
                                            std::exchange(allocations.refs, {}));
  return std::unique_ptr<GuestMemory>(new GuestMemory(file, std::move(ram)));
}

Result<std::unique_ptr<GuestMemory>> GuestMemory::create_anon(MemoryFile& file, uint64_t size) {
  KVMEM_CHECK(size > 0 && size % kHugePageSize == 0, "anonymous guest RAM of {:#x} bytes", size);
  auto m = Mapping::create(fmt::format("cannot map {} MiB of anonymous guest RAM", size >> 20), size,
                           PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
  if (!m) return std::unexpected(m.error());
  auto anon = std::make_shared<const Mapping>(std::move(*m));
  return std::unique_ptr<GuestMemory>(new GuestMemory(file, std::make_shared<const Region>(file, std::move(anon))));
}

GuestMemory::GuestMemory(MemoryFile& file, std::shared_ptr<const Region> ram)
    : file_(file), ram_(std::move(ram)), map_(std::make_shared<const RegionMap>(RegionMap().with(ram_))) {}

void GuestMemory::publish_locked(RegionMap next) {
  std::shared_ptr<const RegionMap> p = std::make_shared<const RegionMap>(std::move(next));
  {
    std::lock_guard lock(publish_mu_);
    map_.swap(p);
  }
  // p, the old map, goes here: out of publish_mu_, since a region it frees drops file references.
}

GuestMemory::~GuestMemory() = default;

Result<GuestMemory::Registration> GuestMemory::register_region_locked(std::shared_ptr<const Region> r) const {
  Registration reg{std::move(r), {}};
  const Region& region = *reg.region;
  for (const RegionPiece& p : region.pieces()) {
    auto slot = vm_->add(p.guest, region.host(p.guest.start_addr()), region.access());
    // Returning drops reg, and with it every slot made so far.
    if (!slot)
      return std::unexpected(slot.error().context(
          fmt::format("cannot register guest {} {}", region_kind_name(region.kind()), region.guest())));
    reg.slots.push_back(std::move(*slot));
  }
  return reg;
}

Status GuestMemory::register_with(const KvmVm& vm) {
  std::lock_guard lock(mu_);
  KVMEM_CHECK(!vm_, "guest memory registered twice");
  vm_ = vm.slots();
  std::vector<Registration> made;
  const View current = view();
  for (const auto& region : current->regions()) {
    auto reg = register_region_locked(region);
    if (!reg) {
      made.clear();  // deletes every slot made so far
      vm_.reset();
      return std::unexpected(reg.error());
    }
    made.push_back(std::move(*reg));
  }
  // Commit only after every ioctl succeeded.
  slots_ = std::move(made);
  return {};
}

std::vector<MemslotInfo> GuestMemory::memslots() const {
  std::lock_guard lock(mu_);
  std::vector<MemslotInfo> out;
  for (const Registration& reg : slots_)
    for (const Memslot& s : reg.slots) {
      const FileOffset f = reg.region->file_offset(s.guest().start_addr());
      out.push_back(MemslotInfo{s.slot(), s.guest(), FileRange(f.value, f.value + s.guest().length()), s.access()});
    }
  std::sort(out.begin(), out.end(), [](const MemslotInfo& a, const MemslotInfo& b) { return a.guest.start < b.guest.start; });
  return out;
}

Status GuestMemory::add_window(GuestRange guest, FileRange file, MemAccess access) {
  const char* bad = !guest.well_formed() || !file.well_formed() || guest.empty() ? "a window is a non-empty range"
                    : guest.length() != file.length()                           ? "the ranges differ in length"
                    : !guest.is_page_aligned() || !file.is_page_aligned()       ? "the ranges must be page-aligned"
                                                                                 : nullptr;
  if (bad) return fail("cannot show file {} at guest-physical {}: {}", file, guest, bad);
  file_.inc_ref(file);  // the region's own
  return add_region(RegionKind::kFileWindow, access, {{guest, file.start_addr()}}, {file});
}

Status GuestMemory::add_region(RegionKind kind, MemAccess access, std::vector<RegionPiece> pieces,
                               std::vector<FileRange> refs) {
  RefGuard ref{file_, std::move(refs)};
  KVMEM_CHECK(kind != RegionKind::kRam, "RAM is made by create()");
  const char* bad = nullptr;
  for (size_t i = 0; i < pieces.size() && !bad; i++) {
    const GuestRange& g = pieces[i].guest;
    if (!g.well_formed() || g.empty() || !g.is_page_aligned() || !pieces[i].file.is_page_aligned())
      bad = "its pieces must be non-empty and page-aligned";
    else if (i > 0 && pieces[i - 1].guest.end != g.start) bad = "its pieces must touch, in order";
    else if (pieces[i].file.value > UINT64_MAX - g.length()) bad = "a piece's file range wraps";
  }
  if (pieces.empty()) bad = "it has no pieces";
  const GuestRange guest = pieces.empty() ? GuestRange() : GuestRange(pieces.front().guest.start, pieces.back().guest.end);
  if (bad) return fail("cannot show a {} at guest-physical {}: {}", region_kind_name(kind), guest, bad);
  // On the side: map the chunks behind it before KVM can see them.
  for (const RegionPiece& p : pieces)
    if (auto span = file_.map_internal(p.file_range()); !span)
      return std::unexpected(span.error().context(fmt::format("cannot show file {} at guest-physical {}", p.file_range(), p.guest)));
  auto region = std::make_shared<const Region>(file_, kind, access, std::move(pieces), std::exchange(ref.refs, {}));
  std::lock_guard lock(mu_);
  View current = view();
  if (!current->free(guest))
    return fail("cannot show a {} at guest-physical {}: it overlaps a region already there", region_kind_name(kind), guest);
  if (vm_) {
    auto reg = register_region_locked(region);
    if (!reg) return std::unexpected(reg.error());
    slots_.push_back(std::move(*reg));
  }
  publish_locked(current->with(std::move(region)));
  return {};
}

std::shared_ptr<const Region> GuestMemory::part_of(const Region& from, GuestRange keep) const {
  std::vector<RegionPiece> pieces;
  std::vector<FileRange> refs;
  for (const RegionPiece& p : from.pieces()) {
    const GuestRange g = p.guest.intersect(keep);
    if (g.empty()) continue;
    pieces.push_back(RegionPiece{g, p.file + (g.start - p.guest.start)});
    refs.push_back(pieces.back().file_range());
    file_.inc_ref(refs.back());
  }
  if (pieces.empty()) return nullptr;
  return std::make_shared<const Region>(file_, from.kind(), from.access(), std::move(pieces), std::move(refs));
}

Result<GuestMemory::Registration> GuestMemory::reregister_locked(std::shared_ptr<const Region> r,
                                                                 std::vector<Memslot>& old) const {
  Registration reg{std::move(r), {}};
  for (const RegionPiece& p : reg.region->pieces()) {
    auto same = std::find_if(old.begin(), old.end(), [&](const Memslot& s) { return s.guest() == p.guest; });
    if (same != old.end()) {
      reg.slots.push_back(std::move(*same));
      old.erase(same);
      continue;
    }
    auto slot = vm_->add(p.guest, reg.region->host(p.guest.start_addr()), reg.region->access());
    if (!slot) return std::unexpected(slot.error().context(fmt::format("cannot register guest {} {}",
                                                                        region_kind_name(reg.region->kind()), p.guest)));
    reg.slots.push_back(std::move(*slot));
  }
  return reg;
}

Status GuestMemory::cut(GuestRange region_range, GuestRange hole) {
  std::lock_guard lock(mu_);
  View current = view();
  const auto* found = current->find(region_range.start_addr());
  if (!found || (*found)->guest() != region_range)
    return fail("cannot cut {} out of guest-physical {}: no region is exactly there", hole, region_range);
  const std::shared_ptr<const Region> region = *found;
  if (region->kind() == RegionKind::kRam) return fail("cannot cut {} out of RAM", hole);
  const GuestRange h = hole.intersect(region_range);
  if (h.empty()) return {};
  auto below = part_of(*region, GuestRange(region_range.start, h.start));
  auto above = part_of(*region, GuestRange(h.end, region_range.end));
  std::optional<RegionMap> next = current->without(region_range);
  KVMEM_CHECK(next, "region {} found and not found", region_range);
  if (below) next = next->with(below);
  if (above) next = next->with(above);
  // Readers first: from here no new View finds the pages of the hole.
  publish_locked(std::move(*next));
  auto reg = std::find_if(slots_.begin(), slots_.end(), [&](const Registration& r) { return r.region == region; });
  if (reg == slots_.end()) return {};  // not registered with KVM
  // Delete the slots the hole touches (KVM zaps only those: the quirk is
  // off), then register the parts of them that stay; the others move over.
  std::vector<Memslot> old = std::move(reg->slots);
  slots_.erase(reg);
  Status status;
  for (Memslot& s : old)
    if (s.guest().overlaps(h))
      if (auto st = s.remove(); !st && status) status = std::unexpected(st.error());
  if (!status) {
    // KVM still maps the old pages: keep them held with the region.
    slots_.push_back(Registration{region, std::move(old)});
    return status;
  }
  std::erase_if(old, [&](const Memslot& s) { return s.guest().overlaps(h); });
  for (const auto& part : {below, above}) {
    if (!part) continue;
    auto made = reregister_locked(part, old);
    if (!made) {
      if (status) status = std::unexpected(made.error());
      continue;
    }
    slots_.push_back(std::move(*made));
  }
  KVMEM_CHECK(old.empty(), "{} slots of {} outside the hole {} were not reused", old.size(), region_range, h);
  return status;
}

Status GuestMemory::remove(GuestRange guest) {
  std::lock_guard lock(mu_);
  View current = view();
  const auto* region = current->find(guest.start_addr());
  if (!region || (*region)->guest() != guest) return fail("cannot remove guest-physical {}: no region is exactly there", guest);
  if ((*region)->kind() == RegionKind::kRam) return fail("cannot remove guest-physical {}: RAM stays for the VM's life", guest);
  std::optional<RegionMap> next = current->without(guest);
  KVMEM_CHECK(next, "region {} found and not found", guest);
  // Readers first: from here no new View finds the region. Views taken
  // before keep its memory until they go.
  publish_locked(std::move(*next));
  auto reg = std::find_if(slots_.begin(), slots_.end(),
                         [&](const Registration& r) { return r.region->guest() == guest; });
  if (reg == slots_.end()) return {};  // not registered with KVM
  Status status;
  for (Memslot& s : reg->slots)
    if (auto st = s.remove(); !st && status) status = std::unexpected(st.error());
  // A slot KVM would not delete keeps its registration, and so the
  // region's memory: it must not go back to the pool while a guest maps it.
  if (status) slots_.erase(reg);
  return status;
}

std::span<uint8_t> GuestMemory::boot_area() const {
  const RegionPiece& first = ram_->piece_at(GuestAddr(0));
  KVMEM_CHECK(first.guest.end >= abi::kBootAreaEnd, "boot area not in one piece");
  return {host(GuestAddr(0)), abi::kBootAreaEnd};
}

std::span<uint8_t> GuestMemory::ram_run(GuestAddr a, uint64_t max) const {
  const RegionPiece& p = ram_->piece_at(a);
  return {ram_->host(a), std::min(max, p.guest.end - a.value)};
}

Result<uint64_t> GuestMemory::decommit(GuestRange r) {
  KVMEM_CHECK(r.is_page_aligned(), "decommit of {}, which is not page-aligned", r);
  View v = view();
  if (int err = v->reportable(r); err != 0)
    return std::unexpected(Error{-err, fmt::format("cannot decommit guest-physical {}: it is not all RAM", r)});
  if (decommit_observer_) decommit_observer_(r);
  uint64_t released = 0;
  for (uint64_t at = r.start; at < r.end;) {
    const Region& region = **v->find(GuestAddr(at));
    const RegionPiece& piece = region.piece_at(GuestAddr(at));
    const uint64_t end = std::min(r.end, piece.guest.end);
    const FileOffset f = region.file_offset(GuestAddr(at));
    if (region.anonymous()) {
      if (madvise(region.host(GuestAddr(at)), end - at, MADV_DONTNEED) != 0)
        return sys_fail(fmt::format("cannot decommit guest-physical {}", r), "madvise(MADV_DONTNEED)", errno);
      released += end - at;
    } else {
      // Whole file pages only (hugetlb's are 2 MiB): round inward.
      const uint64_t page = file_.page_size();
      const uint64_t lo = (f.value + page - 1) / page * page, hi = (f.value + (end - at)) / page * page;
      if (lo < hi) {
        if (auto s = file_.decommit(FileRange(lo, hi)); !s)
          return std::unexpected(s.error().context(fmt::format("cannot decommit guest-physical {}", r)));
        released += hi - lo;
      }
    }
    at = end;
  }
  return released;
}

std::vector<FileRange> GuestMemory::file_ranges() const {
  std::vector<FileRange> out;
  if (ram_->anonymous()) return out;
  for (const RegionPiece& p : ram_->pieces()) out.push_back(p.file_range());
  return out;
}

Result<uint64_t> GuestMemory::resident_bytes() const {
  // The file counts over its data extents only: the cost follows what the
  // guest touched, not its size (a mincore of all of a 32 GiB guest took
  // ~0.5 s).
  if (ram_->anonymous()) return anon_resident_bytes();
  uint64_t bytes = 0;
  for (const FileRange& f : file_ranges()) {
    auto r = file_.resident_in(f);
    if (!r) return std::unexpected(r.error().context("cannot count resident guest RAM"));
    bytes += *r;
  }
  return bytes;
}

Result<uint64_t> GuestMemory::committed_bytes() const {
  if (ram_->anonymous()) return anon_resident_bytes();
  if (auto s = file_.update_usage(); !s) return std::unexpected(s.error().context("cannot count committed guest RAM"));
  uint64_t bytes = 0;
  for (const FileRange& f : file_ranges()) bytes += file_.committed_in(f);
  return bytes;
}

Result<uint64_t> GuestMemory::anon_resident_bytes() const {
  constexpr uint64_t kWindow = 64ull << 20;  // 16384 pages per mincore
  std::vector<unsigned char> vec(kWindow / 4096);
  uint64_t bytes = 0;
  uint8_t* base = ram_->host(GuestAddr(0));
  for (uint64_t at = 0; at < ram_size(); at += kWindow) {
    const uint64_t n = std::min(kWindow, ram_size() - at);
    if (mincore(base + at, n, vec.data()) != 0)
      return sys_fail("cannot count resident anonymous guest RAM", "mincore", errno);
    for (uint64_t i = 0; i < n / 4096; i++) bytes += (vec[i] & 1) ? 4096 : 0;
  }
  return bytes;
}

}  // namespace kvmem
