// KVM_GET_STATS_FD (vmm/kvm/stats.h): a fresh vCPU's counters are there by
// name, and the difference of two readings is taken name by name.
#include <sys/ioctl.h>

#include <catch2/catch.hpp>

#include "tests/support.h"
#include "vmm/kvm/kvm.h"
#include "vmm/kvm/stats.h"

using namespace kvmem;

TEST_CASE("a vCPU's KVM statistics are read by name", "[kvm]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  auto vm = kvm->create_vm();
  REQUIRE(vm);
  Fd vcpu(::ioctl(vm->fd(), KVM_CREATE_VCPU, 0));
  REQUIRE(vcpu.get() >= 0);
  auto stats = KvmStats::open(vcpu.get());
  REQUIRE(stats);
  auto now = stats->read();
  REQUIRE(now);
  // The counters every x86 KVM keeps; a vCPU that never ran has none yet.
  for (const char* name : {"exits", "pf_taken", "pf_fixed", "io_exits", "signal_exits"}) {
    INFO(name);
    REQUIRE(now->count(name));
    CHECK(now->at(name) == 0);
  }
  CHECK_FALSE(KvmStats::open(-1));
}

TEST_CASE("stats deltas subtract name by name and never wrap", "[kvm-stats]") {
  const auto d = stats_delta({{"exits", 10}, {"pf_taken", 5}, {"gone", 3}}, {{"exits", 25}, {"pf_taken", 4}, {"new", 7}});
  CHECK(d.at("exits") == 15);
  CHECK(d.at("pf_taken") == 0);  // a counter that went back reads as 0, not 2^64 - 1
  CHECK(d.at("new") == 7);
  CHECK_FALSE(d.count("gone"));
}
