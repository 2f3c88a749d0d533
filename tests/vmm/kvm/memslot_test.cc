// Memory slots as RAII registrations, against the real KVM: KVM refuses a
// slot that overlaps another (EEXIST), which tells whether a slot is there.
#include <sys/mman.h>

#include <cerrno>
#include <optional>
#include <utility>

#include <catch2/catch.hpp>

#include "tests/support.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/memslot.h"

using namespace kvmem;

namespace {

constexpr uint64_t kLen = 2 << 20;

// Anonymous host memory for slots to point at.
struct HostMemory {
  HostMemory() {
    p = ::mmap(nullptr, 2 * kLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(p != MAP_FAILED);
  }
  ~HostMemory() { ::munmap(p, 2 * kLen); }
  void* p;
};

// True when KVM holds a slot over [0, kLen): a new one there is refused.
bool slot_at_zero(const KvmVm& vm, void* host) {
  auto probe = vm.slots().add(GuestRange(0, kLen), host, MemAccess::kReadWrite);
  if (probe) return false;
  INFO(probe.error().message);
  CHECK(probe.error().code == EEXIST);
  return true;
}

}  // namespace

TEST_CASE("memory slot numbers are the lowest free ones", "[free]") {
  SlotAllocator slots(4);
  CHECK(*slots.acquire() == 0);
  CHECK(*slots.acquire() == 1);
  CHECK(*slots.acquire() == 2);
  slots.release(1);
  CHECK(*slots.acquire() == 1);
  CHECK(*slots.acquire() == 3);
  auto full = slots.acquire();
  REQUIRE_FALSE(full);
  CHECK(full.error().message == "all 4 KVM memory slots are in use");
  CHECK(slots.in_use() == 4);
}

TEST_CASE("a memslot is deleted when it goes, and its number is reused", "[kvm][memslot]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  auto vm = kvm->create_vm();
  REQUIRE(vm);
  HostMemory host;
  VmSlots slots = vm->slots();
  {
    auto a = slots.add(GuestRange(0, kLen), host.p, MemAccess::kReadWrite);
    REQUIRE(a);
    CHECK(a->slot() == 0);
    CHECK(slots.in_use() == 1);
    CHECK(slot_at_zero(*vm, host.p));
    // A move hands the registration over: the moved-from one deletes nothing.
    Memslot b = std::move(*a);
    CHECK(slot_at_zero(*vm, host.p));
    CHECK(slots.in_use() == 1);
  }
  CHECK(slots.in_use() == 0);
  CHECK_FALSE(slot_at_zero(*vm, host.p));  // the probe itself came and went
  auto c = slots.add(GuestRange(kLen, 2 * kLen), static_cast<uint8_t*>(host.p) + kLen, MemAccess::kReadWrite);
  REQUIRE(c);
  CHECK(c->slot() == 0);
  REQUIRE(c->remove());
  CHECK(c->remove());  // twice is nothing
  CHECK(slots.in_use() == 0);
}

TEST_CASE("a failed slot ioctl names the call and leaves no number taken", "[kvm][memslot]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  auto vm = kvm->create_vm();
  REQUIRE(vm);
  HostMemory host;
  auto a = vm->slots().add(GuestRange(0, kLen), host.p, MemAccess::kReadWrite);
  REQUIRE(a);
  auto overlap = vm->slots().add(GuestRange(kLen / 2, kLen + kLen / 2), host.p, MemAccess::kReadWrite);
  REQUIRE_FALSE(overlap);
  CHECK(overlap.error().code == EEXIST);
  CHECK(overlap.error().message.find("cannot set memory slot 1 for guest-physical [0x100000, 0x300000): "
                                     "KVM_SET_USER_MEMORY_REGION: EEXIST") == 0);
  CHECK(vm->slots().in_use() == 1);
}

TEST_CASE("a memslot outliving its VM deletes nothing, not even on a VM that reuses the fd number",
          "[kvm][memslot]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  HostMemory host;
  std::optional<KvmVm> first(std::move(*kvm->create_vm()));
  const int first_fd = first->fd();
  auto old_slot = first->slots().add(GuestRange(0, kLen), host.p, MemAccess::kReadWrite);
  REQUIRE(old_slot);
  VmSlots old_slots = first->slots();
  first.reset();  // the VM goes first, as in Vm's teardown
  CHECK(old_slots.in_use() == 0);
  auto late = old_slots.add(GuestRange(0, kLen), host.p, MemAccess::kReadWrite);
  REQUIRE_FALSE(late);
  CHECK(late.error().message == "cannot add a memory slot for guest-physical [0x0, 0x200000): the KVM VM is gone");

  auto second = kvm->create_vm();
  REQUIRE(second);
  CHECK(second->fd() == first_fd);  // the lowest free fd: the hazard is real
  auto mine = second->slots().add(GuestRange(0, kLen), host.p, MemAccess::kReadWrite);
  REQUIRE(mine);
  CHECK(mine->slot() == old_slot->slot());
  REQUIRE(old_slot->remove());  // quietly nothing
  CHECK(slot_at_zero(*second, host.p));  // the second VM's slot is still there
}

TEST_CASE("read-only slots use KVM_MEM_READONLY where KVM offers it and are refused by name where not",
          "[kvm][memslot]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  auto vm = kvm->create_vm();
  REQUIRE(vm);
  HostMemory host;
  const bool offered = vm->check_extension(KVM_CAP_READONLY_MEM) > 0;
  CHECK(vm->slots().readonly_supported() == offered);
  auto ro = vm->slots().add(GuestRange(0, kLen), host.p, MemAccess::kReadOnly);
  if (offered) {
    REQUIRE(ro);
    CHECK(ro->access() == MemAccess::kReadOnly);
    CHECK(slot_at_zero(*vm, host.p));
  } else {
    REQUIRE_FALSE(ro);
    CHECK(ro.error().message ==
          "cannot map guest-physical [0x0, 0x200000) read-only: this host's KVM lacks KVM_CAP_READONLY_MEM");
    CHECK(vm->slots().in_use() == 0);
  }
}
