// What read and write cost against pread/pwrite on a real memfd, for 4 KiB
// and 64 KiB pieces, into pages already there and into fresh ones. Prints
// figures and asserts none (hidden: run with "[tmpfs-cost]").
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include <catch2/catch.hpp>

#include "tests/memory/tmpfs/tmpfs_helpers.h"

using namespace kvmem;
using namespace kvmem::tmpfs;

namespace {

using Clock = std::chrono::steady_clock;

double ns_per(Clock::time_point t0, uint64_t n) {
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / double(n);
}

}  // namespace

TEST_CASE("read and write cost about what pread and pwrite on a memfd cost", "[.][tmpfs-cost]") {
  auto memory = test::make_memory();
  constexpr uint64_t kTotal = 64 << 20;
  std::printf("%-8s %-6s %12s %12s %8s\n", "op", "piece", "memfd ns", "tmpfs ns", "ratio");
  for (uint64_t piece : {uint64_t{4096}, uint64_t{65536}}) {
    std::vector<uint8_t> buf = test::pattern(piece, 1);
    const uint64_t n = kTotal / piece;
    for (const char* op : {"write new", "write", "read"}) {
      const std::string o = op;
      int fd = memfd_create("cost", MFD_CLOEXEC);
      REQUIRE(fd >= 0);
      auto file = std::make_shared<RegularFile>(*memory, "cost", true);
      if (o != "write new") {
        for (uint64_t i = 0; i < n; i++) {
          REQUIRE(pwrite(fd, buf.data(), piece, static_cast<off_t>(i * piece)) == (ssize_t)piece);
          REQUIRE(file->write(i * piece, buf) == piece);
        }
      }
      auto t0 = Clock::now();
      for (uint64_t i = 0; i < n; i++) {
        const off_t at = static_cast<off_t>(i * piece);
        ssize_t r = o == "read" ? pread(fd, buf.data(), piece, at) : pwrite(fd, buf.data(), piece, at);
        REQUIRE(r == (ssize_t)piece);
      }
      const double real = ns_per(t0, n);
      t0 = Clock::now();
      for (uint64_t i = 0; i < n; i++) {
        auto r = o == "read" ? file->read(i * piece, buf) : file->write(i * piece, buf);
        REQUIRE(r == piece);
      }
      const double ours = ns_per(t0, n);
      // ratio: memfd time over ours; above 1, ours is faster.
      std::printf("%-9s %6llu %12.0f %12.0f %8.2f\n", op, (unsigned long long)piece, real, ours,
                  real / ours);
      close(fd);
      file.reset();
      memory->wait_for_reclaim();
    }
  }
}

TEST_CASE("where a fresh write's time goes: allocation, population, copy", "[.][tmpfs-cost]") {
  auto memory = test::make_memory();
  for (uint64_t piece : {uint64_t{4096}, uint64_t{65536}}) {
    const uint64_t n = (64 << 20) / piece;
    std::vector<uint8_t> buf = test::pattern(piece, 1);
    std::vector<FileRange> got(n);
    auto t0 = Clock::now();
    for (uint64_t i = 0; i < n; i++) got[i] = *memory->allocate(piece, UsageKind::Tmpfs);
    const double alloc = ns_per(t0, n);
    t0 = Clock::now();
    for (uint64_t i = 0; i < n; i++) {
      auto span = *memory->map_internal(got[i]);
      REQUIRE(madvise(span.data(), span.size(), MADV_POPULATE_WRITE) == 0);
    }
    const double populate = ns_per(t0, n);
    t0 = Clock::now();
    for (uint64_t i = 0; i < n; i++) std::memcpy(memory->map_internal(got[i])->data(), buf.data(), piece);
    const double copy = ns_per(t0, n);
    t0 = Clock::now();
    for (uint64_t i = 0; i < n; i++) memory->dec_ref(got[i]);
    const double free = ns_per(t0, n);
    memory->wait_for_reclaim();
    // What write() does instead: fresh pages written with pwrite on the
    // memory file's fd, which fills each new page once instead of zeroing
    // it first; mapping them costs later.
    for (uint64_t i = 0; i < n; i++) got[i] = *memory->allocate(piece, UsageKind::Tmpfs);
    t0 = Clock::now();
    for (uint64_t i = 0; i < n; i++)
      REQUIRE(pwrite(memory->fd(), buf.data(), piece, static_cast<off_t>(got[i].start)) ==
              static_cast<ssize_t>(piece));
    const double fd_write = ns_per(t0, n);
    t0 = Clock::now();
    for (uint64_t i = 0; i < n; i++) {
      auto span = *memory->map_internal(got[i]);
      REQUIRE(madvise(span.data(), span.size(), MADV_POPULATE_WRITE) == 0);
    }
    const double map_after = ns_per(t0, n);
    std::printf("  mapping pages pwrite filled, with MADV_POPULATE_WRITE: %.0f ns\n", map_after);
    for (uint64_t i = 0; i < n; i++) memory->dec_ref(got[i]);
    memory->wait_for_reclaim();
    std::printf("piece %6llu: allocate %.0f ns, populate %.0f ns, copy %.0f ns, dec_ref %.0f ns; "
                "pwrite to the memory file instead of populate + copy %.0f ns\n",
                (unsigned long long)piece, alloc, populate, copy, free, fd_write);
  }
}
