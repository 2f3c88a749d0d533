// build(), and the Emitter's memory and control steps (guest/emitter.h).
#include "guest/program.h"

#include <algorithm>
#include <cstddef>
#include <string>

#include <fmt/format.h>

#include "guest/abi.h"
#include "guest/emitter.h"
#include "guest/layout.h"

namespace kvmem::guest {

using namespace asmjit;
using namespace asmjit::x86;

namespace {

// seed_mix()'s constants (guest/step.cc), as the guest computes them.
constexpr uint64_t kMix1 = 0xff51afd7ed558ccdull;
constexpr uint64_t kMix2 = 0xc4ceb9fe1a85ec53ull;

// Records the first asmjit error instead of throwing or aborting.
class Errors : public ErrorHandler {
 public:
  void handleError(asmjit::Error err, const char* message, BaseEmitter*) override {
    if (!first) {
      first = err;
      text = message;
    }
  }
  asmjit::Error first = kErrorOk;
  std::string text;
};

}  // namespace

void Emitter::exit(uint64_t code) {
  a_.mov(rdi, code);
  a_.mov(eax, abi::kHcExit);
  a_.out(imm(abi::kHypercallPort), eax);
  a_.ud2();  // the VMM never resumes an exited guest
}

// rax comes back 0 (taken, here and in every VM restored from it) or
// kSnapshotNotTaken; the VMM keeps every other register as it was.
void Emitter::emit(const Snapshot& s) {
  a_.mov(rdi, s.exit ? abi::kSnapshotExit : abi::kSnapshotContinue);
  a_.mov(eax, abi::kHcSnapshot);
  a_.out(imm(abi::kHypercallPort), eax);
}

void Emitter::emit_data() {
  for (auto& [label, text] : strings_) {
    a_.bind(label);
    a_.embed(text.data(), text.size());
  }
}

void Emitter::fail_with(uint64_t reason) {
  a_.mov(edi, reason);
  a_.mov(eax, abi::kHcFail);
  a_.out(imm(abi::kHypercallPort), eax);
  a_.ud2();
}

void Emitter::read_tsc() {
  a_.rdtsc();
  a_.shl(rdx, 32);
  a_.or_(rax, rdx);
}

void Emitter::emit(const Timestamp& s) {
  read_tsc();
  a_.mov(r11, results_.gpa + s.slot * 8);
  a_.mov(qword_ptr(r11), rax);
}

// A generation barrier: read the generation, arrive (lock xadd on the
// count); the last to arrive zeroes the count and then bumps the
// generation, the others spin with pause until the generation moves. x86
// keeps the two stores in order, so a vCPU released into the next barrier
// finds the count at 0. Reading the generation before arriving is safe: it
// cannot move until this vCPU has arrived too.
//
// Before arriving, the vCPU writes which barrier it waits at (number and
// step, guest/layout.h) for the VMM to name. A spinner fails the run when
// the VMM's departed mask shows a vCPU that exited, since that one never
// arrives: but only after reading the generation once more, because the
// vCPU may have exited after this barrier completed (it saw the new
// generation before it exited, and the VMM set its bit after that; x86
// orders the spinner's two loads, so the second sees the generation move).
// r12 the TSC at arrival and r13 the ticks allowed, with a timeout.
void Emitter::emit(const Barrier& s) {
  const uint64_t site = ++barrier_sites_;
  if (vcpus_ <= 1) return;  // nobody to wait for
  Label spin = a_.newLabel(), stranded = a_.newLabel(), done = a_.newLabel();
  a_.mov(r8, layout::kBarrierGeneration);
  a_.mov(rcx, qword_ptr(r8));
  a_.lea(r11, ptr(rcx, 1));
  a_.mov(r10, layout::barrier_arrival_addr(vcpu_));
  a_.mov(qword_ptr(r10), r11);
  a_.mov(r10, layout::barrier_site_addr(vcpu_));
  a_.mov(qword_ptr(r10), site);
  if (s.timeout_ms) {
    a_.mov(r13, layout::kBootInfoAddr + offsetof(abi::BootInfo, tsc_khz));
    a_.mov(r13, qword_ptr(r13));
    a_.mov(r11, s.timeout_ms);
    a_.imul(r13, r11);  // at most 3.6e6 ms (config/) at any real kHz: far below 2^63
    read_tsc();
    a_.mov(r12, rax);
  }
  a_.mov(r9, layout::kBarrierAddr);
  a_.mov(r10, layout::kBarrierDeparted);
  a_.mov(eax, 1);
  a_.lock().xadd(qword_ptr(r9), rax);
  a_.cmp(rax, vcpus_ - 1);
  a_.jne(spin);
  a_.mov(qword_ptr(r9), 0);
  a_.inc(rcx);
  a_.mov(qword_ptr(r8), rcx);
  a_.jmp(done);
  a_.bind(spin);
  a_.pause();
  a_.cmp(qword_ptr(r8), rcx);
  a_.jne(done);
  a_.cmp(qword_ptr(r10), 0);
  a_.jne(stranded);
  if (s.timeout_ms) {
    read_tsc();
    a_.sub(rax, r12);
    a_.cmp(rax, r13);  // signed, as in wait_word: a TSC that steps back reads as no time
    a_.jl(spin);
    a_.mov(r10, qword_ptr(r9));
    a_.mov(esi, site);
    a_.lea(rdx, ptr(rcx, 1));
    a_.mov(r8, s.timeout_ms);
    fail_with(abi::kFailBarrierTimeout);
  } else {
    a_.jmp(spin);
  }
  a_.bind(stranded);
  a_.cmp(qword_ptr(r8), rcx);
  a_.jne(done);
  a_.mov(r8, qword_ptr(r10));
  a_.mov(r10, qword_ptr(r9));
  a_.mov(esi, site);
  a_.lea(rdx, ptr(rcx, 1));
  fail_with(abi::kFailBarrierStranded);
  a_.bind(done);
}

void Emitter::emit(const Out& s) {
  a_.mov(eax, s.value);
  a_.out(imm(s.port), eax);
}

void Emitter::print(const std::string& text) {
  for (size_t off = 0; off < text.size(); off += abi::kConsoleMax) {
    std::string piece = text.substr(off, abi::kConsoleMax);
    Label l = a_.newLabel();
    strings_.emplace_back(l, piece);
    a_.lea(rdi, ptr(l));
    a_.mov(rsi, piece.size());
    a_.mov(eax, abi::kHcConsoleWrite);
    a_.out(imm(abi::kHypercallPort), eax);
  }
}

namespace {

// Whether the pattern's words depend on its origin.
bool shifted(const Pattern& p) {
  return p.origin != 0 && (p.kind == Pattern::Kind::kAddress || p.kind == Pattern::Kind::kSeed);
}

}  // namespace

// Loads what the pattern needs before a loop over r8.
void Emitter::pattern_setup(const Pattern& p) {
  if (shifted(p)) a_.mov(r15, p.origin);
  switch (p.kind) {
    case Pattern::Kind::kZero: a_.xor_(eax, eax); break;
    case Pattern::Kind::kByte: a_.mov(rax, p.arg * 0x0101010101010101ull); break;
    case Pattern::Kind::kAddress: break;
    case Pattern::Kind::kSeed:
      a_.mov(r12, p.arg);
      a_.mov(r13, kMix1);
      a_.mov(r14, kMix2);
      break;
  }
}

// rax = pattern word for the address in r8 (constant patterns: already there).
void Emitter::pattern_word(const Pattern& p) {
  switch (p.kind) {
    case Pattern::Kind::kZero:
    case Pattern::Kind::kByte: break;
    case Pattern::Kind::kAddress:
      a_.mov(rax, r8);
      if (shifted(p)) a_.sub(rax, r15);
      break;
    case Pattern::Kind::kSeed:
      a_.mov(rax, r8);
      if (shifted(p)) a_.sub(rax, r15);
      a_.xor_(rax, r12);
      shift_xor();
      a_.imul(rax, r13);
      shift_xor();
      a_.imul(rax, r14);
      shift_xor();
      break;
  }
}

void Emitter::shift_xor() {
  a_.mov(r11, rax);
  a_.shr(r11, 33);
  a_.xor_(rax, r11);
}

// for (r8 = at; r8 < at + length; r8 += stride) body()
// A cursor that carries past 2^64 ends the loop: it never wraps back to
// low memory (config validation refuses such strides before this).
template <class Body>
void Emitter::range_loop(uint64_t at, uint64_t length, uint64_t stride, Body body) {
  a_.mov(r8, at);
  a_.mov(r9, at + length);
  Label top = a_.newLabel(), done = a_.newLabel();
  a_.bind(top);
  body();
  if (stride <= 0x7fffffff)
    a_.add(r8, static_cast<int64_t>(stride));
  else {
    a_.mov(r11, stride);
    a_.add(r8, r11);
  }
  a_.jc(done);
  a_.cmp(r8, r9);
  a_.jb(top);
  a_.bind(done);
}

void Emitter::emit(const Fill& s) {
  pattern_setup(s.pattern);
  range_loop(s.at, s.length, 8, [&] {
    pattern_word(s.pattern);
    a_.mov(qword_ptr(r8), rax);
  });
}

void Emitter::emit(const Touch& s) {
  if (s.samples) return timed_touch(s);
  pattern_setup(s.pattern);
  range_loop(s.at, s.length, s.stride, [&] {
    if (s.write) {
      pattern_word(s.pattern);
      a_.mov(qword_ptr(r8), rax);
    } else {
      a_.mov(rcx, qword_ptr(r8));
    }
  });
}

// rbx the word to store, rdi the TSC before the access, rsi the sample
// cursor. The lfence before each rdtsc keeps it from reading the counter
// before the instructions ahead of it are done (a fault is taken before the
// access retires, so its whole cost lies between the two reads).
void Emitter::timed_touch(const Touch& s) {
  const bool constant = s.pattern.kind == Pattern::Kind::kZero || s.pattern.kind == Pattern::Kind::kByte;
  pattern_setup(s.pattern);
  if (constant) a_.mov(rbx, rax);
  a_.mov(rsi, s.samples);
  range_loop(s.at, s.length, s.stride, [&] {
    if (s.write && !constant) {
      pattern_word(s.pattern);
      a_.mov(rbx, rax);
    }
    a_.lfence();
    read_tsc();
    a_.mov(rdi, rax);
    if (s.write)
      a_.mov(qword_ptr(r8), rbx);
    else
      a_.mov(rcx, qword_ptr(r8));
    a_.lfence();
    read_tsc();
    a_.sub(rax, rdi);
    a_.mov(qword_ptr(rsi), rax);
    a_.add(rsi, 8);
  });
}

void Emitter::emit(const Verify& s) {
  Label mismatch = a_.newLabel(), done = a_.newLabel();
  pattern_setup(s.pattern);
  range_loop(s.at, s.length, 8, [&] {
    pattern_word(s.pattern);
    a_.mov(rcx, qword_ptr(r8));
    a_.cmp(rcx, rax);
    a_.jne(mismatch);
  });
  a_.jmp(done);
  a_.bind(mismatch);
  a_.mov(rsi, r8);
  a_.mov(rdx, rax);
  a_.mov(r10, rcx);
  fail_with(abi::kFailVerify);
  a_.bind(done);
}

void Emitter::emit(const StoreWord& s) {
  a_.mov(r8, s.at);
  a_.mov(rax, s.value);
  a_.mov(qword_ptr(r8), rax);
}

// r12 the TSC at the start, r13 the ticks the wait may take, rcx the word
// read last. The deadline is checked after a read that missed, so the word
// gets its last look at the deadline, and the failure names what it saw.
void Emitter::emit(const WaitWord& s) {
  Label poll = a_.newLabel(), done = a_.newLabel();
  a_.mov(r8, s.at);
  a_.mov(r9, s.value);
  a_.mov(r13, layout::kBootInfoAddr + offsetof(abi::BootInfo, tsc_khz));
  a_.mov(r13, qword_ptr(r13));
  a_.mov(r11, s.timeout_ms);
  a_.imul(r13, r11);  // at most 3.6e6 ms (config/) at any real kHz: far below 2^63
  read_tsc();
  a_.mov(r12, rax);
  a_.bind(poll);
  a_.mov(rcx, qword_ptr(r8));
  a_.cmp(rcx, r9);
  a_.je(done);
  // The spin-wait hint: it yields the core to a sibling hyperthread, and a
  // host with pause-loop exiting may give the CPU to a vCPU that has work.
  a_.pause();
  read_tsc();
  a_.sub(rax, r12);
  // Signed: should the TSC step back a little (another host CPU), the
  // elapsed time reads as negative, not as 2^64 - a few ticks.
  a_.cmp(rax, r13);
  a_.jl(poll);
  a_.mov(rsi, r8);
  a_.mov(rdx, r9);
  a_.mov(r10, rcx);
  a_.mov(r8, s.timeout_ms);
  fail_with(abi::kFailWaitTimeout);
  a_.bind(done);
}

// The counter lives on the user stack, so loops nest without registers.
void Emitter::emit(const Loop& s) {
  a_.mov(r11, s.count);
  a_.push(r11);
  Label top = a_.newLabel();
  a_.bind(top);
  steps(s.body);
  a_.dec(qword_ptr(rsp));
  a_.jnz(top);
  a_.add(rsp, 8);
}

void Emitter::emit(const Fault& s) {
  switch (s.kind) {
    case FaultKind::kDivideByZero:
      a_.xor_(ecx, ecx);
      a_.mov(eax, 1);
      a_.xor_(edx, edx);
      a_.div(ecx);
      break;
    case FaultKind::kInvalidOpcode: a_.ud2(); break;
    case FaultKind::kBreakpoint: a_.int3(); break;
    case FaultKind::kUnmappedRead:
      // 256 TiB - 8 lies past every identity mapping the boot area writes.
      a_.mov(r8, 0x0000'7fff'ffff'fff8ull);
      a_.mov(rax, qword_ptr(r8));
      break;
    case FaultKind::kHalt: a_.hlt(); break;  // privileged: #GP at CPL3
    case FaultKind::kUnknownPort: a_.out(imm(0x80), eax); break;
    case FaultKind::kSpin: {
      Label l = a_.newLabel();
      a_.bind(l);
      a_.jmp(l);
      break;
    }
  }
}

Result<Image> build(const std::vector<Step>& steps, const Machine& vm) {
  const std::vector<std::vector<Step>> programs(std::max(vm.vcpus, 1u), steps);
  return build_vcpus(programs, vm);
}

namespace {

// Each vCPU's result slots, vCPU 0's at the top of RAM, the next below.
Result<std::vector<ResultSlots>> place_results(std::span<const std::vector<Step>> programs, const Machine& vm) {
  std::vector<ResultSlots> out;
  uint64_t top = vm.ram_bytes;
  for (size_t i = 0; i < programs.size(); i++) {
    const uint64_t slots = result_slots_used(programs[i]);
    const std::string who = programs.size() > 1 ? fmt::format("vCPU {}'s guest program", i) : "the guest program";
    if (slots > layout::kMaxResultSlots)
      return fail("{} writes result slot {}, past the last one there may be ({})", who, slots - 1,
                  layout::kMaxResultSlots - 1);
    const uint64_t bytes = layout::result_slots_bytes(slots);
    if (top < abi::kBootAreaEnd || bytes > top - abi::kBootAreaEnd)
      return fail("{}'s {} result slots do not fit in RAM ({:#x} bytes) above the boot area", who, slots,
                  vm.ram_bytes);
    top -= bytes;
    out.push_back({slots ? top : 0, slots});
  }
  return out;
}

}  // namespace

Result<Image> build_vcpus(std::span<const std::vector<Step>> programs, const Machine& vm) {
  const uint64_t base = layout::kProgramAddr, limit = layout::kProgramEnd;
  if (vm.vcpus < 1 || vm.vcpus > layout::kMaxVcpus || programs.size() != vm.vcpus)
    return fail("cannot build {} guest programs for a VM of {} vCPUs (1..{})", programs.size(), vm.vcpus,
                layout::kMaxVcpus);
  const std::vector<ResultSlots> results = KVMEM_TRY(place_results(programs, vm));
  CodeHolder code;
  Errors errors;
  code.init(Environment(Arch::kX64), base);
  code.setErrorHandler(&errors);
  Assembler a(&code);
  Image img;
  for (unsigned i = 0; i < vm.vcpus; i++) {
    const std::vector<Step>& steps = programs[i];
    img.vcpus.push_back({base + a.offset(), results[i], barrier_steps(steps)});
    Emitter e(a, results[i], i, vm.vcpus);
    if (uses_free_ring(steps)) e.setup_free_ring();
    e.steps(steps);
    e.exit(0);
    e.emit_data();
    img.needs_boot_info = img.needs_boot_info || uses_boot_info(steps);
  }
  if (!errors.first) {
    code.flatten();
    code.resolveUnresolvedLinks();
    code.relocateToBase(base);
  }
  if (errors.first) return fail("cannot assemble the guest program: {}", errors.text);
  size_t size = code.codeSize();
  if (size > limit - base)
    return fail("the guest program needs {} bytes of code, more than the {} bytes it may use",
                size, limit - base);
  img.bytes.resize(size);
  code.copyFlattenedData(img.bytes.data(), size);
  img.base = base;
  img.entry = img.vcpus[0].entry;
  img.results = img.vcpus[0].results;
  return img;
}

}  // namespace kvmem::guest
