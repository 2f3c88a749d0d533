#include "vmm/devices/free_ring.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include "base/thread.h"
#include "vmm/kvm/kvm.h"
#include "vmm/memory/guest_memory.h"

namespace kvmem {
namespace {

// Guest memory is shared with a running vCPU: every access to it is an
// atomic access through a reference, never a plain load the compiler could
// repeat or tear.
uint64_t load(uint8_t* p, std::memory_order order = std::memory_order_relaxed) {
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(p)).load(order);
}
void store(uint8_t* p, uint64_t v, std::memory_order order = std::memory_order_relaxed) {
  std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(p)).store(v, order);
}

// An fd the host cannot give is the host's limit, not the guest's fault.
Error fd_error(const char* call, int err) {
  if (err == EMFILE)
    return Error{err, fmt::format("the host is out of file descriptors ({}: EMFILE); raise the limit with ulimit -n", call)};
  if (err == ENFILE)
    return Error{err, fmt::format("the host is out of file descriptors system-wide ({}: ENFILE); raise fs.file-max", call)};
  return sys_fail("cannot create the free ring's doorbell", call, err).error();
}

}  // namespace

Result<std::unique_ptr<FreeRing>> FreeRing::create(KvmVm& vm, GuestMemory& memory, FreeStats& stats, unsigned vcpu,
                                                   uint64_t ring_gpa, uint64_t entries, int64_t* status,
                                                   std::optional<uint64_t> completed) {
  *status = -EINVAL;
  if (entries == 0 || entries > abi::kRingMaxEntries || (entries & (entries - 1)) != 0 || ring_gpa % 64 != 0 ||
      vcpu >= abi::kMaxDoorbells)
    return nullptr;
  *status = -EFAULT;
  auto range = GuestRange::of(ring_gpa, sizeof(abi::FreeRingHeader) + entries * sizeof(abi::FreeReport));
  if (!range) return nullptr;
  HostSpan ring = memory.host_span(*range);  // pins the ring's memory for the ring's life
  if (ring.empty()) return nullptr;
  uint8_t* head = ring.data();
  std::unique_ptr<FreeRing> r(new FreeRing(vm, memory, stats, vcpu, std::move(ring), *range, entries));
  r->completed_ = completed.value_or(load(head));  // by default, start where the guest's producer stands
  store(head + 8, r->completed_, std::memory_order_release);
  const int door = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (door < 0) return std::unexpected(fd_error("eventfd", errno));
  r->doorbell_ = Fd(door);
  if (auto s = vm.assign_pio_eventfd(abi::doorbell_port(vcpu), 4, door); !s)
    return std::unexpected(s.error().context(fmt::format("cannot bind the doorbell of vCPU {}'s free ring", vcpu)));
  r->bound_ = true;
  *status = 0;
  return r;
}

FreeRing::~FreeRing() {
  if (bound_) (void)vm_.deassign_pio_eventfd(abi::doorbell_port(vcpu_), 4, doorbell_.get());
}

int64_t FreeRing::wait(uint64_t target, VcpuPauser* pauser) {
  // A target beyond what the guest has produced would never complete.
  const uint64_t produced = load(ring_, std::memory_order_acquire);
  if (produced - target > entries_) return -EINVAL;
  // Drain here, on the vCPU's thread, rather than wait for the rings'
  // thread: the vCPU is out of the guest, so its CPU is free. If the rings'
  // thread is draining, this waits for it and then takes what is left; on
  // return every slot up to `produced`, and so `target`, is answered.
  drain(pauser);
  return 0;
}

FreeRingState FreeRing::state() {
  std::lock_guard drain_lock(drain_mu_);
  return FreeRingState{.gpa = range_.start, .entries = entries_, .completed = completed_};
}

void FreeRing::drain(VcpuPauser* pauser) {
  std::lock_guard drain_lock(drain_mu_);
  completed_ = drain_free_ring(ring_, entries_, completed_, memory_, stats_, pauser, statuses_);
}

namespace {

// True when the `pending` slots from `completed` make more than one punch.
bool several_runs(uint8_t* slots, uint64_t entries, uint64_t completed, uint64_t pending) {
  uint64_t runs = 0, end = 0;
  for (uint64_t i = 0; i < pending && runs < 2; i++) {
    uint8_t* e = slots + ((completed + i) & (entries - 1)) * sizeof(abi::FreeReport);
    const uint64_t gpa = load(e);
    if (i == 0 || gpa != end) runs++;
    end = gpa + load(e + 8);
  }
  return runs > 1;
}

}  // namespace

