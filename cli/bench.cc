// `kvmem bench boot|alloc|reclaim|fs|fault|usage|snapshot`: measurements, as a table or JSON lines.
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "bench/alloc.h"
#include "bench/boot.h"
#include "bench/fault.h"
#include "bench/host_setup.h"
#include "bench/plot.h"
#include "bench/fs.h"
#include "bench/reclaim.h"
#include "bench/snapshot.h"
#include "bench/usage.h"
#include "cli/cli.h"
#include "config/fields.h"
#include "vmm/kvm/kvm.h"
#include "vmm/memory/backing.h"

namespace kvmem::cli {
namespace {

class BenchCommand : public Command {
 public:
  explicit BenchCommand(CLI::App& app) {
    cmd_ = app.add_subcommand("bench", "Measure kvmem; each benchmark prints a table, or JSON lines with --json");
    cmd_->require_subcommand(1);
    boot_ = cmd_->add_subcommand("boot", "Whole-process wall time and peak RSS of `kvmem run FILE`, over many runs");
    boot_->add_option("FILE", boot_opts_.config, "the config to run (default: configs/hello.json)");
    boot_->add_option("--runs", boot_opts_.runs, "measured runs (after a few warm-up runs)")
        ->capture_default_str()
        ->check(whole_number(1, 100000));
    boot_->add_flag("--json", boot_json_, "print one JSON object instead of the table");
    alloc_ = cmd_->add_subcommand(
        "alloc", "The allocator: Allocate+DecRef pairs/s by live count, decommit vs raw fallocate, usage scans vs mincore");
    alloc_->add_flag("--quick", alloc_opts_.quick, "a short run with smaller sizes (a smoke check; not figures to quote)");
    alloc_->add_flag("--json", alloc_json_, "print one JSON object per line instead of the table");
    reclaim_ = cmd_->add_subcommand(
        "reclaim",
        "Free-page reports (sync and async) from report to pages gone, against raw fallocate; and one report's latency");
    reclaim_->add_flag("--quick", reclaim_opts_.quick, "a small region (a smoke check; not figures to quote)");
    reclaim_->add_flag("--json", reclaim_json_, "print one JSON object per line instead of the table");
    fs_ = cmd_->add_subcommand("fs",
                               "The tmpfs file layer: write/read against a real memfd, a 1 GiB window shown in a "
                               "running guest, ping-pong between two VMs through a window against two host threads");
    fs_->add_flag("--quick", fs_opts_.quick, "smaller sizes, fewer trials (a smoke check; not figures to quote)");
    fs_->add_flag("--json", fs_json_, "print one JSON object per line instead of the tables");
    add_fault(*cmd_);
    add_usage(*cmd_);
    add_snapshot(*cmd_);
  }

  int run(Clock::time_point) override {
    if (boot_->parsed()) return boot();
    if (alloc_->parsed()) return alloc();
    if (reclaim_->parsed()) return reclaim();
    if (fs_->parsed()) return fs();
    if (fault_->parsed()) return fault();
    if (usage_->parsed()) return usage();
    if (snapshot_->parsed()) return snapshot();
    return kExitUsage;
  }

 private:
  // The config and KVM are checked here, so that their absence is exit 2
  // and 3 as for `run`, not a child's failure (1).
  int boot() {
    if (boot_opts_.config.empty()) boot_opts_.config = default_boot_config();
    if (auto p = prepare(boot_opts_.config); !p) return report_error(boot_json_, kExitUsage, p.error().message);
    if (auto kvm = Kvm::open(); !kvm) return report_error(boot_json_, kExitHost, kvm.error().message);
    if (!boot_json_) std::fprintf(stderr, "running %s %u times...\n", boot_opts_.config.c_str(), boot_opts_.runs);
    auto r = run_boot_bench(boot_opts_);
    if (!r) return report_error(boot_json_, kExitFailed, r.error().message);
    if (boot_json_)
      print_json(*r);
    else
      std::printf("%s", format_boot_bench(*r).c_str());
    return kExitOk;
  }

