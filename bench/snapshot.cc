// `kvmem bench snapshot` (bench/snapshot.h): the measurements. The tables,
// the medians of repeats and the folder's facts are in
// bench/snapshot_report.cc.
#include "bench/snapshot.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <system_error>

#include <fmt/format.h>

#include "base/fd.h"
#include "bench/fault.h"
#include "bench/table.h"
#include "config/vm_config.h"
#include "guest/program.h"
#include "harness/snapshot.h"
#include "snapshot/reader.h"
#include "vmm/kvm/kvm.h"
#include "vmm/memory/backing.h"
#include "vmm/vm.h"

namespace kvmem {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint64_t kSeed = 10;  // the fill's pattern: issue 10
// Pieces of the guest's fill, at most (each piece is four steps: a fill
// and a verify of its data and of its zeros); pieces grow past 1 MiB to
// stay under it. A restore parses the config and assembles the program
// again before the first instruction: with 1 MiB pieces, 1 GiB at 50% was
// 2,052 steps, which put ~10 ms into every restore figure here, a cost a
// real guest's few steps do not have. 64 pieces are at most 260 steps.
constexpr uint64_t kMaxPieces = 64;
// The floors' buffers: the save floor's is the writer's batch, the load
// floor's the extent cap (snapshot/writer.h, snapshot/format.h).
constexpr uint64_t kWriteChunk = 8 * kMiB;
constexpr uint64_t kReadChunk = 2 * kMiB;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// Decimal megabytes per second, as the other benches and `dd` print them.
double mb_per_s(uint64_t bytes, double ms) { return ms > 0 ? static_cast<double>(bytes) / 1e3 / ms : 0; }

bool known_restore(const std::string& m) { return m == "eager" || m == "lazy"; }

// The folder every snapshot of the run goes in, made under `base` and
// removed with everything in it when the run ends.
class ScratchFolder {
 public:
  static Result<ScratchFolder> make(const std::string& base) {
    std::string tmpl = base + "/kvmem-bench-snapshot.XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr)
      return sys_fail(fmt::format("cannot make a folder for the snapshots under {}", base), "mkdtemp", errno);
    ScratchFolder f;
    f.path_ = tmpl;
    return f;
  }
  ScratchFolder(ScratchFolder&& o) noexcept : path_(std::exchange(o.path_, {})) {}
  ScratchFolder& operator=(ScratchFolder&&) = delete;
  ~ScratchFolder() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  ScratchFolder() = default;
  std::string path_;
};

// Bytes of RAM the memory file holds (committed, zero or not): what the
// snapshot writer is offered. The VM is paused (a snapshot sink runs).
Result<uint64_t> ram_data_bytes(Vm& vm) {
  uint64_t n = 0;
  for (const MemslotInfo& s : vm.memory().memslots()) {
    if (s.guest.end > vm.memory().ram_size()) continue;  // a window
    for (FileRange e : KVMEM_TRY(vm.memory().file().data_extents(s.file))) n += e.length();
  }
  return n;
}

struct Saved {
  std::string path;
  double ms = 0;            // snapshot_to_dir's write: create to the folder's fsync
  uint64_t committed = 0;   // RAM's bytes in the memory file at the snapshot
  uint64_t tsc_khz = 0;
  bool tsc_from_kvm = false;
};

// A fresh VM runs the plan's guest to its snapshot step, written into `folder`.
Result<Saved> save(const Kvm& kvm, const SnapshotGuestPlan& p, const std::string& folder, const std::string& name) {
  const RunConfig rc = KVMEM_TRY_CTX(parse_run_config(snapshot_guest_config(p, name), name),
                                     "the benchmark's guest config does not validate");
  const VmConfig& c = rc.vms.at(0);
  const guest::Image image = KVMEM_TRY(guest::build_vcpus(c.vcpu_programs(), c.machine()));
  auto file = KVMEM_TRY(make_ram_file(c.backing, c.memory));
  auto vm = KVMEM_TRY(Vm::create(kvm, *file, c, image));
  Saved out;
  out.path = fmt::format("{}/{}.kvmsnap", folder, name);
  out.tsc_khz = vm->tsc_khz();
  out.tsc_from_kvm = vm->tsc_khz_from_kvm();
  Vm::SnapshotSink write = snapshot_to_dir(folder);
  bool written = false;
  vm->arm_snapshots([&](Vm& v, const SnapshotCapture& capture) -> Status {
    out.committed = KVMEM_TRY(ram_data_bytes(v));
    const auto t0 = Clock::now();
    Status s = write(v, capture);
    out.ms = ms_since(t0);
    written = s.has_value();
    return s;
  });
  const RunResult r = vm->run(nullptr);
  if (r.outcome != RunOutcome::kExited || r.guest_exit_code != 0)
    return fail("the guest did not reach its snapshot: {} ({})", r.outcome_name(), r.message);
  if (!written) return fail("the guest ended, but no snapshot was written");
  return out;
}

// The save's floor: `bytes` written sequentially to a new file in `folder`
// from an 8 MiB buffer of non-zero bytes, then fsync; the file is removed.
Result<double> raw_write_ms(const std::string& folder, uint64_t bytes) {
  std::vector<uint64_t> buf(kWriteChunk / 8);
  for (size_t i = 0; i < buf.size(); i++) buf[i] = guest::seed_mix(i * 8, kSeed);
  const std::string path = folder + "/raw-write";
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return sys_fail(fmt::format("cannot create {}", path), "open", errno);
  const auto t0 = Clock::now();
  for (uint64_t done = 0; done < bytes;) {
    const size_t n = static_cast<size_t>(std::min(bytes - done, kWriteChunk));
    const ssize_t w = ::write(fd.get(), buf.data(), n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return sys_fail(fmt::format("cannot write {}", path), "write", w < 0 ? errno : EIO);
    done += static_cast<uint64_t>(w);
  }
  if (::fsync(fd.get()) != 0) return sys_fail(fmt::format("cannot write {}", path), "fsync", errno);
  const double ms = ms_since(t0);
  fd.reset();
  ::unlink(path.c_str());
  return ms;
}

// The load's floor: the snapshot's data region read front to back, 2 MiB
// at a time, and pwritten into a fresh memfd (no checksum, no extents).
Result<double> raw_load_ms(const std::string& snapshot, uint64_t data_offset, uint64_t data_bytes) {
  Fd in(::open(snapshot.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return sys_fail(fmt::format("cannot open {}", snapshot), "open", errno);
  Fd out(::memfd_create("kvmem-bench-load-floor", MFD_CLOEXEC));
  if (!out.valid()) return sys_fail("cannot make the load floor's memfd", "memfd_create", errno);
  if (::ftruncate(out.get(), static_cast<off_t>(data_bytes)) != 0)
    return sys_fail("cannot size the load floor's memfd", "ftruncate", errno);
  std::vector<uint8_t> buf(kReadChunk);
  const auto t0 = Clock::now();
  for (uint64_t at = 0; at < data_bytes;) {
    const size_t n = static_cast<size_t>(std::min(data_bytes - at, kReadChunk));
    const ssize_t r = ::pread(in.get(), buf.data(), n, static_cast<off_t>(data_offset + at));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return sys_fail(fmt::format("cannot read {}", snapshot), "pread", r < 0 ? errno : EIO);
    for (size_t put = 0; put < static_cast<size_t>(r);) {
      const ssize_t w = ::pwrite(out.get(), buf.data() + put, static_cast<size_t>(r) - put,
                                 static_cast<off_t>(at + put));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return sys_fail("cannot fill the load floor's memfd", "pwrite", w < 0 ? errno : EIO);
      put += static_cast<size_t>(w);
    }
    at += static_cast<uint64_t>(r);
  }
  return ms_since(t0);
}

// Drops the file's pages from the page cache (they are clean: the writer
// fsynced them), so that the next read comes from the disk.
Status drop_cached(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return sys_fail(fmt::format("cannot open {}", path), "open", errno);
  if (const int e = ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED); e != 0)
    return sys_fail(fmt::format("cannot drop {} from the page cache", path), "posix_fadvise", e);
  return {};
}

// One restore of the snapshot and the restored guest's run to its end.
json restore_figures(const Kvm& kvm, const std::string& path, RestoreMode mode, bool cold) {
  if (cold)
    if (auto d = drop_cached(path); !d) return {{"error", d.error().message}};
  RestoreOptions options;
  options.mode = mode;
  const auto t0 = Clock::now();
  RestoredVm r = restore_snapshot(kvm, path, options);
  if (r.exit_code != 0) return {{"error", r.error}};
  const RunResult run = r.vm->run(nullptr);
  const double all_ms = ms_since(t0);
  if (run.outcome != RunOutcome::kExited || run.guest_exit_code != 0)
    return {{"error", fmt::format("the restored guest did not verify its memory: {} ({})", run.outcome_name(),
                                  run.message)}};
  const std::vector<uint64_t>& ts = run.timestamps;
  if (ts.size() < 3 || ts[2] < ts[1])
    return {{"error", fmt::format("the restored guest left {} timestamps, not 3 in order", ts.size())}};
  const double verify_ms = ticks_to_ns(ts[2] - ts[1], r.vm->tsc_khz()) / 1e6;
  json out = {{"restore_ms", r.restore_ms},
              {"first_run_ms", all_ms - run.run_ms},
              {"first_instruction_ms", all_ms - verify_ms},
              {"verify_ms", verify_ms},
              {"all_read_ms", all_ms},
              {"snapshot_bytes", r.snapshot_bytes}};
  if (mode == RestoreMode::kEager) {
    const double load_ms = r.load.seconds * 1e3;
    out["load_ms"] = load_ms;
    out["load_bytes"] = r.load.bytes;
    out["load_extents"] = r.load.extents;
    out["load_mb_s"] = mb_per_s(r.load.bytes, load_ms);
    return out;
  }
  // Lazy: whatever the filler had still to do, then its figures.
  if (r.lazy)
    if (auto c = r.lazy->complete(); !c) return {{"error", c.error().message}};
  const LazyStats s = r.lazy_stats();
  if (!s.error.empty()) return {{"error", s.error}};
  out["faults"] = s.faults;
  out["zero_faults"] = s.zero_faults;
  out["extents_on_demand"] = s.extents_on_demand;
  out["bytes_on_demand"] = s.bytes_on_demand;
  out["extents_filled"] = s.extents_filled;
  out["bytes_filled"] = s.bytes_filled;
  out["fill_ms"] = s.fill_ms;
  out["fill_busy_ms"] = s.fill_busy_ms;
  out["fill_mb_s"] = mb_per_s(s.bytes_filled, s.fill_busy_ms);
  out["wait_ms"] = s.wait_ms;
  out["complete"] = s.complete;
  return out;
}

// What the snapshot file holds, from its own tables.
struct Contents {
  uint64_t nonzero = 0;  // data bytes: every extent's length
  uint64_t extents = 0;
  uint64_t file_bytes = 0;
  uint64_t data_offset = 0;
  uint64_t data_bytes = 0;
};

Result<Contents> contents_of(const std::string& path) {
  auto reader = KVMEM_TRY(SnapshotReader::open(path));
  Contents c;
  for (const SnapshotExtent& e : reader->extents()) c.nonzero += e.length;
  c.extents = reader->extents().size();
  c.file_bytes = reader->header().file_size;
  c.data_offset = reader->header().data_offset;
  c.data_bytes = reader->header().data_bytes;
  return c;
}

// Host facts from the first save: the TSC the guests' timestamps count in.
struct Tsc {
  uint64_t khz = 0;
  std::string source;
};

// One repeat of everything for one size and committed fraction.
// `file_bytes` is the snapshot's size in the repeat before (0 in the
// first), and this one's afterwards.
json one_round(const Kvm& kvm, const SnapshotBenchOptions& o, uint64_t size, unsigned percent,
               const std::string& folder, const std::function<void(const std::string&)>& say, unsigned k, Tsc* tsc,
               uint64_t* file_bytes) {
  const SnapshotGuestPlan p = *snapshot_guest_plan(size, percent);
  const std::string what = fmt::format("snapshot: {}, {}% committed", size_name(size), percent);
  const std::string of = o.repeat > 1 ? fmt::format(" ({}/{})", k + 1, o.repeat) : "";
  json row = {{"bench", "snapshot"},
              {"size", size},
              {"committed_percent", percent},
              {"repeat", o.repeat},
              {"cold", o.cold},
              {"guest", {{"pieces", p.pieces}, {"piece", p.piece}, {"filled_bytes", p.filled()},
                         {"zero_filled_bytes", p.zero_filled()}}}};
  // The save's floor runs after the save, but before it in every second
  // repeat (with the size the repeat before wrote: the same guest, the same
  // snapshot), so that neither always meets a disk still busy with the
  // other's writes.
  const bool floor_first = k % 2 == 1 && *file_bytes > 0;
  uint64_t floor_bytes = *file_bytes;
  auto write_floor = [&] {
    say(fmt::format("{}: raw write + fsync of {:.1f} MB (the save's floor){}", what,
                    static_cast<double>(floor_bytes) / 1e6, of));
    return raw_write_ms(folder, floor_bytes);
  };
  Result<double> floor = 0.0;
  if (floor_first) floor = write_floor();
  say(fmt::format("{}: the guest fills {} in {} pieces and is saved{}", what, size_name(p.filled()), p.pieces, of));
  const std::string name = fmt::format("bench-{}m-{}", size >> 20, percent);
  auto saved = save(kvm, p, folder, name);
  if (!saved) {
    row["error"] = saved.error().message;
    return row;
  }
  if (tsc->khz == 0) *tsc = {saved->tsc_khz, saved->tsc_from_kvm ? "KVM_GET_TSC_KHZ" : "calibrated"};
  auto c = contents_of(saved->path);
  if (!c) {
    row["error"] = c.error().message;
    return row;
  }
  row["snapshot"] = {{"file_bytes", c->file_bytes},
                     {"committed_bytes", saved->committed},
                     {"nonzero_bytes", c->nonzero},
                     {"zero_pages", (saved->committed - std::min(saved->committed, c->nonzero)) / 4096},
                     {"extents", c->extents},
                     {"over_nonzero_percent",
                      c->nonzero ? 100.0 * (static_cast<double>(c->file_bytes) - static_cast<double>(c->nonzero)) /
                                       static_cast<double>(c->nonzero)
                                 : 0.0}};
  *file_bytes = c->file_bytes;
  if (!floor_first) {
    floor_bytes = c->file_bytes;
    floor = write_floor();
  }
  json save_j = {{"ms", saved->ms}, {"mb_s", mb_per_s(c->file_bytes, saved->ms)}};
  if (floor) {
    // The save's speed over the floor's: 1 is the disk's own pace.
    const double floor_mb_s = mb_per_s(floor_bytes, *floor);
    save_j["floor_ms"] = *floor;
    save_j["floor_mb_s"] = floor_mb_s;
    save_j["ratio"] = floor_mb_s > 0 ? json(mb_per_s(c->file_bytes, saved->ms) / floor_mb_s) : json(nullptr);
  } else {
    save_j["error"] = floor.error().message;
  }
  row["save"] = save_j;
  say(fmt::format("{}: raw read of the snapshot's data into a memfd (the load's floor){}", what, of));
  double load_floor_mb_s = 0;
  if (auto d = o.cold ? drop_cached(saved->path) : Status{}; !d) {
    row["load_floor"] = {{"error", d.error().message}};
  } else if (auto raw = raw_load_ms(saved->path, c->data_offset, c->data_bytes)) {
    load_floor_mb_s = mb_per_s(c->data_bytes, *raw);
    row["load_floor"] = {{"ms", *raw}, {"bytes", c->data_bytes}, {"mb_s", load_floor_mb_s}};
  } else {
    row["load_floor"] = {{"error", raw.error().message}};
  }
  for (const std::string& mode : o.restores) {
    say(fmt::format("{}: {} restore and the guest's verify{}", what, mode, of));
    json m = restore_figures(kvm, saved->path, mode == "lazy" ? RestoreMode::kLazy : RestoreMode::kEager, o.cold);
    if (mode == "eager" && !m.contains("error")) {
      m["load_floor_mb_s"] = load_floor_mb_s > 0 ? json(load_floor_mb_s) : json(nullptr);
      m["load_ratio"] = load_floor_mb_s > 0 ? json(m["load_mb_s"].get<double>() / load_floor_mb_s) : json(nullptr);
    }
    row[mode] = m;
  }
  std::error_code ec;
  std::filesystem::remove(saved->path, ec);
  return row;
}

}  // namespace

SnapshotBenchOptions quick_snapshot_options(SnapshotBenchOptions o) {
  o.sizes = {32 * kMiB};
  return o;
}

Result<SnapshotGuestPlan> snapshot_guest_plan(uint64_t ram, unsigned percent) {
  SnapshotGuestPlan p;
  p.ram = ram;
  // Above the boot area (the first MiB) and below the result slots (the
  // last page), both with room to spare: 2 MiB at each end.
  p.first = 2 * kMiB;
  const uint64_t usable = ram > 4 * kMiB ? ram - 4 * kMiB : 0;
  const uint64_t target = ram * percent / 100;
  p.piece = kMiB;
  while (target / p.piece > kMaxPieces) p.piece *= 2;
  p.pieces = std::max<uint64_t>(1, target / p.piece);
  if (p.pieces * p.piece > usable)
    return fail("--committed: {}% of {} ({} pieces of {}) does not fit in the {} between the boot area and the "
                "result slots",
                percent, size_name(ram), p.pieces, size_name(p.piece), size_name(usable));
  // Spread evenly, each piece on a boundary of its own size, so that one
  // piece's data is one extent (or two at most, at the 2 MiB cap).
  p.stride = usable / p.pieces / p.piece * p.piece;
  p.zero_tail = p.piece / 16;
  return p;
}

json snapshot_guest_config(const SnapshotGuestPlan& p, const std::string& name) {
  const json seed = {{"seed", kSeed}};
  json program = json::array();
  program.push_back({{"op", "timestamp"}, {"slot", 0}});
  auto data_and_zeros = [&](const char* op) {
    for (uint64_t i = 0; i < p.pieces; i++) {
      const uint64_t at = p.first + i * p.stride, data = p.piece - p.zero_tail;
      program.push_back({{"op", op}, {"at", at}, {"length", data}, {"pattern", seed}});
      program.push_back({{"op", op}, {"at", at + data}, {"length", p.zero_tail}, {"pattern", "zero"}});
    }
  };
  data_and_zeros("fill");
  program.push_back({{"op", "snapshot"}, {"then", "exit"}});
  // A restored VM starts here.
  program.push_back({{"op", "timestamp"}, {"slot", 1}});
  data_and_zeros("verify");
  program.push_back({{"op", "timestamp"}, {"slot", 2}});
  return {{"name", name}, {"memory", p.ram}, {"timeout_ms", 1'800'000}, {"program", std::move(program)}};
}

Status check_snapshot_options(const SnapshotBenchOptions& o) {
  if (o.sizes.empty()) return fail("--size: name at least one RAM size");
  for (uint64_t s : o.sizes) {
    if (s % (2 * kMiB) != 0) return fail("--size: {:#x} is not a multiple of 2 MiB", s);
    if (s < 16 * kMiB || s > 32 * kGiB) return fail("--size: {} is not from 16 MiB to 32 GiB", size_name(s));
  }
  if (o.committed.empty()) return fail("--committed: name at least one percentage of RAM");
  for (unsigned c : o.committed)
    if (c < 1 || c > 90) return fail("--committed: {} is not a percentage of RAM from 1 to 90", c);
  for (uint64_t s : o.sizes)
    for (unsigned c : o.committed) KVMEM_TRY(snapshot_guest_plan(s, c));
  if (o.restores.empty()) return fail("--restore: name at least one of eager, lazy");
  for (const auto& m : o.restores)
    if (!known_restore(m)) return fail("--restore: unknown mode \"{}\" (expected eager or lazy)", m);
  if (o.repeat < 1 || o.repeat > 100) return fail("--repeat: {} is not in 1..100", o.repeat);
  const uint64_t largest = *std::max_element(o.sizes.begin(), o.sizes.end()) *
                           *std::max_element(o.committed.begin(), o.committed.end()) / 100;
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  if (pages > 0 && largest > static_cast<uint64_t>(pages) * 4096 / 2)
    return fail("--size, --committed: {} MiB committed is more than half of this machine's {} MiB",
                largest >> 20, (static_cast<uint64_t>(pages) * 4096) >> 20);
  return {};
}

std::vector<json> run_snapshot_bench(const Kvm& kvm, const SnapshotBenchOptions& o,
                                     const std::function<void(const std::string&)>& progress) {
  auto say = [&](const std::string& line) {
    if (progress) progress(line);
  };
  std::string base = o.dir;
  if (base.empty()) {
    std::error_code ec;
    base = std::filesystem::temp_directory_path(ec).string();
    if (ec || base.empty()) base = "/tmp";
  }
  auto folder = ScratchFolder::make(base);
  if (!folder) return {{{"bench", "snapshot"}, {"error", folder.error().message}}};
  const json where = folder_facts(base);
  say(fmt::format("snapshot: snapshots go to {} ({} on {})", folder->path(), where.value("fstype", "?"),
                  where.value("source", "?")));
  Tsc tsc;
  std::vector<json> rows;
  for (uint64_t size : o.sizes)
    for (unsigned percent : o.committed) {
      std::vector<json> repeats;
      uint64_t file_bytes = 0;
      for (unsigned k = 0; k < o.repeat; k++)
        repeats.push_back(one_round(kvm, o, size, percent, folder->path(), say, k, &tsc, &file_bytes));
      json row = median_snapshot_rows(repeats);
      row["dir"] = where;
      rows.push_back(std::move(row));
    }
  const json facts = fault_host_facts(tsc.khz, tsc.source.empty() ? "none" : tsc.source);
  for (json& r : rows) r["host"] = facts;
  return rows;
}

}  // namespace kvmem
