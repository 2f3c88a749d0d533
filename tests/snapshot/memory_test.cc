// save_ranges and load_extents on real MemoryFiles: what is saved is what
// the file held, what is loaded reads back byte for byte, and holes stay
// holes (lseek(SEEK_DATA) and st_blocks are the oracle).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include <catch2/catch.hpp>

#include "base/mapping.h"
#include "memory/memory_file.h"
#include "memory/page_map.h"
#include "snapshot/memory.h"
#include "tests/snapshot/snapshot_helpers.h"

using namespace kvmem;
using namespace kvmem::test;

namespace {

constexpr uint64_t kPage = 4096, kMiB = 1 << 20;

std::unique_ptr<MemoryFile> make_file() {
  auto f = MemoryFile::create({.reservation = uint64_t{1} << 32});
  REQUIRE(f.has_value());
  return std::move(*f);
}

// The kernel's answer: does the page at file offset `at` hold data?
bool holds_data(const MemoryFile& mf, uint64_t at) {
  off_t d = lseek(mf.fd(), static_cast<off_t>(at), SEEK_DATA);
  return d >= 0 && static_cast<uint64_t>(d) < at + kPage;
}

// The bytes of [at, at + n) of the memfd, read with pread (which, unlike a
// read through the mapping, does not commit holes).
std::vector<uint8_t> pread_bytes(const MemoryFile& mf, uint64_t at, uint64_t n) {
  std::vector<uint8_t> out(n);
  REQUIRE(pread(mf.fd(), out.data(), n, static_cast<off_t>(at)) == static_cast<ssize_t>(n));
  return out;
}

// What each page of the 4 MiB test space holds.
enum class Page { Hole, Zero, Fallocated, Data };

Page page_kind(uint64_t p) {
  if (p % 7 == 3) return Page::Zero;          // touched, all zero
  if (p % 11 == 5) return Page::Fallocated;   // committed by fallocate, never touched
  if ((p / 16) % 3 == 1) return Page::Hole;   // runs of never-touched pages
  return Page::Data;
}

}  // namespace

TEST_CASE("data_extents lists the pages a memory file holds, page-rounded and merged", "[snapshot][memory]") {
  auto mf = make_file();
  auto r = mf->allocate(2 * kMiB, UsageKind::Anonymous);
  REQUIRE(r);
  auto span = mf->map_internal(*r);
  REQUIRE(span);
  CHECK(mf->data_extents(*r)->empty());
  (*span)[5 * kPage + 17] = 1;  // one byte: the whole page
  (*span)[6 * kPage] = 1;
  (*span)[100 * kPage] = 0;     // a zero write still makes the page data
  REQUIRE(fallocate(mf->fd(), 0, static_cast<off_t>(r->start + 200 * kPage), static_cast<off_t>(kPage)) == 0);
  auto e = mf->data_extents(*r);
  REQUIRE(e);
  const std::vector<FileRange> want = {FileRange(r->start + 5 * kPage, r->start + 7 * kPage),
                                       FileRange(r->start + 100 * kPage, r->start + 101 * kPage)};
  CHECK(*e == want);  // the fallocated page is not data
  // A sub-range cuts the extents.
  auto part = mf->data_extents(FileRange(r->start + 6 * kPage, r->start + 100 * kPage));
  REQUIRE(part);
  CHECK(*part == std::vector<FileRange>{FileRange(r->start + 6 * kPage, r->start + 7 * kPage)});
  CHECK(!mf->data_extents(FileRange(r->start + 1, r->start + kPage)));
  CHECK_THAT(mf->data_extents(FileRange(0, mf->total_size() + kPage)).error().message,
             Catch::Contains("beyond the file's"));
  mf->dec_ref(*r);
}

