#include "config/fields.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "config/vm_config.h"

namespace kvmem::json_fields {
Status check_keys(const json& j, const Ptr& p, std::initializer_list<const char*> allowed) {
  if (!j.is_object()) return p.fail("expected an object, found {}", j.type_name());
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = false;
    for (const char* a : allowed) ok = ok || it.key() == a;
    if (!ok) {
      std::string list;
      for (const char* a : allowed) list += fmt::format("{}{}", list.empty() ? "" : ", ", a);
      return (p / it.key()).fail("unknown key (expected one of: {})", list);
    }
  }
  return {};
}

Result<uint64_t> size_value(const json& j, const Ptr& p) {
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  if (j.is_number_integer()) {
    const int64_t v = j.get<int64_t>();
    if (v < 0) return p.fail("must not be negative, found {}", v);
    return static_cast<uint64_t>(v);
  }
  if (j.is_string()) {
    auto r = parse_size_string(j.get<std::string>());
    if (!r) return p.fail("{}", r.error().message);
    return *r;
  }
  return p.fail("expected a size (an integer, or a string like \"64M\" or \"0x200000\"), found {}",
                j.type_name());
}

Result<uint64_t> required_size(const json& obj, const Ptr& p, const char* key) {
  if (!obj.contains(key)) return p.fail("missing required key \"{}\"", key);
  return size_value(obj.at(key), p / key);
}

Result<int64_t> signed_value(const json& j, const Ptr& p) {
  if (j.is_number_unsigned()) {
    uint64_t v = j.get<uint64_t>();
    if (v > static_cast<uint64_t>(INT64_MAX)) return p.fail("{} does not fit in a signed 64-bit value", v);
    return static_cast<int64_t>(v);
  }
  if (j.is_number_integer()) return j.get<int64_t>();
  if (j.is_string()) {
    // "-EINVAL", "EFAULT", or a number.
    std::string s = j.get<std::string>();
    bool neg = !s.empty() && s[0] == '-';
    std::string name = neg ? s.substr(1) : s;
    for (int e = 1; e < 134; e++) {
      const char* n = strerrorname_np(e);
      if (n && name == n) return neg ? -e : e;
    }
    auto r = parse_size_string(name);
    if (!r || *r > static_cast<uint64_t>(INT64_MAX))
      return p.fail("expected an integer or an errno name like \"-EINVAL\", found \"{}\"", s);
    return neg ? -static_cast<int64_t>(*r) : static_cast<int64_t>(*r);
  }
  return p.fail("expected an integer, found {}", j.type_name());
}

Result<json> read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return sys_fail(fmt::format("cannot read config {}", path), "open", errno);
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::parse_error& e) {
    // e.what() reads "[json.exception.parse_error.101] parse error at line 3, column 16: ...".
    std::string_view what = e.what();
    if (auto close = what.find("] "); close != std::string_view::npos) what.remove_prefix(close + 2);
    return fail("{}: not valid JSON: {}", path, what);
  }
}

}  // namespace kvmem::json_fields
