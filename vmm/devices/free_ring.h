// The asynchronous free-page path: a ring per vCPU in guest memory, each
// with an ioeventfd doorbell the kernel signals without an exit, and one
// host thread per VM that drains every rung ring and publishes `completed`
// (guest/abi.h has the protocol). Every range is checked and punched as the
// synchronous path does (free_reports.h, FreeBatch).
//
// Why one thread for all the rings of a VM, not one per ring: the punches
// of every ring go to the same memory file, whose fallocate serialises on
// the file's inode lock and MemoryFile::mu_, and the pause around them
// (VcpuPauser) is VM-wide; one thread pauses the vCPUs once for every ring
// rung in a round, where a thread per ring would kick them once per ring,
// and on a 2-core host it keeps one more thread from the vCPUs' CPUs.
//
// Lock order (docs/design.md has the whole tree):
//   FreeRingDevice::mu_  (setup, stop, and the thread's look at the rings;
//                         nothing is taken under it but a ring's creation
//                         and destruction)
//   FreeRing::drain_mu_  (the rings' thread takes those of a round in vCPU
//                         order, a vCPU only its own ring's)
//     -> VcpuPauser::pause() (every vCPU's mu_, one at a time)
//     -> GuestMemory -> MemoryFile::mu_
// drain_mu_ is held across the pause and the punches: the rings' thread and
// a vCPU in kHcFreeRingWait never drain one ring at once, and a vCPU never
// waits for drain_mu_ while in the guest, so a pause cannot wait on it. A
// pause waits only for vCPUs to leave KVM_RUN, never for a lock, so two
// pausers (the thread and a vCPU draining its own ring) cannot deadlock:
// pauses nest.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "base/error.h"
#include "base/fd.h"
#include "guest/abi.h"
#include "vmm/devices/device_state.h"
#include "vmm/devices/free_reports.h"
#include "vmm/memory/region.h"

namespace kvmem {

class GuestMemory;
class KvmVm;

// Keeps every vCPU out of the guest while the rings' thread punches. Under
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

// One vCPU's ring: its memory, its doorbell and its drain lock. The
// FreeRingDevice's thread and the vCPU (kHcFreeRingWait) drain it.
class FreeRing {
 public:
  // Binds the doorbell of vCPU `vcpu` (abi::doorbell_port). A refusal the
  // guest should see comes back as a null ring and a negative errno in
  // *status: -EINVAL or -EFAULT. An Error means the host cannot go on (it
  // is out of file descriptors, or KVM refused the doorbell): the VM ends.
  // `completed` (a ring restored from a snapshot) is where the host's
  // answers stand; without it they start where the guest's `produced`
  // does. Either way it is published in the ring's header.
  static Result<std::unique_ptr<FreeRing>> create(KvmVm& vm, GuestMemory& memory, FreeStats& stats, unsigned vcpu,
                                                  uint64_t ring_gpa, uint64_t entries, int64_t* status,
                                                  std::optional<uint64_t> completed = std::nullopt);
  FreeRing(const FreeRing&) = delete;
  FreeRing& operator=(const FreeRing&) = delete;
  // Unbinds the doorbell. Precondition: nobody drains the ring any more.
  ~FreeRing();

  // kHcFreeRingWait: drains now, on the caller's thread, so `target` is
  // completed on return. `pauser` (may be null) parks the vCPUs around
  // punches of several runs. Returns 0, or -EINVAL when target lies beyond
  // the guest's `produced`.
  int64_t wait(uint64_t target, VcpuPauser* pauser);
  // Answers every slot up to the guest's `produced`.
  void drain(VcpuPauser* pauser);

  GuestRange range() const { return range_; }
  int doorbell() const { return doorbell_.get(); }
  // Where it is, its slots and the host's `completed` (takes drain_mu_).
  FreeRingState state();

 private:
  FreeRing(KvmVm& vm, GuestMemory& memory, FreeStats& stats, unsigned vcpu, HostSpan ring, GuestRange range,
           uint64_t entries)
      : vm_(vm), memory_(memory), stats_(stats), vcpu_(vcpu), ring_span_(std::move(ring)), ring_(ring_span_.data()),
        range_(range), entries_(entries) {}

