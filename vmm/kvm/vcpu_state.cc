#include "vmm/kvm/vcpu_state.h"

#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

namespace kvmem {
namespace {

constexpr uint32_t kMagic = 0x55504356;  // "VCPU"
constexpr uint32_t kStateVersion = 1;
constexpr uint32_t kMaxMsrs = 64;
constexpr uint32_t kParts = 8;  // every tag below, once each

enum Tag : uint32_t {
  kTagRegs = 1,
  kTagSregs = 2,
  kTagFpu = 3,
  kTagXcrs = 4,
  kTagEvents = 5,
  kTagDebugregs = 6,
  kTagMpState = 7,
  kTagMsrs = 8,  // kvm_msr_entry[n]: its length is a multiple of 16, at most kMaxMsrs entries
};

template <typename T>
Status get(int fd, unsigned long req, const char* name, T& out) {
  if (::ioctl(fd, req, &out) < 0) return sys_fail("cannot capture the vCPU's state", name, errno);
  return {};
}

template <typename T>
Status set(int fd, unsigned long req, const char* name, const T& in) {
  if (::ioctl(fd, req, &in) < 0) return sys_fail("cannot restore the vCPU's state", name, errno);
  return {};
}

// kvm_msrs with room for n entries.
std::vector<uint64_t> msr_buffer(size_t n) {
  std::vector<uint64_t> buf((sizeof(kvm_msrs) + n * sizeof(kvm_msr_entry)) / sizeof(uint64_t));
  reinterpret_cast<kvm_msrs*>(buf.data())->nmsrs = static_cast<uint32_t>(n);
  return buf;
}

Result<std::vector<kvm_msr_entry>> capture_msrs(int fd) {
  std::vector<kvm_msr_entry> out;
  // One at a time: KVM_GET_MSRS stops at the first MSR it cannot read, and
  // which those are differs between hosts.
  for (uint32_t index : kStateMsrs) {
    auto buf = msr_buffer(1);
    auto* m = reinterpret_cast<kvm_msrs*>(buf.data());
    m->entries[0].index = index;
    const int n = ::ioctl(fd, KVM_GET_MSRS, m);
    if (n < 0 && errno == EINVAL) return std::vector<kvm_msr_entry>{};  // the host reads no MSR (PVM)
    if (n < 0) return sys_fail("cannot capture the vCPU's MSRs", "KVM_GET_MSRS", errno);
    if (n == 1) out.push_back(m->entries[0]);
  }
  return out;
}

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; i++) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void put_part(std::vector<uint8_t>& out, uint32_t tag, const void* data, size_t length) {
  put_u32(out, tag);
  put_u32(out, static_cast<uint32_t>(length));
  const auto* p = static_cast<const uint8_t*>(data);
  out.insert(out.end(), p, p + length);
  while (out.size() % 8) out.push_back(0);
}

uint32_t get_u32(std::span<const uint8_t> b, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= static_cast<uint32_t>(b[at + i]) << (8 * i);
  return v;
}

}  // namespace

const std::vector<uint32_t> kStateMsrs = {
    0x10,        // IA32_TSC
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
    0x277,       // PAT
    0xc0000081,  // STAR
    0xc0000082,  // LSTAR
    0xc0000083,  // CSTAR
    0xc0000084,  // SFMASK
    0xc0000102,  // KERNEL_GS_BASE
    0xc0000103,  // TSC_AUX
};

