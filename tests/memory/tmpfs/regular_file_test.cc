// RegularFile, one operation and one error at a time. The differential test
// compares the same operations with the kernel's memfd at random; these pin
// down each rule by name.
#include <cerrno>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/memory/test_helpers.h"
#include "tests/memory/tmpfs/tmpfs_helpers.h"

using namespace kvmem;
using namespace kvmem::tmpfs;
using kvmem::test::pattern;
using kvmem::test::read_back;

namespace {

constexpr uint64_t kPage = 4096;

struct Fixture {
  std::unique_ptr<MemoryFile> memory = test::make_memory();
  std::shared_ptr<RegularFile> file = std::make_shared<RegularFile>(*memory, "f", true);
};

// A MappingSpace that only counts what it is told.
struct CountingSpace : MappingSpace {
  std::vector<MappableRange> invalidated;
  void invalidate(uint64_t, MappableRange r) override { invalidated.push_back(r); }
};

int code_of(const Status& s) { return s ? 0 : s.error().code; }
template <class T>
int code_of(const Result<T>& r) {
  return r ? 0 : r.error().code;
}

}  // namespace

TEST_CASE("a new file is empty, unsealed, and reads nothing", "[tmpfs]") {
  Fixture f;
  CHECK(f.file->size() == 0);
  CHECK(f.file->seals() == 0);
  std::vector<uint8_t> buf(10, 7);
  CHECK(f.file->read(0, buf) == 0);
  CHECK(f.file->stat().allocated == 0);
  f.file->check_invariants();
}

TEST_CASE("a file made without allow_seals starts sealed with SEAL and takes no seal", "[tmpfs]") {
  Fixture f;
  RegularFile plain(*f.memory, "plain", false);
  CHECK(plain.seals() == kSealSeal);
  CHECK(code_of(plain.add_seals(kSealGrow)) == EPERM);
  CHECK(code_of(plain.add_seals(0)) == EPERM);
}

TEST_CASE("a write grows the file, allocates only its pages, and holes read as zero", "[tmpfs]") {
  Fixture f;
  auto data = pattern(100, 1);
  REQUIRE(f.file->write(3 * kPage + 10, data) == 100);
  CHECK(f.file->size() == 3 * kPage + 110);
  CHECK(f.file->stat().allocated == kPage);
  auto all = read_back(*f.file, 0, 4 * kPage);
  REQUIRE(all.size() == 3 * kPage + 110);
  for (uint64_t i = 0; i < 3 * kPage + 10; i++) REQUIRE(all[i] == 0);
  CHECK(std::equal(data.begin(), data.end(), all.begin() + 3 * kPage + 10));
  f.file->check_invariants();
}

TEST_CASE("reads stop at the end of the file and return 0 past it", "[tmpfs]") {
  Fixture f;
  REQUIRE(f.file->write(0, pattern(5000, 2)) == 5000);
  std::vector<uint8_t> buf(8192);
  CHECK(f.file->read(4000, buf) == 1000);
  CHECK(f.file->read(5000, buf) == 0);
  CHECK(f.file->read(1 << 20, buf) == 0);
}

TEST_CASE("a zero-length write succeeds and changes nothing, even when sealed", "[tmpfs]") {
  Fixture f;
  REQUIRE(f.file->add_seals(kSealWrite | kSealGrow));
  CHECK(f.file->write(1 << 20, std::span<const uint8_t>()) == 0);
  CHECK(f.file->size() == 0);
}

TEST_CASE("offsets past the largest file offset are EINVAL for read and write", "[tmpfs]") {
  Fixture f;
  std::vector<uint8_t> two(2);
  CHECK(code_of(f.file->write(kMaxFileSize, two)) == EINVAL);
  CHECK(code_of(f.file->write(kMaxFileSize + 1, std::span<const uint8_t>())) == EINVAL);
  CHECK(code_of(f.file->read(kMaxFileSize - 1, two)) == EINVAL);
  CHECK(code_of(f.file->read(kMaxFileSize + 5, std::span<uint8_t>())) == EINVAL);
  // The very last byte can be written, as on a memfd.
  CHECK(f.file->write(kMaxFileSize - 1, std::span(two).first(1)) == 1);
  CHECK(f.file->size() == kMaxFileSize);
  CHECK(f.file->stat().allocated == kPage);
  f.file->check_invariants();
}