  KvmVm& vm_;
  GuestMemory& memory_;
  FreeStats& stats_;
  const unsigned vcpu_;
  HostSpan ring_span_;  // keeps the ring's memory mapped while we use it
  uint8_t* ring_;       // host address of the FreeRingHeader; slots follow
  const GuestRange range_;
  const uint64_t entries_;
  // One drain at a time: the rings' thread, or the vCPU in kHcFreeRingWait.
  // Held across the pause and the punches (see the lock order above).
  std::mutex drain_mu_;
  uint64_t completed_ = 0;  // protected by drain_mu_; ours: the guest's copy is never trusted
  std::vector<int64_t> statuses_;  // protected by drain_mu_: scratch for one drain
  Fd doorbell_;         // signalled by the guest's `out` to doorbell_port(vcpu_)
  bool bound_ = false;  // doorbell_ is assigned to its port
};

// The device behind kHcFreeRingSetup and kHcFreeRingWait: at most one ring
// per vCPU, set up and waited on by that vCPU, and one thread that drains
// every ring whose doorbell rang. The thread starts with the first ring.
class FreeRingDevice {
 public:
  // A VM of `vcpus` vCPUs (1..abi::kMaxDoorbells). `pauser` (may be null)
  // keeps the vCPUs out of the guest during drains of several runs.
  FreeRingDevice(KvmVm& vm, GuestMemory& memory, FreeStats& stats, VcpuPauser* pauser, unsigned vcpus);
  FreeRingDevice(const FreeRingDevice&) = delete;
  FreeRingDevice& operator=(const FreeRingDevice&) = delete;
  ~FreeRingDevice() { stop(); }

  // kHcFreeRingSetup from vCPU `vcpu`: the guest's status (0, -EBUSY for a
  // second ring of this vCPU or one that overlaps another vCPU's, -EAGAIN
  // when the rings' thread cannot start, or FreeRing::create's refusals),
  // or an Error when the host cannot go on.
  Result<int64_t> setup(unsigned vcpu, uint64_t ring_gpa, uint64_t entries);
  // kHcFreeRingWait from vCPU `vcpu`: -EINVAL before its setup.
  int64_t wait(unsigned vcpu, uint64_t target);
  // Answers every slot the guest has produced in every ring, on the
  // caller's thread (after any drain the rings' thread has begun). For
  // snapshots; precondition: no vCPU is in the guest, so nothing is in
  // flight afterwards.
  void quiesce();
  // Each vCPU's ring as the host keeps it (device_state.h), for a
  // snapshot: after quiesce(), with no vCPU in the guest.
  std::vector<FreeRingState> state();
  // Before the run, on a VM made from a snapshot whose RAM is back: sets
  // up each vCPU's ring as `rings` says (one state per vCPU; a ring with
  // the host's `completed` of the snapshot, its doorbell bound, the rings'
  // thread started), so the guest's doorbells and kHcFreeRingWait work as
  // before the snapshot. Errors, naming the vCPU: a count that is not the
  // VM's, a ring FreeRing::create refuses (not in RAM, bad entries or
  // alignment), rings overlapping, a vCPU with a ring already; the host's
  // (a doorbell, the thread).
  Status restore(const std::vector<FreeRingState>& rings);
  // Answers what the guest rang for and stops the rings' thread.
  // Precondition: no vCPU runs any more (wait() reads the rings unlocked).
  void stop();

 private:
  void run();
  // Publishes `ring` as vCPU `vcpu`'s and starts the rings' thread if it
  // has not: 0, -EBUSY (it overlaps another vCPU's ring), -EAGAIN (no
  // thread), or an Error when the host cannot make the wake-up eventfd.
  Result<int64_t> install_locked(unsigned vcpu, std::unique_ptr<FreeRing> ring);  // mu_ held

  KvmVm& vm_;
  GuestMemory& memory_;
  FreeStats& stats_;
  VcpuPauser* pauser_;
  const unsigned vcpus_;
  std::mutex mu_;  // see the lock order above
  std::vector<std::unique_ptr<FreeRing>> rings_;  // protected by mu_: one slot per vCPU
  // rings_[i], published for wait() on vCPU i's own thread; set once.
  std::unique_ptr<std::atomic<FreeRing*>[]> live_;
  bool stopping_ = false;  // protected by mu_
  Fd wake_;                // protected by mu_ (made once): a ring was added, or stop
  std::thread thread_;     // protected by mu_ until stop() takes it to join
};

}  // namespace kvmem
