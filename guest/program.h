// Guest programs: a list of steps (guest/step.h), assembled by asmjit into
// x86-64 code that runs at CPL3 from the program area of the boot area.
//
// build() is the one way a program is made, for `kvmem run`, stress, the
// benchmarks and the tests alike. The VMM validates steps from configs
// (config/steps.cc) before they get here; build() only checks what it alone
// can know, such as the size of the code.
#pragma once

#include <cstdint>
#include <vector>

#include "base/error.h"
#include "guest/step.h"

namespace kvmem::guest {

// What build() needs to know of the VM the program will run in.
struct Machine {
  uint64_t ram_bytes = 0;
};

// The 64-bit result slots the program's timestamp steps write, for the host
// to read after the run: slot i at gpa + 8 * i, at the top of RAM
// (guest/layout.h). count is 0 when the program writes none.
struct ResultSlots {
  uint64_t gpa = 0;
  uint64_t count = 0;
};

struct Image {
  std::vector<uint8_t> bytes;  // to be copied to guest-physical `base`
  uint64_t base = 0;
  uint64_t entry = 0;
  ResultSlots results;
  // The VMM must write abi::BootInfo before the program runs. Only programs
  // that read it ask: every page written at boot is a page committed.
  bool needs_boot_info = false;
};

// Assembles steps into code for the program area of `vm`. An implicit
// `exit 0` follows the last step.
Result<Image> build(const std::vector<Step>& steps, const Machine& vm);

}  // namespace kvmem::guest
