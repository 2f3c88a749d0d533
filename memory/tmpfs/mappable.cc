#include "memory/tmpfs/mappable.h"

#include <fmt/format.h>

#include "base/check.h"

namespace kvmem::tmpfs {

const char* access_name(Access a) {
  switch (a) {
    case Access::kRead: return "read";
    case Access::kWrite: return "write";
    case Access::kReadWrite: return "read-write";
  }
  return "?";
}

namespace {

std::string describe(size_t i, const Translation& t) {
  return fmt::format("translation {} ({} at file offset {:#x}, {})", i, t.source.to_string(),
                     t.offset.value, access_name(t.perms));
}

}  // namespace

std::string check_translate_result(MappableRange required, MappableRange optional, Access at,
                                   const TranslateResult& result) {
  KVMEM_CHECK(required.well_formed() && !required.empty() && required.is_page_aligned(),
              "check_translate_result: required {} must be non-empty and page-aligned",
              required.to_string());
  KVMEM_CHECK(optional.well_formed() && optional.is_page_aligned() &&
                  optional.is_superset_of(required),
              "check_translate_result: optional {} must be page-aligned and hold required {}",
              optional.to_string(), required.to_string());
  const auto& ts = result.translations;
  if (!result.ok() && result.message.empty())
    return "the result carries an error but no sentence saying why";
  if (ts.empty()) {
    if (result.ok())
      return fmt::format("no translation of required {} and no error", required.to_string());
    return {};
  }
  if (!ts.front().source.contains(required.start))
    return fmt::format("the first translation does not contain required.start {:#x}: {}",
                       required.start, describe(0, ts.front()));
  for (size_t i = 0; i < ts.size(); i++) {
    const Translation& t = ts[i];
    if (!t.source.well_formed() || t.source.empty())
      return fmt::format("{} is empty or ill-formed", describe(i, t));
    if (!t.source.is_page_aligned() || !t.offset.is_page_aligned())
      return fmt::format("{} is not page-aligned", describe(i, t));
    if (i > 0 && t.source.start != ts[i - 1].source.end)
      return fmt::format("{} does not start where translation {} ends ({:#x})", describe(i, t),
                         i - 1, ts[i - 1].source.end);
    if (!t.source.overlaps(required))
      return fmt::format("{} does not overlap required {}", describe(i, t), required.to_string());
    if (!optional.is_superset_of(t.source))
      return fmt::format("{} is not inside optional {}", describe(i, t), optional.to_string());
    if (!permits(t.perms, at))
      return fmt::format("{} does not permit {} access", describe(i, t), access_name(at));
  }
  if (ts.back().source.end < required.end && result.ok())
    return fmt::format("the translations end at {:#x}, short of required.end {:#x}, and no error "
                       "says why",
                       ts.back().source.end, required.end);
  return {};
}

}  // namespace kvmem::tmpfs
