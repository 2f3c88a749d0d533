#include "base/thread.h"

#include <atomic>
#include <cerrno>
#include <system_error>

namespace kvmem {
namespace {

std::atomic<unsigned> g_injected_failures{0};

bool take_injected_failure() {
  unsigned n = g_injected_failures.load();
  while (n > 0 && !g_injected_failures.compare_exchange_weak(n, n - 1)) {
  }
  return n > 0;
}

}  // namespace

void fail_next_thread_starts(unsigned count) { g_injected_failures.store(count); }

Result<std::thread> start_thread(std::string_view what, std::function<void()> body) {
  const std::string context = fmt::format("cannot start {}", what);
  if (take_injected_failure()) return sys_fail(context, "pthread_create", EAGAIN);
  // The one place a library exception is caught and turned into an error:
  // std::thread reports pthread_create's errno as a system_error.
  try {
    return std::thread(std::move(body));
  } catch (const std::system_error& e) {
    return sys_fail(context, "pthread_create", e.code().value() ? e.code().value() : EAGAIN);
  }
}

}  // namespace kvmem
