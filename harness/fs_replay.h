// The engine of `kvmem fs replay` (docs/fs-replay.md): a script of
// operations on the tmpfs file layer (memory/tmpfs), one JSON object per
// line, run without a guest, with one JSON result per line.
//
// Synopsis
//   FsReplay(memory, options)     one FileSystem on `memory`, its host mappings
//   run(text, line)               one line's JSON -> its JSON result
//   FsReplayScript(replay, out)   splits a byte stream into bounded lines,
//                                 runs each, hands each result line to out
//   fs_replay_memory_options(limit)  the MemoryFile a replay runs on
//
// A result is one of three kinds (FsReplayCounts counts them):
//   ok        {"ok":true, ...}                  the operation succeeded
//   failed    {"ok":false, "errno":"EPERM", "message":...}   the layer refused
//             it, as a memfd would; a mapping access that a real mmap would
//             fault on adds "signal" (SIGBUS past the end of the file,
//             SIGSEGV outside the mapping or writing a read-only one)
//   error     {"ok":false, "error":"line 3: /offset: ..."}   the line was not
//             run: malformed, or past one of the replay's limits
// Every result carries "line" (counted from 1, blank lines included), and
// "seq" when the line had one; the results of well-formed lines carry "op".
//
// The script is hostile input: every size it gives is bounded (the limits
// below), the memory the files hold together is bounded by the MemoryFile's
// reservation (an operation that would need more fails with ENOMEM, as on a
// host out of memory), and no line can abort (short of a broken invariant
// of the layer's, a bug), throw, or grow memory without bound. Freed pages are waited back into the pool after each operation
// that frees, so that a replay's ENOMEMs do not depend on the reclaimer's
// timing.
//
// Thread safety: none; one thread runs a replay.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "memory/memory_file.h"
#include "memory/tmpfs/file_system.h"

namespace kvmem {

// Bytes one read, write, mread or mwrite may move.
inline constexpr uint64_t kFsReplayMaxIoBytes = uint64_t{1} << 20;
// A line: room for the largest write's hex and its keys.
inline constexpr uint64_t kFsReplayMaxLineBytes = 2 * kFsReplayMaxIoBytes + (uint64_t{64} << 10);
// Files with a name at once, and mappings at once.
inline constexpr size_t kFsReplayMaxFiles = 1024;
inline constexpr size_t kFsReplayMaxMappings = 1024;
// One mapping's length. A mapping's first access translates, and so
// allocates, all of it below the end of the file (host_mapping.h): the
// bound keeps what one access allocates within reason.
inline constexpr uint64_t kFsReplayMaxMapBytes = uint64_t{1} << 30;
// A mapping id: 1 to this many bytes.
inline constexpr size_t kFsReplayMaxIdBytes = 64;
// A string "seq": up to this many bytes.
inline constexpr size_t kFsReplayMaxSeqBytes = 256;

// The memory the files may hold together (--memory-limit): the reservation
// of the replay's MemoryFile. A power of two from one chunk (16 MiB) to 64 GiB.
inline constexpr uint64_t kFsReplayDefaultMemory = uint64_t{1} << 30;
inline constexpr uint64_t kFsReplayMinMemory = kChunkSize;
inline constexpr uint64_t kFsReplayMaxMemory = uint64_t{64} << 30;

// An error naming the limit unless `limit` is one the replay takes.
Status check_fs_replay_memory(uint64_t limit);
MemoryFileOptions fs_replay_memory_options(uint64_t limit);

struct FsReplayOptions {
  // Run every touched file's check_invariants() (which aborts on a broken
  // one: a bug in the layer) after each operation.
  bool check_invariants = false;
};

struct FsReplayCounts {
  uint64_t lines = 0;  // results produced (blank lines produce none)
  uint64_t ok = 0;
  uint64_t failed = 0;
  uint64_t errors = 0;          // lines not run: malformed or past a limit
  uint64_t first_error_line = 0;  // 0 when none
};

class FsReplay {
 public:
  // Preconditions: `memory` outlives the replay.
  explicit FsReplay(MemoryFile& memory, FsReplayOptions options = {});
  FsReplay(const FsReplay&) = delete;
  FsReplay& operator=(const FsReplay&) = delete;
  // Unmaps every mapping, then lets every file go.
  ~FsReplay();

  // Runs one line (its newline removed) numbered `line` and returns its
  // result. Never throws; counts the result.
  nlohmann::json run(std::string_view text, uint64_t line);
  // The result for line `line`, too long to be read (its bytes were skipped).
  nlohmann::json too_long(uint64_t line);

  const FsReplayCounts& counts() const { return counts_; }
  size_t mapping_count() const { return mappings_.size(); }
  tmpfs::FileSystem& file_system() { return fs_; }

  struct Mapping;  // harness/fs_replay_fields.h

 private:
  struct Op;
  static const Op* find_op(std::string_view name);

  nlohmann::json counted(nlohmann::json result, uint64_t line);

  Result<nlohmann::json> op_create(const nlohmann::json& j);
  Result<nlohmann::json> op_write(const nlohmann::json& j);
  Result<nlohmann::json> op_read(const nlohmann::json& j);
  Result<nlohmann::json> op_truncate(const nlohmann::json& j);
  Result<nlohmann::json> op_fallocate(const nlohmann::json& j);
  Result<nlohmann::json> op_add_seals(const nlohmann::json& j);
  Result<nlohmann::json> op_get_seals(const nlohmann::json& j);
  Result<nlohmann::json> op_stat(const nlohmann::json& j);
  Result<nlohmann::json> op_list(const nlohmann::json& j);
  Result<nlohmann::json> op_unlink(const nlohmann::json& j);
  Result<nlohmann::json> op_map(const nlohmann::json& j);
  Result<nlohmann::json> op_unmap(const nlohmann::json& j);
  Result<nlohmann::json> op_mwrite(const nlohmann::json& j);
  Result<nlohmann::json> op_mread(const nlohmann::json& j);

  // The mapping `j["id"]` names; an error (not a failure) when none does.
  Result<Mapping*> mapping_of(const nlohmann::json& j);
  void after_free();
  void check(const tmpfs::RegularFile& f) const;

  MemoryFile& memory_;
  const FsReplayOptions options_;
  tmpfs::FileSystem fs_;
  // Declared after fs_: the mappings go first, while their files still have names.
  std::map<std::string, std::unique_ptr<Mapping>, std::less<>> mappings_;
  FsReplayCounts counts_;
};

// Cuts a stream of bytes into lines and runs each through a replay. A line
// ends at "\n" (a "\r" before it is dropped); the last may end at the end of
// the stream. Blank lines are counted, not run. A line longer than
// kFsReplayMaxLineBytes is skipped to its end without being held, and
// reported as an error.
class FsReplayScript {
 public:
  // Called with each result, one line of JSON without its newline, and the
  // script's line it answers (empty for a line too long to hold).
  using Output = std::function<void(std::string_view result, std::string_view line)>;
  FsReplayScript(FsReplay& replay, Output out) : replay_(replay), out_(std::move(out)) {}

  void feed(std::span<const char> bytes);
  // The last line, if the stream did not end with a newline.
  void finish();
  uint64_t lines_read() const { return line_; }

 private:
  void end_line();

  FsReplay& replay_;
  Output out_;
  std::string pending_;   // the line so far, at most kFsReplayMaxLineBytes
  bool too_long_ = false;  // this line passed the bound: its bytes are skipped
  uint64_t line_ = 0;      // lines ended so far
};

}  // namespace kvmem
