// Reading typed values out of untrusted JSON, for the config parsers.
//
// Every failure names the JSON pointer of the bad value and says why:
// "/program/3/length: must be a multiple of 8". Each reader checks the
// value's type before it converts it, so the JSON library never throws on
// a value of the wrong kind; guarded() catches whatever it throws anyway,
// at the config edge. Internal to config/: the parsers share it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <system_error>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace kvmem::json_fields {

using json = nlohmann::json;

// The largest config kvmem reads: far above any real one (the shipped
// configs are a few KiB), far below what would cost noticeable memory.
inline constexpr uint64_t kMaxConfigBytes = 4ull << 20;

// A JSON pointer under construction (RFC 6901: "~" and "/" in a key are
// written "~0" and "~1"), and errors that start with it.
class Ptr {
 public:
  Ptr() = default;
  Ptr operator/(std::string_view key) const;
  Ptr operator/(size_t index) const { return Ptr(path_ + "/" + std::to_string(index)); }
  const std::string& str() const { return path_; }
  template <class... Args>
  std::unexpected<Error> fail(fmt::format_string<Args...> f, Args&&... args) const {
    return std::unexpected(Error{0, fmt::format("{}: {}", path_.empty() ? "/" : path_,
                                                fmt::format(f, std::forward<Args>(args)...))});
  }

 private:
  explicit Ptr(std::string p) : path_(std::move(p)) {}
  std::string path_;
};

// All of s as an unsigned number: decimal digits, or 0x/0X and hex digits.
// std::errc() and *out set; errc::invalid_argument when s is anything else
// (empty included); errc::result_out_of_range when it passes 64 bits.
std::errc parse_unsigned(std::string_view s, uint64_t* out);

// j must be an object whose keys are all in `allowed`.
Status check_keys(const json& j, const Ptr& p, std::initializer_list<const char*> allowed);
// A size: a non-negative integer, or a string parse_size_string() accepts.
Result<uint64_t> size_value(const json& j, const Ptr& p);
// obj[key] as a size; a missing key is an error naming it.
Result<uint64_t> required_size(const json& obj, const Ptr& p, const char* key);
// An integer, negative allowed, or an errno name such as "-EINVAL".
Result<int64_t> signed_value(const json& j, const Ptr& p);
// true or false.
Result<bool> bool_value(const json& j, const Ptr& p);
// A number from 0 to 1 (a probability, a share): 0, 1, 0.25.
Result<double> fraction_value(const json& j, const Ptr& p);
// A string.
Result<std::string> string_value(const json& j, const Ptr& p);

// The file's JSON, at most kMaxConfigBytes of it; a syntax error gives the
// line and column, a number no double can hold gives its pointer.
Result<json> read_json(const std::string& path);

// An exception of the JSON library as an error: "/memory: type must be
// number, but is string" (the pointer is there when the library knows it).
Error library_error(const json::exception& e);

// Runs parse() (which returns a Result), turning any exception the JSON
// library throws into an error: the safety net at the config edge.
template <class F>
auto guarded(F&& parse) -> decltype(parse()) {
  try {
    return parse();
  } catch (const json::exception& e) {
    return std::unexpected(library_error(e));
  }
}

}  // namespace kvmem::json_fields
