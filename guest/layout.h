// Where the VMM places things in a guest's RAM: the boot area, the pieces
// each vCPU gets, and the result slots at the top of RAM.
//
// guest/abi.h is the contract both sides keep (hypercalls, report structs,
// the boot area's end); this file is the VMM's own placement inside it. The
// boot area [0, abi::kBootAreaEnd) is mapped with 4 KiB pages, each with the
// access of the area it lies in (kAreas), so that a CPL3 program can write
// only its stack, its report lists and its free ring, and read its own code:
//
//   [0x00000, 0x01000)  —            not mapped (catches null pointers)
//   [0x01000, 0x02000)  supervisor   GDT: Linux's selectors, one TSS descriptor per vCPU
//   [0x02000, 0x03000)  supervisor   IDT, 256 interrupt gates
//   [0x03000, 0x04000)  supervisor   ring-0 exception stubs
//   [0x10000, 0x40000)  supervisor   page tables
//   [0x40000, 0x50000)  supervisor   per vCPU: a page with its TSS and its ring-0 stack
//   [0x50000, 0xc0000)  user, read   the program's code and string data
//   [0xc0000, 0xc1000)  user, read   the boot info (abi::BootInfo), written by the VMM
//   [0xc1000, 0xc2000)  user, write  the barrier of `barrier` steps (a counter and a generation)
//   [0xd0000, 0xe0000)  user, write  FreeReport lists of `free`/`report` steps, a slice per vCPU
//   [0xe0000, 0xf0000)  user, write  the free rings of programs that use them, a slice per vCPU
//   [0xf0000, 0x100000) user, write  per vCPU: a user stack
//   [0x100000, ...)     user, write  RAM for steps (4 KiB pages up to 2 MiB, then 2 MiB or 1 GiB)
//   [top - N pages, top) user, write the result slots of a program with timestamp steps
//                                    (vCPU 0's at the top, vCPU 1's below them, ...)
//
// The ring-0 pieces are supervisor-only: a CPL3 write to any of them is a
// #PF, so a program cannot repoint a gate or a page table at its own code.
#pragma once

#include <cstdint>

#include "guest/abi.h"
#include "memory/range.h"

