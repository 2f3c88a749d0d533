// The code generator behind guest::build() (guest/program.h). Internal to
// guest/: nothing outside this folder includes it.
//
// One Emitter writes one program. Its work is split by concept over two
// files:
//   guest/program.cc       build(), the memory steps (fill, touch, verify,
//                          store_word, wait_word), patterns, loops, print,
//                          exit, out, timestamp, barrier, fault, and fail_with();
//   guest/program_free.cc  the steps that talk to the VMM's devices: free
//                          and report (both paths), raw hypercalls, and the
//                          free ring's set-up and waits.
//
// Register conventions inside generated code:
//   r8  cursor (guest-physical address)   r9  end of the range
//   rax the pattern word for r8           rcx the word read from memory
//   r11 scratch                           r12 seed   r13, r14 mix constants
//   r15 a pattern's origin (loaded only when it is not 0)
//   rbx, rdi, rsi a timed touch's word, start TSC and sample cursor
// Hypercall arguments use rdi, rsi, rdx, r10, r8, r9 (guest/abi.h).
#pragma once

#include <asmjit/x86.h>

#include <string>
#include <utility>
#include <vector>

#include "guest/layout.h"
#include "guest/program.h"
#include "guest/step.h"

namespace kvmem::guest {

class Emitter {
 public:
  // The program of vCPU `vcpu` of a VM with `vcpus`: its result slots,
  // its slice of the report lists and of the free rings, and the count its
  // barriers wait for.
  Emitter(asmjit::x86::Assembler& a, ResultSlots results, unsigned vcpu = 0, unsigned vcpus = 1)
      : a_(a), results_(results), vcpu_(vcpu), vcpus_(vcpus), report_list_(layout::report_list_addr(vcpu, vcpus)),
        ring_(layout::free_ring_addr(vcpu, vcpus)), ring_entries_(layout::free_ring_entries(vcpus)) {}

  void steps(const std::vector<Step>& steps) {
    for (const Step& s : steps) std::visit([this](const auto& op) { emit(op); }, s);
  }
  void exit(uint64_t code);
  // Registers this vCPU's free ring; a refusal fails the run.
  void setup_free_ring();
  // Binds the labels of string data after the code.
  void emit_data();

 private:
  // program.cc
  void emit(const Print& s) { print(s.text); }
  void emit(const Fill& s);
  void emit(const Touch& s);
  void timed_touch(const Touch& s);
  void emit(const Verify& s);
  void emit(const StoreWord& s);
  void emit(const WaitWord& s);
  void emit(const Loop& s);
  void emit(const Exit& s) { exit(s.code); }
  void emit(const Fault& s);
  void emit(const Out& s);
  void emit(const Timestamp& s);
  void emit(const Barrier& s);
  void emit(const Snapshot& s);
  // program_free.cc
  void emit(const Hypercall& s);
  void emit(const Free& s) { s.mode == FreeMode::kSync ? free_sync(s) : free_async(s); }
  void emit(const Report& s) { s.mode == FreeMode::kSync ? report_sync(s) : report_async(s); }

  // program.cc
  void print(const std::string& text);
  void pattern_setup(const Pattern& p);
  void pattern_word(const Pattern& p);
  void shift_xor();
  template <class Body>
  void range_loop(uint64_t at, uint64_t length, uint64_t stride, Body body);
  // fail(reason, rsi, rdx, r10) with the registers already loaded.
  void fail_with(uint64_t reason);
  // rax = the TSC; rdx is clobbered. rdtsc runs natively at CPL3 (CR4.TSD
  // is clear): no exit.
  void read_tsc();

  // program_free.cc
  void call_expecting_zero(uint32_t nr);
  void put_entry(const asmjit::x86::Gp& base, const asmjit::x86::Gp& gpa, const asmjit::x86::Gp& length);
  void check_list_statuses(uint64_t list, const asmjit::x86::Gp& count);
  void free_sync(const Free& s);
  void ring_slot(const asmjit::x86::Gp& index);
  void ring_wait_room(uint64_t room);
  void ring_and_wait();
  void free_async(const Free& s);
  void check_entry(const Report& s, size_t i);
  void report_sync(const Report& s);
  void report_async(const Report& s);

  asmjit::x86::Assembler& a_;
  ResultSlots results_;
  unsigned vcpu_;
  unsigned vcpus_;
  uint64_t report_list_;  // this vCPU's report lists (guest/layout.h)
  uint64_t ring_;         // this vCPU's free ring and its slots (guest/layout.h)
  uint64_t ring_entries_;
  uint64_t barrier_sites_ = 0;  // barrier steps emitted so far: a barrier's site is its 1-based count
  std::vector<std::pair<asmjit::Label, std::string>> strings_;
};

}  // namespace kvmem::guest
