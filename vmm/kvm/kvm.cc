#include "vmm/kvm/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace kvmem {
namespace {

// ioctl that retries on nothing and reports the request's name on failure.
Result<int> do_ioctl(int fd, unsigned long req, const char* name, unsigned long arg) {
  int r = ::ioctl(fd, req, arg);
  if (r < 0) return sys_fail("KVM call failed", name, errno);
  return r;
}
template <class T>
Result<int> do_ioctl(int fd, unsigned long req, const char* name, T* arg) {
  return do_ioctl(fd, req, name, reinterpret_cast<unsigned long>(arg));
}

}  // namespace

Result<Kvm> Kvm::open() {
  const char* env = std::getenv("KVMEM_KVM_DEVICE");
  const char* path = env && *env ? env : "/dev/kvm";
  int fd = ::open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    std::string hint =
        err == ENOENT
            ? "this host has no KVM: load kvm_intel or kvm_amd, or run on a machine with virtualisation"
            : (err == EACCES || err == EPERM)
                  ? fmt::format("you may not use {}: run as root or join the group that owns it", path)
                  : std::string("KVM is not usable here");
    return std::unexpected(
        Error{err, fmt::format("cannot open {}: {} ({}); {}", path, errno_name(err), strerror(err), hint)});
  }
  Fd owned(fd);
  auto version = do_ioctl(fd, KVM_GET_API_VERSION, "KVM_GET_API_VERSION", 0ul);
  if (!version) return std::unexpected(version.error());
  if (*version != KVM_API_VERSION)
    return fail("/dev/kvm speaks KVM API version {}, kvmem needs {}", *version, KVM_API_VERSION);
  auto size = do_ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE", 0ul);
  if (!size) return std::unexpected(size.error());
  return Kvm(std::move(owned), static_cast<size_t>(*size));
}

int Kvm::check_extension(long cap) const {
  int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

Status Kvm::require(long cap, const char* name) const {
  if (check_extension(cap) <= 0) return fail("this host's KVM lacks the capability {}", name);
  return {};
}

Result<std::vector<kvm_cpuid_entry2>> Kvm::supported_cpuid() const {
  // The kernel says E2BIG until the buffer is large enough.
  for (uint32_t n = 64; n <= 4096; n *= 2) {
    std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2));
    auto* cpuid = reinterpret_cast<kvm_cpuid2*>(buf.data());
    cpuid->nent = n;
    if (::ioctl(fd_.get(), KVM_GET_SUPPORTED_CPUID, cpuid) == 0)
      return std::vector<kvm_cpuid_entry2>(cpuid->entries, cpuid->entries + cpuid->nent);
    if (errno != E2BIG) return sys_fail("cannot read supported CPUID", "KVM_GET_SUPPORTED_CPUID", errno);
  }
  return fail("cannot read supported CPUID: KVM_GET_SUPPORTED_CPUID wants more than 4096 entries");
}

Result<KvmVm> Kvm::create_vm() const {
  auto fd = do_ioctl(fd_.get(), KVM_CREATE_VM, "KVM_CREATE_VM", 0ul);
  if (!fd) return std::unexpected(fd.error().context("cannot create a VM"));
  Fd owned(*fd);
  // KVM_CHECK_EXTENSION on the VM fd answers for this VM; a kernel that
  // cannot answer there (no KVM_CAP_CHECK_EXTENSION_VM) is asked on
  // /dev/kvm, and one that does not say how many slots it has gets 32.
  auto vm_cap = [&](long cap) {
    const int r = ::ioctl(*fd, KVM_CHECK_EXTENSION, cap);
    return r < 0 ? check_extension(cap) : r;
  };
  const int slots = vm_cap(KVM_CAP_NR_MEMSLOTS);
  const bool readonly = vm_cap(KVM_CAP_READONLY_MEM) > 0;
  auto shared = std::make_shared<kvm_detail::VmShared>(std::move(owned), static_cast<uint32_t>(std::max(slots, 32)),
                                                      readonly);
  return KvmVm(std::move(shared), vcpu_mmap_size_);
}

