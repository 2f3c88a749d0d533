// Half-open ranges [start, end) over uint64_t, one type per address space.
//
// Synopsis
//   Range<Tag>            value type; Tag names the address space
//   FileRange             offsets into the memory file (memfd)
//   GuestRange            guest-physical addresses
//   HostRange             host virtual addresses of the VMM process
//   MappableRange         offsets into one tmpfs file (memory/tmpfs)
//   Address<Tag>          one address in that space (GuestAddr, FileOffset)
//
//   Range::of(start, length)   -> Result<Range>, fails if start + length overflows
//   r.well_formed()            start <= end
//   r.length() r.empty() r.contains(x) r.is_superset_of(o) r.overlaps(o)
//   r.intersect(o)             the overlap, empty (start == end) if none
//   r.is_page_aligned()        both bounds are multiples of kPageSize
//   r.round_out()              -> Result<Range>: start down, end up to pages
//   fmt / ostream print as "[0x1000, 0x2000)"
//
// Ranges built with the plain constructor are not checked: a range with
// start > end is representable (so a caller can test well_formed() on
// untrusted input) but every function below that takes a range as a
// precondition requires it to be well formed.
#pragma once

#include <compare>
#include <cstdint>
#include <limits>
#include <ostream>
#include <string>

#include <fmt/format.h>

#include "base/error.h"

namespace kvmem {

inline constexpr uint64_t kPageShift = 12;
inline constexpr uint64_t kPageSize = uint64_t{1} << kPageShift;
inline constexpr uint64_t kHugePageShift = 21;
inline constexpr uint64_t kHugePageSize = uint64_t{1} << kHugePageShift;

constexpr bool is_power_of_two(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

// Rounds x down to a multiple of align (a power of two).
constexpr uint64_t align_down(uint64_t x, uint64_t align) { return x & ~(align - 1); }

// Rounds x up to a multiple of align (a power of two); false on overflow.
constexpr bool align_up(uint64_t x, uint64_t align, uint64_t* out) {
  uint64_t r = (x + (align - 1)) & ~(align - 1);
  if (r < x) return false;
  *out = r;
  return true;
}

struct FileSpace {
  static constexpr const char* kName = "file";
};
struct GuestSpace {
  static constexpr const char* kName = "guest-physical";
};
struct HostSpace {
  static constexpr const char* kName = "host";
};
// Offsets into one file of the tmpfs layer (memory/tmpfs): what a mapping
// maps, before Translate turns it into memory-file offsets.
struct MappableSpace {
  static constexpr const char* kName = "mappable";
};

// One address in the space Tag. Explicit to build, so a guest-physical
// address never silently becomes a file offset.
template <class Tag>
struct Address {
  uint64_t value = 0;

  constexpr Address() = default;
  constexpr explicit Address(uint64_t v) : value(v) {}

  constexpr auto operator<=>(const Address&) const = default;
  constexpr Address operator+(uint64_t off) const { return Address(value + off); }
  constexpr uint64_t operator-(Address o) const { return value - o.value; }
  constexpr bool is_page_aligned() const { return value % kPageSize == 0; }
};

using FileOffset = Address<FileSpace>;
using GuestAddr = Address<GuestSpace>;

template <class Tag>
struct Range {
  using Space = Tag;

  uint64_t start = 0;
  uint64_t end = 0;

  constexpr Range() = default;
  constexpr Range(uint64_t s, uint64_t e) : start(s), end(e) {}
  constexpr Range(Address<Tag> s, Address<Tag> e) : start(s.value), end(e.value) {}

  // [start, start + length), or an error if the end does not fit in 64 bits.
  static Result<Range> of(uint64_t s, uint64_t length) {
    if (length > std::numeric_limits<uint64_t>::max() - s)
      return fail("{} range at {:#x} of length {:#x} overflows 64 bits", Tag::kName, s, length);
    return Range(s, s + length);
  }

  constexpr bool operator==(const Range&) const = default;

  constexpr bool well_formed() const { return start <= end; }
  constexpr uint64_t length() const { return end - start; }
  constexpr bool empty() const { return start == end; }
  constexpr Address<Tag> start_addr() const { return Address<Tag>(start); }
  constexpr Address<Tag> end_addr() const { return Address<Tag>(end); }

  constexpr bool contains(uint64_t x) const { return start <= x && x < end; }
  constexpr bool is_superset_of(const Range& o) const { return start <= o.start && o.end <= end; }
  constexpr bool overlaps(const Range& o) const { return start < o.end && o.start < end; }

  // The overlap of two ranges; when they do not overlap the result is empty
  // and starts at the larger start (so it stays well formed).
  constexpr Range intersect(const Range& o) const {
    Range r(start > o.start ? start : o.start, end < o.end ? end : o.end);
    if (r.end < r.start) r.end = r.start;
    return r;
  }

  constexpr bool is_page_aligned() const {
    return start % kPageSize == 0 && end % kPageSize == 0;
  }
  constexpr bool is_aligned(uint64_t align) const {
    return start % align == 0 && end % align == 0;
  }

  // The smallest page-aligned range holding this one.
  Result<Range> round_out() const {
    uint64_t e = 0;
    if (!align_up(end, kPageSize, &e))
      return fail("{} range {} cannot be rounded to pages: its end overflows", Tag::kName,
                  to_string());
    return Range(align_down(start, kPageSize), e);
  }

  std::string to_string() const { return fmt::format("[{:#x}, {:#x})", start, end); }
};

using FileRange = Range<FileSpace>;
using GuestRange = Range<GuestSpace>;
using HostRange = Range<HostSpace>;
using MappableRange = Range<MappableSpace>;

template <class Tag>
std::ostream& operator<<(std::ostream& os, const Range<Tag>& r) {
  return os << r.to_string();
}

template <class Tag>
std::ostream& operator<<(std::ostream& os, Address<Tag> a) {
  return os << fmt::format("{:#x}", a.value);
}

}  // namespace kvmem

template <class Tag>
struct fmt::formatter<kvmem::Range<Tag>> : fmt::formatter<std::string_view> {
  template <class Ctx>
  auto format(const kvmem::Range<Tag>& r, Ctx& ctx) const {
    return fmt::formatter<std::string_view>::format(r.to_string(), ctx);
  }
};

template <class Tag>
struct fmt::formatter<kvmem::Address<Tag>> : fmt::formatter<std::string_view> {
  template <class Ctx>
  auto format(kvmem::Address<Tag> a, Ctx& ctx) const {
    return fmt::formatter<std::string_view>::format(fmt::format("{:#x}", a.value), ctx);
  }
};
