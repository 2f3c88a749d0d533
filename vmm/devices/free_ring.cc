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

Result<std::unique_ptr<FreeRing>> FreeRing::start(KvmVm& vm, GuestMemory& memory, FreeStats& stats,
                                                  VcpuPauser* pauser, uint64_t ring_gpa, uint64_t entries,
                                                  int64_t* status) {
  *status = -EINVAL;
  if (entries == 0 || entries > abi::kRingMaxEntries || (entries & (entries - 1)) != 0 || ring_gpa % 64 != 0)
    return nullptr;
  *status = -EFAULT;
  auto range = GuestRange::of(ring_gpa, sizeof(abi::FreeRingHeader) + entries * sizeof(abi::FreeReport));
  if (!range) return nullptr;
  HostSpan ring = memory.host_span(*range);  // pins the ring's memory for the ring's life
  if (ring.empty()) return nullptr;
  uint8_t* head = ring.data();
  std::unique_ptr<FreeRing> r(new FreeRing(vm, memory, stats, pauser, std::move(ring), entries));
  r->completed_ = load(head);  // start where the guest's producer stands
  store(head + 8, r->completed_, std::memory_order_release);
  const int door = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (door < 0) return std::unexpected(fd_error("eventfd", errno));
  r->doorbell_ = Fd(door);
  const int stop = eventfd(0, EFD_CLOEXEC);
  if (stop < 0) return std::unexpected(fd_error("eventfd", errno));
  r->stop_ = Fd(stop);
  if (auto s = vm.assign_pio_eventfd(abi::kDoorbellPort, 4, door); !s)
    return std::unexpected(s.error().context("cannot bind the free ring's doorbell"));
  r->bound_ = true;
  // A thread is the one resource here a guest may legitimately be refused
  // (many VMs under a pids limit): it gets -EAGAIN, and may free
  // synchronously instead. The destructor unbinds the doorbell.
  auto thread = start_thread("the free ring's thread", [p = r.get()] { p->run(); });
  *status = -EAGAIN;
  if (!thread) return nullptr;
  r->thread_ = std::move(*thread);
  *status = 0;
  return r;
}

FreeRing::~FreeRing() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!write(stop_.get(), &one, sizeof one);
    thread_.join();
  }
  if (bound_) (void)vm_.deassign_pio_eventfd(abi::kDoorbellPort, 4, doorbell_.get());
}

void FreeRing::run() {
  pollfd fds[2] = {{doorbell_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[0].revents & POLLIN) {
      uint64_t n;
      (void)!read(doorbell_.get(), &n, sizeof n);
      drain(true);
    }
    if (fds[1].revents & POLLIN) {
      drain(true);  // slots rung for before the stop still get their answer
      return;
    }
  }
}

int64_t FreeRing::wait(uint64_t target) {
  // A target beyond what the guest has produced would never complete.
  const uint64_t produced = load(ring_, std::memory_order_acquire);
  if (produced - target > entries_) return -EINVAL;
  // Drain here, on the vCPU's thread, rather than wait for the ring's
  // thread: the vCPU is out of the guest, so its CPU is free. If the ring's
  // thread is draining, this waits for it and then takes what is left; on
  // return every slot up to `produced`, and so `target`, is answered.
  drain(false);
  return 0;
}

void FreeRing::drain(bool on_ring_thread) {
  std::lock_guard drain_lock(drain_mu_);
  completed_ = drain_free_ring(ring_, entries_, completed_, memory_, stats_, on_ring_thread ? pauser_ : nullptr,
                               statuses_);
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

Result<int64_t> FreeRingDevice::setup(uint64_t ring_gpa, uint64_t entries) {
  std::lock_guard lock(mu_);
  if (ring_) return -EBUSY;
  int64_t status = 0;
  auto ring = FreeRing::start(vm_, memory_, stats_, pauser_, ring_gpa, entries, &status);
  if (!ring) return std::unexpected(ring.error());
  ring_ = std::move(*ring);
  live_.store(ring_.get(), std::memory_order_release);
  return status;
}

int64_t FreeRingDevice::wait(uint64_t target) {
  FreeRing* ring = live_.load(std::memory_order_acquire);
  return ring ? ring->wait(target) : -EINVAL;
}

void FreeRingDevice::quiesce() {
  if (FreeRing* ring = live_.load(std::memory_order_acquire)) ring->quiesce();
}

void FreeRingDevice::stop() {
  std::lock_guard lock(mu_);
  live_.store(nullptr, std::memory_order_release);
  ring_.reset();
}

}  // namespace kvmem
