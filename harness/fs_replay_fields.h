// What the replay's operations share (harness/fs_replay.cc and
// fs_replay_map.cc): reading a line's keys, hex, and the shapes of results.
// Internal to the replay.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "config/fields.h"
#include "harness/fs_replay.h"
#include "memory/tmpfs/host_mapping.h"

namespace kvmem {

// One host mapping of the script's, by its id.
struct FsReplay::Mapping {
  std::unique_ptr<tmpfs::HostMapping> host;
  std::string file;     // the name the file had when it was mapped
  uint64_t offset = 0;  // file offset of the mapping's start
  uint64_t length = 0;  // as the script gave it
  uint64_t extent = 0;  // length rounded up to a page: what an access may reach
  bool writable = false;
};

}  // namespace kvmem

namespace kvmem::replay {

using json = nlohmann::json;
using json_fields::Ptr;

// j[key] as a string of at most max_bytes; missing or another type is an error.
Result<std::string> required_string(const json& j, const char* key, size_t max_bytes = SIZE_MAX);
// j[key] as a 64-bit number: an integer, or a size string ("4K", "0x1000").
Result<uint64_t> required_number(const json& j, const char* key);
// The same, at most `max` (else an error naming the limit and why).
Result<uint64_t> bounded_number(const json& j, const char* key, uint64_t max, const char* why);
// j[key] as true or false; `otherwise` when the key is absent.
Result<bool> optional_bool(const json& j, const char* key, bool otherwise);
// j[key]: hex digits (either case, an even number of them) of at most
// kFsReplayMaxIoBytes bytes.
Result<std::vector<uint8_t>> required_hex(const json& j, const char* key);
std::string to_hex(std::span<const uint8_t> bytes);

// {"ok":true} and the fields of a layer's refusal.
json success();
json failure(const Error& e);
// A mapping access a real mmap would fault on: {"ok":false, "errno":"EFAULT",
// "signal":signal, "message":message}.
json fault(const char* signal, const std::string& message);

// An error when j nests arrays and objects deeper than `max` (checked on the
// text, before the parser builds anything).
Status check_depth(std::string_view text, int max);

}  // namespace kvmem::replay