uint64_t drain_free_ring(uint8_t* ring, uint64_t entries, uint64_t completed, GuestMemory& memory,
                         FreeStats& stats, VcpuPauser* pauser, std::vector<int64_t>& statuses) {
  // produced is the guest's word: it may be anything. At most one lap of
  // slots is handled; a guest that claims more is refused once, as a whole.
  const uint64_t produced = load(ring, std::memory_order_acquire);
  const uint64_t pending = produced - completed;
  if (pending == 0) return completed;
  stats.reports.fetch_add(1, std::memory_order_relaxed);
  uint64_t invalid = 0;
  if (pending > entries) {
    invalid = 1;
    stats.invalid_ranges.fetch_add(1, std::memory_order_relaxed);
  } else {
    uint8_t* slots = ring + sizeof(abi::FreeRingHeader);
    statuses.resize(pending);
    // On the ring's own thread the vCPUs may be running, and then every
    // punch kicks them. Parking them costs one kick, so it pays when the
    // slots make more than one punch (more than one run of neighbouring
    // ranges). Scattered 4 KiB ranges went from 0.04 to ~0.5 of raw
    // fallocate. A drain from kHcFreeRingWait runs on a vCPU's thread, out
    // of the guest, and passes no pauser.
    const bool park = pauser && several_runs(slots, entries, completed, pending);
    if (park) pauser->pause();
    {
      FreeBatch batch(memory, stats);
      for (uint64_t i = 0; i < pending; i++) {
        uint8_t* e = slots + ((completed + i) & (entries - 1)) * sizeof(abi::FreeReport);
        batch.add(load(e), load(e + 8), &statuses[i]);
      }
    }
    if (park) pauser->resume();
    for (uint64_t i = 0; i < pending; i++) {
      uint8_t* e = slots + ((completed + i) & (entries - 1)) * sizeof(abi::FreeReport);
      store(e + 16, static_cast<uint64_t>(statuses[i]));
      invalid += statuses[i] != 0;
    }
  }
  store(ring + 16, load(ring + 16) + invalid);
  // Release: the statuses and the punches happen-before the guest sees it.
  store(ring + 8, produced, std::memory_order_release);
  return produced;
}

namespace {

// A round of the rings' thread pauses the vCPUs at most once: the first
// drain that wants them parked pauses them, and they stay parked through
// the other rings of the round until finish(). pause() and resume() come in
// pairs from drain_free_ring; only the first pause counts.
class RoundPauser : public VcpuPauser {
 public:
  explicit RoundPauser(VcpuPauser* vm) : vm_(vm) {}
  ~RoundPauser() override { finish(); }
  void pause() override {
    if (!paused_) vm_->pause();
    paused_ = true;
  }
  void resume() override {}
  void finish() {
    if (paused_) vm_->resume();
    paused_ = false;
  }

 private:
  VcpuPauser* vm_;
  bool paused_ = false;
};

}  // namespace

FreeRingDevice::FreeRingDevice(KvmVm& vm, GuestMemory& memory, FreeStats& stats, VcpuPauser* pauser, unsigned vcpus)
    : vm_(vm), memory_(memory), stats_(stats), pauser_(pauser), vcpus_(vcpus ? vcpus : 1), rings_(vcpus_),
      live_(new std::atomic<FreeRing*>[vcpus_]) {
  for (unsigned i = 0; i < vcpus_; i++) live_[i].store(nullptr, std::memory_order_relaxed);
}

Result<int64_t> FreeRingDevice::setup(unsigned vcpu, uint64_t ring_gpa, uint64_t entries) {
  std::lock_guard lock(mu_);
  if (vcpu >= vcpus_ || stopping_) return -EINVAL;
  if (rings_[vcpu]) return -EBUSY;
  int64_t status = 0;
  auto made = FreeRing::create(vm_, memory_, stats_, vcpu, ring_gpa, entries, &status);
  if (!made) return std::unexpected(made.error());
  if (!*made) return status;
  return install_locked(vcpu, std::move(*made));
}

Result<int64_t> FreeRingDevice::install_locked(unsigned vcpu, std::unique_ptr<FreeRing> ring) {
  // Two rings over one page would have two drains answer each other's
  // slots: a guest's mistake, and refused before anything is bound.
  for (const auto& other : rings_)
    if (other && other->range().overlaps(ring->range())) return -EBUSY;
  if (!wake_.valid()) {
    const int w = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w < 0) return std::unexpected(fd_error("eventfd", errno));
    wake_ = Fd(w);
  }
  // A thread is the one resource here a guest may legitimately be refused
  // (many VMs under a pids limit): it gets -EAGAIN, and may free
  // synchronously instead, or try again. The ring goes, and its doorbell
  // with it.
  if (!thread_.joinable()) {
    auto thread = start_thread("the free rings' thread", [this] { run(); });
    if (!thread) return -EAGAIN;
    thread_ = std::move(*thread);
  }
  live_[vcpu].store(ring.get(), std::memory_order_release);
  rings_[vcpu] = std::move(ring);
  uint64_t one = 1;
  (void)!write(wake_.get(), &one, sizeof one);  // the thread polls the new doorbell from now on
  return 0;
}

