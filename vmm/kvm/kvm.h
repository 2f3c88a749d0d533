// RAII wrappers for /dev/kvm, a VM and a vCPU.
//
// Each kernel object has one owner: Kvm owns the /dev/kvm fd, KvmVm a VM fd,
// KvmVcpu a vCPU fd and its kvm_run mapping; memory slots are Memslot
// registrations (memslot.h) made through KvmVm::slots(). Every failing ioctl comes back as
// an Error naming the ioctl and its errno ("KVM_CREATE_VM: EINVAL (...)").
// Nothing here knows about guests or configs.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "base/error.h"
#include "base/fd.h"
#include "vmm/kvm/memslot.h"

namespace kvmem {

class KvmVcpu;
class KvmVm;

class Kvm {
 public:
  // Opens the KVM device and checks the API version. The error says what to
  // do when the device is missing or not accessible. The device is /dev/kvm
  // unless KVMEM_KVM_DEVICE names another path (tests use it to see how a
  // host without KVM is reported).
  static Result<Kvm> open();

  int fd() const { return fd_.get(); }
  // KVM_CHECK_EXTENSION on /dev/kvm: 0 when absent, else the capability's value.
  int check_extension(long cap) const;
  // A required capability: an error naming it when absent.
  Status require(long cap, const char* name) const;

  Result<std::vector<kvm_cpuid_entry2>> supported_cpuid() const;
  Result<KvmVm> create_vm() const;
  size_t vcpu_mmap_size() const { return vcpu_mmap_size_; }

 private:
  Kvm(Fd fd, size_t mmap_size) : fd_(std::move(fd)), vcpu_mmap_size_(mmap_size) {}
  Fd fd_;
  size_t vcpu_mmap_size_ = 0;
};

class KvmVm {
 public:
  int fd() const { return shared_->fd.get(); }
  int check_extension(long cap) const;

  // Adds memory slots; the handle and the Memslots it makes may outlive
  // this KvmVm (memslot.h, "Teardown order").
  VmSlots slots() const { return VmSlots(shared_); }
  Status enable_cap(uint32_t cap, uint64_t arg0);
  // KVM_IOEVENTFD for a port-I/O write of `len` bytes to `port`, any value.
  Status assign_pio_eventfd(uint16_t port, uint32_t len, int eventfd);
  Status deassign_pio_eventfd(uint16_t port, uint32_t len, int eventfd);
  Result<KvmVcpu> create_vcpu(unsigned id);

 private:
  friend class Kvm;
  KvmVm(std::shared_ptr<kvm_detail::VmShared> shared, size_t vcpu_mmap_size)
      : shared_(std::move(shared)), vcpu_mmap_size_(vcpu_mmap_size) {}
  std::shared_ptr<kvm_detail::VmShared> shared_;  // never null
  size_t vcpu_mmap_size_;
};

class KvmVcpu {
 public:
  KvmVcpu(KvmVcpu&& o) noexcept;
  KvmVcpu& operator=(KvmVcpu&&) = delete;
  KvmVcpu(const KvmVcpu&) = delete;
  ~KvmVcpu();

  int fd() const { return fd_.get(); }
  kvm_run* run_struct() const { return run_; }

  // KVM_RUN. Returns true when the guest exited (see run_struct()->exit_reason),
  // false when the call was interrupted by a signal (EINTR) or immediate_exit.
  Result<bool> run();

  Result<kvm_regs> get_regs() const;
  Status set_regs(const kvm_regs& regs);
  Result<kvm_sregs> get_sregs() const;
  Status set_sregs(const kvm_sregs& sregs);
  Status set_cpuid(const std::vector<kvm_cpuid_entry2>& entries);

 private:
  friend class KvmVm;
  KvmVcpu(Fd fd, kvm_run* run, size_t mmap_size) : fd_(std::move(fd)), run_(run), mmap_size_(mmap_size) {}
  Fd fd_;
  kvm_run* run_ = nullptr;
  size_t mmap_size_ = 0;
};

}  // namespace kvmem
