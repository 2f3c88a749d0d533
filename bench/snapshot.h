// `kvmem bench snapshot`: what saving a VM and bringing it back cost, beside
// the host's own raw I/O of the same bytes in the same run (issue 10).
//
// For each RAM size and committed fraction, `repeat` times:
//   save        a VM (a config generated as JSON and parsed as `kvmem run`
//               parses it) fills the committed fraction of its RAM in
//               pieces spread evenly over it (1 MiB, larger where more
//               than 64 would be needed), the last 1/16 of each piece with
//               zeros (committed pages that the snapshot drops), then
//               reaches `{"op": "snapshot", "then": "exit"}`; the VMM
//               writes the snapshot into a temporary folder under `dir`
//               (harness/snapshot.h, snapshot_to_dir), timed around the
//               write: create, the data, the metadata, fsync, rename;
//   save floor  one sequential write of as many bytes as the snapshot file
//               has, from an 8 MiB buffer, then fsync, in the same folder;
//   load floor  the snapshot's data region read sequentially (pread, 2 MiB
//               at a time, the extent cap) and pwritten into a fresh memfd;
//   each restore mode asked for (eager, lazy): restore_snapshot(), then the
//               restored guest runs on from its snapshot step: a
//               timestamp, a verify of every committed piece (seed and
//               zero parts), a timestamp, exit.
// From the restore's start (the host's clock before restore_snapshot) the
// row gives: restore_ms (open to ready, restore_snapshot's own), the first
// KVM_RUN (the run's end minus RunResult::run_ms), the guest's first
// instruction after its snapshot step (the run's end minus the guest's
// verify, timed by its two timestamps; so it errs late by the exit
// hypercall and the run's teardown, tens of µs), and the end of the verify,
// when the guest has read every page it committed. Eager also gives its
// load's MB/s (LoadStats::seconds) against the load floor; lazy its
// LazyStats (faults, bytes waited for, the filler's MB/s).
//
// With `cold`, the snapshot's pages are dropped from the page cache
// (POSIX_FADV_DONTNEED) before the load floor and each restore; otherwise
// those read what the save just wrote, from the page cache.
//
// Figures of the repeats are medians (nearest rank: always one measured
// value); a section that failed in any repeat carries that repeat's error.
// The temporary folder is removed at the end.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace kvmem {

class Kvm;

struct SnapshotBenchOptions {
  std::vector<uint64_t> sizes{uint64_t{256} << 20, uint64_t{1} << 30};  // guest RAM
  std::vector<unsigned> committed{10, 50};                                // percent of RAM the guest fills
  std::vector<std::string> restores{"eager", "lazy"};
  std::string dir = {};  // where the temporary folder goes; empty: the system's (TMPDIR, else /tmp)
  unsigned repeat = 1;  // each measurement this many times; medians reported
  bool cold = false;    // restores and the load floor read the snapshot from disk, not the page cache
};

// What --quick runs: one 32 MiB guest (the rest as `o` says).
SnapshotBenchOptions quick_snapshot_options(SnapshotBenchOptions o);

// The options checked against each other, each refusal naming the option:
// sizes multiples of 2 MiB from 16 MiB to 32 GiB, percents 1..90 whose
// pieces fit in RAM above the boot area, restore modes known, repeat
// 1..100, the largest committed size at most half of the machine's memory.
Status check_snapshot_options(const SnapshotBenchOptions& o);

// Where the guest's committed memory lies: `pieces` pieces of `piece` bytes
// from `first`, one every `stride` bytes; the last `zero_tail` bytes of each
// are filled with zeros, the rest with a seeded pattern.
struct SnapshotGuestPlan {
  uint64_t ram = 0;
  uint64_t first = 0;
  uint64_t piece = 0;
  uint64_t pieces = 0;
  uint64_t stride = 0;
  uint64_t zero_tail = 0;

  uint64_t filled() const { return pieces * piece; }
  uint64_t zero_filled() const { return pieces * zero_tail; }
};

// The plan for `ram` bytes with `percent` of them committed, or why it does
// not fit.
Result<SnapshotGuestPlan> snapshot_guest_plan(uint64_t ram, unsigned percent);

// The guest's config as `kvmem run` reads it: fill, snapshot (then exit),
// timestamp 1, verify, timestamp 2 (timestamp 0 comes first, so the result
// slots' page is in the snapshot).
nlohmann::json snapshot_guest_config(const SnapshotGuestPlan& p, const std::string& name);

// One JSON object per size and committed fraction (keys in
// docs/benchmarks.md, "Snapshots"). `progress` (may be empty) gets a line
// per phase.
std::vector<nlohmann::json> run_snapshot_bench(const Kvm& kvm, const SnapshotBenchOptions& o,
                                               const std::function<void(const std::string&)>& progress);

// Whether a row, or any of its sections, carries an error.
bool snapshot_row_failed(const nlohmann::json& row);

// Several repeats' rows as one: each number the median of its values, a
// section with an error in any row that row's section.
nlohmann::json median_snapshot_rows(const std::vector<nlohmann::json>& rows);

// Where a path lives: {"path", "mount", "fstype", "source"} from
// /proc/self/mountinfo (the longest mount point that holds it).
nlohmann::json folder_facts(const std::string& path);

// The rows as two tables (save and size; restores), then errors, the
// folder and the host.
std::string format_snapshot_bench(const std::vector<nlohmann::json>& rows);

}  // namespace kvmem
