// `kvmem run --snapshot-to DIR` and `kvmem restore --eager`: a guest fills,
// frees, snapshots and exits; the restored VM verifies all of it. Damaged
// snapshots exit 2 naming what is wrong.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "snapshot/format.h"
#include "tests/cli/cli_support.h"
#include "tests/snapshot/snapshot_helpers.h"

using namespace kvmem::test;
using json = nlohmann::json;

namespace {

// A folder that is removed (with what is in it) when the test ends.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/kvmem-snap-XXXXXX";
    REQUIRE(mkdtemp(tmpl));
    path_ = tmpl;
  }
  ~TempDir() { (void)!std::system(("rm -rf " + path_).c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

json pattern(uint64_t seed) { return {{"seed", seed}}; }

json program_of(unsigned vcpu) {
  const uint64_t base = (4 + 16 * vcpu) << 20;
  auto at = [&](uint64_t mib) { return base + (mib << 20); };
  return json::array({
      {{"op", "fill"}, {"at", at(0)}, {"length", 8 << 20}, {"pattern", pattern(9 + vcpu)}},
      {{"op", "free"}, {"at", at(0)}, {"length", 2 << 20}, {"granule", "64K"}, {"mode", "sync"}},
      {{"op", "print"}, {"text", "before\n"}},
      {{"op", "snapshot"}, {"then", "exit"}},
      {{"op", "verify"}, {"at", at(2)}, {"length", 6 << 20}, {"pattern", pattern(9 + vcpu)}},
      {{"op", "verify"}, {"at", at(0)}, {"length", 2 << 20}, {"pattern", "zero"}},
      // A free report after the restore: under --lazy, over pages it may
      // still owe; they must read zero, not come back from the snapshot.
      {{"op", "free"}, {"at", at(4)}, {"length", 2 << 20}, {"granule", "64K"}, {"mode", "sync"}},
      {{"op", "verify"}, {"at", at(4)}, {"length", 2 << 20}, {"pattern", "zero"}},
      {{"op", "verify"}, {"at", at(6)}, {"length", 2 << 20}, {"pattern", pattern(9 + vcpu)}},
      {{"op", "print"}, {"text", "after\n"}},
  });
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

}  // namespace

TEST_CASE("run --snapshot-to writes the VM at its snapshot step, and restore --eager and --lazy resume it",
          "[cli][kvm][snapshot]") {
  if (!kvm_available("snapshot and restore")) return;
  for (unsigned vcpus : {1u, 2u}) {
    INFO(vcpus << " vCPUs");
    json c = {{"name", "snap"}, {"memory", "48M"}, {"vcpus", vcpus}};
    if (vcpus == 1) c["program"] = program_of(0);
    else c["programs"] = {program_of(0), program_of(1)};
    TempConfig config(c.dump());
    TempDir dir;
    CommandResult r = run_kvmem({"run", "--snapshot-to", dir.path(), config.path()});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("after") == std::string::npos);  // then exit: it ended at the step
    const std::string snap = dir.path() + "/snap.kvmsnap";
    struct stat st {};
    REQUIRE(::stat(snap.c_str(), &st) == 0);
    // Only committed non-zero pages: 6 MiB a vCPU, the boot area and page
    // tables besides; no more than that plus 1% and 64 KiB.
    const uint64_t data = vcpus * (6ull << 20);
    CHECK(static_cast<uint64_t>(st.st_size) >= data);
    CHECK(static_cast<uint64_t>(st.st_size) <= (data + (1ull << 20)) * 101 / 100 + (64u << 10));

    for (const char* mode : {"--eager", "--lazy"}) {
      INFO(mode);
      CommandResult back = run_kvmem({"restore", mode, snap});
      INFO(back.out << back.err);
      CHECK(back.exit_code == 0);
      CHECK(back.out.find("before") == std::string::npos);
      CHECK(back.out.find("after") != std::string::npos);
    }

    CommandResult js = run_kvmem({"restore", "--json", snap});
    INFO(js.out << js.err);
    REQUIRE(js.exit_code == 0);
    const json report = json::parse(js.out);
    CHECK(report.at("vms").at(0).at("outcome") == "exited");
    CHECK(report.at("vms").at(0).at("restore").at("extents").get<uint64_t>() > 0);
    CHECK(report.at("vms").at(0).at("restore").at("bytes").get<uint64_t>() >= data);
    CHECK(!report.at("vms").at(0).at("restore").contains("lazy"));

    CommandResult lz = run_kvmem({"restore", "--lazy", "--json", snap});
    INFO(lz.out << lz.err);
    REQUIRE(lz.exit_code == 0);
    const json lr = json::parse(lz.out).at("vms").at(0).at("restore");
    CHECK(lr.at("mode") == "lazy");
    CHECK(lr.at("bytes") == 0);  // nothing read before the guest ran
    const json& l = lr.at("lazy");
    CHECK(l.at("complete") == true);
    CHECK(l.at("error").is_null());
    // The filler may stay ahead of the guest and leave no fault to serve
    // (tests/harness/restore_test.cc runs without it).
    CHECK(l.at("faults").get<uint64_t>() >= l.at("extents_on_demand").get<uint64_t>());
    // Every data byte came in once: on demand, by the filler, or dropped
    // by the free report before anyone loaded it.
    const uint64_t in = l.at("bytes_on_demand").get<uint64_t>() + l.at("bytes_filled").get<uint64_t>() +
                        l.at("bytes_forgotten").get<uint64_t>();
    CHECK(in >= data);
    CHECK(in <= data + (1ull << 20));
  }
}

TEST_CASE("many VMs snapshot at once and are restored together, lazily and eagerly", "[cli][kvm][snapshot]") {
  if (!kvm_available("many VMs snapshot and restore")) return;
  json vms = json::array();
  for (unsigned i = 0; i < 3; i++) {
    json vm = {{"name", "vm" + std::to_string(i)}, {"memory", "48M"}, {"vcpus", i == 2 ? 2 : 1}};
    if (i == 2) vm["programs"] = {program_of(0), program_of(1)};
    else vm["program"] = program_of(0);
    vms.push_back(vm);
  }
  TempConfig config(json({{"vms", vms}}).dump());
  TempDir dir;
  CommandResult r = run_kvmem({"run", "--snapshot-to", dir.path(), config.path()});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  std::vector<std::string> args = {"restore", "", "--json"};
  for (unsigned i = 0; i < 3; i++) args.push_back(dir.path() + "/vm" + std::to_string(i) + ".kvmsnap");
  for (const char* mode : {"--eager", "--lazy"}) {
    INFO(mode);
    args[1] = mode;
    CommandResult back = run_kvmem(args);
    INFO(back.out << back.err);
    REQUIRE(back.exit_code == 0);
    const json report = json::parse(back.out);
    REQUIRE(report.at("vms").size() == 3);
    for (unsigned i = 0; i < 3; i++) {
      const json& v = report.at("vms").at(i);
      CHECK(v.at("name") == "vm" + std::to_string(i));
      CHECK(v.at("outcome") == "exited");
      CHECK(v.at("console") == (i == 2 ? "after\nafter\n" : "after\n"));
      CHECK(v.at("restore").at("mode") == std::string(mode + 2));
      CHECK(v.at("restore").at("snapshot") == args[3 + i]);
    }
  }
  // Text: each VM's lines behind its name.
  CommandResult text = run_kvmem({"restore", "--lazy", args[3], args[4]});
  INFO(text.out << text.err);
  CHECK(text.exit_code == 0);
  CHECK((text.out == "[vm0] after\n[vm1] after\n" || text.out == "[vm1] after\n[vm0] after\n"));
  // The same VM twice: refused before anything runs.
  CommandResult twice = run_kvmem({"restore", args[3], args[3]});
  CHECK(twice.exit_code == 2);
  CHECK_THAT(twice.err, Catch::Contains("names must differ"));
}

TEST_CASE("without --snapshot-to the snapshot step does nothing", "[cli][kvm][snapshot]") {
  if (!kvm_available("snapshot step without a folder")) return;
  TempConfig config(json({{"memory", "32M"}, {"program", program_of(0)}}).dump());
  CommandResult r = run_kvmem({"run", config.path()});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out == "before\nafter\n");
}

