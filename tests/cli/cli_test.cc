// The kvmem binary as a user runs it: exit codes, messages, --json.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>

#include "guest/abi.h"
#include "guest/layout.h"
#include "tests/support.h"
#include "tests/cli/cli_support.h"

using namespace kvmem;
using test::run_kvmem;
using test::TempConfig;
using json = nlohmann::json;


TEST_CASE("the kvmem binary exists for the CLI tests", "[cli]") {
  REQUIRE(access(test::kvmem_binary().c_str(), X_OK) == 0);
}

TEST_CASE("--help and --version exit 0 and tell the truth", "[cli]") {
  auto help = run_kvmem({"--help"});
  CHECK(help.exit_code == 0);
  CHECK(help.out.find("run") != std::string::npos);
  CHECK(help.out.find("validate") != std::string::npos);
  CHECK(help.out.find("Exit codes") != std::string::npos);
  auto version = run_kvmem({"--version"});
  CHECK(version.exit_code == 0);
  CHECK(version.out.find("hypercall ABI 1") != std::string::npos);
}

TEST_CASE("bad usage exits 2", "[cli]") {
  CHECK(run_kvmem({}).exit_code == 2);
  CHECK(run_kvmem({"frobnicate"}).exit_code == 2);
  CHECK(run_kvmem({"run"}).exit_code == 2);
  CHECK(run_kvmem({"run", "configs/hello.json", "--bogus"}).exit_code == 2);
}

TEST_CASE("validate accepts the shipped configs", "[cli]") {
  for (const char* c : {"configs/hello.json", "configs/steps.json", "configs/patterns.json", "configs/faults/divide-by-zero.json",
                    "configs/many-vms.json", "configs/reclaim-stress.json", "configs/stress-quick.json",
                    "configs/stress-snapshots.json"}) {
    INFO(c);
    auto r = run_kvmem({"validate", c});
    INFO(r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.out.find(": ok") != std::string::npos);
  }
}

TEST_CASE("a bad config exits 2 with the file and the JSON pointer", "[cli]") {
  TempConfig bad(R"({"memory": "4M", "program": [{"op": "fill", "at": "1M", "length": 12, "pattern": "zero"}]})");
  for (const char* cmd : {"validate", "run"}) {
    auto r = run_kvmem({cmd, bad.path()});
    CHECK(r.exit_code == 2);
    CHECK(r.err == "kvmem: " + bad.path() + ": /program/0/length: 0xc is not a multiple of 8\n");
  }
  auto j = run_kvmem({"validate", "--json", bad.path()});
  CHECK(j.exit_code == 2);
  auto report = json::parse(j.out);
  CHECK(report["exit_code"] == 2);
  CHECK(report["error"].get<std::string>().find("/program/0/length") != std::string::npos);
}

TEST_CASE("a missing file and broken JSON exit 2 with a sentence", "[cli]") {
  auto missing = run_kvmem({"run", "/nonexistent.json"});
  CHECK(missing.exit_code == 2);
  CHECK(missing.err.find("cannot read config /nonexistent.json: open: ENOENT") != std::string::npos);
  TempConfig broken("{\"memory\": ");
  auto r = run_kvmem({"run", broken.path()});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("not valid JSON: parse error at line 1") != std::string::npos);
}

TEST_CASE("run prints the guest's console and exits 0", "[cli][kvm]") {
  REQUIRE_KVM();
  auto r = run_kvmem({"run", "configs/hello.json"});
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("hello from a kvmem guest") != std::string::npos);
  CHECK(r.err == "");
}

TEST_CASE("run --json prints one report with outcome, console, exits and times", "[cli][kvm]") {
  REQUIRE_KVM();
  auto r = run_kvmem({"run", "--json", "configs/hello.json"});
  CHECK(r.exit_code == 0);
  auto report = json::parse(r.out);
  CHECK(report["exit_code"] == 0);
  CHECK(report["wall_ms"].get<double>() > 0);
  REQUIRE(report["vms"].size() == 1);
  const json& vm = report["vms"][0];
  CHECK(vm["name"] == "hello");
  CHECK(vm["exit_code"] == 0);
  CHECK(vm["outcome"] == "exited");
  CHECK(vm["guest_exit_code"] == 0);
  CHECK(vm["console"].get<std::string>().find("hello from a kvmem guest") != std::string::npos);
  CHECK(vm["exits"]["io"].get<int>() >= 2);
  CHECK(vm["run_ms"].get<double>() > 0);
  CHECK(vm["memslots"] == 1);
  CHECK(vm["committed_bytes"].get<uint64_t>() >= 256 * 1024);
  CHECK(vm["committed_bytes"] == vm["host_committed_bytes"]);  // our count and the kernel's agree
  // Everything the guest held is punched once it is gone.
  CHECK(report["memory"]["committed_bytes_after"] == 0);
  CHECK(report["memory"]["host_committed_bytes_after"] == 0);
  CHECK(report["memory"]["peak_host_committed_bytes"].get<uint64_t>() >= 256 * 1024);
}

