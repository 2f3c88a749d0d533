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

TEST_CASE("store_word and wait_word name one aligned word, and 64-bit values survive as strings", "[config][wait]") {
  auto r = parse_vm_config(program("8M", {{{"op", "store_word"}, {"at", "2M"}, {"value", "0xfeedf00dcafe0001"}},
                                          {{"op", "wait_word"}, {"at", "0x200008"}, {"value", 18446744073709551615u},
                                           {"timeout_ms", 250}},
                                          {{"op", "wait_word"}, {"at", "2M"}, {"value", "12"}, {"timeout_ms", 3600000}}}),
                           "t");
  REQUIRE(r);
  const auto& store = r->program[0].as<guest::StoreWord>();
  CHECK(store.at == 0x200000);
  CHECK(store.value == 0xfeedf00dcafe0001ull);
  const auto& wait = r->program[1].as<guest::WaitWord>();
  CHECK(wait.at == 0x200008);
  CHECK(wait.value == UINT64_MAX);
  CHECK(wait.timeout_ms == 250);
  CHECK(r->program[2].as<guest::WaitWord>().value == 12);
  CHECK(guest::memory_walked(r->program[0]) == GuestRange(0x200000, 0x200008));
  CHECK(guest::memory_walked(r->program[1]) == GuestRange(0x200008, 0x200010));
  CHECK(std::string(guest::op_name(r->program[0])) == "store_word");
  CHECK(std::string(guest::op_name(r->program[1])) == "wait_word");
}

TEST_CASE("store_word and wait_word are refused with the pointer of the bad value", "[config][wait]") {
  const json store = {{"op", "store_word"}, {"at", "2M"}, {"value", 1}};
  const json wait = {{"op", "wait_word"}, {"at", "2M"}, {"value", 1}, {"timeout_ms", 10}};
  auto with = [](json step, const char* key, json value) {
    if (value.is_null()) step.erase(key);
    else step[key] = std::move(value);
    return program("8M", {std::move(step)});
  };
  for (const json& step : {store, wait}) {
    INFO(step.dump());
    refused(with(step, "at", "0x200004"), "/program/0/at: 0x200004 is not a multiple of 8");
    refused(with(step, "at", "0x80000"), "/program/0/at: 0x80000 lies in the reserved boot area");
    refused(with(step, "at", "0x7ffffc"), "/program/0/at: 0x7ffffc is not a multiple of 8");
    refused(with(step, "at", "8M"), "/program/0/at: the range at 0x800000 of 0x8 bytes runs past the end of RAM");
    refused(with(step, "at", nullptr), "/program/0: missing required key \"at\"");
    refused(with(step, "value", nullptr), "/program/0: missing required key \"value\"");
    refused(with(step, "value", -1), "/program/0/value: expected a 64-bit word");
    refused(with(step, "value", 1.5), "/program/0/value: expected a 64-bit word");
    refused(with(step, "value", "4K"), "/program/0/value: expected a 64-bit word");
    refused(with(step, "value", "0x"), "/program/0/value: expected a 64-bit word");
    refused(with(step, "value", "0x10000000000000000"), "/program/0/value: \"0x10000000000000000\" does not fit in 64 bits");
    refused(with(step, "extra", 1), "/program/0/extra: unknown key");
  }
  refused(with(wait, "timeout_ms", 0), "/program/0/timeout_ms: must be 1..3600000, found 0");
  refused(with(wait, "timeout_ms", kMaxTimeoutMs + 1), "/program/0/timeout_ms: must be 1..3600000, found 3600001");
  refused(with(wait, "timeout_ms", nullptr), "/program/0: missing required key \"timeout_ms\"");
  refused(with(store, "timeout_ms", 10), "/program/0/timeout_ms: unknown key");
}

