// `run --json`: one shape for every VM whatever its outcome, and reports
// that survive whatever bytes a guest writes.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <set>

#include "harness/report.h"
#include "harness/runner.h"
#include "tests/cli/cli_support.h"

using namespace kvmem;
using test::run_kvmem;
using test::TempConfig;
using json = nlohmann::json;

namespace {

// The VM object has exactly the documented keys.
void check_shape(const json& vm) {
  std::set<std::string> keys, want(kVmReportKeys.begin(), kVmReportKeys.end());
  for (auto it = vm.begin(); it != vm.end(); ++it) keys.insert(it.key());
  CHECK(keys == want);
}

}  // namespace

TEST_CASE("every VM report has the same keys, null where one does not apply", "[cli]") {
  VmOutcome not_started;
  not_started.name = "a";
  not_started.setup_error = "cannot create it";
  VmOutcome exited;
  exited.result.outcome = RunResult::Outcome::kExited;
  exited.result.guest_exit_code = 3;
  VmOutcome failed;
  failed.result.outcome = RunResult::Outcome::kFailed;
  failed.result.message = "guest exception";
  VmOutcome timeout;
  timeout.result.outcome = RunResult::Outcome::kTimeout;
  timeout.result.message = "still running";
  for (const VmOutcome* v : {&not_started, &exited, &failed, &timeout}) {
    const json j = vm_report(*v);
    INFO(j.dump());
    check_shape(j);
  }
  CHECK(vm_report(not_started)["outcome"] == "not_started");
  CHECK(vm_report(not_started)["console"].is_null());
  CHECK(vm_report(not_started)["exit_code"] == 3);
  CHECK(vm_report(exited)["guest_exit_code"] == 3);
  CHECK(vm_report(exited)["message"].is_null());
  CHECK(vm_report(failed)["guest_exit_code"].is_null());
  CHECK(vm_report(timeout)["guest_exit_code"].is_null());
  CHECK(vm_report(timeout)["outcome"] == "timeout");
}

TEST_CASE("run --json gives each outcome the same keys", "[cli][kvm]") {
  REQUIRE_KVM();
  const struct {
    const char* config;
    const char* outcome;
  } cases[] = {{"configs/hello.json", "exited"},
               {"configs/faults/divide-by-zero.json", "failed"},
               {"configs/faults/spin.json", "timeout"}};
  for (const auto& c : cases) {
    INFO(c.config);
    auto r = run_kvmem({"run", "--json", c.config});
    const json report = json::parse(r.out);
    std::set<std::string> top;
    for (auto it = report.begin(); it != report.end(); ++it) top.insert(it.key());
    CHECK(top == std::set<std::string>(kRunReportKeys.begin(), kRunReportKeys.end()));
    REQUIRE(report["vms"].size() == 1);
    CHECK(report["vms"][0]["outcome"] == c.outcome);
    check_shape(report["vms"][0]);
    CHECK(report["vms"][0]["guest_exit_code"].is_null() == (std::string(c.outcome) != "exited"));
  }
  // A VM that cannot be created (1 GiB pages need pdpe1gb, which PVM does not offer) beside one that runs.
  TempConfig two(R"({"vms": [{"name": "big", "memory": "1G", "guest_page_size": "1G", "program": []},
                             {"name": "ok", "memory": "4M", "program": []}]})");
  const json report = json::parse(run_kvmem({"run", "--json", two.path()}).out);
  REQUIRE(report["vms"].size() == 2);
  check_shape(report["vms"][0]);
  check_shape(report["vms"][1]);
  if (report["vms"][0]["outcome"] != "not_started") WARN("this host offers 1 GiB pages: no not_started VM here");
  else CHECK(report["vms"][0]["memslots"].is_null());
}

TEST_CASE("console bytes that are not UTF-8, and escape sequences, cannot break a report or a terminal",
          "[cli][kvm]") {
  REQUIRE_KVM();
  // The guest prints an ESC sequence, then 64 bytes of its own code, then 64 bytes of 0xff.
  TempConfig hostile(R"({"memory": "4M", "program": [
      {"op": "print", "text": "\u001b[2J"},
      {"op": "hypercall", "nr": 1, "args": ["0x50000", 64], "expect": 64},
      {"op": "fill", "at": "1M", "length": 64, "pattern": {"byte": 255}},
      {"op": "hypercall", "nr": 1, "args": ["1M", 64], "expect": 64}]})");
  auto j = run_kvmem({"run", "--json", hostile.path()});
  INFO(j.err);
  CHECK(j.exit_code == 0);
  const json report = json::parse(j.out);  // valid JSON, so valid UTF-8
  const std::string console = report["vms"][0]["console"];
  CHECK(console.rfind("\x1b[2J", 0) == 0);  // JSON escapes it; the reader decides
  CHECK(console.find("\xef\xbf\xbd") != std::string::npos);  // U+FFFD for the bytes that are not UTF-8
  auto t = run_kvmem({"run", hostile.path()});
  CHECK(t.exit_code == 0);
  CHECK(t.out.find('\x1b') == std::string::npos);
  CHECK(t.out.rfind("\\x1b[2J", 0) == 0);
  CHECK(valid_utf8(t.out) == t.out);
  for (char c : t.out) CHECK((static_cast<unsigned char>(c) >= 0x20 || c == '\n' || c == '\t'));
}

TEST_CASE("an error message that is not UTF-8 still makes a JSON report", "[cli]") {
  auto r = run_kvmem({"validate", "--json", "/nonexistent/\xff\xfe.json"});
  CHECK(r.exit_code == 2);
  const json report = json::parse(r.out);
  CHECK(report["error"].get<std::string>().find("/nonexistent/\xef\xbf\xbd\xef\xbf\xbd.json") != std::string::npos);
}

TEST_CASE("untrusted text is made valid UTF-8, and safe for a terminal", "[cli]") {
  CHECK(valid_utf8("ok \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == "ok \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  CHECK(valid_utf8("\x80\xff") == "\xef\xbf\xbd\xef\xbf\xbd");
  CHECK(valid_utf8("\xc0\xaf") == "\xef\xbf\xbd\xef\xbf\xbd");  // overlong
  CHECK(valid_utf8("\xed\xa0\x80") == "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // a surrogate
  CHECK(valid_utf8("\xe2\x82") == "\xef\xbf\xbd\xef\xbf\xbd");  // cut short at the end
  CHECK(terminal_safe("a\x1b[2Jb\r\n\t\x7f") == "a\\x1b[2Jb\\x0d\n\t\\x7f");
  // A sequence split between two pieces arrives whole.
  TerminalText t;
  CHECK(t.feed("x\xe2\x82") == "x");
  CHECK(t.feed("\xac!") == "\xe2\x82\xac!");
  CHECK(t.feed("\xe2") == "");
  CHECK(t.finish() == "\xef\xbf\xbd");
}
