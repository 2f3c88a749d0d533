// The replay engine of `kvmem fs replay` (harness/fs_replay.h): each op's
// result, each errno the file layer gives, malformed lines, the limits.
// The binary itself is tested in tests/cli/fs_replay_test.cc.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "harness/fs_replay.h"
#include "memory/memory_file.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

// A replay on its own memory file of `limit` bytes; run() feeds it a
// script and returns the results, one JSON value per line printed.
class Replay {
 public:
  explicit Replay(uint64_t limit = 64 * kMiB) {
    auto f = MemoryFile::create(fs_replay_memory_options(limit));
    REQUIRE(f.has_value());
    memory_ = std::move(*f);
    replay_ = std::make_unique<FsReplay>(*memory_, FsReplayOptions{.check_invariants = true});
  }
  std::vector<json> run(std::string_view script) {
    std::vector<json> out;
    FsReplayScript s(*replay_, [&out](std::string_view line, std::string_view) {
      INFO(line);
      REQUIRE(line.find('\n') == std::string_view::npos);
      out.push_back(json::parse(line));
    });
    s.feed(std::span(script.data(), script.size()));
    s.finish();
    return out;
  }
  // The result of one line.
  json one(std::string_view line) {
    auto r = run(line);
    REQUIRE(r.size() == 1);
    return r[0];
  }
  FsReplay& replay() { return *replay_; }
  MemoryFile& memory() { return *memory_; }
  void end() { replay_.reset(); }

 private:
  std::unique_ptr<MemoryFile> memory_;
  std::unique_ptr<FsReplay> replay_;
};

std::vector<std::string> keys_of(const json& j) {
  std::vector<std::string> k;
  for (auto it = j.begin(); it != j.end(); ++it) k.push_back(it.key());
  return k;
}

using Keys = std::vector<std::string>;

}  // namespace

TEST_CASE("every op's success has the documented keys", "[fs_replay]") {
  Replay r;
  struct Case {
    const char* line;
    Keys keys;  // sorted, as the library writes them
  };
  const Case cases[] = {
      {R"({"op":"create","name":"a","allow_seals":true})", {"line", "ok", "op"}},
      {R"({"op":"write","name":"a","offset":0,"data_hex":"00ff"})", {"line", "n", "ok", "op"}},
      {R"({"op":"read","name":"a","offset":0,"length":16})", {"data_hex", "line", "n", "ok", "op"}},
      {R"({"op":"truncate","name":"a","size":8192})", {"line", "ok", "op"}},
      {R"({"op":"fallocate","name":"a","mode":"keep_size","offset":0,"length":4096})", {"line", "ok", "op"}},
      {R"({"op":"add_seals","name":"a","seals":["shrink"]})", {"line", "ok", "op"}},
      {R"({"op":"get_seals","name":"a"})", {"line", "ok", "op", "seals"}},
      {R"({"op":"stat","name":"a"})",
       {"allocated", "line", "mappings", "ok", "op", "seals", "size", "writable_mapped_pages"}},
      {R"({"op":"list"})", {"line", "names", "ok", "op"}},
      {R"({"op":"map","name":"a","id":"m1","offset":0,"length":4096,"writable":true})", {"line", "ok", "op"}},
      {R"({"op":"mwrite","id":"m1","offset":0,"data_hex":"abcd"})", {"line", "n", "ok", "op"}},
      {R"({"op":"mread","id":"m1","offset":0,"length":4})", {"data_hex", "line", "n", "ok", "op"}},
      {R"({"op":"unmap","id":"m1"})", {"line", "ok", "op"}},
      {R"({"op":"unlink","name":"a"})", {"line", "ok", "op"}},
  };
  for (const Case& c : cases) {
    INFO(c.line);
    json out = r.one(c.line);
    INFO(out.dump());
    CHECK(out["ok"] == true);
    CHECK(keys_of(out) == c.keys);
  }
  CHECK(r.replay().counts().ok == std::size(cases));
}

