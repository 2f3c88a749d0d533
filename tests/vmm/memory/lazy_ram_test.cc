// LazyRam on a real memfd, without a guest: the test's own threads touch
// the mapping as a vCPU would, and userfaultfd serves them. What comes back
// must be the snapshot byte for byte (pread, which commits nothing, is the
// oracle after the fact), holes read zero, each extent is loaded once,
// forgotten pages are never written, a page written after its load keeps
// what was written, and a damaged extent fails without leaving anyone
// blocked.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "memory/memory_file.h"
#include "snapshot/memory.h"
#include "tests/snapshot/snapshot_helpers.h"
#include "vmm/memory/lazy_ram.h"

using namespace kvmem;
using namespace kvmem::test;

namespace {

constexpr uint64_t kPage = 4096, kMiB = 1 << 20;
constexpr uint64_t kSpace = 16 * kMiB, kPages = kSpace / kPage;

std::unique_ptr<MemoryFile> make_file() {
  auto f = MemoryFile::create({.reservation = uint64_t{1} << 32});
  REQUIRE(f.has_value());
  return std::move(*f);
}

// Data in runs, a zero page now and then (dropped by the writer), and
// long holes; some data pages alone between holes.
bool has_data(uint64_t p) {
  if (p % 13 == 7) return false;                 // a zero or untouched page
  if ((p / 256) % 4 == 2) return p % 97 == 0;    // a mostly empty MiB
  return (p / 32) % 5 != 3;
}

uint64_t word_of(uint64_t p, uint64_t seed) { return (p + 1) * 0x9e3779b97f4a7c15ull ^ seed; }

// A snapshot of a 16 MiB RAM space with 256 KiB extents, written from a
// source file; returns the data pages' count.
uint64_t write_lazy_sample(const std::string& path, uint64_t seed) {
  auto src = make_file();
  auto r = src->allocate(kSpace, UsageKind::Anonymous);
  REQUIRE(r);
  auto span = src->map_internal(*r);
  REQUIRE(span);
  uint64_t data = 0;
  for (uint64_t p = 0; p < kPages; p++) {
    if (!has_data(p)) {
      if (p % 3 == 0) (*span)[p * kPage] = 0;  // a committed zero page: not saved
      continue;
    }
    auto* w = reinterpret_cast<uint64_t*>(span->data() + p * kPage);
    for (uint64_t i = 0; i < kPage / 8; i++) w[i] = word_of(p, seed) + i;
    data++;
  }
  auto w = SnapshotWriter::create(path, {.extent_cap = 256 * 1024});
  REQUIRE(w);
  REQUIRE((*w)->add_space(0, SpaceKind::kRam, "ram", kSpace));
  const std::vector<SpaceRange> ranges = {{0, *r}};
  REQUIRE(save_ranges(*src, 0, ranges, **w));
  REQUIRE((*w)->finish());
  src->dec_ref(*r);
  return data;
}

// The restored space: two allocations in reverse file order, so a space
// range maps to host memory in two pieces.
struct Target {
  std::unique_ptr<MemoryFile> file = make_file();
  FileRange lo, hi;
  std::vector<SpaceRange> ranges;
  Target() {
    auto a = file->allocate(kSpace / 2, UsageKind::Anonymous);
    auto b = file->allocate(kSpace / 2, UsageKind::Anonymous);
    REQUIRE((a && b));
    lo = *b;  // space [0, 8 MiB) on the later allocation
    hi = *a;
    ranges = {{0, lo}, {kSpace / 2, hi}};
    REQUIRE(file->map_internal(lo));
    REQUIRE(file->map_internal(hi));
  }
  uint64_t file_at(uint64_t space_off) const {
    return space_off < kSpace / 2 ? lo.start + space_off : hi.start + (space_off - kSpace / 2);
  }
  uint8_t* host(uint64_t space_off) const { return file->base() + file_at(space_off); }
  // Page p as the file holds it, by pread (commits nothing).
  std::vector<uint64_t> pread_page(uint64_t p) const {
    std::vector<uint64_t> out(kPage / 8);
    REQUIRE(pread(file->fd(), out.data(), kPage, static_cast<off_t>(file_at(p * kPage))) == ssize_t(kPage));
    return out;
  }
};

bool page_is(const uint64_t* w, uint64_t p, uint64_t seed) {
  for (uint64_t i = 0; i < kPage / 8; i++)
    if (w[i] != (has_data(p) ? word_of(p, seed) + i : 0)) return false;
  return true;
}

// Runs fn on a thread and waits at most 20 s for it: a lazy restore that
// leaves a toucher blocked fails the test instead of hanging it (stop()
// closes the userfaultfd, which wakes the toucher).
template <class Fn>
bool finishes(LazyRam& lazy, Fn fn) {
  auto f = std::async(std::launch::async, fn);
  if (f.wait_for(std::chrono::seconds(20)) == std::future_status::ready) return true;
  lazy.stop();
  f.wait();
  return false;
}

}  // namespace