TEST_CASE("truncate shrinking drops the pages past the end and zeroes the last page's tail",
          "[tmpfs]") {
  Fixture f;
  REQUIRE(f.file->write(0, pattern(4 * kPage, 3)) == 4 * kPage);
  REQUIRE(f.file->truncate(kPage + 100));
  CHECK(f.file->stat().allocated == 2 * kPage);
  REQUIRE(f.file->truncate(4 * kPage));  // growing allocates nothing
  CHECK(f.file->stat().allocated == 2 * kPage);
  auto all = read_back(*f.file, 0, 4 * kPage);
  for (uint64_t i = kPage + 100; i < 4 * kPage; i++) REQUIRE(all[i] == 0);
  CHECK(all[kPage + 99] != 0);
  f.file->check_invariants();
}

TEST_CASE("truncate past the largest size is EINVAL; to it, allowed", "[tmpfs]") {
  Fixture f;
  CHECK(code_of(f.file->truncate(kMaxFileSize + 1)) == EINVAL);
  CHECK(f.file->truncate(kMaxFileSize).has_value());
  CHECK(f.file->size() == kMaxFileSize);
}

TEST_CASE("fallocate allocates: default grows the file, keep-size stops at its end", "[tmpfs]") {
  Fixture f;
  REQUIRE(f.file->fallocate(FallocateMode::kDefault, 100, 3 * kPage));
  CHECK(f.file->size() == 100 + 3 * kPage);
  CHECK(f.file->stat().allocated == 4 * kPage);
  REQUIRE(f.file->fallocate(FallocateMode::kKeepSize, 0, 16 * kPage));
  CHECK(f.file->size() == 100 + 3 * kPage);
  CHECK(f.file->stat().allocated == 4 * kPage);
  CHECK(read_back(*f.file, 0, 4 * kPage) == std::vector<uint8_t>(100 + 3 * kPage, 0));
  f.file->check_invariants();
}

TEST_CASE("fallocate refuses a zero or negative length with EINVAL and a too-far end with EFBIG",
          "[tmpfs]") {
  Fixture f;
  for (FallocateMode m : {FallocateMode::kDefault, FallocateMode::kKeepSize,
                          FallocateMode::kPunchHole}) {
    CHECK(code_of(f.file->fallocate(m, 0, 0)) == EINVAL);
    CHECK(code_of(f.file->fallocate(m, kMaxFileSize + 1, 1)) == EINVAL);
    CHECK(code_of(f.file->fallocate(m, 0, kMaxFileSize + 1)) == EINVAL);
    CHECK(code_of(f.file->fallocate(m, kMaxFileSize, 1)) == EFBIG);
  }
}

TEST_CASE("punching a hole drops whole pages, zeroes the partial edges, and keeps the size",
          "[tmpfs]") {
  Fixture f;
  auto data = pattern(4 * kPage, 4);
  REQUIRE(f.file->write(0, data) == 4 * kPage);
  REQUIRE(f.file->fallocate(FallocateMode::kPunchHole, 100, 2 * kPage));
  CHECK(f.file->size() == 4 * kPage);
  CHECK(f.file->stat().allocated == 3 * kPage);  // page 1 went; pages 0 and 2 were cut
  auto all = read_back(*f.file, 0, 4 * kPage);
  for (uint64_t i = 0; i < 4 * kPage; i++) {
    const bool punched = i >= 100 && i < 100 + 2 * kPage;
    REQUIRE(all[i] == (punched ? 0 : data[i]));
  }
  // Inside one page: zeroes only that piece.
  REQUIRE(f.file->fallocate(FallocateMode::kPunchHole, 3 * kPage + 10, 20));
  all = read_back(*f.file, 3 * kPage, kPage);
  CHECK(all[9] == data[3 * kPage + 9]);
  CHECK(all[10] == 0);
  CHECK(all[29] == 0);
  CHECK(all[30] == data[3 * kPage + 30]);
  f.file->check_invariants();
}

