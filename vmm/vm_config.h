// What one VM is made of: plain values, no JSON. config/ parses configs
// into it; Vm::create() builds a VM from it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "guest/boot.h"
#include "guest/program.h"

namespace kvmem {

struct VmConfig {
  std::string name;
  uint64_t memory = 0;  // bytes of guest RAM at guest-physical 0
  unsigned vcpus = 1;
  uint64_t timeout_ms = 10'000;
  guest::PageSize page_size = guest::PageSize::k2M;
  uint64_t ram_unit = 16ull << 20;  // RAM is allocated in pieces of this size
  std::vector<guest::Step> program;
};

}  // namespace kvmem
