// Windows onto shared files in real guests: what the guest sees, what the
// host sees, read-only windows and seals, a truncate under a running guest's
// window, and free reports over a window.
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "config/vm_config.h"
#include "harness/files.h"
#include "harness/runner.h"
#include "tests/support.h"
#include "vmm/vm.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

constexpr uint64_t kAt = 1ull << 30;  // where the tests put their window

// A config's VMs, their programs and its files, made as `kvmem run` makes them.
struct Prepared {
  RunConfig config;
  std::vector<guest::Image> images;
  std::unique_ptr<MemoryFile> file;
  std::unique_ptr<tmpfs::FileSystem> fs;  // after file: it goes first
  std::optional<Kvm> kvm;

  std::shared_ptr<tmpfs::RegularFile> open(const char* name) {
    auto f = fs->open(name);
    REQUIRE(f);
    return *f;
  }
  std::unique_ptr<Vm> create(size_t i = 0) {
    auto vm = Vm::create(*kvm, *file, config.vms[i], images[i], fs.get());
    if (!vm) FAIL(vm.error().message);
    return std::move(*vm);
  }
};

Prepared prepare(const json& j) {
  Prepared p;
  auto c = parse_run_config(j, "t");
  if (!c) FAIL(c.error().message);
  p.config = std::move(*c);
  for (const VmConfig& vm : p.config.vms) {
    auto img = guest::build(vm.program, {.ram_bytes = vm.memory});
    REQUIRE(img);
    p.images.push_back(std::move(*img));
  }
  auto file = MemoryFile::create(memory_file_options_for(1ull << 30));
  REQUIRE(file);
  p.file = std::move(*file);
  auto fs = make_files(*p.file, p.config.files);
  if (!fs) FAIL(fs.error().message);
  p.fs = std::move(*fs);
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  p.kvm.emplace(std::move(*kvm));
  return p;
}

json one_vm(json file, json window, json program) {
  return json{{"files", {std::move(file)}},
              {"memory", "16M"},
              {"timeout_ms", 10000},
              {"windows", {std::move(window)}},
              {"program", std::move(program)}};
}

json box(json size = "2M") { return json{{"name", "box"}, {"size", std::move(size)}}; }
json window(bool writable = true, json length = "2M") {
  return json{{"file", "box"}, {"at", "1G"}, {"length", std::move(length)}, {"writable", writable}};
}

uint64_t word_of(tmpfs::RegularFile& f, uint64_t offset) {
  uint64_t w = 0;
  auto n = f.read(offset, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&w), 8));
  REQUIRE(n);
  REQUIRE(*n == 8);
  return w;
}

}  // namespace

TEST_CASE("what a guest writes through a window the host reads in the file, and the reverse", "[kvm][windows]") {
  REQUIRE_KVM();
  Prepared p = prepare(one_vm(box(), window(),
                              {{{"op", "verify"}, {"at", "0x40100000"}, {"length", "1M"}, {"pattern", {{"byte", 0xab}}}},
                               {{"op", "fill"}, {"at", "1G"}, {"length", "1M"}, {"pattern", "address"}}}));
  // The host writes the second half before the guest starts.
  std::vector<uint8_t> ab(1 << 20, 0xab);
  REQUIRE(p.open("box")->write(1 << 20, ab));
  auto vm = p.create();
  RunResult r = vm->run(nullptr);
  INFO(r.message);
  REQUIRE(r.outcome == RunOutcome::kExited);
  CHECK(r.guest_exit_code == 0);
  auto f = p.open("box");
  CHECK(word_of(*f, 0) == kAt);
  CHECK(word_of(*f, (1 << 20) - 8) == kAt + (1 << 20) - 8);
  CHECK(word_of(*f, 1 << 20) == 0xababababababababull);
  // The window needs few slots: one per allocation that does not touch the last.
  size_t window_slots = 0;
  for (const MemslotInfo& s : vm->memory().memslots()) window_slots += s.guest.start >= kAt;
  CHECK(window_slots <= 2);  // the host's write and the guest's first touch: two allocations at most
}