Status FreeRingDevice::restore(const std::vector<FreeRingState>& rings) {
  std::lock_guard lock(mu_);
  if (rings.size() != vcpus_) return fail("the snapshot has free rings for {} vCPUs, and the VM has {}", rings.size(), vcpus_);
  for (unsigned i = 0; i < vcpus_; i++) {
    const FreeRingState& s = rings[i];
    if (!s.present()) continue;
    const std::string what =
        fmt::format("cannot restore vCPU {}'s free ring at {:#x} of {} entries", i, s.gpa, s.entries);
    if (stopping_ || rings_[i]) return fail("{}: the device is stopping or the vCPU has a ring", what);
    int64_t status = 0;
    auto made = FreeRing::create(vm_, memory_, stats_, i, s.gpa, s.entries, &status, s.completed);
    if (!made) return std::unexpected(made.error().context(what));
    if (!*made)
      return fail("{}: {}", what, status == -EFAULT ? "it is not in guest memory" : "bad entries or alignment");
    const int64_t installed = KVMEM_TRY_CTX(install_locked(i, std::move(*made)), what);
    if (installed == -EBUSY) return fail("{}: it overlaps another vCPU's ring", what);
    if (installed == -EAGAIN) return fail("{}: the host cannot start the thread that drains the rings", what);
  }
  return {};
}

std::vector<FreeRingState> FreeRingDevice::state() {
  // live_ rather than rings_ under mu_, which stays a leaf: a ring goes
  // only in stop(), and no vCPU runs then.
  std::vector<FreeRingState> out(vcpus_);
  for (unsigned i = 0; i < vcpus_; i++)
    if (FreeRing* ring = live_[i].load(std::memory_order_acquire)) out[i] = ring->state();
  return out;
}

int64_t FreeRingDevice::wait(unsigned vcpu, uint64_t target) {
  FreeRing* ring = vcpu < vcpus_ ? live_[vcpu].load(std::memory_order_acquire) : nullptr;
  // On a VM of several vCPUs the others may be in the guest while this one
  // drains: park them as the rings' thread would. With one vCPU nobody is
  // in the guest, and no pauser is needed.
  return ring ? ring->wait(target, vcpus_ > 1 ? pauser_ : nullptr) : -EINVAL;
}

void FreeRingDevice::run() {
  std::vector<FreeRing*> rings;
  std::vector<pollfd> fds;
  for (;;) {
    bool stopping;
    {
      std::lock_guard lock(mu_);
      stopping = stopping_;
      rings.clear();
      for (const auto& r : rings_)
        if (r) rings.push_back(r.get());
    }
    if (stopping) {
      // Slots rung for before the stop still get their answer.
      RoundPauser round(pauser_);
      for (FreeRing* r : rings) r->drain(pauser_ ? &round : nullptr);
      return;
    }
    fds.assign(1, pollfd{wake_.get(), POLLIN, 0});
    for (FreeRing* r : rings) fds.push_back({r->doorbell(), POLLIN, 0});
    if (poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    uint64_t n;
    if (fds[0].revents & POLLIN) (void)!read(wake_.get(), &n, sizeof n);
    RoundPauser round(pauser_);
    for (size_t i = 0; i < rings.size(); i++) {
      if (!(fds[i + 1].revents & POLLIN)) continue;
      (void)!read(rings[i]->doorbell(), &n, sizeof n);
      rings[i]->drain(pauser_ ? &round : nullptr);
    }
  }
}

void FreeRingDevice::quiesce() {
  // Every vCPU is out of the guest (the caller's precondition): no pauser.
  for (unsigned i = 0; i < vcpus_; i++)
    if (FreeRing* ring = live_[i].load(std::memory_order_acquire)) ring->drain(nullptr);
}

void FreeRingDevice::stop() {
  std::thread thread;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (unsigned i = 0; i < vcpus_; i++) live_[i].store(nullptr, std::memory_order_release);
    thread = std::move(thread_);
    if (wake_.valid()) {
      uint64_t one = 1;
      (void)!write(wake_.get(), &one, sizeof one);
    }
  }
  // Joined outside mu_: the thread takes mu_ to look at the rings.
  if (thread.joinable()) thread.join();
  std::lock_guard lock(mu_);
  for (auto& r : rings_) r.reset();
}

}  // namespace kvmem
