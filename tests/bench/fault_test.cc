// `kvmem bench fault`: the conversion and JSON helpers, the option checks,
// and small real runs whose rows must have every key and sane figures (the
// figures themselves are not asserted: a benchmark measures).
#include <map>

#include <catch2/catch.hpp>

#include "bench/fault.h"
#include "tests/support.h"
#include "vmm/kvm/kvm.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

constexpr uint64_t kMiB = 1 << 20;

const char* const kLatencyKeys[] = {"p50", "p90", "p99", "p999", "max", "mean", "total_ms", "count"};
const char* const kRowKeys[] = {"bench",          "backing",          "prefault",          "vcpus",
                                "skipped",        "reason",           "first_touch_ns",    "second_pass_ns",
                                "host_first_touch_ns", "prefaulted_touch_ns", "ratio_p50", "ratio_total",
                                "pages_per_s",    "prefault_cpu_ms",  "exits_during_measure", "host"};

void check_latency(const json& lat, uint64_t count) {
  INFO(lat.dump());
  for (const char* k : kLatencyKeys) CHECK(lat.contains(k));
  CHECK(lat.at("count") == count);
  const double p50 = lat.at("p50").get<double>(), p99 = lat.at("p99").get<double>();
  CHECK(p50 > 0);
  CHECK(p50 <= lat.at("p90").get<double>());
  CHECK(lat.at("p90").get<double>() <= p99);
  CHECK(p99 <= lat.at("p999").get<double>());
  CHECK(lat.at("p999").get<double>() <= lat.at("max").get<double>());
  CHECK(lat.at("total_ms").get<double>() > 0);
}

}  // namespace

TEST_CASE("TSC ticks convert to nanoseconds at the given rate", "[bench-fault]") {
  CHECK(ticks_to_ns(2600, 2'600'000) == Approx(1000.0));
  CHECK(ticks_to_ns(0, 2'600'000) == 0.0);
  CHECK(ticks_to_ns(1, 1'000'000) == Approx(1.0));  // 1 GHz: a tick is a nanosecond
  // Large counts keep their precision: 10 minutes of a 3 GHz counter.
  CHECK(ticks_to_ns(1'800'000'000'000ull, 3'000'000) == Approx(600e9));
}

TEST_CASE("latency objects carry the percentiles, and nulls when there are no samples", "[bench-fault]") {
  std::vector<double> ns;
  for (int i = 1; i <= 1000; i++) ns.push_back(i);
  const json j = latency_json(summarize(ns), 12.5);
  CHECK(j.at("p50") == 500.0);
  CHECK(j.at("p90") == 900.0);
  CHECK(j.at("p99") == 990.0);
  CHECK(j.at("p999") == 999.0);
  CHECK(j.at("max") == 1000.0);
  CHECK(j.at("mean") == Approx(500.5));
  CHECK(j.at("total_ms") == 12.5);
  const json empty = latency_json(summarize({}), 0);
  for (const char* k : kLatencyKeys)
    if (std::string(k) != "count") CHECK(empty.at(k).is_null());
}

TEST_CASE("bench fault refuses options that do not fit, naming the option", "[bench-fault]") {
  auto err = [](FaultBenchOptions o) {
    auto s = check_fault_options(o);
    return s ? std::string() : s.error().message;
  };
  CHECK(err({}) == "");
  CHECK_THAT(err({.backings = {"memfd", "tmpfs"}}), Catch::StartsWith("--backing: unknown backing \"tmpfs\""));
  CHECK_THAT(err({.backings = {}}), Catch::StartsWith("--backing"));
  CHECK_THAT(err({.prefaults = {"lazy"}}), Catch::StartsWith("--prefault: unknown mode \"lazy\""));
  CHECK_THAT(err({.size = 3 * kMiB}), Catch::StartsWith("--size"));
  CHECK_THAT(err({.size = 2 * kMiB, .vcpus = 2}), Catch::StartsWith("--size"));
  CHECK_THAT(err({.vcpus = 0}), Catch::StartsWith("--vcpus"));
  CHECK_THAT(err({.vcpus = 17}), Catch::StartsWith("--vcpus"));
  CHECK_THAT(err({.stride = 12}), Catch::StartsWith("--stride"));
  CHECK_THAT(err({.size = 2 * kMiB, .stride = 3 * 8 * 1024}), Catch::StartsWith("--stride"));
  CHECK_THAT(err({.repeat = 0}), Catch::StartsWith("--repeat"));
}

