#include "vmm/devices/free_reports.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "memory/range.h"
#include "vmm/memory/guest_memory.h"
#include "vmm/kvm/kvm.h"

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

}  // namespace

int64_t check_free_range(const GuestMemory& memory, uint64_t gpa, uint64_t length) {
  if (length == 0 || gpa % kPageSize != 0 || length % kPageSize != 0) return -EINVAL;
  if (gpa + length < gpa) return -EINVAL;
  if (int err = memory.reportable(GuestRange(gpa, gpa + length)); err != 0) return err;  // -EFAULT, or -EPERM: not RAM
  if (gpa < abi::kBootAreaEnd) return -EPERM;
  return 0;
}

int64_t free_range(GuestMemory& memory, FreeStats& stats, uint64_t gpa, uint64_t length) {
  FreeBatch batch(memory, stats);
  int64_t status = 0;
  batch.add(gpa, length, &status);
  batch.flush();
  return status;
}

FreeBatch::~FreeBatch() { flush(); }

// Longest run punched in one call: shmem serialises fallocate on a file, so
// one huge punch would hold up every other VM's reports for its length.
static constexpr uint64_t kMaxRun = 64ull << 20;

void FreeBatch::add(uint64_t gpa, uint64_t length, int64_t* status) {
  stats_.ranges.fetch_add(1, std::memory_order_relaxed);
  *status = check_free_range(memory_, gpa, length);
  if (*status != 0) {
    stats_.invalid_ranges.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  stats_.bytes_reported.fetch_add(length, std::memory_order_relaxed);
  // Ranges that continue the current run join it: one punch for the run.
  if (run_.empty() || run_.end != gpa || run_.length() >= kMaxRun) flush();
  if (run_.empty()) run_ = GuestRange(gpa, gpa);
  run_.end = gpa + length;
  statuses_.push_back(status);
}

void FreeBatch::flush() {
  if (run_.empty()) return;
  if (auto s = memory_.decommit(run_); !s) {
    const int64_t err = -(s.error().code ? s.error().code : EIO);
    for (int64_t* st : statuses_) *st = err;
  } else {
    stats_.bytes_decommitted.fetch_add(run_.length(), std::memory_order_relaxed);
  }
  run_ = GuestRange();
  statuses_.clear();
}

int64_t report_free_list(GuestMemory& memory, FreeStats& stats, uint64_t list_gpa, uint64_t count) {
  if (count == 0 || count > abi::kReportMax) return -EINVAL;
  const uint64_t bytes = count * sizeof(abi::FreeReport);
  if (list_gpa % 8 != 0) return -EFAULT;
  auto range = GuestRange::of(list_gpa, bytes);
  if (!range) return -EFAULT;
  HostSpan list = memory.host_span(*range);  // pins the list's memory while we use it
  if (list.empty()) return -EFAULT;
  stats.reports.fetch_add(1, std::memory_order_relaxed);
  // Statuses are gathered here and written back only once every punch is done.
  std::vector<int64_t> statuses(count);
  {
    FreeBatch batch(memory, stats);
    for (uint64_t i = 0; i < count; i++) {
      uint8_t* e = list.data() + i * sizeof(abi::FreeReport);
      batch.add(load(e), load(e + 8), &statuses[i]);
    }
  }
  int64_t done = 0;
  for (uint64_t i = 0; i < count; i++) {
    store(list.data() + i * sizeof(abi::FreeReport) + 16, static_cast<uint64_t>(statuses[i]));
    done += statuses[i] == 0;
  }
  return done;
}

std::unique_ptr<FreeRing> FreeRing::start(KvmVm& vm, GuestMemory& memory, FreeStats& stats, VcpuPauser* pauser,
                                          uint64_t ring_gpa, uint64_t entries, int64_t* status) {
  if (entries == 0 || entries > abi::kRingMaxEntries || (entries & (entries - 1)) != 0 || ring_gpa % 64 != 0) {
    *status = -EINVAL;
    return nullptr;
  }
  auto range = GuestRange::of(ring_gpa, sizeof(abi::FreeRingHeader) + entries * sizeof(abi::FreeReport));
  HostSpan ring = range ? memory.host_span(*range) : HostSpan();
  if (ring.empty()) {
    *status = -EFAULT;
    return nullptr;
  }
  std::unique_ptr<FreeRing> r(new FreeRing(vm, memory, stats, pauser, ring, entries));
  r->completed_ = load(ring.data());  // start where the guest's producer stands
  store(ring.data() + 8, r->completed_, std::memory_order_release);
  int door = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), stop = eventfd(0, EFD_CLOEXEC);
  if (door < 0 || stop < 0) {
    *status = -errno;
    if (door >= 0) close(door);
    if (stop >= 0) close(stop);
    return nullptr;
  }
  r->doorbell_ = Fd(door);
  r->stop_ = Fd(stop);
  if (auto s = vm.assign_pio_eventfd(abi::kDoorbellPort, 4, door); !s) {
    *status = -(s.error().code ? s.error().code : ENODEV);
    return nullptr;
  }
  r->thread_ = std::thread([p = r.get()] { p->run(); });
  *status = 0;
  return r;
}

FreeRing::~FreeRing() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!write(stop_.get(), &one, sizeof one);
    thread_.join();
  }
  if (doorbell_.valid()) (void)vm_.deassign_pio_eventfd(abi::kDoorbellPort, 4, doorbell_.get());
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
    // On the ring's own thread the vCPU may be running, and then every punch
    // kicks it. Parking it costs one kick, so it pays when the slots make
    // more than one punch (more than one run of neighbouring ranges).
    // Scattered 4 KiB ranges went from 0.04 to ~0.5 of raw fallocate. A
    // drain from kHcFreeRingWait runs on the vCPU's thread: no need.
    bool park = false;
    if (pauser) {
      uint64_t runs = 0, end = 0;
      for (uint64_t i = 0; i < pending && runs < 2; i++) {
        uint8_t* e = slots + ((completed + i) & (entries - 1)) * sizeof(abi::FreeReport);
        const uint64_t gpa = load(e);
        if (i == 0 || gpa != end) runs++;
        end = gpa + load(e + 8);
      }
      park = runs > 1;
    }
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

}  // namespace kvmem
