#include "guest/boot.h"

#include <asmjit/x86.h>

#include <algorithm>
#include <cstring>

#include "base/check.h"
#include "guest/abi.h"
#include "guest/layout.h"

namespace kvmem::guest {
namespace {

using namespace kvmem::abi;
using namespace kvmem::guest::layout;

constexpr uint64_t kPtePresent = 0x1, kPteWrite = 0x2, kPteUser = 0x4;
constexpr uint64_t kPte = kPtePresent | kPteWrite | kPteUser;
constexpr uint64_t kPteHuge = 0x80;   // PS: a 2 MiB or 1 GiB leaf
constexpr uint64_t kTssLimit = 104 + 32;  // the 64-bit TSS, then the I/O bitmap of ports 0-255
static_assert(kMaxPds << 30 >= kMaxRamBytes, "page-table space for all of RAM");

void put64(std::span<uint8_t> ram, uint64_t gpa, uint64_t value) {
  KVMEM_CHECK(gpa + 8 <= ram.size(), "boot write at {:#x} outside RAM", gpa);
  std::memcpy(ram.data() + gpa, &value, 8);
}

// The GDT with a TSS descriptor for each of the first `vcpus` vCPUs.
void write_gdt(std::span<uint8_t> ram, unsigned vcpus) {
  uint64_t gdt[kGdtEntries] = {};
  gdt[kKernelCs >> 3] = 0x00af9b000000ffff;  // 64-bit code, DPL 0
  gdt[kKernelDs >> 3] = 0x00cf93000000ffff;  // data, DPL 0
  gdt[kUserDs >> 3] = 0x00cff3000000ffff;    // data, DPL 3
  gdt[kUserCs >> 3] = 0x00affb000000ffff;    // 64-bit code, DPL 3
  for (unsigned v = 0; v < vcpus; v++) {
    // Available 64-bit TSS (type 9).
    const uint64_t base = tss_addr(v), limit = kTssLimit;
    const unsigned i = tss_selector(v) >> 3;
    gdt[i] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ull << 40) | (((limit >> 16) & 0xf) << 48) |
             (((base >> 24) & 0xff) << 56);
    gdt[i + 1] = base >> 32;
  }
  std::memcpy(ram.data() + kGdtAddr, gdt, (8 + 2 * vcpus) * 8);
}

// vCPU v's TSS: RSP0 at the top of its ring-0 stack, and an I/O bitmap that
// allows ports 0-255.
void write_tss(std::span<uint8_t> ram, unsigned v) {
  uint8_t tss[kTssLimit + 1] = {};
  uint64_t rsp0 = kernel_stack_top(v);
  std::memcpy(tss + 4, &rsp0, 8);
  uint16_t iomap = 104;
  std::memcpy(tss + 0x66, &iomap, 2);
  tss[kTssLimit] = 0xff;
  std::memcpy(ram.data() + tss_addr(v), tss, sizeof tss);
}

bool pushes_error_code(unsigned vector) {
  switch (vector) {
    case 8: case 10: case 11: case 12: case 13: case 14: case 17: case 21: case 29: case 30:
      return true;
    default:
      return false;
  }
}

// Ring-0 stubs, one per vector, and the common tail that reports the fault.
Status write_stubs_and_idt(std::span<uint8_t> ram) {
  using namespace asmjit;
  CodeHolder code;
  code.init(Environment(Arch::kX64), kStubsAddr);
  x86::Assembler a(&code);
  Label common = a.newLabel();
  Label stubs[256];
  for (unsigned v = 0; v < 256; v++) {
    stubs[v] = a.newLabel();
    a.bind(stubs[v]);
    if (!pushes_error_code(v)) a.push(imm(0));
    a.push(imm(v));
    a.jmp(common);
  }
  // Stack: vector, error code, rip, cs, rflags, rsp, ss.
  a.bind(common);
  a.mov(x86::rdi, x86::qword_ptr(x86::rsp));
  a.mov(x86::rdx, x86::qword_ptr(x86::rsp, 8));
  a.mov(x86::rsi, x86::qword_ptr(x86::rsp, 16));
  a.mov(x86::r10, x86::cr2);
  a.mov(x86::eax, kHcException);
  a.out(imm(kHypercallPort), x86::eax);
  Label halt = a.newLabel();
  a.bind(halt);
  a.hlt();
  a.jmp(halt);
  if (code.flatten() || code.resolveUnresolvedLinks() || code.relocateToBase(kStubsAddr))
    return fail("cannot assemble the exception stubs");
  size_t size = code.codeSize();
  if (size > kStubsEnd - kStubsAddr)
    return fail("exception stubs take {} bytes, more than their page", size);
  code.copyFlattenedData(ram.data() + kStubsAddr, size);

  for (unsigned v = 0; v < 256; v++) {
    uint64_t target = kStubsAddr + code.labelOffset(stubs[v]);
    // Interrupt gate, present, DPL 0, selector kKernelCs, no IST.
    uint64_t lo = (target & 0xffff) | (uint64_t{kKernelCs} << 16) | (0x8eull << 40) |
                  ((target >> 16 & 0xffff) << 48);
    put64(ram, kIdtAddr + v * 16, lo);
    put64(ram, kIdtAddr + v * 16 + 8, target >> 32);
  }
  return {};
}

// The first 2 MiB in 4 KiB pages, each with the access its area of the boot
// area gives the CPL3 program (guest/layout.h); RAM above the boot area is
// the program's to write.
void write_low_page_table(std::span<uint8_t> ram) {
  for (uint64_t i = 0; i < 512; i++) {
    const uint64_t gpa = i << 12;
    uint64_t flags = kPte;
    if (gpa < abi::kBootAreaEnd) {
      switch (access_at(gpa)) {
        case Access::kNone: flags = 0; break;
        case Access::kSupervisor: flags = kPtePresent | kPteWrite; break;
        case Access::kUserRead: flags = kPtePresent | kPteUser; break;
        case Access::kUserWrite: flags = kPte; break;
      }
    }
    if (flags) put64(ram, kLowPtAddr + i * 8, gpa | flags);
  }
}

// Identity page tables over RAM and the windows: 2 MiB or 1 GiB leaves,
// except the first 2 MiB, which the low page table maps (so the first GiB
// of a 1 GiB-page guest gets a page directory of 2 MiB leaves).
void write_page_tables(std::span<uint8_t> ram, uint64_t size, PageSize page_size,
                       std::span<const GuestRange> windows) {
  const uint64_t pml4 = kPml4Addr, pdpt = kPdptAddr, pds = kPdsAddr;
  const bool gib = page_size == PageSize::k1G;
  const uint64_t leaf = gib ? 1ull << 30 : 1ull << 21;
  uint64_t reach = size;
  for (const GuestRange& w : windows) reach = std::max(reach, w.end);
  const uint64_t pd_pages = gib ? 1 : ((reach >> 21) + 511 + ((reach & ((1ull << 21) - 1)) != 0)) / 512;
  KVMEM_CHECK(pd_pages <= kMaxPds, "page tables for {:#x} bytes of guest-physical space", reach);
  // Clear only the table pages used: each page touched here is a page the
  // host must commit.
  std::memset(ram.data() + kPageTablesAddr, 0, (2 + pd_pages) * 0x1000);
  std::memset(ram.data() + kLowPtAddr, 0, 0x1000);
  put64(ram, pml4, pdpt | kPte);
  write_low_page_table(ram);
  const uint64_t pd_leaves = gib ? 512 : size >> 21;
  for (uint64_t g = 0; g < pd_pages; g++) put64(ram, pdpt + g * 8, (pds + g * 0x1000) | kPte);
  put64(ram, pds, kLowPtAddr | kPte);
  for (uint64_t p = 1; p < pd_leaves; p++) put64(ram, pds + p * 8, (p << 21) | kPte | kPteHuge);
  if (gib)
    for (uint64_t g = 1; g < size >> 30; g++) put64(ram, pdpt + g * 8, (g << 30) | kPte | kPteHuge);
  for (const GuestRange& w : windows)
    for (uint64_t a = align_down(w.start, leaf); a < w.end; a += leaf) {
      if (gib) put64(ram, pdpt + (a >> 30) * 8, a | kPte | kPteHuge);
      else put64(ram, pds + (a >> 21) * 8, a | kPte | kPteHuge);
    }
}

kvm_segment segment(uint16_t selector, uint8_t type, uint8_t dpl, bool code64) {
  kvm_segment s{};
  s.base = 0;
  s.limit = 0xffffffff;
  s.selector = selector;
  s.type = type;
  s.present = 1;
  s.dpl = dpl;
  s.db = code64 ? 0 : 1;
  s.s = 1;
  s.l = code64 ? 1 : 0;
  s.g = 1;
  return s;
}

}  // namespace

