// The JSON field readers and the config edge's safety net.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "config/fields.h"

using namespace kvmem;
using namespace kvmem::json_fields;

TEST_CASE("a JSON library exception becomes an error with the pointer and the reason", "[config]") {
  json doc = json::parse(R"({"program": [{"op": "fill", "at": "1M"}]})");
  try {
    (void)doc["program"][0]["at"].get<uint64_t>();
    FAIL("get<uint64_t>() on a string did not throw");
  } catch (const json::exception& e) {
    CHECK(library_error(e).message == "/program/0/at: type must be number, but is string");
  }
  auto r = guarded([&]() -> Result<uint64_t> { return doc.at("memory").get<uint64_t>(); });
  REQUIRE_FALSE(r);
  CHECK(r.error().message == "the JSON library refused the config: key 'memory' not found");
}

TEST_CASE("pointers escape ~ and / in keys", "[config]") {
  CHECK((Ptr() / "a/b" / "c~d" / 3).str() == "/a~1b/c~0d/3");
}

TEST_CASE("the readers refuse a value of the wrong type by name, never by exception", "[config]") {
  const json values[] = {nullptr, true, 1.5, -2.0, 1e300, json::array(), json::object(), "x", -1,
                         18446744073709551615ULL, json{{"a", 1}}};
  for (const json& v : values) {
    INFO(v.dump());
    CHECK_NOTHROW((void)size_value(v, Ptr() / "v"));
    CHECK_NOTHROW((void)signed_value(v, Ptr() / "v"));
    CHECK_NOTHROW((void)bool_value(v, Ptr() / "v"));
    CHECK_NOTHROW((void)string_value(v, Ptr() / "v"));
    CHECK_NOTHROW((void)required_size(v, Ptr(), "v"));
    CHECK_NOTHROW((void)check_keys(v, Ptr(), {"a"}));
  }
  CHECK(signed_value(json(0.5), Ptr() / "e").error().message ==
        "/e: expected an integer, found 0.5 (a fraction, or too large for 64 bits)");
  CHECK(bool_value(json("yes"), Ptr() / "b").error().message == "/b: expected true or false, found string");
}