  int alloc() {
    std::function<void(const std::string&)> progress;
    if (!alloc_json_) progress = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    auto rows = run_alloc_bench(alloc_opts_, progress);
    bool failed = false;
    for (const auto& row : rows) failed = failed || row.contains("error");
    if (alloc_json_)
      for (const auto& row : rows) print_json(row);
    else
      std::printf("%s", format_alloc_bench_table(rows).c_str());
    return failed ? kExitFailed : kExitOk;
  }

  int reclaim() {
    auto rows = run_reclaim_bench(reclaim_opts_);
    if (!rows) return report_error(reclaim_json_, kExitHost, rows.error().message);
    if (reclaim_json_)
      for (const auto& row : *rows) print_json(row);
    else
      std::printf("%s", format_reclaim_bench(*rows).c_str());
    return kExitOk;
  }

  // The io part needs no KVM; without it the guest parts are skipped, loudly, and the exit is 3.
  int fs() {
    std::function<void(const std::string&)> progress;
    if (!fs_json_) progress = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    auto rows = run_fs_io_bench(fs_opts_, progress);
    auto kvm = Kvm::open();
    if (kvm) {
      auto more = run_fs_guest_bench(*kvm, fs_opts_, progress);
      rows.insert(rows.end(), more.begin(), more.end());
    } else {
      rows.push_back({{"bench", "guest"}, {"error", kvm.error().message}});
    }
    bool failed = false;
    for (const auto& row : rows) failed = failed || row.contains("error");
    if (fs_json_)
      for (const auto& row : rows) print_json(row);
    else
      std::printf("%s", format_fs_bench(rows).c_str());
    if (!kvm) return kExitHost;
    return failed ? kExitFailed : kExitOk;
  }

  // `bench fault`: options in FaultBenchOptions' terms; sizes and lists are
  // checked by check_fault_options, so every refusal names the option.
  void add_fault(CLI::App& bench) {
    fault_ = bench.add_subcommand(
        "fault",
        "A guest's first touch of fresh RAM, per access, per backing and prefault mode, beside the host's own first "
        "touch of the same memory and the guest's touch of host-populated memory, in one run");
    fault_->add_option("--backing", fault_backings_, "memfd, memfd-thp, hugetlb, anon; comma-separated")
        ->delimiter(',')
        ->default_str("memfd,anon");
    fault_->add_option("--prefault", fault_prefaults_,
                       "none (the guest faults every page), eager (the host populates RAM before the guest runs), "
                       "ahead (host threads populate while the guest runs); comma-separated")
        ->delimiter(',')
        ->default_str("none,ahead");
    fault_->add_option("--size", fault_size_, "bytes swept, split evenly among the vCPUs (256M, 1G, ...)")
        ->default_str("256M");
    fault_->add_option("--vcpus", fault_opts_.vcpus, "vCPUs, each sweeping its own slice (as memstress)")
        ->capture_default_str()
        ->check(whole_number(1, 16));
    fault_->add_option("--stride", fault_opts_.stride, "bytes between accesses")
        ->capture_default_str()
        ->check(whole_number(8, uint64_t{1} << 30));
    auto* read = fault_->add_flag("--read", fault_read_, "time reads");
    fault_->add_flag("--write", fault_write_, "time writes (the default)")->excludes(read);
    fault_->add_option("--repeat", fault_opts_.repeat, "each measurement this many times; samples pooled")
        ->capture_default_str()
        ->check(whole_number(1, 1000));
    fault_->add_option("--prefault-threads", fault_opts_.prefault_threads,
                       "host threads for --prefault ahead (0: the engine chooses)")
        ->capture_default_str()
        ->check(whole_number(0, 64));
    fault_->add_flag("--setup-host", fault_setup_host_,
                     "as root, turn on what the chosen backings need for this run (shmem THP 'advise', enough "
                     "hugetlb pages) and put the old settings back afterwards, also on failure and on a signal");
    fault_->add_flag("--no-warmup", fault_no_warmup_,
                     "skip the unrecorded host sweep that each backing gets before the measured ones");
    fault_->add_flag("--json", fault_json_, "print one JSON object per backing and mode, one per line");
    fault_->add_option("--plot", fault_plot_,
                       "write an SVG of the first-touch latency CDFs, each backing's host floor dashed beside them");
  }

