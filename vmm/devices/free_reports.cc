#include "vmm/devices/free_reports.h"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "memory/range.h"
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
    stats_.bytes_decommitted.fetch_add(*s, std::memory_order_relaxed);
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

}  // namespace kvmem