TEST_CASE("saved memory loads into fresh allocations byte for byte, and holes stay holes", "[snapshot][memory]") {
  SnapshotDir dir;
  REQUIRE(dir.ok());
  const std::string path = dir.path("mem.kvmsnap");
  constexpr uint64_t kSpace = 4 * kMiB, kPages = kSpace / kPage;

  // The space is two allocations that do not touch in the file.
  auto src = make_file();
  auto a = src->allocate(kSpace / 2, UsageKind::Anonymous);
  auto gap = src->allocate(2 * kMiB, UsageKind::Anonymous);
  auto b = src->allocate(kSpace / 2, UsageKind::Anonymous);
  REQUIRE((a && gap && b));
  REQUIRE(a->end != b->start);
  const std::vector<SpaceRange> src_ranges = {{0, *a}, {kSpace / 2, *b}};
  auto file_of = [&](uint64_t p) { return p < kPages / 2 ? a->start + p * kPage : b->start + (p - kPages / 2) * kPage; };
  uint64_t nonzero = 0;
  for (uint64_t p = 0; p < kPages; p++) {
    const uint64_t at = file_of(p);
    switch (page_kind(p)) {
      case Page::Hole: break;
      case Page::Zero: (*src->map_internal(FileRange(at, at + kPage)))[0] = 0; break;
      case Page::Fallocated: REQUIRE(fallocate(src->fd(), 0, static_cast<off_t>(at), static_cast<off_t>(kPage)) == 0); break;
      case Page::Data:
        fill_page(src->map_internal(FileRange(at, at + kPage))->data(), p, 9);
        nonzero++;
        break;
    }
  }
  // Data in the gap allocation is not part of the space.
  std::memset(src->map_internal(*gap)->data(), 0xee, gap->length());

  SnapshotStats stats;
  {
    auto w = SnapshotWriter::create(path, {.extent_cap = 64 * 1024});
    REQUIRE(w);
    REQUIRE((*w)->add_space(0, SpaceKind::kRam, "ram", kSpace));
    auto st = save_ranges(*src, 0, src_ranges, **w);
    REQUIRE(st);
    auto s = (*w)->finish();
    REQUIRE(s);
    stats = *s;
  }
  INFO(stats.extents << " extents, " << stats.zero_pages << " zero pages skipped");
  CHECK(stats.data_bytes == nonzero * kPage);
  // Only committed pages were read: the zero ones, not holes or fallocated.
  uint64_t zero = 0;
  for (uint64_t p = 0; p < kPages; p++) zero += page_kind(p) == Page::Zero;
  CHECK(stats.zero_pages == zero);
  CHECK(stats.offered_bytes == (nonzero + zero) * kPage);

  // Load into a fresh file, laid out differently: 8 pieces of 512 KiB in
  // reverse order in the file, so extents straddle pieces.
  auto dst = make_file();
  auto reader = SnapshotReader::open(path);
  REQUIRE(reader);
  std::vector<FileRange> pieces(8);
  for (auto& piece : pieces) {
    auto r = dst->allocate(kSpace / 8, UsageKind::Anonymous, {.alignment = kPage});
    REQUIRE(r);
    piece = *r;
  }
  std::vector<SpaceRange> dst_ranges;
  for (uint64_t i = 0; i < 8; i++) dst_ranges.push_back({i * (kSpace / 8), pieces[7 - i]});
  auto dst_of = [&](uint64_t p) {
    const uint64_t i = p / (kPages / 8);
    return pieces[7 - i].start + (p % (kPages / 8)) * kPage;
  };
  auto loaded = load_extents(**reader, 0, *dst, dst_ranges);
  REQUIRE(loaded);
  CHECK(loaded->bytes == nonzero * kPage);
  CHECK(loaded->extents == stats.extents);

  // Holes stay holes: the kernel holds exactly the non-zero pages.
  for (uint64_t p = 0; p < kPages; p++) {
    INFO("page " << p);
    CHECK(holds_data(*dst, dst_of(p)) == (page_kind(p) == Page::Data));
  }
  CHECK(*dst->total_usage() == nonzero * kPage);
  // And byte for byte (pread, so the holes are not committed by looking).
  for (uint64_t p = 0; p < kPages; p++) {
    INFO("page " << p);
    const auto got = pread_bytes(*dst, dst_of(p), kPage);
    const auto want = pread_bytes(*src, file_of(p), kPage);
    CHECK(got == want);
  }
  for (const FileRange& r : {*a, *gap, *b}) src->dec_ref(r);
  for (const FileRange& r : pieces) dst->dec_ref(r);
  src->check_invariants();
  dst->check_invariants();
}

TEST_CASE("load_extents refuses ranges that hold data or do not cover the extents", "[snapshot][memory]") {
  SnapshotDir dir;
  REQUIRE(dir.ok());
  const std::string path = dir.path("s");
  REQUIRE(!write_sample(path).empty());  // RAM: 64 KiB, data in pages 0-2 and 5-9
  auto reader = SnapshotReader::open(path);
  REQUIRE(reader);
  auto mf = make_file();
  auto r = mf->allocate(64 * 1024, UsageKind::Anonymous, {.alignment = kPage});
  REQUIRE(r);

  // Not covering page 9.
  auto st = load_extents(**reader, 0, *mf, std::vector<SpaceRange>{{0, FileRange(r->start, r->start + 9 * kPage)}});
  REQUIRE(!st);
  CHECK_THAT(st.error().message, Catch::Contains("extent 4 [0x9000, 0xa000) is not covered by the ranges given"));
  // A space the snapshot does not have.
  st = load_extents(**reader, 1, *mf, std::vector<SpaceRange>{{0, *r}});
  REQUIRE(!st);
  CHECK_THAT(st.error().message, Catch::Contains("the snapshot has no space 1"));
  // Unsorted ranges.
  st = load_extents(**reader, 0, *mf,
                    std::vector<SpaceRange>{{kPage, FileRange(r->start, r->start + kPage)},
                                            {0, FileRange(r->start + kPage, r->start + 2 * kPage)}});
  REQUIRE(!st);
  CHECK_THAT(st.error().message, Catch::Contains("is not after the range before it"));
  // Beyond the memory file.
  st = load_extents(**reader, 0, *mf, std::vector<SpaceRange>{{0, FileRange(mf->total_size(), mf->total_size() + kPage)}});
  REQUIRE(!st);
  CHECK_THAT(st.error().message, Catch::Contains("beyond the memory file's"));
  // Not fresh.
  (*mf->map_internal(*r))[3 * kPage] = 1;
  st = load_extents(**reader, 0, *mf, std::vector<SpaceRange>{{0, *r}});
  REQUIRE(!st);
  CHECK_THAT(st.error().message, Catch::Contains("is not fresh") && Catch::Contains("holds data"));
  mf->dec_ref(*r);
}

