#include <cerrno>

#include <catch2/catch.hpp>

#include "tests/memory/tmpfs/tmpfs_helpers.h"

using namespace kvmem;
using namespace kvmem::tmpfs;

TEST_CASE("files are created, opened, listed, stat'ed and unlinked by name", "[tmpfs]") {
  auto memory = test::make_memory();
  FileSystem fs(*memory);
  auto b = fs.create("b", true);
  auto a = fs.create("a", false);
  REQUIRE((a && b));
  CHECK(fs.list() == std::vector<std::string>{"a", "b"});
  auto again = fs.open("b");
  REQUIRE(again.has_value());
  CHECK(again->get() == b->get());
  REQUIRE((*b)->write(0, test::pattern(10, 1)) == 10);
  auto st = fs.stat("b");
  REQUIRE(st.has_value());
  CHECK(st->size == 10);
  CHECK(fs.stat("a")->seals == kSealSeal);
  REQUIRE(fs.unlink("b"));
  CHECK(fs.list() == std::vector<std::string>{"a"});
  CHECK((*b)->size() == 10);  // the data lives while someone holds the file
}

TEST_CASE("the file system refuses taken, missing and malformed names", "[tmpfs]") {
  auto memory = test::make_memory();
  FileSystem fs(*memory);
  REQUIRE(fs.create("x", true));
  CHECK(fs.create("x", true).error().code == EEXIST);
  CHECK(fs.open("y").error().code == ENOENT);
  CHECK(fs.unlink("y").error().code == ENOENT);
  CHECK(fs.stat("y").error().code == ENOENT);
  CHECK(fs.create("", true).error().code == EINVAL);
  CHECK(fs.create("a/b", true).error().code == EINVAL);
  CHECK(fs.create(std::string_view("a\0b", 3), true).error().code == EINVAL);
  CHECK(fs.create(std::string(kMaxNameLength, 'n'), true).has_value());
  auto long_name = fs.create(std::string(100000, 'n'), true);
  REQUIRE(!long_name);
  CHECK(long_name.error().code == EINVAL);
  CHECK(long_name.error().message.size() < 600);  // the name is cut, not echoed whole
}
