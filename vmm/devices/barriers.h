// The VMM's side of the guest's barriers (guest/layout.h has the page):
// it tells the spinners when a vCPU has departed, and turns a barrier's
// failure into a sentence naming the barrier and the vCPUs that never
// arrived.
//
// Why the guest decides and the VMM only marks: a spinning vCPU stays in
// the guest (no exit to wait on), so the VMM cannot see it arrive; what
// the VMM does see is a vCPU's exit. It sets that vCPU's bit in the
// departed mask, and every spinner, which reads the mask in its loop, fails
// at once. Everything read back from the page is the guest's word: it is
// only printed, and a site out of range reads as an unknown step.
//
// Thread safety: every member may be called from any vCPU's thread at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "vmm/memory/guest_memory.h"

namespace kvmem {

class Barriers {
 public:
  // `steps[i]`: vCPU i's barrier steps (guest::VcpuCode::barrier_steps);
  // one list per vCPU.
  Barriers(const GuestMemory& memory, std::vector<std::vector<std::string>> steps)
      : memory_(memory), steps_(std::move(steps)) {}

  // vCPU `vcpu` exited: sets its bit in the guest's departed mask, so a
  // vCPU waiting at a barrier it never reached fails. A no-op on a VM of
  // one vCPU, whose barriers never wait.
  void departed(unsigned vcpu);

  // The message of kFailBarrierTimeout or kFailBarrierStranded from vCPU
  // `vcpu`: site is the guest's 1-based barrier step, number the barrier's
  // (generation + 1), arrivals the count it read last, extra the timeout in
  // ms or the departed mask it saw.
  std::string failure(unsigned vcpu, uint64_t reason, uint64_t site, uint64_t number, uint64_t arrivals,
                      uint64_t extra) const;

 private:
  const GuestMemory& memory_;
  const std::vector<std::vector<std::string>> steps_;
  std::atomic<uint64_t> departed_{0};  // the VMM's own copy of the mask: the guest's may be scribbled on
};

}  // namespace kvmem
