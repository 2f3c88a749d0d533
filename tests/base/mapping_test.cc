#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <catch2/catch.hpp>

#include "base/mapping.h"

using namespace kvmem;

namespace {
// True when [p, p + n) is mapped in this process (mincore fails with ENOMEM otherwise).
bool mapped(const void* p, size_t n) {
  unsigned char v[4];
  return ::mincore(const_cast<void*>(p), n, v) == 0;
}
}  // namespace

TEST_CASE("a mapping is unmapped when its owner goes, and moves keep one owner", "[base]") {
  const size_t len = 4 * 4096;
  auto m = Mapping::create("cannot map a test page", len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
  REQUIRE(m);
  uint8_t* p = m->data();
  std::memset(p, 0xab, len);
  CHECK(mapped(p, len));
  Mapping moved = std::move(*m);
  CHECK(!m->valid());
  CHECK(moved.data() == p);
  CHECK(moved.span().size() == len);
  m->reset();  // the moved-from owner unmaps nothing
  CHECK(mapped(p, len));
  moved.reset();
  CHECK(!mapped(p, len));
}

TEST_CASE("a mapping that cannot be made names the call and the errno", "[base]") {
  auto m = Mapping::create("cannot map the reservation", 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS);
  REQUIRE(!m);
  CHECK(m.error().code == EINVAL);
  CHECK(m.error().message.rfind("cannot map the reservation: mmap: EINVAL", 0) == 0);
}
