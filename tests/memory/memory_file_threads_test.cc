// Concurrency: several threads allocate, write, verify and free at once while
// others decommit and scan usage. Run under ThreadSanitizer by `make tsan`.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "memory/memory_file.h"

using namespace kvmem;

namespace {

struct Live {
  FileRange r;
  uint64_t tag;
};

// Stamps every page of r with tag; a page shared with another live
// allocation would be overwritten and caught by verify().
void stamp(std::span<uint8_t> s, uint64_t tag) {
  for (size_t off = 0; off < s.size(); off += kPageSize) std::memcpy(s.data() + off, &tag, 8);
}
bool verify(std::span<uint8_t> s, uint64_t tag) {
  for (size_t off = 0; off < s.size(); off += kPageSize) {
    uint64_t got;
    std::memcpy(&got, s.data() + off, 8);
    if (got != tag) return false;
  }
  return true;
}
bool zero(std::span<uint8_t> s) {
  return std::all_of(s.begin(), s.end(), [](uint8_t b) { return b == 0; });
}

}  // namespace

TEST_CASE("threads allocating and freeing at once never share a page", "[memory][threads]") {
  auto created = MemoryFile::create({.reservation = uint64_t{1} << 32});
  REQUIRE(created);
  MemoryFile& mf = **created;
  constexpr int kThreads = 4, kIterations = 1500;
  std::atomic<int> failures{0};
  std::atomic<bool> stop{false};

  auto worker = [&](int id) {
    std::mt19937_64 rng(static_cast<uint64_t>(id) * 7919);
    std::vector<Live> live;
    for (int i = 0; i < kIterations; i++) {
      if (live.size() < 24 && rng() % 3 != 0) {
        uint64_t len = (1 + rng() % 8) * kPageSize;
        auto r = mf.allocate(len, id % 2 ? UsageKind::Anonymous : UsageKind::Tmpfs);
        if (!r) {
          failures++;
          continue;
        }
        auto s = mf.map_internal(*r);
        if (!s || !zero(*s)) failures++;  // new pages read zero
        uint64_t tag = (uint64_t(id) << 32) | uint64_t(i);
        if (s) stamp(*s, tag);
        live.push_back({*r, tag});
        if (rng() % 4 == 0) {  // an extra reference, dropped at once
          mf.inc_ref(*r);
          mf.dec_ref(*r);
        }
      } else if (!live.empty()) {
        size_t k = rng() % live.size();
        auto s = mf.map_internal(live[k].r);
        if (!s || !verify(*s, live[k].tag)) failures++;
        mf.dec_ref(live[k].r);
        live.erase(live.begin() + static_cast<long>(k));
      }
    }
    for (const Live& l : live) mf.dec_ref(l.r);
  };

  // Decommits its own allocation and rescans usage while the others run.
  auto scanner = [&] {
    auto r = mf.allocate(64 * kPageSize, UsageKind::PageCache);
    if (!r) {
      failures++;
      return;
    }
    while (!stop.load()) {
      auto s = mf.map_internal(*r);
      if (s) std::memset(s->data(), 1, s->size());
      if (!mf.decommit(*r)) failures++;
      if (!mf.update_usage()) failures++;
      (void)mf.total_usage();
      (void)mf.usage();
    }
    mf.dec_ref(*r);
  };

  std::thread scan(scanner);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) threads.emplace_back(worker, t);
  for (auto& t : threads) t.join();
  stop = true;
  scan.join();

  CHECK(failures.load() == 0);
  mf.wait_for_reclaim();
  mf.check_invariants();
  REQUIRE(mf.update_usage());
  CHECK(mf.usage().total() == 0);
  CHECK(*mf.total_usage() == 0);
}

TEST_CASE("destroy stops a busy reclaimer", "[memory][threads]") {
  for (int round = 0; round < 5; round++) {
    auto created = MemoryFile::create({.reservation = uint64_t{1} << 30});
    REQUIRE(created);
    for (int i = 0; i < 200; i++) {
      auto r = (*created)->allocate(kPageSize, UsageKind::Anonymous);
      REQUIRE(r);
      (*created)->dec_ref(*r);
    }
    (*created)->destroy();
    (*created)->destroy();  // idempotent
  }
}
