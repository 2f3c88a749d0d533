// The Emitter's steps that talk to the VMM's devices (guest/emitter.h):
// free and report, synchronous and through the free ring, and raw
// hypercalls. Stress and the benchmarks free memory through these too.
#include "guest/abi.h"
#include "guest/emitter.h"
#include "guest/layout.h"

namespace kvmem::guest {

using namespace asmjit;
using namespace asmjit::x86;

void Emitter::emit(const Hypercall& s) {
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
  fail_with(abi::kFailHypercallStatus);
  a_.bind(ok);
}

// Makes hypercall nr (arguments already loaded); a status other than 0
// fails the run with fail(kFailHypercallStatus, nr, 0, status).
void Emitter::call_expecting_zero(uint32_t nr) {
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

void Emitter::setup_free_ring() {
  a_.mov(rdi, ring_);
  a_.mov(rsi, ring_entries_);
  call_expecting_zero(abi::kHcFreeRingSetup);
}

// Writes a FreeReport {gpa, length, kStatusUnanswered} at [base].
void Emitter::put_entry(const Gp& base, const Gp& gpa, const Gp& length) {
  a_.mov(qword_ptr(base), gpa);
  a_.mov(qword_ptr(base, 8), length);
  a_.mov(qword_ptr(base, 16), kStatusUnanswered);
}

// After a report: the first entry in [rdi_list, +count) whose status is not
// 0 fails the run. r13 walks the entries, r12 counts down.
void Emitter::check_list_statuses(uint64_t list, const Gp& count) {
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
void Emitter::free_sync(const Free& s) {
  Label outer = a_.newLabel(), inner = a_.newLabel(), flush = a_.newLabel(), good = a_.newLabel();
  a_.mov(r8, s.at);
  a_.mov(r9, s.at + s.length);
  a_.mov(r11, s.granule);
  a_.mov(r14, s.stride_or_granule());
  a_.bind(outer);
  a_.mov(r13, report_list_);
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
  a_.mov(rdi, report_list_);
  a_.mov(rsi, r12);
  a_.mov(eax, abi::kHcReportFree);
  a_.out(imm(abi::kHypercallPort), eax);
  a_.cmp(rax, r12);
  a_.je(good);
  a_.mov(rcx, r12);
  check_list_statuses(report_list_, rcx);
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
void Emitter::ring_slot(const Gp& index) {
  a_.mov(rdx, index);
  a_.and_(rdx, ring_entries_ - 1);
  a_.shl(rdx, 5);
  a_.lea(rdx, ptr(r13, rdx, 0, sizeof(abi::FreeRingHeader)));
}

// Waits until the ring has `room` free slots, produced being in rax (kept):
// spins a while, then blocks in kHcFreeRingWait for completed to reach
// produced - (entries - room). Blocking matters here as in ring_and_wait:
// a guest spinning on a full ring keeps the vCPU in the guest, and every
// punch the host makes meanwhile must kick it (scattered 4 KiB ranges
// reached 0.03 of raw fallocate with a spin-only wait).
void Emitter::ring_wait_room(uint64_t room) {
  Label check = a_.newLabel(), done = a_.newLabel();
  a_.mov(edx, abi::kRingSpinIterations);
  a_.bind(check);
  a_.mov(rcx, rax);
  a_.sub(rcx, qword_ptr(r13, 8));
  a_.cmp(rcx, ring_entries_ - room);
  a_.jbe(done);
  a_.pause();
  a_.dec(edx);
  a_.jnz(check);
  a_.push(rax);
  a_.lea(rdi, ptr(rax, -static_cast<int32_t>(ring_entries_ - room)));
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
void Emitter::ring_and_wait() {
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
void Emitter::free_async(const Free& s) {
  Label loop = a_.newLabel(), last = a_.newLabel(), ok = a_.newLabel();
  a_.mov(r13, ring_);
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
  a_.out(imm(abi::doorbell_port(vcpu_)), eax);
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
void Emitter::check_entry(const Report& s, size_t i) {
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

void Emitter::report_sync(const Report& s) {
  const uint64_t list = report_list_;
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

void Emitter::report_async(const Report& s) {
  a_.mov(r13, ring_);
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

}  // namespace kvmem::guest
