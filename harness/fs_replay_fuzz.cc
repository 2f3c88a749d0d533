// Fuzz target "fs_replay": bytes -> what `kvmem fs replay` does with a script.
//
// The bytes are a script (docs/fs-replay.md), cut into lines and run by the
// same FsReplayScript and FsReplay the CLI uses, with every touched file's
// invariants checked after each operation. Each result line must be one
// JSON object of the documented shape: an error names its line, a layer's
// refusal carries an errno and a message, a fault is EFAULT with SIGBUS or
// SIGSEGV. What a successful write or mwrite wrote must read back, through
// the file or the same mapping, at once. When the replay is gone, every page
// the files held must be back in the allocator.
//
// One small MemoryFile (32 MiB) lives for the process, so that the memory
// limit is reached often and nothing grows from one input to the next.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/fuzz.h"
#include "config/fields.h"
#include "harness/fs_replay.h"
#include "memory/memory_file.h"

namespace kvmem::fuzz {
namespace {

using json = nlohmann::json;

MemoryFile& fuzz_memory() {
  static MemoryFile* file = [] {
    auto f = MemoryFile::create(fs_replay_memory_options(uint64_t{32} << 20));
    KVMEM_CHECK(f.has_value(), "cannot create the fuzz memory file: {}", f.error().message);
    return f->release();
  }();
  return *file;
}

bool is_nonempty_string(const json& r, const char* key) {
  return r.contains(key) && r[key].is_string() && !r[key].get_ref<const std::string&>().empty();
}

void check_result(std::string_view text) {
  const json r = json::parse(text, nullptr, /*allow_exceptions=*/false);
  KVMEM_CHECK(r.is_object(), "a result that is not one JSON object: {}", text);
  KVMEM_CHECK(r.contains("ok") && r["ok"].is_boolean(), "a result without \"ok\": {}", text);
  KVMEM_CHECK(r.contains("line") && r["line"].is_number_unsigned(), "a result without \"line\": {}", text);
  const std::string prefix = fmt::format("line {}: ", r["line"].get<uint64_t>());
  if (r.contains("error")) {
    KVMEM_CHECK(!r["ok"].get<bool>() && is_nonempty_string(r, "error") && !r.contains("op"), "a bad error result: {}",
                text);
    KVMEM_CHECK(r["error"].get<std::string>().starts_with(prefix), "an error that does not name its line: {}", text);
    return;
  }
  KVMEM_CHECK(is_nonempty_string(r, "op"), "a well-formed line's result without \"op\": {}", text);
  if (r["ok"].get<bool>()) {
    if (r.contains("data_hex"))
      KVMEM_CHECK(r["data_hex"].get<std::string>().size() == 2 * r["n"].get<uint64_t>(),
                  "data_hex and n disagree: {}", text);
    return;
  }
  // The layer gives an errno with every refusal (regular_file.h).
  KVMEM_CHECK(is_nonempty_string(r, "errno") && is_nonempty_string(r, "message"), "a refusal without errno: {}",
              text);
  if (r.contains("signal")) {
    const std::string sig = r["signal"].get<std::string>();
    KVMEM_CHECK((sig == "SIGBUS" || sig == "SIGSEGV") && r["errno"] == "EFAULT", "a bad fault: {}", text);
  }
}

// After a successful write or mwrite, reads back what it wrote (the first
// n bytes: a write under GROW may stop short) by a read or mread of the
// same place, which must succeed with the same bytes. Returns the lines run.
uint64_t check_read_back(FsReplay& replay, std::string_view result, std::string_view line) {
  const json r = json::parse(result, nullptr, false);
  if (!r.is_object() || r.value("ok", false) != true || !r.contains("op")) return 0;
  const std::string op = r["op"].get<std::string>();
  if (op != "write" && op != "mwrite") return 0;
  const uint64_t n = r["n"].get<uint64_t>();
  if (n == 0) return 0;
  const json in = json::parse(line);  // it ran, so it parses
  auto offset = json_fields::size_value(in["offset"], json_fields::Ptr());
  KVMEM_CHECK(offset.has_value(), "the offset of a line that ran: {}", line);
  json back = {{"op", op == "write" ? "read" : "mread"}, {"offset", *offset}, {"length", n}};
  if (op == "write") back["name"] = in["name"];
  else back["id"] = in["id"];
  const json got = replay.run(back.dump(), 0);
  std::string want = in["data_hex"].get<std::string>().substr(0, 2 * n);
  for (char& c : want) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));  // results are lower case
  KVMEM_CHECK(got.value("ok", false) == true && got.value("data_hex", "") == want, "{} then {} gave {}", line,
              back.dump(), got.dump());
  return 1;
}

}  // namespace

int fs_replay_one(const uint8_t* data, size_t size) {
  MemoryFile& memory = fuzz_memory();
  {
    FsReplay replay(memory, FsReplayOptions{.check_invariants = true});
    uint64_t results = 0, read_backs = 0;
    FsReplayScript script(replay, [&](std::string_view result, std::string_view line) {
      check_result(result);
      results++;
      read_backs += check_read_back(replay, result, line);
    });
    script.feed(std::span(reinterpret_cast<const char*>(data), size));
    script.finish();
    const FsReplayCounts& c = replay.counts();
    KVMEM_CHECK(results + read_backs == c.lines && c.lines == c.ok + c.failed + c.errors,
                "{} results and {} read-backs, counts {} = {} + {} + {}", results, read_backs, c.lines, c.ok,
                c.failed, c.errors);
  }
  // Every file and mapping is gone with the replay: their pages are free.
  memory.wait_for_reclaim();
  const uint64_t held = memory.usage().of(UsageKind::Tmpfs);
  KVMEM_CHECK(held == 0, "{:#x} bytes of files still held after the replay:\n{}", held, memory.dump_usage());
  memory.check_invariants();
  return 0;
}

}  // namespace kvmem::fuzz

KVMEM_FUZZ_TARGET(kvmem::fuzz::fs_replay_one)
