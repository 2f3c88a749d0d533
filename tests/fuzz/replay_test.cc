// Every fuzz target replays its checked-in corpus, tests/fuzz/NAME/, through
// the same entry point libFuzzer calls (docs/fuzzing.md). A target checks
// its own expectations and aborts when one breaks; here each input must also
// end in 0, without an exception.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace kvmem::fuzz {
int config_one(const uint8_t* data, size_t size);
int hypercalls_one(const uint8_t* data, size_t size);
int free_ring_one(const uint8_t* data, size_t size);
int fs_replay_one(const uint8_t* data, size_t size);
int snapshot_one(const uint8_t* data, size_t size);
int device_state_one(const uint8_t* data, size_t size);
}  // namespace kvmem::fuzz

namespace {

namespace fs = std::filesystem;

struct Target {
  const char* name;
  int (*one)(const uint8_t*, size_t);
};
constexpr Target kTargets[] = {{"config", kvmem::fuzz::config_one},
                               {"hypercalls", kvmem::fuzz::hypercalls_one},
                               {"free_ring", kvmem::fuzz::free_ring_one},
                               {"fs_replay", kvmem::fuzz::fs_replay_one},
                               {"snapshot", kvmem::fuzz::snapshot_one},
                               {"device_state", kvmem::fuzz::device_state_one}};

std::vector<fs::path> corpus_of(const char* target) {
  const fs::path dir = fs::path("tests/fuzz") / target;
  std::vector<fs::path> files;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

TEST_CASE("every fuzz target's corpus replays cleanly", "[fuzz]") {
  for (const Target& t : kTargets) {
    const std::vector<fs::path> files = corpus_of(t.name);
    INFO("target " << t.name << ", corpus tests/fuzz/" << t.name);
    REQUIRE(files.size() > 0);  // a missing or empty corpus replays nothing
    for (const fs::path& f : files) {
      INFO("input " << f.string());
      std::ifstream in(f, std::ios::binary);
      REQUIRE(in);
      const std::vector<uint8_t> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
      CHECK(t.one(bytes.data(), bytes.size()) == 0);
    }
  }
}

TEST_CASE("fuzz targets take empty and tiny inputs", "[fuzz]") {
  const uint8_t bytes[] = {0xff, 0x00, 0x7f, 0x80, 0x01};
  for (const Target& t : kTargets) {
    INFO("target " << t.name);
    for (size_t n = 0; n <= sizeof bytes; n++) CHECK(t.one(bytes, n) == 0);
  }
}