TEST_CASE("lazy RAM reads back byte for byte through the mapping, and each extent is loaded once",
          "[lazy][snapshot]") {
  SnapshotDir dir;
  const std::string path = dir.path("lazy.kvmsnap");
  const uint64_t data_pages = write_lazy_sample(path, 5);
  auto reader = SnapshotReader::open(path);
  REQUIRE(reader);
  const bool fill = GENERATE(false, true);
  INFO("background fill " << fill);
  Target t;
  auto lazy = LazyRam::start(**reader, 0, *t.file, t.ranges, {.fill = fill}, [](const std::string& m) { FAIL(m); });
  REQUIRE(lazy);
  std::atomic<uint64_t> bad{0};
  REQUIRE(finishes(**lazy, [&] {
    // Backwards, so the touches and the filler meet in the middle.
    for (uint64_t p = kPages; p-- > 0;)
      if (!page_is(reinterpret_cast<const uint64_t*>(t.host(p * kPage)), p, 5)) bad++;
  }));
  CHECK(bad == 0);
  REQUIRE((*lazy)->complete());
  LazyStats s = (*lazy)->stats();
  CHECK(s.complete);
  CHECK(s.error.empty());
  const size_t extents = (*reader)->extents_of(0).size();
  CHECK(s.extents_on_demand + s.extents_filled == extents);
  CHECK(s.bytes_on_demand + s.bytes_filled == data_pages * kPage);
  if (!fill) {
    // With the filler on, it may have loaded every extent and unregistered
    // the ranges before the first touch (seen under load): no fault is ours.
    CHECK(s.faults > 0);
    CHECK(s.zero_faults > 0);  // the holes were touched too
    CHECK(s.extents_filled == 0);
  }
  (*lazy)->stop();
  // The file itself, after the fact.
  for (uint64_t p = 0; p < kPages; p += 7) CHECK(page_is(t.pread_page(p).data(), p, 5));
  // Once complete, the ranges are the kernel's again: touching a hole takes
  // no fault of ours.
  const uint64_t faults = s.faults;
  volatile uint8_t sink = *t.host(kSpace - kPage);
  (void)sink;
  CHECK((*lazy)->stats().faults == faults);
}