TEST_CASE("a damaged snapshot is refused with exit 2 naming what is wrong", "[cli][kvm][snapshot]") {
  if (!kvm_available("damaged snapshots")) return;
  TempConfig config(json({{"name", "snap"}, {"memory", "32M"}, {"program", program_of(0)}}).dump());
  TempDir dir;
  REQUIRE(run_kvmem({"run", "--snapshot-to", dir.path(), config.path()}).exit_code == 0);
  const std::string good = read_file(dir.path() + "/snap.kvmsnap");
  REQUIRE(good.size() > 8192);
  const std::string bad = dir.path() + "/bad.kvmsnap";
  struct Case {
    std::string bytes;
    const char* want;
  };
  std::string flipped = good;
  flipped[8192] ^= 0x01;  // a byte of the first extent's data
  std::string magic = good;
  magic[0] ^= 0x01;
  const Case cases[] = {
      {good.substr(0, good.size() / 2), "snapshot"},
      {magic, "magic"},
      {flipped, "checksum"},
      {"not a snapshot", "snapshot"},
  };
  for (const Case& c : cases) {
    write_file(bad, c.bytes);
    CommandResult r = run_kvmem({"restore", bad});
    INFO(c.want << ": " << r.err);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains(c.want));
  }
  CommandResult missing = run_kvmem({"restore", dir.path() + "/none.kvmsnap"});
  CHECK(missing.exit_code == 2);
  // --lazy reads data only as it goes: a bad extent is found while the
  // guest runs, and still ends with exit 2 naming it.
  write_file(bad, flipped);
  CommandResult lazy = run_kvmem({"restore", "--lazy", "--json", bad});
  INFO(lazy.out << lazy.err);
  CHECK(lazy.exit_code == 2);
  const json lj = json::parse(lazy.out);
  CHECK(lj.at("vms").at(0).at("failure") == "snapshot");
  CHECK_THAT(lj.at("vms").at(0).at("message").get<std::string>(), Catch::Contains("checksum"));
  for (size_t i = 0; i < 2; i++) {
    write_file(bad, cases[i].bytes);
    CHECK(run_kvmem({"restore", "--lazy", bad}).exit_code == 2);
  }
}

