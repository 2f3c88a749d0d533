#include "vmm/devices/snapshot_point.h"

#include "guest/abi.h"

namespace kvmem {

SnapshotArrival SnapshotPoint::arrive(size_t id, Result<VcpuState> state, uint64_t then) {
  using Next = SnapshotArrival::Next;
  std::unique_lock lock(mu_);
  if (cancelled_) return {Next::kStopped, {}};
  if (id >= states_.size() || ended_[id] || states_[id])
    return {Next::kFailed, fmt::format("vCPU {} arrived at the snapshot twice", id)};
  const uint64_t round = round_;
  states_[id] = std::move(state);
  arrived_++;
  exit_ = exit_ || then == abi::kSnapshotExit;
  for (;;) {
    if (round_ != round) break;  // the round this vCPU arrived in is done
    if (cancelled_) return {Next::kStopped, {}};
    if (!writing_ && arrived_ == live_) {
      // This thread writes. The others wait; none of them can arrive again
      // before the round ends, so states_ is this round's alone.
      writing_ = true;
      SnapshotCapture capture;
      capture.then = exit_ ? abi::kSnapshotExit : abi::kSnapshotContinue;
      capture.sequence = round_;
      Status status;
      for (size_t i = 0; i < states_.size(); i++) {
        if (!states_[i]) {
          capture.vcpus.emplace_back();
          continue;
        }
        if (!*states_[i]) {
          if (status) status = std::unexpected(states_[i]->error().context(fmt::format("vCPU {}", i)));
          capture.vcpus.emplace_back();
          continue;
        }
        capture.vcpus.emplace_back(std::move(**states_[i]));
      }
      lock.unlock();
      if (status) status = sink_(capture);
      lock.lock();
      result_ = std::move(status);
      result_exit_ = exit_;
      for (auto& s : states_) s.reset();
      arrived_ = 0;
      exit_ = false;
      writing_ = false;
      round_++;
      cv_.notify_all();
      break;
    }
    cv_.wait(lock);
  }
  if (!result_) return {Next::kFailed, fmt::format("cannot take the snapshot: {}", result_.error().message)};
  if (result_exit_) return {Next::kExit, {}};
  return {Next::kGoOn, {}};
}

void SnapshotPoint::ended(size_t id) {
  {
    std::lock_guard lock(mu_);
    if (id >= ended_.size() || ended_[id]) return;
    ended_[id] = true;
    live_--;
  }
  cv_.notify_all();  // a waiter may now make the set whole
}

void SnapshotPoint::cancel() {
  {
    std::lock_guard lock(mu_);
    cancelled_ = true;
  }
  cv_.notify_all();
}

uint64_t SnapshotPoint::taken() const {
  std::lock_guard lock(mu_);
  return round_;
}

}  // namespace kvmem
