// What a decommit (a free report) gives back on each RAM backing
// (vmm/memory/backing.h): anon's MADV_DONTNEED, hugetlb's rounding inward
// to whole 2 MiB pages, memfd-thp's huge mappings and their punch; and a
// backing the host cannot give refused with the setting that would enable
// it. memfd-thp and hugetlb are turned on for the test when the host lacks
// them and the test runs as root (backing_host.h), and put back after.
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/support.h"
#include "tests/vmm/guest_runner.h"
#include "tests/vmm/memory/backing_host.h"
#include "tests/vmm/memory/ram_helpers.h"
#include "vmm/memory/backing.h"
#include "vmm/memory/guest_memory.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

constexpr uint64_t kKiB = 1 << 10;
using test::file_usage;
using test::resident;

constexpr uint64_t kMiB = 1 << 20;

uint64_t committed(const GuestMemory& m) {
  auto r = m.committed_bytes();
  REQUIRE(r);
  return *r;
}

uint64_t released(GuestMemory& m, GuestRange r) {
  auto n = m.decommit(r);
  INFO("decommit " << r.to_string());
  REQUIRE(n);
  return *n;
}

// [at, at + length) of RAM filled with `byte`.
void fill(GuestMemory& m, uint64_t at, uint64_t length, uint8_t byte) {
  for (uint64_t done = 0; done < length;) {
    std::span<uint8_t> run = m.ram_run(GuestAddr(at + done), length - done);
    std::memset(run.data(), byte, run.size());
    done += run.size();
  }
}

bool reads_as(const GuestMemory& m, uint64_t at, uint64_t length, char byte) {
  return m.read(GuestRange(at, at + length)) == std::string(length, byte);
}

// A backing's refusal names the setting that would enable it.
void check_refusal(RamBacking b, uint64_t bytes, const char* setting) {
  auto f = make_ram_file(b, bytes);
  REQUIRE_FALSE(f);
  CHECK(f.error().code == ENOTSUP);
  CHECK_THAT(f.error().message, Catch::Contains(std::string("backing ") + ram_backing_name(b)) &&
                                    Catch::Contains(setting));
}

}  // namespace

// ---- anon ----

TEST_CASE("anonymous RAM reads zeros where it was decommitted, and holds exactly that much less", "[backing]") {
  auto file = make_ram_file(RamBacking::kAnon, 8 * kMiB);
  REQUIRE(file);
  CHECK((*file)->page_size() == 4096);  // a plain memfd one, for windows only
  auto made = GuestMemory::create_anon(**file, 8 * kMiB);
  REQUIRE(made);
  GuestMemory& m = **made;
  CHECK(m.anonymous());
  CHECK(m.file_ranges().empty());
  CHECK(resident(m) == 0);

  fill(m, 1 * kMiB, 4 * kMiB, 0xab);
  CHECK(resident(m) == 4 * kMiB);
  CHECK(committed(m) == resident(m));
  // Nothing of RAM is in the memory file.
  CHECK(file_usage(**file) == 0);

  // An odd range: 1 MiB and a page, starting a page into a 2 MiB block.
  const GuestRange r(2 * kMiB + 4 * kKiB, 3 * kMiB + 8 * kKiB);
  CHECK(released(m, r) == r.length());
  CHECK(resident(m) == 4 * kMiB - r.length());
  CHECK(committed(m) == resident(m));
  CHECK(reads_as(m, r.start, r.length(), '\0'));
  CHECK(reads_as(m, r.start - 4 * kKiB, 4 * kKiB, '\xab'));
  CHECK(reads_as(m, r.end, 4 * kKiB, '\xab'));
  CHECK(file_usage(**file) == 0);
  // Those reads mapped the shared zero page, which mincore counts as
  // resident (it costs the host nothing): decommit it again.
  CHECK(released(m, r) == r.length());
  CHECK(resident(m) == 4 * kMiB - r.length());
}

