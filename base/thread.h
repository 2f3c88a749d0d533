// Starting a thread without an exception: std::thread's constructor throws
// std::system_error when the host cannot make one (a pids or task limit,
// RLIMIT_NPROC, or no address space left for its stack under ulimit -v).
// A guest can be what asks for a thread (the free ring's setup), so every
// thread kvmem starts on a path the outside world can reach goes through
// start_thread() and gets the failure back as a value.
#pragma once

#include <functional>
#include <string_view>
#include <thread>

#include "base/error.h"

namespace kvmem {

// Starts `body` on a new thread. The error names `what` and the errno
// ("cannot start the free ring's thread: pthread_create: EAGAIN (...)").
Result<std::thread> start_thread(std::string_view what, std::function<void()> body);

// Fault injection for tests: the next `count` calls of start_thread() fail
// with EAGAIN, as they would under a thread limit, without starting anything.
void fail_next_thread_starts(unsigned count);

}  // namespace kvmem
