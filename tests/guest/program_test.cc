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