TEST_CASE("lazy RAM: a forgotten range is never written, and a page written after its load keeps it",
          "[lazy][snapshot]") {
  SnapshotDir dir;
  const std::string path = dir.path("lazy.kvmsnap");
  write_lazy_sample(path, 6);
  auto reader = SnapshotReader::open(path);
  REQUIRE(reader);
  Target t;
  auto lazy = LazyRam::start(**reader, 0, *t.file, t.ranges, {.fill = false}, [](const std::string& m) { FAIL(m); });
  REQUIRE(lazy);
  // A free report over [1 MiB, 3 MiB): forget, then punch, as GuestMemory
  // does; the guest then reads zeros there.
  (*lazy)->forget(kMiB, 3 * kMiB);
  for (uint64_t at = kMiB; at < 3 * kMiB; at += kMiB)
    REQUIRE(t.file->decommit(FileRange(t.file_at(at), t.file_at(at) + kMiB)));
  // The guest writes a page of the first MiB after it was loaded.
  uint64_t* w = reinterpret_cast<uint64_t*>(t.host(5 * kPage));
  REQUIRE(finishes(**lazy, [&] {
    CHECK(page_is(w, 5, 6));  // loads its extent
    w[3] = 0xabcdef;
  }));
  REQUIRE(finishes(**lazy, [&] { CHECK(*reinterpret_cast<volatile uint8_t*>(t.host(2 * kMiB)) == 0); }));
  REQUIRE((*lazy)->complete());
  const LazyStats s = (*lazy)->stats();
  uint64_t forgotten = 0;
  for (uint64_t p = kMiB / kPage; p < 3 * kMiB / kPage; p++) forgotten += has_data(p);
  CHECK(s.bytes_forgotten == forgotten * kPage);
  (*lazy)->stop();
  for (uint64_t p = kMiB / kPage; p < 3 * kMiB / kPage; p++) {
    const auto page = t.pread_page(p);
    CHECK(std::all_of(page.begin(), page.end(), [](uint64_t x) { return x == 0; }));
  }
  CHECK(t.pread_page(5)[3] == 0xabcdef);
  CHECK(page_is(t.pread_page(3 * kMiB / kPage + 1).data(), 3 * kMiB / kPage + 1, 6));
}

TEST_CASE("lazy RAM under four touching threads and the filler loses nothing", "[lazy][snapshot][threads]") {
  SnapshotDir dir;
  const std::string path = dir.path("lazy.kvmsnap");
  write_lazy_sample(path, 7);
  auto reader = SnapshotReader::open(path);
  REQUIRE(reader);
  Target t;
  auto lazy = LazyRam::start(**reader, 0, *t.file, t.ranges, {}, [](const std::string& m) { FAIL(m); });
  REQUIRE(lazy);
  std::atomic<uint64_t> bad{0};
  REQUIRE(finishes(**lazy, [&] {
    std::vector<std::thread> threads;
    for (unsigned k = 0; k < 4; k++)
      threads.emplace_back([&, k] {
        std::mt19937_64 rng(k);
        for (int i = 0; i < 2000; i++) {
          const uint64_t p = rng() % kPages;
          if (!page_is(reinterpret_cast<const uint64_t*>(t.host(p * kPage)), p, 7)) bad++;
        }
      });
    for (auto& th : threads) th.join();
  }));
  CHECK(bad == 0);
  REQUIRE((*lazy)->complete());
  const LazyStats s = (*lazy)->stats();
  CHECK(s.extents_on_demand + s.extents_filled == (*reader)->extents_of(0).size());
}

TEST_CASE("lazy RAM: a damaged extent is reported once and leaves nobody blocked", "[lazy][snapshot]") {
  SnapshotDir dir;
  const std::string path = dir.path("lazy.kvmsnap");
  write_lazy_sample(path, 8);
  // One data byte of the first extent changed: its checksum no longer holds.
  auto bytes = read_bytes(path);
  const uint64_t data_at = get_le(bytes, extent_entry(bytes, 0) + extent_field::kDataOffset, 8);
  bytes.at(data_at + 100) ^= 0x40;
  write_bytes(path, bytes);
  auto reader = SnapshotReader::open(path);
  REQUIRE(reader);  // data is not read at open
  Target t;
  std::mutex mu;  // on_error runs on the handler's thread
  int errors = 0;
  std::string message;
  auto lazy = LazyRam::start(**reader, 0, *t.file, t.ranges, {.fill = false}, [&](const std::string& m) {
    std::lock_guard lock(mu);
    if (errors++ == 0) message = m;
  });
  REQUIRE(lazy);
  const uint64_t first = (*reader)->extents()[0].offset;
  REQUIRE(finishes(**lazy, [&] { (void)*reinterpret_cast<volatile uint8_t*>(t.host(first)); }));
  {
    std::lock_guard lock(mu);
    CHECK(errors == 1);
    CHECK_THAT(message, Catch::Contains("checksum") && Catch::Contains("extent 0"));
  }
  // Everything else is unregistered: touches elsewhere return at once.
  REQUIRE(finishes(**lazy, [&] { (void)*reinterpret_cast<volatile uint8_t*>(t.host(kSpace - kPage)); }));
  CHECK(!(*lazy)->complete());
  CHECK_THAT((*lazy)->stats().error, Catch::Contains("checksum"));
  std::lock_guard lock(mu);
  CHECK(errors == 1);
}

