// HostMapping: lazy translation, its cache, its errors, and what a file's
// truncate and punch do to it.
#include <cerrno>

#include <catch2/catch.hpp>

#include "tests/memory/tmpfs/tmpfs_helpers.h"

using namespace kvmem;
using namespace kvmem::tmpfs;
using kvmem::test::pattern;

namespace {

constexpr uint64_t kPage = 4096;

struct Fixture {
  std::unique_ptr<MemoryFile> memory = test::make_memory();
  std::shared_ptr<RegularFile> file = std::make_shared<RegularFile>(*memory, "m", true);
};

}  // namespace

TEST_CASE("a first access translates the whole mapping up to the end of the file", "[tmpfs]") {
  Fixture f;
  REQUIRE(f.file->truncate(5 * kPage + 1));
  auto m = HostMapping::create(f.file, kPage, 16 * kPage, true);
  REQUIRE(m.has_value());
  auto data = pattern(10, 1);
  REQUIRE((*m)->write(100, data));
  CHECK((*m)->cached_bytes() == 5 * kPage);  // file pages [1, 6)
  CHECK(f.file->stat().allocated == 5 * kPage);
  CHECK(test::read_back(*f.file, kPage + 100, 10) == data);
  f.file->check_invariants();
}

TEST_CASE("writes to the file show through the mapping and the mapping's through the file",
          "[tmpfs]") {
  Fixture f;
  auto data = pattern(3 * kPage, 2);
  REQUIRE(f.file->write(0, data) == data.size());
  auto m = HostMapping::create(f.file, 0, 3 * kPage, true);
  REQUIRE(m.has_value());
  std::vector<uint8_t> got(3 * kPage);
  REQUIRE((*m)->read(0, got));
  CHECK(got == data);
  auto more = pattern(50, 3);
  REQUIRE((*m)->write(kPage - 20, more));
  CHECK(test::read_back(*f.file, kPage - 20, 50) == more);
}

TEST_CASE("an access past the end fails with EFAULT naming the file and its size", "[tmpfs]") {
  Fixture f;
  REQUIRE(f.file->write(0, pattern(kPage + 5, 4)) == kPage + 5);
  auto m = HostMapping::create(f.file, 0, 4 * kPage, true);
  REQUIRE(m.has_value());
  std::vector<uint8_t> buf(kPage);
  CHECK((*m)->read(kPage, buf));  // the partial last page is there
  Status st = (*m)->read(2 * kPage, buf);
  REQUIRE(!st);
  CHECK(st.error().code == EFAULT);
  CHECK(st.error().message.find("beyond the end of file m (size 4101)") != std::string::npos);
  // Straddling: the bytes before the faulting page are written, as a real
  // store would have been before its SIGBUS.
  auto data = pattern(2 * kPage, 5);
  CHECK(!(*m)->write(kPage, data));
  CHECK(test::read_back(*f.file, kPage, 5) == std::vector<uint8_t>(data.begin(), data.begin() + 5));
}

TEST_CASE("accesses outside the mapping are EFAULT and writes to a read-only one EACCES",
          "[tmpfs]") {
  Fixture f;
  REQUIRE(f.file->truncate(4 * kPage));
  auto m = HostMapping::create(f.file, 0, 2 * kPage - 7, false);  // rounded up to 2 pages
  REQUIRE(m.has_value());
  std::vector<uint8_t> buf(10);
  CHECK((*m)->read(2 * kPage - 10, buf));
  CHECK((*m)->read(2 * kPage - 9, buf).error().code == EFAULT);
  CHECK((*m)->write(0, buf).error().code == EACCES);
}

TEST_CASE("mapping a file refuses a bad range and a writable mapping of a write-sealed file",
          "[tmpfs]") {
  Fixture f;
  CHECK(HostMapping::create(f.file, 100, kPage, false).error().code == EINVAL);
  CHECK(HostMapping::create(f.file, 0, 0, false).error().code == EINVAL);
  CHECK(HostMapping::create(f.file, kPage, UINT64_MAX - 10, false).error().code == EINVAL);
  REQUIRE(f.file->add_seals(kSealFutureWrite));
  CHECK(HostMapping::create(f.file, 0, kPage, true).error().code == EPERM);
  CHECK(HostMapping::create(f.file, 0, kPage, false).has_value());
  CHECK(f.file->stat().mappings == 0);  // the read-only one went with its pointer
}

