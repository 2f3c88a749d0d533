// FileSystem: named regular files (regular_file.h) in one MemoryFile, as a
// flat tmpfs: create, open by name, unlink, list, stat.
//
// A file is shared: the FileSystem holds it by name, and whoever opened or
// maps it holds a shared_ptr too. unlink() removes the name only; the data
// lives on while anyone holds the file (a guest window, a host mapping), and
// goes back to the allocator when the last holder lets go, as an unlinked
// memfd's does when its last fd and mapping go.
//
// Names: 1 to kMaxNameLength bytes, no '/' and no NUL (memfd_create's
// limit on its name is 249 bytes).
//
// Thread safety: every function may be called from any thread; mu_ guards
// the name table only, and is never held while a file's locks are taken.
// Lifetime: the MemoryFile outlives the FileSystem and every file.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "memory/memory_file.h"
#include "memory/tmpfs/regular_file.h"

namespace kvmem::tmpfs {

inline constexpr size_t kMaxNameLength = 249;

class FileSystem {
 public:
  explicit FileSystem(MemoryFile& memory) : memory_(memory) {}
  FileSystem(const FileSystem&) = delete;
  FileSystem& operator=(const FileSystem&) = delete;

  // A new empty file. Errors: EEXIST, EINVAL (a bad name), with the name.
  Result<std::shared_ptr<RegularFile>> create(std::string_view name, bool allow_seals);
  // Errors: ENOENT.
  Result<std::shared_ptr<RegularFile>> open(std::string_view name) const;
  // Errors: ENOENT.
  Status unlink(std::string_view name);
  // The names, sorted.
  std::vector<std::string> list() const;
  // Errors: ENOENT.
  Result<FileStat> stat(std::string_view name) const;

  MemoryFile& memory() const { return memory_; }

 private:
  MemoryFile& memory_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<RegularFile>, std::less<>> files_;  // protected by mu_
};

}  // namespace kvmem::tmpfs
