// Where a VM's guest RAM comes from on the host.
//
// Synopsis
//   RamBacking                   kMemfd, kMemfdThp, kHugetlb, kAnon
//   ram_backing_name / parse_ram_backing   "memfd", "memfd-thp", "hugetlb", "anon"
//   ram_backing_unavailable(b, bytes)      why this host cannot give it, or nothing
//   hugetlb_pool_bytes(bytes)    the free huge pages a hugetlb file for that RAM maps
//   ram_file_options(b, bytes)   MemoryFileOptions for a file of that backing
//   make_ram_file(b, bytes)      that MemoryFile, or the reason it cannot be made
//   huge_pages_of(b)             the MemoryFile's HugePages for it
//
// Backings.
//   memfd      4 KiB shmem pages of a MemoryFile (the default)
//   memfd-thp  the same with MADV_HUGEPAGE on its mappings: needs the host's
//              shmem THP policy to be advise, within_size, always or force
//   hugetlb    2 MiB hugetlbfs pages of a MemoryFile (MFD_HUGETLB): needs free
//              reserved huge pages for the memory file's mappings, which
//              cover more than RAM (hugetlb_pool_bytes). A free report or
//              decommit releases only the whole 2 MiB pages inside the range
//              (it is rounded inward); the rest stays committed.
//   anon       a private anonymous mapping (MAP_PRIVATE | MAP_ANONYMOUS |
//              MAP_NORESERVE), not the MemoryFile: Firecracker's default. A
//              free report is MADV_DONTNEED (the range reads zeros after),
//              and resident bytes come from mincore over the mapping. The
//              VM still takes a MemoryFile, for its windows; make_ram_file
//              gives a plain memfd one for it.
// The RAM of memfd, memfd-thp and hugetlb VMs comes from the MemoryFile the
// caller passes to Vm::create, which must be of that backing (Vm::create
// checks what it can: hugetlb's page size, THP advice).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/error.h"
#include "memory/memory_file.h"

namespace kvmem {

enum class RamBacking { kMemfd, kMemfdThp, kHugetlb, kAnon };
const char* ram_backing_name(RamBacking b);
std::optional<RamBacking> parse_ram_backing(std::string_view name);
HugePages huge_pages_of(RamBacking b);

// Bytes of 2 MiB pages the host's pool must have free for a fresh hugetlb
// MemoryFile to hold `bytes` of RAM: the size the file grows to. A
// MAP_SHARED mapping of a hugetlbfs file reserves a huge page for every
// page it maps, at mmap time (ENOMEM when the pool is short), and the
// MemoryFile maps whole 16 MiB chunks, ahead to the end of the file, which
// starts at one chunk and doubles: 8 MiB of RAM maps 16 MiB, 40 MiB maps 64.
uint64_t hugetlb_pool_bytes(uint64_t bytes);

// Why the host cannot give `bytes` of RAM of backing b (0: any amount), with
// the setting that would enable it, or nothing when it can.
std::optional<std::string> ram_backing_unavailable(RamBacking b, uint64_t bytes = 0);

// A MemoryFile for `bytes` of guest RAM (its reservation 4x that, at least
// 1 GiB) of backing b; anon gets a plain memfd one (for windows).
MemoryFileOptions ram_file_options(RamBacking b, uint64_t bytes);
// Errors: ram_backing_unavailable's reason, or MemoryFile::create's.
Result<std::unique_ptr<MemoryFile>> make_ram_file(RamBacking b, uint64_t bytes);

}  // namespace kvmem
