// Step parsing and validation (config/steps.cc) beyond the cases in
// config_test.cc: what each step may touch.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "config/vm_config.h"
#include "guest/abi.h"
#include "guest/layout.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

json program(const char* memory, json steps) { return json{{"memory", memory}, {"program", std::move(steps)}}; }

void refused(const json& config, const std::string& want) {
  INFO(config.dump());
  auto r = parse_vm_config(config, "t");
  REQUIRE_FALSE(r);
  INFO(r.error().message);
  CHECK(r.error().message.rfind(want, 0) == 0);
}

}  // namespace

TEST_CASE("timestamp slots reach as far as RAM has room, past the old 8192", "[config][results]") {
  auto r = parse_vm_config(program("256M", {{{"op", "timestamp"}, {"slot", 65535}}}), "t");
  REQUIRE(r);
  CHECK(guest::result_slots_used(r->program) == 65536);
  // 4 MiB of RAM has 3 MiB above the boot area: 3 MiB / 8 slots.
  const uint64_t room = (3ull << 20) / 8;
  CHECK(parse_vm_config(program("4M", {{{"op", "timestamp"}, {"slot", room - 1}}}), "t"));
  refused(program("4M", {{{"op", "timestamp"}, {"slot", room}}}),
          fmt::format("/program/0/slot: must be 0..{}, found {}", room - 1, room));
  refused(program("32G", {{{"op", "timestamp"}, {"slot", guest::layout::kMaxResultSlots}}}),
          fmt::format("/program/0/slot: must be 0..{}", guest::layout::kMaxResultSlots - 1));
}

TEST_CASE("steps may not touch the result slots at the top of RAM", "[config][results]") {
  // 8M of RAM, slots 0..1023: the last 8 KiB, [0x7fe000, 0x800000).
  const json ts = {{"op", "timestamp"}, {"slot", 1023}};
  refused(program("8M", {{{"op", "fill"}, {"at", "0x7fe000"}, {"length", 8}, {"pattern", "zero"}}, ts}),
          "/program/0: fill [0x7fe000, 0x7fe008) overlaps [0x7fe000, 0x800000), the result slots");
  refused(program("8M", {ts, {{"op", "loop"}, {"count", 2}, {"body", {{{"op", "touch"}, {"at", "7M"}, {"length", "1M"}}}}}}),
          "/program/1/body/0: touch [0x700000, 0x7ff008) overlaps [0x7fe000, 0x800000)");
  refused(program("8M", {ts, {{"op", "free"}, {"at", "6M"}, {"length", "2M"}}}),
          "/program/1: free [0x600000, 0x800000) overlaps");
  refused(program("8M", {ts, {{"op", "verify"}, {"at", "0x7ffff8"}, {"length", 8}, {"pattern", "zero"}}}),
          "/program/1: verify [0x7ffff8, 0x800000) overlaps");
  // Just below them is fine, and without timestamp steps the top is the steps'.
  CHECK(parse_vm_config(program("8M", {{{"op", "fill"}, {"at", "7M"}, {"length", "0xfe000"}, {"pattern", "zero"}}, ts}), "t"));
  CHECK(parse_vm_config(program("8M", {{{"op", "fill"}, {"at", "7M"}, {"length", "1M"}, {"pattern", "zero"}}}), "t"));
}

TEST_CASE("a touch whose stride would wrap past 2^64 into the boot area is refused with the address", "[config]") {
  // at + stride wraps to 0x2000 + 0x60 * 16: the IDT's #UD gate.
  const uint64_t at = 0x100000, target = 0x2060;
  const uint64_t stride = target - at;  // mod 2^64
  refused(program("8M", {{{"op", "touch"}, {"at", at}, {"length", "2M"}, {"stride", stride}}}),
          fmt::format("/program/0/stride: {:#x} carries past 2^64 from the end of the range", stride));
  // Every address of an accepted touch lies in its range.
  auto ok = parse_vm_config(program("8M", {{{"op", "touch"}, {"at", "1M"}, {"length", "1M"}, {"stride", "768K"}}}), "t");
  REQUIRE(ok);
  const auto walked = guest::memory_walked(ok->program[0]);
  REQUIRE(walked);
  CHECK(*walked == GuestRange(0x100000, 0x1c0008));
}