TEST_CASE("load_extents stops at an extent whose data changed, naming it", "[snapshot][memory]") {
  SnapshotDir dir;
  REQUIRE(dir.ok());
  const std::string path = dir.path("s");
  REQUIRE(!write_sample(path).empty());
  auto bytes = read_bytes(path);
  bytes[get_le(bytes, extent_entry(bytes, 1) + extent_field::kDataOffset, 8)] ^= 1;
  write_bytes(path, bytes);
  auto reader = SnapshotReader::open(path);
  REQUIRE(reader);
  auto mf = make_file();
  auto r = mf->allocate(64 * 1024, UsageKind::Anonymous, {.alignment = kPage});
  REQUIRE(r);
  auto st = load_extents(**reader, 0, *mf, std::vector<SpaceRange>{{0, *r}});
  REQUIRE(!st);
  CHECK_THAT(st.error().message, Catch::Contains("extent 1 (space 0 [0x2000, 0x3000)) has checksum"));
  mf->dec_ref(*r);
}

TEST_CASE("anonymous memory saves its populated non-zero pages and loads them straight back", "[snapshot][memory]") {
  SnapshotDir dir;
  REQUIRE(dir.ok());
  constexpr uint64_t kBytes = 256 * kPage;
  auto src = Mapping::create("source", kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
  auto dst = Mapping::create("target", kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
  REQUIRE(src);
  REQUIRE(dst);
  (void)madvise(src->data(), kBytes, MADV_NOHUGEPAGE);
  (void)madvise(dst->data(), kBytes, MADV_NOHUGEPAGE);
  for (uint64_t p : {0, 1, 2, 40, 41, 200, 255}) fill_page(src->data() + p * kPage, p, 7);
  std::memset(src->data() + 100 * kPage, 0, kPage);  // populated, zero: dropped
  std::span<const uint8_t> all(src->data(), kBytes);
  auto populated = populated_ranges(all);
  REQUIRE(populated);
  CHECK(populated->size() == 5);
  const std::string path = dir.path("anon");
  {
    auto w = SnapshotWriter::create(path);
    REQUIRE(w);
    REQUIRE((*w)->add_space(0, SpaceKind::kRam, "ram", kBytes));
    REQUIRE(save_host_ranges(0, all, *populated, **w));
    auto stats = (*w)->finish();
    REQUIRE(stats);
    CHECK(stats->data_bytes == 7 * kPage);
    CHECK(stats->zero_pages == 1);
  }
  auto reader = SnapshotReader::open(path);
  REQUIRE(reader);
  auto loaded = load_extents_into(**reader, 0, std::span<uint8_t>(dst->data(), kBytes));
  REQUIRE(loaded);
  CHECK(loaded->bytes == 7 * kPage);
  // Only the extents' pages were touched in the target.
  auto touched = populated_ranges(std::span<const uint8_t>(dst->data(), kBytes));
  REQUIRE(touched);
  uint64_t bytes = 0;
  for (const HostRange& r : *touched) bytes += r.length();
  CHECK(bytes == 7 * kPage);
  CHECK(std::memcmp(src->data(), dst->data(), kBytes) == 0);

  // Ranges out of order or outside the memory, and memory smaller than the space.
  auto w = SnapshotWriter::create(dir.path("bad"));
  REQUIRE(w);
  REQUIRE((*w)->add_space(0, SpaceKind::kRam, "ram", kBytes));
  const uint64_t base = reinterpret_cast<uint64_t>(src->data());
  const std::vector<HostRange> outside{HostRange(base + kBytes, base + kBytes + kPage)};
  auto st = save_host_ranges(0, all, outside, **w);
  REQUIRE_FALSE(st);
  CHECK_THAT(st.error().message, Catch::Contains("outside the space's memory"));
  auto small = load_extents_into(**reader, 0, std::span<uint8_t>(dst->data(), kPage));
  REQUIRE_FALSE(small);
  CHECK_THAT(small.error().message, Catch::Contains("the memory given for it 0x1000"));
}
