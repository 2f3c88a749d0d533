// MemoryFile's reclaimer starts through start_thread: a host that cannot
// make a thread makes create() an error, not an abort.
#include <catch2/catch.hpp>

#include "base/thread.h"
#include "memory/memory_file.h"

using namespace kvmem;

TEST_CASE("a memory file whose reclaimer cannot start (injected) is an error naming the thread", "[memory][threads]") {
  fail_next_thread_starts(1);
  auto refused = MemoryFile::create({.reservation = uint64_t{1} << 30});
  fail_next_thread_starts(0);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().message ==
        "cannot start the memory file's reclaimer: pthread_create: EAGAIN (Resource temporarily unavailable)");
  // The next one starts, and its reclaimer works: a freed page is punched.
  auto file = MemoryFile::create({.reservation = uint64_t{1} << 30});
  REQUIRE(file);
  auto r = (*file)->allocate(kPageSize, UsageKind::Anonymous);
  REQUIRE(r);
  (*file)->dec_ref(*r);
  (*file)->wait_for_reclaim();
  CHECK((*file)->usage().of(UsageKind::Anonymous) == 0);
}