Result<VcpuState> capture_vcpu_state(const KvmVcpu& vcpu) {
  const int fd = vcpu.fd();
  VcpuState s;
  KVMEM_TRY(get(fd, KVM_GET_REGS, "KVM_GET_REGS", s.regs));
  KVMEM_TRY(get(fd, KVM_GET_SREGS, "KVM_GET_SREGS", s.sregs));
  KVMEM_TRY(get(fd, KVM_GET_FPU, "KVM_GET_FPU", s.fpu));
  KVMEM_TRY(get(fd, KVM_GET_XCRS, "KVM_GET_XCRS", s.xcrs));
  KVMEM_TRY(get(fd, KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", s.events));
  KVMEM_TRY(get(fd, KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS", s.debugregs));
  KVMEM_TRY(get(fd, KVM_GET_MP_STATE, "KVM_GET_MP_STATE", s.mp_state));
  s.msrs = KVMEM_TRY(capture_msrs(fd));
  return s;
}

Status restore_vcpu_state(KvmVcpu& vcpu, const VcpuState& s) {
  const int fd = vcpu.fd();
  // System registers first: the mode the rest is read in.
  KVMEM_TRY(set(fd, KVM_SET_SREGS, "KVM_SET_SREGS", s.sregs));
  KVMEM_TRY(set(fd, KVM_SET_XCRS, "KVM_SET_XCRS", s.xcrs));
  KVMEM_TRY(set(fd, KVM_SET_FPU, "KVM_SET_FPU", s.fpu));
  KVMEM_TRY(set(fd, KVM_SET_REGS, "KVM_SET_REGS", s.regs));
  KVMEM_TRY(set(fd, KVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS", s.debugregs));
  KVMEM_TRY(set(fd, KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", s.events));
  KVMEM_TRY(set(fd, KVM_SET_MP_STATE, "KVM_SET_MP_STATE", s.mp_state));
  if (!s.msrs.empty()) {
    auto buf = msr_buffer(s.msrs.size());
    auto* m = reinterpret_cast<kvm_msrs*>(buf.data());
    std::memcpy(m->entries, s.msrs.data(), s.msrs.size() * sizeof(kvm_msr_entry));
    const int n = ::ioctl(fd, KVM_SET_MSRS, m);
    if (n < 0) return sys_fail("cannot restore the vCPU's MSRs", "KVM_SET_MSRS", errno);
    if (static_cast<size_t>(n) != s.msrs.size())
      return fail("cannot restore the vCPU's MSRs: KVM_SET_MSRS refused MSR {:#x}", s.msrs[n].index);
  }
  return {};
}

std::vector<uint8_t> encode_vcpu_state(const VcpuState& s) {
  std::vector<uint8_t> out;
  put_u32(out, kMagic);
  put_u32(out, kStateVersion);
  put_u32(out, kParts);
  put_u32(out, 0);
  put_part(out, kTagRegs, &s.regs, sizeof s.regs);
  put_part(out, kTagSregs, &s.sregs, sizeof s.sregs);
  put_part(out, kTagFpu, &s.fpu, sizeof s.fpu);
  put_part(out, kTagXcrs, &s.xcrs, sizeof s.xcrs);
  put_part(out, kTagEvents, &s.events, sizeof s.events);
  put_part(out, kTagDebugregs, &s.debugregs, sizeof s.debugregs);
  put_part(out, kTagMpState, &s.mp_state, sizeof s.mp_state);
  put_part(out, kTagMsrs, s.msrs.data(), s.msrs.size() * sizeof(kvm_msr_entry));
  return out;
}

Result<VcpuState> decode_vcpu_state(std::span<const uint8_t> b) {
  constexpr const char* kWhat = "vCPU state";
  if (b.size() < 16) return fail("{}: {} bytes is too short for its header", kWhat, b.size());
  if (get_u32(b, 0) != kMagic) return fail("{}: bad magic {:#x}", kWhat, get_u32(b, 0));
  if (get_u32(b, 4) != kStateVersion)
    return fail("{}: version {} (this kvmem reads version {})", kWhat, get_u32(b, 4), kStateVersion);
  const uint32_t parts = get_u32(b, 8);
  if (parts != kParts) return fail("{}: {} parts, expected {}", kWhat, parts, kParts);
  VcpuState s;
  uint32_t seen = 0;
  size_t at = 16;
  for (uint32_t i = 0; i < parts; i++) {
    if (b.size() - at < 8) return fail("{}: part {} runs past the end ({} bytes)", kWhat, i, b.size());
    const uint32_t tag = get_u32(b, at), length = get_u32(b, at + 4);
    at += 8;
    if (length > b.size() - at) return fail("{}: part {} (tag {}) of {} bytes runs past the end", kWhat, i, tag, length);
    const uint8_t* data = b.data() + at;
    auto take = [&](auto& dst) -> Status {
      if (length != sizeof dst) return fail("{}: part tag {} is {} bytes, expected {}", kWhat, tag, length, sizeof dst);
      std::memcpy(&dst, data, sizeof dst);
      return {};
    };
    if (tag < kTagRegs || tag > kTagMsrs) return fail("{}: unknown part tag {}", kWhat, tag);
    if (seen & (1u << tag)) return fail("{}: part tag {} appears twice", kWhat, tag);
    seen |= 1u << tag;
    switch (tag) {
      case kTagRegs: KVMEM_TRY(take(s.regs)); break;
      case kTagSregs: KVMEM_TRY(take(s.sregs)); break;
      case kTagFpu: KVMEM_TRY(take(s.fpu)); break;
      case kTagXcrs: KVMEM_TRY(take(s.xcrs)); break;
      case kTagEvents: KVMEM_TRY(take(s.events)); break;
      case kTagDebugregs: KVMEM_TRY(take(s.debugregs)); break;
      case kTagMpState: KVMEM_TRY(take(s.mp_state)); break;
      case kTagMsrs:
        if (length % sizeof(kvm_msr_entry) || length / sizeof(kvm_msr_entry) > kMaxMsrs)
          return fail("{}: the MSR part is {} bytes: not a whole number of at most {} entries", kWhat, length, kMaxMsrs);
        s.msrs.resize(length / sizeof(kvm_msr_entry));
        if (length) std::memcpy(s.msrs.data(), data, length);
        break;
    }
    at += length;
    while (at % 8 && at < b.size()) {
      if (b[at] != 0) return fail("{}: padding after part tag {} is not zero", kWhat, tag);
      at++;
    }
  }
  if (at != b.size()) return fail("{}: {} bytes after the last part", kWhat, b.size() - at);
  if (s.xcrs.nr_xcrs > KVM_MAX_XCRS) return fail("{}: {} XCRs, at most {}", kWhat, s.xcrs.nr_xcrs, KVM_MAX_XCRS);
  return s;
}

}  // namespace kvmem
