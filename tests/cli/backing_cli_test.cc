// `kvmem run` with the config's "backing" and "prefault": each VM's RAM on
// the backing it asked for, a free report doing what that backing does,
// and a backing the host cannot give failing only the VMs that ask for it.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/cli/cli_support.h"
#include "vmm/memory/backing.h"

using namespace kvmem;
using namespace kvmem::test;
using json = nlohmann::json;

namespace {

// Fills 8 MiB, gives the first 4 MiB back, and checks both halves.
json program_of(const char* mode) {
  return json::array({
      {{"op", "fill"}, {"at", "4M"}, {"length", "8M"}, {"pattern", {{"seed", 3}}}},
      {{"op", "free"}, {"at", "4M"}, {"length", "4M"}, {"granule", "2M"}, {"mode", mode}},
      {{"op", "verify"}, {"at", "4M"}, {"length", "4M"}, {"pattern", "zero"}},
      {{"op", "verify"}, {"at", "8M"}, {"length", "4M"}, {"pattern", {{"seed", 3}}}},
  });
}

json vm(const char* name, const char* backing, const char* prefault, const char* mode = "sync") {
  return {{"name", name}, {"memory", "16M"}, {"backing", backing}, {"prefault", prefault}, {"program", program_of(mode)}};
}

const json* find_vm(const json& report, const std::string& name) {
  for (const json& v : report.at("vms"))
    if (v.at("name") == name) return &v;
  return nullptr;
}

}  // namespace

TEST_CASE("run puts each VM's RAM on its backing, and a free report gives it back there", "[cli][kvm][backing]") {
  if (!kvm_available("run on each backing")) return;
  json c = {{"vms", json::array({vm("plain", "memfd", "none"), vm("eager", "memfd", "eager", "async"),
                                 vm("anon", "anon", "none"), vm("anon-ahead", "anon", "ahead", "async")})}};
  c["vms"][3]["prefault_threads"] = 2;
  TempConfig config(c.dump());
  CommandResult r = run_kvmem({"run", "--json", config.path()});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  const json report = json::parse(r.out);
  for (const char* name : {"plain", "eager", "anon", "anon-ahead"}) {
    INFO(name);
    const json* v = find_vm(report, name);
    REQUIRE(v);
    CHECK(v->at("outcome") == "exited");
    // 4 MiB of the 8 written went back, on every backing.
    CHECK(v->at("bytes_decommitted").get<uint64_t>() == 4u << 20);
    const uint64_t held = v->at("host_committed_bytes").get<uint64_t>();
    // The verify of the freed half reads it back in (shmem commits a page
    // on a read fault, anon maps the zero page), so 8 MiB at least; without
    // a prefault no more than that, the boot area and page tables besides.
    CHECK(held >= 8u << 20);
    if (v->at("prefault").is_null()) CHECK(held < 9u << 20);
  }
  CHECK(find_vm(report, "anon")->at("backing") == "anon");
  CHECK(find_vm(report, "plain")->at("backing") == "memfd");
  CHECK(find_vm(report, "plain")->at("prefault").is_null());
  // Eager populated all 16 MiB before the guest started, on one thread.
  const json& eager = find_vm(report, "eager")->at("prefault");
  CHECK(eager.at("mode") == "eager");
  CHECK(eager.at("bytes").get<uint64_t>() == 16u << 20);
  CHECK(eager.at("threads") == 1);
  CHECK(eager.at("errors") == 0);
  const json& ahead = find_vm(report, "anon-ahead")->at("prefault");
  CHECK(ahead.at("mode") == "ahead");
  CHECK(ahead.at("threads") == 2);
  CHECK(ahead.at("errors") == 0);
  // Anonymous RAM is not in the memory file: its allocator count is mincore's.
  CHECK(find_vm(report, "anon")->at("committed_bytes") == find_vm(report, "anon")->at("host_committed_bytes"));
}

TEST_CASE("a backing the host cannot give fails only the VMs that ask for it, naming the setting", "[cli][kvm][backing]") {
  if (!kvm_available("run on an unavailable backing")) return;
  for (RamBacking b : {RamBacking::kMemfdThp, RamBacking::kHugetlb}) {
    const char* name = ram_backing_name(b);
    INFO(name);
    json c = {{"vms", json::array({vm("huge", name, "none"), vm("plain", "memfd", "none")})}};
    TempConfig config(c.dump());
    CommandResult r = run_kvmem({"run", "--json", config.path()});
    INFO(r.out << r.err);
    const json report = json::parse(r.out);
    CHECK(find_vm(report, "plain")->at("outcome") == "exited");
    const json& huge = *find_vm(report, "huge");
    CHECK(huge.at("backing") == name);
    if (auto why = ram_backing_unavailable(b, 16u << 20)) {
      WARN("backing " << name << " is not available here, so only its refusal is tested: " << *why);
      CHECK(r.exit_code == 3);
      CHECK(huge.at("outcome") == "not_started");
      const std::string message = huge.at("message");
      CHECK_THAT(message, Catch::Contains(b == RamBacking::kHugetlb ? "nr_hugepages" : "shmem_enabled"));
    } else {
      CHECK(r.exit_code == 0);
      CHECK(huge.at("outcome") == "exited");
      CHECK(huge.at("bytes_decommitted").get<uint64_t>() == 4u << 20);
    }
  }
}
