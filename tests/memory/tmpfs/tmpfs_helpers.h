// Helpers for the tmpfs tests: a MemoryFile, a file system on it, and
// byte patterns.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "memory/memory_file.h"
#include "memory/tmpfs/file_system.h"
#include "memory/tmpfs/host_mapping.h"
#include "memory/tmpfs/regular_file.h"

namespace kvmem::test {

inline std::unique_ptr<MemoryFile> make_memory() {
  MemoryFileOptions o;
  o.reservation = uint64_t{1} << 34;
  auto f = MemoryFile::create(o);
  REQUIRE(f.has_value());
  return std::move(*f);
}

inline std::vector<uint8_t> pattern(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937_64 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng() | 1);  // never zero: holes show
  return v;
}

// The file's bytes [offset, offset + n), through read().
inline std::vector<uint8_t> read_back(const tmpfs::RegularFile& f, uint64_t offset, size_t n) {
  std::vector<uint8_t> v(n);
  auto r = f.read(offset, v);
  REQUIRE(r.has_value());
  v.resize(*r);
  return v;
}

}  // namespace kvmem::test
