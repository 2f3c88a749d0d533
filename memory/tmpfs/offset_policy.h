// OffsetPolicy: the SegmentSet policy for maps whose values are the
// memory-file offset of each segment's start (a file's data map, a host
// mapping's cache of translations).
//
// Two touching segments merge when their memory-file ranges touch too, so a
// segment is always one run of the memory file: one map_internal, one
// reference range, one memslot. A split gives the right half the offset of
// its own start.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>

namespace kvmem::tmpfs {

struct OffsetPolicy {
  template <class Key>
  static std::optional<uint64_t> merge(const Key& a, uint64_t a_off, const Key&, uint64_t b_off) {
    if (a_off + a.length() == b_off) return a_off;
    return std::nullopt;
  }
  template <class Key>
  static std::pair<uint64_t, uint64_t> split(const Key& k, uint64_t off, uint64_t at) {
    return {off, off + (at - k.start)};
  }
};

}  // namespace kvmem::tmpfs