namespace {

constexpr uint64_t kMiB = 1 << 20, kWindow = 1ull << 30;

json verify_step(uint64_t at, uint64_t length, json pat) {
  return {{"op", "verify"}, {"at", at}, {"length", length}, {"pattern", std::move(pat)}};
}
json fill_step(uint64_t at, uint64_t length, json pat) {
  return {{"op", "fill"}, {"at", at}, {"length", length}, {"pattern", std::move(pat)}};
}
json free_step(uint64_t at, uint64_t length, const char* mode) {
  return {{"op", "free"}, {"at", at}, {"length", length}, {"granule", "64K"}, {"mode", mode}};
}

// vCPU i of the "done when" case: fills its slice of RAM, writes a
// pattern into its part of a writable window onto file "box", frees part of
// its slice synchronously and part through its free ring, and snapshots
// (then exit). Restored, it verifies RAM, the freed ranges as zero, the
// window (what it wrote and the file's own pattern beside it), frees
// through its ring again and verifies that too.
json whole_program(unsigned i) {
  const uint64_t base = 4 * kMiB + 16 * kMiB * i, win = kWindow + 2 * kMiB * i;
  const json ram = pattern(9 + i), mine = pattern(20 + i);
  const json file = {{"seed", 3}, {"origin", kWindow}};
  return json::array({
      fill_step(base, 8 * kMiB, ram),
      fill_step(win, kMiB, mine),
      free_step(base, kMiB, "sync"),
      free_step(base + kMiB, kMiB, "async"),
      {{"op", "print"}, {"text", fmt::format("before {}\n", i)}},
      {{"op", "snapshot"}, {"then", "exit"}},
      verify_step(base + 2 * kMiB, 6 * kMiB, ram),
      verify_step(base, 2 * kMiB, "zero"),
      verify_step(win, kMiB, mine),
      verify_step(win + kMiB, kMiB, file),
      free_step(base + 2 * kMiB, kMiB, "async"),
      verify_step(base + 2 * kMiB, kMiB, "zero"),
      verify_step(base + 3 * kMiB, 5 * kMiB, ram),
      {{"op", "print"}, {"text", fmt::format("after {}\n", i)}},
  });
}

json vm_of(unsigned vcpus, const std::function<json(unsigned)>& program) {
  json c = {{"name", "snap"}, {"memory", "48M"}, {"vcpus", vcpus}};
  if (vcpus == 1) {
    c["program"] = program(0);
  } else {
    c["programs"] = json::array();
    for (unsigned i = 0; i < vcpus; i++) c["programs"].push_back(program(i));
  }
  return c;
}

// Runs `config` with --snapshot-to and returns the snapshot's path.
std::string snapshot_of(const TempDir& dir, const json& config) {
  TempConfig file(config.dump());
  CommandResult r = run_kvmem({"run", "--snapshot-to", dir.path(), file.path()});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("after") == std::string::npos);
  const std::string snap = dir.path() + "/" + config.at("name").get<std::string>() + ".kvmsnap";
  REQUIRE(::access(snap.c_str(), R_OK) == 0);
  return snap;
}