TEST_CASE("anonymous RAM refuses to decommit a range that is not all RAM", "[backing]") {
  auto file = make_ram_file(RamBacking::kAnon, 4 * kMiB);
  REQUIRE(file);
  auto made = GuestMemory::create_anon(**file, 4 * kMiB);
  REQUIRE(made);
  GuestMemory& m = **made;
  fill(m, 0, 4 * kMiB, 0x5a);
  struct Case {
    GuestRange r;
    int errno_;
  };
  for (const Case& c : {Case{GuestRange(2 * kMiB, 6 * kMiB), EFAULT},  // runs past the end of RAM
                        Case{GuestRange(4 * kMiB, 4 * kMiB + 4096), EFAULT}, Case{GuestRange(1ull << 40, (1ull << 40) + 4096), EFAULT}}) {
    INFO(c.r.to_string());
    auto n = m.decommit(c.r);
    REQUIRE_FALSE(n);
    CHECK(n.error().code == c.errno_);
    CHECK_THAT(n.error().message, Catch::Contains("not all RAM") && Catch::Contains(c.r.to_string()));
  }
  // Nothing was given back.
  CHECK(resident(m) == 4 * kMiB);
  CHECK(reads_as(m, 2 * kMiB, 2 * kMiB, '\x5a'));
}

// ---- hugetlb ----

TEST_CASE("hugetlb's memory file maps whole chunks, so its pool need is the file's size", "[backing]") {
  // state: RAM bytes / expected: free pool bytes a fresh hugetlb file needs
  struct Case {
    uint64_t ram, pool;
  };
  for (const Case& c : {Case{0, 16 * kMiB}, Case{2 * kMiB, 16 * kMiB}, Case{8 * kMiB, 16 * kMiB},
                        Case{16 * kMiB, 16 * kMiB}, Case{18 * kMiB, 32 * kMiB}, Case{40 * kMiB, 64 * kMiB},
                        Case{1ull << 30, 1ull << 30}}) {
    INFO(c.ram);
    CHECK(hugetlb_pool_bytes(c.ram) == c.pool);
  }
  // More RAM than any host has: refused, by the count, naming the setting.
  auto why = ram_backing_unavailable(RamBacking::kHugetlb, 1ull << 40);
  REQUIRE(why);
  CHECK_THAT(*why, Catch::Contains("backing hugetlb") && Catch::Contains("nr_hugepages"));
}

TEST_CASE("hugetlb RAM is refused, not half made, when the pool holds RAM's pages but not the file's", "[backing]") {
  // Exactly 4 free pages: what 8 MiB of RAM takes, half what its file maps.
  const long free_now = [] {
    std::ifstream f("/proc/meminfo");
    for (std::string k; f >> k;) {
      long v = 0;
      f >> v;
      if (k == "HugePages_Free:") return v;
    }
    return -1L;
  }();
  if (free_now > 4) {
    test::skipped(RamBacking::kHugetlb, "a pool of exactly 4 free huge pages", fmt::format("the host has {}", free_now));
    return;
  }
  const std::string nr_before = test::first_line(test::kNrHugepagesPath);
  {
    auto s = HostSetup::apply({.hugetlb_bytes = 8 * kMiB});
    if (!s) {
      test::skipped(RamBacking::kHugetlb, "a pool of exactly 4 free huge pages", s.error().message);
      return;
    }
    auto why = ram_backing_unavailable(RamBacking::kHugetlb, 8 * kMiB);
    REQUIRE(why);
    CHECK_THAT(*why, Catch::Contains("needs 8 free 2 MiB huge pages") && Catch::Contains("has 4"));
    check_refusal(RamBacking::kHugetlb, 8 * kMiB, "nr_hugepages");
    // What the refusal saves a caller from: the file's first mapping
    // reserves 8 pages, so the RAM cannot be made.
    auto file = MemoryFile::create({.reservation = 1ull << 30, .huge = HugePages::Hugetlb});
    REQUIRE(file);
    auto ram = GuestMemory::create(**file, 8 * kMiB, 8 * kMiB);
    REQUIRE_FALSE(ram);
    CHECK(ram.error().code == ENOMEM);
    CHECK(ram_backing_unavailable(RamBacking::kHugetlb, 0));  // any amount needs a chunk's worth
  }
  CHECK(test::first_line(test::kNrHugepagesPath) == nr_before);
}

