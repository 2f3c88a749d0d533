// Seeded random mutations of valid configs: the parser never crashes, and
// whatever it accepts is a config the rest of kvmem can use as it is.
#include <filesystem>
#include <fstream>
#include <random>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "guest/abi.h"
#include "config/stress_config.h"
#include "config/vm_config.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

void collect(const json& j, const json::json_pointer& at, std::vector<json::json_pointer>& out) {
  out.push_back(at);
  if (j.is_object())
    for (auto it = j.begin(); it != j.end(); ++it) collect(it.value(), at / it.key(), out);
  else if (j.is_array())
    for (size_t i = 0; i < j.size(); i++) collect(j[i], at / i, out);
}

json random_value(std::mt19937_64& rng) {
  static const json pool[] = {nullptr, true, false, 0, -1, -9223372036854775807LL - 1, 1, 7, 8, 4096,
                              0x100000, 0x1fffff8, 18446744073709551615ULL, 1.5, "", "4K", "1M", "2M",
                              "0x", "0xfffffffffffffff8", "99999999999999999999G", "zero", "address",
                              "-EINVAL", "print", "fill", "loop", "exit", json::array(), json::object(),
                              json{{"seed", 3}}, json{{"byte", 300}}, json{{"op", "print"}, {"text", "x"}},
                              json::array({json{{"op", "exit"}}}), std::string(70000, 'x')};
  return pool[rng() % std::size(pool)];
}

void check_accepted(const VmConfig& c, const std::vector<guest::Step>& steps) {
  auto check_range = [&](uint64_t at, uint64_t length, uint64_t stride) {
    REQUIRE(at >= abi::kBootAreaEnd);
    REQUIRE(length > 0);
    REQUIRE(at < c.memory);
    REQUIRE(length <= c.memory - at);
    REQUIRE(at % 8 == 0);
    REQUIRE(stride > 0);
  };
  for (const auto& s : steps) {
    if (const auto* f = std::get_if<guest::Fill>(&s)) check_range(f->at, f->length, 8);
    if (const auto* v = std::get_if<guest::Verify>(&s)) check_range(v->at, v->length, 8);
    if (const auto* t = std::get_if<guest::Touch>(&s)) check_range(t->at, t->length, t->stride);
    if (const auto* l = std::get_if<guest::Loop>(&s)) {
      REQUIRE(l->count >= 1);
      check_accepted(c, l->body);
    }
  }
}

}  // namespace

TEST_CASE("randomly mutated configs are refused cleanly or accepted whole", "[config][fuzz]") {
  const json base = {
      {"name", "fuzz"},
      {"memory", "8M"},
      {"timeout_ms", 100},
      {"program",
       {{{"op", "print"}, {"text", "hi"}},
        {{"op", "fill"}, {"at", "1M"}, {"length", "64K"}, {"pattern", {{"seed", 1}}}},
        {{"op", "touch"}, {"at", "2M"}, {"length", "1M"}, {"stride", 4096}, {"write", true}},
        {{"op", "loop"}, {"count", 2}, {"body", {{{"op", "verify"}, {"at", "1M"}, {"length", 8}, {"pattern", "zero"}}}}},
        {{"op", "hypercall"}, {"nr", 1}, {"args", {1, 2}}, {"expect", "-EFAULT"}},
        {{"op", "exit"}, {"code", 0}}}}};
  const uint64_t seed = Catch::rngSeed() ? Catch::rngSeed() : 20261122;
  std::mt19937_64 rng(seed);
  INFO("seed " << seed);
  size_t accepted = 0, refused = 0;
  for (int iter = 0; iter < 4000; iter++) {
    json c = base;
    const int mutations = 1 + static_cast<int>(rng() % 3);
    for (int m = 0; m < mutations; m++) {
      std::vector<json::json_pointer> ptrs;
      collect(c, json::json_pointer(), ptrs);
      const auto& at = ptrs[rng() % ptrs.size()];
      json& node = c[at];
      switch (rng() % 3) {
        case 0: node = random_value(rng); break;
        case 1:
          if (node.is_object() && !node.empty()) node.erase(std::next(node.begin(), static_cast<long>(rng() % node.size())));
          else node = random_value(rng);
          break;
        case 2:
          if (node.is_object()) node[rng() % 2 ? "op" : "stray"] = random_value(rng);
          else if (node.is_array()) node.push_back(random_value(rng));
          else node = random_value(rng);
          break;
      }
    }
    INFO(c.dump().substr(0, 2000));
    auto r = parse_vm_config(c, "t");
    if (!r) {
      refused++;
      REQUIRE(r.error().message.rfind("/", 0) == 0);  // every refusal starts with a pointer
      continue;
    }
    accepted++;
    check_accepted(*r, r->program);
    auto img = guest::build(r->program, {.ram_bytes = r->memory});
    if (!img) REQUIRE(img.error().message.find("bytes it may use") != std::string::npos);
  }
  CHECK(accepted > 100);
  CHECK(refused > 100);
}

TEST_CASE("mutated shipped configs are refused by a reader, never by a library exception", "[config][fuzz]") {
  // Values of every JSON type, and numbers the library holds only as doubles.
  const json pool[] = {nullptr, true, 0, -1, 1.5, -0.0, 1e300, 18446744073709551615ULL, 9.3e18, "", "1M", "zero",
                       json::array(), json::array({1, 2}), json::array({json::array({1})}), json::object(),
                       json{{"seed", 1.5}}, json{{"byte", json::array()}}, json{{"op", 1}}, json{{"stress", 1}}};
  const uint64_t seed = Catch::rngSeed() ? Catch::rngSeed() : 20261201;
  std::mt19937_64 rng(seed);
  INFO("seed " << seed);
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::recursive_directory_iterator("configs"))
    if (e.path().extension() == ".json") files.push_back(e.path().string());
  REQUIRE(files.size() >= 8);
  for (const std::string& f : files) {
    std::ifstream in(f);
    const json base = json::parse(in);
    for (int iter = 0; iter < 500; iter++) {
      json c = base;
      std::vector<json::json_pointer> ptrs;
      collect(c, json::json_pointer(), ptrs);
      c[ptrs[rng() % ptrs.size()]] = pool[rng() % std::size(pool)];
      INFO(f << ": " << c.dump().substr(0, 2000));
      const bool stress = c.is_object() && c.contains("stress");
      std::string refusal;
      try {
        if (stress) {
          if (auto r = parse_stress_config(c); !r) refusal = r.error().message;
        } else if (auto r = parse_run_config(c, "t"); !r) {
          refusal = r.error().message;
        }
      } catch (const std::exception& e) {
        FAIL("the parser threw: " << e.what());
      }
      if (!refusal.empty()) REQUIRE(refusal.rfind("/", 0) == 0);
    }
  }
}
