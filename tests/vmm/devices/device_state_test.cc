// The devices' state in snapshot sections (vmm/devices/device_state.h):
// each payload survives its byte form, damaged bytes are refused by what
// is wrong, and ring states are checked against the VM they come back in.
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "guest/abi.h"
#include "vmm/devices/console.h"
#include "vmm/devices/device_state.h"

using namespace kvmem;

namespace {

using B = std::vector<uint8_t>;

void put(B& b, size_t at, int bytes, uint64_t v) {
  for (int i = 0; i < bytes; i++) b.at(at + i) = static_cast<uint8_t>(v >> (8 * i));
}

struct Case {
  const char* what;
  std::function<void(B&)> edit;
  const char* want;
};

template <class Decode>
void refused(const B& good, const Case& c, Decode decode, const char* prefix) {
  INFO(c.what);
  B b = good;
  c.edit(b);
  auto r = decode(b);
  REQUIRE_FALSE(r);
  INFO(r.error().message);
  CHECK_THAT(r.error().message, Catch::StartsWith(prefix) && Catch::Contains(c.want));
}

}  // namespace

TEST_CASE("the console's record survives its byte form, and a damaged one is refused", "[snapshot][console]") {
  const ConsoleState s{.text = std::string("before\n\0\xff", 9), .dropped = 0};
  const B bytes = encode_console_state(s);
  auto back = decode_console_state(bytes);
  REQUIRE(back);
  CHECK(*back == s);
  const ConsoleState full{.text = std::string(Console::kHeadBytes + Console::kTailBytes, 'x'), .dropped = 12345};
  auto big = decode_console_state(encode_console_state(full));
  REQUIRE(big);
  CHECK(*big == full);

  const Case cases[] = {
      {"empty", [](B& b) { b.clear(); }, "too short"},
      {"another magic", [](B& b) { b[0] = 'Q'; }, "magic"},
      {"version 7", [](B& b) { put(b, 4, 4, 7); }, "version 7"},
      {"cut in its header", [](B& b) { b.resize(12); }, "too short for its header"},
      {"a record past the console's bound", [](B& b) { put(b, 16, 8, 1 << 20); }, "more than the 131072"},
      {"a record longer than what follows", [](B& b) { put(b, 16, 8, 10); }, "but 9 bytes follow"},
      {"a byte too many", [](B& b) { b.push_back(1); }, "1 bytes after its last field"},
      {"dropped bytes with room left", [](B& b) { put(b, 8, 8, 5); }, "is not full"},
  };
  for (const Case& c : cases) refused(bytes, c, decode_console_state, "console state: ");
}

TEST_CASE("free ring states survive their byte form, and damaged ones are refused", "[snapshot][free]") {
  const std::vector<FreeRingState> rings{{.gpa = 0xe0000, .entries = 512, .completed = 77}, {}};
  const B bytes = encode_free_rings(rings);
  REQUIRE(bytes.size() == 16 + 2 * 24);
  auto back = decode_free_rings(bytes);
  REQUIRE(back);
  CHECK(*back == rings);
  const Case cases[] = {
      {"another magic", [](B& b) { b[3] = 'Q'; }, "magic"},
      {"version 2", [](B& b) { put(b, 4, 4, 2); }, "version 2"},
      {"reserved", [](B& b) { put(b, 12, 4, 9); }, "reserved is 0x9"},
      {"17 vCPUs", [](B& b) { put(b, 8, 4, 17); }, "rings for 17 vCPUs, more than the 16"},
      {"a count past the bytes", [](B& b) { put(b, 8, 4, 3); }, "48 bytes for 3 vCPUs' rings"},
      {"cut short", [](B& b) { b.pop_back(); }, "for 2 vCPUs' rings"},
  };
  for (const Case& c : cases) refused(bytes, c, decode_free_rings, "free ring state: ");
}