TEST_CASE("hugetlb decommit releases only the whole 2 MiB pages inside the range", "[backing]") {
  test::BackingHost host(RamBacking::kHugetlb, 8 * kMiB, "hugetlb's decommit rounding (only its refusal is tested)");
  if (!host.ok()) {
    check_refusal(RamBacking::kHugetlb, 8 * kMiB, "nr_hugepages");
    return;
  }
  test::Ram ram = test::make_backed_ram(RamBacking::kHugetlb, 8 * kMiB);
  GuestMemory& m = *ram.memory;
  REQUIRE(ram.file->page_size() == 2 * kMiB);
  CHECK(m.file_offset(GuestAddr(0)).value % (2 * kMiB) == 0);
  CHECK(reinterpret_cast<uintptr_t>(m.host(GuestAddr(0))) % (2 * kMiB) == 0);
  fill(m, 0, 8 * kMiB, 0x11);
  CHECK(file_usage(*ram.file) == 8 * kMiB);

  // state: RAM filled, then each row in turn / input: the range /
  // expected: bytes released, the file's usage after.
  struct Case {
    const char* what;
    GuestRange r;
    uint64_t released, usage;
  };
  const Case cases[] = {
      {"a 4 KiB range releases nothing", GuestRange(4 * kMiB, 4 * kMiB + 4 * kKiB), 0, 8 * kMiB},
      {"a 2 MiB range off the page grid releases nothing", GuestRange(5 * kMiB, 7 * kMiB), 0, 8 * kMiB},
      {"an aligned 4 MiB range releases two pages", GuestRange(4 * kMiB, 8 * kMiB), 4 * kMiB, 4 * kMiB},
      {"a misaligned 3 MiB range releases the one page inside it", GuestRange(1 * kMiB, 4 * kMiB), 2 * kMiB,
       2 * kMiB},
  };
  for (const Case& c : cases) {
    INFO(c.what << ": " << c.r.to_string());
    CHECK(released(m, c.r) == c.released);
    CHECK(file_usage(*ram.file) == c.usage);
  }
  // What each row left: [0, 2M) untouched, [2M, 4M) and [4M, 8M) zeros,
  // and nothing read back into a hole yet.
  CHECK(reads_as(m, 0, 2 * kMiB, '\x11'));
  CHECK(reads_as(m, 2 * kMiB, 6 * kMiB, '\0'));
  CHECK(committed(m) == file_usage(*ram.file));
}

TEST_CASE("a hugetlb guest's 4 KiB frees keep their data, and its 2 MiB frees give pages back", "[backing][kvm]") {
  REQUIRE_KVM();
  test::BackingHost host(RamBacking::kHugetlb, 16 * kMiB, "a hugetlb guest's free reports");
  if (!host.ok()) return;
  const json seed = {{"seed", 7}};
  const json config = {
      {"memory", "16M"},
      {"backing", "hugetlb"},
      {"program",
       {{{"op", "fill"}, {"at", "2M"}, {"length", "8M"}, {"pattern", seed}},
        {{"op", "free"}, {"at", "2M"}, {"length", "4M"}, {"granule", "4K"}},
        {{"op", "verify"}, {"at", "2M"}, {"length", "8M"}, {"pattern", seed}},
        {{"op", "free"}, {"at", "2M"}, {"length", "4M"}, {"granule", "2M"}},
        {{"op", "verify"}, {"at", "2M"}, {"length", "4M"}, {"pattern", "zero"}},
        {{"op", "verify"}, {"at", "6M"}, {"length", "4M"}, {"pattern", seed}}}}};
  auto g = test::run_guest(config);
  REQUIRE(g.setup_error == "");
  INFO(g.result.message);
  CHECK(g.result.process_exit_code() == 0);
  // Both steps were accepted; only the 2 MiB one released anything (runs
  // of 64 4 KiB ranges are 256 KiB, inside one huge page each).
  CHECK(g.result.free_ranges_invalid == 0);
  CHECK(g.result.bytes_reported_free == 8 * kMiB);
  CHECK(g.result.bytes_decommitted == 4 * kMiB);
}

// ---- memfd-thp ----