TEST_CASE("a shrinking truncate drops the mapping's translations; growing back reads zeros",
          "[tmpfs]") {
  Fixture f;
  REQUIRE(f.file->write(0, pattern(4 * kPage, 6)) == 4 * kPage);
  auto m = HostMapping::create(f.file, 0, 4 * kPage, true);
  REQUIRE(m.has_value());
  std::vector<uint8_t> buf(4 * kPage);
  REQUIRE((*m)->read(0, buf));
  CHECK((*m)->cached_bytes() == 4 * kPage);
  REQUIRE(f.file->truncate(kPage + 1));
  CHECK((*m)->cached_bytes() == 2 * kPage);
  CHECK((*m)->read(3 * kPage, std::span(buf).first(1)).error().code == EFAULT);
  REQUIRE(f.file->truncate(4 * kPage));
  REQUIRE((*m)->read(0, buf));
  for (uint64_t i = kPage + 1; i < 4 * kPage; i++) REQUIRE(buf[i] == 0);
  f.file->check_invariants();
}

TEST_CASE("a punched hole reads as zero through a mapping that had translated it", "[tmpfs]") {
  Fixture f;
  REQUIRE(f.file->write(0, pattern(4 * kPage, 7)) == 4 * kPage);
  auto m = HostMapping::create(f.file, 0, 4 * kPage, true);
  REQUIRE(m.has_value());
  std::vector<uint8_t> buf(4 * kPage);
  REQUIRE((*m)->read(0, buf));
  REQUIRE(f.file->fallocate(FallocateMode::kPunchHole, kPage, 2 * kPage));
  CHECK((*m)->cached_bytes() == 2 * kPage);
  REQUIRE((*m)->read(0, buf));
  for (uint64_t i = kPage; i < 3 * kPage; i++) REQUIRE(buf[i] == 0);
  CHECK(buf[0] != 0);
}

TEST_CASE("FUTURE_WRITE leaves an existing writable mapping writable, holes and all", "[tmpfs]") {
  Fixture f;
  REQUIRE(f.file->truncate(2 * kPage));
  auto m = HostMapping::create(f.file, 0, 2 * kPage, true);
  REQUIRE(m.has_value());
  REQUIRE(f.file->add_seals(kSealFutureWrite));
  auto data = pattern(10, 8);
  CHECK((*m)->write(kPage, data));
  CHECK(test::read_back(*f.file, kPage, 10) == data);
  CHECK(f.file->write(0, data).error().code == EPERM);
}

TEST_CASE("bytes a mapping writes past the end stay until a truncate, even to the same size",
          "[tmpfs]") {
  // As a memfd on 6.18: growing (truncate, write, fallocate) shows them; a
  // truncate to any size not larger zeroes the rest of the last page.
  Fixture f;
  REQUIRE(f.file->truncate(100));
  auto m = std::move(*HostMapping::create(f.file, 0, kPage, true));
  const std::vector<uint8_t> x{0x78};
  REQUIRE(m->write(200, x));
  REQUIRE(f.file->truncate(300));
  CHECK(test::read_back(*f.file, 200, 1) == x);
  REQUIRE(f.file->fallocate(FallocateMode::kDefault, 0, 400));
  CHECK(test::read_back(*f.file, 200, 1) == x);
  REQUIRE(f.file->truncate(400));  // the same size
  CHECK(test::read_back(*f.file, 200, 1) == x);  // inside the file: kept
  REQUIRE(m->write(500, x));
  REQUIRE(f.file->truncate(400));
  REQUIRE(f.file->truncate(600));
  CHECK(test::read_back(*f.file, 500, 1) == std::vector<uint8_t>{0});
}
