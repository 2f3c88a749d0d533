#include <cstring>
#include <vector>

#include <catch2/catch.hpp>

#include "guest/abi.h"
#include "guest/layout.h"
#include "guest/boot.h"

using namespace kvmem;

namespace {
uint64_t word(const std::vector<uint8_t>& ram, uint64_t gpa) {
  uint64_t w;
  std::memcpy(&w, ram.data() + gpa, 8);
  return w;
}
}  // namespace

TEST_CASE("boot page tables identity-map all of RAM with user 2 MiB pages", "[guest]") {
  std::vector<uint8_t> ram(abi::kBootAreaEnd, 0xcc);
  REQUIRE(guest::write_boot_area(ram, 8 << 20, guest::PageSize::k2M));
  const uint64_t pml4 = guest::layout::kPageTablesAddr;
  CHECK(word(ram, pml4) == (pml4 + 0x1000 | 7));
  CHECK(word(ram, pml4 + 8) == 0);
  const uint64_t pdpt = pml4 + 0x1000, pd = pml4 + 0x2000;
  CHECK(word(ram, pdpt) == (pd | 7));
  // The first 2 MiB are 4 KiB pages (so the boot area can be supervisor-only).
  CHECK(word(ram, pd) == (guest::layout::kLowPtAddr | 7));
  for (uint64_t i = 1; i < 4; i++) CHECK(word(ram, pd + i * 8) == ((i << 21) | 0x87));
  CHECK(word(ram, pd + 4 * 8) == 0);  // nothing past RAM is mapped
}

TEST_CASE("boot page tables with 1 GiB pages use PDPT leaves", "[guest]") {
  std::vector<uint8_t> ram(abi::kBootAreaEnd);
  REQUIRE(guest::write_boot_area(ram, 2ull << 30, guest::PageSize::k1G));
  const uint64_t pdpt = guest::layout::kPageTablesAddr + 0x1000;
  // The first GiB is a page directory, whose first entry is the 4 KiB table.
  CHECK(word(ram, pdpt) == (guest::layout::kPdsAddr | 7));
  CHECK(word(ram, guest::layout::kPdsAddr) == (guest::layout::kLowPtAddr | 7));
  CHECK(word(ram, guest::layout::kPdsAddr + 8) == ((1ull << 21) | 0x87));
  CHECK(word(ram, pdpt + 8) == ((1ull << 30) | 0x87));
  CHECK(word(ram, pdpt + 16) == 0);
}

TEST_CASE("the GDT has Linux's user selectors and the TSS opens the hypercall port", "[guest]") {
  std::vector<uint8_t> ram(abi::kBootAreaEnd);
  REQUIRE(guest::write_boot_area(ram, 2 << 20, guest::PageSize::k2M));
  CHECK(word(ram, guest::layout::kGdtAddr + (guest::layout::kUserCs >> 3) * 8) == 0x00affb000000ffffull);
  CHECK(word(ram, guest::layout::kGdtAddr + (guest::layout::kUserDs >> 3) * 8) == 0x00cff3000000ffffull);
  // I/O bitmap: port kHypercallPort's bit is clear (allowed).
  uint16_t iomap;
  std::memcpy(&iomap, ram.data() + guest::layout::tss_addr(0) + 0x66, 2);
  const uint8_t bits = ram[guest::layout::tss_addr(0) + iomap + abi::kHypercallPort / 8];
  CHECK((bits >> (abi::kHypercallPort % 8) & 1) == 0);
  // Every IDT gate is present and leads into the stub page.
  for (unsigned v = 0; v < 256; v++) {
    uint64_t lo = word(ram, guest::layout::kIdtAddr + v * 16);
    uint64_t target = (lo & 0xffff) | ((lo >> 48) << 16);
    CHECK(((lo >> 40) & 0xff) == 0x8e);
    CHECK(target >= guest::layout::kStubsAddr);
    CHECK(target < guest::layout::kStubsEnd);
  }
}

TEST_CASE("long-mode sregs start the guest at CPL3", "[guest]") {
  kvm_sregs s{};
  guest::long_mode_sregs(s);
  CHECK(s.cs.selector == guest::layout::kUserCs);
  CHECK(s.cs.dpl == 3);
  CHECK(s.cs.l == 1);
  CHECK(s.efer == 0x500);
  CHECK(s.cr3 == guest::layout::kPageTablesAddr);
  kvm_regs r = guest::user_regs(0x50000);
  CHECK(r.rip == 0x50000);
  CHECK((r.rflags >> 12 & 3) == 3);  // IOPL 3
}

TEST_CASE("the boot area is mapped with each area's access: ring-0 pieces supervisor-only", "[guest][layout]") {
  std::vector<uint8_t> ram(2 << 20);
  REQUIRE(guest::write_boot_area(ram, 8 << 20, guest::PageSize::k2M));
  auto pte = [&](uint64_t gpa) { return word(ram, guest::layout::kLowPtAddr + (gpa >> 12) * 8); };
  CHECK(pte(0) == 0);  // the null page is not mapped
  for (uint64_t gpa : {guest::layout::kGdtAddr, guest::layout::kIdtAddr, guest::layout::kStubsAddr,
                       guest::layout::kPml4Addr, guest::layout::kLowPtAddr, guest::layout::tss_addr(0)})
    CHECK(pte(gpa) == (gpa | 0x3));  // present, writable, no U
  CHECK(pte(guest::layout::kProgramAddr) == (guest::layout::kProgramAddr | 0x5));  // user, read-only
  for (uint64_t gpa : {guest::layout::kReportListAddr, guest::layout::kFreeRingAddr, guest::layout::kUserStacksAddr,
                       abi::kBootAreaEnd, uint64_t{0x1ff000}})
    CHECK(pte(gpa) == (gpa | 0x7));
}
