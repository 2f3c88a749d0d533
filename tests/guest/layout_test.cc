#include <cstring>
#include <vector>

#include <catch2/catch.hpp>

#include "guest/abi.h"
#include "guest/boot.h"
#include "guest/layout.h"

using namespace kvmem;
namespace layout = guest::layout;

TEST_CASE("the boot area's pieces are whole pages inside it and do not overlap", "[guest][layout]") {
  for (const auto& a : layout::kAreas) {
    INFO(a.name << " " << a.range);
    CHECK(a.range.well_formed());
    CHECK_FALSE(a.range.empty());
    CHECK(a.range.is_page_aligned());
    CHECK(a.range.end <= abi::kBootAreaEnd);
    for (const auto& b : layout::kAreas)
      if (&a != &b) CHECK_FALSE(a.range.overlaps(b.range));
  }
  CHECK(layout::access_at(0) == layout::Access::kNone);  // the null page
  CHECK(layout::access_at(layout::kIdtAddr) == layout::Access::kSupervisor);
  CHECK(layout::access_at(layout::kProgramAddr) == layout::Access::kUserRead);
  CHECK(layout::access_at(layout::kFreeRingAddr) == layout::Access::kUserWrite);
  CHECK(layout::access_at(layout::kBootInfoAddr) == layout::Access::kUserRead);
}

TEST_CASE("the boot info page is mapped for the program to read and not to write", "[guest][layout][wait]") {
  std::vector<uint8_t> ram(abi::kBootAreaEnd);
  REQUIRE(guest::write_boot_area(ram, 8 << 20, guest::PageSize::k2M, 1));
  uint64_t pte;
  std::memcpy(&pte, ram.data() + layout::kLowPtAddr + (layout::kBootInfoAddr >> 12) * 8, 8);
  CHECK(pte == (layout::kBootInfoAddr | 0x1 | 0x4));  // present, user, not writable
}

TEST_CASE("every vCPU the layout has room for gets its own TSS, ring-0 stack and user stack", "[guest][layout]") {
  for (unsigned v = 0; v < layout::kMaxVcpus; v++) {
    INFO("vcpu " << v);
    CHECK(layout::tss_addr(v) >= layout::kVcpuKernelAddr);
    CHECK(layout::kernel_stack_top(v) <= layout::kVcpuKernelEnd);
    CHECK(layout::kernel_stack_top(v) - layout::tss_addr(v) == layout::kVcpuKernelSize);
    CHECK(layout::user_stack_top(v) - layout::kUserStackSize >= layout::kUserStacksAddr);
    CHECK(layout::user_stack_top(v) <= layout::kUserStacksEnd);
    CHECK(layout::tss_selector(v) / 8u + 1 < layout::kGdtEntries);
    if (v > 0) {
      CHECK(layout::tss_addr(v) >= layout::kernel_stack_top(v - 1));
      CHECK(layout::user_stack_top(v) == layout::user_stack_top(v - 1) - layout::kUserStackSize);
    }
  }
  CHECK(layout::user_stack_top(0) == abi::kBootAreaEnd);
  CHECK(layout::kGdtEntries * 8 <= 0x1000);
}

TEST_CASE("a boot area for two vCPUs has a TSS for each, each on its own ring-0 stack", "[guest][layout]") {
  std::vector<uint8_t> ram(abi::kBootAreaEnd);
  REQUIRE(guest::write_boot_area(ram, 8 << 20, guest::PageSize::k2M, 2));
  for (unsigned v = 0; v < 2; v++) {
    uint64_t rsp0;
    std::memcpy(&rsp0, ram.data() + layout::tss_addr(v) + 4, 8);
    CHECK(rsp0 == layout::kernel_stack_top(v));
    uint64_t desc;
    std::memcpy(&desc, ram.data() + layout::kGdtAddr + layout::tss_selector(v), 8);
    const uint64_t base = ((desc >> 16) & 0xffffff) | (((desc >> 56) & 0xff) << 24);
    CHECK(base == layout::tss_addr(v));
    kvm_sregs s{};
    guest::long_mode_sregs(s, v);
    CHECK(s.tr.selector == layout::tss_selector(v));
    CHECK(s.tr.base == layout::tss_addr(v));
    CHECK(guest::user_regs(layout::kProgramAddr, v).rsp == layout::user_stack_top(v));
  }
  // A third vCPU was not asked for: its descriptor stays empty.
  uint64_t third;
  std::memcpy(&third, ram.data() + layout::kGdtAddr + layout::tss_selector(2), 8);
  CHECK(third == 0);
}
