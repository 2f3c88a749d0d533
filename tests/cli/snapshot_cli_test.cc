// `kvmem run --snapshot-to DIR` and `kvmem restore --eager`: a guest fills,
// frees, snapshots and exits; the restored VM verifies all of it. Damaged
// snapshots exit 2 naming what is wrong.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/cli/cli_support.h"

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
    CHECK(l.at("faults").get<uint64_t>() > 0);
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
