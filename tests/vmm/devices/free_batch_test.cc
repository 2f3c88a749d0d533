// The checks and the punching behind free-page reports, without KVM: guest
// memory on a real MemoryFile, the kernel's st_blocks as the oracle.
#include <cerrno>
#include <cstring>

#include <catch2/catch.hpp>

#include "tests/vmm/memory/ram_helpers.h"

#include "guest/abi.h"
#include "guest/layout.h"
#include "vmm/devices/free_reports.h"
#include "vmm/memory/guest_memory.h"

using namespace kvmem;

namespace {

test::Ram make_guest(uint64_t size, uint64_t unit) { return test::make_ram(size, unit, 1ull << 32); }

void write_pages(GuestMemory& m, uint64_t gpa, uint64_t length) {
  for (uint64_t a = gpa; a < gpa + length; a += 4096) std::memset(m.host(GuestAddr(a)), 0x5a, 4096);
}

}  // namespace

TEST_CASE("free ranges are checked for alignment, size, wrap, bounds and the boot area", "[free]") {
  test::Ram g = make_guest(8 << 20, 2 << 20);
  struct Case {
    uint64_t gpa, length;
    int64_t want;
  } cases[] = {
      {0x200000, 0x1000, 0},          {0x7ff000, 0x1000, 0},          {0x200000, 0x600000, 0},
      {0x200000, 0, -EINVAL},         {0x200800, 0x1000, -EINVAL},    {0x200000, 0x800, -EINVAL},
      {~0ull - 0xfff, 0x2000, -EINVAL}, {0x800000, 0x1000, -EFAULT},  {0x7ff000, 0x2000, -EFAULT},
      {1ull << 63, 0x1000, -EFAULT},  {0, 0x1000, -EPERM},            {0xff000, 0x2000, -EPERM},
  };
  for (const auto& c : cases) {
    INFO(fmt::format("[{:#x}, +{:#x})", c.gpa, c.length));
    CHECK(check_free_range(*g.memory, c.gpa, c.length) == c.want);
  }
}

TEST_CASE("neighbouring ranges are punched as one run; every range keeps its own status", "[free]") {
  test::Ram g = make_guest(16 << 20, 2 << 20);
  write_pages(*g.memory, 2 << 20, 8 << 20);
  auto before = g.file->total_usage();
  REQUIRE(before);
  FreeStats stats;
  int64_t st[6] = {9, 9, 9, 9, 9, 9};
  {
    FreeBatch batch(*g.memory, stats);
    batch.add(0x200000, 0x1000, &st[0]);
    batch.add(0x201000, 0x1000, &st[1]);   // continues the run
    batch.add(0x202800, 0x1000, &st[2]);   // refused: unaligned; the run goes on after it
    batch.add(0x202000, 0x1000, &st[3]);   // continues the run
    batch.add(0x400000, 0x200000, &st[4]); // a new run across an allocation boundary (2 MiB units)
    batch.add(0, 0x1000, &st[5]);          // refused: boot area
  }
  CHECK(st[0] == 0);
  CHECK(st[1] == 0);
  CHECK(st[2] == -EINVAL);
  CHECK(st[3] == 0);
  CHECK(st[4] == 0);
  CHECK(st[5] == -EPERM);
  CHECK(stats.ranges == 6);
  CHECK(stats.invalid_ranges == 2);
  CHECK(stats.bytes_reported == 0x203000);
  CHECK(stats.bytes_decommitted == 0x203000);
  auto after = g.file->total_usage();
  REQUIRE(after);
  CHECK(*before - *after == 0x203000);  // the kernel agrees, to the page
  // Freed pages read zero; their neighbours keep what was written.
  CHECK(g.memory->host(GuestAddr(0x200000))[0] == 0);
  CHECK(g.memory->host(GuestAddr(0x202fff))[0] == 0);
  CHECK(g.memory->host(GuestAddr(0x203000))[0] == 0x5a);
  CHECK(g.memory->host(GuestAddr(0x5fffff))[0] == 0);
  CHECK(g.memory->host(GuestAddr(0x600000))[0] == 0x5a);
}

TEST_CASE("report_free_list writes each status back and returns how many were punched", "[free]") {
  test::Ram g = make_guest(8 << 20, 2 << 20);
  write_pages(*g.memory, 2 << 20, 1 << 20);
  abi::FreeReport list[3] = {{0x200000, 0x1000, 7, 0}, {0x900000, 0x1000, 7, 0}, {0x201000, 0x1000, 7, 0}};
  std::memcpy(g.memory->host(GuestAddr(guest::layout::kReportListAddr)), list, sizeof list);
  FreeStats stats;
  CHECK(report_free_list(*g.memory, stats, guest::layout::kReportListAddr, 3) == 2);
  std::memcpy(list, g.memory->host(GuestAddr(guest::layout::kReportListAddr)), sizeof list);
  CHECK(list[0].status == 0);
  CHECK(list[1].status == -EFAULT);
  CHECK(list[2].status == 0);
  CHECK(report_free_list(*g.memory, stats, guest::layout::kReportListAddr, 0) == -EINVAL);
  CHECK(report_free_list(*g.memory, stats, guest::layout::kReportListAddr, abi::kReportMax + 1) == -EINVAL);
  CHECK(report_free_list(*g.memory, stats, (8 << 20) - 16, 1) == -EFAULT);
  CHECK(report_free_list(*g.memory, stats, guest::layout::kReportListAddr + 4, 1) == -EFAULT);
}

TEST_CASE("guest RAM in 2 MiB units is one segment per contiguous run of allocations", "[free]") {
  MemoryFileOptions o;
  o.reservation = 1ull << 32;
  auto file = MemoryFile::create(o);
  REQUIRE(file);
  // A hole in the file: an allocation held between two guests' RAM.
  auto a = GuestMemory::create(**file, 4 << 20, 2 << 20);
  REQUIRE(a);
  auto spacer = (*file)->allocate(2 << 20, UsageKind::System);
  REQUIRE(spacer);
  auto b = GuestMemory::create(**file, 4 << 20, 2 << 20);
  REQUIRE(b);
  a->reset();  // a's RAM goes back to the pool: [0, 4M) of the file is free again
  (*file)->wait_for_reclaim();
  auto c = GuestMemory::create(**file, 8 << 20, 2 << 20);  // fills the 4 MiB hole, then goes on past b
  REQUIRE(c);
  auto ranges = (*c)->file_ranges();
  REQUIRE(ranges.size() == 2);
  CHECK(ranges[0] == FileRange(0, 4 << 20));
  CHECK((*c)->file_offset(GuestAddr(4 << 20)) == ranges[1].start_addr());
  CHECK((*c)->read(GuestRange(0x3ffffc, 0x400004)).size() == 8);  // a read across the two segments
  (*file)->dec_ref(*spacer);
}

TEST_CASE("a guest's share of commit, by the allocator's count, matches the kernel's", "[free]") {
  test::Ram g = make_guest(16 << 20, 2 << 20);
  write_pages(*g.memory, 2 << 20, 6 << 20);
  FreeStats stats;
  REQUIRE(free_range(*g.memory, stats, 3 << 20, 1 << 20) == 0);
  REQUIRE(g.file->update_usage());
  uint64_t ours = 0;
  for (const FileRange& r : g.memory->file_ranges()) ours += g.file->committed_in(r);
  auto kernel = g.memory->resident_bytes();
  REQUIRE(kernel);
  CHECK(ours == 5 << 20);
  CHECK(*kernel == ours);
  CHECK(g.file->committed_in(FileRange(0, 1 << 20)) == 0);  // nothing written there
}
