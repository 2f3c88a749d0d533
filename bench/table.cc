#include "bench/table.h"

#include <algorithm>

#include <fmt/format.h>

#include "base/check.h"

namespace kvmem {
namespace {

void append_line(std::string& out, const std::vector<TableColumn>& columns, const std::vector<size_t>& width,
                 const std::vector<std::string>& cells) {
  std::string line;
  for (size_t i = 0; i < columns.size(); i++) {
    const std::string& c = i < cells.size() ? cells[i] : std::string();
    if (columns[i].align == TableColumn::Align::kLeft)
      line += fmt::format("  {:<{}}", c, width[i]);
    else
      line += fmt::format("  {:>{}}", c, width[i]);
  }
  line.erase(line.find_last_not_of(' ') + 1);
  out += line + "\n";
}

}  // namespace

Table::Table(std::vector<TableColumn> columns) : columns_(std::move(columns)) {}

void Table::add_row(std::vector<std::string> cells) {
  KVMEM_CHECK(cells.size() <= columns_.size(), "a row of {} cells in a table of {} columns", cells.size(),
              columns_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::render() const {
  std::vector<size_t> width;
  std::vector<std::string> headers, units;
  bool any_unit = false;
  for (const TableColumn& c : columns_) {
    width.push_back(std::max(c.header.size(), c.unit.size()));
    headers.push_back(c.header);
    units.push_back(c.unit);
    any_unit = any_unit || !c.unit.empty();
  }
  for (const auto& row : rows_)
    for (size_t i = 0; i < row.size(); i++) width[i] = std::max(width[i], row[i].size());
  std::string out;
  append_line(out, columns_, width, headers);
  if (any_unit) append_line(out, columns_, width, units);
  for (const auto& row : rows_) append_line(out, columns_, width, row);
  return out;
}

std::string fixed(double value, int digits) { return fmt::format("{:.{}f}", value, digits); }

std::string size_name(uint64_t bytes) {
  constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB, kGiB = 1024 * kMiB;
  if (bytes >= kGiB && bytes % kGiB == 0) return fmt::format("{} GiB", bytes / kGiB);
  if (bytes >= kMiB && bytes % kMiB == 0) return fmt::format("{} MiB", bytes / kMiB);
  if (bytes >= kKiB && bytes % kKiB == 0) return fmt::format("{} KiB", bytes / kKiB);
  return fmt::format("{} B", bytes);
}

}  // namespace kvmem
