// A request, from outside, to stop whatever is running: a signal (SIGINT,
// SIGTERM, SIGHUP) that the CLI's signal thread turns into request_stop().
//
// Every running Vm is registered here (harness/runner.cc), so a request
// stops them all through Vm::stop (thread-safe: it only asks the vCPU to
// leave); a VM registered after the request is stopped as it registers,
// and stress starts no further round. Lock order: mu_ is taken before any
// Vm's own locks and never held by a Vm.
#pragma once

#include <atomic>
#include <mutex>
#include <set>

#include "base/error.h"

namespace kvmem {

class Vm;

class StopRequests {
 public:
  static StopRequests& process();  // the one for this process

  // Stops every registered VM, and any registered later; `signal` names why.
  void request_stop(int signal);
  // The signal of the first request, 0 when none came.
  int requested() const { return signal_.load(); }

  void add(Vm& vm);
  void remove(Vm& vm);

 private:
  void stop_locked(Vm& vm);
  std::atomic<int> signal_{0};
  std::mutex mu_;
  std::set<Vm*> running_;  // protected by mu_
};

// SIGINT, SIGTERM and SIGHUP are blocked in the calling thread (threads
// inherit the mask, so call this before any other starts) and taken by one
// detached thread with sigwait: the first asks every running VM to stop
// (request_stop), so the run ends through its normal path, prints what ran,
// gives the memory back and exits 128 + the signal; a second ends the
// process at once. The thread starts through start_thread, so a thread
// limit is an error; the signal mask is then as it was.
Status start_signal_thread();

// A registration for the life of a scope.
class StopRegistration {
 public:
  explicit StopRegistration(Vm& vm) : vm_(vm) { StopRequests::process().add(vm_); }
  ~StopRegistration() { StopRequests::process().remove(vm_); }
  StopRegistration(const StopRegistration&) = delete;
  StopRegistration& operator=(const StopRegistration&) = delete;

 private:
  Vm& vm_;
};

}  // namespace kvmem