  int fault() {
    if (!fault_backings_.empty()) fault_opts_.backings = fault_backings_;
    if (!fault_prefaults_.empty()) fault_opts_.prefaults = fault_prefaults_;
    fault_opts_.write = !fault_read_;
    fault_opts_.warmup = !fault_no_warmup_;
    if (!fault_size_.empty()) {
      auto size = json_fields::size_value(nlohmann::json(fault_size_), json_fields::Ptr() / "size");
      if (!size) return report_error(fault_json_, kExitUsage, "--size: " + size.error().message);
      fault_opts_.size = *size;
    }
    if (auto ok = check_fault_options(fault_opts_); !ok) return report_error(fault_json_, kExitUsage, ok.error().message);
    auto kvm = Kvm::open();
    if (!kvm) return report_error(fault_json_, kExitHost, kvm.error().message);
    std::function<void(const std::string&)> progress;
    if (!fault_json_) progress = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    std::unique_ptr<HostSetup> setup;
    if (fault_setup_host_) {
      auto has = [&](const char* b) {
        return std::find(fault_opts_.backings.begin(), fault_opts_.backings.end(), b) != fault_opts_.backings.end();
      };
      HostNeeds needs{.thp = has("memfd-thp")};
      // The host's sweep and a VM's RAM, never both at once; each one's
      // memory file maps (and so reserves huge pages for) its whole size.
      if (has("hugetlb")) needs.hugetlb_bytes = hugetlb_pool_bytes(std::max(fault_opts_.size, fault_guest_ram(fault_opts_)));
      auto s = HostSetup::apply(needs);
      if (!s) return report_error(fault_json_, kExitHost, s.error().message);
      setup = std::move(*s);
      for (const auto& c : setup->changes()) std::fprintf(stderr, "setup-host: %s (restored at the end)\n", c.c_str());
    }
    std::vector<CdfSeries> series;
    auto rows = run_fault_bench(*kvm, fault_opts_, progress, fault_plot_.empty() ? nullptr : &series);
    if (!fault_plot_.empty()) {
      const std::string title = fmt::format("kvmem bench fault: first touch per access, {} MiB, {} vCPU{}",
                                            fault_opts_.size >> 20, fault_opts_.vcpus, fault_opts_.vcpus == 1 ? "" : "s");
      if (auto w = write_text_file(fault_plot_, cdf_svg(title, series)); !w)
        return report_error(fault_json_, kExitHost, w.error().message);
      if (!fault_json_) std::fprintf(stderr, "wrote %s\n", fault_plot_.c_str());
    }
    if (setup)
      for (auto& row : rows) row["host_setup"] = setup->changes();
    bool failed = false;
    for (const auto& row : rows) failed = failed || row.contains("error");
    if (fault_json_)
      for (const auto& row : rows) print_json(row);
    else
      std::printf("%s", format_fault_bench(rows).c_str());
    return failed ? kExitFailed : kExitOk;
  }

