// What a snapshot needs of a file: image() (size, seals and data map at
// one moment, each run referenced) and fill_holes() (fresh, uncommitted
// pages for a restore to pwrite into).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/memory/tmpfs/tmpfs_helpers.h"

using namespace kvmem;
using namespace kvmem::tmpfs;
using kvmem::test::pattern;
using kvmem::test::read_back;

namespace {

constexpr uint64_t kPage = 4096;

// Does the memory file hold data (SEEK_DATA) anywhere in r?
bool holds_data(const MemoryFile& m, FileRange r) {
  const off_t d = lseek(m.fd(), static_cast<off_t>(r.start), SEEK_DATA);
  return d >= 0 && static_cast<uint64_t>(d) < r.end;
}

void drop(MemoryFile& m, const FileImage& img) {
  for (const Translation& t : img.runs) m.dec_ref(t.file_range());
}

}  // namespace

TEST_CASE("a file's image is its size, seals and data map, each run referenced", "[tmpfs][snapshot]") {
  auto memory = test::make_memory();
  auto file = std::make_shared<RegularFile>(*memory, "f", true);
  REQUIRE(file->write(0, pattern(kPage, 1)));
  REQUIRE(file->write(3 * kPage, pattern(2 * kPage, 2)));
  REQUIRE(file->truncate(5 * kPage + 10));
  REQUIRE(file->add_seals(kSealGrow | kSealShrink));
  FileImage img = file->image();
  CHECK(img.size == 5 * kPage + 10);
  CHECK(img.seals == (kSealGrow | kSealShrink));
  uint64_t bytes = 0;
  std::vector<MappableRange> map;
  for (const Translation& t : img.runs) {
    bytes += t.source.length();
    if (!map.empty() && map.back().end == t.source.start) map.back().end = t.source.end;
    else map.push_back(t.source);
  }
  CHECK(map == std::vector<MappableRange>{MappableRange(0, kPage), MappableRange(3 * kPage, 5 * kPage)});
  CHECK(bytes == file->stat().allocated);
  // The image's references keep the pages after the file lets them go.
  file.reset();
  memory->wait_for_reclaim();
  auto first = memory->map_internal(img.runs.front().file_range());
  REQUIRE(first);
  CHECK(std::vector<uint8_t>(first->begin(), first->begin() + kPage) == pattern(kPage, 1));
  memory->check_invariants();
  drop(*memory, img);
  memory->wait_for_reclaim();
  memory->check_invariants();
}

TEST_CASE("fill_holes gives a file's holes fresh pages that hold no data and read zero", "[tmpfs][snapshot]") {
  auto memory = test::make_memory();
  RegularFile file(*memory, "f", true);
  REQUIRE(file.write(kPage, pattern(kPage, 3)));
  REQUIRE(file.truncate(8 * kPage));
  REQUIRE(file.add_seals(kSealWrite));  // not a write: seals do not apply
  REQUIRE(file.fill_holes(MappableRange(0, 4 * kPage)));
  CHECK(file.stat().allocated == 4 * kPage);
  CHECK(file.size() == 8 * kPage);
  FileImage img = file.image();
  for (const Translation& t : img.runs)
    if (t.source.start != kPage) CHECK_FALSE(holds_data(*memory, t.file_range()));
  CHECK(read_back(file, 0, kPage) == std::vector<uint8_t>(kPage, 0));
  CHECK(read_back(file, kPage, kPage) == pattern(kPage, 3));
  drop(*memory, img);
  file.check_invariants();

  auto code = [](const Status& s) { return s ? 0 : s.error().code; };
  CHECK(code(file.fill_holes(MappableRange(8 * kPage, 9 * kPage))) == EINVAL);  // past the end
  CHECK(code(file.fill_holes(MappableRange(0, 100))) == EINVAL);               // unaligned
  CHECK(code(file.fill_holes(MappableRange(kPage, kPage))) == EINVAL);         // empty
  CHECK(file.stat().allocated == 4 * kPage);
}
