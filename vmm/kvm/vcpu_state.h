// What KVM holds of one vCPU that resuming it elsewhere needs, and its
// byte form for snapshots.
//
// A vCPU's state is the registers KVM gives userspace: general (kvm_regs),
// system (kvm_sregs), x87/SSE (kvm_fpu), XCR0, pending events, debug
// registers, the run state, and the MSRs the host lets us read. Capture it
// only from a settled vCPU: after an exit for port I/O, KVM finishes the
// instruction (and applies registers set through kvm_run's sync area) on
// the next KVM_RUN, so the owner first re-enters with immediate_exit set
// (Vcpu::settle), as the KVM API asks before saving state.
//
// What this host gives. Under PVM (measured on 6.18.44-fc) KVM_GET_MSRS,
// KVM_GET_MSR_INDEX_LIST, KVM_GET_XSAVE, KVM_GET_XSAVE2 and KVM_GET_LAPIC
// all fail with EINVAL, for every MSR. The guests here need none of them:
// XCR0 is 1 (x87 only, so no AVX state exists beyond kvm_fpu's), EFER and
// the FS/GS bases are in kvm_sregs, and the guest's interrupt controller
// is not used. What is lost is the TSC: the restored guest's TSC is its new
// VM's, so TSC values taken before and after a restore do not compare.
// Where the host allows MSR reads, the MSRs of kStateMsrs are kept and
// restored.
//
// The byte form (little-endian, x86-64 only):
//   u32 magic "VCPU", u32 version (1), u32 part count, then each part as
//   u32 tag, u32 length, `length` bytes (the kernel's UAPI struct, whose
//   layout is fixed by the ABI), padded to 8 bytes.
// decode_vcpu_state() refuses a wrong magic or version, an unknown or
// repeated tag, a length other than the struct's, a missing part, and
// bytes past the end: the input may come from a hostile snapshot file.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <vector>

#include "base/error.h"
#include "vmm/kvm/kvm.h"

namespace kvmem {

struct VcpuState {
  kvm_regs regs{};
  kvm_sregs sregs{};
  kvm_fpu fpu{};
  kvm_xcrs xcrs{};
  kvm_vcpu_events events{};
  kvm_debugregs debugregs{};
  kvm_mp_state mp_state{};
  std::vector<kvm_msr_entry> msrs;  // empty where the host refuses MSR reads
};

// The MSRs a capture asks for, where the host answers KVM_GET_MSRS.
extern const std::vector<uint32_t> kStateMsrs;

// Reads every part. Precondition: the vCPU is settled and not running.
// Errors: the failing ioctl, with its errno (MSRs refused with EINVAL are
// no error: msrs stays empty).
Result<VcpuState> capture_vcpu_state(const KvmVcpu& vcpu);
// Sets every part, system registers first. Errors: the failing ioctl (KVM
// refuses values it cannot run, say sregs with reserved bits set).
Status restore_vcpu_state(KvmVcpu& vcpu, const VcpuState& state);

std::vector<uint8_t> encode_vcpu_state(const VcpuState& state);
Result<VcpuState> decode_vcpu_state(std::span<const uint8_t> bytes);

}  // namespace kvmem
