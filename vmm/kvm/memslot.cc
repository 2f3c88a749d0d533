#include "vmm/kvm/memslot.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <utility>

#include "base/check.h"

namespace kvmem {
namespace {

Status set_region(int vm_fd, uint32_t slot, uint32_t flags, GuestRange guest, uint64_t size, void* host) {
  kvm_userspace_memory_region region{};
  region.slot = slot;
  region.flags = flags;
  region.guest_phys_addr = guest.start;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<uint64_t>(host);
  if (::ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
    return sys_fail(fmt::format("cannot {} memory slot {} for guest-physical {}", size ? "set" : "delete", slot, guest),
                    "KVM_SET_USER_MEMORY_REGION", errno);
  return {};
}

}  // namespace

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

Memslot::Memslot(Memslot&& o) noexcept
    : vm_(std::move(o.vm_)), slot_(o.slot_), guest_(o.guest_), access_(o.access_), live_(std::exchange(o.live_, false)) {}

Memslot& Memslot::operator=(Memslot&& o) noexcept {
  if (this != &o) {
    (void)remove();
    vm_ = std::move(o.vm_);
    slot_ = o.slot_;
    guest_ = o.guest_;
    access_ = o.access_;
    live_ = std::exchange(o.live_, false);
  }
  return *this;
}

Status Memslot::remove() {
  if (!live_) return {};
  // The VM gone means the kernel dropped the slot with it (memslot.h, "Teardown order").
  std::shared_ptr<kvm_detail::VmShared> vm = vm_.lock();
  if (vm) {
    std::lock_guard lock(vm->mu);
    if (auto s = set_region(vm->fd.get(), slot_, 0, guest_, 0, nullptr); !s) return s;  // still live: KVM has it
    vm->numbers.release(slot_);
  }
  live_ = false;
  vm_.reset();
  return {};
}

Result<Memslot> VmSlots::add(GuestRange guest, void* host, MemAccess access) const {
  KVMEM_CHECK(guest.well_formed() && !guest.empty() && guest.is_page_aligned() &&
                  reinterpret_cast<uintptr_t>(host) % kPageSize == 0,
              "memory slot for guest-physical {} at host {}", guest, host);
  std::shared_ptr<kvm_detail::VmShared> vm = vm_.lock();
  if (!vm) return fail("cannot add a memory slot for guest-physical {}: the KVM VM is gone", guest);
  if (access == MemAccess::kReadOnly && !vm->readonly_mem)
    return fail("cannot map guest-physical {} read-only: this host's KVM lacks KVM_CAP_READONLY_MEM", guest);
  std::lock_guard lock(vm->mu);
  auto slot = vm->numbers.acquire();
  if (!slot) return std::unexpected(slot.error().context(fmt::format("cannot add a memory slot for guest-physical {}", guest)));
  const uint32_t flags = access == MemAccess::kReadOnly ? KVM_MEM_READONLY : 0;
  if (auto s = set_region(vm->fd.get(), *slot, flags, guest, guest.length(), host); !s) {
    vm->numbers.release(*slot);
    return std::unexpected(s.error());
  }
  return Memslot(vm_, *slot, guest, access);
}

uint32_t VmSlots::in_use() const {
  std::shared_ptr<kvm_detail::VmShared> vm = vm_.lock();
  if (!vm) return 0;
  std::lock_guard lock(vm->mu);
  return vm->numbers.in_use();
}

bool VmSlots::readonly_supported() const {
  std::shared_ptr<kvm_detail::VmShared> vm = vm_.lock();
  return vm && vm->readonly_mem;
}

}  // namespace kvmem