TEST_CASE("lazy RAM refuses ranges that hold data or that the snapshot's extents overrun", "[lazy][snapshot]") {
  SnapshotDir dir;
  const std::string path = dir.path("lazy.kvmsnap");
  write_lazy_sample(path, 9);
  auto reader = SnapshotReader::open(path);
  REQUIRE(reader);
  Target t;
  *t.host(kSpace - kPage) = 1;
  auto held = LazyRam::start(**reader, 0, *t.file, t.ranges, {}, nullptr);
  REQUIRE(!held);
  CHECK_THAT(held.error().message, Catch::Contains("is not fresh"));
  Target small;
  std::vector<SpaceRange> half = {small.ranges[0]};
  auto overrun = LazyRam::start(**reader, 0, *small.file, half, {}, nullptr);
  REQUIRE(!overrun);
  CHECK_THAT(overrun.error().message, Catch::Contains("lies outside guest RAM"));
  auto nospace = LazyRam::start(**reader, 3, *small.file, small.ranges, {}, nullptr);
  REQUIRE(!nospace);
  CHECK_THAT(nospace.error().message, Catch::Contains("has no space 3"));
}

// Hidden: what one fault costs by extent size, a host thread reading 64 MiB
// of data in order with no filler (every extent loaded on demand). The
// figures in docs/snapshot.md ("Restoring") come from here.
TEST_CASE("lazy RAM: the cost of an on-demand load by extent size", "[.lazy-chunks]") {
  constexpr uint64_t kSize = 64 * kMiB;
  SnapshotDir dir;
  auto src = make_file();
  auto r = src->allocate(kSize, UsageKind::Anonymous);
  REQUIRE(r);
  auto span = src->map_internal(*r);
  REQUIRE(span);
  for (uint64_t i = 0; i < kSize / 8; i++) reinterpret_cast<uint64_t*>(span->data())[i] = i | 1;
  for (uint64_t cap : {uint64_t{4} << 10, uint64_t{64} << 10, uint64_t{256} << 10, uint64_t{512} << 10,
                       uint64_t{1} << 20, uint64_t{2} << 20}) {
    const std::string path = dir.path(std::to_string(cap) + ".kvmsnap");
    {
      auto w = SnapshotWriter::create(path, {.extent_cap = cap});
      REQUIRE(w);
      REQUIRE((*w)->add_space(0, SpaceKind::kRam, "ram", kSize));
      const std::vector<SpaceRange> ranges = {{0, *r}};
      REQUIRE(save_ranges(*src, 0, ranges, **w));
      REQUIRE((*w)->finish());
    }
    auto reader = SnapshotReader::open(path);
    REQUIRE(reader);
    auto dst = make_file();
    auto d = dst->allocate(kSize, UsageKind::Anonymous);
    REQUIRE(d);
    REQUIRE(dst->map_internal(*d));
    auto lazy = LazyRam::start(**reader, 0, *dst, {{0, *d}}, {.fill = false}, [](const std::string& m) { FAIL(m); });
    REQUIRE(lazy);
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t sum = 0;
    const uint8_t* base = dst->base() + d->start;
    for (uint64_t at = 0; at < kSize; at += kPage) sum += *reinterpret_cast<const volatile uint64_t*>(base + at);
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    const LazyStats s = (*lazy)->stats();
    WARN("extent " << (cap >> 10) << " KiB: " << us / double(kSize / kPage) << " us a page, " << s.faults
                   << " faults, " << us / double(s.faults) << " us a fault, " << double(kSize) / us << " MB/s");
    CHECK(sum != 0);
    (*lazy)->stop();
    dst->dec_ref(*d);
  }
  src->dec_ref(*r);
}
