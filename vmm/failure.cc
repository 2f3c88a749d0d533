#include "vmm/failure.h"

namespace kvmem {

const char* failure_kind_name(FailureKind k) {
  switch (k) {
    case FailureKind::kNone: return "none";
    case FailureKind::kIntegrity: return "integrity";
    case FailureKind::kGuest: return "guest";
    case FailureKind::kTimeout: return "timeout";
    case FailureKind::kHost: return "host";
    case FailureKind::kMemoryLimit: return "memory_limit";
    case FailureKind::kStopped: return "stopped";
    case FailureKind::kSnapshot: return "snapshot";
  }
  return "?";
}

}  // namespace kvmem
