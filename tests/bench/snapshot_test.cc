// `kvmem bench snapshot`: the guest's plan and config, the option checks,
// the medians of repeats, and a real --quick run whose JSON rows must have
// every key and figures that hold together (the figures themselves are not
// asserted: a benchmark measures).
#include <unistd.h>

#include <sstream>

#include <catch2/catch.hpp>

#include "bench/snapshot.h"
#include "config/vm_config.h"
#include "tests/cli/cli_support.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;

std::vector<json> json_lines(const std::string& out) {
  std::vector<json> rows;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

double num(const json& section, const char* key) {
  INFO(key << " in " << section.dump());
  REQUIRE(section.contains(key));
  REQUIRE(section[key].is_number());
  return section[key].get<double>();
}

// The figures every restore mode reports, in the order they happen.
void check_restore_times(const json& m) {
  INFO(m.dump());
  const double restore = num(m, "restore_ms"), first_run = num(m, "first_run_ms"),
               first_insn = num(m, "first_instruction_ms"), verify = num(m, "verify_ms"), all = num(m, "all_read_ms");
  CHECK(restore > 0);
  CHECK(restore <= first_run);
  CHECK(verify > 0);
  // The guest's first instruction comes after the first KVM_RUN; the two
  // clocks (the host's, the guest's TSC) may disagree by a few µs.
  CHECK(first_run <= first_insn + 0.1);
  CHECK(first_insn + verify == Approx(all));
  CHECK(first_run < all);
}

}  // namespace

TEST_CASE("the guest's plan spreads the committed share over RAM in pieces with zero tails", "[bench-snapshot]") {
  const struct {
    uint64_t ram;
    unsigned percent;
    uint64_t piece, pieces;
  } cases[] = {
      {256 * kMiB, 10, kMiB, 25}, {32 * kMiB, 10, kMiB, 3}, {16 * kMiB, 1, kMiB, 1},
      // Past 64 pieces, pieces grow: the program stays short.
      {256 * kMiB, 50, 2 * kMiB, 64}, {kGiB, 10, 2 * kMiB, 51}, {kGiB, 50, 8 * kMiB, 64},
      {32 * kGiB, 90, 512 * kMiB, 57},
  };
  for (const auto& c : cases) {
    INFO(c.ram << " bytes, " << c.percent << "%");
    auto p = snapshot_guest_plan(c.ram, c.percent);
    REQUIRE(p);
    CHECK(p->piece == c.piece);
    CHECK(p->pieces == c.pieces);
    CHECK(p->zero_tail == p->piece / 16);
    CHECK(p->stride >= p->piece);
    CHECK(p->stride % p->piece == 0);
    CHECK(p->first >= 2 * kMiB);
    CHECK(p->first + (p->pieces - 1) * p->stride + p->piece <= c.ram - 2 * kMiB);
  }
  // Too much for a small guest: the pieces would not fit.
  auto tight = snapshot_guest_plan(16 * kMiB, 90);
  REQUIRE(!tight);
  CHECK_THAT(tight.error().message, Catch::StartsWith("--committed: 90% of 16 MiB"));
}

TEST_CASE("the guest's config is one that kvmem run takes, and keeps it for the snapshot", "[bench-snapshot]") {
  for (auto [ram, percent] : {std::pair{uint64_t{1} << 30, 50u}, std::pair{uint64_t{32} << 30, 90u}}) {
    const SnapshotGuestPlan p = *snapshot_guest_plan(ram, percent);
    auto rc = parse_run_config(snapshot_guest_config(p, "bench-x"), "bench-x");
    INFO(ram << " bytes, " << percent << "%");
    REQUIRE(rc);
    REQUIRE(rc->vms.size() == 1);
    const VmConfig& c = rc->vms[0];
    CHECK(c.name == "bench-x");
    CHECK(c.memory == ram);
    CHECK(!c.source.empty());
    // timestamp, 2 fills a piece, snapshot, timestamp, 2 verifies a piece, timestamp.
    CHECK(c.program.size() == 4 * p.pieces + 4);
  }
}

