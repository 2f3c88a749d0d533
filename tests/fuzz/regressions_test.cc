// What the fuzz targets found, each as a sentence (docs/fuzzing.md). The
// input that found it is in tests/fuzz/TARGET/ too.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "config/vm_config.h"

using namespace kvmem;
using json = nlohmann::json;

TEST_CASE("a touch whose stride carries past 2^64 is refused, not wrapped into the boot area", "[fuzz][config]") {
  // tests/fuzz/config/mutated-touch-wrapping-stride.json: from 2M the guest
  // would have gone on at 1M and then 0, over the page tables.
  const json c = {{"memory", "16M"},
                  {"program", {{{"op", "touch"}, {"at", "2M"}, {"length", "12M"}, {"stride", "0xfffffffffff00000"}}}}};
  auto r = parse_run_config(c, "t");
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message == "/program/0/stride: 0xfffffffffff00000 carries past 2^64 from the end of the range");
  // The largest stride that cannot carry is still accepted: it touches `at` once.
  const json ok = {{"memory", "16M"},
                   {"program", {{{"op", "touch"}, {"at", "2M"}, {"length", "12M"}, {"stride", "0xffffffffff1ffff8"}}}}};
  CHECK(parse_run_config(ok, "t").has_value());
}
