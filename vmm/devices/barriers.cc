#include "vmm/devices/barriers.h"

#include <fmt/format.h>

#include "guest/abi.h"
#include "guest/layout.h"

namespace kvmem {
namespace {

namespace layout = guest::layout;

// The barrier page is guest memory a running vCPU writes: atomic accesses.
uint64_t load(const GuestMemory& m, uint64_t gpa) {
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(m.host(GuestAddr(gpa)))).load(std::memory_order_acquire);
}

// "vCPU 1" or "vCPUs 1, 2".
std::string vcpu_list(const std::vector<unsigned>& v) {
  return fmt::format("vCPU{} {}", v.size() == 1 ? "" : "s", fmt::join(v, ", "));
}

}  // namespace

void Barriers::departed(unsigned vcpu) {
  if (steps_.size() <= 1 || vcpu >= 64) return;
  const uint64_t bit = uint64_t{1} << vcpu;
  departed_.fetch_or(bit);
  std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(memory_.host(GuestAddr(layout::kBarrierDeparted))))
      .fetch_or(bit, std::memory_order_seq_cst);
}

std::string Barriers::failure(unsigned vcpu, uint64_t reason, uint64_t site, uint64_t number, uint64_t arrivals,
                              uint64_t extra) const {
  const std::vector<std::string>* mine = vcpu < steps_.size() ? &steps_[vcpu] : nullptr;
  const std::string where = mine && site >= 1 && site <= mine->size() ? fmt::format("step {}", (*mine)[site - 1])
                                                                      : fmt::format("unknown step {}", site);
  std::vector<unsigned> missing, gone;
  const uint64_t mask = departed_.load();
  for (unsigned v = 0; v < steps_.size(); v++) {
    if (load(memory_, layout::barrier_arrival_addr(v)) != number) missing.push_back(v);
    if (v < 64 && (mask >> v & 1)) gone.push_back(v);
  }
  const std::string never = missing.empty() ? std::string("every vCPU had arrived")
                                            : fmt::format("{} never arrived", vcpu_list(missing));
  if (reason == abi::kFailBarrierTimeout)
    return fmt::format("barrier {} ({} of vCPU {}'s program) timed out after {} ms with {} of {} vCPUs there: {}",
                       number, where, vcpu, extra, arrivals, steps_.size(), never);
  return fmt::format("barrier {} ({} of vCPU {}'s program) cannot complete: {} exited without arriving; {}", number,
                     where, vcpu, gone.empty() ? "a vCPU" : vcpu_list(gone), never);
}

}  // namespace kvmem
