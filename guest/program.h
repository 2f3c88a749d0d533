// Guest programs: a list of steps (guest/step.h), assembled by asmjit into
// x86-64 code that runs at CPL3 from the program area of the boot area.
//
// build() is the one way a program is made, for `kvmem run`, stress, the
// benchmarks and the tests alike. The VMM validates steps from configs
// (config/steps.cc) before they get here; build() only checks what it alone
// can know, such as the size of the code.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "guest/step.h"

namespace kvmem::guest {

// What build() needs to know of the VM the program will run in.
struct Machine {
  uint64_t ram_bytes = 0;
  unsigned vcpus = 1;  // 1..layout::kMaxVcpus: barriers count them, report lists and free rings are sliced by them
};

// The 64-bit result slots the program's timestamp steps write, for the host
// to read after the run: slot i at gpa + 8 * i, at the top of RAM
// (guest/layout.h). count is 0 when the program writes none.
struct ResultSlots {
  uint64_t gpa = 0;
  uint64_t count = 0;
};

// Where one vCPU's program starts and where its timestamps go.
struct VcpuCode {
  uint64_t entry = 0;
  ResultSlots results;
  // Each barrier step's place in the program (guest::barrier_steps), so
  // the VMM can name the one a vCPU waits at; empty when it has none.
  std::vector<std::string> barrier_steps;
};

struct Image {
  std::vector<uint8_t> bytes;  // to be copied to guest-physical `base`
  uint64_t base = 0;
  uint64_t entry = 0;  // vCPU 0's, as vcpus[0]
  ResultSlots results;  // vCPU 0's, as vcpus[0]
  // One per vCPU. An Image made by hand may leave it empty: then it is
  // one vCPU's, at `entry` with `results`.
  std::vector<VcpuCode> vcpus;
  // The VMM must write abi::BootInfo before the program runs. Only programs
  // that read it ask: every page written at boot is a page committed.
  bool needs_boot_info = false;
};

// Assembles steps into code for the program area of `vm`. An implicit
// `exit 0` follows the last step. Every vCPU of `vm` runs these steps.
Result<Image> build(const std::vector<Step>& steps, const Machine& vm);

// One program per vCPU (programs.size() == vm.vcpus), one after another in
// the program area, each with its entry and result slots: vCPU 0's code
// first, its slots at the top of RAM, vCPU 1's below them, and so on. One
// program makes the same bytes as build(steps, vm), which is build_vcpus() of
// vm.vcpus copies of steps.
Result<Image> build_vcpus(std::span<const std::vector<Step>> programs, const Machine& vm);

}  // namespace kvmem::guest
