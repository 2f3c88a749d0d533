// Program steps, parsed from untrusted JSON: one small parser per op.
//
// Each rejection names the JSON pointer of the bad value and why:
// "/program/3/length: 0xc is not a multiple of 8". docs/config.md documents
// every op and key.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "config/fields.h"
#include "guest/step.h"

namespace kvmem {

inline constexpr size_t kMaxSteps = 10'000;
inline constexpr unsigned kMaxLoopDepth = 8;

// Where a VM's steps may walk: RAM [0, ram) above the boot area, and its
// windows (sorted, disjoint, above RAM). A step's range lies wholly in RAM
// or wholly in one window.
struct GuestLayout {
  uint64_t ram = 0;
  std::vector<GuestRange> windows;
  unsigned vcpus = 1;  // 1..guest::layout::kMaxVcpus
};

// Parses a VM's "program" (at pointer p): an array of steps for a VM laid
// out as `layout`.
Result<std::vector<guest::Step>> parse_program(const nlohmann::json& j, const json_fields::Ptr& p,
                                               const GuestLayout& layout);

// Parses the programs of the VM object `vm` (at pointer root) of
// layout.vcpus vCPUs: exactly one of "program" (every vCPU runs it; one
// list returned) and "programs" (an array of one step array per vCPU;
// layout.vcpus lists returned). Every step must keep clear of every vCPU's
// result slots, and every vCPU must pass the same number of barriers.
Result<std::vector<std::vector<guest::Step>>> parse_programs(const nlohmann::json& vm, const json_fields::Ptr& root,
                                                             const GuestLayout& layout);

// A pattern: "zero", "address", {"seed": N} or {"byte": N}.
Result<guest::Pattern> parse_pattern(const nlohmann::json& j, const json_fields::Ptr& p);

}  // namespace kvmem