TEST_CASE("the values of a small script are what a memfd would give", "[fs_replay]") {
  Replay r;
  auto out = r.run(R"({"op":"create","name":"a","allow_seals":true}
{"op":"write","name":"a","offset":4094,"data_hex":"0102A0B0"}
{"op":"read","name":"a","offset":4092,"length":16}
{"op":"stat","name":"a"}
{"op":"add_seals","name":"a","seals":["grow","shrink"]}
{"op":"get_seals","name":"a"}
{"op":"map","name":"a","id":"m","offset":4096,"length":100,"writable":true}
{"op":"mread","id":"m","offset":0,"length":2}
{"op":"mwrite","id":"m","offset":1,"data_hex":"ee"}
{"op":"read","name":"a","offset":4096,"length":8}
{"op":"fallocate","name":"a","mode":"punch_hole","offset":0,"length":4096}
{"op":"read","name":"a","offset":4092,"length":4}
{"op":"list"}
)");
  REQUIRE(out.size() == 13);
  CHECK(out[1]["n"] == 4);
  CHECK(out[2]["data_hex"] == "00000102a0b0");  // a short read: the file ends at 4098
  CHECK(out[2]["n"] == 6);
  CHECK(out[3]["size"] == 4098);
  CHECK(out[3]["allocated"] == 8192);
  CHECK(out[3]["seals"] == json::array());
  CHECK(out[5]["seals"] == json({"shrink", "grow"}));
  CHECK(out[7]["data_hex"] == "a0b0");
  CHECK(out[9]["data_hex"] == "a0ee");
  CHECK(out[11]["data_hex"] == "00000000");
  CHECK(out[12]["names"] == json({"a"}));
  for (size_t i = 0; i < out.size(); i++) CHECK(out[i]["line"] == i + 1);
}