TEST_CASE("a guest write to a read-only window stops that VM, naming the address, the window and the file",
          "[kvm][windows]") {
  REQUIRE_KVM();
  Prepared p = prepare(one_vm(box(), window(false),
                              {{{"op", "verify"}, {"at", "1G"}, {"length", "2M"}, {"pattern", "zero"}},
                               {{"op", "fill"}, {"at", "0x40001000"}, {"length", "8"}, {"pattern", "address"}}}));
  auto vm = p.create();
  for (const MemslotInfo& s : vm->memory().memslots())
    if (s.guest.start >= kAt) CHECK(s.access == MemAccess::kReadOnly);
  RunResult r = vm->run(nullptr);
  REQUIRE(r.outcome == RunOutcome::kFailed);
  CHECK(r.failure == FailureKind::kGuest);
  CHECK_THAT(r.message, Catch::StartsWith("guest wrote to guest-physical 0x40001000 in the read-only window "
                                          "[0x40000000, 0x40200000) onto file \"box\""));
  CHECK(word_of(*p.open("box"), 0x1000) == 0);  // nothing reached the file
}

TEST_CASE("a file sealed against writes gets a read-only window even where the config asks for a writable one",
          "[kvm][windows]") {
  REQUIRE_KVM();
  json sealed = box();
  sealed["pattern"] = {{"byte", 0x5a}};
  sealed["seals"] = {"write"};
  Prepared p = prepare(one_vm(sealed, window(true),
                              {{{"op", "verify"}, {"at", "1G"}, {"length", "2M"}, {"pattern", {{"byte", 0x5a}}}},
                               {{"op", "fill"}, {"at", "1G"}, {"length", "8"}, {"pattern", "zero"}}}));
  auto vm = p.create();
  REQUIRE(vm->windows().all().size() == 1);
  CHECK(vm->windows().all()[0]->access() == MemAccess::kReadOnly);
  RunResult r = vm->run(nullptr);
  REQUIRE(r.outcome == RunOutcome::kFailed);
  CHECK_THAT(r.message, Catch::Contains("in the read-only window [0x40000000, 0x40200000) onto file \"box\""));
  CHECK(word_of(*p.open("box"), 0) == 0x5a5a5a5a5a5a5a5aull);
}

TEST_CASE("a truncate under a mapped window cuts only the dropped part; a guest access there stops the VM",
          "[kvm][windows]") {
  REQUIRE_KVM();
  Prepared p = prepare(one_vm(box(), window(),
                              {{{"op", "fill"}, {"at", "1G"}, {"length", "1M"}, {"pattern", "address"}},
                               {{"op", "verify"}, {"at", "0x40100000"}, {"length", "8"}, {"pattern", "zero"}}}));
  auto vm = p.create();
  const auto before = vm->memory().memslots();
  REQUIRE(p.open("box")->truncate(1 << 20));
  const auto after = vm->memory().memslots();
  REQUIRE(after.size() == before.size());
  CHECK(after[0].guest == before[0].guest);  // RAM's slot was not touched
  CHECK(after[0].slot == before[0].slot);
  CHECK(after.back().guest == GuestRange(kAt, kAt + (1 << 20)));
  RunResult r = vm->run(nullptr);
  REQUIRE(r.outcome == RunOutcome::kFailed);
  CHECK(r.failure == FailureKind::kGuest);
  CHECK_THAT(r.message, Catch::StartsWith("guest read guest-physical 0x40100000, beyond the end of file \"box\" "
                                          "(size 0x100000), in the writable window [0x40000000, 0x40200000)"));
  CHECK(word_of(*p.open("box"), 8) == kAt + 8);  // what came before the cut was written
}

