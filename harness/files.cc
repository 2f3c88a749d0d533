#include "harness/files.h"

#include <algorithm>
#include <cstring>

namespace kvmem {
namespace {

// Fills `f` with its pattern in chunks, so a large file costs one chunk of
// VMM memory, not its size.
Status fill(tmpfs::RegularFile& f, const guest::Pattern& pattern, uint64_t size) {
  constexpr uint64_t kChunk = 1ull << 20;
  if (pattern.kind == guest::Pattern::Kind::kZero) return {};  // a fresh file reads as zero
  std::vector<uint8_t> buf(std::min(kChunk, size));
  for (uint64_t off = 0; off < size; off += kChunk) {
    const uint64_t n = std::min(kChunk, size - off);
    for (uint64_t i = 0; i < n; i += 8) {
      const uint64_t w = pattern.word(off + i);
      std::memcpy(buf.data() + i, &w, std::min<uint64_t>(8, n - i));
    }
    auto done = f.write(off, std::span<const uint8_t>(buf.data(), n));
    if (!done) return std::unexpected(done.error());
  }
  return {};
}

}  // namespace

uint64_t file_bytes(const std::vector<FileConfig>& files) {
  uint64_t total = 0;
  for (const FileConfig& f : files) {
    uint64_t s = 0;
    if (align_up(f.size, kPageSize, &s)) total += s;
  }
  return total;
}

Result<std::unique_ptr<tmpfs::FileSystem>> make_files(MemoryFile& memory, const std::vector<FileConfig>& files) {
  auto fs = std::make_unique<tmpfs::FileSystem>(memory);
  for (const FileConfig& c : files) {
    const std::string what = fmt::format("cannot make file \"{}\" of {:#x} bytes", c.name, c.size);
    auto f = fs->create(c.name, true);
    if (!f) return std::unexpected(f.error().context(what));
    if (auto s = (*f)->truncate(c.size); !s) return std::unexpected(s.error().context(what));
    if (c.pattern)
      if (auto s = fill(**f, *c.pattern, c.size); !s)
        return std::unexpected(s.error().context(fmt::format("{}: cannot fill it with pattern {}", what, c.pattern->describe())));
    if (c.seals)
      if (auto s = (*f)->add_seals(c.seals); !s) return std::unexpected(s.error().context(what));
  }
  return fs;
}

}  // namespace kvmem
