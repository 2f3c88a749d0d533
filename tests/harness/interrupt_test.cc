// harness/interrupt: the signal thread starts through start_thread.
#include <catch2/catch.hpp>

#include <signal.h>

#include "base/thread.h"
#include "harness/interrupt.h"

using namespace kvmem;

TEST_CASE("a signal thread that cannot start (injected) is an error, and the signal mask is as it was",
          "[harness][threads]") {
  sigset_t before;
  REQUIRE(pthread_sigmask(SIG_BLOCK, nullptr, &before) == 0);
  fail_next_thread_starts(1);
  auto st = start_signal_thread();
  fail_next_thread_starts(0);
  REQUIRE_FALSE(st);
  CHECK(st.error().message ==
        "cannot start the signal thread: pthread_create: EAGAIN (Resource temporarily unavailable)");
  sigset_t after;
  REQUIRE(pthread_sigmask(SIG_BLOCK, nullptr, &after) == 0);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) CHECK(sigismember(&after, s) == sigismember(&before, s));
}
