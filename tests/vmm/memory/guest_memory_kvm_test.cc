// GuestMemory's regions registered with a real KVM VM: slots are made for
// a region all or none, and go with it.
#include <cerrno>
#include <cstring>
#include <optional>

#include <catch2/catch.hpp>

#include "tests/support.h"
#include "vmm/kvm/kvm.h"
#include "vmm/memory/guest_memory.h"

using namespace kvmem;

namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr GuestRange kWindow(16 * kMiB, 18 * kMiB);

std::unique_ptr<MemoryFile> make_file() {
  MemoryFileOptions o;
  o.reservation = 1ull << 32;
  auto file = MemoryFile::create(o);
  REQUIRE(file);
  return std::move(*file);
}

}  // namespace

TEST_CASE("a window's slots come and go with it; RAM's stay", "[kvm][regions]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  std::optional<KvmVm> vm(std::move(*kvm->create_vm()));
  auto file = make_file();
  auto memory = GuestMemory::create(*file, 8 * kMiB, 2 * kMiB);
  REQUIRE(memory);
  GuestMemory& m = **memory;
  REQUIRE(m.register_with(*vm));
  REQUIRE(m.memslots().size() == 1);
  CHECK(m.memslots()[0].guest == GuestRange(0, 8 * kMiB));
  auto pages = file->allocate(2 * kMiB, UsageKind::Tmpfs);
  REQUIRE(pages);

  REQUIRE(m.add_window(kWindow, *pages, MemAccess::kReadOnly));
  auto slots = m.memslots();
  REQUIRE(slots.size() == 2);
  CHECK(slots[1].slot == 1);
  CHECK(slots[1].guest == kWindow);
  CHECK(slots[1].file == *pages);
  CHECK(slots[1].access == MemAccess::kReadOnly);
  CHECK(vm->slots().in_use() == 2);
  REQUIRE(m.remove(kWindow));
  CHECK(m.memslots().size() == 1);
  CHECK(vm->slots().in_use() == 1);
  // KVM lets the range be used again: the slot is really gone.
  auto probe = vm->slots().add(kWindow, file->base() + pages->start, MemAccess::kReadWrite);
  CHECK(probe);

  // The KVM VM going first (Vm's teardown order) leaves nothing to delete.
  REQUIRE(m.add_window(GuestRange(32 * kMiB, 34 * kMiB), *pages, MemAccess::kReadWrite));
  vm.reset();
  CHECK(m.remove(GuestRange(32 * kMiB, 34 * kMiB)));
  file->dec_ref(*pages);
}

TEST_CASE("a window KVM refuses is not added and leaves no slot behind", "[kvm][regions]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  auto vm = kvm->create_vm();
  REQUIRE(vm);
  auto file = make_file();
  auto memory = GuestMemory::create(*file, 8 * kMiB, 2 * kMiB);
  REQUIRE(memory);
  REQUIRE((*memory)->register_with(*vm));
  auto pages = file->allocate(2 * kMiB, UsageKind::Tmpfs);
  REQUIRE(pages);
  auto blocker = vm->slots().add(GuestRange(kWindow.start + kMiB, kWindow.end + kMiB), file->base() + pages->start,
                                 MemAccess::kReadWrite);
  REQUIRE(blocker);
  auto r = (*memory)->add_window(kWindow, *pages, MemAccess::kReadWrite);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == EEXIST);
  CHECK(r.error().message.find("cannot register guest file window [0x1000000, 0x1200000): cannot set memory slot 2") == 0);
  CHECK_FALSE((*memory)->contains(kWindow));
  CHECK((*memory)->memslots().size() == 1);
  CHECK(vm->slots().in_use() == 2);  // RAM's and the blocker
  file->dec_ref(*pages);
}

TEST_CASE("RAM of two pieces is registered whole or not at all", "[kvm][regions]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  auto vm = kvm->create_vm();
  REQUIRE(vm);
  auto file = make_file();
  // A hole in the file splits the second VM's RAM into two pieces.
  auto a = GuestMemory::create(*file, 4 * kMiB, 2 * kMiB);
  REQUIRE(a);
  auto spacer = file->allocate(2 * kMiB, UsageKind::System);
  REQUIRE(spacer);
  a->reset();
  file->wait_for_reclaim();
  auto memory = GuestMemory::create(*file, 8 * kMiB, 2 * kMiB);
  REQUIRE(memory);
  REQUIRE((*memory)->file_ranges().size() == 2);
  GuestMemory& m = **memory;
  // KVM will refuse the second piece, [4M, 8M).
  std::optional<Memslot> blocker(std::move(*vm->slots().add(GuestRange(6 * kMiB, 8 * kMiB), file->base() + spacer->start,
                                                             MemAccess::kReadWrite)));
  auto r = m.register_with(*vm);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == EEXIST);
  CHECK(m.memslots().empty());
  CHECK(vm->slots().in_use() == 1);  // the first piece's slot went again
  blocker.reset();
  REQUIRE(m.register_with(*vm));
  CHECK(m.memslots().size() == 2);
  CHECK(vm->slots().in_use() == 2);
  file->dec_ref(*spacer);
}
