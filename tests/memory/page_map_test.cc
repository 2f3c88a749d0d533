// populated_ranges: the pages of an anonymous mapping that hold something,
// as /proc/self/pagemap says, without faulting any in.
#include <sys/mman.h>

#include <cstring>
#include <vector>

#include <catch2/catch.hpp>

#include "base/mapping.h"
#include "memory/page_map.h"

using namespace kvmem;

namespace {

constexpr uint64_t kPage = 4096;

std::vector<HostRange> relative(const std::vector<HostRange>& rs, const uint8_t* base) {
  std::vector<HostRange> out;
  const uint64_t b = reinterpret_cast<uint64_t>(base);
  for (const HostRange& r : rs) out.push_back(HostRange(r.start - b, r.end - b));
  return out;
}

}  // namespace

TEST_CASE("populated_ranges lists the touched pages of an anonymous mapping, merged", "[memory][snapshot]") {
  constexpr uint64_t kBytes = 20000 * kPage;  // more than one read of pagemap
  auto m = Mapping::create("test mapping", kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
  REQUIRE(m);
  uint8_t* p = static_cast<uint8_t*>(m->data());
  // THP would populate 2 MiB at a time: keep it to the pages touched.
  (void)madvise(p, kBytes, MADV_NOHUGEPAGE);
  std::span<const uint8_t> all(p, kBytes);
  auto none = populated_ranges(all);
  REQUIRE(none);
  CHECK(none->empty());

  p[0] = 1;
  p[kPage] = 2;
  p[5 * kPage + 7] = 3;
  p[16383 * kPage] = 4;  // the last page of the first read and the first of the second
  p[16384 * kPage] = 5;
  volatile uint8_t read = p[19999 * kPage];  // a read maps the zero page: present
  (void)read;
  auto some = populated_ranges(all);
  REQUIRE(some);
  CHECK(relative(*some, p) == std::vector<HostRange>{HostRange(0, 2 * kPage), HostRange(5 * kPage, 6 * kPage),
                                                     HostRange(16383 * kPage, 16385 * kPage),
                                                     HostRange(19999 * kPage, 20000 * kPage)});
  // MADV_DONTNEED gives the pages back: they are no longer listed.
  REQUIRE(madvise(p, 2 * kPage, MADV_DONTNEED) == 0);
  auto after = populated_ranges(all);
  REQUIRE(after);
  CHECK(relative(*after, p).front() == HostRange(5 * kPage, 6 * kPage));

  CHECK_FALSE(populated_ranges(std::span<const uint8_t>(p + 1, kPage)));  // unaligned
}
