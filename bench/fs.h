// `kvmem bench fs`: the tmpfs file layer against the kernel's memfd, and
// its windows in guests.
//
//   io        write and read throughput through RegularFile::write/read
//             against pwrite/pread on a real memfd, for 4 KiB, 64 KiB,
//             1 MiB and 16 MiB operations, in the same run: into fresh
//             files (every page allocated by the write) and over written
//             ones. Each figure is the median of several trials; the ratio
//             is layer / memfd (goal: >= 0.8 from 64 KiB, >= 0.5 at 4 KiB).
//   window    showing a fresh 1 GiB file in a running guest (Window::create:
//             translate, one allocation, the chunk mappings, the memory
//             slots): milliseconds and the slots it took (goal: <= 2).
//   pingpong  two VMs pass a token back and forth through a shared window
//             (store_word / wait_word); the one-way latency from the
//             guest's TSC, against two host threads doing the same through
//             shared memory in the same run.
//
// Rows are JSON objects with a "bench" key (one per figure set), as for
// `bench alloc`; format_fs_bench renders them. docs/benchmarks.md has the
// method and the figures.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace kvmem {

class Kvm;

struct FsBenchOptions {
  bool quick = false;  // smaller sizes, fewer trials: a smoke check, not figures to quote
};

// The io rows; they need no KVM.
std::vector<nlohmann::json> run_fs_io_bench(const FsBenchOptions& options,
                                            const std::function<void(const std::string&)>& progress = {});
// The window and pingpong rows (bench/fs_guest.cc).
std::vector<nlohmann::json> run_fs_guest_bench(const Kvm& kvm, const FsBenchOptions& options,
                                               const std::function<void(const std::string&)>& progress = {});

std::string format_fs_bench(const std::vector<nlohmann::json>& rows);

}  // namespace kvmem