TEST_CASE("each errno the file layer gives reaches the result by its Linux name", "[fs_replay]") {
  Replay r;
  struct Case {
    const char* line;
    const char* err;
  };
  // State: file "s" (4 KiB) allows seals and is mapped writable as "w"; "n"
  // does not allow seals.
  REQUIRE(r.run(R"({"op":"create","name":"s","allow_seals":true}
{"op":"truncate","name":"s","size":4096}
{"op":"create","name":"n"}
{"op":"map","name":"s","id":"w","offset":0,"length":4096,"writable":true}
)").size() == 4);
  const Case cases[] = {
      {R"({"op":"create","name":"s"})", "EEXIST"},
      {R"({"op":"create","name":""})", "EINVAL"},
      {R"({"op":"create","name":"a/b"})", "EINVAL"},
      {R"({"op":"stat","name":"missing"})", "ENOENT"},
      {R"({"op":"read","name":"missing","offset":0,"length":1})", "ENOENT"},
      {R"({"op":"unlink","name":"missing"})", "ENOENT"},
      {R"({"op":"map","name":"missing","id":"x","offset":0,"length":4096})", "ENOENT"},
      {R"({"op":"add_seals","name":"n","seals":["write"]})", "EPERM"},
      {R"({"op":"add_seals","name":"s","seals":32})", "EINVAL"},
      {R"({"op":"add_seals","name":"s","seals":["write"]})", "EBUSY"},
      {R"({"op":"fallocate","name":"s","offset":0,"length":0})", "EINVAL"},
      {R"({"op":"truncate","name":"s","size":"0x8000000000000000"})", "EINVAL"},  // negative as off_t
      {R"({"op":"write","name":"s","offset":"0x7fffffffffffffff","data_hex":"0000"})", "EINVAL"},
      {R"({"op":"fallocate","name":"s","offset":"0x7ffffffffffff000","length":"0x1000"})", "EFBIG"},
      {R"({"op":"map","name":"s","id":"x","offset":1,"length":4096})", "EINVAL"},
      {R"({"op":"map","name":"s","id":"x","offset":0,"length":0})", "EINVAL"},
      {R"({"op":"fallocate","name":"s","offset":0,"length":"128M"})", "ENOMEM"},
      {R"({"op":"add_seals","name":"s","seals":["future_write","grow"]})", nullptr},
      {R"({"op":"write","name":"s","offset":0,"data_hex":"00"})", "EPERM"},
      {R"({"op":"fallocate","name":"s","mode":"punch_hole","offset":0,"length":4096})", "EPERM"},
      {R"({"op":"truncate","name":"s","size":"1M"})", "EPERM"},
      {R"({"op":"write","name":"s","offset":4096,"data_hex":"00"})", "EPERM"},
      {R"({"op":"map","name":"s","id":"x","offset":0,"length":4096,"writable":true})", "EPERM"},
      {R"({"op":"add_seals","name":"s","seals":["seal"]})", nullptr},
      {R"({"op":"add_seals","name":"s","seals":["shrink"]})", "EPERM"},
  };
  for (const Case& c : cases) {
    INFO(c.line);
    json out = r.one(c.line);
    INFO(out.dump());
    if (!c.err) {
      CHECK(out["ok"] == true);
      continue;
    }
    CHECK(out["ok"] == false);
    CHECK(out["errno"] == c.err);
    CHECK_FALSE(out["message"].get<std::string>().empty());
    CHECK(keys_of(out) == Keys{"errno", "line", "message", "ok", "op"});
  }
  // FUTURE_WRITE keeps the existing writable mapping working.
  CHECK(r.one(R"({"op":"mwrite","id":"w","offset":0,"data_hex":"77"})")["ok"] == true);
  CHECK(r.replay().counts().errors == 0);
}

TEST_CASE("mapping accesses report the signal a real mmap would raise", "[fs_replay]") {
  Replay r;
  REQUIRE(r.run(R"({"op":"create","name":"a"}
{"op":"truncate","name":"a","size":100}
{"op":"map","name":"a","id":"w","offset":0,"length":12288,"writable":true}
{"op":"map","name":"a","id":"r","offset":0,"length":100}
)").size() == 4);
  struct Case {
    const char* line;
    const char* signal;  // null: succeeds
  };
  const Case cases[] = {
      {R"({"op":"mread","id":"w","offset":4000,"length":96})", nullptr},   // the tail of the last page reads zero
      {R"({"op":"mwrite","id":"w","offset":4095,"data_hex":"01"})", nullptr},
      {R"({"op":"mread","id":"w","offset":4096,"length":1})", "SIGBUS"},   // a page wholly past the end
      {R"({"op":"mread","id":"w","offset":4095,"length":2})", "SIGBUS"},   // crossing into it
      {R"({"op":"mwrite","id":"w","offset":8192,"data_hex":"00"})", "SIGBUS"},
      {R"({"op":"mread","id":"r","offset":4095,"length":1})", nullptr},    // the mapping covers whole pages
      {R"({"op":"mread","id":"r","offset":4096,"length":1})", "SIGSEGV"},  // past the mapping
      {R"({"op":"mread","id":"w","offset":12287,"length":2})", "SIGSEGV"},
      {R"({"op":"mread","id":"w","offset":18446744073709551615,"length":2})", "SIGSEGV"},
      {R"({"op":"mwrite","id":"r","offset":0,"data_hex":"00"})", "SIGSEGV"},  // read-only
  };
  for (const Case& c : cases) {
    INFO(c.line);
    json out = r.one(c.line);
    INFO(out.dump());
    if (!c.signal) {
      CHECK(out["ok"] == true);
      continue;
    }
    CHECK(out["ok"] == false);
    CHECK(out["signal"] == c.signal);
    CHECK(out["errno"] == "EFAULT");
    CHECK(keys_of(out) == Keys{"errno", "line", "message", "ok", "op", "signal"});
  }
  // Writes past the size into the last page never reach read().
  CHECK(r.one(R"({"op":"read","name":"a","offset":0,"length":200})")["n"] == 100);
}

TEST_CASE("a mapping outlives its file's name and its data follows truncation", "[fs_replay]") {
  Replay r;
  auto out = r.run(R"({"op":"create","name":"a"}
{"op":"write","name":"a","offset":0,"data_hex":"68656c6c6f"}
{"op":"truncate","name":"a","size":16384}
{"op":"map","name":"a","id":"m","offset":0,"length":16384,"writable":true}
{"op":"mwrite","id":"m","offset":12288,"data_hex":"ff"}
{"op":"truncate","name":"a","size":4096}
{"op":"truncate","name":"a","size":16384}
{"op":"mread","id":"m","offset":12288,"length":1}
{"op":"unlink","name":"a"}
{"op":"stat","name":"a"}
{"op":"mread","id":"m","offset":0,"length":5}
{"op":"unmap","id":"m"}
)");
  REQUIRE(out.size() == 12);
  CHECK(out[7]["data_hex"] == "00");  // the truncate dropped the page the mapping had written
  CHECK(out[9]["errno"] == "ENOENT");
  CHECK(out[10]["data_hex"] == "68656c6c6f");
  for (const json& o : out)
    if (&o != &out[9]) CHECK(o["ok"] == true);
}

TEST_CASE("malformed lines get an error naming the line and the key, and the replay goes on", "[fs_replay]") {
  Replay r;
  struct Case {
    std::string line;
    std::string error;  // the whole message after "line N: "
  };
  const std::string big_hex(2 * kFsReplayMaxIoBytes + 2, '0');
  const std::vector<Case> cases = {
      {"not json", "not valid JSON: "},
      {"[1, 2]", "/: expected an object, found array"},
      {R"({"name":"a"})", "/: missing required key \"op\""},
      {R"({"op":7})", "/op: expected a string, found number"},
      {R"({"op":"frobnicate"})", "/op: unknown op \"frobnicate\" (expected create, write, read, truncate,"},
      {R"({"op":"create"})", "/: missing required key \"name\""},
      {R"({"op":"create","name":5})", "/name: expected a string, found number"},
      {R"({"op":"create","name":"a","bogus":1})", "/bogus: unknown key (expected one of: op, seq, name, allow_seals)"},
      {R"({"op":"create","name":"a","allow_seals":"yes"})", "/allow_seals: "},
      {R"({"op":"read","name":"a","offset":-1,"length":1})", "/offset: must not be negative, found -1"},
      {R"({"op":"read","name":"a","offset":1.5,"length":1})", "/offset: expected a whole number of bytes"},
      {R"({"op":"read","name":"a","offset":1e30,"length":1})", "/offset: expected a whole number of bytes"},
      {R"({"op":"read","name":"a","offset":0,"length":"2M"})", "/length: 0x200000 is more than 0x100000"},
      {R"({"op":"write","name":"a","offset":0,"data_hex":"abc"})", "/data_hex: an odd number of hex digits (3)"},
      {R"({"op":"write","name":"a","offset":0,"data_hex":"0g"})", "/data_hex: not a hex digit at index 1"},
      {R"({"op":"write","name":"a","offset":0,"data_hex":")" + big_hex + "\"}", "/data_hex: 2097154 hex digits"},
      {R"({"op":"fallocate","name":"a","mode":"zero","offset":0,"length":1})", "/mode: unknown mode \"zero\""},
      {R"({"op":"add_seals","name":"a","seals":["exec"]})", "/seals/0: "},
      {R"({"op":"add_seals","name":"a","seals":"write"})", "/seals: expected a list of seal names"},
      {R"({"op":"map","name":"a","id":"m","offset":0,"length":"2G"})", "/length: 0x80000000 is more than 0x40000000"},
      {R"({"op":"map","name":"a","id":"","offset":0,"length":4096})", "/id: empty"},
      {R"({"op":"unmap","id":"nope"})", "/id: no mapping \"nope\" (map it first)"},
      {R"({"op":"mread","id":"nope","offset":0,"length":1})", "/id: no mapping \"nope\""},
      {R"({"op":"list","seq":[1]})", "/seq: expected an integer or a string"},
      {"{\"op\":\"list\",\"seq\":" + std::string(20, '[') + std::string(20, ']') + "}", "nested more than 8 deep"},
  };
  for (const Case& c : cases) {
    INFO(c.line.substr(0, 200));
    json out = r.one(c.line);
    INFO(out.dump().substr(0, 400));
    CHECK(out["ok"] == false);
    CHECK(keys_of(out) == Keys{"error", "line", "ok"});
    CHECK(out["line"] == 1);  // each case is a script of its own
    CHECK(out["error"].get<std::string>().starts_with("line 1: " + c.error));
  }
  CHECK(r.replay().counts().errors == cases.size());
  CHECK(r.replay().counts().first_error_line == 1);
  CHECK(r.one(R"({"op":"list"})")["ok"] == true);  // and it goes on
}

TEST_CASE("seq is echoed and lines are counted with blank ones, CRLF or no final newline", "[fs_replay]") {
  Replay r;
  auto out = r.run("{\"op\":\"create\",\"name\":\"a\",\"seq\":7}\r\n\n  \n{\"op\":\"bogus\",\"seq\":\"x\"}\n"
                         "{\"op\":\"list\"}");
  REQUIRE(out.size() == 3);
  CHECK(out[0]["seq"] == 7);
  CHECK(out[0]["line"] == 1);
  CHECK(out[1]["seq"] == "x");
  CHECK(out[1]["line"] == 4);
  CHECK(out[1].contains("error"));
  CHECK(out[2]["line"] == 5);
  CHECK_FALSE(out[2].contains("seq"));
  CHECK(r.replay().counts().lines == 3);
}

TEST_CASE("the script hands each result over with the line it answers", "[fs_replay]") {
  Replay r;
  std::vector<std::pair<std::string, std::string>> got;
  FsReplayScript s(r.replay(), [&got](std::string_view result, std::string_view line) {
    got.emplace_back(std::string(result), std::string(line));
  });
  const std::string script = "{\"op\":\"list\"}\r\n\n{\"op\":\"x\"}";
  s.feed(std::span(script.data(), 5));  // a line may arrive in pieces
  s.feed(std::span(script.data() + 5, script.size() - 5));
  s.finish();
  REQUIRE(got.size() == 2);
  CHECK(got[0].second == "{\"op\":\"list\"}");
  CHECK(json::parse(got[0].first)["ok"] == true);
  CHECK(got[1].second == "{\"op\":\"x\"}");
  CHECK(json::parse(got[1].first)["line"] == 3);
  CHECK(s.lines_read() == 3);
}

TEST_CASE("a line past the bound is skipped without being held, and the next one runs", "[fs_replay]") {
  Replay r;
  std::vector<json> out;
  FsReplayScript s(r.replay(), [&out](std::string_view line, std::string_view) { out.push_back(json::parse(line)); });
  const std::string piece(64 << 10, 'x');
  s.feed(std::span(piece.data(), piece.size()));
  for (uint64_t fed = piece.size(); fed <= kFsReplayMaxLineBytes + piece.size(); fed += piece.size())
    s.feed(std::span(piece.data(), piece.size()));
  const std::string next = "\n{\"op\":\"list\"}\n";
  s.feed(std::span(next.data(), next.size()));
  s.finish();
  REQUIRE(out.size() == 2);
  CHECK(out[0]["error"] == fmt::format("line 1: longer than {} bytes; skipped", kFsReplayMaxLineBytes));
  CHECK(out[1]["ok"] == true);
  CHECK(out[1]["line"] == 2);
}

TEST_CASE("the largest write and read fit in a line and move a MiB", "[fs_replay]") {
  Replay r;
  const std::string hex(2 * kFsReplayMaxIoBytes, 'a');
  const std::string script = "{\"op\":\"create\",\"name\":\"a\"}\n"
                             "{\"op\":\"write\",\"name\":\"a\",\"offset\":0,\"data_hex\":\"" + hex + "\"}\n"
                             "{\"op\":\"read\",\"name\":\"a\",\"offset\":0,\"length\":\"1M\"}\n";
  REQUIRE(script.size() < 2 * kFsReplayMaxLineBytes);
  auto out = r.run(script);
  REQUIRE(out.size() == 3);
  CHECK(out[1]["n"] == kFsReplayMaxIoBytes);
  CHECK(out[2]["data_hex"] == hex);
}

TEST_CASE("the number of files and of mappings is bounded", "[fs_replay]") {
  Replay r;
  std::string script;
  for (size_t i = 0; i <= kFsReplayMaxFiles; i++) script += fmt::format("{{\"op\":\"create\",\"name\":\"f{}\"}}\n", i);
  auto out = r.run(script);
  REQUIRE(out.size() == kFsReplayMaxFiles + 1);
  CHECK(out[kFsReplayMaxFiles - 1]["ok"] == true);
  CHECK(out.back()["error"].get<std::string>().find("the replay keeps at most 1024") != std::string::npos);
  script.clear();
  for (size_t i = 0; i <= kFsReplayMaxMappings; i++)
    script += fmt::format("{{\"op\":\"map\",\"name\":\"f0\",\"id\":\"m{}\",\"offset\":0,\"length\":4096}}\n", i);
  out = r.run(script);
  REQUIRE(out.size() == kFsReplayMaxMappings + 1);
  CHECK(out[kFsReplayMaxMappings - 1]["ok"] == true);
  CHECK(out.back()["error"].get<std::string>().find("the replay keeps at most 1024") != std::string::npos);
  CHECK(r.replay().mapping_count() == kFsReplayMaxMappings);
}

TEST_CASE("the memory limit turns a large allocation into ENOMEM and the replay goes on", "[fs_replay]") {
  Replay r(16 * kMiB);
  auto out = r.run(R"({"op":"create","name":"a"}
{"op":"fallocate","name":"a","offset":0,"length":"32M"}
{"op":"truncate","name":"a","size":"1T"}
{"op":"write","name":"a","offset":"512G","data_hex":"01"}
{"op":"stat","name":"a"}
)");
  REQUIRE(out.size() == 5);
  CHECK(out[1]["errno"] == "ENOMEM");
  CHECK(out[3]["ok"] == true);  // a sparse file costs its pages only
  CHECK(out[4]["size"] == uint64_t{1} << 40);
  CHECK(check_fs_replay_memory(16 * kMiB).has_value());
  CHECK_FALSE(check_fs_replay_memory(100 * kMiB).has_value());
  CHECK_FALSE(check_fs_replay_memory(8 * kMiB).has_value());
  CHECK_FALSE(check_fs_replay_memory(uint64_t{128} << 30).has_value());
}

TEST_CASE("a mapping access with no memory left for its page is ENOMEM, not a signal", "[fs_replay]") {
  Replay r(16 * kMiB);
  auto out = r.run(R"({"op":"create","name":"b"}
{"op":"truncate","name":"b","size":"1M"}
{"op":"map","name":"b","id":"m","offset":0,"length":"1M","writable":true}
{"op":"create","name":"a"}
{"op":"fallocate","name":"a","offset":0,"length":"15M"}
{"op":"fallocate","name":"a","offset":"15M","length":"1M"}
{"op":"mread","id":"m","offset":0,"length":1}
{"op":"mwrite","id":"m","offset":0,"data_hex":"00"}
{"op":"truncate","name":"a","size":0}
{"op":"mwrite","id":"m","offset":0,"data_hex":"00"}
)");
  REQUIRE(out.size() == 10);
  for (size_t i = 0; i < 6; i++) CHECK(out[i].value("ok", false) == true);
  for (size_t i : {size_t{6}, size_t{7}}) {
    INFO(out[i].dump());
    CHECK(out[i].value("errno", "") == "ENOMEM");
    CHECK_FALSE(out[i].contains("signal"));
  }
  CHECK(out[9].value("ok", false) == true);  // the truncate gave the memory back
}

TEST_CASE("when a replay ends, every page its files and mappings held is free again", "[fs_replay]") {
  Replay r;
  REQUIRE(r.run(R"({"op":"create","name":"a"}
{"op":"write","name":"a","offset":0,"data_hex":"0102"}
{"op":"fallocate","name":"a","offset":0,"length":"1M"}
{"op":"map","name":"a","id":"m","offset":0,"length":"2M","writable":true}
{"op":"mwrite","id":"m","offset":"1M","data_hex":"00"}
{"op":"unlink","name":"a"}
)").size() == 6);
  r.end();
  r.memory().wait_for_reclaim();
  CHECK(r.memory().usage().of(UsageKind::Tmpfs) == 0);
  r.memory().check_invariants();
}
