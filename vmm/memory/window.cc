#include "vmm/memory/window.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/check.h"

namespace kvmem {
namespace {

// Drops the references translations carry when they are not used.
void drop(MemoryFile& file, const std::vector<tmpfs::Translation>& ts) {
  for (const tmpfs::Translation& t : ts) file.dec_ref(t.file_range());
}

// The end of a file of `size` bytes rounded up to a page: where translations
// stop. A size is at most 2^63 - 1, so the rounding cannot overflow.
uint64_t page_end(uint64_t size) {
  uint64_t end = 0;
  return align_up(size, kPageSize, &end) ? end : tmpfs::kMaxFileSize;
}

}  // namespace

Result<std::unique_ptr<Window>> Window::create(GuestMemory& memory, std::shared_ptr<tmpfs::RegularFile> file,
                                               GuestAddr at, uint64_t offset, uint64_t length, bool writable) {
  const std::string what = fmt::format("cannot show file \"{}\" at guest-physical {}", file->name(), at);
  if (length == 0 || length % kPageSize || offset % kPageSize || !at.is_page_aligned())
    return fail("{}: offset {:#x} and length {:#x} must be page-aligned and the length non-zero", what, offset, length);
  if (at.value > UINT64_MAX - length || offset > UINT64_MAX - length)
    return fail("{}: a window of {:#x} bytes there wraps", what, length);
  // A file sealed against writes gets a read-only window, as mmap would give
  // it only a read-only shared mapping.
  const bool sealed = file->seals() & (tmpfs::kSealWrite | tmpfs::kSealFutureWrite);
  const bool rw = writable && !sealed;
  std::unique_ptr<Window> w(new Window(memory, file, GuestRange(at.value, at.value + length), offset,
                                       rw ? MemAccess::kReadWrite : MemAccess::kReadOnly, rw));
  const MappableRange range(offset, offset + length);
  if (auto s = file->add_mapping(w.get(), at.value, range, rw); !s) return std::unexpected(s.error().context(what));
  w->mapping_added_ = true;
  // What lies below the file's end now, in as few allocations as it takes.
  const MappableRange now(offset, std::clamp(page_end(file->size()), offset, offset + length));
  if (!now.empty()) {
    tmpfs::TranslateResult tr = file->translate(now, now, w->translate_access());
    if (!tr.ok()) {
      drop(file->memory(), tr.translations);
      return fail("{}: {}", what, tr.message);
    }
    std::lock_guard lock(w->mu_);
    if (auto s = w->show_locked(std::move(tr.translations)); !s) return std::unexpected(s.error().context(what));
  }
  return w;
}

Window::~Window() {
  // No invalidate() can come once the mapping is gone; then the regions go.
  if (mapping_added_)
    file_->remove_mapping(this, guest_.start, MappableRange(offset_, offset_ + guest_.length()), writable_mapping_);
  std::lock_guard lock(mu_);
  for (const GuestRange& r : regions_) (void)memory_.remove(r);  // a slot that stays keeps its memory held
}

std::string Window::describe() const {
  return fmt::format("the {} window {} onto file \"{}\"", access_ == MemAccess::kReadOnly ? "read-only" : "writable",
                     guest_, file_->name());
}

std::vector<GuestRange> Window::mapped() const {
  std::lock_guard lock(mu_);
  return regions_;
}

Status Window::show_locked(std::vector<tmpfs::Translation> ts) {
  KVMEM_CHECK(!ts.empty(), "nothing translated for {}", describe());
  // The translations are contiguous in the file; pieces merge where the
  // memory-file ranges touch too.
  std::vector<RegionPiece> pieces;
  std::vector<FileRange> refs;
  for (const tmpfs::Translation& t : ts) {
    const GuestRange g = guest_range_of(t.source);
    refs.push_back(t.file_range());
    if (!pieces.empty() && pieces.back().file + pieces.back().guest.length() == t.offset)
      pieces.back().guest.end = g.end;
    else
      pieces.push_back(RegionPiece{g, t.offset});
  }
  const GuestRange guest(pieces.front().guest.start, pieces.back().guest.end);
  // add_region takes the references over, whatever happens.
  KVMEM_TRY(memory_.add_region(RegionKind::kFileWindow, access_, std::move(pieces), std::move(refs)));
  regions_.insert(std::upper_bound(regions_.begin(), regions_.end(), guest,
                                   [](const GuestRange& x, const GuestRange& y) { return x.start < y.start; }),
                  guest);
  return {};
}

tmpfs::Access Window::translate_access() const {
  return access_ == MemAccess::kReadWrite ? tmpfs::Access::kReadWrite : tmpfs::Access::kRead;
}

void Window::invalidate(uint64_t addr, MappableRange range) {
  const GuestRange hole(addr, addr + range.length());
  std::lock_guard lock(mu_);
  generation_++;
  std::vector<GuestRange> next;
  for (const GuestRange& r : regions_) {
    if (!r.overlaps(hole)) {
      next.push_back(r);
      continue;
    }
    if (auto s = memory_.cut(r, hole); !s && broken_.empty()) broken_ = s.error().message;
    const GuestRange h = r.intersect(hole);
    if (r.start < h.start) next.push_back(GuestRange(r.start, h.start));
    if (h.end < r.end) next.push_back(GuestRange(h.end, r.end));
  }
  regions_ = std::move(next);
}

Window::Fault Window::fault(GuestAddr a, bool write) {
  KVMEM_CHECK(guest_.contains(a.value), "{} is not in {}", a, describe());
  const char* verb = write ? "wrote" : "read";
  if (write && access_ == MemAccess::kReadOnly)
    return Fault{false, false, fmt::format("guest wrote to guest-physical {} in {}", a, describe())};
  const GuestRange page(align_down(a.value, kPageSize), align_down(a.value, kPageSize) + kPageSize);
  for (int attempt = 0; attempt < 8; attempt++) {
    std::unique_lock lock(mu_);
    if (!broken_.empty()) return Fault{false, true, fmt::format("{} could not be cut: {}", describe(), broken_)};
    // Another vCPU may have mapped it meanwhile.
    if (std::any_of(regions_.begin(), regions_.end(), [&](const GuestRange& r) { return r.contains(a.value); }))
      return Fault{true, false, {}};
    const uint64_t size = file_->size();
    const MappableRange want = file_range_of(page);
    if (want.start >= size)
      return Fault{false, false,
                   fmt::format("guest {} guest-physical {}, beyond the end of file \"{}\" (size {:#x}), in {}", verb, a,
                               file_->name(), size, describe())};
    // As much of the unmapped run around the page as lies below the end.
    GuestRange run = guest_;
    for (const GuestRange& r : regions_) {
      if (r.end <= page.start) run.start = std::max(run.start, r.end);
      if (r.start >= page.end) run.end = std::min(run.end, r.start);
    }
    MappableRange optional = file_range_of(run);
    optional.end = std::min(optional.end, page_end(size));
    const uint64_t gen = generation_;
    // Translate without mu_ (the file may be invalidating under its lock,
    // which then waits for mu_), and start again if it did meanwhile.
    lock.unlock();
    tmpfs::TranslateResult tr = file_->translate(want, optional, translate_access());
    lock.lock();
    if (generation_ != gen) {
      drop(file_->memory(), tr.translations);
      continue;
    }
    if (tr.error == tmpfs::TranslateError::kNoMemory || tr.translations.empty()) {
      drop(file_->memory(), tr.translations);
      if (tr.error == tmpfs::TranslateError::kBeyondEof) continue;  // it shrank: look again
      return Fault{false, true, fmt::format("cannot map guest-physical {} of {}: {}", a, describe(), tr.message)};
    }
    if (auto s = show_locked(std::move(tr.translations)); !s)
      return Fault{false, true, fmt::format("cannot map guest-physical {} of {}: {}", a, describe(), s.error().message)};
    return Fault{true, false, {}};
  }
  return Fault{false, true, fmt::format("guest-physical {} of {} kept changing under the guest's access", a, describe())};
}

Window* Windows::find(GuestAddr a) const {
  for (const auto& w : windows_)
    if (w->guest().contains(a.value)) return w.get();
  return nullptr;
}

Windows::Mmio Windows::mmio(GuestAddr a, std::span<uint8_t> data, bool write) {
  Window* w = find(a);
  if (!w) return {};
  if (data.empty() || data.size() > 8 || a.value % kPageSize + data.size() > kPageSize)
    return Mmio{Mmio::Action::kFail, false,
                fmt::format("guest accessed {} bytes at guest-physical {} in {}, across a page", data.size(), a,
                            w->describe())};
  // The page is mapped after fault(); KVM completes the instruction with
  // what is done here, and the guest's next access goes straight to memory.
  // The file may change again in between: then look again.
  const GuestRange r(a.value, a.value + data.size());
  for (int attempt = 0; attempt < 8; attempt++) {
    Window::Fault f = w->fault(a, write);
    if (!f.mapped) return Mmio{Mmio::Action::kFail, f.host, std::move(f.message)};
    GuestMemory::View view = w->memory().view();
    if (write) {
      HostSpan span = view->host_span(r);
      if (span.empty()) continue;
      std::memcpy(span.data(), data.data(), data.size());
      return Mmio{Mmio::Action::kDone, false, {}};
    }
    if (!view->contains(r)) continue;
    const std::string bytes = view->read(r);
    std::memcpy(data.data(), bytes.data(), data.size());
    return Mmio{Mmio::Action::kDone, false, {}};
  }
  return Mmio{Mmio::Action::kFail, true, fmt::format("guest-physical {} of {} kept changing under the guest's access", a, w->describe())};
}

}  // namespace kvmem
