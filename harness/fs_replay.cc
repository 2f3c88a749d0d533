// The replay's dispatch and its file operations; the mapping operations are
// in fs_replay_map.cc, the line splitting in fs_replay_script.cc.
#include "harness/fs_replay.h"

#include <new>
#include <vector>

#include "harness/fs_replay_fields.h"
#include "memory/tmpfs/host_mapping.h"

namespace kvmem {

using namespace replay;

// One operation: its name, the keys it takes besides "op" and "seq", and
// what runs it. A handler's Error is the line's "error" (not run); a layer's
// refusal is a result built by failure().
struct FsReplay::Op {
  const char* name;
  std::vector<const char*> keys;
  Result<json> (FsReplay::*run)(const json& j);
};

namespace {

// Deeper than any operation needs (two), far below what costs memory.
constexpr int kMaxDepth = 8;

Status check_keys(const json& j, const std::vector<const char*>& keys) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = it.key() == "op" || it.key() == "seq";
    for (const char* k : keys) known = known || it.key() == k;
    if (known) continue;
    std::string list = "op, seq";
    for (const char* k : keys) list += fmt::format(", {}", k);
    return (Ptr() / it.key()).fail("unknown key (expected one of: {})", list);
  }
  return {};
}

// "seq" is echoed as given: an integer, or a short string.
Result<json> seq_of(const json& j) {
  if (!j.contains("seq")) return json(nullptr);
  const json& s = j.at("seq");
  if (s.is_number_integer()) return s;
  if (s.is_string() && s.get_ref<const std::string&>().size() <= kFsReplayMaxSeqBytes) return s;
  return (Ptr() / "seq").fail("expected an integer or a string of at most {} bytes, found {}", kFsReplayMaxSeqBytes,
                              s.is_string() ? "a longer string" : s.type_name());
}

// "not valid JSON: syntax error while parsing ..." from the library's words.
std::string parse_error(const json::exception& e) {
  std::string_view what = e.what();
  if (auto close = what.find("] "); close != std::string_view::npos) what.remove_prefix(close + 2);
  return fmt::format("not valid JSON: {}", what);
}

Result<tmpfs::FallocateMode> fallocate_mode(const json& j) {
  if (!j.contains("mode")) return tmpfs::FallocateMode::kDefault;
  const std::string m = KVMEM_TRY(required_string(j, "mode"));
  if (m == "default") return tmpfs::FallocateMode::kDefault;
  if (m == "keep_size") return tmpfs::FallocateMode::kKeepSize;
  if (m == "punch_hole") return tmpfs::FallocateMode::kPunchHole;
  return (Ptr() / "mode").fail("unknown mode \"{}\" (expected default, keep_size or punch_hole)", m);
}

// A list of seal names, or the raw F_SEAL_* bits as a number (so that
// unknown bits can reach the layer and its EINVAL).
Result<uint32_t> seals_of(const json& j) {
  const Ptr p = Ptr() / "seals";
  if (!j.contains("seals")) return Ptr().fail("missing required key \"seals\"");
  const json& s = j.at("seals");
  if (s.is_number_unsigned()) {
    if (s.get<uint64_t>() > UINT32_MAX) return p.fail("{} does not fit in 32 bits", s.get<uint64_t>());
    return static_cast<uint32_t>(s.get<uint64_t>());
  }
  if (!s.is_array())
    return p.fail("expected a list of seal names or a number of F_SEAL_* bits, found {}", s.type_name());
  uint32_t bits = 0;
  for (size_t i = 0; i < s.size(); i++) {
    if (!s[i].is_string()) return (p / i).fail("expected a seal name, found {}", s[i].type_name());
    auto bit = tmpfs::parse_seal(s[i].get_ref<const std::string&>());
    if (!bit) return (p / i).fail("{}", bit.error().message);
    bits |= *bit;
  }
  return bits;
}

}  // namespace

Status check_fs_replay_memory(uint64_t limit) {
  if (!is_power_of_two(limit) || limit < kFsReplayMinMemory || limit > kFsReplayMaxMemory)
    return fail("the memory limit must be a power of two from 16M to 64G, not {:#x} bytes", limit);
  return {};
}

MemoryFileOptions fs_replay_memory_options(uint64_t limit) {
  MemoryFileOptions o;
  o.name = "kvmem-fs-replay";
  o.reservation = limit;
  return o;
}

