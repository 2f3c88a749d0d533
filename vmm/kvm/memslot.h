// KVM memory slots as owned registrations.
//
// Synopsis
//   SlotAllocator        lowest-free slot numbers, so a deleted slot's number is reused
//   VmSlots              a weak handle on one KVM VM's slot table (KvmVm::slots())
//     add(guest, host, access) -> Result<Memslot>   one KVM_SET_USER_MEMORY_REGION
//   Memslot              one registration: move-only; destroying it deletes the
//                        slot (KVM_SET_USER_MEMORY_REGION, size 0) and returns
//                        its number; remove() does the same and reports errors
//
// A read-only slot is registered with KVM_MEM_READONLY: the guest reads it,
// and a guest write exits to the VMM as MMIO. It needs KVM_CAP_READONLY_MEM;
// without it add() says so.
//
// Teardown order. A Memslot does not keep its VM alive: it holds a weak
// reference to the VM's fd and slot numbers. When the KvmVm goes first, its
// fd closes, the kernel drops every slot of the VM with it, and a Memslot
// destroyed afterwards has nothing left to delete: it does nothing, quietly,
// and never issues an ioctl on a closed fd number that another VM may have
// been given since. That is the order Vm uses (vCPUs, then the KVM VM, then
// GuestMemory, whose regions own the slots, then the RAM), and it is the
// cheaper one: deleting a slot of a live VM is an ioctl that waits for an
// SRCU grace period and zaps the slot's shadow pages, while the VM's end
// frees all of its slots at once. Slots are deleted one by one only when a
// region goes while its VM lives on.
//
// Lock order: VmShared::mu is taken inside the owner's lock (GuestMemory's
// writer mutex) and takes nothing itself but the ioctl.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "base/error.h"
#include "base/fd.h"
#include "memory/range.h"

namespace kvmem {

enum class MemAccess { kReadWrite, kReadOnly };

class SlotAllocator {
 public:
  explicit SlotAllocator(uint32_t limit) : limit_(limit) {}
  Result<uint32_t> acquire();
  void release(uint32_t slot);
  uint32_t in_use() const;
  uint32_t limit() const { return limit_; }

 private:
  uint32_t limit_;
  std::vector<bool> used_;
};

namespace kvm_detail {
// What a KvmVm and its Memslots share: the VM fd (closed when the last
// owner lets go: the KvmVm, or a Memslot in the middle of deleting itself).
struct VmShared {
  VmShared(Fd f, uint32_t slot_limit, bool readonly) : fd(std::move(f)), numbers(slot_limit), readonly_mem(readonly) {}
  Fd fd;
  std::mutex mu;          // orders slot ioctls with the numbers they use
  SlotAllocator numbers;  // protected by mu
  const bool readonly_mem;  // KVM_CAP_READONLY_MEM
};
}  // namespace kvm_detail

class Memslot {
 public:
  Memslot(Memslot&& o) noexcept;
  Memslot& operator=(Memslot&& o) noexcept;
  Memslot(const Memslot&) = delete;
  Memslot& operator=(const Memslot&) = delete;
  ~Memslot() { (void)remove(); }

  uint32_t slot() const { return slot_; }
  GuestRange guest() const { return guest_; }
  MemAccess access() const { return access_; }

  // Deletes the slot now (nothing when it is already gone, or when its VM
  // is). Errors: the ioctl's; the slot then stays registered (its number
  // taken, the destructor tries again), so its owner must keep the host
  // memory behind it.
  Status remove();

 private:
  friend class VmSlots;
  Memslot(std::weak_ptr<kvm_detail::VmShared> vm, uint32_t slot, GuestRange guest, MemAccess access)
      : vm_(std::move(vm)), slot_(slot), guest_(guest), access_(access), live_(true) {}

  std::weak_ptr<kvm_detail::VmShared> vm_;  // expired once the KVM VM is gone
  uint32_t slot_ = 0;
  GuestRange guest_;
  MemAccess access_ = MemAccess::kReadWrite;
  bool live_ = false;  // false once removed or moved from
};

class VmSlots {
 public:
  VmSlots() = default;

  // Registers guest-physical `guest` at host memory `host` (guest.length()
  // bytes, which must stay mapped while the slot lives).
  // Preconditions: guest is page-aligned and non-empty, host page-aligned.
  // Errors: the VM is gone; read-only slots unsupported; every slot number
  // in use; the ioctl's (EEXIST when guest overlaps another slot).
  Result<Memslot> add(GuestRange guest, void* host, MemAccess access) const;
  // Slot numbers in use; 0 once the VM is gone.
  uint32_t in_use() const;
  bool readonly_supported() const;

 private:
  friend class KvmVm;
  explicit VmSlots(std::weak_ptr<kvm_detail::VmShared> vm) : vm_(std::move(vm)) {}
  std::weak_ptr<kvm_detail::VmShared> vm_;
};

}  // namespace kvmem