  CLI::App* fault_ = nullptr;
  FaultBenchOptions fault_opts_;
  std::vector<std::string> fault_backings_, fault_prefaults_;
  std::string fault_size_, fault_plot_;
  bool fault_read_ = false, fault_write_ = false, fault_setup_host_ = false, fault_no_warmup_ = false, fault_json_ = false;
  // `bench usage`: update_usage's cost per call by scan mode and file size
  // (bench/usage.h); check_usage_options refuses, naming the option.
  void add_usage(CLI::App& bench) {
    usage_ = bench.add_subcommand(
        "usage",
        "The allocator's usage scans: update_usage() per call by scan mode (mincore, seek_data, elided by st_blocks) "
        "and file size, against one plain mincore of the whole mapping");
    usage_->add_option("--size", usage_sizes_, "file sizes, comma-separated (a multiple of --piece, at most 256G)")
        ->delimiter(',')
        ->default_str("4G,64G");
    usage_->add_option("--committed", usage_committed_,
                       "bytes written in each file, as pieces spread evenly (default: 1/64 of the file, 1G of 64G)");
    usage_->add_option("--piece", usage_piece_, "bytes per written piece, one data extent each")->default_str("2M");
    usage_->add_option("--rounds", usage_opts_.rounds, "timed calls per mode and size")
        ->capture_default_str()
        ->check(whole_number(1, 100000));
    usage_->add_flag("--json", usage_json_, "print one JSON object per mode and size, one per line");
    usage_->add_option("--plot", usage_plot_,
                       "write an SVG of the per-call time CDFs, one line per mode and size, plain mincore dashed");
  }

  int usage() {
    auto size_of = [&](const std::string& text, const char* option) -> Result<uint64_t> {
      auto v = parse_size_string(text);
      if (!v) return fail("{}: {}", option, v.error().message);
      return *v;
    };
    if (!usage_sizes_.empty()) usage_opts_.sizes.clear();
    for (const auto& text : usage_sizes_) {
      auto v = size_of(text, "--size");
      if (!v) return report_error(usage_json_, kExitUsage, v.error().message);
      usage_opts_.sizes.push_back(*v);
    }
    for (auto [text, out, option] : {std::tuple{&usage_committed_, &usage_opts_.committed, "--committed"},
                                     std::tuple{&usage_piece_, &usage_opts_.piece, "--piece"}}) {
      if (text->empty()) continue;
      auto v = size_of(*text, option);
      if (!v) return report_error(usage_json_, kExitUsage, v.error().message);
      if (*v == 0) return report_error(usage_json_, kExitUsage, fmt::format("{}: must not be 0", option));
      *out = *v;
    }
    if (auto ok = check_usage_options(usage_opts_); !ok) return report_error(usage_json_, kExitUsage, ok.error().message);
    // The plot's file is written first ("no data") so that a path that
    // cannot be written is refused before the run, not after it.
    auto plot = [&](const std::vector<CdfSeries>& series) {
      return write_text_file(usage_plot_, cdf_svg("kvmem bench usage: update_usage() per call, by scan mode and "
                                                  "file size", series, "time per call (log scale)"));
    };
    if (!usage_plot_.empty())
      if (auto w = plot({}); !w) return report_error(usage_json_, kExitHost, w.error().message);
    std::function<void(const std::string&)> progress;
    if (!usage_json_) progress = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    std::vector<CdfSeries> series;
    auto rows = run_usage_bench(usage_opts_, progress, usage_plot_.empty() ? nullptr : &series);
    if (!usage_plot_.empty()) {
      if (auto w = plot(series); !w) return report_error(usage_json_, kExitHost, w.error().message);
      if (!usage_json_) std::fprintf(stderr, "wrote %s\n", usage_plot_.c_str());
    }
    bool failed = false;
    for (const auto& row : rows) failed = failed || row.contains("error");
    if (usage_json_)
      for (const auto& row : rows) print_json(row);
    else
      std::printf("%s", format_usage_bench(rows).c_str());
    return failed ? kExitFailed : kExitOk;
  }

