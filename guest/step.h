// The steps a guest program is made of: one struct per op, and Step, the
// variant of them all.
//
// Every address a step names is guest-physical; the guest's page tables are
// an identity map, so the code uses them as they are. config/steps.cc parses
// and validates steps from JSON; stress and the benchmarks build them on the
// host. guest::build() (guest/program.h) assembles them.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "memory/range.h"

namespace kvmem::guest {

// What a word of guest memory should hold, as a function of its address.
//
// `origin` is the address that counts as 0: the word at gpa is the one the
// pattern has at gpa - origin (mod 2^64). A file the host filled with the
// pattern's words of its offsets, seen through a window at guest-physical
// W, verifies with origin W: the window's first word is the file's word 0.
struct Pattern {
  enum class Kind { kZero, kAddress, kSeed, kByte };
  Kind kind = Kind::kZero;
  uint64_t arg = 0;  // the seed, or the byte
  uint64_t origin = 0;

  // The 64-bit word at guest-physical address gpa. The guest computes the
  // same values in its own code; tests and the VMM use this to check it.
  uint64_t word(uint64_t gpa) const;
  // "zero", "address", "seed 42", "byte 0xab"; "seed 42 from 0x40000000"
  // with an origin.
  std::string describe() const;
};

// A fixed 64-bit mix (MurmurHash3's finaliser) of addr ^ seed.
uint64_t seed_mix(uint64_t addr, uint64_t seed);

enum class FreeMode { kSync, kAsync };

// Deliberate misbehaviour, to see how the VMM reports it.
enum class FaultKind { kDivideByZero, kInvalidOpcode, kBreakpoint, kUnmappedRead, kHalt, kUnknownPort, kSpin };

struct Step;

// Writes the text to the console, one hypercall per abi::kConsoleMax bytes.
struct Print {
  std::string text;
};

// Writes every word of [at, at + length).
struct Fill {
  uint64_t at = 0;
  uint64_t length = 0;
  Pattern pattern;
};

// Writes (or reads) one word every `stride` bytes of [at, at + length).
//
// With `samples` (not 0), each access is timed: the TSC is read (after an
// lfence) before and after it, and the difference in ticks goes to the
// 8-byte word samples + 8·i for the i-th access. rdtsc is native at CPL3,
// so the loop makes no exit; the host reads the samples when the run is
// over. The samples' words (timed_accesses() of them) lie in RAM, apart
// from the touched range (config/ checks it).
struct Touch {
  uint64_t at = 0;
  uint64_t length = 0;
  uint64_t stride = 4096;
  bool write = true;
  Pattern pattern{Pattern::Kind::kAddress, 0};
  uint64_t samples = 0;

  // The accesses the loop makes: one per stride that starts in the range.
  uint64_t accesses() const { return length ? (length - 1) / stride + 1 : 0; }
};

// Reads every word of [at, at + length); the first mismatch fails the run.
struct Verify {
  uint64_t at = 0;
  uint64_t length = 0;
  Pattern pattern;
};

// Runs `body` `count` (>= 1) times.
struct Loop {
  uint64_t count = 1;
  std::vector<Step> body;
};

// A raw hypercall; with `expect`, any other status fails the run.
struct Hypercall {
  uint32_t nr = 0;
  std::array<uint64_t, 6> args{};  // rdi, rsi, rdx, r10, r8, r9
  std::optional<int64_t> expect;
};

struct Exit {
  uint64_t code = 0;
};

struct Fault {
  FaultKind kind = FaultKind::kSpin;
};

// Hands [at, at + length) back in `granule`-sized ranges every `stride`
// bytes (0: every granule, back to back), `batch` ranges per report.
struct Free {
  uint64_t at = 0;
  uint64_t length = 0;
  uint64_t granule = 4096;
  uint64_t stride = 0;
  uint64_t batch = 64;
  FreeMode mode = FreeMode::kSync;

