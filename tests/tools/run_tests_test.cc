// tools/run-tests without KVM (KVMEM_KVM_DEVICE naming a missing device):
// [kvm] tests and Catch2's hidden tests are left out, not counted as passes,
// and the caller's spec is not widened.
#include <catch2/catch.hpp>

#include "tests/support.h"

using namespace kvmem;

TEST_CASE("run-tests probe: a visible test", "[run-tests-probe]") { CHECK(true); }
TEST_CASE("run-tests probe: a hidden test", "[.][run-tests-probe]") { CHECK(true); }
TEST_CASE("run-tests probe: a KVM test", "[run-tests-probe][kvm]") { CHECK(true); }

TEST_CASE("run-tests without KVM runs neither KVM tests nor hidden ones", "[tools]") {
  const std::string bin = test::kvmem_binary();
  const std::string build = bin.substr(0, bin.find_last_of('/'));
  auto r = test::run_command({"/bin/sh", "-c", "exec tools/run-tests \"$0\" '[run-tests-probe]' | tail -n 1", build},
                             {"KVMEM_KVM_DEVICE=/nonexistent/kvm"});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  // Skipped counts every [kvm] test of the suite; only the visible probe ran.
  CHECK(r.out.rfind("1 passed, 0 failed, ", 0) == 0);
  CHECK(r.out.find(" skipped\n") != std::string::npos);
}
