// Guest RAM without a VM, for tests of what works on GuestMemory alone
// (free batches, prefault, backings): a MemoryFile of its own and RAM on it.
#pragma once

#include <cstdint>
#include <memory>

#include <catch2/catch.hpp>

#include "memory/memory_file.h"
#include "vmm/memory/backing.h"
#include "vmm/memory/guest_memory.h"

namespace kvmem::test {

struct Ram {
  std::unique_ptr<MemoryFile> file;
  std::unique_ptr<GuestMemory> memory;
};

// `size` bytes of RAM in `unit` pieces, on a file reserving `reservation`.
inline Ram make_ram(uint64_t size, uint64_t unit, uint64_t reservation) {
  MemoryFileOptions o;
  o.reservation = reservation;
  auto file = MemoryFile::create(o);
  REQUIRE(file);
  auto memory = GuestMemory::create(**file, size, unit);
  REQUIRE(memory);
  return {std::move(*file), std::move(*memory)};
}

// `size` bytes of RAM of backing b in one piece, on make_ram_file's file
// (anon: its own mapping, the file only for windows). Precondition: the
// host gives b (a BackingHost said ok()).
inline Ram make_backed_ram(RamBacking b, uint64_t size) {
  auto file = make_ram_file(b, size);
  REQUIRE(file);
  auto memory = b == RamBacking::kAnon ? GuestMemory::create_anon(**file, size) : GuestMemory::create(**file, size, size);
  REQUIRE(memory);
  return {std::move(*file), std::move(*memory)};
}

// Bytes of RAM the host holds (GuestMemory::resident_bytes), required to succeed.
inline uint64_t resident(const GuestMemory& m) {
  auto r = m.resident_bytes();
  REQUIRE(r);
  return *r;
}

// Bytes the host holds for the whole file (st_blocks), required to succeed.
inline uint64_t file_usage(const MemoryFile& f) {
  auto r = f.total_usage();
  REQUIRE(r);
  return *r;
}

}  // namespace kvmem::test