TEST_CASE("each seal refuses what the kernel refuses", "[tmpfs]") {
  // state (seals, size 2 pages) / operation / expected errno, as measured on
  // a memfd of kernel 6.18 (docs/tmpfs.md).
  struct Case {
    uint32_t seals;
    const char* op;
    int expected;
  };
  const std::vector<Case> cases = {
      {kSealShrink, "truncate smaller", EPERM},    {kSealShrink, "truncate larger", 0},
      {kSealShrink, "punch", 0},                   {kSealGrow, "truncate larger", EPERM},
      {kSealGrow, "truncate smaller", 0},          {kSealGrow, "write inside", 0},
      {kSealGrow, "write past the end", EPERM},    {kSealGrow, "fallocate past the end", EPERM},
      {kSealGrow, "keep-size past the end", EPERM}, {kSealGrow, "fallocate inside", 0},
      {kSealWrite, "write inside", EPERM},         {kSealWrite, "punch", EPERM},
      {kSealWrite, "fallocate past the end", 0},   {kSealWrite, "truncate smaller", 0},
      {kSealWrite, "map writable", EPERM},         {kSealWrite, "map read-only", 0},
      {kSealFutureWrite, "write inside", EPERM},   {kSealFutureWrite, "punch", EPERM},
      {kSealFutureWrite, "map writable", EPERM},   {kSealFutureWrite, "truncate larger", 0},
      {kSealSeal, "add seals", EPERM},             {kSealSeal, "write inside", 0},
  };
  for (const Case& c : cases) {
    Fixture f;
    REQUIRE(f.file->write(0, pattern(2 * kPage, 5)) == 2 * kPage);
    REQUIRE(f.file->add_seals(c.seals));
    CountingSpace space;
    const std::string op = c.op;
    int got = -1;
    auto data = pattern(100, 6);
    if (op == "truncate smaller") got = code_of(f.file->truncate(kPage));
    if (op == "truncate larger") got = code_of(f.file->truncate(3 * kPage));
    if (op == "punch") got = code_of(f.file->fallocate(FallocateMode::kPunchHole, 0, kPage));
    if (op == "write inside") got = code_of(f.file->write(0, data));
    if (op == "write past the end") got = code_of(f.file->write(2 * kPage, data));
    if (op == "fallocate past the end")
      got = code_of(f.file->fallocate(FallocateMode::kDefault, kPage, 2 * kPage));
    if (op == "keep-size past the end")
      got = code_of(f.file->fallocate(FallocateMode::kKeepSize, kPage, 2 * kPage));
    if (op == "fallocate inside")
      got = code_of(f.file->fallocate(FallocateMode::kDefault, 0, kPage));
    if (op == "add seals") got = code_of(f.file->add_seals(kSealGrow));
    if (op == "map writable" || op == "map read-only") {
      const bool w = op == "map writable";
      got = code_of(f.file->add_mapping(&space, 0, MappableRange(0, kPage), w));
      if (got == 0) f.file->remove_mapping(&space, 0, MappableRange(0, kPage), w);
    }
    INFO("seals " << c.seals << ", " << c.op);
    REQUIRE(got != -1);
    CHECK(got == c.expected);
    f.file->check_invariants();
  }
}

TEST_CASE("a write that would grow a GROW-sealed file stops at the last whole page piece inside",
          "[tmpfs]") {
  // The kernel writes page-sized pieces and refuses the first that ends past
  // the end (6.18: pwrite of 10000 bytes at 100 into a 6000-byte file gives
  // 3996).
  Fixture f;
  REQUIRE(f.file->truncate(6000));
  REQUIRE(f.file->add_seals(kSealGrow));
  auto data = pattern(10000, 7);
  CHECK(f.file->write(100, data) == 3996);
  CHECK(f.file->write(4000, std::span(data).first(3000)) == 96);
  CHECK(f.file->write(4096, std::span(data).first(1904)) == 1904);
  CHECK(code_of(f.file->write(4096, std::span(data).first(1905))) == EPERM);
  CHECK(f.file->size() == 6000);
}

TEST_CASE("adding WRITE while a writable mapping exists is EBUSY and adds no seal", "[tmpfs]") {
  Fixture f;
  CountingSpace space;
  REQUIRE(f.file->add_mapping(&space, 0, MappableRange(0, kPage), true));
  CHECK(f.file->stat().writable_mapped_pages == 1);
  CHECK(code_of(f.file->add_seals(kSealWrite | kSealGrow)) == EBUSY);
  CHECK(f.file->seals() == 0);
  // FUTURE_WRITE never waits for mappings; WRITE still does.
  CHECK(f.file->add_seals(kSealFutureWrite).has_value());
  CHECK(code_of(f.file->add_seals(kSealWrite)) == EBUSY);
  f.file->remove_mapping(&space, 0, MappableRange(0, kPage), true);
  CHECK(f.file->add_seals(kSealWrite).has_value());
  CHECK(f.file->seals() == (kSealWrite | kSealFutureWrite));
}