  // `bench snapshot`: save and restore against raw I/O (bench/snapshot.h);
  // check_snapshot_options refuses, naming the option.
  void add_snapshot(CLI::App& bench) {
    snapshot_ = bench.add_subcommand(
        "snapshot",
        "Snapshots: save time against a raw write + fsync, size against committed and non-zero bytes, eager and "
        "lazy restore to the first instruction and to every page read, eager's load against a raw read into a memfd");
    snapshot_->add_option("--size", snapshot_sizes_, "guest RAM sizes, comma-separated (multiples of 2M, 16M..32G)")
        ->delimiter(',')
        ->default_str("256M,1G");
    snapshot_->add_option("--committed", snapshot_opts_.committed,
                          "percentages of RAM the guest fills before its snapshot, comma-separated")
        ->delimiter(',')
        ->default_str("10,50")
        ->check(whole_number(1, 90));
    snapshot_->add_option("--restore", snapshot_restores_, "restore modes to measure: eager, lazy; comma-separated")
        ->delimiter(',')
        ->default_str("eager,lazy");
    snapshot_->add_option("--dir", snapshot_opts_.dir,
                          "an existing folder to write the snapshots in, inside a temporary folder removed at the "
                          "end (default: $TMPDIR or /tmp); its disk sets the save's pace");
    snapshot_->add_option("--repeat", snapshot_opts_.repeat, "each measurement this many times; medians reported")
        ->capture_default_str()
        ->check(whole_number(1, 100));
    snapshot_->add_flag("--cold", snapshot_opts_.cold,
                        "drop the snapshot from the page cache before each restore and the load floor");
    snapshot_->add_flag("--quick", snapshot_quick_, "one 32 MiB guest (a smoke check; not figures to quote)");
    snapshot_->add_flag("--json", snapshot_json_, "print one JSON object per size and committed share, one per line");
  }

  int snapshot() {
    if (snapshot_quick_) snapshot_opts_ = quick_snapshot_options(snapshot_opts_);
    if (!snapshot_sizes_.empty()) snapshot_opts_.sizes.clear();
    for (const auto& text : snapshot_sizes_) {
      auto v = parse_size_string(text);
      if (!v) return report_error(snapshot_json_, kExitUsage, "--size: " + v.error().message);
      snapshot_opts_.sizes.push_back(*v);
    }
    if (!snapshot_restores_.empty()) snapshot_opts_.restores = snapshot_restores_;
    if (!snapshot_opts_.dir.empty()) {
      std::error_code ec;
      if (!std::filesystem::is_directory(snapshot_opts_.dir, ec))
        return report_error(snapshot_json_, kExitUsage,
                            fmt::format("--dir: {} is not an existing folder", snapshot_opts_.dir));
    }
    if (auto ok = check_snapshot_options(snapshot_opts_); !ok)
      return report_error(snapshot_json_, kExitUsage, ok.error().message);
    auto kvm = Kvm::open();
    if (!kvm) return report_error(snapshot_json_, kExitHost, kvm.error().message);
    std::function<void(const std::string&)> progress;
    if (!snapshot_json_) progress = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    auto rows = run_snapshot_bench(*kvm, snapshot_opts_, progress);
    bool failed = false;
    for (const auto& row : rows) failed = failed || snapshot_row_failed(row);
    if (snapshot_json_)
      for (const auto& row : rows) print_json(row);
    else
      std::printf("%s", format_snapshot_bench(rows).c_str());
    return failed ? kExitFailed : kExitOk;
  }

  CLI::App* snapshot_ = nullptr;
  SnapshotBenchOptions snapshot_opts_;
  std::vector<std::string> snapshot_sizes_, snapshot_restores_;
  bool snapshot_quick_ = false, snapshot_json_ = false;

  CLI::App* usage_ = nullptr;
  UsageBenchOptions usage_opts_;
  std::vector<std::string> usage_sizes_;
  std::string usage_committed_, usage_piece_, usage_plot_;
  bool usage_json_ = false;
  CLI::App *boot_, *alloc_, *reclaim_, *fs_;
  FsBenchOptions fs_opts_;
  bool fs_json_ = false;
  BootBenchOptions boot_opts_;
  AllocBenchOptions alloc_opts_;
  ReclaimBenchOptions reclaim_opts_;
  bool boot_json_ = false, alloc_json_ = false, reclaim_json_ = false;
};

}  // namespace

std::unique_ptr<Command> add_bench_command(CLI::App& app) { return std::make_unique<BenchCommand>(app); }

}  // namespace kvmem::cli
