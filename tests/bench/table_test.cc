// bench/table: the layout every `kvmem bench` table shares.
#include <catch2/catch.hpp>

#include "bench/table.h"
#include "tests/support.h"

using namespace kvmem;

TEST_CASE("a table right-aligns each column to its widest cell, two spaces apart", "[bench]") {
  Table t({{"size"}, {"mode"}, {"ratio"}});
  t.add_row({"4096", "sync", fixed(2.734, 2)});
  t.add_row({"2097152", "async", fixed(0.5, 2)});
  CHECK(t.rows() == 2);
  CHECK(t.render() ==
        "     size   mode  ratio\n"
        "     4096   sync   2.73\n"
        "  2097152  async   0.50\n");
}

TEST_CASE("units get a line under the headers only when some column has one", "[bench]") {
  Table t({{"", "", TableColumn::Align::kLeft}, {"median", "ms"}, {"bytes", "B"}});
  t.add_row({"wall time", fixed(5.321, 2), "12"});
  CHECK(t.render() ==
        "             median  bytes\n"
        "                 ms      B\n"
        "  wall time    5.32     12\n");
}

TEST_CASE("a left-aligned note column pads, and trailing spaces are trimmed", "[bench]") {
  Table t({{"n"}, {"", "", TableColumn::Align::kLeft}});
  t.add_row({"1", "(pages NOT gone)"});
  t.add_row({"22", ""});
  t.add_row({"3"});  // short rows are padded with empty cells
  CHECK(t.render() ==
        "   n\n"
        "   1  (pages NOT gone)\n"
        "  22\n"
        "   3\n");
}

TEST_CASE("a row wider than the header is a bug", "[bench]") {
  CHECK(test::dies_with(
      [] {
        Table t({{"a"}});
        t.add_row({"1", "2"});
      },
      "a row of 2 cells in a table of 1 columns"));
}

TEST_CASE("fixed prints a number with the asked digits after the point", "[bench]") {
  CHECK(fixed(2.734, 2) == "2.73");
  CHECK(fixed(2.735, 1) == "2.7");
  CHECK(fixed(1234.4, 0) == "1234");
  CHECK(fixed(0, 3) == "0.000");
}

TEST_CASE("size_name prints bytes in the largest unit that divides them", "[bench]") {
  CHECK(size_name(uint64_t{64} << 30) == "64 GiB");
  CHECK(size_name(uint64_t{96} << 20) == "96 MiB");
  CHECK(size_name(uint64_t{1536} << 20) == "1536 MiB");
  CHECK(size_name(12 * 1024) == "12 KiB");
  CHECK(size_name(100) == "100 B");
  CHECK(size_name(0) == "0 B");
}
