#include "guest/program.h"

#include <asmjit/x86.h>

#include "guest/abi.h"
#include "guest/layout.h"

namespace kvmem::guest {
namespace {

using namespace asmjit;
using namespace asmjit::x86;

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

// Register conventions inside generated code:
//   r8  cursor (guest-physical address)   r9  end of the range
//   rax the pattern word for r8           rcx the word read from memory
//   r11 scratch                           r12 seed   r13, r14 mix constants
// Hypercall arguments use rdi, rsi, rdx, r10, r8, r9 (guest/abi.h).
class Emitter {
 public:
  explicit Emitter(Assembler& a, ResultSlots results) : a_(a), results_(results) {}

  void steps(const std::vector<Step>& steps) {
    for (const Step& s : steps) std::visit([this](const auto& op) { emit(op); }, s);
  }

  void exit(uint64_t code) {
    a_.mov(rdi, code);
    a_.mov(eax, abi::kHcExit);
    a_.out(imm(abi::kHypercallPort), eax);
    a_.ud2();  // the VMM never resumes an exited guest
  }

  // Binds the labels of string data after the code.
  void emit_data() {
    for (auto& [label, text] : strings_) {
      a_.bind(label);
      a_.embed(text.data(), text.size());
    }
  }

 private:
  void emit(const Print& s) { print(s.text); }
  void emit(const Fill& s) { fill(s); }
  void emit(const Touch& s) { touch(s); }
  void emit(const Verify& s) { verify(s); }
  void emit(const Loop& s) { loop(s); }
  void emit(const Hypercall& s) { hypercall(s); }
  void emit(const Exit& s) { exit(s.code); }
  void emit(const Fault& s) { fault(s.kind); }
  void emit(const Free& s) { s.mode == FreeMode::kSync ? free_sync(s) : free_async(s); }
  void emit(const Report& s) { s.mode == FreeMode::kSync ? report_sync(s) : report_async(s); }
  void emit(const Timestamp& s) {
    // rdtsc runs natively at CPL3 (CR4.TSD is clear): no exit.
    a_.rdtsc();
    a_.shl(rdx, 32);
    a_.or_(rax, rdx);
    a_.mov(r11, results_.gpa + s.slot * 8);
    a_.mov(qword_ptr(r11), rax);
  }
  void emit(const Out& s) {
    a_.mov(eax, s.value);
    a_.out(imm(s.port), eax);
  }