TEST_CASE("memfd-thp RAM is advised huge, maps 2 MiB pages once touched, and a decommit punches", "[backing]") {
  if (ram_backing_unavailable(RamBacking::kMemfdThp)) check_refusal(RamBacking::kMemfdThp, 8 * kMiB, "shmem_enabled");
  test::BackingHost host(RamBacking::kMemfdThp, 8 * kMiB, "memfd-thp's huge mappings and punch");
  if (!host.ok()) return;
  test::Ram ram = test::make_backed_ram(RamBacking::kMemfdThp, 8 * kMiB);
  GuestMemory& m = *ram.memory;
  CHECK(ram.file->thp());
  // THP can map a 2 MiB page only where host address and file offset agree
  // modulo 2 MiB.
  CHECK(reinterpret_cast<uintptr_t>(m.host(GuestAddr(0))) % (2 * kMiB) == m.file_offset(GuestAddr(0)).value % (2 * kMiB));
  const auto flags = test::smaps_of(m.host(GuestAddr(0))).at("VmFlags");
  INFO("VmFlags: " << flags);
  CHECK_THAT(" " + flags + " ", Catch::Contains(" hg "));

  fill(m, 2 * kMiB, 4 * kMiB, 0x77);
  const uint64_t pmd_kb = test::smaps_kb(test::smaps_of(m.host(GuestAddr(2 * kMiB))), "ShmemPmdMapped");
  CHECK(pmd_kb >= 4 * 1024);
  CHECK(file_usage(*ram.file) == 4 * kMiB);

  // A whole huge page goes back whole.
  CHECK(released(m, GuestRange(2 * kMiB, 4 * kMiB)) == 2 * kMiB);
  CHECK(file_usage(*ram.file) == 2 * kMiB);
  CHECK(reads_as(m, 2 * kMiB, 2 * kMiB, '\0'));
  // That read committed the hole again, as a huge page: shmem fills a read
  // fault with a fresh page, and under THP a 2 MiB one.
  CHECK(file_usage(*ram.file) == 4 * kMiB);
  CHECK(released(m, GuestRange(2 * kMiB, 4 * kMiB)) == 2 * kMiB);
  // A page of one reads zeros after, its neighbours keep their data. The
  // host may keep holding it: the kernel splits the huge page to free it,
  // or, when the split fails, only zeroes the page in place (6.18 here did
  // either, from run to run: then the 4 KiB "released" stays committed).
  CHECK(released(m, GuestRange(5 * kMiB, 5 * kMiB + 4 * kKiB)) == 4 * kKiB);
  const uint64_t usage = file_usage(*ram.file);
  INFO("usage after a 4 KiB punch in a huge page: " << usage);
  CHECK((usage == 2 * kMiB || usage == 2 * kMiB - 4 * kKiB));
  CHECK(reads_as(m, 5 * kMiB, 4 * kKiB, '\0'));
  CHECK(reads_as(m, 4 * kMiB, 1 * kMiB, '\x77'));
  CHECK(reads_as(m, 5 * kMiB + 4 * kKiB, 1 * kMiB - 4 * kKiB, '\x77'));
}

TEST_CASE("a memfd-thp guest's free report punches its RAM", "[backing][kvm]") {
  REQUIRE_KVM();
  test::BackingHost host(RamBacking::kMemfdThp, 16 * kMiB, "a memfd-thp guest's free reports");
  if (!host.ok()) return;
  const json seed = {{"seed", 4}};
  const json config = {{"memory", "16M"},
                       {"backing", "memfd-thp"},
                       {"program",
                        {{{"op", "fill"}, {"at", "2M"}, {"length", "8M"}, {"pattern", seed}},
                         {{"op", "free"}, {"at", "2M"}, {"length", "4M"}, {"granule", "4K"}},
                         {{"op", "verify"}, {"at", "2M"}, {"length", "4M"}, {"pattern", "zero"}},
                         {{"op", "verify"}, {"at", "6M"}, {"length", "4M"}, {"pattern", seed}}}}};
  auto g = test::create_guest(config);
  REQUIRE(g.setup_error == "");
  CHECK(g.file->thp());
  g.result = g.vm->run(nullptr);
  INFO(g.result.message);
  CHECK(g.result.process_exit_code() == 0);
  CHECK(g.result.bytes_decommitted == 4 * kMiB);
}

// ---- the host's settings ----

TEST_CASE("host settings turned on for a backing test are back as they were after it", "[backing]") {
  const std::string thp = test::first_line(test::kShmemEnabledPath), nr = test::first_line(test::kNrHugepagesPath);
  {
    test::BackingHost a(RamBacking::kMemfdThp, 2 * kMiB, "turning shmem THP on");
    if (a.changed_host()) CHECK(!ram_backing_unavailable(RamBacking::kMemfdThp));
  }
  {
    test::BackingHost b(RamBacking::kHugetlb, 2 * kMiB, "reserving huge pages");
    if (b.changed_host()) CHECK(!ram_backing_unavailable(RamBacking::kHugetlb, 2 * kMiB));
  }
  CHECK(test::first_line(test::kShmemEnabledPath) == thp);
  CHECK(test::first_line(test::kNrHugepagesPath) == nr);
  // memfd and anon never need the host changed.
  test::BackingHost m(RamBacking::kMemfd, 1ull << 30, "memfd");
  test::BackingHost n(RamBacking::kAnon, 1ull << 30, "anon");
  CHECK((m.ok() && n.ok() && !m.changed_host() && !n.changed_host()));
}