int KvmVm::check_extension(long cap) const {
  int r = ::ioctl(fd(), KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

Status KvmVm::enable_cap(uint32_t cap, uint64_t arg0) {
  kvm_enable_cap ec{};
  ec.cap = cap;
  ec.args[0] = arg0;
  if (::ioctl(fd(), KVM_ENABLE_CAP, &ec) < 0)
    return sys_fail(fmt::format("cannot enable capability {}", cap), "KVM_ENABLE_CAP", errno);
  return {};
}

namespace {
Status pio_eventfd(int vm_fd, uint16_t port, uint32_t len, int eventfd, bool assign) {
  kvm_ioeventfd io{};
  io.addr = port;
  io.len = len;
  io.fd = eventfd;
  io.flags = KVM_IOEVENTFD_FLAG_PIO | (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN);
  if (::ioctl(vm_fd, KVM_IOEVENTFD, &io) < 0)
    return sys_fail(fmt::format("cannot {} the doorbell on port {:#x}", assign ? "bind" : "unbind", port),
                    "KVM_IOEVENTFD", errno);
  return {};
}
}  // namespace

Status KvmVm::assign_pio_eventfd(uint16_t port, uint32_t len, int eventfd) {
  return pio_eventfd(fd(), port, len, eventfd, true);
}

Status KvmVm::deassign_pio_eventfd(uint16_t port, uint32_t len, int eventfd) {
  return pio_eventfd(fd(), port, len, eventfd, false);
}

Result<KvmVcpu> KvmVm::create_vcpu(unsigned id) {
  auto fd = do_ioctl(this->fd(), KVM_CREATE_VCPU, "KVM_CREATE_VCPU", static_cast<unsigned long>(id));
  if (!fd) return std::unexpected(fd.error().context("cannot create a vCPU"));
  Fd owned(*fd);
  void* p = ::mmap(nullptr, vcpu_mmap_size_, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
  if (p == MAP_FAILED) return sys_fail("cannot map the vCPU's kvm_run", "mmap", errno);
  return KvmVcpu(std::move(owned), static_cast<kvm_run*>(p), vcpu_mmap_size_);
}

KvmVcpu::KvmVcpu(KvmVcpu&& o) noexcept
    : fd_(std::move(o.fd_)), run_(std::exchange(o.run_, nullptr)), mmap_size_(o.mmap_size_) {}

KvmVcpu::~KvmVcpu() {
  if (run_) ::munmap(run_, mmap_size_);
}

Result<bool> KvmVcpu::run() {
  if (::ioctl(fd_.get(), KVM_RUN, 0) < 0) {
    if (errno == EINTR || errno == EAGAIN) return false;
    return sys_fail("cannot run the vCPU", "KVM_RUN", errno);
  }
  return true;
}

Result<kvm_regs> KvmVcpu::get_regs() const {
  kvm_regs r{};
  if (::ioctl(fd_.get(), KVM_GET_REGS, &r) < 0) return sys_fail("cannot read vCPU registers", "KVM_GET_REGS", errno);
  return r;
}

Status KvmVcpu::set_regs(const kvm_regs& regs) {
  if (::ioctl(fd_.get(), KVM_SET_REGS, &regs) < 0) return sys_fail("cannot set vCPU registers", "KVM_SET_REGS", errno);
  return {};
}

Result<kvm_sregs> KvmVcpu::get_sregs() const {
  kvm_sregs r{};
  if (::ioctl(fd_.get(), KVM_GET_SREGS, &r) < 0)
    return sys_fail("cannot read vCPU special registers", "KVM_GET_SREGS", errno);
  return r;
}

Status KvmVcpu::set_sregs(const kvm_sregs& sregs) {
  if (::ioctl(fd_.get(), KVM_SET_SREGS, &sregs) < 0)
    return sys_fail("cannot set vCPU special registers", "KVM_SET_SREGS", errno);
  return {};
}

Status KvmVcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) {
  std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + entries.size() * sizeof(kvm_cpuid_entry2));
  auto* cpuid = reinterpret_cast<kvm_cpuid2*>(buf.data());
  cpuid->nent = static_cast<uint32_t>(entries.size());
  std::memcpy(cpuid->entries, entries.data(), entries.size() * sizeof(kvm_cpuid_entry2));
  if (::ioctl(fd_.get(), KVM_SET_CPUID2, cpuid) < 0) return sys_fail("cannot set CPUID", "KVM_SET_CPUID2", errno);
  return {};
}

}  // namespace kvmem