TEST_CASE("a window maps again what the file grows back into, reading zeros there", "[kvm][windows]") {
  REQUIRE_KVM();
  json small = box("1M");
  small["pattern"] = {{"byte", 0x11}};
  Prepared p = prepare(one_vm(small, window(),
                              {{{"op", "verify"}, {"at", "1G"}, {"length", "1M"}, {"pattern", {{"byte", 0x11}}}},
                               {{"op", "verify"}, {"at", "0x40100000"}, {"length", "1M"}, {"pattern", "zero"}},
                               {{"op", "fill"}, {"at", "0x40180000"}, {"length", "4K"}, {"pattern", "address"}}}));
  auto vm = p.create();
  CHECK(vm->windows().all()[0]->mapped() == std::vector<GuestRange>{GuestRange(kAt, kAt + (1 << 20))});
  REQUIRE(p.open("box")->truncate(2 << 20));  // grows: nothing is mapped for it yet
  RunResult r = vm->run(nullptr);
  INFO(r.message);
  REQUIRE(r.outcome == RunOutcome::kExited);
  CHECK(word_of(*p.open("box"), 0x180000) == kAt + 0x180000);
  CHECK(vm->windows().all()[0]->mapped().size() == 2);  // the first part, and what the guest's access mapped
}

TEST_CASE("free reports over a window are refused with -EPERM and punch nothing", "[kvm][windows]") {
  REQUIRE_KVM();
  json filled = box();
  filled["pattern"] = {{"byte", 0x77}};
  Prepared p = prepare(one_vm(filled, window(),
                              {{{"op", "report"}, {"ranges", json::array({json::array({"1G", "4K"}), json::array({"0x40100000", "1M"}), json::array({"4M", "4K"})})},
                                {"expect", {"-EPERM", "-EPERM", 0}}},
                               {{"op", "verify"}, {"at", "1G"}, {"length", "2M"}, {"pattern", {{"byte", 0x77}}}}}));
  auto vm = p.create();
  RunResult r = vm->run(nullptr);
  INFO(r.message);
  REQUIRE(r.outcome == RunOutcome::kExited);
  CHECK(r.guest_exit_code == 0);
  CHECK(r.free_ranges_invalid == 2);
  CHECK(word_of(*p.open("box"), 0) == 0x7777777777777777ull);
}

TEST_CASE("an unlinked file lives on in the windows that show it", "[kvm][windows]") {
  REQUIRE_KVM();
  json filled = box();
  filled["pattern"] = {{"byte", 0x42}};
  Prepared p = prepare(one_vm(filled, window(false),
                              {{{"op", "verify"}, {"at", "1G"}, {"length", "2M"}, {"pattern", {{"byte", 0x42}}}}}));
  auto vm = p.create();
  REQUIRE(p.fs->unlink("box"));
  CHECK_FALSE(p.fs->open("box"));
  RunResult r = vm->run(nullptr);
  INFO(r.message);
  CHECK(r.outcome == RunOutcome::kExited);
  vm.reset();
  p.file->wait_for_reclaim();
  REQUIRE(p.file->update_usage());
  CHECK(p.file->usage().of(UsageKind::Tmpfs) == 0);  // the last holder went, and the pages with it
}

