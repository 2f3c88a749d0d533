// `bench fault --setup-host`: host settings a backing needs, applied for
// one run and put back afterwards.
//
//   memfd-thp  /sys/kernel/mm/transparent_hugepage/shmem_enabled to
//              "advise" when it is "never" or "deny";
//   hugetlb    /proc/sys/vm/nr_hugepages raised until `hugetlb_bytes` of
//              2 MiB pages are free.
//
// The old values come back when the HostSetup goes (every return path), and
// also when SIGINT, SIGTERM or SIGHUP ends the process first: a handler
// writes them back with async-signal-safe calls only, then lets the signal
// take its default course. One HostSetup at a time per process.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"

namespace kvmem {

struct HostNeeds {
  bool thp = false;
  uint64_t hugetlb_bytes = 0;
};

class HostSetup {
 public:
  // Applies what `needs` asks that the host lacks. `root` prefixes every
  // path (tests use a directory of their own). Errors name the file and
  // the errno (EACCES: not root); nothing stays changed then.
  static Result<std::unique_ptr<HostSetup>> apply(const HostNeeds& needs, const std::string& root = "");
  HostSetup(const HostSetup&) = delete;
  HostSetup& operator=(const HostSetup&) = delete;
  ~HostSetup();

  // What was changed, one line each ("shmem_enabled: never -> advise").
  const std::vector<std::string>& changes() const { return changes_; }

 private:
  HostSetup() = default;
  struct Saved {
    std::string path;
    std::string old_value;
  };
  Status set(const std::string& path, const std::string& old_value, const std::string& value, const char* name);
  void restore();

  std::vector<Saved> saved_;
  std::vector<std::string> changes_;
};

}  // namespace kvmem
