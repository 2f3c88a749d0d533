// Free-page reports: a guest hands ranges of its RAM back to the host.
//
// Two paths, one check. Every range is validated here — page-aligned,
// non-empty, not wrapping, wholly inside this VM's RAM, clear of the boot
// area — and only then decommitted (punched) through GuestMemory, which can
// only ever name this VM's own allocations. A bad range gets its own
// negative errno and is counted; it never fails the VMM.
//
//   synchronous   kHcReportFree: a FreeReport array in guest memory, one
//                 exit for the whole list; decommitted before the guest
//                 resumes.
//   asynchronous  FreeRing (free_ring.h): a ring in guest memory, an
//                 ioeventfd doorbell, and a host thread that drains it.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "base/error.h"
#include "guest/abi.h"
#include "memory/range.h"
#include "vmm/memory/region.h"

namespace kvmem {

class GuestMemory;

// Counters shared by both paths; read from any thread.
struct FreeStats {
  std::atomic<uint64_t> reports{0};            // sync calls and ring doorbells handled
  std::atomic<uint64_t> ranges{0};             // ranges looked at
  std::atomic<uint64_t> invalid_ranges{0};     // ... refused with an errno
  std::atomic<uint64_t> bytes_reported{0};     // bytes in accepted ranges
  std::atomic<uint64_t> bytes_decommitted{0};  // ... whose punch succeeded
};

// 0, or the negative errno a range [gpa, gpa + length) earns (abi.h lists them).
int64_t check_free_range(const GuestMemory& memory, uint64_t gpa, uint64_t length);

// Checks ranges one by one and decommits them in runs: a range that starts
// where the previous accepted one ended joins its run, and each run is one
// punch (a guest that frees 64 neighbouring pages costs one fallocate, not
// 64). Each range's status is written through its pointer: the check's
// errno at once, and for accepted ranges 0, or the punch's errno when the
// run's punch fails, by the time flush() (or the destructor) returns.
class FreeBatch {
 public:
  FreeBatch(GuestMemory& memory, FreeStats& stats) : memory_(memory), stats_(stats) {}
  FreeBatch(const FreeBatch&) = delete;
  FreeBatch& operator=(const FreeBatch&) = delete;
  ~FreeBatch();
  void add(uint64_t gpa, uint64_t length, int64_t* status);
  void flush();

 private:
  GuestMemory& memory_;
  FreeStats& stats_;
  GuestRange run_;                 // accepted ranges not yet punched
  std::vector<int64_t*> statuses_; // theirs
};

// Checks and decommits one range; returns its status.
int64_t free_range(GuestMemory& memory, FreeStats& stats, uint64_t gpa, uint64_t length);

// kHcReportFree: returns the number of ranges decommitted, or a negative errno.
int64_t report_free_list(GuestMemory& memory, FreeStats& stats, uint64_t list_gpa, uint64_t count);

// The synchronous device: kHcReportFree, one exit per list, decommitted
// before the guest resumes. It holds no lock of its own (FreeBatch's
// decommit takes the MemoryFile's); several vCPUs may report at once.
class FreeReports {
 public:
  FreeReports(GuestMemory& memory, FreeStats& stats) : memory_(memory), stats_(stats) {}
  int64_t report(uint64_t list_gpa, uint64_t count) { return report_free_list(memory_, stats_, list_gpa, count); }

 private:
  GuestMemory& memory_;
  FreeStats& stats_;
};

}  // namespace kvmem
