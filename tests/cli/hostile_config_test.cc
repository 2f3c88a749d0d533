// Configs that are valid JSON but hostile: the CLI answers exit 2 with the
// file, the JSON pointer and the reason, and never aborts.
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tests/cli/cli_support.h"

using namespace kvmem;
using test::run_kvmem;
using test::TempConfig;
using json = nlohmann::json;

TEST_CASE("a number no double can hold is exit 2 naming its pointer, not an abort", "[cli]") {
  struct Case {
    const char* text;
    const char* pointer;
  } cases[] = {
      {R"({"memory": 1e400, "program": []})", "/memory"},
      {R"({"vms": [{"memory": "4M", "program": [{"op": "exit", "code": [-1e999]}]}]})", "/vms/0/program/0/code/0"},
      {R"({"stress": {"seed": 1E+400}})", "/stress/seed"},
  };
  for (const Case& c : cases) {
    TempConfig config(c.text);
    for (const char* cmd : {"validate", "run", "stress"}) {
      INFO(cmd << " " << c.text);
      auto r = run_kvmem({cmd, config.path()});
      CHECK(r.exit_code == 2);
      CHECK(r.err.find(config.path() + ": " + c.pointer + ": number overflow parsing") != std::string::npos);
    }
    auto j = run_kvmem({"validate", "--json", config.path()});
    CHECK(j.exit_code == 2);
    CHECK(json::parse(j.out)["error"].get<std::string>().find(c.pointer) != std::string::npos);
  }
}

TEST_CASE("fractions and integers past 64 bits are refused as such", "[cli]") {
  TempConfig fraction(R"({"memory": "4M", "timeout_ms": 2.5, "program": []})");
  auto r = run_kvmem({"validate", fraction.path()});
  CHECK(r.exit_code == 2);
  CHECK(r.err == "kvmem: " + fraction.path() +
                     ": /timeout_ms: expected a whole number of bytes, found 2.5 (a fraction, or too large for 64 "
                     "bits)\n");
  TempConfig huge(R"({"stress": {"rounds": 18446744073709551616}})");
  auto s = run_kvmem({"validate", huge.path()});
  CHECK(s.exit_code == 2);
  CHECK(s.err.find("/stress/rounds: expected a whole number of bytes, found 1.8446744073709552e+19") !=
        std::string::npos);
}

TEST_CASE("a config over 4 MiB is refused by its size, from a file or a pipe", "[cli]") {
  // Valid JSON, so nothing but the size can refuse it.
  const std::string big = R"({"memory": "4M", "program": [], "name": ")" + std::string(5 << 20, 'x') + "\"}";
  TempConfig file(big);
  auto r = run_kvmem({"validate", file.path()});
  CHECK(r.exit_code == 2);
  CHECK(r.err == fmt::format("kvmem: {}: the config is {} bytes, more than the 4194304 bytes (4 MiB) kvmem reads\n",
                             file.path(), big.size()));
  auto piped = test::run_command({"/bin/sh", "-c", "cat \"$0\" | \"$1\" validate /dev/stdin", file.path(),
                                  test::kvmem_binary()});
  CHECK(piped.exit_code == 2);
  CHECK(piped.err == "kvmem: /dev/stdin: the config is more than the 4194304 bytes (4 MiB) kvmem reads\n");
  auto dir = run_kvmem({"validate", "/tmp"});
  CHECK(dir.exit_code == 2);
  CHECK(dir.err == "kvmem: cannot read config /tmp: it is a directory\n");
}

TEST_CASE("a config read from a pipe validates", "[cli]") {
  auto r = test::run_command({"/bin/sh", "-c", "\"$0\" validate /dev/stdin < configs/hello.json", test::kvmem_binary()});
  INFO(r.err);
  CHECK(r.exit_code == 0);
}
