#include <cstdio>

#include <catch2/catch.hpp>

#include "bench/alloc.h"

using namespace kvmem;

TEST_CASE("the quick allocator benchmark yields rows with the named keys", "[memory]") {
  auto rows = run_alloc_bench({.quick = true});
  int alloc = 0, decommit = 0, usage = 0;
  for (const auto& r : rows) {
    INFO(r.dump());
    REQUIRE_FALSE(r.contains("error"));
    std::string b = r.at("bench");
    if (b == "alloc") {
      alloc++;
      CHECK(r.at("live").get<uint64_t>() > 0);
      CHECK(r.at("pairs_per_s").get<uint64_t>() > 0);
    } else if (b == "decommit") {
      decommit++;
      CHECK(r.at("size").get<uint64_t>() > 0);
      CHECK(r.at("ratio_to_raw").get<double>() > 0);
    } else if (b == "usage") {
      usage++;
      CHECK(r.at("speedup_vs_mincore").get<double>() > 0);
    }
  }
  CHECK(alloc == 2);
  CHECK(decommit == 6);
  CHECK(usage == 3);
  std::string table = format_alloc_bench_table(rows);
  CHECK(table.find("pairs_per_s") != std::string::npos);
  CHECK(table.find("ratio_to_raw") != std::string::npos);
}

// The full run, for the figures in docs/benchmarks.md; hidden from the suite.
// build/kvmem-tests "[.alloc-bench]"   (until `kvmem bench alloc` is wired)
TEST_CASE("full allocator benchmark", "[.alloc-bench]") {
  auto rows = run_alloc_bench({}, [](const std::string& s) { std::fprintf(stderr, "%s\n", s.c_str()); });
  std::printf("%s", format_alloc_bench_table(rows).c_str());
  for (const auto& r : rows) std::printf("%s\n", r.dump().c_str());
}
