// Regions added and removed while a guest runs and other threads read the
// map: the vCPU's (sync free reports), the free ring's (async ones), and a
// device-like reader that translates, takes host spans and reads. Run under
// `make tsan`.
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/support.h"
#include "tests/vmm/guest_runner.h"

using namespace kvmem;
using json = nlohmann::json;

namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr GuestRange kWindow(16 * kMiB, 18 * kMiB);

uint64_t guest_word(GuestMemory& m, uint64_t gpa) {
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(m.host(GuestAddr(gpa)))).load(std::memory_order_relaxed);
}

}  // namespace

TEST_CASE("regions come and go while a guest runs and device threads read the map", "[kvm][regions]") {
  REQUIRE_KVM();
  // Writes and frees 64 KiB at 2M, sync and async, until stopped.
  const json body = {{{"op", "touch"}, {"at", "2M"}, {"length", "64K"}},
                     {{"op", "free"}, {"at", "2M"}, {"length", "64K"}, {"batch", 4}},
                     {{"op", "touch"}, {"at", "2M"}, {"length", "64K"}},
                     {{"op", "free"}, {"at", "2M"}, {"length", "64K"}, {"batch", 4}, {"mode", "async"}}};
  json config = {{"memory", "8M"},
                 {"timeout_ms", 120'000},
                 {"program", {{{"op", "touch"}, {"at", "4M"}, {"length", "4K"}},
                              {{"op", "loop"}, {"count", 1'000'000}, {"body", body}}}}};
  auto g = test::create_guest(config);
  REQUIRE(g.setup_error == "");
  GuestMemory& m = g.vm->memory();
  auto pages = g.file->allocate(2 * kMiB, UsageKind::Tmpfs);
  REQUIRE(pages);
  std::memset(g.file->base() + pages->start, 0xab, 2 * kMiB);
  const auto ram_slots = m.memslots().size();

  RunResult result;
  std::thread vcpu([&] { result = g.vm->run(nullptr); });
  // The guest is in its loop once it has touched 4M.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (guest_word(m, 4 * kMiB) == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();

  std::atomic<bool> done{false};
  std::atomic<uint64_t> seen{0}, missed{0};
  uint64_t bad = 0;  // the reader's
  std::thread reader([&] {
    while (!done.load()) {
      GuestMemory::View v = m.view();
      if (v->contains(kWindow)) {
        seen++;
        // Bytes stay readable through the View even if the window goes now.
        bad += v->read(GuestRange(kWindow.end - 8, kWindow.end)) != std::string(8, '\xab');
        bad += v->translate(GuestAddr(kWindow.start + 4096)) != pages->start_addr() + 4096;
        HostSpan s = v->host_span(GuestRange(kWindow.start, kWindow.start + 8));
        bad += s.empty() || s.data()[0] != 0xab;
      } else {
        missed++;
        bad += v->translate(GuestAddr(kWindow.start)).has_value();
      }
      bad += !v->contains(GuestRange(0, 8 * kMiB)) || v->host_span(GuestRange(2 * kMiB, 2 * kMiB + 8)).empty();
    }
  });
  // Now and then the writer waits for the reader to see each state, so
  // reads surely overlap both the window's presence and its removal.
  auto wait_for = [](std::atomic<uint64_t>& counter) {
    const uint64_t from = counter.load();
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (counter.load() == from && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  };
  int added = 0;
  for (int i = 0; i < 200; i++) {
    REQUIRE(m.add_window(kWindow, *pages, MemAccess::kReadWrite));
    CHECK(m.memslots().size() == ram_slots + 1);
    if (i % 20 == 0) wait_for(seen);
    REQUIRE(m.remove(kWindow));
    if (i % 20 == 0) wait_for(missed);
    added++;
  }
  done = true;
  reader.join();
  g.vm->stop(FailureKind::kStopped, "the test is done");
  vcpu.join();
  INFO(result.message);
  CHECK(result.outcome == RunResult::Outcome::kStopped);  // the guest ran throughout, and never failed
  CHECK(added == 200);
  CHECK(bad == 0);
  CHECK(seen >= 10);
  CHECK(missed >= 10);
  CHECK(result.free_ranges_invalid == 0);
  CHECK(result.bytes_decommitted > 0);
  CHECK(m.memslots().size() == ram_slots);
  g.file->dec_ref(*pages);
}