uint64_t size_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace

TEST_CASE("a VM with a window onto a file and a free ring comes back whole from restore --eager and --lazy",
          "[cli][kvm][snapshot][windows][free]") {
  if (!kvm_available("snapshot with windows and rings")) return;
  for (const auto& [vcpus, backing] : {std::pair{1u, "memfd"}, std::pair{2u, "memfd"}, std::pair{2u, "anon"}}) {
    INFO(vcpus << " vCPUs, backing " << backing);
    json c = vm_of(vcpus, whole_program);
    c["backing"] = backing;
    c["files"] = {{{"name", "box"}, {"size", "4M"}, {"pattern", {{"seed", 3}}}}};
    c["windows"] = {{{"file", "box"}, {"at", kWindow}, {"length", "4M"}}};
    TempDir dir;
    const std::string snap = snapshot_of(dir, c);
    // RAM's non-zero pages (6 MiB a vCPU, the boot area besides) and the
    // file's 4 MiB, no more than that plus 1% and 64 KiB.
    const uint64_t data = vcpus * 6 * kMiB + 4 * kMiB;
    CHECK(size_of(snap) >= data);
    CHECK(size_of(snap) <= (data + kMiB) * 101 / 100 + (64 << 10));

    CommandResult back = run_kvmem({"restore", "--eager", snap});
    INFO(back.out << back.err);
    CHECK(back.exit_code == 0);
    CHECK(back.out.find("before") == std::string::npos);
    for (unsigned i = 0; i < vcpus; i++) CHECK(back.out.find(fmt::format("after {}", i)) != std::string::npos);
    CHECK_THAT(back.err, Catch::Contains("MiB, 1 file)"));

    // Lazily: RAM served as touched while the ring's thread punches what
    // the guest frees through it, the file restored whole first. anon RAM
    // is restored eagerly only.
    CommandResult lazy = run_kvmem({"restore", "--lazy", "--json", snap});
    INFO(lazy.out << lazy.err);
    if (std::string(backing) == "anon") {
      CHECK(lazy.exit_code == 2);
      CHECK_THAT(json::parse(lazy.out).at("error").get<std::string>(), Catch::Contains("eagerly only"));
    } else {
      REQUIRE(lazy.exit_code == 0);
      const json lv = json::parse(lazy.out).at("vms").at(0);
      for (unsigned i = 0; i < vcpus; i++)
        CHECK(lv.at("console").get<std::string>().find(fmt::format("after {}", i)) != std::string::npos);
      CHECK(lv.at("restore").at("files") == 1);
      CHECK(lv.at("restore").at("lazy").at("complete") == true);
      CHECK(lv.at("bytes_decommitted") == vcpus * kMiB);
    }

    CommandResult js = run_kvmem({"restore", "--json", snap});
    INFO(js.out << js.err);
    REQUIRE(js.exit_code == 0);
    const json report = json::parse(js.out);
    const json& vm = report.at("vms").at(0);
    CHECK(vm.at("outcome") == "exited");
    CHECK(vm.at("backing") == backing);
    // The report's console and counters are the restored run's; what came
    // before the snapshot is under restore.before.
    CHECK(vm.at("console").get<std::string>().find("before") == std::string::npos);
    CHECK(vm.at("bytes_decommitted") == vcpus * kMiB);
    const json& before = report.at("vms").at(0).at("restore").at("before");
    CHECK(before.at("console").get<std::string>().find("before 0\n") != std::string::npos);
    CHECK(before.at("bytes_decommitted") == vcpus * 2 * kMiB);
    CHECK(before.at("console_dropped_bytes") == 0);
    CHECK(report.at("vms").at(0).at("restore").at("files") == 1);
    REQUIRE(report.at("files").size() == 1);
    CHECK(report.at("files").at(0).at("name") == "box");
    CHECK(report.at("files").at(0).at("size") == 4 * kMiB);
  }
}

