// Loud aborts for broken invariants.
//
// KVMEM_CHECK(cond, fmt, args...) is for bugs, never for input: a config, a
// guest register or a failed syscall is reported through base/error.h. When
// the condition is false the process prints the expression, where it is, and
// the formatted state, then aborts (as gVisor panics).
#pragma once

#include <string>

#include <fmt/format.h>

namespace kvmem {

[[noreturn]] void check_failed(const char* expr, const char* file, int line,
                               const std::string& detail = {});

}  // namespace kvmem

#define KVMEM_CHECK(cond, ...)                                                  \
  do {                                                                          \
    if (!(cond)) [[unlikely]]                                                   \
      ::kvmem::check_failed(#cond, __FILE__, __LINE__ __VA_OPT__(, fmt::format(__VA_ARGS__))); \
  } while (0)
