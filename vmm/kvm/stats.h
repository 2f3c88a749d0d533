// KVM's binary statistics of a vCPU (KVM_GET_STATS_FD): counters such as
// "exits", "pf_taken", "pf_fixed", kept by the kernel, so that exits the
// kernel handles itself (a shadow page fault) can be counted too.
//
//   auto s = KvmStats::open(vcpu_fd);       // the descriptors, read once
//   std::map<std::string, uint64_t> now = s->read().value();
//
// Only single-value counters are read (histograms are left out). A host
// whose KVM lacks the interface gives an Error naming the ioctl; callers
// treat the figures as optional.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/fd.h"

namespace kvmem {

class KvmStats {
 public:
  static Result<KvmStats> open(int vcpu_fd);
  // Every single-value counter, by name.
  Result<std::map<std::string, uint64_t>> read() const;

 private:
  struct Counter {
    std::string name;
    uint64_t offset;  // in the file, from its start
  };
  KvmStats(Fd fd, std::vector<Counter> counters) : fd_(std::move(fd)), counters_(std::move(counters)) {}
  Fd fd_;
  std::vector<Counter> counters_;
};

// after - before, name by name (names missing from `before` count from 0).
std::map<std::string, uint64_t> stats_delta(const std::map<std::string, uint64_t>& before,
                                            const std::map<std::string, uint64_t>& after);

}  // namespace kvmem
