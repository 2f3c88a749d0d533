// Runs the VMs of one RunConfig side by side on one shared MemoryFile, each
// vCPU on its own thread, and gathers what happened with the memory
// accounting around it.
//
// Each VM is created, run and destroyed on its own thread; destroying it
// drops its references on its RAM, and the MemoryFile's reclaimer punches
// the ranges and makes them allocatable for whatever VM comes next. One VM's
// failure is its own: the others run on, and the report names it.
// harness/report.h writes the JSON of what happened.
#pragma once

#include <cstdint>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "guest/program.h"
#include "harness/memory_limit.h"
#include "memory/host_limits.h"
#include "memory/memory_file.h"
#include "memory/tmpfs/file_system.h"
#include "vmm/vm_config.h"
#include "vmm/kvm/kvm.h"
#include "vmm/vm.h"

namespace kvmem {

struct VmOutcome {
  std::string name;
  std::string setup_error;  // non-empty: the host could not create the VM
  RamBacking backing = RamBacking::kMemfd;
  RunResult result;
  uint64_t memory_bytes = 0;
  size_t memslots = 0;
  // RAM committed for this VM when it ended: by the allocator's count
  // (update_usage, then its share of its memory file) and by the kernel's
  // (mincore over its RAM). Anonymous RAM has only the kernel's, in both.
  uint64_t committed_bytes = 0;
  uint64_t host_committed_bytes = 0;
  // Snapshot rounds its vCPUs finished (Vm::snapshots_taken: taken or
  // failed): a VM that failed after one reached its snapshot step.
  uint64_t snapshots = 0;

  // 0 exited with 0 · 1 failed · 3 could not be created.
  int exit_code() const { return setup_error.empty() ? result.process_exit_code() : 3; }
};

// Fills out's memslots, committed_bytes and host_committed_bytes from a VM
// whose run has ended (a reading that fails leaves its field 0).
void record_memory(Vm& vm, VmOutcome& out);

// A shared file as the run left it.
struct FileOutcome {
  std::string name;
  uint64_t size = 0;
  uint64_t allocated_bytes = 0;  // pages in its data map
  uint32_t seals = 0;
};

// Every file of `files` as it is now, by name.
std::vector<FileOutcome> file_outcomes(const tmpfs::FileSystem& files);

struct RunTotals {
  std::vector<VmOutcome> vms;
  std::vector<FileOutcome> files;  // every file of the run, once every VM is gone
  // The run's memory files (RamFiles::all) summed; anonymous RAM is in none.
  uint64_t peak_committed_bytes = 0;   // st_blocks, sampled while VMs ran
  uint64_t committed_bytes_after = 0;  // ours (update_usage) once every VM is gone and reclaimed
  uint64_t host_committed_bytes_after = 0;  // the kernel's (st_blocks) at the same moment
  MemoryLimit memory_limit;     // what the run kept under (none: no bound)
  uint64_t memory_limit_stops = 0;  // VMs stopped to stay under it
  std::string memory_limit_error;   // the first failure to read the cgroup while VMs ran
  double wall_ms = 0;

  // 3 if any VM could not be created, else 1 if any failed, else 0.
  int exit_code() const;
};

// Samples the files' st_blocks (summed) every `period_ms` on a thread of
// its own and keeps the peak; the owner reads it after stop(). With a watch
// (may be null; must outlive the sampler) each sample also checks the
// memory limit.
class CommitSampler {
 public:
  CommitSampler(std::vector<MemoryFile*> files, unsigned period_ms, MemoryWatch* watch = nullptr);
  ~CommitSampler();
  void stop();
  // Takes one reading now (say, just before a VM lets go of its RAM).
  void sample();
  // Counts a reading taken elsewhere (say, just before a VM lets go of its RAM).
  void observe(uint64_t bytes);
  uint64_t peak() const { return peak_.load(); }
  uint64_t current() const { return current_.load(); }

 private:
  const std::vector<MemoryFile*> files_;
  MemoryWatch* watch_;
  std::atomic<uint64_t> peak_{0}, current_{0};
  std::mutex mu_;
  std::condition_variable cv_;  // with mu_: wakes the sampler to stop at once
  bool stop_ = false;           // protected by mu_
  std::thread thread_;
  unsigned period_ms_;
};

// Options for the MemoryFile behind VMs whose RAM adds up to guest_bytes at
// once: a reservation of four times that (room for fragmentation and for
// RAM still waiting to be reclaimed), a power of two, at least 1 GiB. The
// reservation costs no memory, but sanitizers cannot place a 1 TiB one.
MemoryFileOptions memory_file_options_for(uint64_t guest_bytes);

// The memory files a run's VMs take their RAM from. `main` (a plain memfd
// file) holds the run's shared files, the RAM of memfd VMs and the windows
// of anon VMs; VMs of backing memfd-thp or hugetlb take their RAM from a
// file of that backing, one per backing for the whole run, made here when
// some VM asks for it (sized for all of them). A backing the host cannot
// give (vmm/memory/backing.h) fails only the VMs that ask for it, with the
// reason and the setting that would enable it.
class RamFiles {
 public:
  RamFiles(MemoryFile& main, const std::vector<VmConfig>& vms);
  // The file for RAM of backing b, or why there is none.
  Result<MemoryFile*> for_backing(RamBacking b);
  // main first, then those made here.
  std::vector<MemoryFile*> all();

 private:
  MemoryFile& main_;
  std::unique_ptr<MemoryFile> thp_, hugetlb_;
  std::string thp_error_, hugetlb_error_;
};

struct RunOptions {
  // The memory limit to keep the process under (host_memory_limit() for
  // this process's own; the default is none).
  MemoryLimit memory_limit;
  unsigned sample_period_ms = 5;
  // The run's shared files (harness/files.h), on the same MemoryFile; null
  // when the VMs have no windows.
  tmpfs::FileSystem* files = nullptr;
  // Where VMs write their snapshots (harness/snapshot.h): a VM's snapshot
  // steps save it to snapshot_dir/<name>.kvmsnap. Empty: they do nothing.
  std::string snapshot_dir;
};

// Runs every VM of `vms` (with its assembled `images`) concurrently, their
// RAM on `file` or on the files RamFiles makes for their backings. `echo`
// (may be empty) receives (vm name, console text) as guests write.
RunTotals run_vms(const Kvm& kvm, MemoryFile& file, const std::vector<VmConfig>& vms,
                  const std::vector<guest::Image>& images,
                  const std::function<void(std::string_view, std::string_view)>& echo,
                  const RunOptions& options = {});

}  // namespace kvmem