TEST_CASE("unknown seal bits are EINVAL before SEAL's EPERM", "[tmpfs]") {
  Fixture f;
  CHECK(code_of(f.file->add_seals(0x40)) == EINVAL);
  CHECK(code_of(f.file->add_seals(0x20)) == EINVAL);  // EXEC: not modelled
  REQUIRE(f.file->add_seals(kSealSeal));
  CHECK(code_of(f.file->add_seals(0x40 | kSealGrow)) == EINVAL);
  CHECK(code_of(f.file->add_seals(kSealGrow)) == EPERM);
}

TEST_CASE("seal names round-trip and unknown names are refused", "[tmpfs]") {
  CHECK(seal_names(kAllSeals) ==
        std::vector<std::string>{"seal", "shrink", "grow", "write", "future_write"});
  CHECK(seal_names(0).empty());
  for (const auto& n : seal_names(kAllSeals)) CHECK(parse_seal(n).has_value());
  CHECK(*parse_seal("future_write") == kSealFutureWrite);
  auto bad = parse_seal("exec");
  REQUIRE(!bad);
  CHECK(bad.error().message.find("exec") != std::string::npos);
}

TEST_CASE("add_mapping refuses empty, unaligned and too-far ranges", "[tmpfs]") {
  Fixture f;
  CountingSpace space;
  CHECK(code_of(f.file->add_mapping(&space, 0, MappableRange(0, 0), false)) == EINVAL);
  CHECK(code_of(f.file->add_mapping(&space, 0, MappableRange(100, kPage), false)) == EINVAL);
  CHECK(code_of(f.file->add_mapping(&space, 8, MappableRange(0, kPage), false)) == EINVAL);
  CHECK(code_of(f.file->add_mapping(&space, 0, MappableRange(kPage, 0), false)) == EINVAL);
  CHECK(code_of(f.file->add_mapping(&space, 0, MappableRange(kMaxFileSize + 1 - kPage,
                                                             kMaxFileSize + 1),
                                    false)) == EOVERFLOW);
  CHECK(f.file->stat().mappings == 0);
}

TEST_CASE("truncate and punch tell mappings of the dropped pages, and only those", "[tmpfs]") {
  Fixture f;
  CountingSpace a, b;
  REQUIRE(f.file->write(0, pattern(8 * kPage, 8)) == 8 * kPage);
  REQUIRE(f.file->add_mapping(&a, 0, MappableRange(0, 2 * kPage), false));
  REQUIRE(f.file->add_mapping(&b, 0x10000, MappableRange(4 * kPage, 8 * kPage), true));
  REQUIRE(f.file->truncate(6 * kPage + 1));
  CHECK(a.invalidated.empty());
  REQUIRE(b.invalidated.size() == 1);
  CHECK(b.invalidated[0] == MappableRange(7 * kPage, 8 * kPage));
  REQUIRE(f.file->fallocate(FallocateMode::kPunchHole, kPage / 2, 5 * kPage));
  // Whole pages [1, 5): a's [1, 2) and b's [4, 5), before and after the drop.
  REQUIRE(a.invalidated.size() == 2);
  CHECK(a.invalidated[0] == MappableRange(kPage, 2 * kPage));
  REQUIRE(b.invalidated.size() == 3);
  CHECK(b.invalidated[1] == MappableRange(4 * kPage, 5 * kPage));
  f.file->remove_mapping(&a, 0, MappableRange(0, 2 * kPage), false);
  f.file->remove_mapping(&b, 0x10000, MappableRange(4 * kPage, 8 * kPage), true);
  f.file->check_invariants();
}

TEST_CASE("removing a mapping that was never added aborts", "[tmpfs][fork]") {
  CHECK(test::aborts_with(
      [] {
        Fixture f;
        CountingSpace s;
        f.file->remove_mapping(&s, 0, MappableRange(0, kPage), false);
      },
      "no mapping"));
}

TEST_CASE("errors are sentences that name the file, the call and the errno", "[tmpfs]") {
  Fixture f;
  REQUIRE(f.file->add_seals(kSealWrite));
  auto r = f.file->write(0, pattern(10, 9));
  REQUIRE(!r);
  CHECK(r.error().message == "cannot write 0xa bytes at 0x0 of file f: the file is sealed "
                             "against writes: EPERM");
}