TEST_CASE("store_word and wait_word may not touch the result slots", "[config][wait][results]") {
  const json ts = {{"op", "timestamp"}, {"slot", 0}};
  refused(program("8M", {ts, {{"op", "store_word"}, {"at", "0x7ffff8"}, {"value", 1}}}),
          "/program/1: store_word [0x7ffff8, 0x800000) overlaps [0x7ff000, 0x800000)");
  refused(program("8M", {ts, {{"op", "wait_word"}, {"at", "0x7ff000"}, {"value", 1}, {"timeout_ms", 1}}}),
          "/program/1: wait_word [0x7ff000, 0x7ff008) overlaps [0x7ff000, 0x800000)");
  CHECK(parse_vm_config(program("8M", {ts, {{"op", "store_word"}, {"at", "0x7feff8"}, {"value", 1}}}), "t"));
}

TEST_CASE("a pattern may name its origin, a size, where its words depend on the address", "[config][origin]") {
  auto fill = [](json pattern) {
    return program("8M", {{{"op", "fill"}, {"at", "2M"}, {"length", 8}, {"pattern", std::move(pattern)}}});
  };
  auto pattern_of = [&](json pattern) {
    auto r = parse_vm_config(fill(std::move(pattern)), "t");
    REQUIRE(r);
    return r->program[0].as<guest::Fill>().pattern;
  };
  const guest::Pattern seed = pattern_of({{"seed", 7}, {"origin", "1G"}});
  CHECK(seed.kind == guest::Pattern::Kind::kSeed);
  CHECK(seed.arg == 7);
  CHECK(seed.origin == 1ull << 30);
  const guest::Pattern address = pattern_of({{"address", true}, {"origin", "0x200000"}});
  CHECK(address.kind == guest::Pattern::Kind::kAddress);
  CHECK(address.origin == 0x200000);
  CHECK(pattern_of({{"seed", 7}}).origin == 0);
  CHECK(pattern_of("address").origin == 0);
  refused(fill({{"byte", 1}, {"origin", "1G"}}),
          "/program/0/pattern/origin: a byte pattern is the same at every address: it takes no origin");
  refused(fill({{"address", false}}), "/program/0/pattern/address: expected true");
  refused(fill({{"seed", 7}, {"origin", -1}}), "/program/0/pattern/origin: must not be negative");
  refused(fill({{"seed", 7}, {"origin", "1Q"}}), "/program/0/pattern/origin: \"1Q\" is not a size");
  refused(fill({{"seed", 7}, {"from", 1}}), "/program/0/pattern/from: unknown key");
  refused(fill({{"origin", "1G"}}), "/program/0/pattern: expected a pattern");
  refused(fill({{"seed", 7}, {"address", true}}), "/program/0/pattern: expected a pattern");
}

TEST_CASE("a timed touch's samples go in RAM, apart from the range it times and the result slots", "[config]") {
  auto touch = [](json samples) {
    return json{{"op", "touch"}, {"at", "2M"}, {"length", "1M"}, {"samples", std::move(samples)}};
  };
  // 1 MiB at 4 KiB strides: 256 accesses, 2 KiB of samples.
  auto ok = parse_vm_config(program("8M", {touch("4M")}), "t");
  REQUIRE(ok);
  const auto& t = std::get<guest::Touch>(ok->program[0]);
  CHECK(t.samples == 4u << 20);
  CHECK(t.accesses() == 256);
  refused(program("8M", {touch(0)}), "/program/0/samples: must not be 0");
  refused(program("8M", {touch("4M+4")}), "/program/0/samples:");
  refused(program("8M", {touch(0x400004)}), "/program/0/samples: 0x400004 is not a multiple of 8");
  refused(program("8M", {touch("0x80000")}), "/program/0/samples: 0x80000 lies in the reserved boot area");
  refused(program("8M", {touch("0x7ffc00")}), "/program/0/samples: the samples at 0x7ffc00 (256 accesses, 0x800 bytes) run past the end of RAM");
  refused(program("8M", {touch("0x2ff800")}),
          "/program/0/samples: the samples at 0x2ff800 (0x800 bytes) overlap the range they time [0x200000, 0x300000)");
  // Just after the range is fine; over the result slots is not.
  CHECK(parse_vm_config(program("8M", {touch("3M")}), "t"));
  refused(program("8M", {touch("0x7ff000"), {{"op", "timestamp"}, {"slot", 1023}}}),
          "/program/0/samples: the samples [0x7ff000, 0x7ff800) overlap [0x7fe000, 0x800000)");
}
