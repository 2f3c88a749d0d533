// `kvmem bench boot`: the contract's exit codes, wait statuses in words, and
// any working directory.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <signal.h>
#include <stdlib.h>

#include <climits>

#include "bench/boot.h"
#include "tests/cli/cli_support.h"

using namespace kvmem;
using test::run_kvmem;

TEST_CASE("bench boot exits 2 for a missing config and 3 for a host without KVM", "[bench][cli]") {
  auto missing = run_kvmem({"bench", "boot", "--runs", "1", "/nonexistent.json"});
  CHECK(missing.exit_code == 2);
  CHECK(missing.err.find("cannot read config /nonexistent.json: open: ENOENT") != std::string::npos);
  auto no_kvm = run_kvmem({"bench", "boot", "--runs", "1"}, {"KVMEM_KVM_DEVICE=/nonexistent/kvm"});
  CHECK(no_kvm.exit_code == 3);
  CHECK(no_kvm.err.find("this host has no KVM") != std::string::npos);
}

TEST_CASE("a child's wait status is told in words", "[bench]") {
  CHECK(describe_wait_status(1 << 8) == "exited 1");
  CHECK(describe_wait_status(0) == "exited 0");
  CHECK(describe_wait_status(SIGKILL) == "killed by signal SIGKILL");
  CHECK(describe_wait_status(SIGSEGV | 0x80) == "killed by signal SIGSEGV");  // with a core dump
}

TEST_CASE("bench boot works from any directory", "[bench][cli][kvm]") {
  REQUIRE_KVM();
  char bin[PATH_MAX];
  REQUIRE(realpath(test::kvmem_binary().c_str(), bin) != nullptr);
  auto r = test::run_command({"/bin/sh", "-c", "cd / && exec \"$0\" bench boot --runs 1 --json", bin});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(nlohmann::json::parse(r.out)["config"].get<std::string>().ends_with("/configs/hello.json"));
}

TEST_CASE("bench boot's table shows the wall-time percentiles in ms and the peak RSS", "[bench]") {
  const nlohmann::json row{{"bench", "boot"},          {"config", "c.json"},   {"runs", 40},
                           {"wall_ms_median", 5.321},   {"wall_ms_p10", 4.449}, {"wall_ms_p90", 16.2},
                           {"wall_ms_min", 4.0},        {"max_rss_bytes", 5 << 20},
                           {"guest_resident_bytes", 1 << 20}, {"rss_beyond_guest_bytes", 4 << 20}};
  CHECK(format_boot_bench(row) ==
        "boot: kvmem run c.json x40\n"
        "             median   p10    p90   min\n"
        "                 ms    ms     ms    ms\n"
        "  wall time    5.32  4.45  16.20  4.00\n"
        "  peak RSS   5.00 MiB, of which guest RAM 1.00 MiB; beyond guest RAM 4.00 MiB\n");
}
