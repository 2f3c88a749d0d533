#include "memory/page_map.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "base/fd.h"

namespace kvmem {
namespace {

constexpr uint64_t kPresent = uint64_t{1} << 63;
constexpr uint64_t kSwapped = uint64_t{1} << 62;
constexpr uint64_t kEntriesPerRead = 16384;

}  // namespace

Result<std::vector<HostRange>> populated_ranges(std::span<const uint8_t> memory) {
  const uint64_t base = reinterpret_cast<uint64_t>(memory.data());
  if (base % kPageSize != 0 || memory.size() % kPageSize != 0)
    return fail("cannot list the populated pages of host memory [{:#x}, {:#x}): it is not page-aligned", base,
                base + memory.size());
  const int raw = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (raw < 0) return sys_fail("cannot list the populated pages of anonymous memory", "open(/proc/self/pagemap)", errno);
  Fd fd(raw);
  std::vector<HostRange> out;
  std::vector<uint64_t> entries(kEntriesPerRead);
  const uint64_t pages = memory.size() / kPageSize;
  for (uint64_t first = 0; first < pages;) {
    const uint64_t n = std::min(kEntriesPerRead, pages - first);
    const uint64_t at = (base / kPageSize + first) * sizeof(uint64_t);
    uint64_t got = 0;
    while (got < n * sizeof(uint64_t)) {
      const ssize_t r = ::pread(fd.get(), reinterpret_cast<uint8_t*>(entries.data()) + got, n * sizeof(uint64_t) - got,
                                static_cast<off_t>(at + got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0)
        return sys_fail(fmt::format("cannot list the populated pages of host memory [{:#x}, {:#x})", base,
                                    base + memory.size()),
                        "pread(/proc/self/pagemap)", r < 0 ? errno : EIO);
      got += static_cast<uint64_t>(r);
    }
    for (uint64_t i = 0; i < n; i++) {
      if (!(entries[i] & (kPresent | kSwapped))) continue;
      const uint64_t page = base + (first + i) * kPageSize;
      if (!out.empty() && out.back().end == page) out.back().end += kPageSize;
      else out.push_back(HostRange(page, page + kPageSize));
    }
    first += n;
  }
  return out;
}

}  // namespace kvmem
