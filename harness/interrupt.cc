#include "harness/interrupt.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

#include "base/thread.h"
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

Status start_signal_thread() {
  sigset_t set, old;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, s);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  auto thread = start_thread("the signal thread", [set] {
    for (int n = 0;; n++) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (n > 0) _exit(128 + sig);
      const char* name = sigabbrev_np(sig);
      std::fprintf(stderr, "kvmem: SIG%s: stopping the VMs (again to quit at once)\n", name ? name : "?");
      StopRequests::process().request_stop(sig);
    }
  });
  if (!thread) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return std::unexpected(thread.error());
  }
  thread->detach();
  return {};
}

}  // namespace kvmem