TEST_CASE("bench snapshot refuses options that do not fit, naming the option", "[bench-snapshot]") {
  auto err = [](SnapshotBenchOptions o) {
    auto s = check_snapshot_options(o);
    return s ? std::string() : s.error().message;
  };
  CHECK(err({}) == "");
  CHECK(err(quick_snapshot_options({})) == "");
  CHECK_THAT(err({.sizes = {}}), Catch::StartsWith("--size"));
  CHECK(err({.sizes = {8 * kMiB}}) == "--size: 8 MiB is not from 16 MiB to 32 GiB");
  CHECK(err({.sizes = {33 * kMiB}}) == "--size: 0x2100000 is not a multiple of 2 MiB");
  CHECK(err({.sizes = {64 * kGiB}}) == "--size: 64 GiB is not from 16 MiB to 32 GiB");
  CHECK_THAT(err({.committed = {}}), Catch::StartsWith("--committed"));
  CHECK_THAT(err({.committed = {0}}), Catch::StartsWith("--committed: 0 is not a percentage"));
  CHECK_THAT(err({.committed = {91}}), Catch::StartsWith("--committed"));
  CHECK_THAT(err({.sizes = {16 * kMiB}, .committed = {90}}), Catch::StartsWith("--committed: 90% of 16 MiB"));
  CHECK_THAT(err({.restores = {}}), Catch::StartsWith("--restore"));
  CHECK_THAT(err({.restores = {"eager", "fast"}}), Catch::StartsWith("--restore: unknown mode \"fast\""));
  CHECK_THAT(err({.repeat = 0}), Catch::StartsWith("--repeat"));
  CHECK_THAT(err({.repeat = 101}), Catch::StartsWith("--repeat"));
  // 90% of 32 GiB is 28.8 GiB: more than half of any machine below 57.6 GiB.
  if (static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * 4096 / 2 < 0.9 * 32 * kGiB)
    CHECK_THAT(err({.sizes = {32 * kGiB}, .committed = {90}}),
               Catch::StartsWith("--size, --committed: 29491 MiB committed is more than half of this machine's"));
}

