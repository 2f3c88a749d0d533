#include <unistd.h>

#include <cstdlib>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "guest/abi.h"
#include "config/vm_config.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

json minimal() { return json{{"memory", "4M"}, {"program", json::array()}}; }

json with_step(json step) {
  json c = minimal();
  c["program"].push_back(std::move(step));
  return c;
}

}  // namespace

TEST_CASE("sizes parse as integers, hex and binary suffixes", "[config]") {
  struct Case {
    const char* text;
    uint64_t want;
  } cases[] = {{"0", 0},           {"4096", 4096},           {"4K", 4096},
               {"64M", 64ull << 20}, {"1G", 1ull << 30},       {"2T", 2ull << 40},
               {"0x200000", 0x200000}, {"0x10K", 0x4000},      {"18446744073709551615", UINT64_MAX}};
  for (const auto& c : cases) {
    INFO(c.text);
    auto r = parse_size_string(c.text);
    REQUIRE(r);
    CHECK(*r == c.want);
  }
}

TEST_CASE("malformed and overflowing sizes are refused with the text", "[config]") {
  for (const char* bad : {"", "M", "12Q", "0x", "-4K", "1.5M", "18446744073709551616", "17179869184G", " 4K"}) {
    INFO(bad);
    auto r = parse_size_string(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find(fmt::format("\"{}\"", bad)) != std::string::npos);
  }
}

TEST_CASE("a config with every step parses into typed steps", "[config]") {
  json c = {{"name", "all-steps"},
            {"memory", "8M"},
            {"vcpus", 1},
            {"timeout_ms", 250},
            {"program",
             {{{"op", "print"}, {"text", "hi\n"}},
              {{"op", "fill"}, {"at", "1M"}, {"length", "64K"}, {"pattern", {{"seed", 7}}}},
              {{"op", "touch"}, {"at", "2M"}, {"length", "1M"}, {"stride", 8192}, {"write", false}},
              {{"op", "verify"}, {"at", "1M"}, {"length", 65536}, {"pattern", {{"byte", 171}}}},
              {{"op", "loop"}, {"count", 3}, {"body", {{{"op", "print"}, {"text", "x"}}}}},
              {{"op", "hypercall"}, {"nr", 1}, {"args", {"0x100000", -1}}, {"expect", "-EINVAL"}},
              {{"op", "fault"}, {"kind", "spin"}},
              {{"op", "exit"}, {"code", 3}}}}};
  auto r = parse_vm_config(c, "default");
  REQUIRE(r);
  CHECK(r->name == "all-steps");
  CHECK(r->memory == 8ull << 20);
  CHECK(r->timeout_ms == 250);
  REQUIRE(r->program.size() == 8);
  const auto& p = r->program;
  REQUIRE(p[1].is<guest::Fill>());
  CHECK(p[1].as<guest::Fill>().at == 1ull << 20);
  CHECK(p[1].as<guest::Fill>().pattern.kind == guest::Pattern::Kind::kSeed);
  CHECK(p[1].as<guest::Fill>().pattern.arg == 7);
  REQUIRE(p[2].is<guest::Touch>());
  CHECK(p[2].as<guest::Touch>().stride == 8192);
  CHECK_FALSE(p[2].as<guest::Touch>().write);
  CHECK(p[2].as<guest::Touch>().pattern.kind == guest::Pattern::Kind::kAddress);
  REQUIRE(p[3].is<guest::Verify>());
  CHECK(p[3].as<guest::Verify>().pattern.arg == 171);
  REQUIRE(p[4].is<guest::Loop>());
  CHECK(p[4].as<guest::Loop>().count == 3);
  CHECK(p[4].as<guest::Loop>().body.size() == 1);
  REQUIRE(p[5].is<guest::Hypercall>());
  CHECK(p[5].as<guest::Hypercall>().args[1] == UINT64_MAX);
  CHECK(p[5].as<guest::Hypercall>().expect == -22);
  REQUIRE(p[6].is<guest::Fault>());
  CHECK(p[6].as<guest::Fault>().kind == guest::FaultKind::kSpin);
  REQUIRE(p[7].is<guest::Exit>());
  CHECK(p[7].as<guest::Exit>().code == 3);
}

