// config/vm_json.h: a VM config written back to JSON parses to the same VM.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "config/vm_config.h"
#include "config/vm_json.h"
#include "guest/program.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

// The assembled programs of a config: what a restored VM must find again.
std::vector<uint8_t> image_of(const VmConfig& c) {
  auto img = guest::build_vcpus(c.vcpu_programs(), c.machine());
  REQUIRE(img);
  return img->bytes;
}

// c, written and parsed again (a run config of one VM, as a snapshot's).
VmConfig round_trip(const VmConfig& c, const json& files = json()) {
  json j = vm_config_json(c);
  if (!files.is_null()) j["files"] = files;
  auto again = parse_run_config(json::parse(j.dump()), "vm");
  INFO(j.dump());
  REQUIRE(again);
  REQUIRE(again->vms.size() == 1);
  return again->vms[0];
}

void check_same(const VmConfig& a, const VmConfig& b) {
  CHECK(a.name == b.name);
  CHECK(a.memory == b.memory);
  CHECK(a.vcpus == b.vcpus);
  CHECK(a.timeout_ms == b.timeout_ms);
  CHECK(a.page_size == b.page_size);
  CHECK(a.ram_unit == b.ram_unit);
  CHECK(a.backing == b.backing);
  CHECK(a.prefault == b.prefault);
  CHECK(a.prefault_threads == b.prefault_threads);
  CHECK(a.prefault_chunk == b.prefault_chunk);
  CHECK(a.prefault_lanes == b.prefault_lanes);
  REQUIRE(a.windows.size() == b.windows.size());
  for (size_t i = 0; i < a.windows.size(); i++) {
    CHECK(a.windows[i].file == b.windows[i].file);
    CHECK(a.windows[i].guest() == b.windows[i].guest());
    CHECK(a.windows[i].offset == b.windows[i].offset);
    CHECK(a.windows[i].writable == b.windows[i].writable);
  }
  CHECK(a.programs.size() == b.programs.size());
  CHECK(image_of(a) == image_of(b));
}

}  // namespace

TEST_CASE("every shipped VM config written back to JSON parses to the same VM", "[config]") {
  for (const char* path : {"configs/steps.json", "configs/patterns.json", "configs/many-vms.json",
                           "configs/ping-pong.json", "configs/hello.json"}) {
    INFO(path);
    auto rc = load_run_config(path);
    REQUIRE(rc);
    json files = json::array();
    for (const FileConfig& f : rc->files) files.push_back({{"name", f.name}, {"size", f.size}});
    for (const VmConfig& c : rc->vms) {
      INFO(c.name);
      check_same(c, round_trip(c, files.empty() ? json() : files));
    }
  }
}

TEST_CASE("a VM config with every op, both program forms and every RAM key survives the round trip", "[config]") {
  using namespace guest;
  const std::vector<Step> ops = {
      Print{"h\xc3\xa9llo\n"},
      Fill{0x200000, 0x1000, Pattern{Pattern::Kind::kSeed, ~0ull, 0x40000000}},
      Verify{0x200000, 0x1000, Pattern{Pattern::Kind::kSeed, ~0ull, 0x40000000}},
      Touch{.at = 0x300000, .length = 0x10000, .stride = 4096, .write = false,
            .pattern = Pattern{Pattern::Kind::kAddress, 0, 0x1000}, .samples = 0x400000},
      Fill{0x200000, 8, Pattern{Pattern::Kind::kByte, 0xab}},
      Verify{0x200000, 8, Pattern{Pattern::Kind::kAddress, 0}},
      Loop{3, {Free{.at = 0x200000, .length = 0x8000, .granule = 4096, .stride = 8192, .batch = 7},
               Loop{2, {Barrier{.timeout_ms = 50}}}}},
      Hypercall{.nr = 0xffffffffu, .args = {1, ~0ull, 3, 4, 5, 6}, .expect = -22},
      Report{.ranges = {{0x200000, 4096}, {~0ull, 4096}}, .expects = {0, std::nullopt}, .mode = FreeMode::kAsync},
      Report{.ranges = {{0x200000, 4096}}, .expects = {std::nullopt}},
      Out{0x80, 0xffffffffu},
      Timestamp{5},
      StoreWord{0x500000, 0xfeedf00dcafe0001ull},
      WaitWord{0x500000, 0xfeedf00dcafe0001ull, 30},
      Barrier{},
      Snapshot{.exit = true},
      Snapshot{},
      Free{.at = 0x200000, .length = 0x200000, .granule = 0x200000, .batch = 512, .mode = FreeMode::kAsync},
      Exit{3},
  };
  VmConfig c;
  c.name = "every-op";
  c.memory = 64ull << 20;
  c.vcpus = 2;
  c.timeout_ms = 1234;
  c.ram_unit = 4ull << 20;
  c.backing = RamBacking::kMemfdThp;
  c.prefault = Prefault::kAhead;
  c.prefault_threads = 3;
  c.prefault_chunk = 1ull << 20;
  c.prefault_lanes = {GuestRange(0x200000, 0x600000), GuestRange(0x1000000, 0x2000000)};
  SECTION("one program for every vCPU") {
    c.program = ops;
    check_same(c, round_trip(c));
  }
  SECTION("a program per vCPU, the second a fault") {
    c.programs = {ops, {Barrier{50}, Loop{6, {Barrier{50}}}, Snapshot{true}, Snapshot{}, Fault{FaultKind::kHalt}}};
    check_same(c, round_trip(c));
  }
  SECTION("prefault eager keeps its lanes and leaves ahead's keys out") {
    c.program = ops;
    c.prefault = Prefault::kEager;
    c.prefault_threads = 1;
    c.prefault_chunk = 2ull << 20;
    const json j = vm_config_json(c);
    CHECK_FALSE(j.contains("prefault_threads"));
    CHECK(j["prefault_lanes"].size() == 2);
    check_same(c, round_trip(c));
  }
}

TEST_CASE("a print whose text is not UTF-8 has no JSON source, and says so", "[config]") {
  VmConfig c;
  c.name = "bytes";
  c.memory = 4ull << 20;
  c.program = {guest::Print{"\xff\xfe"}};
  auto s = vm_config_source(c);
  REQUIRE_FALSE(s);
  CHECK(s.error().message.rfind("the config of VM bytes cannot be written as JSON: ", 0) == 0);
  c.program = {guest::Print{"ok"}};
  REQUIRE(vm_config_source(c));
}
