// `kvmem run` with shared files and windows, as a user runs it.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/cli/cli_support.h"

using namespace kvmem::test;
using json = nlohmann::json;

namespace {

json config(json program, bool writable = true) {
  return json{{"files", {{{"name", "box"}, {"size", "2M"}, {"pattern", {{"byte", 0x5a}}}, {"seals", {"grow"}}}}},
              {"memory", "16M"},
              {"windows", {{{"file", "box"}, {"at", "1G"}, {"length", "2M"}, {"writable", writable}}}},
              {"program", std::move(program)}};
}

}  // namespace

TEST_CASE("run --json reports the shared files as the run left them", "[cli][kvm][windows]") {
  REQUIRE_KVM();
  TempConfig c(config({{{"op", "verify"}, {"at", "1G"}, {"length", "2M"}, {"pattern", {{"byte", 0x5a}}}},
                       {{"op", "fill"}, {"at", "1G"}, {"length", "4K"}, {"pattern", "zero"}}})
                   .dump());
  CommandResult r = run_kvmem({"run", "--json", c.path()});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  const json report = json::parse(r.out);
  REQUIRE(report["files"].size() == 1);
  const json& f = report["files"][0];
  CHECK(f["name"] == "box");
  CHECK(f["size"] == 2 << 20);
  CHECK(f["allocated_bytes"] == 2 << 20);
  CHECK(f["seals"] == json::array({"grow"}));
}

TEST_CASE("a guest write to a read-only window is that VM's failure, exit 1, with the window in the message",
          "[cli][kvm][windows]") {
  REQUIRE_KVM();
  TempConfig c(config({{{"op", "fill"}, {"at", "0x40000100"}, {"length", "8"}, {"pattern", "zero"}}}, false).dump());
  CommandResult r = run_kvmem({"run", c.path()});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::Contains("guest wrote to guest-physical 0x40000100 in the read-only window "
                                    "[0x40000000, 0x40200000) onto file \"box\""));
}

TEST_CASE("validate knows files and windows: a window onto no file is exit 2 with its pointer", "[cli][windows]") {
  json bad = config(json::array());
  bad["windows"][0]["file"] = "nope";
  TempConfig c(bad.dump());
  CommandResult r = run_kvmem({"validate", c.path()});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.err, Catch::Contains("/windows/0/file: no file \"nope\" in the config's \"files\""));
  TempConfig good(config(json::array()).dump());
  CHECK(run_kvmem({"validate", good.path()}).exit_code == 0);
}