TEST_CASE("the command line refuses bad snapshot bench options with exit 2", "[bench-snapshot]") {
  const struct {
    std::vector<std::string> args;
    const char* error;
  } cases[] = {
      {{"--committed", "0"}, "--committed: 0 is out of range: it must be 1..90"},
      {{"--committed", "10,x"}, "--committed: x is not a whole number 1..90"},
      {{"--size", "3M"}, "--size: 0x300000 is not a multiple of 2 MiB"},
      {{"--size", "lots"}, "--size: "},
      {{"--restore", "fast"}, "--restore: unknown mode \"fast\""},
      {{"--repeat", "0"}, "--repeat: 0 is out of range"},
      {{"--dir", "/nonexistent/kvmem"}, "--dir: /nonexistent/kvmem is not an existing folder"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = {"bench", "snapshot", "--quick"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    INFO(c.args.front() << " " << c.args.back());
    auto r = test::run_kvmem(args);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.err, Catch::Contains(c.error));
    CHECK(r.out.empty());
  }
}

TEST_CASE("repeats merge into medians that keep integers, and an error in any repeat wins", "[bench-snapshot]") {
  const std::vector<json> rows = {
      {{"bench", "snapshot"}, {"size", 1024}, {"save", {{"ms", 30.0}, {"extents", 9}}}, {"eager", {{"load_ms", 2.0}}}},
      {{"bench", "snapshot"}, {"size", 1024}, {"save", {{"ms", 10.0}, {"extents", 9}}}, {"eager", {{"error", "x"}}}},
      {{"bench", "snapshot"}, {"size", 1024}, {"save", {{"ms", 20.0}, {"extents", 9}}}, {"eager", {{"load_ms", 1.0}}}},
  };
  const json m = median_snapshot_rows(rows);
  CHECK(m.at("bench") == "snapshot");
  CHECK(m.at("save").at("ms") == 20.0);
  CHECK(m.at("save").at("extents").is_number_integer());
  CHECK(m.at("save").at("extents") == 9);
  CHECK(m.at("eager") == json{{"error", "x"}});
  CHECK(snapshot_row_failed(m));
  CHECK(!snapshot_row_failed(rows[0]));
  // Of an even count, the lower middle (nearest rank).
  const json two = median_snapshot_rows({rows[0], rows[2]});
  CHECK(two.at("save").at("ms") == 20.0);
  CHECK(two.at("eager").at("load_ms") == 1.0);
}

TEST_CASE("the folder's facts name its file system and where it is mounted", "[bench-snapshot]") {
  const json f = folder_facts("/");
  CHECK(f.at("path") == "/");
  CHECK(f.at("mount") == "/");
  CHECK(f.at("fstype").is_string());
  const json proc = folder_facts("/proc/self");
  CHECK(proc.at("mount") == "/proc");
  CHECK(proc.at("fstype") == "proc");
}

TEST_CASE("the tables show each restore mode, and errors as notes under them", "[bench-snapshot]") {
  const json row = {
      {"bench", "snapshot"}, {"size", 256 * kMiB}, {"committed_percent", 10}, {"repeat", 3}, {"cold", false},
      {"snapshot", {{"file_bytes", 25 * kMiB}, {"committed_bytes", 26 * kMiB}, {"nonzero_bytes", 24 * kMiB},
                    {"over_nonzero_percent", 0.05}, {"extents", 31}}},
      {"save", {{"ms", 34.8}, {"mb_s", 708.0}, {"floor_mb_s", 862.0}, {"ratio", 0.83}}},
      {"eager", {{"restore_ms", 29.84}, {"first_run_ms", 29.95}, {"first_instruction_ms", 30.3}, {"verify_ms", 81.6},
                 {"all_read_ms", 113.4}, {"load_mb_s", 881.0}, {"load_floor_mb_s", 1113.0}, {"load_ratio", 0.78}}},
      {"lazy", {{"error", "restore --lazy is not built yet"}}},
      {"dir", {{"path", "/tmp"}, {"mount", "/"}, {"fstype", "ext4"}, {"source", "/dev/vda"}}}};
  const json failed = {{"bench", "snapshot"}, {"size", kGiB}, {"committed_percent", 50}, {"error", "no room"}};
  const std::string text = format_snapshot_bench({row, failed});
  INFO(text);
  CHECK_THAT(text, Catch::Contains("256 MiB") && Catch::Contains("29.84") && Catch::Contains("0.78"));
  CHECK_THAT(text, Catch::Contains("256 MiB, 10%: lazy restore: restore --lazy is not built yet"));
  CHECK_THAT(text, Catch::Contains("1 GiB, 50%: no room"));
  CHECK_THAT(text, Catch::Contains("snapshots under /tmp (ext4 on /dev/vda, mounted at /)"));
  CHECK_THAT(text, Catch::Contains("medians of 3 runs"));
}

TEST_CASE("a --quick run prints one JSON row per committed share, with figures that hold together",
          "[bench-snapshot][kvm]") {
  REQUIRE_KVM();
  auto r = test::run_kvmem({"bench", "snapshot", "--quick", "--json"});
  INFO(r.err);
  const std::vector<json> rows = json_lines(r.out);
  REQUIRE(rows.size() == 2);
  for (const json& row : rows) {
    INFO(row.dump());
    for (const char* k : {"bench", "size", "committed_percent", "repeat", "cold", "guest", "snapshot", "save",
                          "load_floor", "eager", "lazy", "dir", "host"})
      CHECK(row.contains(k));
    REQUIRE(!row.contains("error"));
    CHECK(row.at("bench") == "snapshot");
    CHECK(row.at("size") == 32 * kMiB);
    CHECK(row.at("dir").at("fstype").is_string());
    CHECK(row.at("host").at("tsc_khz").get<uint64_t>() > 0);

    // The size: the committed pages less the zero ones, plus the tables.
    const json& g = row.at("guest");
    const json& s = row.at("snapshot");
    const uint64_t file = s.at("file_bytes"), nonzero = s.at("nonzero_bytes"), committed = s.at("committed_bytes");
    CHECK(file >= nonzero);
    CHECK(file <= nonzero + nonzero / 100 + 64 * 1024);
    CHECK(committed >= g.at("filled_bytes").get<uint64_t>());
    CHECK(nonzero >= g.at("filled_bytes").get<uint64_t>() - g.at("zero_filled_bytes").get<uint64_t>());
    CHECK(committed - nonzero >= g.at("zero_filled_bytes").get<uint64_t>());  // the zero pages were committed
    CHECK(s.at("zero_pages").get<uint64_t>() * 4096 == committed - nonzero);
    CHECK(s.at("extents").get<uint64_t>() >= g.at("pieces").get<uint64_t>());

    const json& save = row.at("save");
    CHECK(num(save, "ms") > 0);
    CHECK(num(save, "mb_s") > 0);
    CHECK(num(save, "floor_mb_s") > 0);
    CHECK(num(save, "ratio") > 0);
    const json& floor = row.at("load_floor");
    CHECK(num(floor, "mb_s") > 0);
    CHECK(floor.at("bytes") == nonzero);

    // Eager restore reads every page the snapshot holds, and the guest
    // verified every page it committed.
    const json& eager = row.at("eager");
    REQUIRE(!eager.contains("error"));
    check_restore_times(eager);
    CHECK(eager.at("load_bytes") == nonzero);
    CHECK(eager.at("load_extents") == s.at("extents"));
    CHECK(eager.at("snapshot_bytes") == file);
    CHECK(num(eager, "load_mb_s") > 0);
    CHECK(num(eager, "load_ratio") > 0);
    CHECK(num(eager, "load_ms") <= num(eager, "restore_ms"));

    const json& lazy = row.at("lazy");
    REQUIRE(!lazy.contains("error"));
    check_restore_times(lazy);
    CHECK(lazy.at("complete") == true);
    // Each extent is loaded once, on demand or by the filler.
    CHECK(lazy.at("extents_on_demand").get<uint64_t>() + lazy.at("extents_filled").get<uint64_t>() ==
          s.at("extents").get<uint64_t>());
    CHECK(lazy.at("bytes_on_demand").get<uint64_t>() + lazy.at("bytes_filled").get<uint64_t>() == nonzero);
    CHECK(lazy.at("faults").get<uint64_t>() >= lazy.at("extents_on_demand").get<uint64_t>());
    if (lazy.at("bytes_filled").get<uint64_t>() > 0) CHECK(num(lazy, "fill_mb_s") > 0);
  }
  CHECK(r.exit_code == 0);
}