TEST_CASE("the host facts name the kernel, the KVM flavour, the THP policy and the TSC", "[bench-fault]") {
  const json h = fault_host_facts(2'600'000, "calibrated");
  for (const char* k : {"kernel", "kvm", "cpu", "thp_enabled", "thp_shmem_enabled", "hugepages_total",
                        "hugepages_free", "tsc_khz", "tsc_source"})
    CHECK(h.contains(k));
  CHECK(h.at("tsc_khz") == 2'600'000);
  CHECK_THAT(h.at("kernel").get<std::string>(), Catch::StartsWith("Linux"));
}

TEST_CASE("a small memfd sweep yields rows with every key, one sample per page", "[bench-fault][kvm]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  for (unsigned vcpus : {1u, 2u}) {
    FaultBenchOptions o{.backings = {"memfd"}, .prefaults = {"none"}, .size = 4 * kMiB, .vcpus = vcpus};
    auto rows = run_fault_bench(*kvm, o, nullptr);
    REQUIRE(rows.size() == 1);
    const json& r = rows[0];
    INFO(r.dump());
    for (const char* k : kRowKeys) CHECK(r.contains(k));
    REQUIRE(r.at("skipped") == false);
    CHECK(r.at("vcpus") == vcpus);
    const uint64_t pages = 4 * kMiB / 4096;
    check_latency(r.at("first_touch_ns"), pages);
    check_latency(r.at("second_pass_ns"), pages);
    check_latency(r.at("host_first_touch_ns"), pages);
    // A fault costs more than an access to a page already mapped.
    CHECK(r.at("first_touch_ns").at("p50").get<double>() > r.at("second_pass_ns").at("p50").get<double>());
    CHECK(r.at("ratio_p50").get<double>() ==
          Approx(r.at("first_touch_ns").at("p50").get<double>() / r.at("host_first_touch_ns").at("p50").get<double>()));
    CHECK(r.at("pages_per_s").get<double>() > 0);
    // The measured loop makes no exit: only each vCPU's exit hypercall.
    CHECK(r.at("exits_during_measure") == 0);
    // The kernel saw a shadow page fault at least for every page swept.
    if (r.at("kvm_stats_run").is_object()) CHECK(r.at("kvm_stats_run").at("pf_taken").get<uint64_t>() >= pages);
    const std::string table = format_fault_bench(rows);
    CHECK_THAT(table, Catch::Contains("Overall demand paging rate"));
    CHECK_THAT(table, Catch::Contains("memfd"));
  }
}

TEST_CASE("a backing the host cannot give is a skipped row that says how to enable it", "[bench-fault][kvm]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  FaultBenchOptions o{.backings = {"memfd-thp", "hugetlb"}, .prefaults = {"none"}, .size = 2 * kMiB};
  auto rows = run_fault_bench(*kvm, o, nullptr);
  REQUIRE(rows.size() == 2);
  for (const json& r : rows) {
    INFO(r.dump());
    if (r.at("skipped") == true) {
      CHECK_THAT(r.at("reason").get<std::string>(), Catch::Contains("echo"));
      WARN("bench fault skipped " << r.at("backing").get<std::string>() << ": " << r.at("reason").get<std::string>());
    } else {
      check_latency(r.at("first_touch_ns"), 512);
    }
  }
}

TEST_CASE("every prefault mode on memfd and anon runs, and prefaulting takes most shadow faults away",
          "[bench-fault][kvm]") {
  REQUIRE_KVM();
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  FaultBenchOptions o{.backings = {"memfd", "anon"}, .prefaults = {"none", "eager", "ahead"}, .size = 4 * kMiB};
  auto rows = run_fault_bench(*kvm, o, nullptr);
  REQUIRE(rows.size() == 6);
  std::map<std::string, uint64_t> faults;
  for (const json& r : rows) {
    INFO(r.dump());
    REQUIRE(r.at("skipped") == false);
    check_latency(r.at("first_touch_ns"), 1024);
    check_latency(r.at("prefaulted_touch_ns"), 1024);
    if (r.at("prefault") != "none") CHECK(r.at("prefault_threads").get<unsigned>() >= 1);
    if (r.at("kvm_stats_run").is_object())
      faults[r.at("backing").get<std::string>() + "/" + r.at("prefault").get<std::string>()] =
          r.at("kvm_stats_run").at("pf_taken").get<uint64_t>();
  }
  // KVM maps up to 8 neighbouring pages per fault when the host holds them.
  if (faults.size() == 6)
    for (const char* b : {"memfd", "anon"}) {
      INFO(b);
      CHECK(faults[std::string(b) + "/eager"] * 2 < faults[std::string(b) + "/none"]);
    }
}