TEST_CASE("an anon-RAM VM's snapshot holds its touched pages, and restore --eager brings them back",
          "[cli][kvm][snapshot][backing]") {
  if (!kvm_available("snapshot of anon RAM")) return;
  for (unsigned vcpus : {1u, 2u}) {
    INFO(vcpus << " vCPUs");
    json c = vm_of(vcpus, program_of);
    c["backing"] = "anon";
    TempDir dir;
    const std::string snap = snapshot_of(dir, c);
    const uint64_t data = vcpus * 6 * kMiB;  // of 48 MiB: only what the guest touched
    CHECK(size_of(snap) >= data);
    CHECK(size_of(snap) <= (data + kMiB) * 101 / 100 + (64 << 10));
    CommandResult back = run_kvmem({"restore", "--json", snap});
    INFO(back.out << back.err);
    REQUIRE(back.exit_code == 0);
    const json report = json::parse(back.out);
    CHECK(report.at("vms").at(0).at("backing") == "anon");
    CHECK(report.at("vms").at(0).at("console") == std::string(vcpus == 1 ? "after\n" : "after\nafter\n"));
  }
}

TEST_CASE("a read-only window and a sealed file come back read-only and sealed", "[cli][kvm][snapshot][windows]") {
  if (!kvm_available("snapshot of read-only windows")) return;
  const uint64_t ro = kWindow, sealed = kWindow + 4 * kMiB;
  const json ro_pat = {{"seed", 4}, {"origin", ro}}, sealed_pat = {{"seed", 5}, {"origin", sealed}};
  auto config = [&](json after) {
    json steps = {verify_step(ro, 64 << 10, ro_pat), verify_step(sealed, 8192, sealed_pat),
                  {{"op", "snapshot"}, {"then", "exit"}}};
    for (json& s : after) steps.push_back(std::move(s));
    return json{{"name", "ro"},
                {"memory", "16M"},
                {"files",
                 {{{"name", "plain"}, {"size", "64K"}, {"pattern", {{"seed", 4}}}},
                  {{"name", "sealed"}, {"size", "8K"}, {"pattern", {{"seed", 5}}}, {"seals", {"write", "grow"}}}}},
                {"windows",
                 {{{"file", "plain"}, {"at", ro}, {"length", "64K"}, {"writable", false}},
                  {{"file", "sealed"}, {"at", sealed}, {"length", "8K"}}}},
                {"program", std::move(steps)}};
  };
  TempDir dir;
  const std::string snap = snapshot_of(dir, config({verify_step(ro, 64 << 10, ro_pat),
                                                    verify_step(sealed, 8192, sealed_pat),
                                                    {{"op", "print"}, {"text", "after\n"}}}));
  CommandResult js = run_kvmem({"restore", "--json", snap});
  INFO(js.out << js.err);
  REQUIRE(js.exit_code == 0);
  const json report = json::parse(js.out);
  CHECK(report.at("vms").at(0).at("console") == "after\n");
  REQUIRE(report.at("files").size() == 2);
  CHECK(report.at("files").at(0).at("name") == "plain");
  CHECK(report.at("files").at(0).at("seals") == json::array());
  CHECK(report.at("files").at(1).at("name") == "sealed");
  CHECK(report.at("files").at(1).at("seals") == json::array({"grow", "write"}));

  // A guest write to either window after the restore stops the VM, naming it.
  for (const auto& [at, what] : {std::pair{ro, "plain"}, std::pair{sealed, "sealed"}}) {
    INFO(what);
    TempDir d;
    const std::string s = snapshot_of(d, config({{{"op", "store_word"}, {"at", at + 8}, {"value", 1}}}));
    CommandResult w = run_kvmem({"restore", s});
    CHECK(w.exit_code == 1);
    CHECK_THAT(w.err, Catch::Contains("read-only window") && Catch::Contains(fmt::format("file \"{}\"", what)));
  }
}

namespace {

// The payload offset of section (type, index) in a snapshot's bytes.
uint64_t payload_of(const std::vector<uint8_t>& b, kvmem::SectionType type, uint32_t index) {
  const uint64_t n = kvmem::test::get_le(b, kvmem::snapshot_header::kSectionCount, 4);
  for (uint64_t i = 0; i < n; i++) {
    const uint64_t e = kvmem::test::section_entry(b, i);
    if (kvmem::test::get_le(b, e, 4) == static_cast<uint32_t>(type) && kvmem::test::get_le(b, e + 4, 4) == index)
      return kvmem::test::get_le(b, e + 8, 8);
  }
  FAIL("no section " << static_cast<uint32_t>(type) << " " << index);
  return 0;
}

}  // namespace