  void print(const std::string& text) {
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

  // Loads what the pattern needs before a loop over r8.
  void pattern_setup(const Pattern& p) {
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
  void pattern_word(const Pattern& p) {
    switch (p.kind) {
      case Pattern::Kind::kZero:
      case Pattern::Kind::kByte: break;
      case Pattern::Kind::kAddress: a_.mov(rax, r8); break;
      case Pattern::Kind::kSeed:
        a_.mov(rax, r8);
        a_.xor_(rax, r12);
        shift_xor();
        a_.imul(rax, r13);
        shift_xor();
        a_.imul(rax, r14);
        shift_xor();
        break;
    }
  }
  void shift_xor() {
    a_.mov(r11, rax);
    a_.shr(r11, 33);
    a_.xor_(rax, r11);
  }

  // for (r8 = at; r8 < at + length; r8 += stride) body()
  template <class Body>
  // A cursor that carries past 2^64 ends the loop: it never wraps back to
  // low memory (config validation refuses such strides before this).
  void range_loop(uint64_t at, uint64_t length, uint64_t stride, Body body) {
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

  void fill(const Fill& s) {
    pattern_setup(s.pattern);
    range_loop(s.at, s.length, 8, [&] {
      pattern_word(s.pattern);
      a_.mov(qword_ptr(r8), rax);
    });
  }

  void touch(const Touch& s) {
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

  void verify(const Verify& s) {
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
    a_.mov(edi, abi::kFailVerify);
    a_.mov(eax, abi::kHcFail);
    a_.out(imm(abi::kHypercallPort), eax);
    a_.ud2();
    a_.bind(done);
  }

  // The counter lives on the user stack, so loops nest without registers.
  void loop(const Loop& s) {
    a_.mov(r11, s.count);
    a_.push(r11);
    Label top = a_.newLabel();
    a_.bind(top);
    steps(s.body);
    a_.dec(qword_ptr(rsp));
    a_.jnz(top);
    a_.add(rsp, 8);
  }

  void hypercall(const Hypercall& s) {
    const Gp regs[6] = {rdi, rsi, rdx, r10, r8, r9};
    for (int i = 0; i < 6; i++) a_.mov(regs[i], s.args[static_cast<size_t>(i)]);
    a_.mov(eax, s.nr);
    a_.out(imm(abi::kHypercallPort), eax);
    if (!s.expect) return;
    Label ok = a_.newLabel();
    a_.mov(r11, static_cast<uint64_t>(*s.expect));
    a_.cmp(rax, r11);
    a_.je(ok);
    a_.mov(r10, rax);
    a_.mov(rdx, r11);
    a_.mov(esi, s.nr);
    a_.mov(edi, abi::kFailHypercallStatus);
    a_.mov(eax, abi::kHcFail);
    a_.out(imm(abi::kHypercallPort), eax);
    a_.ud2();
    a_.bind(ok);
  }

  // Makes hypercall nr (arguments already loaded); a status other than 0
  // fails the run with fail(kFailHypercallStatus, nr, 0, status).
  void call_expecting_zero(uint32_t nr) {
    Label ok = a_.newLabel();
    a_.mov(eax, nr);
    a_.out(imm(abi::kHypercallPort), eax);
    a_.test(rax, rax);
    a_.jz(ok);
    a_.mov(r10, rax);
    a_.xor_(edx, edx);
    a_.mov(esi, nr);
    fail_with(abi::kFailHypercallStatus);
    a_.bind(ok);
  }

  // fail(reason, rsi, rdx, r10) with the registers already loaded.
  void fail_with(uint64_t reason) {
    a_.mov(edi, reason);
    a_.mov(eax, abi::kHcFail);
    a_.out(imm(abi::kHypercallPort), eax);
    a_.ud2();
  }

 public:
  // Registers the program's free ring; a refusal fails the run.
  void setup_free_ring() {
    a_.mov(rdi, layout::kFreeRingAddr);
    a_.mov(rsi, layout::kFreeRingEntries);
    call_expecting_zero(abi::kHcFreeRingSetup);
  }

 private:
  // Writes a FreeReport {r8, granule (in r11), kStatusUnanswered} at [rdx].
  void put_entry(const Gp& base, const Gp& gpa, const Gp& length) {
    a_.mov(qword_ptr(base), gpa);
    a_.mov(qword_ptr(base, 8), length);
    a_.mov(qword_ptr(base, 16), kStatusUnanswered);
  }

  // After a report: the first entry in [rdi_list, +count) whose status is not
  // 0 fails the run. r13 walks the entries, r12 counts down.
  void check_list_statuses(uint64_t list, const Gp& count) {
    Label scan = a_.newLabel(), next = a_.newLabel(), bad = a_.newLabel(), ok = a_.newLabel();
    a_.mov(r13, list);
    a_.bind(scan);
    a_.test(count, count);
    a_.jz(ok);
    a_.mov(r10, qword_ptr(r13, 16));
    a_.test(r10, r10);
    a_.jnz(bad);
    a_.bind(next);
    a_.add(r13, 32);
    a_.dec(count);
    a_.jmp(scan);
    a_.bind(bad);
    a_.mov(rsi, qword_ptr(r13));
    a_.xor_(edx, edx);
    fail_with(abi::kFailReportStatus);
    a_.bind(ok);
  }

  // free, synchronous: batches of FreeReports in the report list, one
  // kHcReportFree each; every range must come back 0.
  void free_sync(const Free& s) {
    Label outer = a_.newLabel(), inner = a_.newLabel(), flush = a_.newLabel(), good = a_.newLabel();
    a_.mov(r8, s.at);
    a_.mov(r9, s.at + s.length);
    a_.mov(r11, s.granule);
    a_.mov(r14, s.stride_or_granule());
    a_.bind(outer);
    a_.mov(r13, layout::kReportListAddr);
    a_.xor_(r12d, r12d);
    a_.bind(inner);
    put_entry(r13, r8, r11);
    a_.add(r13, 32);
    a_.add(r8, r14);
    a_.inc(r12);
    a_.cmp(r8, r9);
    a_.jae(flush);
    a_.cmp(r12, s.batch);
    a_.jb(inner);
    a_.bind(flush);
    a_.mov(rdi, layout::kReportListAddr);
    a_.mov(rsi, r12);
    a_.mov(eax, abi::kHcReportFree);
    a_.out(imm(abi::kHypercallPort), eax);
    a_.cmp(rax, r12);
    a_.je(good);
    a_.mov(rcx, r12);
    check_list_statuses(layout::kReportListAddr, rcx);
    // Every status was 0 but the count differs: the call itself was refused.
    a_.mov(r10, rax);
    a_.mov(rdx, r12);
    a_.mov(esi, abi::kHcReportFree);
    fail_with(abi::kFailHypercallStatus);
    a_.bind(good);
    a_.mov(r11, s.granule);
    a_.cmp(r8, r9);
    a_.jb(outer);
  }

  // rdx = address of ring slot (rax & (N-1)); r13 holds the ring base.
  void ring_slot(const Gp& index) {
    a_.mov(rdx, index);
    a_.and_(rdx, layout::kFreeRingEntries - 1);
    a_.shl(rdx, 5);
    a_.lea(rdx, ptr(r13, rdx, 0, sizeof(abi::FreeRingHeader)));
  }

  // Waits until the ring has `room` free slots, produced being in rax (kept):
  // spins a while, then blocks in kHcFreeRingWait for completed to reach
  // produced - (entries - room). Blocking matters here as in ring_and_wait:
  // a guest spinning on a full ring keeps the vCPU in the guest, and every
  // punch the host makes meanwhile must kick it (scattered 4 KiB ranges
  // reached 0.03 of raw fallocate with a spin-only wait).
  void ring_wait_room(uint64_t room) {
    Label check = a_.newLabel(), done = a_.newLabel();
    a_.mov(edx, abi::kRingSpinIterations);
    a_.bind(check);
    a_.mov(rcx, rax);
    a_.sub(rcx, qword_ptr(r13, 8));
    a_.cmp(rcx, layout::kFreeRingEntries - room);
    a_.jbe(done);
    a_.pause();
    a_.dec(edx);
    a_.jnz(check);
    a_.push(rax);
    a_.lea(rdi, ptr(rax, -static_cast<int32_t>(layout::kFreeRingEntries - room)));
    call_expecting_zero(abi::kHcFreeRingWait);
    a_.pop(rax);
    a_.bind(done);
  }

  // Waits until completed == produced (in rax, kept). The guest is about to
  // wait anyway, so the last slots go over with kHcFreeRingWait instead of a
  // doorbell: the VMM drains them on the vCPU's own thread, which is out of
  // the guest, rather than wake the ring's thread and have it kick a vCPU
  // that spins (2 MiB async ranges measured 0.50-0.91 of raw fallocate that
  // way, against ~0.9 for sync).
  void ring_and_wait() {
    Label done = a_.newLabel();
    a_.cmp(rax, qword_ptr(r13, 8));
    a_.je(done);
    a_.mov(rdi, rax);
    a_.push(rax);
    call_expecting_zero(abi::kHcFreeRingWait);
    a_.pop(rax);
    a_.bind(done);
  }

  // free, asynchronous: slots in the ring, a doorbell per batch, then wait
  // for completion before going on (the pages may be reused after this step).
  void free_async(const Free& s) {
    Label loop = a_.newLabel(), last = a_.newLabel(), ok = a_.newLabel();
    a_.mov(r13, layout::kFreeRingAddr);
    a_.mov(r14, qword_ptr(r13, 16));  // refusals so far
    a_.mov(r8, s.at);
    a_.mov(r9, s.at + s.length);
    a_.mov(r11, s.granule);
    a_.mov(rsi, s.stride_or_granule());
    a_.xor_(r12d, r12d);
    a_.bind(loop);
    a_.mov(rax, qword_ptr(r13));
    ring_wait_room(1);
    ring_slot(rax);
    put_entry(rdx, r8, r11);
    a_.inc(rax);
    a_.mov(qword_ptr(r13), rax);
    a_.add(r8, rsi);
    a_.inc(r12);
    a_.cmp(r8, r9);
    a_.jae(last);
    a_.cmp(r12, s.batch);
    a_.jb(loop);
    a_.out(imm(abi::kDoorbellPort), eax);
    a_.xor_(r12d, r12d);
    a_.jmp(loop);
    a_.bind(last);
    ring_and_wait();
    a_.mov(r10, qword_ptr(r13, 16));
    a_.sub(r10, r14);
    a_.jz(ok);
    a_.mov(rsi, s.at);
    a_.xor_(edx, edx);
    fail_with(abi::kFailReportStatus);
    a_.bind(ok);
  }

  // Checks entry i of a report against its expectation; entry at [rdx].
  void check_entry(const Report& s, size_t i) {
    if (!s.expects[i]) return;
    Label ok = a_.newLabel();
    a_.mov(r10, qword_ptr(rdx, 16));
    a_.mov(r11, static_cast<uint64_t>(*s.expects[i]));
    a_.cmp(r10, r11);
    a_.je(ok);
    a_.mov(rsi, s.ranges[i].first);
    a_.mov(rdx, r11);
    fail_with(abi::kFailReportStatus);
    a_.bind(ok);
  }

  void report_sync(const Report& s) {
    const uint64_t list = layout::kReportListAddr;
    a_.mov(rdx, list);
    for (size_t i = 0; i < s.ranges.size(); i++) {
      a_.mov(r8, s.ranges[i].first);
      a_.mov(r11, s.ranges[i].second);
      put_entry(rdx, r8, r11);
      a_.add(rdx, 32);
    }
    a_.mov(rdi, list);
    a_.mov(rsi, s.ranges.size());
    a_.mov(eax, abi::kHcReportFree);
    a_.out(imm(abi::kHypercallPort), eax);
    for (size_t i = 0; i < s.ranges.size(); i++) {
      a_.mov(rdx, list + i * 32);
      check_entry(s, i);
    }
  }

  void report_async(const Report& s) {
    a_.mov(r13, layout::kFreeRingAddr);
    a_.mov(rax, qword_ptr(r13));
    a_.mov(r14, rax);  // the first slot's index
    ring_wait_room(s.ranges.size());
    for (size_t i = 0; i < s.ranges.size(); i++) {
      ring_slot(rax);
      a_.mov(r8, s.ranges[i].first);
      a_.mov(r11, s.ranges[i].second);
      put_entry(rdx, r8, r11);
      a_.inc(rax);
    }
    a_.mov(qword_ptr(r13), rax);
    ring_and_wait();
    for (size_t i = 0; i < s.ranges.size(); i++) {
      a_.lea(rax, ptr(r14, static_cast<int32_t>(i)));
      ring_slot(rax);
      check_entry(s, i);
    }
  }

  void fault(FaultKind f) {
    switch (f) {
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

  Assembler& a_;
  ResultSlots results_;
  std::vector<std::pair<Label, std::string>> strings_;
};

}  // namespace

Result<Image> build(const std::vector<Step>& steps, const Machine& vm) {
  const uint64_t base = layout::kProgramAddr, limit = layout::kProgramEnd;
  const uint64_t slots = result_slots_used(steps);
  if (slots > layout::kMaxResultSlots)
    return fail("the guest program writes result slot {}, past the last one there may be ({})", slots - 1,
                layout::kMaxResultSlots - 1);
  if (vm.ram_bytes < abi::kBootAreaEnd || layout::result_slots_bytes(slots) > vm.ram_bytes - abi::kBootAreaEnd)
    return fail("the guest program's {} result slots do not fit in RAM ({:#x} bytes) above the boot area", slots,
                vm.ram_bytes);
  const ResultSlots results{slots ? layout::result_slots_range(vm.ram_bytes, slots).start : 0, slots};
  CodeHolder code;
  Errors errors;
  code.init(Environment(Arch::kX64), base);
  code.setErrorHandler(&errors);
  Assembler a(&code);
  Emitter e(a, results);
  if (uses_free_ring(steps)) e.setup_free_ring();
  e.steps(steps);
  e.exit(0);
  e.emit_data();
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
  Image img;
  img.bytes.resize(size);
  code.copyFlattenedData(img.bytes.data(), size);
  img.base = base;
  img.entry = base;
  img.results = results;
  return img;
}

}  // namespace kvmem::guest
