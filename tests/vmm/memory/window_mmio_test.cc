// Windows::mmio with what a hostile guest can put in an MMIO exit (any
// address, any length, reads and writes), against a window without KVM.
#include <cstring>

#include <catch2/catch.hpp>

#include "memory/tmpfs/file_system.h"
#include "vmm/memory/window.h"

using namespace kvmem;

namespace {

constexpr uint64_t kAt = 1ull << 30;

struct Setup {
  std::unique_ptr<MemoryFile> file;
  std::unique_ptr<tmpfs::FileSystem> fs;
  std::unique_ptr<GuestMemory> memory;
  Windows windows;  // last: the windows go first
};

void make(Setup& s, bool writable) {
  MemoryFileOptions o;
  o.reservation = 1ull << 32;
  auto file = MemoryFile::create(o);
  REQUIRE(file);
  s.file = std::move(*file);
  s.fs = std::make_unique<tmpfs::FileSystem>(*s.file);
  auto memory = GuestMemory::create(*s.file, 8ull << 20, 2ull << 20);
  REQUIRE(memory);
  s.memory = std::move(*memory);
  auto f = s.fs->create("box", true);
  REQUIRE(f);
  REQUIRE((*f)->truncate(8192));
  auto w = Window::create(*s.memory, *f, GuestAddr(kAt), 0, 4ull << 20, writable);
  REQUIRE(w);
  s.windows.add(std::move(*w));
}

}  // namespace

TEST_CASE("MMIO exits a guest can cause in a window get an answer, never a crash", "[windows]") {
  Setup s;
  make(s, true);
  uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  using A = Windows::Mmio::Action;
  // Outside every window: not ours.
  CHECK(s.windows.mmio(GuestAddr(kAt - 8), data, false).action == A::kNotWindow);
  CHECK(s.windows.mmio(GuestAddr(~uint64_t{0} - 3), std::span<uint8_t>(data, 4), true).action == A::kNotWindow);
  // Bad lengths and accesses across a page are refused by name.
  auto zero = s.windows.mmio(GuestAddr(kAt), std::span<uint8_t>(data, 0), false);
  CHECK(zero.action == A::kFail);
  auto across = s.windows.mmio(GuestAddr(kAt + 4092), data, true);
  CHECK(across.action == A::kFail);
  CHECK_THAT(across.message, Catch::Contains("across a page"));
  // Mapped already: the access is done through host memory.
  CHECK(s.windows.mmio(GuestAddr(kAt + 16), data, true).action == A::kDone);
  uint8_t back[8] = {};
  CHECK(s.windows.mmio(GuestAddr(kAt + 16), back, false).action == A::kDone);
  CHECK(std::memcmp(back, data, 8) == 0);
  // Past the file's end (8 KiB), in the window: the VM must stop, by name.
  auto beyond = s.windows.mmio(GuestAddr(kAt + 8192), data, false);
  CHECK(beyond.action == A::kFail);
  CHECK_FALSE(beyond.host);
  CHECK_THAT(beyond.message, Catch::Contains("beyond the end of file \"box\" (size 0x2000)"));
  CHECK_THAT(s.windows.mmio(GuestAddr(kAt + (4ull << 20) - 8), data, true).message, Catch::Contains("beyond the end"));
}

TEST_CASE("a write into a read-only window through MMIO is refused and the file keeps its bytes", "[windows]") {
  Setup s;
  make(s, false);
  uint8_t data[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  auto w = s.windows.mmio(GuestAddr(kAt + 8), data, true);
  CHECK(w.action == Windows::Mmio::Action::kFail);
  CHECK_THAT(w.message, Catch::StartsWith("guest wrote to guest-physical 0x40000008 in the read-only window"));
  uint64_t word = 1;
  auto f = s.fs->open("box");
  REQUIRE(f);
  REQUIRE((*f)->read(8, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&word), 8)));
  CHECK(word == 0);
}
