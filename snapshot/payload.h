// The bytes of a section's payload: little-endian numbers written and read
// one after another, for the codecs of the VM level's sections (a file's
// state, the devices'). The reader is for hostile bytes: every read checks
// that the bytes are there, and says false when they are not.
//
// Synopsis
//   PayloadWriter w; w.u32(x); w.u64(y); w.bytes(s); w.take()
//   PayloadReader r(bytes); r.u32(&x) r.u64(&y) r.bytes(n, &s) r.remaining()
//
// A payload starts with a magic (four ASCII letters, read as a u32) and a
// version, so a section of the wrong kind or a later format is refused by
// name before anything else is read (payload_header checks both).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace kvmem {

// "KFIL" as a u32 the way it lies in the file: 'K' first.
constexpr uint32_t payload_magic(const char (&letters)[5]) {
  return uint32_t{static_cast<uint8_t>(letters[0])} | uint32_t{static_cast<uint8_t>(letters[1])} << 8 |
         uint32_t{static_cast<uint8_t>(letters[2])} << 16 | uint32_t{static_cast<uint8_t>(letters[3])} << 24;
}

class PayloadWriter {
 public:
  void u32(uint32_t v) {
    for (int i = 0; i < 4; i++) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; i++) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void bytes(std::span<const uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  std::vector<uint8_t> take() { return std::move(out_); }

 private:
  std::vector<uint8_t> out_;
};

class PayloadReader {
 public:
  explicit PayloadReader(std::span<const uint8_t> b) : b_(b) {}
  size_t remaining() const { return b_.size(); }
  bool u32(uint32_t* v) {
    if (b_.size() < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; i++) *v |= uint32_t{b_[i]} << (8 * i);
    b_ = b_.subspan(4);
    return true;
  }
  bool u64(uint64_t* v) {
    if (b_.size() < 8) return false;
    *v = 0;
    for (int i = 0; i < 8; i++) *v |= uint64_t{b_[i]} << (8 * i);
    b_ = b_.subspan(8);
    return true;
  }
  bool bytes(uint64_t n, std::span<const uint8_t>* out) {
    if (b_.size() < n) return false;
    *out = b_.first(n);
    b_ = b_.subspan(n);
    return true;
  }

 private:
  std::span<const uint8_t> b_;
};

// Reads and checks a payload's magic and version. `what` names the payload
// in the error: "file state: magic 0x…, not KFIL's 0x…".
inline Status payload_header(PayloadReader& r, std::string_view what, uint32_t magic, uint32_t version) {
  uint32_t m = 0, v = 0;
  const size_t have = r.remaining();
  if (!r.u32(&m) || !r.u32(&v)) return fail("{}: {} bytes is too short for its magic and version", what, have);
  if (m != magic) return fail("{}: magic {:#010x}, not {:#010x}", what, m, magic);
  if (v != version) return fail("{}: version {} (this kvmem reads version {})", what, v, version);
  return {};
}

}  // namespace kvmem
