// Where the vCPUs of one VM meet to be snapshotted (kHcSnapshot).
//
// Each vCPU that makes the call settles (its `out` finished, its status 0
// in rax), captures its own state on its own thread, and arrives here. The
// snapshot is taken once every vCPU that has not ended has arrived: the last
// one to make the set whole runs the sink (which writes the snapshot) on
// its thread while the others wait, and then every one of them goes on
// together, or ends (then = exit), or fails when the sink failed. A vCPU
// that ends meanwhile (exits 0 before its snapshot step) is not waited
// for: the capture has no state for it, and a restore does not run it.
//
// Nothing of the guest runs while the sink runs: every live vCPU is here,
// out of the guest. Device threads (the free ring's) are the sink's to
// quiesce.
//
// Thread safety: arrive() and ended() from the vCPUs' threads, cancel()
// from any thread; the sink runs on one vCPU's thread with no lock held.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "vmm/kvm/vcpu_state.h"

namespace kvmem {

struct SnapshotCapture {
  std::vector<std::optional<VcpuState>> vcpus;  // by vCPU id; nullopt: it had ended
  uint64_t then = 0;                            // abi::kSnapshotExit if any vCPU asked for it
  uint64_t sequence = 0;                        // 0 for the VM's first snapshot, then 1, ...
};

// What a vCPU does after arrive().
struct SnapshotArrival {
  enum class Next { kGoOn, kExit, kFailed, kStopped };
  Next next = Next::kGoOn;
  std::string message;  // kFailed: why, as a sentence
};

class SnapshotPoint {
 public:
  using Sink = std::function<Status(const SnapshotCapture&)>;

  explicit SnapshotPoint(size_t vcpus) : states_(vcpus), ended_(vcpus, false), live_(vcpus) {}

  // Before the run: snapshots are taken and go to `sink`. Unarmed, the call
  // answers kSnapshotNotTaken and nobody meets.
  void arm(Sink sink) { sink_ = std::move(sink); }
  bool armed() const { return static_cast<bool>(sink_); }

  // vCPU `id` arrives, with its state or the error capturing it. Returns
  // once the snapshot is taken (kGoOn, or kExit for then = exit), or
  // failed (kFailed: the sink's or a capture's error), or the point was
  // cancelled (kStopped).
  SnapshotArrival arrive(size_t id, Result<VcpuState> state, uint64_t then);
  // vCPU `id` has ended; it is not waited for any more.
  void ended(size_t id);
  // Wakes every waiter with kStopped; arrivals after it fail at once.
  void cancel();
  uint64_t taken() const;

 private:
  Sink sink_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::optional<Result<VcpuState>>> states_;  // protected by mu_: this round's arrivals
  std::vector<bool> ended_;                               // protected by mu_
  size_t live_;             // protected by mu_: vCPUs not ended
  size_t arrived_ = 0;      // protected by mu_: this round
  bool exit_ = false;       // protected by mu_: some arrival of this round asked to exit
  bool writing_ = false;    // protected by mu_: a sink runs
  bool cancelled_ = false;  // protected by mu_
  uint64_t round_ = 0;      // protected by mu_: rounds finished
  Status result_;           // protected by mu_: the last round's
  bool result_exit_ = false;  // protected by mu_: the last round's then
};

}  // namespace kvmem
