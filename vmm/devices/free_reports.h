// Free-page reports: a guest hands ranges of its RAM back to the host.
//
// Two paths, one check. Every range is validated here — page-aligned,
// non-empty, not wrapping, wholly inside this VM's RAM, clear of the boot
// area — and only then decommitted (punched) through GuestMemory, which can
// only ever name this VM's own allocations. A bad range gets its own
// negative errno and is counted; it never fails the VMM.
//
//   synchronous   kHcReportFree: a FreeReport array in guest memory, one
//                 exit for the whole list; decommitted before the guest
//                 resumes.
//   asynchronous  FreeRing: a ring in guest memory, an ioeventfd doorbell
//                 the kernel signals without an exit, and a host thread that
//                 drains the ring and publishes `completed` (guest/abi.h has
//                 the protocol).
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
#include "memory/range.h"
#include "vmm/memory/region.h"

namespace kvmem {

class GuestMemory;
class KvmVm;

// Counters shared by both paths; read from any thread.
struct FreeStats {
  std::atomic<uint64_t> reports{0};            // sync calls and ring doorbells handled
  std::atomic<uint64_t> ranges{0};             // ranges looked at
  std::atomic<uint64_t> invalid_ranges{0};     // ... refused with an errno
  std::atomic<uint64_t> bytes_reported{0};     // bytes in accepted ranges
  std::atomic<uint64_t> bytes_decommitted{0};  // ... whose punch succeeded
};

// 0, or the negative errno a range [gpa, gpa + length) earns (abi.h lists them).
int64_t check_free_range(const GuestMemory& memory, uint64_t gpa, uint64_t length);

// Checks ranges one by one and decommits them in runs: a range that starts
// where the previous accepted one ended joins its run, and each run is one
// punch (a guest that frees 64 neighbouring pages costs one fallocate, not
// 64). Each range's status is written through its pointer: the check's
// errno at once, and for accepted ranges 0, or the punch's errno when the
// run's punch fails, by the time flush() (or the destructor) returns.
class FreeBatch {
 public:
  FreeBatch(GuestMemory& memory, FreeStats& stats) : memory_(memory), stats_(stats) {}
  FreeBatch(const FreeBatch&) = delete;
  FreeBatch& operator=(const FreeBatch&) = delete;
  ~FreeBatch();
  void add(uint64_t gpa, uint64_t length, int64_t* status);
  void flush();

 private:
  GuestMemory& memory_;
  FreeStats& stats_;
  GuestRange run_;                 // accepted ranges not yet punched
  std::vector<int64_t*> statuses_; // theirs
};

// Checks and decommits one range; returns its status.
int64_t free_range(GuestMemory& memory, FreeStats& stats, uint64_t gpa, uint64_t length);

// kHcReportFree: returns the number of ranges decommitted, or a negative errno.
int64_t report_free_list(GuestMemory& memory, FreeStats& stats, uint64_t list_gpa, uint64_t count);

// Keeps a vCPU out of the guest while the ring's thread punches. Under PVM,
// a punch of pages that a running vCPU maps must kick it out of the guest:
// one kick per punch, ~80 us each for scattered 4 KiB ranges. Pausing the
// vCPU once per drain costs one kick, and the punches after it are cheap.
class VcpuPauser {
 public:
  virtual ~VcpuPauser() = default;
  // Returns once the vCPU is out of the guest and stays out until resume().
  virtual void pause() = 0;
  virtual void resume() = 0;
};

// One drain of the ring whose FreeRingHeader is at host address `ring`
// (its `entries` slots follow, in guest RAM): answers every slot from
// `completed` up to the guest's `produced`, publishes `completed` and the
// invalid count, and returns the new `completed`. `statuses` is scratch.
// A non-null `pauser` parks the vCPU around the punches when they make more
// than one run. FreeRing::drain is this under its lock; it needs no KVM, so
// vmm/devices/free_ring_fuzz.cc drives it directly.
uint64_t drain_free_ring(uint8_t* ring, uint64_t entries, uint64_t completed, GuestMemory& memory,
                         FreeStats& stats, VcpuPauser* pauser, std::vector<int64_t>& statuses);

class FreeRing {
 public:
  // Binds the doorbell and starts the host thread. Returns the errno the
  // guest should see on failure (as a negative value) through *status.
  // `pauser` (may be null) keeps the vCPU out of the guest during drains
  // made on the ring's own thread.
  static std::unique_ptr<FreeRing> start(KvmVm& vm, GuestMemory& memory, FreeStats& stats,
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

 private:
  FreeRing(KvmVm& vm, GuestMemory& memory, FreeStats& stats, VcpuPauser* pauser, HostSpan ring,
           uint64_t entries)
      : vm_(vm), memory_(memory), stats_(stats), pauser_(pauser), ring_span_(std::move(ring)),
        ring_(ring_span_.data()), entries_(entries) {}
  void run();
  // Answers every slot up to the guest's `produced`. on_ring_thread: called
  // by the ring's own thread, with the vCPU perhaps in the guest.
  void drain(bool on_ring_thread);

  KvmVm& vm_;
  GuestMemory& memory_;
  FreeStats& stats_;
  VcpuPauser* pauser_;
  HostSpan ring_span_;  // keeps the ring's memory mapped while we use it
  uint8_t* ring_;      // host address of the FreeRingHeader; slots follow
  uint64_t entries_;
  uint64_t completed_ = 0;  // protected by drain_mu_; ours: the guest's copy is never trusted
  // One drain at a time: the ring's thread, or a vCPU in kHcFreeRingWait.
  // It guards completed_ and statuses_.
  std::mutex drain_mu_;
  std::vector<int64_t> statuses_;  // protected by drain_mu_: scratch for one drain
  Fd doorbell_;        // signalled by the guest's `out` to kDoorbellPort
  Fd stop_;            // signalled by the destructor
  std::thread thread_;
};

}  // namespace kvmem
