#include "harness/runner.h"
#include "harness/interrupt.h"
#include "harness/snapshot.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "base/thread.h"

namespace kvmem {

std::vector<FileOutcome> file_outcomes(const tmpfs::FileSystem& files) {
  std::vector<FileOutcome> out;
  for (const std::string& name : files.list())
    if (auto st = files.stat(name)) out.push_back(FileOutcome{name, st->size, st->allocated, st->seals});
  return out;
}

MemoryFileOptions memory_file_options_for(uint64_t guest_bytes) {
  MemoryFileOptions o;
  o.reservation = ram_file_options(RamBacking::kMemfd, guest_bytes).reservation;  // one rule for both
  return o;
}

void record_memory(Vm& vm, VmOutcome& out) {
  out.memslots = vm.memory().memslots().size();
  if (auto resident = vm.memory().resident_bytes()) out.host_committed_bytes = *resident;
  if (auto committed = vm.memory().committed_bytes()) out.committed_bytes = *committed;
}

int RunTotals::exit_code() const {
  int code = 0;
  for (const VmOutcome& v : vms) {
    if (v.exit_code() == 3) return 3;
    if (v.exit_code() == 2) code = 2;
    if (v.exit_code() != 0 && code == 0) code = 1;
  }
  return code;
}

CommitSampler::CommitSampler(std::vector<MemoryFile*> files, unsigned period_ms, MemoryWatch* watch)
    : files_(std::move(files)), watch_(watch), period_ms_(period_ms) {
  // Without its thread (the host's thread limit) the sampler still counts
  // what observe() is given: the readings taken as each VM ends.
  auto t = start_thread("the commit sampler's thread", [this] {
    std::unique_lock lock(mu_);
    while (!stop_) {
      lock.unlock();
      sample();
      if (watch_) watch_->check();
      lock.lock();
      cv_.wait_for(lock, std::chrono::milliseconds(period_ms_), [this] { return stop_; });
    }
  });
  if (t) thread_ = std::move(*t);
}

void CommitSampler::sample() {
  uint64_t sum = 0;
  for (MemoryFile* f : files_) {
    auto b = f->total_usage();
    if (!b) return;  // a reading that failed is no reading
    sum += *b;
  }
  current_.store(sum);
  observe(sum);
}

void CommitSampler::observe(uint64_t bytes) {
  uint64_t peak = peak_.load();
  while (bytes > peak && !peak_.compare_exchange_weak(peak, bytes)) {
  }
}

CommitSampler::~CommitSampler() { stop(); }

void CommitSampler::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

RamFiles::RamFiles(MemoryFile& main, const std::vector<VmConfig>& vms) : main_(main) {
  uint64_t thp = 0, hugetlb = 0;
  for (const VmConfig& c : vms) {
    if (c.backing == RamBacking::kMemfdThp) thp += c.memory;
    if (c.backing == RamBacking::kHugetlb) hugetlb += c.memory;
  }
  auto make = [](RamBacking b, uint64_t bytes, std::unique_ptr<MemoryFile>& file, std::string& error) {
    if (!bytes) return;
    auto f = make_ram_file(b, bytes);
    if (f) file = std::move(*f);
    else error = f.error().message;
  };
  make(RamBacking::kMemfdThp, thp, thp_, thp_error_);
  make(RamBacking::kHugetlb, hugetlb, hugetlb_, hugetlb_error_);
}

Result<MemoryFile*> RamFiles::for_backing(RamBacking b) {
  switch (b) {
    case RamBacking::kMemfd:
    case RamBacking::kAnon: return &main_;
    case RamBacking::kMemfdThp:
      if (thp_) return thp_.get();
      return fail("{}", thp_error_.empty() ? "no memfd-thp memory file was made for this run" : thp_error_);
    case RamBacking::kHugetlb:
      if (hugetlb_) return hugetlb_.get();
      return fail("{}", hugetlb_error_.empty() ? "no hugetlb memory file was made for this run" : hugetlb_error_);
  }
  return fail("unknown backing");
}

std::vector<MemoryFile*> RamFiles::all() {
  std::vector<MemoryFile*> files{&main_};
  if (thp_) files.push_back(thp_.get());
  if (hugetlb_) files.push_back(hugetlb_.get());
  return files;
}

RunTotals run_vms(const Kvm& kvm, MemoryFile& file, const std::vector<VmConfig>& vms,
                  const std::vector<guest::Image>& images,
                  const std::function<void(std::string_view, std::string_view)>& echo,
                  const RunOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  RunTotals totals;
  totals.vms.resize(vms.size());
  RamFiles ram(file, vms);
  const std::vector<MemoryFile*> files = ram.all();
  MemoryWatch watch(options.memory_limit, vms.size());
  CommitSampler sampler(files, options.sample_period_ms, watch.active() ? &watch : nullptr);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < vms.size(); i++) {
    VmOutcome& first = totals.vms[i];
    first.name = vms[i].name;
    first.memory_bytes = vms[i].memory;
    first.backing = vms[i].backing;
    auto thread = start_thread(fmt::format("the thread of VM {}", vms[i].name), [&, i] {
      VmOutcome& out = totals.vms[i];
      auto ram_file = ram.for_backing(vms[i].backing);
      if (!ram_file) {
        out.setup_error = fmt::format("VM {}: {}", vms[i].name, ram_file.error().message);
        return;
      }
      MemoryFile& vm_file = **ram_file;
      auto vm = Vm::create(kvm, vm_file, vms[i], images[i], options.files);
      if (!vm) {
        out.setup_error = vm.error().message;
        return;
      }
      if (!options.snapshot_dir.empty()) (*vm)->arm_snapshots(snapshot_to_dir(options.snapshot_dir));
      watch.add(i, **vm);
      std::function<void(std::string_view)> vm_echo;
      if (echo) vm_echo = [&echo, name = vms[i].name](std::string_view text) { echo(name, text); };
      {
        StopRegistration stoppable(**vm);  // a signal stops it (harness/interrupt.h)
        out.result = (*vm)->run(vm_echo);
      }
      out.snapshots = (*vm)->snapshots_taken();
      record_memory(**vm, out);
      sampler.sample();
      // The Vm goes here, on its own thread: its RAM goes back to the file.
      const bool stopped_for_limit = watch.remove(i);
      vm->reset();
      if (stopped_for_limit) {
        // Its RAM counts as gone from now on: make it so before saying so.
        vm_file.wait_for_reclaim();
        watch.released(i);
      }
    });
    if (thread) {
      threads.push_back(std::move(*thread));
      continue;
    }
    // The host's thread limit: this VM does not start, the others run on.
    first.setup_error = thread.error().message;
    first.result.failure = FailureKind::kHost;
  }
  for (auto& t : threads) t.join();
  sampler.stop();
  totals.peak_committed_bytes = sampler.peak();
  totals.memory_limit = options.memory_limit;
  totals.memory_limit_stops = watch.stops();
  totals.memory_limit_error = watch.error();
  if (options.files) totals.files = file_outcomes(*options.files);
  for (MemoryFile* f : files) {
    f->wait_for_reclaim();
    if (f->update_usage()) totals.committed_bytes_after += f->usage().total();
    if (auto b = f->total_usage()) totals.host_committed_bytes_after += *b;
  }
  totals.wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return totals;
}

}  // namespace kvmem
