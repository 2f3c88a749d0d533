// Which pages of a private anonymous mapping hold data: /proc/self/pagemap.
//
// Synopsis
//   populated_ranges(memory)   -> Result<vector<HostRange>>: the pages of
//                                 `memory` that are present or swapped out
//
// Anonymous memory has no file to ask with SEEK_DATA (memory_file.h,
// data_extents), so a snapshot of anon guest RAM asks the page tables.
// Why pagemap and not mincore: mincore says whether a page is resident,
// and an anonymous page the kernel swapped out is not, yet it holds data a
// snapshot must keep; pagemap's entry has a bit for each ("Bits 0-54 page
// frame number (PFN) if present ... Bit 62 page swapped, Bit 63 page
// present", Documentation/admin-guide/mm/pagemap.rst). Without
// CAP_SYS_ADMIN the PFN reads as zero but both bits are still given.
// A page mapped to the shared zero page (read, never written) counts as
// present: it reads as zero, and a snapshot writer drops zero pages anyway.
//
// Cost: 8 bytes of pagemap per 4 KiB page, read 16384 entries (64 MiB of
// memory) at a time; a 1 GiB mapping is 2 MiB of pagemap. It never faults
// a page in.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/error.h"
#include "memory/range.h"

namespace kvmem {

// The populated pages of `memory` (page-aligned), merged into runs, in
// address order. Errors: opening or reading /proc/self/pagemap (with the
// errno), memory unaligned.
Result<std::vector<HostRange>> populated_ranges(std::span<const uint8_t> memory);

}  // namespace kvmem
