// GuestMemory::add_region and cut: a window made of several pieces, and a
// hole taken out of it (what a truncate or a punched hole of a mapped file
// does), with and without KVM behind the map.
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
constexpr uint64_t kAt = 16 * kMiB;

struct Setup {
  std::unique_ptr<MemoryFile> file;
  std::unique_ptr<GuestMemory> memory;
  FileRange a, b;  // two allocations of 2 MiB, apart in the file: two pieces
};

Setup make_setup() {
  MemoryFileOptions o;
  o.reservation = 1ull << 32;
  auto file = MemoryFile::create(o);
  REQUIRE(file);
  auto memory = GuestMemory::create(**file, 8 * kMiB, 2 * kMiB);
  REQUIRE(memory);
  auto a = (*file)->allocate(2 * kMiB, UsageKind::Tmpfs);
  auto gap = (*file)->allocate(2 * kMiB, UsageKind::Tmpfs);  // keeps a and b apart
  auto b = (*file)->allocate(2 * kMiB, UsageKind::Tmpfs);
  REQUIRE((a && gap && b));
  (*file)->dec_ref(*gap);
  std::memset((*file)->map_internal(*a)->data(), 0xaa, 2 * kMiB);
  std::memset((*file)->map_internal(*b)->data(), 0xbb, 2 * kMiB);
  return {std::move(*file), std::move(*memory), *a, *b};
}

// Shows a then b at kAt, handing the region one reference on each.
Status show(Setup& s) {
  s.file->inc_ref(s.a);
  s.file->inc_ref(s.b);
  return s.memory->add_region(RegionKind::kFileWindow, MemAccess::kReadWrite,
                              {{GuestRange(kAt, kAt + 2 * kMiB), s.a.start_addr()},
                               {GuestRange(kAt + 2 * kMiB, kAt + 4 * kMiB), s.b.start_addr()}},
                              {s.a, s.b});
}

std::vector<GuestRange> regions(const GuestMemory& m) {
  std::vector<GuestRange> out;
  for (const auto& r : m.view()->regions()) out.push_back(r->guest());
  return out;
}

}  // namespace

TEST_CASE("a hole cut out of a window leaves what lies either side, each part still reading its pages",
          "[regions]") {
  Setup s = make_setup();
  GuestMemory& m = *s.memory;
  REQUIRE(show(s));
  // state: RAM [0, 8M), a window [16M, 20M) of two pieces
  REQUIRE(m.cut(GuestRange(kAt, kAt + 4 * kMiB), GuestRange(kAt + kMiB, kAt + 3 * kMiB)));
  CHECK(regions(m) == std::vector<GuestRange>{GuestRange(0, 8 * kMiB), GuestRange(kAt, kAt + kMiB),
                                              GuestRange(kAt + 3 * kMiB, kAt + 4 * kMiB)});
  CHECK(m.read(GuestRange(kAt + kMiB - 1, kAt + kMiB)) == "\xaa");
  CHECK(m.read(GuestRange(kAt + 3 * kMiB, kAt + 3 * kMiB + 1)) == "\xbb");
  CHECK_FALSE(m.contains(GuestRange(kAt + kMiB, kAt + kMiB + 1)));
  CHECK(m.translate(GuestAddr(kAt + 3 * kMiB)) == s.b.start_addr() + kMiB);
  // A tail cut (a truncate) and a cut that misses.
  REQUIRE(m.cut(GuestRange(kAt + 3 * kMiB, kAt + 4 * kMiB), GuestRange(kAt + 3 * kMiB + 4096, kAt + 8 * kMiB)));
  CHECK(regions(m).back() == GuestRange(kAt + 3 * kMiB, kAt + 3 * kMiB + 4096));
  REQUIRE(m.cut(GuestRange(kAt, kAt + kMiB), GuestRange(kAt + 2 * kMiB, kAt + 3 * kMiB)));
  CHECK(regions(m).size() == 3);
  // Cutting all of a region removes it.
  REQUIRE(m.cut(GuestRange(kAt, kAt + kMiB), GuestRange(0, kAt + 8 * kMiB)));
  CHECK(regions(m).size() == 2);
}

