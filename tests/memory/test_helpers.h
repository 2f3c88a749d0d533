// Helpers for the memory tests.
#pragma once

#include <csignal>
#include <cstdio>
#include <functional>
#include <string>

#include "tests/support.h"

namespace kvmem::test {

// dies_with, with the child's own Catch2 fatal-signal report silenced: the
// child restores the default SIGABRT action and drops its stdout, so a death
// that is expected does not print a failure summary.
inline bool aborts_with(const std::function<void()>& fn, const std::string& needle,
                        std::string* output = nullptr) {
  return dies_with(
      [&] {
        std::signal(SIGABRT, SIG_DFL);
        if (!std::freopen("/dev/null", "w", stdout)) return;
        fn();
      },
      needle, output);
}

}  // namespace kvmem::test
