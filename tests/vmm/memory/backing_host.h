// A RAM backing made available for one test, and the host read as tests
// need it (/proc/self/smaps).
//
// memfd and anon are always there. memfd-thp needs the host's shmem THP
// policy and hugetlb free reserved huge pages: when the host lacks them,
// BackingHost turns them on with bench/host_setup (root only) for as long
// as it lives, and its destructor puts them back and checks that the
// settings read as they did before. When that cannot be done it says so in
// one loud line naming what is skipped and why (skipped(), the format of
// REQUIRE_KVM's), and ok() is false:
// the test then checks only the refusal. Declare it before any MemoryFile
// of the backing, so the file (and its huge pages) goes first.
#pragma once

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>

#include "bench/host_setup.h"
#include "vmm/memory/backing.h"

namespace kvmem::test {

inline constexpr const char* kShmemEnabledPath = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
inline constexpr const char* kNrHugepagesPath = "/proc/sys/vm/nr_hugepages";

inline std::string first_line(const char* path) {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  return line;
}

// The one loud line of a test part skipped for want of a backing.
inline void skipped(RamBacking b, const std::string& what, const std::string& why) {
  std::fprintf(stderr, "!!! SKIPPED (backing %s): %s, because %s\n", ram_backing_name(b), what.c_str(), why.c_str());
}

class BackingHost {
 public:
  // Makes backing b able to hold `ram_bytes` of RAM; `skipped` names what
  // the test leaves out when it cannot.
  BackingHost(RamBacking b, uint64_t ram_bytes, const std::string& skipped)
      : thp_before_(first_line(kShmemEnabledPath)), nr_before_(first_line(kNrHugepagesPath)) {
    refusal_ = ram_backing_unavailable(b, ram_bytes);
    if (!refusal_) return;
    HostNeeds needs;
    needs.thp = b == RamBacking::kMemfdThp;
    needs.hugetlb_bytes = b == RamBacking::kHugetlb ? hugetlb_pool_bytes(ram_bytes) : 0;
    auto s = HostSetup::apply(needs);
    if (s) {
      setup_ = std::move(*s);
      why_ = ram_backing_unavailable(b, ram_bytes).value_or("");
    } else {
      why_ = s.error().message + "; the host says: " + *refusal_;
    }
    if (!why_.empty()) test::skipped(b, skipped, why_);
  }
  BackingHost(const BackingHost&) = delete;
  BackingHost& operator=(const BackingHost&) = delete;
  ~BackingHost() {
    if (!setup_) return;
    setup_.reset();  // writes the old values back
    CHECK(first_line(kShmemEnabledPath) == thp_before_);
    CHECK(first_line(kNrHugepagesPath) == nr_before_);
  }

  bool ok() const { return why_.empty(); }
  // Why the backing cannot be had here (empty when ok()).
  const std::string& why() const { return why_; }
  // What ram_backing_unavailable said before any setup (nothing when the
  // host gave the backing by itself): the refusal a user would see.
  const std::optional<std::string>& refusal() const { return refusal_; }
  // Whether host settings were changed for this test.
  bool changed_host() const { return setup_ != nullptr; }

 private:
  std::string thp_before_, nr_before_;
  std::optional<std::string> refusal_;
  std::string why_;
  std::unique_ptr<HostSetup> setup_;
};

// The fields of the /proc/self/smaps entry of the mapping that holds
// `addr` ("VmFlags" -> "rd wr sh ... hg", "ShmemPmdMapped" -> "2048 kB");
// empty when no mapping holds it.
inline std::map<std::string, std::string> smaps_of(const void* addr) {
  const auto a = reinterpret_cast<uintptr_t>(addr);
  std::ifstream f("/proc/self/smaps");
  std::map<std::string, std::string> out;
  bool inside = false;
  for (std::string line; std::getline(f, line);) {
    std::istringstream in(line);
    std::string first;
    in >> first;
    const size_t dash = first.find('-');
    if (dash != std::string::npos && first.back() != ':') {  // "start-end perms offset dev inode path"
      if (inside) break;
      const uintptr_t lo = std::stoull(first.substr(0, dash), nullptr, 16);
      const uintptr_t hi = std::stoull(first.substr(dash + 1), nullptr, 16);
      inside = lo <= a && a < hi;
      continue;
    }
    if (!inside || first.empty() || first.back() != ':') continue;
    std::string rest;
    std::getline(in, rest);
    const size_t start = rest.find_first_not_of(' ');
    out[first.substr(0, first.size() - 1)] = start == std::string::npos ? "" : rest.substr(start);
  }
  return out;
}

// The kB figure of an smaps field ("2048 kB" -> 2048), 0 when absent.
inline uint64_t smaps_kb(const std::map<std::string, std::string>& fields, const std::string& key) {
  auto it = fields.find(key);
  return it == fields.end() ? 0 : std::stoull(it->second);
}

}  // namespace kvmem::test
