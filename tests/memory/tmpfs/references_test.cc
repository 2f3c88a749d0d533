// References: the file holds one per page of its data map, a mapping one per
// page it translated. When the last holder lets go the pages go back, and
// the Tmpfs usage returns to where it was.
#include <catch2/catch.hpp>

#include "tests/memory/tmpfs/tmpfs_helpers.h"

using namespace kvmem;
using namespace kvmem::tmpfs;
using kvmem::test::pattern;

namespace {

constexpr uint64_t kPage = 4096;

uint64_t tmpfs_usage(MemoryFile& m) {
  m.wait_for_reclaim();
  REQUIRE(m.update_usage());
  return m.usage().of(UsageKind::Tmpfs);
}

}  // namespace

TEST_CASE("unmapped and unlinked, a file's pages go back and Tmpfs usage returns to its baseline",
          "[tmpfs]") {
  auto memory = test::make_memory();
  const uint64_t baseline = tmpfs_usage(*memory);
  FileSystem fs(*memory);
  auto file = fs.create("r", true);
  REQUIRE(file.has_value());
  REQUIRE((*file)->write(0, pattern(64 * kPage, 1)) == 64 * kPage);
  auto m = HostMapping::create(*file, 0, 64 * kPage, true);
  REQUIRE(m.has_value());
  std::vector<uint8_t> buf(64 * kPage);
  REQUIRE((*m)->read(0, buf));
  CHECK(tmpfs_usage(*memory) == baseline + 64 * kPage);
  memory->check_invariants();
  (*file)->check_invariants();

  REQUIRE(fs.unlink("r"));
  std::weak_ptr<RegularFile> weak = *file;
  file->reset();
  // The mapping holds the file, and its translations the pages.
  REQUIRE(!weak.expired());
  REQUIRE((*m)->read(0, buf));
  CHECK(buf == pattern(64 * kPage, 1));
  CHECK(tmpfs_usage(*memory) == baseline + 64 * kPage);
  memory->check_invariants();

  m->reset();
  CHECK(weak.expired());
  CHECK(tmpfs_usage(*memory) == baseline);
  memory->check_invariants();
}

TEST_CASE("a mapping's translated pages outlive unlink; truncate-invalidate drops them",
          "[tmpfs]") {
  auto memory = test::make_memory();
  const uint64_t baseline = tmpfs_usage(*memory);
  FileSystem fs(*memory);
  auto file = *fs.create("k", true);
  REQUIRE(file->write(0, pattern(8 * kPage, 2)) == 8 * kPage);
  auto m = std::move(*HostMapping::create(file, 0, 8 * kPage, false));
  std::vector<uint8_t> buf(8 * kPage);
  REQUIRE(m->read(0, buf));
  REQUIRE(fs.unlink("k"));
  CHECK(tmpfs_usage(*memory) == baseline + 8 * kPage);

  // The truncate tells the mapping first, which drops its references; then
  // the file drops its own: nothing holds the pages any more.
  REQUIRE(file->truncate(0));
  CHECK(m->cached_bytes() == 0);
  CHECK(file->stat().allocated == 0);
  CHECK(tmpfs_usage(*memory) == baseline);
  memory->check_invariants();
  file->check_invariants();

  // Written again, the pages are new and count again, until the end.
  REQUIRE(file->write(0, pattern(2 * kPage, 3)) == 2 * kPage);
  REQUIRE(m->read(0, std::span(buf).first(2 * kPage)));
  CHECK(tmpfs_usage(*memory) == baseline + 2 * kPage);
  m.reset();
  file.reset();
  CHECK(tmpfs_usage(*memory) == baseline);
  memory->check_invariants();
}

TEST_CASE("a punched page a mapping still holds goes back when the mapping lets go", "[tmpfs]") {
  auto memory = test::make_memory();
  const uint64_t baseline = tmpfs_usage(*memory);
  auto file = std::make_shared<RegularFile>(*memory, "p", true);
  REQUIRE(file->write(0, pattern(4 * kPage, 4)) == 4 * kPage);
  auto m = std::move(*HostMapping::create(file, 0, 4 * kPage, true));
  std::vector<uint8_t> buf(4 * kPage);
  REQUIRE(m->read(0, buf));
  REQUIRE(file->fallocate(FallocateMode::kPunchHole, 0, 2 * kPage));
  CHECK(tmpfs_usage(*memory) == baseline + 2 * kPage);
  m.reset();
  file.reset();
  CHECK(tmpfs_usage(*memory) == baseline);
  memory->check_invariants();
}