TEST_CASE("a host that truncates and grows a file while a guest reads its window never hangs or tears the map",
          "[kvm][windows][threads]") {
  REQUIRE_KVM();
  Prepared p = prepare(one_vm(box(), window(true),
                              {{{"op", "loop"},
                                {"count", 400},
                                {"body", {{{"op", "verify"}, {"at", "0x40100000"}, {"length", "64K"}, {"pattern", "zero"}},
                                          {{"op", "fill"}, {"at", "1G"}, {"length", "64K"}, {"pattern", "zero"}}}}}}));
  auto vm = p.create();
  auto f = p.open("box");
  std::atomic<bool> done{false};
  std::atomic<int> host_errors{0};  // Catch's assertions are for the test's own thread
  std::thread host([&] {
    // Shrink under the part the guest reads, grow back: each shrink cuts
    // the window, each guest access after a grow maps it again.
    for (int i = 0; i < 200 && !done.load(); i++) {
      if (!f->truncate(1 << 20) || !f->truncate(2 << 20)) host_errors++;
    }
  });
  RunResult r = vm->run(nullptr);
  done = true;
  host.join();
  CHECK(host_errors == 0);
  INFO(r.message);
  if (r.outcome == RunOutcome::kFailed)
    CHECK_THAT(r.message, Catch::Contains("beyond the end of file \"box\""));
  else
    CHECK(r.outcome == RunOutcome::kExited);
  // What the window maps lies inside it and below the file's end.
  for (const GuestRange& g : vm->windows().all()[0]->mapped()) {
    CHECK(g.start >= kAt);
    CHECK(g.end <= kAt + (2 << 20));
  }
}

namespace {

json store(uint64_t at, uint64_t v) { return {{"op", "store_word"}, {"at", at}, {"value", v}}; }
json wait(uint64_t at, uint64_t v) { return {{"op", "wait_word"}, {"at", at}, {"value", v}, {"timeout_ms", 8000}}; }

}  // namespace

TEST_CASE("two VMs pass a token back and forth through a shared window, and the host reads where they left it",
          "[kvm][windows]") {
  REQUIRE_KVM();
  constexpr uint64_t kPing = kAt, kPong = kAt + 64, kRounds = 500;
  auto vm = [&](const char* name, json program) {
    return json{{"name", name}, {"memory", "16M"}, {"timeout_ms", 20000},
                {"windows", {{{"file", "box"}, {"at", "1G"}, {"length", "4K"}}}}, {"program", std::move(program)}};
  };
  json ping = {{{"op", "loop"}, {"count", kRounds}, {"body", {store(kPing, 1), wait(kPong, 1), store(kPing, 2), wait(kPong, 2)}}},
               store(kAt + 128, 0xa11ce)};
  json pong = {{{"op", "loop"}, {"count", kRounds}, {"body", {wait(kPing, 1), store(kPong, 1), wait(kPing, 2), store(kPong, 2)}}},
               store(kAt + 136, 0xb0b)};
  Prepared p = prepare({{"files", {box("4K")}}, {"vms", {vm("ping", ping), vm("pong", pong)}}});
  RunOptions o;
  o.files = p.fs.get();
  RunTotals t = run_vms(*p.kvm, *p.file, p.config.vms, p.images, nullptr, o);
  INFO(t.vms[0].result.message << " / " << t.vms[1].result.message);
  REQUIRE(t.exit_code() == 0);
  auto f = p.open("box");
  CHECK(word_of(*f, 0) == 2);
  CHECK(word_of(*f, 64) == 2);
  CHECK(word_of(*f, 128) == 0xa11ce);
  CHECK(word_of(*f, 136) == 0xb0b);
  REQUIRE(t.files.size() == 1);
  CHECK(t.files[0].allocated_bytes == 4096);
}

TEST_CASE("a word the host writes into a running guest's window is what the guest waits for", "[kvm][windows]") {
  REQUIRE_KVM();
  Prepared p = prepare(one_vm(box("4K"), window(true, "4K"), {wait(kAt, 0x600d), store(kAt + 8, 0xac4)}));
  auto vm = p.create();
  auto f = p.open("box");
  std::thread host([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the guest is waiting by now (or soon)
    const uint64_t v = 0x600d;
    (void)f->write(0, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), 8));
  });
  RunResult r = vm->run(nullptr);
  host.join();
  INFO(r.message);
  REQUIRE(r.outcome == RunOutcome::kExited);
  CHECK(r.guest_exit_code == 0);
  CHECK(word_of(*f, 8) == 0xac4);
}
