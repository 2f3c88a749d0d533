// restore_snapshot at the API: a VM snapshotted to a file and restored
// lazily with no background filler, so that every page the guest reads is
// served by the fault handler while two vCPUs fault at once, and a free
// report drops what is still owed. The guest's own reads are the oracle.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "harness/snapshot.h"
#include "tests/snapshot/snapshot_helpers.h"
#include "tests/support.h"
#include "tests/vmm/guest_runner.h"

using namespace kvmem;
using namespace kvmem::test;
using json = nlohmann::json;

namespace {

json pattern(uint64_t seed) { return {{"seed", seed}}; }

// vCPU v works on [base, base + 12 MiB): 8 MiB of data, a freed 2 MiB
// inside it before the snapshot; after it, verify, free 2 MiB it has not
// read yet (still owed), verify that reads zero, and the rest.
json program_of(unsigned v) {
  const uint64_t base = (4 + 12 * v) << 20;
  auto at = [&](uint64_t mib) { return base + (mib << 20); };
  return json::array({
      {{"op", "fill"}, {"at", at(0)}, {"length", 8 << 20}, {"pattern", pattern(3 + v)}},
      {{"op", "free"}, {"at", at(0)}, {"length", 2 << 20}, {"granule", "64K"}, {"mode", "sync"}},
      {{"op", "snapshot"}, {"then", "exit"}},
      {{"op", "verify"}, {"at", at(2)}, {"length", 2 << 20}, {"pattern", pattern(3 + v)}},
      {{"op", "free"}, {"at", at(4)}, {"length", 2 << 20}, {"granule", "2M"}, {"mode", "sync"}},
      {{"op", "verify"}, {"at", at(4)}, {"length", 2 << 20}, {"pattern", "zero"}},
      {{"op", "verify"}, {"at", at(6)}, {"length", 2 << 20}, {"pattern", pattern(3 + v)}},
      {{"op", "verify"}, {"at", at(0)}, {"length", 2 << 20}, {"pattern", "zero"}},
      {{"op", "verify"}, {"at", at(8)}, {"length", 4 << 20}, {"pattern", "zero"}},
  });
}

}  // namespace

TEST_CASE("a lazy restore with no filler serves every page two vCPUs read, and a free report drops what is owed",
          "[snapshot][kvm][lazy][vcpus]") {
  if (!kvm_available("lazy restore without a filler")) return;
  SnapshotDir dir;
  REQUIRE(dir.ok());
  const json config = {{"name", "lazy2"}, {"memory", "32M"}, {"vcpus", 2}, {"programs", {program_of(0), program_of(1)}}};
  GuestRun source = create_guest(config, [&](VmConfig& c) { c.source = config.dump(); });
  REQUIRE(source.vm);
  source.vm->arm_snapshots(snapshot_to_dir(dir.path("").substr(0, dir.path("").size() - 1)));
  RunResult r = source.vm->run(nullptr);
  INFO(r.message);
  REQUIRE(r.outcome == RunOutcome::kExited);
  const std::string snap = dir.path("lazy2.kvmsnap");
  struct stat st {};
  REQUIRE(::stat(snap.c_str(), &st) == 0);

  auto kvm = Kvm::open();
  REQUIRE(kvm);
  RestoreOptions options;
  options.mode = RestoreMode::kLazy;
  options.lazy.fill = false;
  RestoredVm back = restore_snapshot(*kvm, snap, options);
  INFO(back.error);
  REQUIRE(back.exit_code == 0);
  REQUIRE(back.lazy);
  RunResult c = back.vm->run(nullptr);
  INFO(c.message);
  CHECK(c.outcome == RunOutcome::kExited);
  CHECK(c.guest_exit_code == 0);
  back.lazy->stop();
  const LazyStats s = back.lazy_stats();
  CHECK(s.error.empty());
  CHECK(s.extents_filled == 0);
  CHECK(s.faults > 0);
  // Each vCPU read 4 MiB of its data and freed 2 MiB it had not read: 12
  // MiB of data came in on demand (with the boot area and page tables),
  // 4 MiB were dropped unread.
  CHECK(s.bytes_on_demand >= (8ull << 20));
  CHECK(s.bytes_on_demand < (9ull << 20));
  CHECK(s.bytes_forgotten == (4ull << 20));
  CHECK(c.bytes_decommitted == (4ull << 20));
}
