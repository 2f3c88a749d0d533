#include "vmm/memory/region.h"

#include <algorithm>
#include <cerrno>

#include "base/check.h"

namespace kvmem {

const char* region_kind_name(RegionKind kind) {
  switch (kind) {
    case RegionKind::kRam: return "RAM";
    case RegionKind::kFileWindow: return "file window";
  }
  return "?";
}

Region::Region(MemoryFile& file, RegionKind kind, MemAccess access, std::vector<RegionPiece> pieces,
               std::vector<FileRange> refs)
    : file_(file), kind_(kind), access_(access), pieces_(std::move(pieces)), refs_(std::move(refs)) {
  KVMEM_CHECK(!pieces_.empty(), "a {} region without pieces", region_kind_name(kind));
  for (size_t i = 0; i < pieces_.size(); i++) {
    const GuestRange& g = pieces_[i].guest;
    KVMEM_CHECK(!g.empty() && g.is_page_aligned() && pieces_[i].file.is_page_aligned(),
                "region piece {} at file {}", g, pieces_[i].file);
    KVMEM_CHECK(i == 0 || pieces_[i - 1].guest.end == g.start, "region pieces {} and {} do not touch",
                pieces_[i - 1].guest, g);
  }
  guest_ = GuestRange(pieces_.front().guest.start, pieces_.back().guest.end);
}

Region::Region(MemoryFile& file, std::shared_ptr<const Mapping> anon)
    : file_(file), kind_(RegionKind::kRam), access_(MemAccess::kReadWrite), anon_(std::move(anon)) {
  KVMEM_CHECK(anon_ && anon_->size() > 0 && anon_->size() % 4096 == 0, "anonymous RAM without memory");
  guest_ = GuestRange(0, anon_->size());
  pieces_.push_back(RegionPiece{guest_, FileOffset(0)});
}

Region::~Region() {
  for (const FileRange& r : refs_) file_.dec_ref(r);
}

const RegionPiece& Region::piece_at(GuestAddr a) const {
  KVMEM_CHECK(guest_.contains(a.value), "guest-physical {} is not in region {}", a, guest_);
  auto it = std::upper_bound(pieces_.begin(), pieces_.end(), a.value,
                             [](uint64_t x, const RegionPiece& p) { return x < p.guest.start; });
  return *(it - 1);  // pieces touch, so a's piece starts at or before it
}

FileOffset Region::file_offset(GuestAddr a) const {
  const RegionPiece& p = piece_at(a);
  return p.file + (a.value - p.guest.start);
}

RegionMap::RegionMap(std::vector<std::shared_ptr<const Region>> regions) : regions_(std::move(regions)) {
  for (size_t i = 1; i < regions_.size(); i++)
    KVMEM_CHECK(regions_[i - 1]->guest().end <= regions_[i]->guest().start, "regions {} and {} overlap",
                regions_[i - 1]->guest(), regions_[i]->guest());
}

const std::shared_ptr<const Region>* RegionMap::find(GuestAddr a) const {
  auto it = std::upper_bound(regions_.begin(), regions_.end(), a.value,
                             [](uint64_t x, const std::shared_ptr<const Region>& r) { return x < r->guest().start; });
  if (it == regions_.begin()) return nullptr;
  --it;
  return (*it)->guest().contains(a.value) ? &*it : nullptr;
}

bool RegionMap::free(GuestRange r) const {
  for (const auto& region : regions_)
    if (region->guest().overlaps(r)) return false;
  return true;
}

RegionMap RegionMap::with(std::shared_ptr<const Region> r) const {
  KVMEM_CHECK(free(r->guest()), "region {} overlaps the map", r->guest());
  std::vector<std::shared_ptr<const Region>> out = regions_;
  auto at = std::upper_bound(out.begin(), out.end(), r->guest().start,
                             [](uint64_t x, const std::shared_ptr<const Region>& o) { return x < o->guest().start; });
  out.insert(at, std::move(r));
  return RegionMap(std::move(out));
}

std::optional<RegionMap> RegionMap::without(GuestRange guest) const {
  std::vector<std::shared_ptr<const Region>> out;
  out.reserve(regions_.size());
  bool found = false;
  for (const auto& r : regions_) {
    if (r->guest() == guest) {
      found = true;
      continue;
    }
    out.push_back(r);
  }
  if (!found) return std::nullopt;
  return RegionMap(std::move(out));
}

bool RegionMap::contains(GuestRange r) const {
  if (!r.well_formed()) return false;
  if (r.empty()) return find(r.start_addr()) || (r.start > 0 && find(GuestAddr(r.start - 1)));
  return reportable(r) != -EFAULT;
}

int RegionMap::reportable(GuestRange r) const {
  if (!r.well_formed() || r.empty()) return -EFAULT;
  // Walk the regions r crosses; they must touch each other.
  int status = 0;
  for (uint64_t at = r.start; at < r.end;) {
    const std::shared_ptr<const Region>* region = find(GuestAddr(at));
    if (!region) return -EFAULT;
    if (!(*region)->reportable()) status = -EPERM;
    at = std::min(r.end, (*region)->guest().end);
  }
  return status;
}

std::optional<FileOffset> RegionMap::translate(GuestAddr a) const {
  const std::shared_ptr<const Region>* region = find(a);
  if (!region) return std::nullopt;
  return (*region)->file_offset(a);
}

std::string RegionMap::read(GuestRange r) const {
  KVMEM_CHECK(contains(r), "read of {}, which is not all guest memory", r);
  std::string out;
  out.reserve(r.length());
  for (uint64_t at = r.start; at < r.end;) {
    const Region& region = **find(GuestAddr(at));
    const RegionPiece& piece = region.piece_at(GuestAddr(at));
    const uint64_t n = std::min(r.end, piece.guest.end) - at;
    out.append(reinterpret_cast<const char*>(region.host(GuestAddr(at))), n);
    at += n;
  }
  return out;
}

HostSpan RegionMap::host_span(GuestRange r) const {
  if (!r.well_formed() || r.empty()) return {};
  const std::shared_ptr<const Region>* region = find(r.start_addr());
  if (!region || (*region)->access() != MemAccess::kReadWrite) return {};
  const RegionPiece& piece = (*region)->piece_at(r.start_addr());
  if (!piece.guest.is_superset_of(r)) return {};
  return HostSpan({(*region)->host(r.start_addr()), r.length()}, *region);
}

}  // namespace kvmem
