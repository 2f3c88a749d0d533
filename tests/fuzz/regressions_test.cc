// What the fuzz targets found, each as a sentence (docs/fuzzing.md). The
// input that found it is in tests/fuzz/TARGET/ too.
#include <cstdint>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "config/vm_config.h"

namespace kvmem::fuzz {
int config_one(const uint8_t* data, size_t size);
}  // namespace kvmem::fuzz

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

TEST_CASE("a step in a window that starts where RAM ends is accepted, one that runs from RAM into it is not",
          "[fuzz][config][windows]") {
  // tests/fuzz/config/mutated-window-at-ram-end.json: the config target held
  // every accepted step to RAM, and aborted on this valid config once windows
  // came; it now allows a step wholly in one window, and nothing across.
  const json box = {{"name", "box"}, {"size", "2M"}};
  const json window = {{"file", "box"}, {"at", "16M"}, {"length", "2M"}};
  const json in_window = {{"files", {box}},
                          {"memory", "16M"},
                          {"windows", {window}},
                          {"program", {{{"op", "fill"}, {"at", "16M"}, {"length", "4K"}, {"pattern", "zero"}}}}};
  auto r = parse_run_config(in_window, "t");
  REQUIRE(r.has_value());
  REQUIRE(r->vms[0].windows.size() == 1);
  CHECK(r->vms[0].windows[0].at == r->vms[0].memory);
  const std::string text = in_window.dump();
  CHECK(fuzz::config_one(reinterpret_cast<const uint8_t*>(text.data()), text.size()) == 0);

  json across = in_window;
  across["program"] = {{{"op", "touch"}, {"at", "0xfff000"}, {"length", "8K"}}};
  auto a = parse_run_config(across, "t");
  REQUIRE_FALSE(a.has_value());
  CHECK(a.error().message ==
        "/program/0/length: the range at 0xfff000 of 0x2000 bytes runs past the end of RAM (0x1000000)");
}
