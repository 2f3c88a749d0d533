// Errors the outside world can cause: syscalls, configs, guests, files.
//
// A failure is a value, not an exception: functions that can fail return
// Result<T> (std::expected) whose Error carries a sentence and, for host
// calls, the errno. Messages read as sentences and name the call:
//   "cannot punch hole [0x1000, 0x2000) in memory file: fallocate: EINVAL (Invalid argument)"
// Broken internal invariants are not Errors; see base/check.h.
#pragma once

#include <expected>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

namespace kvmem {

struct [[nodiscard]] Error {
  int code = 0;         // errno (positive) when a host call failed, else 0
  std::string message;  // the whole sentence, ready to print

  // Prefixes context: Error{"x"}.context("cannot boot vm0") -> "cannot boot vm0: x".
  Error context(std::string_view what) const& {
    return Error{code, fmt::format("{}: {}", what, message)};
  }
};

template <class T>
using Result = std::expected<T, Error>;
using Status = std::expected<void, Error>;

// "EINVAL", or "errno 1234" for values the C library cannot name.
std::string errno_name(int err);

// An Error with no errno.
template <class... Args>
std::unexpected<Error> fail(fmt::format_string<Args...> f, Args&&... args) {
  return std::unexpected(Error{0, fmt::format(f, std::forward<Args>(args)...)});
}

// An Error from a failed host call: "<what>: <call>: EINVAL (Invalid argument)".
std::unexpected<Error> sys_fail(std::string_view what, std::string_view call, int err);

}  // namespace kvmem

// Early return for Result/Status: evaluates expr; on failure returns its
// Error from the enclosing function (which returns a Result or Status), else
// yields the value (nothing for a Status). Keeps the happy path readable:
//   auto vm = KVMEM_TRY(kvm.create_vm());
//   KVMEM_TRY(vm.enable_cap(cap, 1));
// A GNU statement expression, which g++ and clang both take.
#define KVMEM_TRY(expr)                                               \
  ({                                                                  \
    auto&& kvmem_try_r_ = (expr);                                     \
    if (!kvmem_try_r_) [[unlikely]]                                   \
      return ::std::unexpected(::std::move(kvmem_try_r_).error());    \
    ::std::move(kvmem_try_r_).value();                                \
  })

// The same, with context prefixed to the error: KVMEM_TRY_CTX(f(), "cannot map RAM").
#define KVMEM_TRY_CTX(expr, what)                                          \
  ({                                                                       \
    auto&& kvmem_try_r_ = (expr);                                          \
    if (!kvmem_try_r_) [[unlikely]]                                        \
      return ::std::unexpected(kvmem_try_r_.error().context(what));        \
    ::std::move(kvmem_try_r_).value();                                     \
  })
