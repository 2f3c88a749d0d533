#include "harness/fs_replay_fields.h"

#include "harness/fs_replay.h"

namespace kvmem::replay {
namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

Result<std::string> required_string(const json& j, const char* key, size_t max_bytes) {
  const Ptr p = Ptr() / key;
  if (!j.contains(key)) return Ptr().fail("missing required key \"{}\"", key);
  const json& v = j.at(key);
  if (!v.is_string()) return p.fail("expected a string, found {}", v.type_name());
  const std::string& s = v.get_ref<const std::string&>();
  if (s.size() > max_bytes) return p.fail("{} bytes long, more than the {} it may have", s.size(), max_bytes);
  return s;
}

Result<uint64_t> required_number(const json& j, const char* key) {
  return json_fields::required_size(j, Ptr(), key);
}

Result<uint64_t> bounded_number(const json& j, const char* key, uint64_t max, const char* why) {
  const uint64_t v = KVMEM_TRY(required_number(j, key));
  if (v > max) return (Ptr() / key).fail("{:#x} is more than {:#x}, {}", v, max, why);
  return v;
}

Result<bool> optional_bool(const json& j, const char* key, bool otherwise) {
  if (!j.contains(key)) return otherwise;
  return json_fields::bool_value(j.at(key), Ptr() / key);
}

Result<std::vector<uint8_t>> required_hex(const json& j, const char* key) {
  const std::string s = KVMEM_TRY(required_string(j, key));
  const Ptr p = Ptr() / key;
  if (s.size() > 2 * kFsReplayMaxIoBytes)
    return p.fail("{} hex digits, more than the {} of the largest write ({} bytes)", s.size(),
                  2 * kFsReplayMaxIoBytes, kFsReplayMaxIoBytes);
  if (s.size() % 2 != 0) return p.fail("an odd number of hex digits ({})", s.size());
  std::vector<uint8_t> out(s.size() / 2);
  for (size_t i = 0; i < out.size(); i++) {
    const int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return p.fail("not a hex digit at index {}", hi < 0 ? 2 * i : 2 * i + 1);
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return out;
}

std::string to_hex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(2 * bytes.size(), '0');
  for (size_t i = 0; i < bytes.size(); i++) {
    s[2 * i] = kDigits[bytes[i] >> 4];
    s[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return s;
}

json success() { return json{{"ok", true}}; }

json failure(const Error& e) {
  // The layer's errors all carry an errno; one without is reported as null
  // rather than invented.
  return json{{"ok", false}, {"errno", e.code ? json(errno_name(e.code)) : json(nullptr)}, {"message", e.message}};
}

json fault(const char* signal, const std::string& message) {
  return json{{"ok", false}, {"errno", "EFAULT"}, {"signal", signal}, {"message", message}};
}

Status check_depth(std::string_view text, int max) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') {
      if (++depth > max) return fail("nested more than {} deep", max);
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  return {};
}

}  // namespace kvmem::replay
