// Numbers on the command line: negative, fractional and out-of-range values
// are refused (exit 2) with what was wrong, never wrapped or saturated.
#include <catch2/catch.hpp>

#include "tests/cli/cli_support.h"

using namespace kvmem;
using test::run_kvmem;

TEST_CASE("negative and out-of-range numbers on the command line are refused with exit 2", "[cli]") {
  const struct {
    std::vector<std::string> args;
    const char* error;
  } cases[] = {
      {{"stress", "configs/stress-quick.json", "--rounds", "-1"}, "--rounds: -1 is not a whole number 0..1000000"},
      {{"stress", "configs/stress-quick.json", "--seed", "-5"}, "--seed: -5 is not a whole number 0..18446744073709551615"},
      {{"stress", "configs/stress-quick.json", "--duration", "-1"}, "--duration: -1 is not a whole number 0..86400"},
      {{"stress", "configs/stress-quick.json", "--rounds", "1000001"},
       "--rounds: 1000001 is out of range: it must be 0..1000000"},
      {{"stress", "configs/stress-quick.json", "--seed", "18446744073709551616"},
       "--seed: 18446744073709551616 is out of range: it must be 0..18446744073709551615"},
      {{"stress", "configs/stress-quick.json", "--duration", "1.5"}, "--duration: 1.5 is not a whole number 0..86400"},
      {{"bench", "boot", "--runs", "-1"}, "--runs: -1 is not a whole number 1..100000"},
      {{"bench", "boot", "--runs", "0"}, "--runs: 0 is out of range: it must be 1..100000"},
  };
  for (const auto& c : cases) {
    INFO(c.args[2] << " " << c.args.back());
    auto r = run_kvmem(c.args);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(c.error) != std::string::npos);
  }
}

TEST_CASE("--rounds 0 or --duration 0 alone says what is wrong with what was given", "[cli]") {
  auto rounds = run_kvmem({"stress", "configs/stress-quick.json", "--rounds", "0"});
  CHECK(rounds.exit_code == 2);
  CHECK(rounds.err == "kvmem: --rounds 0 alone sets no limit at all: give 1 or more rounds, or --duration\n");
  auto duration = run_kvmem({"stress", "configs/stress-quick.json", "--duration", "0"});
  CHECK(duration.exit_code == 2);
  CHECK(duration.err == "kvmem: --duration 0 alone sets no limit at all: give 1 or more seconds, or --rounds\n");
  auto both = run_kvmem({"stress", "configs/stress-quick.json", "--rounds", "0", "--duration", "0"});
  CHECK(both.exit_code == 2);
  CHECK(both.err == "kvmem: --rounds 0 with --duration 0 would never end\n");
}
