// How a VM's run ended, as a kind: stress, the report and the exit code
// decide by it, never by the wording of a message.
#pragma once

namespace kvmem {

// Why a run ended the way it did. Stress and the report classify runs by
// kind, never by the wording of the message.
enum class FailureKind {
  kNone,        // the guest exited (with any code)
  kIntegrity,   // the guest read what it did not expect: verify, or a free report's status
  kGuest,       // the guest misbehaved: an exception, a bad port or address, a halt, a failed check
  kTimeout,     // the watchdog fired
  kHost,        // the host could not go on: KVM, a syscall, a resource limit
  kMemoryLimit, // the VMM stopped the VM: the host's memory limit would be passed
  kStopped,     // the VMM stopped the VM on request (a signal)
  kSnapshot,    // a lazily restored VM's snapshot data was damaged or could not be loaded (exit 2)
};
// "none", "integrity", "guest", "timeout", "host", "memory_limit", "stopped", "snapshot".
const char* failure_kind_name(FailureKind k);

}  // namespace kvmem
