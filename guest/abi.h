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
  // (rdi = reason, rsi = address, rdx = expected, r10 = actual, r8 = a
  // reason's extra value) -> does not return. The guest found something
  // wrong; the run fails.
  kHcFail = 3,
  // (rdi = vector, rsi = rip, rdx = error code, r10 = cr2) -> does not return.
  // Issued by the ring-0 exception stubs; the run fails.
  kHcException = 4,
  // (rdi = gpa of a FreeReport array, rsi = count) -> ranges decommitted.
  // The VMM checks every range, decommits the good ones before the guest
  // resumes, and writes each entry's status (0 or a negative errno). The
  // call itself fails with -EINVAL (count 0 or > kReportMax) or -EFAULT (the
  // array is not 8-byte aligned or not wholly in RAM).
  kHcReportFree = 5,
  // (rdi = gpa of a free ring, rsi = entries) -> 0. Sets up the calling
  // vCPU's asynchronous free-page ring (FreeRingHeader, then `entries`
  // FreeReport slots) and its doorbell, doorbell_port(vCPU index). Each vCPU
  // may have one ring; the rings of a VM may not overlap. entries: a power
  // of two, 1..kRingMaxEntries. -EINVAL (bad entries or alignment), -EFAULT
  // (not in RAM, or not one host-contiguous piece), -EBUSY (this vCPU has a
  // ring already, or the ring overlaps another vCPU's), -EAGAIN (the host
  // cannot start the thread that drains the rings), or the host's errno
  // when it cannot make the doorbell.
  kHcFreeRingSetup = 6,
  // (rdi = a value of `produced`) -> 0 once the calling vCPU's ring has
  // `completed` it. The VMM drains that ring on the vCPU's own thread (as
  // the doorbell would have the rings' thread do), with the vCPU out of the
  // guest: for a guest that is going to wait anyway, this is cheaper than
  // ringing and spinning. -EINVAL when this vCPU has no ring or the value
  // lies beyond what the guest has produced.
  kHcFreeRingWait = 7,
  // (rdi = then: kSnapshotContinue or kSnapshotExit) -> 0 once the VMM has
  // saved the VM (every vCPU that has not ended makes this call, and the
  // snapshot is written when the last one arrives), or kSnapshotNotTaken
  // when the run takes no snapshots. With kSnapshotExit and a snapshot
  // taken, the call does not return: the VM ends as if every vCPU had
  // exited with 0. A VM restored from the snapshot resumes after the call
  // with 0. -EINVAL for another `then`.
  kHcSnapshot = 8,
};
inline constexpr uint32_t kHypercallCount = 9;

inline constexpr uint64_t kSnapshotContinue = 0;
inline constexpr uint64_t kSnapshotExit = 1;
inline constexpr int64_t kSnapshotNotTaken = 1;

inline constexpr uint64_t kConsoleMax = 4096;

// One range a guest hands back. `status` is written by the VMM:
//   0        decommitted: the range reads as zero from now on
//   -EINVAL  not page-aligned, empty, or wrapping past 2^64
//   -EFAULT  not wholly inside this VM's memory (its RAM and windows)
//   -EPERM   overlaps the reserved boot area, or memory that is not RAM
struct FreeReport {
  uint64_t gpa;
  uint64_t length;
  int64_t status;
  uint64_t reserved;
};
static_assert(sizeof(FreeReport) == 32);
inline constexpr uint64_t kReportMax = 2048;  // entries per kHcReportFree

// The asynchronous free ring, one per vCPU. The guest fills
// slots[produced % entries], then bumps `produced` and writes any 4-byte
// value to its vCPU's doorbell_port(), which the VMM binds to an ioeventfd:
// the kernel signals it without an exit to userspace. A port per vCPU, not
// one port told apart by the value written (KVM's datamatch): a wildcard
// ioeventfd and a datamatch one on the same port collide (EEXIST), so
// vCPU 0 keeps "any value on 0xe9", as a one-vCPU guest always had.
// A host thread checks and decommits each new slot, writes its status, then
// stores `completed` = the `produced` it handled. The guest may reuse a
// reported page only once `completed` has passed that page's slot: that is
// what keeps a late punch from destroying new data. The guest never lets
// produced - completed exceed `entries`.
struct FreeRingHeader {
  uint64_t produced;   // written by the guest
  uint64_t completed;  // written by the VMM
  uint64_t invalid;    // written by the VMM: slots refused so far
  uint64_t reserved[5];
};
static_assert(sizeof(FreeRingHeader) == 64);
inline constexpr uint64_t kRingMaxEntries = 4096;
inline constexpr uint16_t kDoorbellPort = 0xe9;  // vCPU 0's doorbell
inline constexpr unsigned kMaxDoorbells = 16;     // vCPUs that may have a ring: ports 0xe9..0xf8
// The doorbell of vCPU `vcpu`'s ring (vcpu < kMaxDoorbells): 8 bits, so
// the guest's `out imm8, eax` reaches it.
constexpr uint16_t doorbell_port(unsigned vcpu) { return static_cast<uint16_t>(kDoorbellPort + vcpu); }
// Pause-loop iterations a generated guest spins waiting for room in a full
// ring before it blocks with kHcFreeRingWait. Short on purpose: on 2 cores a
// spinning vCPU keeps a CPU from the thread that punches, and under PVM each
// punch of pages the vCPU maps while it runs in the guest must kick it.
inline constexpr uint64_t kRingSpinIterations = 64;

// Reasons for kHcFail.
enum FailReason : uint64_t {
  kFailVerify = 1,         // a `verify` step read `actual` where it expected `expected`
  kFailHypercallStatus = 2,  // a `hypercall` step got status `actual`, expected `expected`;
                             // `address` holds the hypercall number
  kFailReportStatus = 3,     // a reported range (at `address`) got status `actual`,
                             // expected `expected`
  kFailWaitTimeout = 4,      // a `wait_word` step waited r8 ms for the word at `address`
                             // to be `expected`; it read `actual` last
  kFailBarrierTimeout = 5,   // a `barrier` step waited r8 ms: `address` is the barrier step
                             // (its index in the program's barrier steps), `expected` the
                             // barrier's number (generation + 1), `actual` the arrivals read last
  kFailBarrierStranded = 6,  // a `barrier` step saw a vCPU depart (the VMM's mask, in r8) that
                             // had not arrived; `address` and `expected` as for kFailBarrierTimeout
};

// What the VMM tells the program before it starts, at layout::kBootInfoAddr
// (a page the program may read and not write).
struct BootInfo {
  // The rate of the guest's TSC in kHz, never 0: KVM_GET_TSC_KHZ on the
  // vCPU, or the host's TSC measured against CLOCK_MONOTONIC where KVM
  // cannot say. `wait_word` steps turn milliseconds into ticks with it.
  uint64_t tsc_khz;
  uint64_t reserved[7];
};
static_assert(sizeof(BootInfo) == 64);

// The reserved boot area, [0, kBootAreaEnd): the VMM's boot structures, the
// program and its lists (guest/layout.h places them). Steps in a config may
// not touch it, and a free report that overlaps it gets -EPERM.
inline constexpr uint64_t kBootAreaEnd = 0x100000;

}  // namespace kvmem::abi
