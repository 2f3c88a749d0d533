// bench/stats: the percentile definition (nearest-rank) pinned on small
// inputs whose answers can be checked by hand.
#include <catch2/catch.hpp>

#include <numeric>

#include "bench/stats.h"
#include "tests/support.h"

using namespace kvmem;

TEST_CASE("percentiles are nearest-rank: always a sample, the smallest with p% at or below it", "[bench]") {
  // The textbook example: ranks ceil(p/100 * 5).
  const std::vector<double> five{15, 20, 35, 40, 50};
  CHECK(percentile(five, 0) == 15);
  CHECK(percentile(five, 5) == 15);
  CHECK(percentile(five, 20) == 15);   // rank 1 exactly
  CHECK(percentile(five, 30) == 20);   // rank ceil(1.5) = 2
  CHECK(percentile(five, 40) == 20);   // rank 2 exactly
  CHECK(percentile(five, 50) == 35);   // rank ceil(2.5) = 3: the median
  CHECK(percentile(five, 100) == 50);

  std::vector<double> ten(10);
  std::iota(ten.begin(), ten.end(), 1.0);  // 1 … 10
  CHECK(percentile(ten, 10) == 1);
  CHECK(percentile(ten, 50) == 5);  // the lower middle, not 5.5: no interpolation
  CHECK(percentile(ten, 90) == 9);  // rank 9 exactly, though 0.9 * 10 is not exact in binary
  CHECK(percentile(ten, 91) == 10);
  CHECK(percentile(ten, 99) == 10);
}

TEST_CASE("a summary sorts its samples and gives count, min, max, mean and the percentiles", "[bench]") {
  const Summary s = summarize({3, 1, 2, 10});
  CHECK(s.count == 4);
  CHECK(s.min == 1);
  CHECK(s.p10 == 1);
  CHECK(s.p50 == 2);
  CHECK(s.p90 == 10);
  CHECK(s.p99 == 10);
  CHECK(s.p999 == 10);
  CHECK(s.max == 10);
  CHECK(s.mean == 4);

  std::vector<double> thousand(1000);
  std::iota(thousand.begin(), thousand.end(), 1.0);
  const Summary t = summarize(thousand);
  CHECK(t.p10 == 100);
  CHECK(t.p50 == 500);
  CHECK(t.p90 == 900);
  CHECK(t.p99 == 990);
  CHECK(t.p999 == 999);
  CHECK(t.max == 1000);
  CHECK(t.mean == 500.5);
}

TEST_CASE("one sample is every percentile; no samples is a zero summary", "[bench]") {
  const Summary one = summarize({7.5});
  CHECK(one.count == 1);
  CHECK((one.min == 7.5 && one.p50 == 7.5 && one.p999 == 7.5 && one.max == 7.5 && one.mean == 7.5));
  const Summary none = summarize({});
  CHECK(none.count == 0);
  CHECK((none.min == 0 && none.p50 == 0 && none.max == 0 && none.mean == 0));
}

TEST_CASE("a percentile of nothing, or outside 0..100, is a bug", "[bench]") {
  CHECK(test::dies_with([] { (void)percentile({}, 50); }, "!sorted.empty()"));
  const std::vector<double> v{1, 2};
  CHECK(test::dies_with([&] { (void)percentile(v, 101); }, "p <= 100"));
  CHECK(test::dies_with([&] { (void)percentile(v, -1); }, "p >= 0"));
}
