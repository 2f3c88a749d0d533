// GuestMemory as a map of regions: RAM, and a file window beside it backed
// by a MemoryFile allocation (Tmpfs pages, as the file layer will give).
#include <cerrno>
#include <cstring>
#include <string>

#include <catch2/catch.hpp>

#include "tests/support.h"
#include "vmm/devices/free_reports.h"
#include "vmm/kvm/kvm.h"
#include "vmm/memory/guest_memory.h"

using namespace kvmem;

namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kRam = 8 * kMiB;
constexpr GuestRange kWindow(16 * kMiB, 18 * kMiB);

struct Setup {
  std::unique_ptr<MemoryFile> file;
  std::unique_ptr<GuestMemory> memory;
  FileRange pages;  // 2 MiB of file pages holding 0xab, ours to show in a window
};

Setup make_setup() {
  MemoryFileOptions o;
  o.reservation = 1ull << 32;
  auto file = MemoryFile::create(o);
  REQUIRE(file);
  auto memory = GuestMemory::create(**file, kRam, 2 * kMiB);
  REQUIRE(memory);
  auto pages = (*file)->allocate(2 * kMiB, UsageKind::Tmpfs);
  REQUIRE(pages);
  auto span = (*file)->map_internal(*pages);
  REQUIRE(span);
  std::memset(span->data(), 0xab, span->size());
  return {std::move(*file), std::move(*memory), *pages};
}

}  // namespace

TEST_CASE("RAM may be reported free; a window beside it may not, and free reports that touch it get -EPERM",
          "[regions]") {
  Setup s = make_setup();
  REQUIRE(s.memory->add_window(kWindow, s.pages, MemAccess::kReadOnly));
  GuestMemory& m = *s.memory;
  // state: RAM [0, 8M), a read-only window [16M, 18M), nothing between
  CHECK(m.contains(GuestRange(0, kRam)));
  CHECK(m.contains(kWindow));
  CHECK(m.contains(GuestRange(kRam, kRam)));  // just past RAM, empty
  CHECK_FALSE(m.contains(GuestRange(kRam, kRam + 4096)));
  CHECK_FALSE(m.contains(GuestRange(15 * kMiB, 17 * kMiB)));
  CHECK_FALSE(m.contains(GuestRange(5, 4)));  // not well formed
  struct Case {
    GuestRange r;
    int want;
  } cases[] = {
      {{2 * kMiB, 2 * kMiB + 4096}, 0},
      {{kWindow.start, kWindow.start + 4096}, -EPERM},
      {kWindow, -EPERM},
      {{kRam - 4096, kRam + 4096}, -EFAULT},  // runs past RAM into nothing
      {{17 * kMiB, 19 * kMiB}, -EFAULT},      // runs past the window into nothing
      {{kRam, kRam}, -EFAULT},                // empty
  };
  for (const Case& c : cases) {
    INFO(c.r);
    CHECK(m.reportable(c.r) == c.want);
  }
  // The check the free-report paths make, and the paths themselves.
  CHECK(check_free_range(m, kWindow.start, 4096) == -EPERM);
  CHECK(check_free_range(m, kWindow.start + 4096, kMiB) == -EPERM);
  CHECK(check_free_range(m, 2 * kMiB, 4096) == 0);
  FreeStats stats;
  CHECK(free_range(m, stats, kWindow.start, 2 * kMiB) == -EPERM);
  CHECK(stats.invalid_ranges == 1);
  auto refused = m.decommit(kWindow);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == EPERM);
  CHECK(refused.error().message == "cannot decommit guest-physical [0x1000000, 0x1200000): it is not all RAM");
  CHECK(m.read(GuestRange(kWindow.end - 8, kWindow.end)) == std::string(8, '\xab'));  // nothing was punched

  // A window that touches RAM: a report across the seam touches both.
  auto more = s.file->allocate(2 * kMiB, UsageKind::Tmpfs);
  REQUIRE(more);
  REQUIRE(m.add_window(GuestRange(kRam, kRam + 2 * kMiB), *more, MemAccess::kReadWrite));
  CHECK(m.contains(GuestRange(kRam - 4096, kRam + 4096)));
  CHECK(m.reportable(GuestRange(kRam - 4096, kRam + 4096)) == -EPERM);
  CHECK(check_free_range(m, kRam - 4096, 8192) == -EPERM);
  CHECK(m.read(GuestRange(kRam - 4, kRam + 4)).size() == 8);  // reads cross regions
  s.file->dec_ref(*more);
  s.file->dec_ref(s.pages);
}

