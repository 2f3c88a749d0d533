#include <cerrno>

#include <catch2/catch.hpp>

#include "base/check.h"
#include "base/error.h"
#include "tests/support.h"

using namespace kvmem;

TEST_CASE("a host-call error names the call and the errno", "[base]") {
  auto e = sys_fail("cannot punch hole [0x0, 0x1000) in memory file", "fallocate", EINVAL);
  CHECK(e.error().code == EINVAL);
  CHECK(e.error().message ==
        "cannot punch hole [0x0, 0x1000) in memory file: fallocate: EINVAL (Invalid argument)");
}

TEST_CASE("context prefixes an error without losing its errno", "[base]") {
  Error e = sys_fail("open /dev/kvm", "open", ENOENT).error().context("cannot start vm0");
  CHECK(e.code == ENOENT);
  CHECK(e.message.rfind("cannot start vm0: open /dev/kvm: open: ENOENT", 0) == 0);
}

TEST_CASE("errno_name falls back to the number for unknown values", "[base]") {
  CHECK(errno_name(EBADF) == "EBADF");
  CHECK(errno_name(123456) == "errno 123456");
}

TEST_CASE("a violated invariant aborts loudly with the expression and the state", "[base]") {
  std::string out;
  CHECK(test::dies_with([] { int refs = 0; KVMEM_CHECK(refs > 0, "refs is {}", refs); },
                        "refs is 0", &out));
  CHECK(out.find("refs > 0") != std::string::npos);
}
