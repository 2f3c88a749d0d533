#include "harness/interrupt.h"

#include <string.h>

#include <fmt/format.h>

#include "vmm/vm.h"

namespace kvmem {

StopRequests& StopRequests::process() {
  static StopRequests requests;
  return requests;
}

void StopRequests::stop_locked(Vm& vm) {
  const char* name = sigabbrev_np(signal_.load());
  vm.stop(FailureKind::kStopped, fmt::format("stopped by SIG{}", name ? name : "?"));
}

void StopRequests::request_stop(int signal) {
  std::lock_guard lock(mu_);
  int none = 0;
  signal_.compare_exchange_strong(none, signal);
  for (Vm* vm : running_) stop_locked(*vm);
}

void StopRequests::add(Vm& vm) {
  std::lock_guard lock(mu_);
  running_.insert(&vm);
  if (signal_.load() != 0) stop_locked(vm);
}

void StopRequests::remove(Vm& vm) {
  std::lock_guard lock(mu_);
  running_.erase(&vm);
}

}  // namespace kvmem