TEST_CASE("a window translates to its file range; the VMM gets host spans only where it may write", "[regions]") {
  Setup s = make_setup();
  GuestMemory& m = *s.memory;
  REQUIRE(m.add_window(kWindow, s.pages, MemAccess::kReadOnly));
  CHECK(m.translate(GuestAddr(kWindow.start + 4096)) == s.pages.start_addr() + 4096);
  CHECK(m.translate(GuestAddr(kRam)) == std::nullopt);
  CHECK(m.translate(GuestAddr(4096)) == m.file_offset(GuestAddr(4096)));
  CHECK(m.host_span(GuestRange(kWindow.start, kWindow.start + 8)).empty());  // read-only
  HostSpan ram = m.host_span(GuestRange(2 * kMiB, 2 * kMiB + 8));
  REQUIRE(ram.size() == 8);
  CHECK(ram.data() == m.host(GuestAddr(2 * kMiB)));
  CHECK(m.host_span(GuestRange(kRam - 8, kRam + 8)).empty());  // leaves RAM
  REQUIRE(m.remove(kWindow));
  // A writable window is the VMM's to write.
  REQUIRE(m.add_window(kWindow, s.pages, MemAccess::kReadWrite));
  HostSpan w = m.host_span(GuestRange(kWindow.start, kWindow.start + 8));
  REQUIRE(w.size() == 8);
  CHECK(w.data()[7] == 0xab);
  s.file->dec_ref(s.pages);
}

TEST_CASE("windows may not overlap a region or be malformed; remove takes whole windows, never RAM", "[regions]") {
  Setup s = make_setup();
  GuestMemory& m = *s.memory;
  const FileRange p = s.pages;
  struct Case {
    GuestRange guest;
    FileRange file;
    const char* why;
  } refused[] = {
      {{kRam - 2 * kMiB, kRam}, p, "overlaps a region"},
      {{kWindow.start, kWindow.start + kMiB}, p, "differ in length"},
      {{kWindow.start + 1, kWindow.end + 1}, p, "page-aligned"},
      {{kWindow.start, kWindow.start}, FileRange(p.start, p.start), "non-empty"},
      {{~0ull - 4095, 4096}, p, "non-empty range"},
  };
  for (const Case& c : refused) {
    INFO(c.guest);
    auto r = m.add_window(c.guest, c.file, MemAccess::kReadOnly);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find(c.why) != std::string::npos);
  }
  REQUIRE(m.add_window(kWindow, p, MemAccess::kReadOnly));
  auto twice = m.add_window(GuestRange(kWindow.start + kMiB, kWindow.end + kMiB), p, MemAccess::kReadOnly);
  REQUIRE_FALSE(twice);
  CHECK(twice.error().message.find("overlaps a region") != std::string::npos);

  auto ram = m.remove(GuestRange(0, kRam));
  REQUIRE_FALSE(ram);
  CHECK(ram.error().message == "cannot remove guest-physical [0x0, 0x800000): RAM stays for the VM's life");
  auto part = m.remove(GuestRange(kWindow.start, kWindow.start + kMiB));
  REQUIRE_FALSE(part);
  CHECK(part.error().message ==
        "cannot remove guest-physical [0x1000000, 0x1100000): no region is exactly there");
  REQUIRE(m.remove(kWindow));
  CHECK_FALSE(m.contains(kWindow));
  CHECK(m.reportable(kWindow) == -EFAULT);
  s.file->dec_ref(p);
}

TEST_CASE("a View keeps a removed window's pages until it goes; then they return to the pool", "[regions]") {
  Setup s = make_setup();
  GuestMemory& m = *s.memory;
  REQUIRE(m.add_window(kWindow, s.pages, MemAccess::kReadWrite));
  s.file->dec_ref(s.pages);  // the window's reference is the only one now
  GuestMemory::View v = m.view();
  HostSpan span = m.host_span(GuestRange(kWindow.start, kWindow.start + 4096));
  REQUIRE(m.remove(kWindow));
  CHECK_FALSE(m.contains(kWindow));
  CHECK(v->contains(kWindow));  // the old map, as it was
  CHECK(v->read(GuestRange(kWindow.end - 4, kWindow.end)) == std::string(4, '\xab'));
  v.reset();
  CHECK(span.data()[4095] == 0xab);  // the span pins the region by itself
  s.file->wait_for_reclaim();
  auto busy = s.file->allocate(2 * kMiB, UsageKind::Tmpfs);
  REQUIRE(busy);
  CHECK(busy->start != s.pages.start);  // still held
  span = HostSpan();
  s.file->wait_for_reclaim();
  auto again = s.file->allocate(2 * kMiB, UsageKind::Tmpfs);
  REQUIRE(again);
  CHECK(again->start == s.pages.start);  // the lowest free range: the window's, given back
  s.file->dec_ref(*busy);
  s.file->dec_ref(*again);
}