FsReplay::FsReplay(MemoryFile& memory, FsReplayOptions options)
    : memory_(memory), options_(options), fs_(memory) {}

FsReplay::~FsReplay() {
  mappings_.clear();
  memory_.wait_for_reclaim();
}

const FsReplay::Op* FsReplay::find_op(std::string_view name) {
  static const Op kOps[] = {
      {"create", {"name", "allow_seals"}, &FsReplay::op_create},
      {"write", {"name", "offset", "data_hex"}, &FsReplay::op_write},
      {"read", {"name", "offset", "length"}, &FsReplay::op_read},
      {"truncate", {"name", "size"}, &FsReplay::op_truncate},
      {"fallocate", {"name", "mode", "offset", "length"}, &FsReplay::op_fallocate},
      {"add_seals", {"name", "seals"}, &FsReplay::op_add_seals},
      {"get_seals", {"name"}, &FsReplay::op_get_seals},
      {"stat", {"name"}, &FsReplay::op_stat},
      {"list", {}, &FsReplay::op_list},
      {"unlink", {"name"}, &FsReplay::op_unlink},
      {"map", {"name", "id", "offset", "length", "writable"}, &FsReplay::op_map},
      {"unmap", {"id"}, &FsReplay::op_unmap},
      {"mwrite", {"id", "offset", "data_hex"}, &FsReplay::op_mwrite},
      {"mread", {"id", "offset", "length"}, &FsReplay::op_mread},
  };
  for (const Op& op : kOps)
    if (name == op.name) return &op;
  return nullptr;
}

json FsReplay::run(std::string_view text, uint64_t line) {
  json seq = nullptr, op_name = nullptr;
  // Everything that can refuse the line; the result of a well-formed one.
  auto attempt = [&]() -> Result<json> {
    KVMEM_TRY(check_depth(text, kMaxDepth));
    json j;
    try {
      j = json::parse(text);
    } catch (const json::exception& e) {
      return std::unexpected(Error{0, parse_error(e)});
    }
    if (!j.is_object()) return Ptr().fail("expected an object, found {}", j.type_name());
    seq = KVMEM_TRY(seq_of(j));
    const std::string name = KVMEM_TRY(required_string(j, "op", 64));
    const Op* op = find_op(name);
    if (!op)
      return (Ptr() / "op").fail(
          "unknown op \"{}\" (expected create, write, read, truncate, fallocate, add_seals, get_seals, stat, list, "
          "unlink, map, unmap, mwrite or mread)",
          name);
    KVMEM_TRY(check_keys(j, op->keys));
    op_name = name;
    return (this->*op->run)(j);
  };
  json result;
  try {
    auto r = attempt();
    result = r ? std::move(*r) : json{{"ok", false}, {"error", fmt::format("line {}: {}", line, r.error().message)}};
  } catch (const json::exception& e) {
    // Every reader checks types first; this is the net, not the path.
    result = json{{"ok", false}, {"error", fmt::format("line {}: {}", line, json_fields::library_error(e).message)}};
  } catch (const std::bad_alloc&) {
    result = json{{"ok", false}, {"error", fmt::format("line {}: out of memory", line)}};
  }
  if (!result.contains("error") && !op_name.is_null()) result["op"] = op_name;
  if (!seq.is_null()) result["seq"] = seq;
  return counted(std::move(result), line);
}

json FsReplay::too_long(uint64_t line) {
  return counted(json{{"ok", false},
                      {"error", fmt::format("line {}: longer than {} bytes; skipped", line, kFsReplayMaxLineBytes)}},
                 line);
}

json FsReplay::counted(json result, uint64_t line) {
  result["line"] = line;
  counts_.lines++;
  if (result.contains("error")) {
    counts_.errors++;
    if (counts_.first_error_line == 0) counts_.first_error_line = line;
  } else if (result["ok"].get<bool>()) {
    counts_.ok++;
  } else {
    counts_.failed++;
  }
  return result;
}

void FsReplay::after_free() { memory_.wait_for_reclaim(); }

void FsReplay::check(const tmpfs::RegularFile& f) const {
  if (options_.check_invariants) f.check_invariants();
}

