// Threads: a host thread writes and reads the file while another truncates
// it and a HostMapping reads it. Clean under ThreadSanitizer (make tsan),
// and every reference comes back.
#include <atomic>
#include <cerrno>
#include <random>
#include <thread>

#include <catch2/catch.hpp>

#include "tests/memory/tmpfs/tmpfs_helpers.h"

using namespace kvmem;
using namespace kvmem::tmpfs;

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kSpan = 64 * kPage;

}  // namespace

TEST_CASE("writes, reads, truncates and mapping reads on several threads stay consistent",
          "[tmpfs][threads]") {
  auto memory = test::make_memory();
  memory->wait_for_reclaim();
  REQUIRE(memory->update_usage());
  const uint64_t baseline = memory->usage().of(UsageKind::Tmpfs);
  auto file = std::make_shared<RegularFile>(*memory, "threads", true);
  REQUIRE(file->truncate(kSpan));
  auto mapping = std::move(*HostMapping::create(file, 0, kSpan, false));
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  const uint64_t seed = Catch::rngSeed() ? Catch::rngSeed() : 99;
  INFO("seed " << seed);

  std::thread writer([&] {
    std::mt19937_64 rng(seed);
    std::vector<uint8_t> buf(3 * kPage);
    for (int i = 0; i < 3000; i++) {
      const uint64_t off = rng() % kSpan, len = rng() % buf.size() + 1;
      // Every byte written is 0xab: whatever a reader sees is 0 or 0xab.
      std::fill(buf.begin(), buf.end(), 0xab);
      if (!file->write(off, std::span(buf).first(len))) failures++;
      auto r = file->read(rng() % kSpan, buf);
      if (!r) failures++;
      for (uint64_t j = 0; r && j < *r; j++)
        if (buf[j] != 0 && buf[j] != 0xab) failures++;
    }
    stop = true;
  });
  std::thread truncater([&] {
    std::mt19937_64 rng(seed + 1);
    while (!stop) {
      if (!file->truncate(rng() % (kSpan + kPage))) failures++;
      if (rng() % 4 == 0 &&
          !file->fallocate(FallocateMode::kPunchHole, rng() % kSpan, rng() % (8 * kPage) + 1))
        failures++;
      std::this_thread::yield();
    }
  });
  std::thread reader([&] {
    std::mt19937_64 rng(seed + 2);
    std::vector<uint8_t> buf(2 * kPage);
    while (!stop) {
      const uint64_t off = rng() % (kSpan - buf.size());
      Status st = mapping->read(off, buf);
      // Past the end is the only failure allowed (a real mapping's SIGBUS).
      if (!st && st.error().code != EFAULT) failures++;
      for (uint8_t b : buf)
        if (st && b != 0 && b != 0xab) failures++;
    }
  });
  writer.join();
  truncater.join();
  reader.join();
  CHECK(failures == 0);
  file->check_invariants();
  memory->check_invariants();
  mapping.reset();
  file.reset();
  memory->wait_for_reclaim();
  REQUIRE(memory->update_usage());
  CHECK(memory->usage().of(UsageKind::Tmpfs) == baseline);
}
