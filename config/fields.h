// Reading typed values out of untrusted JSON, for the config parsers.
//
// Every failure names the JSON pointer of the bad value and says why:
// "/program/3/length: must be a multiple of 8". Internal to vmm/: the config
// parsers (vmm/config.cc, vmm/stress_config.cc) share it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace kvmem::json_fields {

using json = nlohmann::json;

// A JSON pointer under construction, and errors that start with it.
class Ptr {
 public:
  Ptr() = default;
  Ptr operator/(std::string_view key) const { return Ptr(path_ + "/" + std::string(key)); }
  Ptr operator/(size_t index) const { return Ptr(path_ + "/" + std::to_string(index)); }
  template <class... Args>
  std::unexpected<Error> fail(fmt::format_string<Args...> f, Args&&... args) const {
    return std::unexpected(Error{0, fmt::format("{}: {}", path_.empty() ? "/" : path_,
                                                fmt::format(f, std::forward<Args>(args)...))});
  }

 private:
  explicit Ptr(std::string p) : path_(std::move(p)) {}
  std::string path_;
};

// j must be an object whose keys are all in `allowed`.
Status check_keys(const json& j, const Ptr& p, std::initializer_list<const char*> allowed);
// A size: a non-negative integer, or a string parse_size_string() accepts.
Result<uint64_t> size_value(const json& j, const Ptr& p);
// obj[key] as a size; a missing key is an error naming it.
Result<uint64_t> required_size(const json& obj, const Ptr& p, const char* key);
// An integer, negative allowed, or an errno name such as "-EINVAL".
Result<int64_t> signed_value(const json& j, const Ptr& p);
// The file's JSON; a syntax error gives the line and column.
Result<json> read_json(const std::string& path);

}  // namespace kvmem::json_fields