TEST_CASE("defaults: name from the caller, 1 vCPU, 10 s timeout, 2 MiB pages", "[config]") {
  auto r = parse_vm_config(minimal(), "from-file");
  REQUIRE(r);
  CHECK(r->name == "from-file");
  CHECK(r->vcpus == 1);
  CHECK(r->timeout_ms == 10'000);
  CHECK(r->page_size == guest::PageSize::k2M);
  CHECK(r->program.empty());
}

TEST_CASE("every bad config is refused with the JSON pointer of the bad value", "[config]") {
  struct Case {
    json config;
    const char* want;  // the message must start with this
  };
  const Case cases[] = {
      // state: top level
      {json::array(), "/: expected an object"},
      {json{{"program", json::array()}}, "/: missing required key \"memory\""},
      {json{{"memory", "4M"}}, "/: missing required key \"program\""},
      {json{{"memory", "4M"}, {"program", json::array()}, {"memroy", 1}}, "/memroy: unknown key"},
      {json{{"memory", 0}, {"program", json::array()}}, "/memory: must be > 0"},
      {json{{"memory", -4}, {"program", json::array()}}, "/memory: must not be negative"},
      {json{{"memory", "3M"}, {"program", json::array()}}, "/memory: 0x300000 is not a multiple of the guest page size"},
      {json{{"memory", "64G"}, {"program", json::array()}}, "/memory: 0x1000000000 is more than"},
      {json{{"memory", "99999999999999999999M"}, {"program", json::array()}}, "/memory: \"99999999999999999999M\" overflows"},
      {json{{"memory", true}, {"program", json::array()}}, "/memory: expected a size"},
      {json{{"memory", "4M"}, {"vcpus", 17}, {"program", json::array()}}, "/vcpus: must be 1..16"},
      {json{{"memory", "4M"}, {"timeout_ms", 0}, {"program", json::array()}}, "/timeout_ms: must be 1..3600000"},
      {json{{"memory", "4M"}, {"name", "a b"}, {"program", json::array()}}, "/name: expected 1 to 64"},
      {json{{"memory", "4M"}, {"guest_page_size", "4K"}, {"program", json::array()}}, "/guest_page_size: expected"},
      {json{{"memory", "512M"}, {"guest_page_size", "1G"}, {"program", json::array()}}, "/memory: 0x20000000 is not a multiple"},
      {json{{"memory", "4M"}, {"program", json::object()}}, "/program: expected an array"},
      // input: steps
      {with_step(json{{"text", "x"}}), "/program/0: missing required key \"op\""},
      {with_step(json{{"op", 3}}), "/program/0/op: expected a string"},
      {with_step(json{{"op", "jump"}}), "/program/0/op: unknown step \"jump\""},
      {with_step(json{{"op", "print"}}), "/program/0/text: expected a string"},
      {with_step(json{{"op", "print"}, {"text", "x"}, {"colour", "red"}}), "/program/0/colour: unknown key"},
      {with_step(json{{"op", "fill"}, {"length", 8}, {"pattern", "zero"}}), "/program/0: missing required key \"at\""},
      {with_step(json{{"op", "fill"}, {"at", "1M"}, {"pattern", "zero"}}), "/program/0: missing required key \"length\""},
      {with_step(json{{"op", "fill"}, {"at", "1M"}, {"length", 8}}), "/program/0: missing required key \"pattern\""},
      {with_step(json{{"op", "fill"}, {"at", "1M"}, {"length", 0}, {"pattern", "zero"}}), "/program/0/length: must be > 0"},
      {with_step(json{{"op", "fill"}, {"at", "1M"}, {"length", 12}, {"pattern", "zero"}}), "/program/0/length: 0xc is not a multiple of 8"},
      {with_step(json{{"op", "fill"}, {"at", 0x100004}, {"length", 8}, {"pattern", "zero"}}), "/program/0/at: 0x100004 is not a multiple of 8"},
      {with_step(json{{"op", "fill"}, {"at", 0x1000}, {"length", 8}, {"pattern", "zero"}}), "/program/0/at: 0x1000 lies in the reserved boot area"},
      {with_step(json{{"op", "fill"}, {"at", "3M"}, {"length", "2M"}, {"pattern", "zero"}}), "/program/0/length: the range at 0x300000 of 0x200000 bytes runs past the end of RAM"},
      {with_step(json{{"op", "fill"}, {"at", "4M"}, {"length", 8}, {"pattern", "zero"}}), "/program/0/length: the range at 0x400000"},
      {with_step(json{{"op", "verify"}, {"at", "0xfffffffffffffff8"}, {"length", 16}, {"pattern", "zero"}}), "/program/0/length: the range at 0xfffffffffffffff8"},
      {with_step(json{{"op", "fill"}, {"at", "1M"}, {"length", 8}, {"pattern", "stripes"}}), "/program/0/pattern: unknown pattern \"stripes\""},
      {with_step(json{{"op", "fill"}, {"at", "1M"}, {"length", 8}, {"pattern", {{"byte", 256}}}}), "/program/0/pattern/byte: must be 0..255"},
      {with_step(json{{"op", "fill"}, {"at", "1M"}, {"length", 8}, {"pattern", {{"seed", "x"}}}}), "/program/0/pattern/seed: \"x\" is not a size"},
      {with_step(json{{"op", "fill"}, {"at", "1M"}, {"length", 8}, {"pattern", {{"seed", 1}, {"byte", 2}}}}), "/program/0/pattern: expected a pattern"},
      {with_step(json{{"op", "touch"}, {"at", "1M"}, {"length", 8}, {"stride", 0}}), "/program/0/stride: must be a non-zero multiple of 8"},
      {with_step(json{{"op", "touch"}, {"at", "1M"}, {"length", 8}, {"write", "yes"}}), "/program/0/write: expected true or false"},
      {with_step(json{{"op", "loop"}, {"count", 0}, {"body", json::array()}}), "/program/0/count: must be >= 1"},
      {with_step(json{{"op", "loop"}, {"count", 2}}), "/program/0: missing required key \"body\""},
      {with_step(json{{"op", "loop"}, {"count", 2}, {"body", {{{"op", "exit"}, {"code", 300}}}}}), "/program/0/body/0/code: must be 0..255"},
      {with_step(json{{"op", "hypercall"}, {"nr", "0x100000000"}}), "/program/0/nr: must fit in 32 bits"},
      {with_step(json{{"op", "hypercall"}, {"nr", 1}, {"args", {1, 2, 3, 4, 5, 6, 7}}}), "/program/0/args: at most 6 arguments"},
      {with_step(json{{"op", "hypercall"}, {"nr", 1}, {"args", {1, "nope"}}}), "/program/0/args/1: \"nope\" is not a size"},
      {with_step(json{{"op", "hypercall"}, {"nr", 1}, {"expect", "-EWHAT"}}), "/program/0/expect: expected an integer or an errno name"},
      {with_step(json{{"op", "fault"}, {"kind", "explode"}}), "/program/0/kind: expected one of"},
  };
  for (const auto& c : cases) {
    INFO(c.config.dump());
    auto r = parse_vm_config(c.config, "t");
    REQUIRE_FALSE(r);
    INFO(r.error().message);
    CHECK(r.error().message.rfind(c.want, 0) == 0);
  }
}

TEST_CASE("loops nest at most eight deep", "[config]") {
  auto nest = [](int depth) {
    json step = {{"op", "print"}, {"text", "x"}};
    for (int i = 0; i < depth; i++) step = json{{"op", "loop"}, {"count", 1}, {"body", {step}}};
    return with_step(step);
  };
  CHECK(parse_vm_config(nest(8), "t"));
  auto r = parse_vm_config(nest(9), "t");
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("loops nest deeper than 8") != std::string::npos);
}

