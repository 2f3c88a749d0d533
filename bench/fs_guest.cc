// `kvmem bench fs`, the parts with guests: a window shown in a running
// guest, and ping-pong between two VMs through one.
#include <x86intrin.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "bench/fs.h"
#include "bench/stats.h"
#include "config/vm_config.h"
#include "harness/files.h"
#include "harness/runner.h"
#include "memory/tmpfs/file_system.h"
#include "vmm/vm.h"

namespace kvmem {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

// TSC ticks per second, against the monotonic clock over ~50 ms. The
// guest's rdtsc at CPL3 reads the host's counter, so its rate is this one.
double tsc_hz() {
  const auto t0 = Clock::now();
  const uint64_t c0 = __rdtsc();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const uint64_t c1 = __rdtsc();
  return static_cast<double>(c1 - c0) / std::chrono::duration<double>(Clock::now() - t0).count();
}

Result<std::unique_ptr<Vm>> make_vm(const Kvm& kvm, MemoryFile& file, const json& config, tmpfs::FileSystem* fs) {
  VmConfig c = KVMEM_TRY(parse_vm_config(config, "bench"));
  auto img = KVMEM_TRY(guest::build(c.program, {.ram_bytes = c.memory}));
  return Vm::create(kvm, file, c, img, fs);
}

// Shows a fresh file of `bytes` in a guest that is running (spinning), as
// many times as asked; the time and the slots of each.
json window_row(const Kvm& kvm, uint64_t bytes, int trials) {
  MemoryFileOptions mo;
  mo.reservation = 1ull << 36;
  auto file = MemoryFile::create(mo);
  if (!file) return {{"bench", "window"}, {"error", file.error().message}};
  tmpfs::FileSystem fs(**file);
  auto vm = make_vm(kvm, **file,
                    json{{"memory", "16M"}, {"timeout_ms", 600000}, {"program", {{{"op", "fault"}, {"kind", "spin"}}}}},
                    nullptr);
  if (!vm) return {{"bench", "window"}, {"error", vm.error().message}};
  std::thread runner([&] { (void)(*vm)->run(nullptr); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // in the guest by now
  std::vector<double> ms;
  uint64_t slots = 0, allocations = 0;
  std::string error;
  for (int i = 0; i < trials && error.empty(); i++) {
    auto f = fs.create("window", true);
    if (!f || !(*f)->truncate(bytes)) {
      error = "cannot make the file";
      break;
    }
    const size_t before = (*vm)->memory().memslots().size();
    const auto t0 = Clock::now();
    auto w = Window::create((*vm)->memory(), *f, GuestAddr(1ull << 32), 0, bytes, true);
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    if (!w) {
      error = w.error().message;
      break;
    }
    slots = (*vm)->memory().memslots().size() - before;
    allocations = (*w)->mapped().size();
    w->reset();
    (void)fs.unlink("window");
  }
  (*vm)->stop(FailureKind::kStopped, "the benchmark is done");
  runner.join();
  if (!error.empty()) return {{"bench", "window"}, {"error", error}};
  const Summary s = summarize(ms);
  return {{"bench", "window"}, {"file_bytes", bytes}, {"map_ms", s.p50}, {"map_ms_max", s.max},
          {"memslots", slots}, {"allocations", allocations}, {"trials", ms.size()}};
}

// The token protocol both sides follow: the first side sets `ping` to v, the
// second answers with `pong` = v; v alternates 2, 1 for `rounds` rounds after
// a first exchange of 1 that lines the two up.
json pingpong_vm(bool first, uint64_t rounds) {
  const uint64_t ping = 1ull << 30, pong = ping + 64;
  auto store = [](uint64_t at, uint64_t v) { return json{{"op", "store_word"}, {"at", at}, {"value", v}}; };
  auto wait = [](uint64_t at, uint64_t v) {
    return json{{"op", "wait_word"}, {"at", at}, {"value", v}, {"timeout_ms", 60000}};
  };
  json body = json::array();
  json program = json::array();
  if (first) {
    program = {store(ping, 1), wait(pong, 1), {{"op", "timestamp"}, {"slot", 0}}};
    body = {store(ping, 2), wait(pong, 2), store(ping, 1), wait(pong, 1)};
  } else {
    program = {wait(ping, 1), store(pong, 1), {{"op", "timestamp"}, {"slot", 0}}};
    body = {wait(ping, 2), store(pong, 2), wait(ping, 1), store(pong, 1)};
  }
  program.push_back({{"op", "loop"}, {"count", rounds}, {"body", body}});
  program.push_back({{"op", "timestamp"}, {"slot", 1}});
  return {{"name", first ? "ping" : "pong"}, {"memory", "16M"}, {"timeout_ms", 120000},
          {"windows", {{{"file", "token"}, {"at", ping}, {"length", "4K"}}}}, {"program", program}};
}

// Two host threads through one cache line, the same protocol.
double host_one_way_ns(uint64_t rounds) {
  alignas(64) std::atomic<uint64_t> ping{0}, pong{0};
  auto spin = [](std::atomic<uint64_t>& w, uint64_t v) {
    while (w.load(std::memory_order_acquire) != v) _mm_pause();
  };
  std::thread other([&] {
    spin(ping, 1);
    pong.store(1, std::memory_order_release);
    for (uint64_t i = 0; i < rounds; i++) {
      spin(ping, 2);
      pong.store(2, std::memory_order_release);
      spin(ping, 1);
      pong.store(1, std::memory_order_release);
    }
  });
  ping.store(1, std::memory_order_release);
  spin(pong, 1);
  const auto t0 = Clock::now();
  for (uint64_t i = 0; i < rounds; i++) {
    ping.store(2, std::memory_order_release);
    spin(pong, 2);
    ping.store(1, std::memory_order_release);
    spin(pong, 1);
  }
  const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
  other.join();
  return ns / static_cast<double>(4 * rounds);
}

json pingpong_row(const Kvm& kvm, uint64_t rounds) {
  const json config = {{"files", {{{"name", "token"}, {"size", "4K"}}}},
                       {"vms", {pingpong_vm(true, rounds), pingpong_vm(false, rounds)}}};
  auto rc = parse_run_config(config, "bench");
  if (!rc) return {{"bench", "pingpong"}, {"error", rc.error().message}};
  std::vector<guest::Image> images;
  for (const VmConfig& vm : rc->vms) {
    auto img = guest::build(vm.program, {.ram_bytes = vm.memory});
    if (!img) return {{"bench", "pingpong"}, {"error", img.error().message}};
    images.push_back(std::move(*img));
  }
  auto file = MemoryFile::create(memory_file_options_for(64ull << 20));
  if (!file) return {{"bench", "pingpong"}, {"error", file.error().message}};
  auto fs = make_files(**file, rc->files);
  if (!fs) return {{"bench", "pingpong"}, {"error", fs.error().message}};
  RunOptions ro;
  ro.files = fs->get();
  RunTotals t = run_vms(kvm, **file, rc->vms, images, nullptr, ro);
  const RunResult& r = t.vms[0].result;
  if (t.exit_code() != 0 || r.timestamps.size() < 2)
    return {{"bench", "pingpong"},
            {"error", fmt::format("the ping-pong guests failed: {} / {}", r.message, t.vms[1].result.message)}};
  const double guest_ns = static_cast<double>(r.timestamps[1] - r.timestamps[0]) / tsc_hz() * 1e9 /
                          static_cast<double>(4 * rounds);
  const double host_ns = host_one_way_ns(rounds);
  return {{"bench", "pingpong"}, {"rounds", rounds}, {"guest_one_way_ns", guest_ns}, {"host_one_way_ns", host_ns},
          {"ratio", guest_ns / host_ns}};
}

}  // namespace

std::vector<json> run_fs_guest_bench(const Kvm& kvm, const FsBenchOptions& options,
                                     const std::function<void(const std::string&)>& progress) {
  std::vector<json> rows;
  const uint64_t gib = 1ull << 30;
  if (progress) progress("window: a fresh 1 GiB file shown in a running guest");
  rows.push_back(window_row(kvm, options.quick ? gib / 16 : gib, options.quick ? 1 : 5));
  const uint64_t rounds = options.quick ? 1000 : 100000;
  if (progress) progress(fmt::format("pingpong: {} rounds between two VMs, then two host threads", rounds));
  rows.push_back(pingpong_row(kvm, rounds));
  return rows;
}

}  // namespace kvmem