Status write_boot_area(std::span<uint8_t> ram, uint64_t ram_size, PageSize page_size, unsigned vcpus,
                       std::span<const GuestRange> windows) {
  const uint64_t unit = page_size == PageSize::k1G ? (1ull << 30) : (2ull << 20);
  KVMEM_CHECK(ram_size >= unit && ram_size % unit == 0 && ram_size <= kMaxRamBytes,
              "RAM size {:#x} unusable for boot", ram_size);
  KVMEM_CHECK(ram.size() >= kBootAreaEnd, "boot area of {:#x} bytes", ram.size());
  KVMEM_CHECK(vcpus >= 1 && vcpus <= kMaxVcpus, "{} vCPUs", vcpus);
  write_gdt(ram, vcpus);
  for (unsigned v = 0; v < vcpus; v++) write_tss(ram, v);
  if (auto s = write_stubs_and_idt(ram); !s) return s;
  for (const GuestRange& w : windows)
    KVMEM_CHECK(w.is_page_aligned() && !w.empty() && w.start >= ram_size && w.end <= kMaxGuestPhysical,
                "window {} in a guest of {:#x} bytes of RAM", w, ram_size);
  write_page_tables(ram, ram_size, page_size, windows);
  return {};
}

void long_mode_sregs(kvm_sregs& s, unsigned vcpu) {
  s.cr0 = 0x80050033;  // PG | AM | WP | NE | ET | MP | PE
  s.cr4 = 0x620;       // PAE | OSFXSR | OSXMMEXCPT
  s.efer = 0x500;      // LME | LMA
  s.cr3 = kPageTablesAddr;
  s.cs = segment(kUserCs, 0xb, 3, true);
  s.ss = s.ds = s.es = s.fs = s.gs = segment(kUserDs, 0x3, 3, false);
  s.tr = kvm_segment{};
  s.tr.base = tss_addr(vcpu);
  s.tr.limit = kTssLimit;
  s.tr.selector = tss_selector(vcpu);
  s.tr.type = 0xb;  // busy 64-bit TSS
  s.tr.present = 1;
  s.gdt.base = kGdtAddr;
  s.gdt.limit = kGdtEntries * 8 - 1;
  s.idt.base = kIdtAddr;
  s.idt.limit = 256 * 16 - 1;
}

kvm_regs user_regs(uint64_t entry, unsigned vcpu) {
  kvm_regs r{};
  r.rip = entry;
  r.rsp = user_stack_top(vcpu);
  r.rflags = 0x3202;  // IF | IOPL 3 | the always-one bit
  return r;
}

const char* exception_name(uint64_t vector) {
  static const char* const names[32] = {
      "#DE divide error",      "#DB debug",          "NMI",
      "#BP breakpoint",        "#OF overflow",       "#BR bound range",
      "#UD invalid opcode",    "#NM device not available", "#DF double fault",
      "coprocessor overrun",   "#TS invalid TSS",    "#NP segment not present",
      "#SS stack fault",       "#GP general protection", "#PF page fault",
      "reserved (15)",         "#MF x87 error",      "#AC alignment check",
      "#MC machine check",     "#XM SIMD error",     "#VE virtualisation",
      "#CP control protection", "reserved (22)",     "reserved (23)",
      "reserved (24)",         "reserved (25)",      "reserved (26)",
      "reserved (27)",         "#HV hypervisor injection", "#VC VMM communication",
      "#SX security",          "reserved (31)"};
  return vector < 32 ? names[vector] : "external interrupt";
}

}  // namespace kvmem::guest
