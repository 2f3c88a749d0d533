// `kvmem bench fs`: the rows it yields and the tables it prints (figures
// are not asserted: a benchmark measures, the tests check its shape).
#include <catch2/catch.hpp>

#include "bench/fs.h"
#include "tests/support.h"
#include "vmm/kvm/kvm.h"

using namespace kvmem;
using json = nlohmann::json;

TEST_CASE("the quick file-layer io benchmark yields a row per op and size, each with both sides", "[bench]") {
  auto rows = run_fs_io_bench({.quick = true});
  REQUIRE(rows.size() == 9);  // 3 ops x 3 sizes (16 MiB only in the full run)
  for (const json& r : rows) {
    INFO(r.dump());
    REQUIRE_FALSE(r.contains("error"));
    CHECK(r.at("bench") == "io");
    CHECK(r.at("layer_mb_s").get<double>() > 0);
    CHECK(r.at("memfd_mb_s").get<double>() > 0);
    CHECK(r.at("ratio").get<double>() ==
          Approx(r.at("layer_mb_s").get<double>() / r.at("memfd_mb_s").get<double>()));
  }
  const std::string table = format_fs_bench(rows);
  CHECK_THAT(table, Catch::Contains("file layer against the kernel's memfd"));
  CHECK_THAT(table, Catch::Contains("write_fresh"));
}

TEST_CASE("the quick guest part of bench fs shows a fresh file in one slot and measures a ping-pong",
          "[bench][kvm][windows]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  auto rows = run_fs_guest_bench(*kvm, {.quick = true});
  REQUIRE(rows.size() == 2);
  for (const json& r : rows) {
    INFO(r.dump());
    REQUIRE_FALSE(r.contains("error"));
  }
  CHECK(rows[0].at("memslots") == 1);
  CHECK(rows[0].at("allocations") == 1);
  CHECK(rows[1].at("guest_one_way_ns").get<double>() > 0);
  CHECK(rows[1].at("host_one_way_ns").get<double>() > 0);
  const std::string table = format_fs_bench(rows);
  CHECK_THAT(table, Catch::Contains("two VMs, a window"));
}

TEST_CASE("bench fs prints an error row's message instead of figures", "[bench]") {
  const std::string table = format_fs_bench({json{{"bench", "window"}, {"error", "no memory"}}});
  CHECK(table == "error: window: no memory\n");
}