TEST_CASE("cut refuses RAM and ranges that are not exactly a region", "[regions]") {
  Setup s = make_setup();
  GuestMemory& m = *s.memory;
  REQUIRE(show(s));
  auto ram = m.cut(GuestRange(0, 8 * kMiB), GuestRange(0, 4096));
  REQUIRE_FALSE(ram);
  CHECK(ram.error().message == "cannot cut [0x0, 0x1000) out of RAM");
  auto inexact = m.cut(GuestRange(kAt, kAt + 2 * kMiB), GuestRange(kAt, kAt + 4096));
  REQUIRE_FALSE(inexact);
  CHECK(inexact.error().message.find("no region is exactly there") != std::string::npos);
  CHECK(regions(m).size() == 2);
}

TEST_CASE("add_region refuses malformed pieces and drops the references it was given", "[regions]") {
  Setup s = make_setup();
  GuestMemory& m = *s.memory;
  s.file->inc_ref(s.a);
  auto apart = m.add_region(RegionKind::kFileWindow, MemAccess::kReadWrite,
                            {{GuestRange(kAt, kAt + kMiB), s.a.start_addr()},
                             {GuestRange(kAt + 2 * kMiB, kAt + 3 * kMiB), s.a.start_addr() + kMiB}},
                            {s.a});
  REQUIRE_FALSE(apart);
  CHECK(apart.error().message.find("its pieces must touch") != std::string::npos);
  s.file->inc_ref(s.a);
  auto over_ram = m.add_region(RegionKind::kFileWindow, MemAccess::kReadWrite,
                               {{GuestRange(6 * kMiB, 8 * kMiB), s.a.start_addr()}}, {s.a});
  REQUIRE_FALSE(over_ram);
  CHECK(over_ram.error().message.find("overlaps a region already there") != std::string::npos);
  // Both references went back: ours is the last, and dropping it frees a.
  s.file->dec_ref(s.a);
  s.file->dec_ref(s.b);
  s.file->wait_for_reclaim();
  s.file->check_invariants();
  REQUIRE(s.file->update_usage());
  CHECK(s.file->usage().of(UsageKind::Tmpfs) == 0);
}

TEST_CASE("a cut deletes only the memory slots the hole touches and registers the parts that stay",
          "[kvm][regions]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  std::optional<KvmVm> vm(std::move(*kvm->create_vm()));
  Setup s = make_setup();
  GuestMemory& m = *s.memory;
  REQUIRE(m.register_with(*vm));
  REQUIRE(show(s));
  auto slots = m.memslots();
  REQUIRE(slots.size() == 3);  // RAM, then the window's two pieces
  const uint32_t b_slot = slots[2].slot;
  // A hole inside the first piece: its slot goes, two shorter ones replace
  // it, and the second piece keeps its slot (KVM zaps nothing of it).
  REQUIRE(m.cut(GuestRange(kAt, kAt + 4 * kMiB), GuestRange(kAt + kMiB, kAt + kMiB + 4096)));
  slots = m.memslots();
  REQUIRE(slots.size() == 4);
  CHECK(slots[1].guest == GuestRange(kAt, kAt + kMiB));
  CHECK(slots[2].guest == GuestRange(kAt + kMiB + 4096, kAt + 2 * kMiB));
  CHECK(slots[2].file.start == s.a.start + kMiB + 4096);
  CHECK(slots[3].guest == GuestRange(kAt + 2 * kMiB, kAt + 4 * kMiB));
  CHECK(slots[3].slot == b_slot);
  CHECK(vm->slots().in_use() == 4);
  // KVM has nothing in the hole any more: a slot there is accepted.
  auto probe = vm->slots().add(GuestRange(kAt + kMiB, kAt + kMiB + 4096), s.file->base() + s.a.start,
                               MemAccess::kReadWrite);
  CHECK(probe);
  s.file->dec_ref(s.a);
  s.file->dec_ref(s.b);
}