  uint64_t stride_or_granule() const { return stride ? stride : granule; }
};

// Reports exactly these ranges, hostile ones included; each status is
// checked against `expects[i]` where one is given.
struct Report {
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // (gpa, length)
  std::vector<std::optional<int64_t>> expects;        // one per range
  FreeMode mode = FreeMode::kSync;
};

// Writes `value` to an 8-bit I/O port.
struct Out {
  uint8_t port = 0;
  uint32_t value = 0;
};

// Stores the TSC in result slot `slot` (guest/program.h: ResultSlots).
struct Timestamp {
  uint64_t slot = 0;
};

// Stores the 8-byte word `value` at `at` (8-byte aligned) with one `mov`:
// a signal for a later wait_word, here or in another VM that shares the
// page through a file window.
struct StoreWord {
  uint64_t at = 0;
  uint64_t value = 0;
};

// Reads the word at `at` (8-byte aligned), with a `pause` between reads,
// until it equals `value`. When `timeout_ms` milliseconds of the guest's
// TSC pass first, the run fails (abi::kFailWaitTimeout) naming the address,
// `value`, the last word read and the timeout. The TSC's rate comes from
// the boot info page (abi::BootInfo).
struct WaitWord {
  uint64_t at = 0;
  uint64_t value = 0;
  uint64_t timeout_ms = 1000;
};

// Waits until every vCPU of the VM has reached a barrier: the vCPUs of a
// multi-vCPU VM start the next phase together (docs/config.md, "vcpus").
// Reusable: the n-th barrier a vCPU reaches meets the n-th of each other
// vCPU. On a one-vCPU VM it passes at once. A vCPU waiting at it fails the
// run (abi::kFailBarrierStranded) once another vCPU has exited without
// arriving, and (abi::kFailBarrierTimeout) after `timeout_ms` of its TSC
// when that is not 0.
struct Barrier {
  uint64_t timeout_ms = 0;  // 0: wait as long as the VM runs
};

// Asks the VMM to save the VM (kHcSnapshot) once every vCPU has reached
// its snapshot step, then goes on, or ends the VM as a success (`exit`).
// Without a place to write snapshots (`kvmem run --snapshot-to`) it does
// nothing. A VM restored from the snapshot starts right after it.
struct Snapshot {
  bool exit = false;  // "then": "exit"
};

using StepVariant = std::variant<Print, Fill, Touch, Verify, Loop, Hypercall, Exit, Fault, Free, Report, Out, Timestamp,
                                 StoreWord, WaitWord, Barrier, Snapshot>;

// One step of a program: exactly one of the ops above.
struct Step : StepVariant {
  using StepVariant::StepVariant;

  template <class Op>
  bool is() const { return std::holds_alternative<Op>(*this); }
  template <class Op>
  const Op& as() const { return std::get<Op>(*this); }
  template <class Op>
  Op& as() { return std::get<Op>(*this); }
};

inline constexpr uint64_t kMaxReportRanges = 64;  // ranges in one `report` step
// Status the guest leaves in a report entry before the VMM answers: no
// answer reads as this (the VMM writes only 0 or a negative errno).
inline constexpr int64_t kStatusUnanswered = 1;

// The config's name of each op: "print", "fill", ... "timestamp",
// "store_word", "wait_word", "barrier".
const char* op_name(const Step& s);

// Names used in configs: "divide-by-zero", "invalid-opcode", "breakpoint",
// "unmapped-read", "halt", "unknown-port", "spin".
const char* fault_name(FaultKind f);
inline constexpr int kFaultKinds = static_cast<int>(FaultKind::kSpin) + 1;

// True when a step of `steps`, or one inside a loop, uses the asynchronous
// free ring.
bool uses_free_ring(const std::vector<Step>& steps);

// The guest-physical range holding every address the step's own code reads
// or writes (fill, touch, verify, and the one word of store_word and
// wait_word) or hands back (free); nullopt for the ops
// that walk no memory of their own (a loop's body is its own steps; a
// report's ranges are hostile on purpose and checked by the VMM).
std::optional<GuestRange> memory_walked(const Step& s);

// True when a step of `steps`, or one inside a loop, needs the boot info
// (abi::BootInfo): a wait_word or a barrier with a timeout, which count
// TSC ticks at its rate.
bool uses_boot_info(const std::vector<Step>& steps);

// The last word a touch step touches: at + k * stride for the largest k
// that stays below at + length. Precondition: the range does not wrap.
uint64_t last_touched(const Touch& t);

// The number of result slots the program writes: its largest timestamp
// slot + 1, or 0 when it has no timestamp step.
uint64_t result_slots_used(const std::vector<Step>& steps);

// How many barriers a run of `steps` to its end passes: a loop's body
// counts `count` times (saturating at UINT64_MAX). config/ asks every
// vCPU's program for the same number.
uint64_t barriers_passed(const std::vector<Step>& steps);
// True when a step of `steps`, or one inside a loop, is a barrier.
bool uses_barrier(const std::vector<Step>& steps);
// Snapshot steps the steps pass, counting loops (saturating, as barriers).
uint64_t snapshots_passed(const std::vector<Step>& steps);
// Where each barrier step of `steps` is, in program order (a loop's body
// once): its index, and inside a loop "index/body/index" ("3",
// "2/body/0"), as a config's pointer below the vCPU's step list reads.
std::vector<std::string> barrier_steps(const std::vector<Step>& steps);

}  // namespace kvmem::guest