TEST_CASE("the step count is bounded", "[config]") {
  json c = minimal();
  for (size_t i = 0; i <= kMaxSteps; i++) c["program"].push_back(json{{"op", "print"}, {"text", "x"}});
  auto r = parse_vm_config(c, "t");
  REQUIRE_FALSE(r);
  CHECK(r.error().message.rfind("/program/10000: too many steps", 0) == 0);
}

TEST_CASE("loading a config names the file, and the line and column of a JSON syntax error", "[config]") {
  auto missing = load_run_config("/nonexistent/kvmem.json");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().message.rfind("cannot read config /nonexistent/kvmem.json: open: ENOENT", 0) == 0);

  char path[] = "/tmp/kvmem-config-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  const char text[] = "{\n  \"memory\": \"4M\",\n  \"program\": [ , ]\n}\n";
  REQUIRE(write(fd, text, sizeof text - 1) == static_cast<ssize_t>(sizeof text - 1));
  close(fd);
  auto bad = load_run_config(path);
  unlink(path);
  REQUIRE_FALSE(bad);
  INFO(bad.error().message);
  CHECK(bad.error().message.find("not valid JSON: parse error at line 3, column 16") != std::string::npos);
}

TEST_CASE("a run config is one VM or a list of them, with distinct names", "[config]") {
  auto one = parse_run_config(minimal(), "solo");
  REQUIRE(one);
  REQUIRE(one->vms.size() == 1);
  CHECK(one->vms[0].name == "solo");
  auto two = parse_run_config(json{{"vms", {minimal(), minimal()}}}, "pair");
  REQUIRE(two);
  REQUIRE(two->vms.size() == 2);
  CHECK(two->vms[0].name == "pair-0");
  CHECK(two->vms[1].name == "pair-1");
  struct Case {
    json config;
    const char* want;
  } cases[] = {
      {json{{"vms", json::array()}}, "/vms: expected an array of 1..64 VM configs"},
      {json{{"vms", {minimal()}}, {"extra", 1}}, "/extra: unknown key"},
      {json{{"vms", {minimal(), json{{"memory", "4M"}}}}}, "/vms/1: missing required key \"program\""},
      {json{{"vms", {minimal(), json{{"memory", "4M"}, {"program", {{{"op", "fill"}, {"at", 0}, {"length", 8}, {"pattern", "zero"}}}}}}}},
       "/vms/1/program/0/at: 0x0 lies in the reserved boot area"},
      {json{{"vms", {json{{"name", "a"}, {"memory", "4M"}, {"program", json::array()}},
                     json{{"name", "a"}, {"memory", "4M"}, {"program", json::array()}}}}},
       "/vms/1/name: \"a\" names two VMs"},
  };
  for (const auto& c : cases) {
    auto r = parse_run_config(c.config, "t");
    REQUIRE_FALSE(r);
    INFO(r.error().message);
    CHECK(r.error().message.rfind(c.want, 0) == 0);
  }
}

