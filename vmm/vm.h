// One VM: its KVM objects, guest RAM, the program in it, and the vCPU loop.
//
// Life cycle: Vm::create() builds everything (KVM VM, RAM, boot area,
// program, memory slot, vCPU registers) and fails with an Error naming the
// host call when the host cannot run it; run() then drives the vCPU until the
// guest exits, fails, or overstays its timeout, and returns what happened.
// A Vm runs once.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "base/error.h"
#include "guest/program.h"
#include "vmm/config.h"
#include "vmm/guest_memory.h"
#include "vmm/hypercalls.h"
#include "vmm/kvm.h"

namespace kvmem {

struct RunResult {
  enum class Outcome { kExited, kFailed, kTimeout };
  Outcome outcome = Outcome::kFailed;
  uint64_t guest_exit_code = 0;  // kExited
  std::string message;           // kFailed, kTimeout: what happened, as a sentence
  std::string console;           // everything the guest wrote
  std::map<std::string, uint64_t> exits;  // VM exits by reason ("io", "hlt", ...)
  HypercallStats hypercalls;
  double run_ms = 0;  // wall time from the first KVM_RUN to the end

  // 0 when the guest exited with 0; 1 for any other end (DESIGN.md exit codes).
  int process_exit_code() const { return outcome == Outcome::kExited && guest_exit_code == 0 ? 0 : 1; }
  const char* outcome_name() const;
};

class Vm {
 public:
  static Result<std::unique_ptr<Vm>> create(const Kvm& kvm, const VmConfig& config,
                                            const guest::Image& program);

  // Runs the guest to its end. `echo` (may be empty) receives console text as
  // the guest writes it; the result holds all of it too.
  RunResult run(const std::function<void(std::string_view)>& echo);

  const VmConfig& config() const { return config_; }
  GuestMemory& memory() { return memory_; }

 private:
  Vm(VmConfig config, KvmVm vm, GuestMemory memory, KvmVcpu vcpu, bool sync_regs)
      : config_(std::move(config)), vm_(std::move(vm)), memory_(std::move(memory)),
        vcpu_(std::move(vcpu)), sync_regs_(sync_regs) {}

  Result<kvm_regs> regs_at_exit() const;
  Status set_status(const kvm_regs& regs, int64_t status);

  VmConfig config_;
  KvmVm vm_;
  GuestMemory memory_;
  KvmVcpu vcpu_;
  bool sync_regs_;  // kvm_run carries the registers at every exit
};

}  // namespace kvmem
