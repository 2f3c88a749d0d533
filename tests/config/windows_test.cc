// The config's shared "files" and each VM's "windows" onto them.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "config/vm_config.h"
#include "memory/tmpfs/regular_file.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

json box() { return json{{"name", "box"}, {"size", "2M"}, {"pattern", {{"seed", 7}}}, {"seals", {"shrink", "grow"}}}; }

json vm_with(json windows, json program = json::array()) {
  return json{{"memory", "16M"}, {"windows", std::move(windows)}, {"program", std::move(program)}};
}

json window(json at = "1G", json length = "2M") {
  return json{{"file", "box"}, {"at", std::move(at)}, {"offset", 0}, {"length", std::move(length)}, {"writable", true}};
}

std::string error_of(const json& config) {
  auto r = parse_run_config(config, "t");
  REQUIRE_FALSE(r);
  return r.error().message;
}

}  // namespace

TEST_CASE("files and windows parse in both forms, windows sorted by address", "[config][windows]") {
  json one = vm_with({window("1G"), window("0x20000000", "4K")});
  one["files"] = {box()};
  auto r = parse_run_config(one, "t");
  REQUIRE(r);
  REQUIRE(r->files.size() == 1);
  const FileConfig& f = r->files[0];
  CHECK(f.name == "box");
  CHECK(f.size == 2ull << 20);
  REQUIRE(f.pattern);
  CHECK(f.pattern->kind == guest::Pattern::Kind::kSeed);
  CHECK(f.seals == (tmpfs::kSealShrink | tmpfs::kSealGrow));
  REQUIRE(r->vms[0].windows.size() == 2);
  CHECK(r->vms[0].windows[0].at == 0x20000000);
  CHECK(r->vms[0].windows[1].guest() == GuestRange(1ull << 30, (1ull << 30) + (2ull << 20)));

  json many = {{"files", {box()}}, {"vms", {vm_with({window()}), vm_with({window()})}}};
  auto m = parse_run_config(many, "t");
  REQUIRE(m);
  CHECK(m->vms.size() == 2);
  CHECK(m->vms[1].windows[0].file == "box");
  // A file without pattern or seals; a window with neither offset nor writable.
  json bare = {{"files", {{{"name", "b"}, {"size", 4096}}}},
               {"vms", {vm_with({{{"file", "b"}, {"at", "32M"}, {"length", "4K"}}})}}};
  auto b = parse_run_config(bare, "t");
  REQUIRE(b);
  CHECK_FALSE(b->files[0].pattern);
  CHECK(b->files[0].seals == 0);
  CHECK(b->vms[0].windows[0].writable);
  CHECK(b->vms[0].windows[0].offset == 0);
}

TEST_CASE("steps may walk a window, but not across its end or between windows", "[config][windows]") {
  json ok = vm_with({window()}, {{{"op", "fill"}, {"at", "1G"}, {"length", "2M"}, {"pattern", "address"}},
                                 {{"op", "verify"}, {"at", "0x40100000"}, {"length", "1M"}, {"pattern", "address"}}});
  ok["files"] = {box()};
  CHECK(parse_run_config(ok, "t"));
  json across = vm_with({window()}, {{{"op", "fill"}, {"at", "0x401ff000"}, {"length", "8K"}, {"pattern", "zero"}}});
  across["files"] = {box()};
  CHECK(error_of(across) ==
        "/program/0/length: the range at 0x401ff000 of 0x2000 bytes runs past the end of the window "
        "[0x40000000, 0x40200000)");
  json outside = vm_with({window()}, {{{"op", "fill"}, {"at", "0x50000000"}, {"length", "8"}, {"pattern", "zero"}}});
  outside["files"] = {box()};
  CHECK(error_of(outside).find("runs past the end of RAM") != std::string::npos);
  json free = vm_with({window()}, {{{"op", "free"}, {"at", "1G"}, {"length", "2M"}}});
  free["files"] = {box()};
  CHECK(error_of(free) ==
        "/program/0/at: free hands back RAM only; the range at 0x40000000 of 0x200000 bytes lies in a window");
}

TEST_CASE("bad files and windows are refused with their pointer", "[config][windows]") {
  struct Case {
    json files;
    json windows;
    const char* want;
  } cases[] = {
      {{box()}, {window("8M")}, "/windows/0/at: 0x800000 lies in RAM [0x0, 0x1000000): a window goes above RAM"},
      {{box()}, {window("0x40000800")}, "/windows/0/at: 0x40000800 is not a multiple of the page size (4K)"},
      {{box()}, {window("1G", "100")}, "/windows/0/length: must be a non-zero multiple of the page size (4K), found 0x64"},
      {{box()}, {window("1G", 0)}, "/windows/0/length: must be a non-zero multiple of the page size (4K), found 0x0"},
      {{box()}, {window("31G", "2G")},
       "/windows/0/length: the window at 0x7c0000000 of 0x80000000 bytes runs past 0x800000000, as far as the guest's "
       "page tables reach"},
      {{box()}, {window("1G"), window("0x40100000")},
       "/windows/1: [0x40100000, 0x40300000) overlaps the window [0x40000000, 0x40200000) onto \"box\""},
      {{box()}, {{{"file", "nope"}, {"at", "1G"}, {"length", "4K"}}},
       "/windows/0/file: no file \"nope\" in the config's \"files\""},
      {{box()}, {{{"file", "box"}, {"at", "1G"}, {"length", "4K"}, {"mode", 1}}}, "/windows/0/mode: unknown key"},
      {{box(), box()}, {window()}, "/files/1/name: \"box\" names two files"},
      {{{{"name", "a/b"}, {"size", 1}}}, json::array(), "/files/0/name: expected 1 to 249 characters"},
      {{{{"name", "a"}, {"size", "65G"}}}, json::array(), "/files/0/size: 0x1040000000 is more than the 64 GiB"},
      {{{{"name", "a"}, {"size", 1}, {"seals", {"glue"}}}}, json::array(), "/files/0/seals/0: "},
      {{{{"name", "a"}}}, json::array(), "/files/0: missing required key \"size\""},
      {"box", json::array(), "/files: expected an array of at most 64 files"},
  };
  for (const Case& c : cases) {
    json config = vm_with(c.windows);
    config["files"] = c.files;
    INFO(config.dump());
    CHECK_THAT(error_of(config), Catch::Contains(c.want));
  }
  // A VM's config alone (parse_vm_config) knows no files: a window is refused.
  auto alone = parse_vm_config(vm_with({window()}), "t");
  REQUIRE_FALSE(alone);
  CHECK(alone.error().message == "/windows/0/file: no file \"box\" in the config's \"files\"");
  // "files" belongs to the top level, not inside one of several VMs.
  json nested = {{"files", {box()}}, {"vms", {vm_with({window()})}}};
  nested["vms"][0]["files"] = {box()};
  CHECK_THAT(error_of(nested), Catch::Contains("/vms/0/files: unknown key"));
}
