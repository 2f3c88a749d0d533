// kvmem hypercall ABI, version 1: shared by the VMM and the guests it builds.
//
// A guest calls the VMM with one port write:
//     mov eax, NR ; args in rdi, rsi, rdx, r10, r8, r9 ; out HC_PORT, eax
// The VMM reads the registers from kvm_run's synced register block (no extra
// ioctl), writes the status into rax and resumes the guest after the `out`.
// One hypercall is one exit to userspace (30-45 us under PVM), never more.
// Status: >= 0 success (a call-specific value), < 0 a negative errno.
// docs/hypercalls.md is the prose version of this file.
#pragma once

#include <cstdint>

namespace kvmem::abi {

inline constexpr uint32_t kVersion = 1;

// The I/O port the guest writes to (8-bit immediate form of `out`).
inline constexpr uint16_t kHypercallPort = 0xe8;

// Hypercall numbers (rax).
enum Hypercall : uint32_t {
  // () -> kVersion.
  kHcVersion = 0,
  // (rdi = gpa, rsi = length) -> bytes written. Length <= kConsoleMax;
  // the range must lie inside guest RAM. -EINVAL / -EFAULT otherwise.
  kHcConsoleWrite = 1,
  // (rdi = exit code) -> does not return. The code is reduced to 0..255.
  kHcExit = 2,
  // (rdi = reason, rsi = address, rdx = expected, r10 = actual) -> does not
  // return. The guest found something wrong; the run fails.
  kHcFail = 3,
  // (rdi = vector, rsi = rip, rdx = error code, r10 = cr2) -> does not return.
  // Issued by the ring-0 exception stubs; the run fails.
  kHcException = 4,
};
inline constexpr uint32_t kHypercallCount = 5;

inline constexpr uint64_t kConsoleMax = 4096;

// Reasons for kHcFail.
enum FailReason : uint64_t {
  kFailVerify = 1,         // a `verify` step read `actual` where it expected `expected`
  kFailHypercallStatus = 2,  // a `hypercall` step got status `actual`, expected `expected`;
                             // `address` holds the hypercall number
};

// Guest-physical layout of the reserved boot area, [0, kBootAreaEnd).
// Steps in a config may not touch it. Everything lives below 1 MiB.
inline constexpr uint64_t kGdtAddr = 0x1000;
inline constexpr uint64_t kIdtAddr = 0x2000;
inline constexpr uint64_t kTssAddr = 0x3000;
inline constexpr uint64_t kStubsAddr = 0x4000;        // ring-0 exception stubs
inline constexpr uint64_t kStubsEnd = 0x5000;
inline constexpr uint64_t kKernelStackTop = 0x8000;   // RSP0, grows down over 0x5000-0x8000
inline constexpr uint64_t kPageTablesAddr = 0x10000;  // PML4, PDPT, PDs (up to 0x50000)
inline constexpr uint64_t kPageTablesEnd = 0x50000;
inline constexpr uint64_t kProgramAddr = 0x50000;     // guest code and its data
inline constexpr uint64_t kProgramEnd = 0xf0000;
inline constexpr uint64_t kUserStackTop = 0x100000;   // grows down over 0xf0000-0x100000
inline constexpr uint64_t kBootAreaEnd = 0x100000;

// GDT selectors (Linux's layout, so 0x33 / 0x2b as on a Linux user task).
inline constexpr uint16_t kKernelCs = 0x10;
inline constexpr uint16_t kKernelDs = 0x18;
inline constexpr uint16_t kUserDs = 0x2b;  // index 5, RPL 3
inline constexpr uint16_t kUserCs = 0x33;  // index 6, RPL 3
inline constexpr uint16_t kTssSel = 0x40;  // index 8 (16-byte descriptor)

}  // namespace kvmem::abi
