// What large, mostly untouched ranges cost: mapping them and counting what
// is resident must follow what is used, not how large the range is.
#include <sys/mman.h>

#include <chrono>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "memory/memory_file.h"
#include "tests/memory/faulty_host.h"

using namespace kvmem;

namespace {

constexpr uint64_t kMiB = 1ull << 20, kGiB = 1ull << 30;

std::unique_ptr<MemoryFile> make_file(MemoryFileOptions o) {
  auto f = MemoryFile::create(o);
  REQUIRE(f.has_value());
  return std::move(*f);
}

// The kernel's count over all of r, the way resident_in must agree with.
uint64_t mincore_all(MemoryFile& mf, FileRange r) {
  auto span = mf.map_internal(r);
  REQUIRE(span);
  std::vector<unsigned char> vec(r.length() / kPageSize);
  REQUIRE(mincore(span->data(), span->size(), vec.data()) == 0);
  uint64_t pages = 0;
  for (unsigned char v : vec) pages += v & 1;
  return pages * kPageSize;
}

double ms_of(const std::function<void()>& fn) {
  const auto t = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

TEST_CASE("mapping a large file takes one mmap per GiB, not one per 16 MiB chunk", "[memory]") {
  test::FaultyHost host;
  auto mf = make_file({.reservation = 16 * kGiB, .host = &host});
  // A 4 GiB guest's RAM, allocated and mapped in 16 MiB units as GuestMemory does.
  std::vector<FileRange> units;
  for (int i = 0; i < 256; i++) {
    auto r = mf->allocate(16 * kMiB, UsageKind::Anonymous);
    REQUIRE(r);
    REQUIRE(mf->map_internal(*r));
    units.push_back(*r);
  }
  // One mmap per chunk was 256. Now: the file grows by doubling from 16 MiB,
  // so the first GiB is mapped in 7 steps (16 MiB, then each doubling), and
  // each later GiB in one.
  CHECK(host.maps.load() <= 7 + 3);
  // Every unit is still its own host-contiguous, writable memory.
  for (const FileRange& r : units) mf->base()[r.start + r.length() - 1] = 1;
  for (const FileRange& r : units) mf->dec_ref(r);
  mf->wait_for_reclaim();
  mf->check_invariants();
}

TEST_CASE("resident_in agrees with mincore and costs what the range holds", "[memory]") {
  auto mf = make_file({.reservation = 128 * kGiB});
  auto big = mf->allocate(32 * kGiB, UsageKind::Anonymous);
  REQUIRE(big);
  auto span = mf->map_internal(*big);
  REQUIRE(span);
  CHECK(*mf->resident_in(*big) == 0);
  // Scattered touches, a few runs, and one page at each end.
  std::mt19937_64 rng(20261201);
  uint64_t touched = 0;
  std::vector<bool> page_touched(big->length() / kPageSize);
  auto touch = [&](uint64_t page) {
    if (page_touched[page]) return;
    page_touched[page] = true;
    (*span)[page * kPageSize] = 1;
    touched += kPageSize;
  };
  for (int i = 0; i < 2000; i++) touch(rng() % page_touched.size());
  for (int run = 0; run < 4; run++) {
    const uint64_t first = rng() % (page_touched.size() - 512);
    for (uint64_t p = first; p < first + 512; p++) touch(p);
  }
  touch(0);
  touch(page_touched.size() - 1);
  CHECK(*mf->resident_in(*big) == touched);
  // A sub-range that cuts through data extents.
  const FileRange part(big->start + 3 * kGiB + 12345 * kPageSize, big->start + 17 * kGiB);
  CHECK(*mf->resident_in(part) == mincore_all(*mf, part));

  // A hole punched inside is gone from the count.
  REQUIRE(mf->decommit(FileRange(big->start, big->start + kGiB)));
  CHECK(*mf->resident_in(*big) == mincore_all(*mf, *big));

  // The cost: a mincore of all 32 GiB reads 8 Mi page entries; resident_in
  // reads the few thousand that hold data. Both timed here, so a loaded
  // machine slows both.
  double all = 1e9, ours = 1e9;
  for (int i = 0; i < 3; i++) {
    all = std::min(all, ms_of([&] { (void)mincore_all(*mf, *big); }));
    ours = std::min(ours, ms_of([&] { (void)mf->resident_in(*big); }));
  }
  INFO("mincore of all: " << all << " ms; resident_in: " << ours << " ms");
  CHECK(ours * 10 < all);
  mf->dec_ref(*big);
  mf->wait_for_reclaim();
}
