// What one VM is made of: plain values, no JSON. config/ parses configs
// into it; Vm::create() builds a VM from it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "guest/boot.h"
#include "guest/program.h"
#include "memory/range.h"
#include "vmm/memory/backing.h"
#include "vmm/memory/prefault.h"

namespace kvmem {

// A window: `length` bytes of the shared file `file` from `offset`, shown
// to the guest at guest-physical `at` (outside RAM). Read-only unless
// `writable` and the file is not sealed against writes.
struct WindowConfig {
  std::string file;
  uint64_t at = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool writable = true;

  GuestRange guest() const { return GuestRange(at, at + length); }
};

struct VmConfig {
  std::string name;
  // The config this came from, as one VM's JSON config with its name and
  // the files its windows show (config/vm_config.h sets it; empty for a
  // VmConfig made in code). Snapshots keep it, and a restore parses it again.
  std::string source;
  uint64_t memory = 0;  // bytes of guest RAM at guest-physical 0
  unsigned vcpus = 1;
  uint64_t timeout_ms = 10'000;
  guest::PageSize page_size = guest::PageSize::k2M;
  uint64_t ram_unit = 16ull << 20;  // RAM is allocated in pieces of this size
  std::vector<WindowConfig> windows;  // sorted by `at`, disjoint, outside RAM
  std::vector<guest::Step> program;  // what every vCPU runs, unless `programs` is given
  // One step list per vCPU (vcpus of them) when not empty; then `program`
  // is unused.
  std::vector<std::vector<guest::Step>> programs;
  // Where RAM lives (vmm/memory/backing.h): memfd, memfd-thp and hugetlb
  // RAM comes from the MemoryFile given to Vm::create, which must be of
  // that backing; anon RAM from an anonymous mapping of the VM's own.
  RamBacking backing = RamBacking::kMemfd;
  // Host-side population of RAM (vmm/memory/prefault.h): eager in
  // Vm::create, ahead while run() runs the guest.
  Prefault prefault = Prefault::kNone;
  unsigned prefault_threads = 1;        // ahead: 0 lets the engine pick
  uint64_t prefault_chunk = 2ull << 20;  // ahead: bytes a thread takes at a time
  // The order the guest uses RAM in (one range per vCPU's slice, say);
  // empty: one lane of all RAM.
  std::vector<GuestRange> prefault_lanes;

  PrefaultOptions prefault_options() const {
    return {.threads = prefault_threads, .chunk = prefault_chunk, .lanes = prefault_lanes};
  }

  // Each vCPU's steps, vcpus lists: `programs`, or `program` for each.
  std::vector<std::vector<guest::Step>> vcpu_programs() const {
    if (!programs.empty()) return programs;
    return std::vector<std::vector<guest::Step>>(vcpus ? vcpus : 1, program);
  }
  guest::Machine machine() const { return {.ram_bytes = memory, .vcpus = vcpus ? vcpus : 1}; }
};

}  // namespace kvmem
