// Guest programs: a list of steps, assembled by asmjit into x86-64 code that
// runs at CPL3 in the boot area (guest/abi.h: [kProgramAddr, kProgramEnd)).
//
// Every address a step names is guest-physical; the guest's page tables are
// an identity map, so the code uses them as they are. The VMM validates steps
// (vmm/config) before they get here; build_program() only checks what it
// alone can know, such as the size of the code.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"

namespace kvmem::guest {

// What a word of guest memory should hold, as a function of its address.
struct Pattern {
  enum class Kind { kZero, kAddress, kSeed, kByte };
  Kind kind = Kind::kZero;
  uint64_t arg = 0;  // the seed, or the byte

  // The 64-bit word at guest-physical address gpa. The guest computes the
  // same values in its own code; tests and the VMM use this to check it.
  uint64_t word(uint64_t gpa) const;
  std::string describe() const;  // "zero", "address", "seed 42", "byte 0xab"
};

// A fixed 64-bit mix (MurmurHash3's finaliser) of addr ^ seed.
uint64_t seed_mix(uint64_t addr, uint64_t seed);

struct Step {
  enum class Op { kPrint, kFill, kTouch, kVerify, kLoop, kHypercall, kExit, kFault, kFree, kReport, kOut, kTimestamp };
  enum class FreeMode { kSync, kAsync };
  // Deliberate misbehaviour, to see how the VMM reports it.
  enum class Fault { kDivideByZero, kInvalidOpcode, kBreakpoint, kUnmappedRead, kHalt, kUnknownPort, kSpin };
  Op op = Op::kExit;

  std::string text;          // print
  uint64_t at = 0;           // fill, touch, verify: guest-physical start
  uint64_t length = 0;       // fill, touch, verify: bytes
  uint64_t stride = 4096;    // touch: bytes between touched words
  bool write = true;         // touch: write the pattern (else read)
  Pattern pattern;           // fill, verify, touch
  uint64_t count = 0;        // loop: iterations, >= 1
  std::vector<Step> body;    // loop
  uint32_t nr = 0;           // hypercall: number
  std::array<uint64_t, 6> args{};  // hypercall: rdi, rsi, rdx, r10, r8, r9
  std::optional<int64_t> expect;   // hypercall: status the guest demands
  uint64_t code = 0;         // exit: exit code
  Fault fault = Fault::kSpin;  // fault
  // free: [at, at + length) in `granule`-sized ranges every `stride_bytes`
  // (default: back to back), `batch` per report.
  // report: the literal `ranges`, each status checked against `expects`
  // where one is given.
  FreeMode mode = FreeMode::kSync;  // free, report
  uint64_t granule = 4096;          // free
  uint64_t stride_bytes = 0;        // free: start-to-start distance of ranges; 0 = granule (contiguous)
  uint64_t batch = 64;              // free
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // report: (gpa, length)
  std::vector<std::optional<int64_t>> expects;        // report: one per range
  uint64_t slot = 0;         // timestamp: result slot for the TSC value
  uint8_t port = 0;          // out: an 8-bit port
  uint32_t value = 0;        // out: the 32-bit value written

  uint64_t stride_or_granule() const;
  // True when this step or one inside it uses the asynchronous free ring.
  bool uses_free_ring() const;

  // Builders for programs made on the host (stress, benchmarks).
  static Step range(Op op, uint64_t at, uint64_t length, Pattern pattern);  // fill, touch, verify
  static Step free(uint64_t at, uint64_t length, uint64_t granule, FreeMode mode, uint64_t batch);
  static Step timestamp(uint64_t slot);
};

inline constexpr uint64_t kMaxReportRanges = 64;  // ranges in one `report` step
// Status the guest leaves in a report entry before the VMM answers: no
// answer reads as this (the VMM writes only 0 or a negative errno).
inline constexpr int64_t kStatusUnanswered = 1;

// Names used in configs: "divide-by-zero", "invalid-opcode", "breakpoint",
// "unmapped-read", "halt", "unknown-port", "spin".
const char* fault_name(Step::Fault f);

struct Image {
  std::vector<uint8_t> bytes;  // to be copied to guest-physical `base`
  uint64_t base = 0;
  uint64_t entry = 0;
};

// Assembles steps into code for guest-physical [base, limit). An implicit
// `exit 0` follows the last step.
Result<Image> build_program(const std::vector<Step>& steps, uint64_t base, uint64_t limit);

}  // namespace kvmem::guest