TEST_CASE("a failing guest exits 1 and says why on stderr", "[cli][kvm]") {
  REQUIRE_KVM();
  auto r = run_kvmem({"run", "configs/faults/divide-by-zero.json"});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("guest exception #DE divide error (vector 0)") != std::string::npos);
  auto j = run_kvmem({"run", "--json", "configs/faults/divide-by-zero.json"});
  CHECK(j.exit_code == 1);
  auto report = json::parse(j.out);
  CHECK(report["vms"][0]["outcome"] == "failed");
  CHECK(report["vms"][0]["message"].get<std::string>().find("#DE") != std::string::npos);
}

TEST_CASE("a host without KVM exits 3 with what to do", "[cli]") {
  auto r = run_kvmem({"run", "configs/hello.json"}, {"KVMEM_KVM_DEVICE=/nonexistent/kvm"});
  CHECK(r.exit_code == 3);
  CHECK(r.err == "kvmem: cannot open /nonexistent/kvm: ENOENT (No such file or directory); this host has no KVM: "
                 "load kvm_intel or kvm_amd, or run on a machine with virtualisation\n");
  auto j = run_kvmem({"run", "--json", "configs/hello.json"}, {"KVMEM_KVM_DEVICE=/dev/null"});
  CHECK(j.exit_code == 3);
  auto report = json::parse(j.out);
  CHECK(report["exit_code"] == 3);
  CHECK(report["error"].get<std::string>().find("KVM_GET_API_VERSION") != std::string::npos);
}

TEST_CASE("bench boot measures real runs and reports them as JSON", "[cli][kvm]") {
  REQUIRE_KVM();
  auto r = run_kvmem({"bench", "boot", "--runs", "3", "--json"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto row = json::parse(r.out);
  CHECK(row["bench"] == "boot");
  CHECK(row["runs"] == 3);
  CHECK(row["wall_ms_median"].get<double>() > 0);
  CHECK(row["max_rss_bytes"].get<uint64_t>() > row["guest_resident_bytes"].get<uint64_t>());
  CHECK(row["guest_resident_bytes"].get<uint64_t>() >= 256 * 1024);  // hello fills 256 KiB
  auto failing = run_kvmem({"bench", "boot", "--runs", "2", "configs/faults/divide-by-zero.json"});
  CHECK(failing.exit_code == 1);
  CHECK(failing.err.find("did not succeed") != std::string::npos);
}

TEST_CASE("several VMs share one process: one fails, the others are unaffected", "[cli][kvm]") {
  REQUIRE_KVM();
  auto r = run_kvmem({"run", "configs/many-vms.json"});
  CHECK(r.exit_code == 1);
  CHECK(r.out.find("[writer] wrote 32 MiB, gave 16 MiB back synchronously\n") != std::string::npos);
  CHECK(r.out.find("[async] wrote 32 MiB, gave it all back through the ring\n") != std::string::npos);
  CHECK(r.err.find("kvmem: faulty: guest exception #DE divide error") != std::string::npos);
  CHECK(r.err.find("2 of 3 VMs succeeded") != std::string::npos);
  auto j = run_kvmem({"run", "--json", "configs/many-vms.json"});
  auto report = json::parse(j.out);
  REQUIRE(report["vms"].size() == 3);
  CHECK(report["vms"][0]["exit_code"] == 0);
  CHECK(report["vms"][0]["bytes_decommitted"] == 16 << 20);
  CHECK(report["vms"][1]["exit_code"] == 0);
  CHECK(report["vms"][1]["bytes_decommitted"] == 32 << 20);
  CHECK(report["vms"][2]["exit_code"] == 1);
  CHECK(report["memory"]["committed_bytes_after"] == 0);
}

TEST_CASE("bench alloc --quick --json prints one row per measurement with the promised keys", "[cli]") {
  auto r = run_kvmem({"bench", "alloc", "--quick", "--json"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::map<std::string, int> rows;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    auto row = json::parse(line);
    rows[row["bench"]]++;
    if (row["bench"] == "alloc") CHECK(row["pairs_per_s"].get<double>() > 0);
    if (row["bench"] == "decommit") CHECK(row["ratio_to_raw"].get<double>() > 0);
    if (row["bench"] == "usage") CHECK(row.contains("speedup_vs_mincore"));
  }
  CHECK(rows["alloc"] >= 2);
  CHECK(rows["decommit"] >= 3);
  CHECK(rows["usage"] >= 2);
}

TEST_CASE("bench reclaim --quick measures both modes at every size and sees the pages gone", "[cli][kvm]") {
  REQUIRE_KVM();
  auto r = run_kvmem({"bench", "reclaim", "--quick", "--json"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  int reclaim = 0, latency = 0;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    auto row = json::parse(line);
    if (row["bench"] == "reclaim") {
      reclaim++;
      CHECK(row["pages_gone"] == true);
      CHECK(row["ratio_to_raw"].get<double>() > 0);
      // The doorbell is no exit: ring setup, exit, the final wait, and at
      // most one wait per lap of the 1024-slot ring (when it fills).
      if (row["mode"] == "async")
        CHECK(row["exits"].get<uint64_t>() <= 3 + row["ranges"].get<uint64_t>() / guest::layout::kFreeRingEntries);
    } else if (row["bench"] == "reclaim_latency") {
      latency++;
      CHECK(row["median_us"].get<double>() > 0);
    }
  }
  CHECK(reclaim == 12);  // 2 layouts x 3 sizes x 2 modes
  CHECK(latency == 2);
}
