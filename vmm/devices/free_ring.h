// The asynchronous free-page path: a ring in guest memory, an ioeventfd
// doorbell the kernel signals without an exit, and a host thread that
// drains the ring and publishes `completed` (guest/abi.h has the protocol).
// Every range is checked and punched as the synchronous path does
// (free_reports.h, FreeBatch).
//
// Lock order (docs/design.md has the whole tree):
//   FreeRingDevice::mu_  (setup and stop only; nothing else is taken under it
//                         but the ring's creation and destruction)
//   FreeRing::drain_mu_  -> VcpuPauser::pause() (every vCPU's pause_mu_, one
//                           at a time) -> GuestMemory -> MemoryFile::mu_
// drain_mu_ is held across the pause and the punches: the ring's thread and
// a vCPU in kHcFreeRingWait never drain at once, and a vCPU never waits for
// drain_mu_ while in the guest, so the pause cannot wait on it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "base/error.h"
#include "base/fd.h"
#include "guest/abi.h"
#include "vmm/devices/free_reports.h"
#include "vmm/memory/region.h"

namespace kvmem {

class GuestMemory;
class KvmVm;

// Keeps every vCPU out of the guest while the ring's thread punches. Under
// PVM, a punch of pages that a running vCPU maps must kick it out of the
// guest: one kick per punch, ~80 us each for scattered 4 KiB ranges. Pausing
// the vCPUs once per drain costs one kick each, and the punches after it
// are cheap.
class VcpuPauser {
 public:
  virtual ~VcpuPauser() = default;
  // Returns once every vCPU is out of the guest; they stay out until resume().
  virtual void pause() = 0;
  virtual void resume() = 0;
};

// One drain of the ring whose FreeRingHeader is at host address `ring`
// (its `entries` slots follow, in guest RAM): answers every slot from
// `completed` up to the guest's `produced`, publishes `completed` and the
// invalid count, and returns the new `completed`. `statuses` is scratch.
// A non-null `pauser` parks the vCPUs around the punches when they make
// more than one run. FreeRing::drain is this under its lock; it needs no
// KVM, so vmm/devices/free_ring_fuzz.cc drives it directly.
uint64_t drain_free_ring(uint8_t* ring, uint64_t entries, uint64_t completed, GuestMemory& memory,
                         FreeStats& stats, VcpuPauser* pauser, std::vector<int64_t>& statuses);

class FreeRing {
 public:
  // Binds the doorbell and starts the host thread. A refusal the guest
  // should see comes back as a null ring and a negative errno in *status:
  // -EINVAL, -EFAULT, or -EAGAIN when the host cannot start the thread.
  // An Error means the host cannot go on (it is out of file descriptors,
  // or KVM refused the doorbell): the VM ends. `pauser` (may be null) keeps
  // the vCPUs out of the guest during drains made on the ring's own thread.
  static Result<std::unique_ptr<FreeRing>> start(KvmVm& vm, GuestMemory& memory, FreeStats& stats,
                                                 VcpuPauser* pauser, uint64_t ring_gpa, uint64_t entries,
                                                 int64_t* status);
  FreeRing(const FreeRing&) = delete;
  FreeRing& operator=(const FreeRing&) = delete;
  // Stops the thread (after the slots it has seen) and unbinds the doorbell.
  ~FreeRing();

  // kHcFreeRingWait: drains now, on the caller's thread, so `target` is
  // completed on return.
  // Returns 0, or -EINVAL when target lies beyond the guest's `produced`.
  int64_t wait(uint64_t target);
  // Answers every slot the guest has produced, on the caller's thread
  // (after a drain the ring's thread has begun). For snapshots: with no
  // vCPU in the guest, nothing is in flight afterwards.
  void quiesce() { drain(false); }

 private:
  FreeRing(KvmVm& vm, GuestMemory& memory, FreeStats& stats, VcpuPauser* pauser, HostSpan ring,
           uint64_t entries)
      : vm_(vm), memory_(memory), stats_(stats), pauser_(pauser), ring_span_(std::move(ring)),
        ring_(ring_span_.data()), entries_(entries) {}
  void run();
  // Answers every slot up to the guest's `produced`. on_ring_thread: called
  // by the ring's own thread, with the vCPUs perhaps in the guest.
  void drain(bool on_ring_thread);

  KvmVm& vm_;
  GuestMemory& memory_;
  FreeStats& stats_;
  VcpuPauser* pauser_;
  HostSpan ring_span_;  // keeps the ring's memory mapped while we use it
  uint8_t* ring_;       // host address of the FreeRingHeader; slots follow
  uint64_t entries_;
  // One drain at a time: the ring's thread, or a vCPU in kHcFreeRingWait.
  // Held across pauser_->pause() and the punches (see the lock order above).
  std::mutex drain_mu_;
  uint64_t completed_ = 0;  // protected by drain_mu_; ours: the guest's copy is never trusted
  std::vector<int64_t> statuses_;  // protected by drain_mu_: scratch for one drain
  Fd doorbell_;        // signalled by the guest's `out` to kDoorbellPort
  Fd stop_;            // signalled by the destructor
  bool bound_ = false; // doorbell_ is assigned to kDoorbellPort
  std::thread thread_;
};

// The device behind kHcFreeRingSetup and kHcFreeRingWait: at most one ring
// per VM, set up by any vCPU, waited on by any.
class FreeRingDevice {
 public:
  FreeRingDevice(KvmVm& vm, GuestMemory& memory, FreeStats& stats, VcpuPauser* pauser)
      : vm_(vm), memory_(memory), stats_(stats), pauser_(pauser) {}
  FreeRingDevice(const FreeRingDevice&) = delete;
  FreeRingDevice& operator=(const FreeRingDevice&) = delete;

  // kHcFreeRingSetup: the guest's status (0, -EBUSY for a second ring, or
  // FreeRing::start's refusals), or an Error when the host cannot go on.
  Result<int64_t> setup(uint64_t ring_gpa, uint64_t entries);
  // kHcFreeRingWait: -EINVAL before a setup.
  int64_t wait(uint64_t target);
  // FreeRing::quiesce; nothing before a setup.
  void quiesce();
  // Answers what the guest rang for and stops the ring's thread.
  // Precondition: no vCPU runs any more (wait() reads the ring unlocked).
  void stop();

 private:
  KvmVm& vm_;
  GuestMemory& memory_;
  FreeStats& stats_;
  VcpuPauser* pauser_;
  std::mutex mu_;                    // guards setup() and stop() against each other
  std::unique_ptr<FreeRing> ring_;   // protected by mu_
  std::atomic<FreeRing*> live_{nullptr};  // ring_, published for wait(); set once
};

}  // namespace kvmem
