#include <algorithm>

#include <catch2/catch.hpp>

#include "guest/abi.h"
#include "guest/layout.h"
#include "guest/program.h"

using namespace kvmem;
using guest::Pattern;
using guest::Step;

TEST_CASE("pattern words are functions of the address", "[guest]") {
  CHECK(Pattern{Pattern::Kind::kZero, 0}.word(0x123458) == 0);
  CHECK(Pattern{Pattern::Kind::kAddress, 0}.word(0x123458) == 0x123458);
  CHECK(Pattern{Pattern::Kind::kByte, 0xa5}.word(0x123458) == 0xa5a5a5a5a5a5a5a5ull);
  // The seed mix is fixed: these values are part of the config format.
  CHECK(guest::seed_mix(0, 0) == 0);
  CHECK(guest::seed_mix(0x200000, 42) == Pattern{Pattern::Kind::kSeed, 42}.word(0x200000));
  CHECK(guest::seed_mix(1, 0) == 0xb456bcfc34c2cb2cull);
  CHECK(guest::seed_mix(0x200000, 42) != guest::seed_mix(0x200008, 42));
  CHECK(guest::seed_mix(0x200000, 42) != guest::seed_mix(0x200000, 43));
}

TEST_CASE("patterns describe themselves", "[guest]") {
  CHECK(Pattern{Pattern::Kind::kSeed, 9}.describe() == "seed 9");
  CHECK(Pattern{Pattern::Kind::kByte, 0xab}.describe() == "byte 0xab");
  CHECK(Pattern{Pattern::Kind::kSeed, 9, 1ull << 30}.describe() == "seed 9 from 0x40000000");
  CHECK(Pattern{Pattern::Kind::kAddress, 0, 0x200000}.describe() == "address from 0x200000");
}

TEST_CASE("a pattern with an origin has at gpa the word it has at gpa - origin", "[guest][origin]") {
  const uint64_t origin = 1ull << 30;
  for (uint64_t off : {uint64_t{0}, uint64_t{8}, uint64_t{0x1238}, uint64_t{64} << 20}) {
    INFO(off);
    CHECK(Pattern{Pattern::Kind::kSeed, 7, origin}.word(origin + off) == Pattern{Pattern::Kind::kSeed, 7}.word(off));
    CHECK(Pattern{Pattern::Kind::kAddress, 0, origin}.word(origin + off) == off);
  }
  // Below the origin the difference wraps, as the guest's 64-bit `sub` does.
  CHECK(Pattern{Pattern::Kind::kAddress, 0, origin}.word(origin - 8) == UINT64_MAX - 7);
  CHECK(Pattern{Pattern::Kind::kSeed, 7, origin}.word(0) == guest::seed_mix(0 - origin, 7));
  // Constant patterns are the same everywhere, origin or not.
  CHECK(Pattern{Pattern::Kind::kByte, 0x5a, origin}.word(0x200000) == 0x5a5a5a5a5a5a5a5aull);
  CHECK(Pattern{Pattern::Kind::kZero, 0, origin}.word(0x200000) == 0);
}

TEST_CASE("an empty program assembles to an exit at the base address", "[guest]") {
  auto img = guest::build({}, {.ram_bytes = 8 << 20});
  REQUIRE(img);
  CHECK(img->base == guest::layout::kProgramAddr);
  CHECK(img->entry == guest::layout::kProgramAddr);
  CHECK_FALSE(img->bytes.empty());
  CHECK(img->bytes.size() < 32);
}

TEST_CASE("a program too large for its area is an error, not an overflow", "[guest]") {
  Step print = guest::Print{std::string(60000, 'x')};
  std::vector<Step> steps(12, print);  // ~720 KB of string data
  auto img = guest::build(steps, {.ram_bytes = 8 << 20});
  REQUIRE_FALSE(img);
  CHECK(img.error().message.find("more than the 458752 bytes it may use") != std::string::npos);
}

TEST_CASE("long print text is split into console-sized writes", "[guest]") {
  Step print = guest::Print{std::string(abi::kConsoleMax * 2 + 1, 'y')};
  auto img = guest::build({print}, {.ram_bytes = 8 << 20});
  REQUIRE(img);
  // The text is embedded once, after the code.
  std::string bytes(img->bytes.begin(), img->bytes.end());
  CHECK(bytes.find(std::string(abi::kConsoleMax, 'y')) != std::string::npos);
}

TEST_CASE("wait_word spins with pause and reads the TSC; store_word makes no hypercall", "[guest][wait]") {
  auto contains = [](const std::vector<uint8_t>& bytes, std::initializer_list<uint8_t> seq) {
    return std::search(bytes.begin(), bytes.end(), seq.begin(), seq.end()) != bytes.end();
  };
  auto wait = guest::build({guest::WaitWord{0x200000, 7, 100}}, {.ram_bytes = 8 << 20});
  REQUIRE(wait);
  CHECK(contains(wait->bytes, {0xf3, 0x90}));  // pause
  CHECK(contains(wait->bytes, {0x0f, 0x31}));  // rdtsc
  auto store = guest::build({guest::StoreWord{0x200000, 7}}, {.ram_bytes = 8 << 20});
  REQUIRE(store);
  auto empty = guest::build({}, {.ram_bytes = 8 << 20});
  REQUIRE(empty);
  // Two movs of immediates and a store ahead of the exit the empty program has.
  CHECK(store->bytes.size() - empty->bytes.size() < 32);
  CHECK(std::string(guest::op_name(guest::StoreWord{})) == "store_word");
  // Only a program that waits asks the VMM for the boot info (a page committed).
  CHECK(wait->needs_boot_info);
  CHECK_FALSE(store->needs_boot_info);
  CHECK_FALSE(empty->needs_boot_info);
  auto nested = guest::build({guest::Loop{2, {guest::Loop{2, {guest::WaitWord{0x200000, 7, 100}}}}}}, {.ram_bytes = 8 << 20});
  REQUIRE(nested);
  CHECK(nested->needs_boot_info);
  CHECK(guest::memory_walked(guest::WaitWord{0x300000, 1, 1}) == GuestRange(0x300000, 0x300008));
}