namespace kvmem::guest::layout {

// vCPUs the boot area has room for: a TSS, a ring-0 stack and a user stack each.
inline constexpr unsigned kMaxVcpus = 16;

inline constexpr uint64_t kGdtAddr = 0x1000;
inline constexpr uint64_t kIdtAddr = 0x2000;
inline constexpr uint64_t kStubsAddr = 0x3000;
inline constexpr uint64_t kStubsEnd = 0x4000;

// PML4, PDPT, then up to kMaxPds page directories (one per GiB of RAM), then
// the page table of the first 2 MiB.
inline constexpr uint64_t kPageTablesAddr = 0x10000;
inline constexpr uint64_t kPml4Addr = kPageTablesAddr;
inline constexpr uint64_t kPdptAddr = kPageTablesAddr + 0x1000;
inline constexpr uint64_t kPdsAddr = kPageTablesAddr + 0x2000;
inline constexpr uint64_t kMaxPds = 32;
inline constexpr uint64_t kLowPtAddr = kPdsAddr + kMaxPds * 0x1000;
inline constexpr uint64_t kPageTablesEnd = 0x40000;
static_assert(kLowPtAddr + 0x1000 <= kPageTablesEnd);

// Per vCPU one page: its TSS at the start, its ring-0 stack growing down
// from the end (the stubs push 7 words).
inline constexpr uint64_t kVcpuKernelAddr = 0x40000;
inline constexpr uint64_t kVcpuKernelSize = 0x1000;
inline constexpr uint64_t kVcpuKernelEnd = kVcpuKernelAddr + kMaxVcpus * kVcpuKernelSize;
static_assert(kVcpuKernelEnd <= 0x50000);

inline constexpr uint64_t kProgramAddr = 0x50000;
inline constexpr uint64_t kProgramEnd = 0xc0000;
// abi::BootInfo, at the start of its page.
inline constexpr uint64_t kBootInfoAddr = 0xc0000;
inline constexpr uint64_t kBootInfoEnd = 0xc1000;
static_assert(kBootInfoEnd - kBootInfoAddr >= sizeof(abi::BootInfo));
// The barrier: the count of vCPUs that have arrived at kBarrierAddr, the
// generation (barriers completed) a cache line further on, so spinners
// read a line the arrivals do not write.
//
// Then what lets a barrier fail rather than spin for ever, and say why:
// the departed mask, bit i set by the VMM when vCPU i has exited (0) —
// such a vCPU never arrives again, so a spinner that sees a bit fails
// the run (abi::kFailBarrierStranded); and per vCPU, written by the vCPU
// as it arrives, the number of the barrier it waits at (generation + 1)
// and which barrier step of its program that is (its index in
// guest::barrier_steps() + 1), which the VMM reads to name the barrier and
// the vCPUs that never arrived.
inline constexpr uint64_t kBarrierAddr = 0xc1000;
inline constexpr uint64_t kBarrierGeneration = kBarrierAddr + 64;
inline constexpr uint64_t kBarrierDeparted = kBarrierAddr + 128;
constexpr uint64_t barrier_arrival_addr(unsigned vcpu) { return kBarrierAddr + 192 + 8 * vcpu; }
constexpr uint64_t barrier_site_addr(unsigned vcpu) { return kBarrierAddr + 320 + 8 * vcpu; }
inline constexpr uint64_t kBarrierEnd = 0xc2000;
inline constexpr uint64_t kReportListAddr = 0xd0000;
inline constexpr uint64_t kReportListEnd = 0xe0000;
static_assert(kReportListEnd - kReportListAddr >= abi::kReportMax * sizeof(abi::FreeReport));
// Each vCPU of a VM with `vcpus` of them writes its report lists in a slice
// of its own, whole pages, so sync reports of several vCPUs never share a
// list: one vCPU has the whole area, 16 have a page (128 entries) each.
constexpr uint64_t report_list_slice(unsigned vcpus) {
  return (kReportListEnd - kReportListAddr) / (vcpus ? vcpus : 1) / 0x1000 * 0x1000;
}
constexpr uint64_t report_list_addr(unsigned vcpu, unsigned vcpus) {
  return kReportListAddr + vcpu * report_list_slice(vcpus);
}
// Entries a sync report list may hold on a VM with `vcpus` vCPUs.
constexpr uint64_t report_list_entries(unsigned vcpus) {
  const uint64_t n = report_list_slice(vcpus) / sizeof(abi::FreeReport);
  return n < abi::kReportMax ? n : abi::kReportMax;
}
inline constexpr uint64_t kFreeRingAddr = 0xe0000;
inline constexpr uint64_t kFreeRingEntries = 1024;  // the ring of a generated one-vCPU program
inline constexpr uint64_t kFreeRingEnd = 0xf0000;
static_assert(kFreeRingEnd - kFreeRingAddr >=
              sizeof(abi::FreeRingHeader) + kFreeRingEntries * sizeof(abi::FreeReport));
// Each vCPU of a VM with `vcpus` of them has a free ring of its own (the
// guest side of a ring has no lock), in a slice of the ring area of whole
// pages: its header, then the largest power of two of slots that fits, at
// most kFreeRingEntries. One vCPU: the whole area and 1024 slots, as before;
// 2: 512 each; 4: 256; 16: a page and 64 slots each.
constexpr uint64_t free_ring_slice(unsigned vcpus) {
  return (kFreeRingEnd - kFreeRingAddr) / (vcpus ? vcpus : 1) / 0x1000 * 0x1000;
}
constexpr uint64_t free_ring_addr(unsigned vcpu, unsigned vcpus) { return kFreeRingAddr + vcpu * free_ring_slice(vcpus); }
constexpr uint64_t free_ring_entries(unsigned vcpus) {
  const uint64_t room = (free_ring_slice(vcpus) - sizeof(abi::FreeRingHeader)) / sizeof(abi::FreeReport);
  uint64_t n = 1;
  while (n * 2 <= room && n * 2 <= kFreeRingEntries) n *= 2;
  return n;
}
static_assert(free_ring_entries(1) == kFreeRingEntries);
static_assert(kMaxVcpus <= abi::kMaxDoorbells);
static_assert(barrier_site_addr(kMaxVcpus) <= kBarrierEnd && barrier_arrival_addr(kMaxVcpus) <= barrier_site_addr(0));  // every vCPU's ring has a doorbell port
static_assert(free_ring_entries(kMaxVcpus) >= 64);  // a report step's 64 ranges fit any vCPU's ring

// Per vCPU: a user stack of kUserStackSize bytes; vCPU 0's ends at the boot area's end.
inline constexpr uint64_t kUserStacksAddr = 0xf0000;
inline constexpr uint64_t kUserStackSize = 0x1000;
inline constexpr uint64_t kUserStacksEnd = kUserStacksAddr + kMaxVcpus * kUserStackSize;
static_assert(kUserStacksEnd == abi::kBootAreaEnd);

constexpr uint64_t tss_addr(unsigned vcpu) { return kVcpuKernelAddr + vcpu * kVcpuKernelSize; }
constexpr uint64_t kernel_stack_top(unsigned vcpu) { return tss_addr(vcpu) + kVcpuKernelSize; }
constexpr uint64_t user_stack_top(unsigned vcpu) { return abi::kBootAreaEnd - vcpu * kUserStackSize; }

// GDT selectors (Linux's layout, so 0x33 / 0x2b as on a Linux user task),
// then one 16-byte TSS descriptor per vCPU.
inline constexpr uint16_t kKernelCs = 0x10;
inline constexpr uint16_t kKernelDs = 0x18;
inline constexpr uint16_t kUserDs = 0x2b;  // index 5, RPL 3
inline constexpr uint16_t kUserCs = 0x33;  // index 6, RPL 3
inline constexpr uint16_t kFirstTssSel = 0x40;  // index 8
constexpr uint16_t tss_selector(unsigned vcpu) { return static_cast<uint16_t>(kFirstTssSel + vcpu * 16); }
inline constexpr unsigned kGdtEntries = 8 + 2 * kMaxVcpus;

// The 64-bit result slots of a program that writes `slots` of them (its
// largest timestamp slot + 1) live in whole pages at the top of RAM, out of
// reach of every step (config validation refuses a step that overlaps them).
// Slot i is at start + 8 * i. Sized by the program: none when it writes none.
inline constexpr uint64_t kMaxResultSlots = uint64_t{1} << 24;  // 128 MiB of slots
// Bytes of RAM the result slots take, whole pages. Precondition: slots <= kMaxResultSlots.
constexpr uint64_t result_slots_bytes(uint64_t slots) { return (slots * 8 + kPageSize - 1) / kPageSize * kPageSize; }
// Precondition: result_slots_bytes(slots) <= ram_bytes.
constexpr GuestRange result_slots_range(uint64_t ram_bytes, uint64_t slots) {
  return GuestRange(ram_bytes - result_slots_bytes(slots), ram_bytes);
}

// How the CPL3 program may reach an area of the boot area.
enum class Access { kNone, kSupervisor, kUserRead, kUserWrite };
struct Area {
  GuestRange range;
  Access access;
  const char* name;
};
inline constexpr Area kAreas[] = {
    {{kGdtAddr, kGdtAddr + 0x1000}, Access::kSupervisor, "GDT"},
    {{kIdtAddr, kIdtAddr + 0x1000}, Access::kSupervisor, "IDT"},
    {{kStubsAddr, kStubsEnd}, Access::kSupervisor, "exception stubs"},
    {{kPageTablesAddr, kPageTablesEnd}, Access::kSupervisor, "page tables"},
    {{kVcpuKernelAddr, kVcpuKernelEnd}, Access::kSupervisor, "TSSes and ring-0 stacks"},
    {{kProgramAddr, kProgramEnd}, Access::kUserRead, "program"},
    {{kBootInfoAddr, kBootInfoEnd}, Access::kUserRead, "boot info"},
    {{kBarrierAddr, kBarrierEnd}, Access::kUserWrite, "barrier"},
    {{kReportListAddr, kReportListEnd}, Access::kUserWrite, "report lists"},
    {{kFreeRingAddr, kFreeRingEnd}, Access::kUserWrite, "free rings"},
    {{kUserStacksAddr, kUserStacksEnd}, Access::kUserWrite, "user stacks"},
};

// The access of the boot-area page at gpa (kNone outside every area).
constexpr Access access_at(uint64_t gpa) {
  for (const Area& a : kAreas)
    if (a.range.contains(gpa)) return a.access;
  return Access::kNone;
}

}  // namespace kvmem::guest::layout
