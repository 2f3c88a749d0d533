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

namespace {

Result<int> parse_digit(char c) {
  if (c < '0' || c > '9') return fail("'{}' is not a digit", c);
  return c - '0';
}
Status check_even(int n) {
  if (n % 2) return fail("{} is odd", n);
  return {};
}
// Uses both forms of the early return; *reached says how far it got.
Result<int> twice_even_digit(char c, int* reached) {
  const int d = KVMEM_TRY(parse_digit(c));
  *reached = 1;
  KVMEM_TRY_CTX(check_even(d), "cannot double it");
  *reached = 2;
  return 2 * d;
}

}  // namespace

TEST_CASE("KVMEM_TRY returns the first error and yields values on success", "[base]") {
  int reached = 0;
  CHECK(twice_even_digit('4', &reached) == 8);
  CHECK(reached == 2);
  reached = 0;
  auto odd = twice_even_digit('3', &reached);
  REQUIRE(!odd);
  CHECK(odd.error().message == "cannot double it: 3 is odd");
  CHECK(reached == 1);
  reached = 0;
  auto bad = twice_even_digit('x', &reached);
  REQUIRE(!bad);
  CHECK(bad.error().message == "'x' is not a digit");
  CHECK(reached == 0);
}
