// Windows: parts of tmpfs files (memory/tmpfs) shown in a guest's physical
// address space, shared with the host and with other VMs.
//
// Synopsis
//   Window::create(memory, file, at, offset, length, writable)
//       maps file offsets [offset, offset + length) at guest-physical `at`
//   Window::invalidate(addr, range)   the file dropping pages (MappingSpace)
//   Window::fault(a, write)           a guest access KVM could not serve
//   Windows                           a VM's windows; mmio() answers the
//                                     vCPU's MMIO exits that fall in one
//
// A window is a MappingSpace of its file (mappable.h): it adds a mapping,
// translates the file's pages below its end, and shows them to the guest as
// GuestMemory regions of kind kFileWindow (one memory slot per
// host-contiguous run; a fresh file's window is one allocation and so one
// slot). The regions hold references on what was translated, so the pages
// stay while the guest can reach them, even after an unlink.
//
// Access: read-only (KVM_MEM_READONLY) when not writable or when the file is
// sealed against writes (WRITE or FUTURE_WRITE) at creation; a guest write
// then exits as MMIO and stops the VM with a message naming the address,
// the window and the file.
//
// The file changes under the guest. A shrinking truncate (or a punched hole)
// calls invalidate() first: the window cuts the dropped range out of its
// regions (GuestMemory::cut deletes only the slots that range touches, so
// nothing else of the guest is zapped). A guest access there later exits as
// MMIO; fault() then either maps the page again (the file has data or a
// hole there: a hole is filled, as a memfd's shared mapping would) and the
// vCPU completes the access through host memory, or, past the file's end,
// stops the VM: "beyond the end of file F", with the address and the size.
// Never a hang, never a zap of every shadow page.
//
// Lock order: the file's mapping lock -> Window::mu_ -> GuestMemory::mu_.
// fault() never holds mu_ while it calls into the file (translate); it
// checks a generation count that invalidate() bumps and translates again
// when the file changed meanwhile.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "memory/range.h"
#include "memory/tmpfs/regular_file.h"
#include "vmm/memory/guest_memory.h"

namespace kvmem {

class Window final : public tmpfs::MappingSpace {
 public:
  // Errors: ranges unaligned, empty or wrapping; the file refusing the
  // mapping; the file's pages or a memory slot failing.
  static Result<std::unique_ptr<Window>> create(GuestMemory& memory, std::shared_ptr<tmpfs::RegularFile> file,
                                                GuestAddr at, uint64_t offset, uint64_t length, bool writable);
  Window(const Window&) = delete;
  Window& operator=(const Window&) = delete;
  // Removes the mapping, then the regions.
  ~Window() override;

  GuestRange guest() const { return guest_; }
  MemAccess access() const { return access_; }
  const tmpfs::RegularFile& file() const { return *file_; }
  GuestMemory& memory() const { return memory_; }
  // "the window [0x40000000, 0x40200000) onto file \"box\"".
  std::string describe() const;
  // The guest ranges mapped now, in order.
  std::vector<GuestRange> mapped() const;

  void invalidate(uint64_t addr, MappableRange range) override;

  struct Fault {
    bool mapped = false;  // true: the page is mapped now; complete the access
    bool host = false;    // the failure is the host's (memory), not the guest's
    std::string message;  // !mapped: why the VM must stop
  };
  // Precondition: guest().contains(a).
  Fault fault(GuestAddr a, bool write);

 private:
  Window(GuestMemory& memory, std::shared_ptr<tmpfs::RegularFile> file, GuestRange guest, uint64_t offset,
         MemAccess access, bool writable_mapping)
      : memory_(memory), file_(std::move(file)), guest_(guest), offset_(offset), access_(access),
        writable_mapping_(writable_mapping) {}

  // Shows translated pages as a region, taking over their references.
  Status show_locked(std::vector<tmpfs::Translation> ts);  // mu_ held
  tmpfs::Access translate_access() const;
  MappableRange file_range_of(GuestRange g) const {
    return MappableRange(offset_ + (g.start - guest_.start), offset_ + (g.end - guest_.start));
  }
  GuestRange guest_range_of(MappableRange m) const {
    return GuestRange(guest_.start + (m.start - offset_), guest_.start + (m.end - offset_));
  }

  GuestMemory& memory_;
  std::shared_ptr<tmpfs::RegularFile> file_;
  const GuestRange guest_;
  const uint64_t offset_;
  const MemAccess access_;
  const bool writable_mapping_;
  bool mapping_added_ = false;

  mutable std::mutex mu_;
  std::vector<GuestRange> regions_;  // protected by mu_: our regions in GuestMemory, sorted
  uint64_t generation_ = 0;          // protected by mu_: bumped by each invalidate()
  std::string broken_;               // protected by mu_: a cut that failed, reported at the next fault
};

// A VM's windows, by guest address. Fixed after the VM is made.
class Windows {
 public:
  void add(std::unique_ptr<Window> w) { windows_.push_back(std::move(w)); }
  const std::vector<std::unique_ptr<Window>>& all() const { return windows_; }
  // The window holding a, or null.
  Window* find(GuestAddr a) const;

  struct Mmio {
    enum class Action { kNotWindow, kDone, kFail } action = Action::kNotWindow;
    bool host = false;
    std::string message;
  };
  // A vCPU's MMIO exit at `a` of data.size() bytes (1..8): maps the page if
  // the window can and does the access through host memory (a read fills
  // `data`), or says why the VM must stop.
  Mmio mmio(GuestAddr a, std::span<uint8_t> data, bool write);
  void clear() { windows_.clear(); }

 private:
  std::vector<std::unique_ptr<Window>> windows_;
};

}  // namespace kvmem
