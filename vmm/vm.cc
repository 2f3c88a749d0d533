#include "vmm/vm.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "base/thread.h"
#include "guest/abi.h"
#include "guest/layout.h"
#include "guest/boot.h"

namespace kvmem {
namespace {

// KVM_X86_QUIRK_SLOT_ZAP_ALL (Linux 6.12); older uapi headers lack the name.
constexpr uint64_t kQuirkSlotZapAll = 1 << 7;

// CPUID.80000001h:EDX[26] in KVM's supported list.
bool gib_pages_supported(const std::vector<kvm_cpuid_entry2>& supported) {
  for (const auto& e : supported)
    if (e.function == 0x80000001) return (e.edx >> 26) & 1;
  return false;
}

// The caller's MemoryFile is of the backing the config asks for.
Status check_backing(const MemoryFile& file, const VmConfig& config) {
  const bool hugetlb = file.page_size() == kHugePageSize;
  const RamBacking b = config.backing;
  const char* has = hugetlb ? "hugetlb" : file.thp() ? "memfd-thp" : "memfd";
  const bool ok = b == RamBacking::kHugetlb ? hugetlb
                  : b == RamBacking::kMemfdThp ? file.thp()
                  : b == RamBacking::kMemfd ? !hugetlb && !file.thp()
                                            : true;  // anon: the file only serves windows
  if (!ok)
    return fail("VM {} has backing {}, but the memory file given for its RAM is {} (make_ram_file makes one of a backing)",
                config.name, ram_backing_name(b), has);
  return {};
}

}  // namespace

const char* RunResult::outcome_name() const {
  switch (outcome) {
    case Outcome::kExited: return "exited";
    case Outcome::kFailed: return "failed";
    case Outcome::kTimeout: return "timeout";
    case Outcome::kStopped: return "stopped";
  }
  return "?";
}

Result<std::unique_ptr<Vm>> Vm::create(const Kvm& kvm, MemoryFile& file, const VmConfig& config,
                                       const guest::Image& program, tmpfs::FileSystem* files) {
  if (!config.windows.empty() && (!files || &files->memory() != &file))
    return fail("VM {} has windows but no files on its memory file to show in them", config.name);
  std::unique_ptr<Vm> v(new Vm(config));
  auto vm = kvm.create_vm();
  if (!vm) return std::unexpected(vm.error());
  v->vm_.emplace(std::move(*vm));
  // By default deleting any memory slot zaps every shadow page of the VM;
  // turn that off where the host lets us (slots come and go with RAM).
  if (v->vm_->check_extension(KVM_CAP_DISABLE_QUIRKS2) & kQuirkSlotZapAll)
    if (auto s = v->vm_->enable_cap(KVM_CAP_DISABLE_QUIRKS2, kQuirkSlotZapAll); !s)
      return std::unexpected(s.error());

  // Hardware KVM wants the guest's CPUID set (long mode needs its LM bit).
  // PVM hosts differ. The one this was measured on (6.18.44) answers
  // KVM_GET_SUPPORTED_CPUID with EINVAL for every buffer from 0 to 4096
  // entries; others answer E2BIG up to 64 entries and return 75 entries when
  // given room for 128, without pdpe1gb. Long mode runs at CPL3 without a
  // guest CPUID, so an error here is not fatal (the vCPU keeps KVM's
  // default); either way the guest lacks pdpe1gb, a 1 GiB leaf would be a
  // reserved-bit fault, and 1 GiB pages are refused.
  auto cpuid = kvm.supported_cpuid();
  if (config.page_size == guest::PageSize::k1G) {
    if (!cpuid)
      return fail("this host's KVM does not offer 1 GiB guest pages: it cannot report CPUID ({}), so the "
                  "guest cannot be given pdpe1gb; use \"guest_page_size\": \"2M\"",
                  cpuid.error().message);
    if (!gib_pages_supported(*cpuid))
      return fail("this host's KVM does not offer 1 GiB guest pages (CPUID pdpe1gb); use \"guest_page_size\": \"2M\"");
  }

  KVMEM_TRY(check_backing(file, config));
  auto memory = config.backing == RamBacking::kAnon ? GuestMemory::create_anon(file, config.memory)
                                                    : GuestMemory::create(file, config.memory, config.ram_unit);
  if (!memory) return std::unexpected(memory.error());
  v->memory_ = std::move(*memory);
  // Guest memory must hold its contents before the vCPU can see it.
  std::vector<GuestRange> windows;
  for (const WindowConfig& w : config.windows) windows.push_back(w.guest());
  if (auto s = guest::write_boot_area(v->memory_->boot_area(), config.memory, config.page_size,
                                      std::max(config.vcpus, 1u), windows);
      !s)
    return std::unexpected(s.error());
  if (program.base + program.bytes.size() > guest::layout::kProgramEnd || program.base < guest::layout::kProgramAddr)
    return fail("the guest program does not fit its area of the boot area");
  std::vector<guest::VcpuCode> code = program.vcpus;
  if (code.empty()) code.push_back({program.entry, program.results, {}});
  const unsigned vcpus = std::max(config.vcpus, 1u);
  if (code.size() != vcpus)
    return fail("the guest program has code for {} vCPUs, but VM {} has {}", code.size(), config.name, vcpus);
  std::memcpy(v->memory_->host(GuestAddr(program.base)), program.bytes.data(), program.bytes.size());
  for (const guest::VcpuCode& c : code) {
    if (c.results.count &&
        !v->memory_->contains(GuestRange(c.results.gpa, c.results.gpa + c.results.count * sizeof(uint64_t))))
      return fail("the guest program's result slots lie outside RAM");
    v->results_.push_back(c.results);
  }
  if (auto s = v->memory_->register_with(*v->vm_); !s) return std::unexpected(s.error());
  for (const WindowConfig& w : config.windows) {
    auto f = files->open(w.file);
    if (!f) return std::unexpected(f.error().context(fmt::format("cannot show file \"{}\" to VM {}", w.file, config.name)));
    v->windows_.add(KVMEM_TRY(Window::create(*v->memory_, std::move(*f), GuestAddr(w.at), w.offset, w.length, w.writable)));
  }

  for (unsigned id = 0; id < vcpus; id++)
    v->vcpus_.push_back(KVMEM_TRY(Vcpu::create(kvm, *v->vm_, id, cpuid ? &*cpuid : nullptr,
                                               guest::user_regs(code[id].entry, id))));
  // The program's wait_word steps turn milliseconds into TSC ticks with this.
  if (program.needs_boot_info) {
    const abi::BootInfo info{.tsc_khz = v->vcpus_[0]->tsc_khz(), .reserved = {}};
    std::memcpy(v->memory_->host(GuestAddr(guest::layout::kBootInfoAddr)), &info, sizeof info);
  }
  // Eager prefault last: the boot area and the program are in place, and
  // every page is populated before the first KVM_RUN.
  KVMEM_TRY(prefault_lanes(*v->memory_, config.prefault_options()));
  if (config.prefault == Prefault::kEager)
    v->prefault_ = KVMEM_TRY(prefault_eager(*v->memory_, config.prefault_options()));
  v->free_reports_.emplace(*v->memory_, v->frees_);
  v->free_ring_.emplace(*v->vm_, *v->memory_, v->frees_, static_cast<VcpuPauser*>(v.get()), vcpus);
  std::vector<std::vector<std::string>> barrier_steps;
  for (const guest::VcpuCode& c : code) barrier_steps.push_back(c.barrier_steps);
  v->barriers_.emplace(*v->memory_, std::move(barrier_steps));
  v->snapshot_.emplace(v->vcpus_.size());
  v->restored_ended_.assign(v->vcpus_.size(), false);
  return v;
}

void Vm::arm_snapshots(SnapshotSink sink) {
  snapshot_->arm([this, sink = std::move(sink)](const SnapshotCapture& capture) -> Status {
    // Nothing of the guest runs now; let a drain the ring's thread has
    // begun finish, and answer what the guest rang for, so that the ring in
    // the snapshot has nothing in flight.
    free_ring_->quiesce();
    return sink(*this, capture);
  });
}

Status Vm::restore_vcpus(const std::vector<std::optional<VcpuState>>& states) {
  if (states.size() != vcpus_.size())
    return fail("the snapshot has {} vCPUs, and VM {} has {}", states.size(), config_.name, vcpus_.size());
  for (size_t i = 0; i < states.size(); i++) {
    if (!states[i]) {
      restored_ended_[i] = true;
      continue;
    }
    if (auto s = vcpus_[i]->restore_state(*states[i]); !s)
      return std::unexpected(s.error().context(fmt::format("vCPU {}", i)));
  }
  return {};
}

FreeCounts Vm::free_counts() const {
  return FreeCounts{.reports = frees_.reports.load(),
                    .ranges = frees_.ranges.load(),
                    .invalid_ranges = frees_.invalid_ranges.load(),
                    .bytes_reported = frees_.bytes_reported.load(),
                    .bytes_decommitted = frees_.bytes_decommitted.load()};
}

Vm::~Vm() {
  if (free_ring_) free_ring_->stop();  // its thread pauses our vCPUs and touches RAM
}

void Vm::pause() {
  for (auto& c : vcpus_) c->begin_pause();
  for (auto& c : vcpus_) c->wait_paused();
}

void Vm::resume() {
  for (auto& c : vcpus_) c->resume();
}

void Vm::stop(FailureKind kind, std::string message) {
  std::lock_guard lock(stop_mu_);
  if (stopped_) return;  // the first stop wins
  stopped_ = true;
  stop_kind_ = kind;
  stop_message_ = std::move(message);
  for (auto& c : vcpus_) c->request_stop();
  snapshot_->cancel();  // vCPUs waiting at a snapshot wake and stop
}

void Vm::vcpu_ended(size_t i, const VcpuRun& run) {
  snapshot_->ended(i);
  if (run.outcome == RunOutcome::kExited && run.exit_code == 0) {
    // The others go on; one waiting at a barrier this vCPU never reached
    // sees its bit and fails, naming it.
    barriers_->departed(static_cast<unsigned>(i));
    return;
  }
  std::lock_guard lock(end_mu_);
  if (decider_) return;
  decider_ = i;
  for (size_t j = 0; j < vcpus_.size(); j++)
    if (j != i) vcpus_[j]->request_stop();
  snapshot_->cancel();
}

void Vm::run_vcpu(size_t i, const Devices& devices, std::vector<VcpuRun>& runs) {
  if (restored_ended_[i]) {
    runs[i].outcome = RunOutcome::kExited;  // as it was when the snapshot was taken
    runs[i].failure = FailureKind::kNone;
  } else {
    runs[i] = vcpus_[i]->run(devices, config_.timeout_ms);
  }
  vcpu_ended(i, runs[i]);
}

RunResult Vm::run(const std::function<void(std::string_view)>& echo) {
  console_.set_echo(echo);
  const Devices devices{*memory_, console_, *free_reports_, &*free_ring_, windows_.all().empty() ? nullptr : &windows_,
                        &*snapshot_, &*barriers_};
  std::vector<VcpuRun> runs(vcpus_.size());
  // Ahead's threads start just before the vCPUs and go (joined) with this
  // scope, whatever way the run ends. One that cannot start is reported in
  // the stats; the guest runs without it.
  std::unique_ptr<PrefaultAhead> ahead;
  PrefaultStats ahead_failed;
  ahead_failed.mode = Prefault::kAhead;
  if (config_.prefault == Prefault::kAhead) {
    if (auto a = PrefaultAhead::start(*memory_, config_.prefault_options())) {
      ahead = std::move(*a);
    } else {
      ahead_failed.errors = 1;
      ahead_failed.error = a.error().message;
    }
  }
  const auto start = std::chrono::steady_clock::now();
  // vCPU 0 runs here; each other one on its own thread. A thread the host
  // cannot start ends the run as the host's failure.
  std::vector<std::thread> threads;
  for (size_t i = 1; i < vcpus_.size(); i++) {
    auto t = start_thread(fmt::format("the thread of vCPU {}", i), [this, i, &devices, &runs] {
      run_vcpu(i, devices, runs);
    });
    if (t) {
      threads.push_back(std::move(*t));
      continue;
    }
    runs[i].message = t.error().message;  // kFailed, kHost
    vcpu_ended(i, runs[i]);
  }
  run_vcpu(0, devices, runs);
  for (auto& t : threads) t.join();
  if (ahead) ahead->stop();
  RunResult result = gather(runs);
  result.prefault = ahead ? ahead->stats() : config_.prefault == Prefault::kAhead ? ahead_failed : prefault_;
  result.run_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return result;
}

RunResult Vm::gather(std::vector<VcpuRun>& runs) {
  RunResult result;
  // Every vCPU has ended: no lock needed. No decider: all exited 0.
  const size_t who = decider_.value_or(0);
  const VcpuRun& decided = runs[who];
  result.outcome = decided.outcome;
  result.failure = decided.failure;
  result.guest_exit_code = decided.exit_code;
  result.message = decided.message;
  if (decided.outcome == RunOutcome::kStopped) {
    std::lock_guard lock(stop_mu_);
    result.failure = stop_kind_;
    result.message = stop_message_;
  } else if (vcpus_.size() > 1 && !result.message.empty()) {
    result.message = fmt::format("vCPU {}: {}", who, result.message);
  }
  {
    // A lazily restored VM whose snapshot data turned out damaged ran on
    // memory that was not whole: whatever its vCPUs did after that (a
    // fault, a failed verify, even exit 0) is a consequence, not the cause.
    std::lock_guard lock(stop_mu_);
    if (stopped_ && stop_kind_ == FailureKind::kSnapshot) {
      result.outcome = RunOutcome::kFailed;
      result.failure = FailureKind::kSnapshot;
      result.message = stop_message_;
    }
  }
  for (const VcpuRun& r : runs) {
    for (const auto& [name, n] : r.exits) result.exits[name] += n;
    for (size_t nr = 0; nr < r.hypercalls.calls.size(); nr++) result.hypercalls.calls[nr] += r.hypercalls.calls[nr];
    result.hypercalls.unknown += r.hypercalls.unknown;
    result.hypercalls.invalid += r.hypercalls.invalid;
  }
  free_ring_->stop();  // answers what the guest rang for, then stops
  result.console = console_.text();
  result.console_dropped_bytes = console_.dropped();
  result.free_reports = frees_.reports.load();
  result.free_ranges = frees_.ranges.load();
  result.free_ranges_invalid = frees_.invalid_ranges.load();
  result.bytes_reported_free = frees_.bytes_reported.load();
  result.bytes_decommitted = frees_.bytes_decommitted.load();
  for (const guest::ResultSlots& r : results_) {
    std::vector<uint64_t>& out = result.vcpu_timestamps.emplace_back(r.count);
    if (!r.count) continue;
    const std::string slots = memory_->read(GuestRange(r.gpa, r.gpa + r.count * sizeof(uint64_t)));
    std::memcpy(out.data(), slots.data(), slots.size());
  }
  result.timestamps = result.vcpu_timestamps.at(0);
  return result;
}

}  // namespace kvmem
