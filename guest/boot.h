// Long-mode boot state written by the host, so the vCPU starts directly in
// 64-bit mode at CPL3 (PVM emulates ring 0 one instruction at a time and runs
// ring 3 natively; see docs/design.md, "The platform").
//
// write_boot_area() fills the reserved low area of guest RAM (guest/layout.h
// has the layout): a GDT with Linux's selectors, a 64-bit TSS per vCPU whose
// RSP0 the exception stubs run on, an IDT whose 256 gates lead to ring-0 stubs that
// report vector, RIP, error code and CR2 through kHcException, and identity
// page tables over all of RAM (2 MiB or 1 GiB pages; the first 2 MiB in
// 4 KiB pages, so that what the CPL3 program need not write — page tables,
// GDT, IDT, TSS, stubs, ring-0 stacks — is supervisor-only and its code is
// read-only: a write there is a #PF, never a way into ring 0).
// long_mode_sregs()/user_regs() then give the registers that start the
// program at CPL3 with RFLAGS.IOPL = 3, so `out` works from ring 3.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>

#include "base/error.h"
#include "memory/range.h"

namespace kvmem::guest {

enum class PageSize { k2M, k1G };

inline constexpr uint64_t kMaxRamBytes = 32ull << 30;  // page-table space in the boot area
// How far the identity page tables can reach: RAM and windows lie below it.
inline constexpr uint64_t kMaxGuestPhysical = 32ull << 30;

// boot_area is guest-physical [0, abi::kBootAreaEnd) of a guest with
// ram_size bytes of RAM. Preconditions: ram_size is a multiple of the page
// size, at least 2 MiB and at most kMaxRamBytes; the boot area reads as zero
// (fresh or reclaimed memory does). Only the pages that hold boot structures
// are written, so only those get committed.
// vcpus (1..layout::kMaxVcpus) is how many vCPUs get a TSS. `windows`
// (page-aligned, above RAM, below kMaxGuestPhysical) are identity-mapped
// for the program too, user-writable, in the pages that cover them (2 MiB
// or 1 GiB, as RAM): what lies around a window in those pages has no
// memory slot, so a guest access there exits to the VMM as MMIO.
Status write_boot_area(std::span<uint8_t> boot_area, uint64_t ram_size, PageSize page_size, unsigned vcpus = 1,
                       std::span<const GuestRange> windows = {});

// Adjusts vCPU `vcpu`'s reset-state sregs for 64-bit CPL3 execution.
void long_mode_sregs(kvm_sregs& sregs, unsigned vcpu = 0);

// General registers for the program's first instruction on vCPU `vcpu`.
kvm_regs user_regs(uint64_t entry, unsigned vcpu = 0);

// "#PF page fault" for vector 14; "vector 200" for vectors with no name.
const char* exception_name(uint64_t vector);

}  // namespace kvmem::guest
