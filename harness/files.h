// The shared files of a run (a config's "files"), made in the tmpfs layer
// before any VM starts.
#pragma once

#include <memory>
#include <vector>

#include "base/error.h"
#include "config/vm_config.h"
#include "memory/memory_file.h"
#include "memory/tmpfs/file_system.h"

namespace kvmem {

// Creates each file (sealable), gives it its size, fills it with its
// pattern (the word at file offset x is pattern.word(x); pages the pattern
// leaves zero are holes and cost nothing), then adds its seals. Errors: the
// layer's (the allocator out of memory, say), naming the file.
Result<std::unique_ptr<tmpfs::FileSystem>> make_files(MemoryFile& memory, const std::vector<FileConfig>& files);

// Bytes the files can hold at most: their sizes, rounded up to pages.
uint64_t file_bytes(const std::vector<FileConfig>& files);

}  // namespace kvmem
