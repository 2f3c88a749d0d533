#include "vmm/memory/backing.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <fstream>
#include <sstream>

namespace kvmem {
namespace {

constexpr const char* kThpPath = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
constexpr const char* kHugetlbPath = "/proc/sys/vm/nr_hugepages";

// HugePages_Free from /proc/meminfo; -1 when the host does not say.
long free_huge_pages() {
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    std::istringstream in(line);
    std::string key;
    long n = -1;
    in >> key >> n;
    if (key == "HugePages_Free:") return n;
  }
  return -1;
}

}  // namespace

const char* ram_backing_name(RamBacking b) {
  switch (b) {
    case RamBacking::kMemfd: return "memfd";
    case RamBacking::kMemfdThp: return "memfd-thp";
    case RamBacking::kHugetlb: return "hugetlb";
    case RamBacking::kAnon: return "anon";
  }
  return "?";
}

std::optional<RamBacking> parse_ram_backing(std::string_view name) {
  for (RamBacking b : {RamBacking::kMemfd, RamBacking::kMemfdThp, RamBacking::kHugetlb, RamBacking::kAnon})
    if (name == ram_backing_name(b)) return b;
  return std::nullopt;
}

HugePages huge_pages_of(RamBacking b) {
  switch (b) {
    case RamBacking::kMemfdThp: return HugePages::Thp;
    case RamBacking::kHugetlb: return HugePages::Hugetlb;
    default: return HugePages::None;
  }
}

std::optional<std::string> ram_backing_unavailable(RamBacking b, uint64_t bytes) {
  if (b == RamBacking::kMemfd || b == RamBacking::kAnon) return std::nullopt;
  const HugePageSupport s = probe_huge_pages();
  if (b == RamBacking::kMemfdThp) {
    if (s.thp) return std::nullopt;
    return fmt::format("backing memfd-thp: {}; enable it with `echo advise > {}`", s.thp_reason, kThpPath);
  }
  const uint64_t pages = hugetlb_pool_bytes(bytes) / kHugePageSize;
  if (!s.hugetlb)
    return fmt::format("backing hugetlb: {}; reserve them with `echo {} > {}` (more if other users need some)",
                       s.hugetlb_reason, pages, kHugetlbPath);
  const long free = free_huge_pages();
  if (free >= 0 && static_cast<uint64_t>(free) < pages)
    return fmt::format("backing hugetlb: {} MiB of RAM needs {} free 2 MiB huge pages (its memory file maps "
                       "{} MiB) and the host has {} (HugePages_Free in /proc/meminfo); reserve more with "
                       "`echo N > {}`",
                       bytes >> 20, pages, pages * 2, free, kHugetlbPath);
  return std::nullopt;
}

uint64_t hugetlb_pool_bytes(uint64_t bytes) {
  if (bytes <= kChunkSize) return kChunkSize;
  return bytes > (1ull << 62) ? bytes : std::bit_ceil(bytes);  // grow_locked's doubling from one chunk
}

MemoryFileOptions ram_file_options(RamBacking b, uint64_t bytes) {
  MemoryFileOptions o;
  o.name = fmt::format("kvmem-{}", ram_backing_name(b));
  o.huge = huge_pages_of(b);
  const uint64_t want = bytes > (1ull << 40) ? (1ull << 42) : std::max<uint64_t>(bytes * 4, 1ull << 30);
  o.reservation = std::bit_ceil(want);
  return o;
}

Result<std::unique_ptr<MemoryFile>> make_ram_file(RamBacking b, uint64_t bytes) {
  if (auto why = ram_backing_unavailable(b, bytes)) return std::unexpected(Error{ENOTSUP, *why});
  auto f = MemoryFile::create(ram_file_options(b, bytes));
  if (!f) return std::unexpected(f.error().context(fmt::format("cannot make the {} memory file", ram_backing_name(b))));
  return std::move(*f);
}

}  // namespace kvmem