Result<json> FsReplay::op_create(const json& j) {
  const std::string name = KVMEM_TRY(required_string(j, "name"));
  const bool allow_seals = KVMEM_TRY(optional_bool(j, "allow_seals", false));
  if (fs_.list().size() >= kFsReplayMaxFiles)
    return fail("{} files already: the replay keeps at most {} (unlink one first)", kFsReplayMaxFiles,
                kFsReplayMaxFiles);
  auto f = fs_.create(name, allow_seals);
  if (!f) return failure(f.error());
  check(**f);
  return success();
}

Result<json> FsReplay::op_write(const json& j) {
  const std::string name = KVMEM_TRY(required_string(j, "name"));
  const uint64_t offset = KVMEM_TRY(required_number(j, "offset"));
  const std::vector<uint8_t> data = KVMEM_TRY(required_hex(j, "data_hex"));
  auto f = fs_.open(name);
  if (!f) return failure(f.error());
  auto n = (*f)->write(offset, data);
  check(**f);
  if (!n) return failure(n.error());
  json r = success();
  r["n"] = *n;
  return r;
}

Result<json> FsReplay::op_read(const json& j) {
  const std::string name = KVMEM_TRY(required_string(j, "name"));
  const uint64_t offset = KVMEM_TRY(required_number(j, "offset"));
  const uint64_t length = KVMEM_TRY(bounded_number(j, "length", kFsReplayMaxIoBytes, "the most one read may move"));
  auto f = fs_.open(name);
  if (!f) return failure(f.error());
  std::vector<uint8_t> buf(length);
  auto n = (*f)->read(offset, buf);
  if (!n) return failure(n.error());
  json r = success();
  r["n"] = *n;
  r["data_hex"] = to_hex(std::span(buf).first(*n));
  return r;
}

Result<json> FsReplay::op_truncate(const json& j) {
  const std::string name = KVMEM_TRY(required_string(j, "name"));
  const uint64_t size = KVMEM_TRY(required_number(j, "size"));
  auto f = fs_.open(name);
  if (!f) return failure(f.error());
  auto s = (*f)->truncate(size);
  after_free();
  check(**f);
  if (!s) return failure(s.error());
  return success();
}

Result<json> FsReplay::op_fallocate(const json& j) {
  const std::string name = KVMEM_TRY(required_string(j, "name"));
  const tmpfs::FallocateMode mode = KVMEM_TRY(fallocate_mode(j));
  const uint64_t offset = KVMEM_TRY(required_number(j, "offset"));
  const uint64_t length = KVMEM_TRY(required_number(j, "length"));
  auto f = fs_.open(name);
  if (!f) return failure(f.error());
  auto s = (*f)->fallocate(mode, offset, length);
  if (mode == tmpfs::FallocateMode::kPunchHole) after_free();
  check(**f);
  if (!s) return failure(s.error());
  return success();
}

Result<json> FsReplay::op_add_seals(const json& j) {
  const std::string name = KVMEM_TRY(required_string(j, "name"));
  const uint32_t seals = KVMEM_TRY(seals_of(j));
  auto f = fs_.open(name);
  if (!f) return failure(f.error());
  auto s = (*f)->add_seals(seals);
  check(**f);
  if (!s) return failure(s.error());
  return success();
}

Result<json> FsReplay::op_get_seals(const json& j) {
  const std::string name = KVMEM_TRY(required_string(j, "name"));
  auto f = fs_.open(name);
  if (!f) return failure(f.error());
  json r = success();
  r["seals"] = tmpfs::seal_names((*f)->seals());
  return r;
}

Result<json> FsReplay::op_stat(const json& j) {
  const std::string name = KVMEM_TRY(required_string(j, "name"));
  auto st = fs_.stat(name);
  if (!st) return failure(st.error());
  json r = success();
  r["size"] = st->size;
  r["allocated"] = st->allocated;
  r["seals"] = tmpfs::seal_names(st->seals);
  r["mappings"] = st->mappings;
  r["writable_mapped_pages"] = st->writable_mapped_pages;
  return r;
}

Result<json> FsReplay::op_list(const json&) {
  json r = success();
  r["names"] = fs_.list();
  return r;
}

Result<json> FsReplay::op_unlink(const json& j) {
  const std::string name = KVMEM_TRY(required_string(j, "name"));
  auto s = fs_.unlink(name);
  after_free();
  if (!s) return failure(s.error());
  return success();
}

}  // namespace kvmem
