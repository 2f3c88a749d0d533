// Hidden: what saving and loading cost here, beside a raw sequential write
// of the same bytes in the same run. Not part of `make test` (it writes
// hundreds of MiB); run it with build/kvmem-tests "[.snapshot-speed]".
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <vector>

#include <catch2/catch.hpp>

#include "memory/memory_file.h"
#include "snapshot/memory.h"
#include "tests/snapshot/snapshot_helpers.h"

using namespace kvmem;
using namespace kvmem::test;

namespace {

double seconds_of(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST_CASE("snapshot save and load speed", "[.snapshot-speed]") {
  constexpr uint64_t kMiB = 1 << 20;
  for (uint64_t space_mib : {uint64_t{256}}) {
    for (int percent : {10, 50}) {
      SnapshotDir dir;
      REQUIRE(dir.ok());
      const uint64_t space = space_mib * kMiB;
      auto mf = MemoryFile::create({.reservation = uint64_t{1} << 34});
      REQUIRE(mf);
      auto r = (*mf)->allocate(space, UsageKind::Anonymous);
      REQUIRE(r);
      auto span = *(*mf)->map_internal(*r);
      // Committed in runs of 1 MiB: `percent` of them, one page in 16 of
      // each run left zero.
      uint64_t nonzero = 0;
      for (uint64_t run = 0; run < space / kMiB; run++) {
        if (run % 100 >= static_cast<uint64_t>(percent)) continue;
        for (uint64_t p = 0; p < kMiB / 4096; p++) {
          uint8_t* page = span.data() + run * kMiB + p * 4096;
          if (p % 16 == 15) {
            page[0] = 0;
          } else {
            fill_page(page, run * 256 + p, 5);
            nonzero += 4096;
          }
        }
      }
      const std::string path = dir.path("s");
      SnapshotStats stats;
      auto w = SnapshotWriter::create(path);
      REQUIRE(w);
      REQUIRE((*w)->add_space(0, SpaceKind::kRam, "ram", space));
      REQUIRE(save_ranges(**mf, 0, std::vector<SpaceRange>{{0, *r}}, **w));
      auto s = (*w)->finish();
      REQUIRE(s);
      stats = *s;
      // The floor: the same bytes, one sequential write and an fsync.
      const double raw = seconds_of([&] {
        int fd = ::open(dir.path("raw").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        REQUIRE(fd >= 0);
        uint64_t left = stats.data_bytes;
        for (uint64_t at = 0; left > 0;) {
          const uint64_t n = std::min<uint64_t>(left, 8 * kMiB);
          REQUIRE(::write(fd, span.data() + at, n) == static_cast<ssize_t>(n));
          at += n;
          left -= n;
        }
        REQUIRE(::fsync(fd) == 0);
        ::close(fd);
      });
      auto reader = SnapshotReader::open(path);
      REQUIRE(reader);
      auto dst = MemoryFile::create({.reservation = uint64_t{1} << 34});
      REQUIRE(dst);
      auto d = (*dst)->allocate(space, UsageKind::Anonymous);
      REQUIRE(d);
      LoadStats loaded;
      const double load = seconds_of([&] {
        auto l = load_extents(**reader, 0, **dst, std::vector<SpaceRange>{{0, *d}});
        REQUIRE(l);
        loaded = *l;
      });
      CHECK(loaded.bytes == nonzero);
      const double mb = static_cast<double>(stats.data_bytes) / 1e6;
      std::printf(
          "snapshot %3lu MiB, %2d%% committed: %6.1f MB non-zero, %5lu extents, %4lu zero pages, file %8.1f KB "
          "(+%.2f%%); save %6.1f ms (%6.0f MB/s), raw write %6.1f ms (%6.0f MB/s); load %6.1f ms (%6.0f MB/s)\n",
          static_cast<unsigned long>(space_mib), percent, mb, static_cast<unsigned long>(stats.extents),
          static_cast<unsigned long>(stats.zero_pages), static_cast<double>(stats.file_size) / 1e3,
          100.0 * static_cast<double>(stats.file_size - stats.data_bytes) / static_cast<double>(stats.data_bytes),
          stats.seconds * 1e3, mb / stats.seconds, raw * 1e3, mb / raw, load * 1e3, mb / load);
      (*mf)->dec_ref(*r);
      (*dst)->dec_ref(*d);
    }
  }
}
