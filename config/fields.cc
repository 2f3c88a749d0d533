#include "config/fields.h"

#include <charconv>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "config/vm_config.h"

namespace kvmem::json_fields {
namespace {

// Follows a parse to name the pointer of the value it is at, for the
// errors the parser reports without one (a number no double can hold).
class PointerTracker : public nlohmann::json_sax<json> {
 public:
  std::string pointer() const {
    std::string out;
    for (const Frame& f : frames_) out += f.array ? "/" + std::to_string(f.count) : (Ptr() / f.key).str();
    return out.empty() ? "/" : out;
  }
  size_t position() const { return position_; }

  bool null() override { return value(); }
  bool boolean(bool) override { return value(); }
  bool number_integer(number_integer_t) override { return value(); }
  bool number_unsigned(number_unsigned_t) override { return value(); }
  bool number_float(number_float_t, const string_t&) override { return value(); }
  bool string(string_t&) override { return value(); }
  bool binary(binary_t&) override { return value(); }
  bool start_object(size_t) override { return open(false); }
  bool key(string_t& k) override {
    frames_.back().key = k;
    return true;
  }
  bool end_object() override { return close(); }
  bool start_array(size_t) override { return open(true); }
  bool end_array() override { return close(); }
  bool parse_error(size_t position, const std::string&, const nlohmann::detail::exception&) override {
    position_ = position;
    return false;
  }

 private:
  struct Frame {
    bool array;
    size_t count = 0;  // array: values finished, so the index of the one in progress
    std::string key;   // object: the key of the value in progress
  };
  bool value() {
    if (!frames_.empty() && frames_.back().array) frames_.back().count++;
    return true;
  }
  bool open(bool array) {
    frames_.push_back(Frame{array, 0, {}});
    return true;
  }
  bool close() {
    frames_.pop_back();
    return value();
  }
  std::vector<Frame> frames_;
  size_t position_ = 0;
};

// "[json.exception.out_of_range.406] number overflow parsing '1e400'" -> the text after "] ".
std::string_view reason_of(const json::exception& e) {
  std::string_view what = e.what();
  if (auto close = what.find("] "); close != std::string_view::npos) what.remove_prefix(close + 2);
  return what;
}

}  // namespace

Ptr Ptr::operator/(std::string_view key) const {
  std::string escaped;
  for (char c : key) escaped += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
  return Ptr(path_ + "/" + escaped);
}

Error library_error(const json::exception& e) {
  std::string_view reason = reason_of(e);
  // Built with JSON_DIAGNOSTICS, the library says where: "(/program/3) type must be ...".
  if (reason.starts_with("(")) {
    if (auto close = reason.find(") "); close != std::string_view::npos)
      return Error{0, fmt::format("{}: {}", reason.substr(1, close - 1), reason.substr(close + 2))};
  }
  return Error{0, fmt::format("the JSON library refused the config: {}", reason)};
}
std::errc parse_unsigned(std::string_view s, uint64_t* out) {
  int base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s.remove_prefix(2);
    base = 16;
  }
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, base);
  if (s.empty() || end != s.data() + s.size()) return std::errc::invalid_argument;
  return ec;
}

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
  if (j.is_number_float())
    return p.fail("expected a whole number of bytes, found {} (a fraction, or too large for 64 bits)",
                  j.dump());
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
  if (j.is_number_float())
    return p.fail("expected an integer, found {} (a fraction, or too large for 64 bits)", j.dump());
  return p.fail("expected an integer, found {}", j.type_name());
}

Result<bool> bool_value(const json& j, const Ptr& p) {
  if (!j.is_boolean()) return p.fail("expected true or false, found {}", j.type_name());
  return j.get<bool>();
}

Result<double> fraction_value(const json& j, const Ptr& p) {
  if (!j.is_number()) return p.fail("expected a number from 0 to 1, found {}", j.type_name());
  const double v = j.get<double>();
  if (!(v >= 0 && v <= 1)) return p.fail("must be from 0 to 1, found {}", j.dump());
  return v;
}

Result<std::string> string_value(const json& j, const Ptr& p) {
  if (!j.is_string()) return p.fail("expected a string, found {}", j.type_name());
  return j.get<std::string>();
}

namespace {

// The file's bytes, refusing more than kMaxConfigBytes: a regular file by
// its size before any read, anything else (a pipe, a device) by a read
// that stops one byte past the limit.
Result<std::string> read_bounded(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return sys_fail(fmt::format("cannot read config {}", path), "open", errno);
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  struct stat st {};
  if (fstat(fd, &st) < 0) return sys_fail(fmt::format("cannot read config {}", path), "fstat", errno);
  if (S_ISDIR(st.st_mode)) return fail("cannot read config {}: it is a directory", path);
  const auto too_big = [&](std::string_view size) {
    return fail("{}: the config is {}more than the {} bytes ({} MiB) kvmem reads", path, size, kMaxConfigBytes,
                kMaxConfigBytes >> 20);
  };
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) > kMaxConfigBytes)
    return too_big(fmt::format("{} bytes, ", st.st_size));
  std::string text;
  char buf[65536];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_fail(fmt::format("cannot read config {}", path), "read", errno);
    if (n == 0) return text;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxConfigBytes) return too_big("");  // a pipe: no size to name
  }
}

}  // namespace

Result<json> read_json(const std::string& path) {
  auto bytes = read_bounded(path);
  if (!bytes) return std::unexpected(bytes.error());
  const std::string& text = *bytes;
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    // "parse error at line 3, column 16: ...".
    return fail("{}: not valid JSON: {}", path, reason_of(e));
  } catch (const json::exception& e) {
    // Valid syntax the library cannot hold, such as 1e400: find where.
    PointerTracker where;
    json::sax_parse(text, &where);
    return fail("{}: {}: {} (at byte {})", path, where.pointer(), reason_of(e), where.position());
  }
}

}  // namespace kvmem::json_fields
