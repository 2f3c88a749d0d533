// FsReplayScript: bytes in, one result line out per line of the script.
#include <algorithm>
#include <cstring>

#include "harness/fs_replay.h"
#include "harness/report.h"

namespace kvmem {
namespace {

bool blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t'; });
}

}  // namespace

void FsReplayScript::feed(std::span<const char> bytes) {
  while (!bytes.empty()) {
    const char* nl = static_cast<const char*>(std::memchr(bytes.data(), '\n', bytes.size()));
    const size_t take = nl ? static_cast<size_t>(nl - bytes.data()) : bytes.size();
    // Held only up to the bound: past it the line's bytes are dropped as
    // they come, however long it goes on.
    if (!too_long_) {
      if (pending_.size() + take > kFsReplayMaxLineBytes) {
        too_long_ = true;
        pending_.clear();
        pending_.shrink_to_fit();
      } else {
        pending_.append(bytes.data(), take);
      }
    }
    if (!nl) return;
    end_line();
    bytes = bytes.subspan(take + 1);
  }
}

void FsReplayScript::finish() {
  if (too_long_ || !pending_.empty()) end_line();
}

void FsReplayScript::end_line() {
  line_++;
  if (too_long_) {
    out_(dump_report(replay_.too_long(line_)), {});
  } else {
    std::string_view text = pending_;
    if (text.ends_with('\r')) text.remove_suffix(1);
    if (!blank(text)) out_(dump_report(replay_.run(text, line_)), text);
  }
  pending_.clear();
  too_long_ = false;
}

}  // namespace kvmem
