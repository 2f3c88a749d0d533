// One table printer for every `kvmem bench`: rows of cells in, text out.
//
//   Table t({{"size", "B"}, {"mode"}, {"ratio"}});
//   t.add_row({"4096", "sync", fixed(2.734, 2)});
//   std::string text = t.render();
//
// renders, each column as wide as its widest cell, two spaces before each:
//
//     size  mode  ratio
//        B
//     4096  sync   2.73
//
// Headers and cells are right-aligned unless a column asks for the left
// (a free-text note). The unit line appears only when some column has a
// unit. Trailing spaces are trimmed. A row shorter than the header is padded
// with empty cells; a longer one is a bug (checked).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvmem {

struct TableColumn {
  enum class Align { kRight, kLeft };
  std::string header;
  std::string unit = {};  // "ms", "GB/s"; empty for none
  Align align = Align::kRight;
};

class Table {
 public:
  explicit Table(std::vector<TableColumn> columns);

  void add_row(std::vector<std::string> cells);
  size_t rows() const { return rows_.size(); }

  // The header, the unit line when there is one, then the rows; every line
  // ends in a newline.
  std::string render() const;

 private:
  std::vector<TableColumn> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// A number with `digits` digits after the point: fixed(2.734, 2) == "2.73".
std::string fixed(double value, int digits);

// A byte count in the largest unit that divides it: "64 GiB", "96 MiB",
// "12 KiB", "100 B".
std::string size_name(uint64_t bytes);

}  // namespace kvmem
