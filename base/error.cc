#include "base/error.h"

#include <cstring>

namespace kvmem {

std::string errno_name(int err) {
  if (const char* name = strerrorname_np(err)) return name;
  return fmt::format("errno {}", err);
}

std::unexpected<Error> sys_fail(std::string_view what, std::string_view call, int err) {
  return std::unexpected(
      Error{err, fmt::format("{}: {}: {} ({})", what, call, errno_name(err), strerror(err))});
}

}  // namespace kvmem
