#include "base/check.h"

#include <cstdio>
#include <cstdlib>

namespace kvmem {

void check_failed(const char* expr, const char* file, int line, const std::string& detail) {
  std::fprintf(stderr, "kvmem: invariant violated at %s:%d: %s\n", file, line, expr);
  if (!detail.empty()) std::fprintf(stderr, "kvmem: %s\n", detail.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace kvmem