TEST_CASE("free ring states are checked against the VM they come back in", "[snapshot][free]") {
  constexpr uint64_t kRam = 16 << 20;
  const FreeRingState ok{.gpa = 0xe0000, .entries = 512, .completed = 3};
  const FreeRingState none{};
  CHECK(check_free_rings({ok, none}, kRam, 2));
  CHECK(check_free_rings({none}, kRam, 1));
  struct RingCase {
    const char* what;
    std::vector<FreeRingState> rings;
    unsigned vcpus;
    const char* want;
  };
  const RingCase cases[] = {
      {"one ring for two vCPUs", {ok}, 2, "rings for 1 vCPUs, and the VM has 2"},
      {"no ring but an address", {{.gpa = 0x1000, .entries = 0, .completed = 0}}, 1, "vCPU 0 has no ring"},
      {"entries not a power of two", {{.gpa = 0xe0000, .entries = 3, .completed = 0}}, 1, "3 entries"},
      {"too many entries", {{.gpa = 0xe0000, .entries = 8192, .completed = 0}}, 1, "8192 entries"},
      {"unaligned", {{.gpa = 0xe0008, .entries = 4, .completed = 0}}, 1, "not 64-byte aligned"},
      {"past the end of RAM", {{.gpa = kRam - 64, .entries = 4, .completed = 0}}, 1, "lies outside RAM"},
      {"wrapping", {{.gpa = ~uint64_t{63}, .entries = 4, .completed = 0}}, 1, "lies outside RAM"},
      {"overlapping", {ok, {.gpa = 0xe1000, .entries = 4, .completed = 0}}, 2, "vCPU 1's ring"},
  };
  // A guest may put its ring in a writable window, as setup lets it.
  const FreeRingState in_window{.gpa = 1ull << 30, .entries = 4, .completed = 0};
  const GuestRange window(1ull << 30, (1ull << 30) + (2 << 20));
  CHECK(check_free_rings({in_window}, kRam, 1, std::vector<GuestRange>{window}));
  CHECK_THAT(check_free_rings({in_window}, kRam, 1).error().message, Catch::Contains("lies outside RAM"));
  for (const RingCase& c : cases) {
    INFO(c.what);
    auto s = check_free_rings(c.rings, kRam, c.vcpus);
    REQUIRE_FALSE(s);
    INFO(s.error().message);
    CHECK_THAT(s.error().message, Catch::StartsWith("free ring state: ") && Catch::Contains(c.want));
  }
}

TEST_CASE("free report counts survive their byte form, and damaged ones are refused", "[snapshot][free]") {
  const FreeCounts c{.reports = 1, .ranges = 2, .invalid_ranges = 3, .bytes_reported = 4, .bytes_decommitted = 5};
  const B bytes = encode_free_counts(c);
  auto back = decode_free_counts(bytes);
  REQUIRE(back);
  CHECK(*back == c);
  const Case cases[] = {
      {"another magic", [](B& b) { b[1] = 'Q'; }, "magic"},
      {"version 0", [](B& b) { put(b, 4, 4, 0); }, "version 0"},
      {"cut short", [](B& b) { b.resize(40); }, "too short for its five counters"},
      {"a byte too many", [](B& b) { b.push_back(0); }, "after its last field"},
  };
  for (const Case& k : cases) refused(bytes, k, decode_free_counts, "free report counts: ");
}

// The seed corpus of the "device_state" fuzz target (tests/fuzz/device_state/):
// written from the real encoders. Regenerate from the repository root with
//   build/kvmem-tests "[.seeds]"
// Each seed is a mode byte (0 console, 1 rings, 2 counts; for rings bit 7
// takes the next u64 as RAM's size as it is, and a byte of vCPUs - 1
// follows) and a payload.
TEST_CASE("write the device_state fuzz seeds", "[.seeds]") {
  const std::string dir = "tests/fuzz/device_state";
  std::filesystem::create_directories(dir);
  const auto write = [&](const char* name, B head, const B& payload) {
    head.insert(head.end(), payload.begin(), payload.end());
    std::ofstream(dir + "/" + name, std::ios::binary)
        .write(reinterpret_cast<const char*>(head.data()), static_cast<std::streamsize>(head.size()));
  };
  // Rings in 16 MiB of RAM (u64 7: (7 % 32768 + 1) * 2 MiB) for 2 vCPUs.
  const B ram16 = {1, 7, 0, 0, 0, 0, 0, 0, 0, 1};
  const B raw_ram = {0x81, 0, 0, 0, 0, 0, 0, 0, 0x80, 0};  // RAM 2^63, 1 vCPU
  const ConsoleState console{.text = "hello\n", .dropped = 0};
  const std::vector<FreeRingState> two{{.gpa = 0xe0000, .entries = 512, .completed = 9},
                                       {.gpa = 0xe8000, .entries = 512, .completed = 0}};
  B console_bytes = encode_console_state(console);
  write("console-valid", {0}, console_bytes);
  B damaged = console_bytes;
  put(damaged, 16, 8, 1000);
  write("console-length-past-end", {0}, damaged);
  damaged = console_bytes;
  put(damaged, 8, 8, 1);
  write("console-dropped-not-full", {0}, damaged);
  write("rings-valid", ram16, encode_free_rings(two));
  write("rings-none", ram16, encode_free_rings({{}, {}}));
  write("rings-outside-ram", ram16, encode_free_rings({two[0], {.gpa = 16 << 20, .entries = 4, .completed = 0}}));
  write("rings-overlap", ram16, encode_free_rings({two[0], {.gpa = 0xe0040, .entries = 4, .completed = 0}}));
  write("rings-raw-ram", raw_ram, encode_free_rings({{.gpa = ~uint64_t{63}, .entries = 4, .completed = 0}}));
  B rings = encode_free_rings(two);
  put(rings, 12, 4, 1);
  write("rings-reserved", ram16, rings);
  write("counts-valid", {2}, encode_free_counts({1, 2, 3, 4, 5}));
  write("counts-short", {2}, B(20, 0));
}
