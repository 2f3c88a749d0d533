#include "harness/stress_restore.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "base/thread.h"
#include "harness/interrupt.h"
#include "harness/memory_limit.h"

namespace kvmem {

Result<SnapshotFolder> SnapshotFolder::open(const StressSnapshots& config) {
  if (!config.dir.empty()) {
    if (::mkdir(config.dir.c_str(), 0755) != 0 && errno != EEXIST)
      return sys_fail(fmt::format("cannot make the snapshot folder {}", config.dir), "mkdir", errno);
    struct stat st {};
    if (::stat(config.dir.c_str(), &st) != 0)
      return sys_fail(fmt::format("cannot use the snapshot folder {}", config.dir), "stat", errno);
    if (!S_ISDIR(st.st_mode)) return fail("cannot use the snapshot folder {}: it is not a folder", config.dir);
    return SnapshotFolder(config.dir, false, config.keep);
  }
  const char* tmp = std::getenv("TMPDIR");
  std::string path = fmt::format("{}/kvmem-stress-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!::mkdtemp(path.data()))
    return sys_fail(fmt::format("cannot make a snapshot folder {}", path), "mkdtemp", errno);
  return SnapshotFolder(std::move(path), true, config.keep);
}

SnapshotFolder::SnapshotFolder(SnapshotFolder&& other) noexcept
    : path_(std::move(other.path_)), made_(other.made_), keep_(other.keep_) {
  other.made_ = false;
  other.path_.clear();
}

SnapshotFolder::~SnapshotFolder() {
  if (!made_ || keep_ || path_.empty()) return;
  std::error_code ec;  // best effort: a folder left behind is no failure of the run
  std::filesystem::remove_all(path_, ec);
}

std::string SnapshotFolder::file_of(const std::string& vm_name) const {
  return fmt::format("{}/{}.kvmsnap", path_, vm_name);  // as snapshot_to_dir names it
}

void SnapshotFolder::done_with(const std::string& vm_name) const {
  if (!keep_) ::unlink(file_of(vm_name).c_str());
}

namespace {

// The VM goes, and its RAM back to the file: the lazy loader first (it
// must be stopped before its ranges are punched), then the VM.
void let_go(RestoredVm& r) {
  if (r.lazy) {
    r.lazy->stop();
    r.vm->memory().set_decommit_observer(nullptr);
  }
  r.vm.reset();
}

}  // namespace

RestoredTotals run_restored(const Kvm& kvm, const std::vector<RestoreJob>& jobs, const MemoryLimit& limit) {
  RestoredTotals totals;
  totals.runs.resize(jobs.size());
  std::vector<RestoredVm> vms(jobs.size());
  std::vector<MemoryFile*> files;
  for (size_t i = 0; i < jobs.size(); i++) {
    RestoredRun& run = totals.runs[i];
    run.mode = jobs[i].mode;
    RestoreOptions options;
    options.mode = jobs[i].mode;
    vms[i] = restore_snapshot(kvm, jobs[i].path, options);
    run.restore_exit_code = vms[i].exit_code;
    run.restore_error = vms[i].error;
    run.restore_ms = vms[i].restore_ms;
    if (!run.restored()) continue;
    run.out.name = vms[i].config.name;
    run.out.memory_bytes = vms[i].config.memory;
    run.out.backing = vms[i].config.backing;
    files.push_back(vms[i].file.get());
  }
  MemoryWatch watch(limit, jobs.size());
  CommitSampler sampler(files, 5, watch.active() ? &watch : nullptr);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < jobs.size(); i++) {
    if (!totals.runs[i].restored()) continue;
    auto thread = start_thread(fmt::format("the thread of restored VM {}", vms[i].config.name), [&, i] {
      RestoredVm& r = vms[i];
      RestoredRun& run = totals.runs[i];
      watch.add(i, *r.vm);
      {
        StopRegistration stoppable(*r.vm);  // a signal stops it (harness/interrupt.h)
        run.out.result = r.vm->run({});
      }
      run.out.snapshots = r.vm->snapshots_taken();
      if (r.lazy) r.lazy->stop();
      run.lazy = r.lazy_stats();
      record_memory(*r.vm, run.out);
      sampler.sample();
      const bool stopped_for_limit = watch.remove(i);
      let_go(r);
      r.file->wait_for_reclaim();
      if (stopped_for_limit) watch.released(i);
      if (r.file->update_usage()) run.file_committed_after = r.file->usage().total();
      if (auto b = r.file->total_usage()) run.file_host_committed_after = *b;
    });
    if (thread) {
      threads.push_back(std::move(*thread));
      continue;
    }
    // The host's thread limit: this VM does not run, the others do.
    totals.runs[i].out.setup_error = thread.error().message;
    totals.runs[i].out.result.failure = FailureKind::kHost;
  }
  for (auto& t : threads) t.join();
  sampler.stop();
  totals.peak_committed_bytes = sampler.peak();
  totals.memory_limit_stops = watch.stops();
  return totals;  // the restored VMs' files go with `vms`
}

}  // namespace kvmem