TEST_CASE("free and report steps are checked like the others", "[config]") {
  struct Case {
    json step;
    const char* want;
  } cases[] = {
      {json{{"op", "free"}, {"at", "1M"}, {"length", "8K"}, {"mode", "lazy"}}, "/program/0/mode: expected \"sync\" or \"async\""},
      {json{{"op", "free"}, {"at", "0x100800"}, {"length", "8K"}}, "/program/0/at: 0x100800 is not a multiple of 4096"},
      {json{{"op", "free"}, {"at", "1M"}, {"length", "8K"}, {"granule", 100}}, "/program/0/granule: must be a non-zero multiple of 4K"},
      {json{{"op", "free"}, {"at", "1M"}, {"length", "12K"}, {"granule", "8K"}}, "/program/0/length: 0x3000 is not a multiple of the granule"},
      {json{{"op", "free"}, {"at", "1M"}, {"length", "8K"}, {"batch", 0}}, "/program/0/batch: must be 1..2048"},
      {json{{"op", "free"}, {"at", "1M"}, {"length", "64K"}, {"granule", "8K"}, {"stride", "4K"}}, "/program/0/stride: must be a multiple of 4K no smaller than the granule"},
      {json{{"op", "free"}, {"at", "1M"}, {"length", "12K"}, {"stride", "8K"}}, "/program/0/length: 0x3000 is not a multiple of the stride"},
      {json{{"op", "free"}, {"at", "1M"}, {"length", "8K"}, {"mode", "async"}, {"batch", 2048}}, "/program/0/batch: must be 1..1024"},
      {json{{"op", "free"}, {"at", "3M"}, {"length", "2M"}}, "/program/0/length: the range at 0x300000"},
      {json{{"op", "report"}}, "/program/0: missing required key \"ranges\""},
      {json{{"op", "report"}, {"ranges", json::array()}}, "/program/0/ranges: expected an array of 1..64"},
      {json{{"op", "report"}, {"ranges", {{1, 2, 3}}}}, "/program/0/ranges/0: expected [address, length]"},
      {json{{"op", "report"}, {"ranges", {{1, 2}}}, {"expect", {0, 0}}}, "/program/0/expect: expected an array with one status"},
      {json{{"op", "out"}, {"port", 256}}, "/program/0/port: must be 0..255"},
  };
  for (const auto& c : cases) {
    INFO(c.step.dump());
    auto r = parse_vm_config(with_step(c.step), "t");
    REQUIRE_FALSE(r);
    INFO(r.error().message);
    CHECK(r.error().message.rfind(c.want, 0) == 0);
  }
  // Hostile ranges are the VMM's to refuse, so the config keeps them.
  json hostile = json::array({json::array({"0xfffffffffffff000", "0x2000"})});
  auto ok = parse_vm_config(with_step(json{{"op", "report"}, {"ranges", hostile}}), "t");
  REQUIRE(ok);
  CHECK(ok->program[0].as<guest::Report>().ranges[0].first == 0xfffffffffffff000ull);
}