TEST_CASE("damaged file and device sections are refused with exit 2 naming what is wrong", "[cli][kvm][snapshot]") {
  if (!kvm_available("damaged file and device sections")) return;
  using kvmem::SectionType;
  using kvmem::test::get_le;
  using kvmem::test::put_le;
  using B = std::vector<uint8_t>;
  json c = vm_of(1, whole_program);
  c["files"] = {{{"name", "box"}, {"size", "4M"}, {"pattern", {{"seed", 3}}}}};
  c["windows"] = {{{"file", "box"}, {"at", kWindow}, {"length", "4M"}}};
  TempDir dir;
  const std::string snap = snapshot_of(dir, c);
  const std::string text = read_file(snap);
  const B good(text.begin(), text.end());
  const uint64_t file = payload_of(good, SectionType::kFile, 1);
  const uint64_t rings = payload_of(good, SectionType::kDevice, 1);
  const uint64_t console = payload_of(good, SectionType::kDevice, 0);
  const uint64_t box = get_le(good, kvmem::test::space_entry(good, 1) + 16, 8);  // space 1's name
  REQUIRE(std::string(good.begin() + static_cast<long>(box), good.begin() + static_cast<long>(box) + 3) == "box");
  struct Case {
    const char* what;
    std::function<void(B&)> edit;
    const char* want;
  };
  const auto section_of = [&](B& b, SectionType type, uint32_t index) {
    for (uint64_t i = 0; i < get_le(b, kvmem::snapshot_header::kSectionCount, 4); i++) {
      const uint64_t e = kvmem::test::section_entry(b, i);
      if (get_le(b, e, 4) == static_cast<uint32_t>(type) && get_le(b, e + 4, 4) == index) return e;
    }
    return uint64_t{0};
  };
  const Case cases[] = {
      {"a file size that is not its space's", [&](B& b) { put_le(b, file + 8, 8, 4 * kMiB + 4096); },
       "its section says 0x401000 bytes, and its space 1 is 0x400000 bytes"},
      {"data in a hole of the data map", [&](B& b) { put_le(b, file + 40, 8, 2 * kMiB); },
       "which is a hole of the file's data map"},
      {"a file state of another version", [&](B& b) { put_le(b, file + 4, 4, 9); }, "file state: version 9"},
      {"unknown seals", [&](B& b) { put_le(b, file + 16, 4, 0x40); }, "seals 0x40 has unknown bits"},
      {"a data map past the file", [&](B& b) { put_le(b, file + 40, 8, 8 * kMiB); }, "passes the file's size"},
      {"a ring outside RAM", [&](B& b) { put_le(b, rings + 16, 8, 48 * kMiB); }, "lies outside RAM"},
      {"a ring of 3 entries", [&](B& b) { put_le(b, rings + 24, 8, 3); }, "vCPU 0's ring has 3 entries"},
      {"rings for 2 vCPUs of 1", [&](B& b) { put_le(b, rings + 8, 4, 2); }, "free ring state: "},
      {"a console record past its bound", [&](B& b) { put_le(b, console + 16, 8, uint64_t{1} << 40); },
       "console state: a record of"},
      {"a device this kvmem does not know",
       [&](B& b) { put_le(b, section_of(b, SectionType::kDevice, 2) + 4, 4, 9); },
       "device section 9 is not one this kvmem knows"},
      {"a file section of the RAM space", [&](B& b) { put_le(b, section_of(b, SectionType::kFile, 1) + 4, 4, 0); },
       "no file section"},
      {"a window onto a file the snapshot lacks", [&](B& b) { b[box + 1] = 'a'; },
       "shows file \"box\", which the snapshot lacks"},
      {"a second RAM space", [&](B& b) { put_le(b, kvmem::test::space_entry(b, 1) + 4, 4, 1); },
       "space 1 is a second RAM space"},
  };
  const std::string bad = dir.path() + "/bad.kvmsnap";
  for (const Case& k : cases) {
    B b = good;
    k.edit(b);
    kvmem::reseal_snapshot(b);
    write_file(bad, std::string(b.begin(), b.end()));
    CommandResult r = run_kvmem({"restore", bad});
    INFO(k.what << ": " << r.err);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains(k.want));
  }
}