TEST_CASE("backing and prefault keys parse, and each bad value is refused by its pointer", "[config]") {
  SECTION("defaults") {
    auto r = parse_vm_config(minimal(), "t");
    REQUIRE(r);
    CHECK(r->backing == RamBacking::kMemfd);
    CHECK(r->prefault == Prefault::kNone);
    CHECK(r->prefault_lanes.empty());
  }
  SECTION("every key") {
    json c = minimal();
    c["backing"] = "anon";
    c["prefault"] = "ahead";
    c["prefault_threads"] = 0;
    c["prefault_chunk"] = "64K";
    c["prefault_lanes"] = {{{"at", "2M"}, {"length", "2M"}}, {{"at", "1M"}, {"length", "1M"}}};
    auto r = parse_vm_config(c, "t");
    REQUIRE(r);
    CHECK(r->backing == RamBacking::kAnon);
    CHECK(r->prefault == Prefault::kAhead);
    CHECK(r->prefault_threads == 0);
    CHECK(r->prefault_chunk == 64 * 1024);
    REQUIRE(r->prefault_lanes.size() == 2);
    CHECK(r->prefault_lanes[0] == GuestRange(2 << 20, 4 << 20));
    CHECK(r->prefault_lanes[1] == GuestRange(1 << 20, 2 << 20));
    CHECK(r->prefault_options().threads == 0);
  }
  SECTION("each backing name") {
    for (const char* name : {"memfd", "memfd-thp", "hugetlb", "anon"}) {
      json c = minimal();
      c["backing"] = name;
      auto r = parse_vm_config(c, "t");
      REQUIRE(r);
      CHECK(std::string(ram_backing_name(r->backing)) == name);
    }
  }
  auto with = [](std::initializer_list<std::pair<const char*, json>> kv) {
    json c = minimal();
    for (const auto& [k, v] : kv) c[k] = v;
    return c;
  };
  const std::pair<json, const char*> bad[] = {
      {with({{"backing", "shm"}}), "/backing: unknown backing \"shm\""},
      {with({{"backing", 1}}), "/backing: expected a string"},
      {with({{"prefault", "lazy"}}), "/prefault: unknown prefault \"lazy\""},
      {with({{"prefault_threads", 2}}), "/prefault_threads: means nothing without"},
      {with({{"prefault", "eager"}, {"prefault_threads", 2}}), "/prefault_threads: is for \"prefault\": \"ahead\""},
      {with({{"prefault", "ahead"}, {"prefault_threads", 65}}), "/prefault_threads: must be 0"},
      {with({{"prefault", "ahead"}, {"prefault_chunk", 100}}), "/prefault_chunk: must be a non-zero multiple of 4K"},
      {with({{"prefault", "ahead"}, {"prefault_chunk", "8M"}}), "/prefault_chunk: must be a non-zero multiple of 4K"},
      {with({{"prefault", "eager"}, {"prefault_lanes", json::array()}}), "/prefault_lanes: expected an array of 1..64"},
      {with({{"prefault", "eager"}, {"prefault_lanes", {{{"at", "3M"}, {"length", "2M"}}}}}), "/prefault_lanes/0: [0x300000, +0x200000) runs past RAM"},
      {with({{"prefault", "eager"}, {"prefault_lanes", {{{"at", 4097}, {"length", 4096}}}}}), "/prefault_lanes/0: a lane is a non-empty range"},
      {with({{"prefault", "eager"}, {"prefault_lanes", {{{"at", 0}, {"size", 4096}}}}}), "/prefault_lanes/0/size: unknown key"},
  };
  for (const auto& [config, want] : bad) {
    INFO(config.dump());
    auto r = parse_vm_config(config, "t");
    REQUIRE_FALSE(r);
    INFO(r.error().message);
    CHECK(r.error().message.rfind(want, 0) == 0);
  }
}

TEST_CASE("a VM whose RAM is on a memory file of its own cannot have windows", "[config]") {
  for (const char* backing : {"memfd-thp", "hugetlb"}) {
    json c = {{"files", {{{"name", "f"}, {"size", "64K"}}}},
              {"memory", "4M"},
              {"backing", backing},
              {"windows", {{{"file", "f"}, {"at", "1G"}, {"length", "64K"}}}},
              {"program", json::array()}};
    auto r = parse_run_config(c, "t");
    REQUIRE_FALSE(r);
    INFO(r.error().message);
    CHECK(r.error().message.rfind("/windows: a VM of backing", 0) == 0);
  }
  json c = {{"files", {{{"name", "f"}, {"size", "64K"}}}},
            {"memory", "4M"},
            {"backing", "anon"},
            {"windows", {{{"file", "f"}, {"at", "1G"}, {"length", "64K"}}}},
            {"program", json::array()}};
  CHECK(parse_run_config(c, "t"));
}
