// The contract between a file that can be mapped and whoever maps it, after
// gVisor's memmap.Mappable: add_mapping / remove_mapping / translate on the
// file's side, MappingSpace::invalidate on the mapper's.
//
// Synopsis
//   Access                 kRead, kWrite, kReadWrite; permits(have, want)
//   Translation            file offsets [source) live at memory-file offset
//                          `offset`, usable for `perms`
//   TranslateResult        the translations, and why not all of `required`
//                          was translated (kBeyondEof, kNoMemory) if so
//   MappingSpace           the mapper: told when translations it holds are no
//                          longer valid (a guest's window, a host mapping)
//   check_translate_result the postconditions of translate(), as a checker
//                          the tests call on every result
//
// Translate(required, optional, at) returns the file's translations for at
// least `required` and at most `optional` (both page-aligned, optional a
// superset of required). Postconditions (check_translate_result):
//   - the first translation contains required.start;
//   - translations are non-empty, page-aligned, contiguous and increasing,
//     each overlaps required and lies inside optional, and permits `at`;
//   - when they do not reach required.end, the result carries an error
//     saying why (beyond the end of the file, or no memory).
// Each translation returned carries one reference on its memory-file range,
// owned by the caller: a mapping holds a reference on what it translated,
// and drops it when the range is invalidated or unmapped.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "memory/range.h"

namespace kvmem::tmpfs {

enum class Access : uint8_t { kRead = 1, kWrite = 2, kReadWrite = 3 };

constexpr bool permits(Access have, Access want) {
  return (static_cast<uint8_t>(have) & static_cast<uint8_t>(want)) == static_cast<uint8_t>(want);
}
const char* access_name(Access a);  // "read", "write", "read-write"

struct Translation {
  MappableRange source;  // offsets into the mapped file
  FileOffset offset;     // memory-file offset of source.start
  Access perms = Access::kReadWrite;

  FileRange file_range() const { return FileRange(offset.value, offset.value + source.length()); }
  bool operator==(const Translation&) const = default;
};

enum class TranslateError {
  kNone,
  kBeyondEof,  // required reaches past the file's end, rounded up to a page
  kNoMemory,   // the allocator could not fill a hole inside required
};

struct TranslateResult {
  std::vector<Translation> translations;
  TranslateError error = TranslateError::kNone;
  std::string message;  // a sentence when error != kNone

  bool ok() const { return error == TranslateError::kNone; }
};

// Whoever maps a file. A file calls invalidate() before it drops pages a
// mapping may have translated (a shrinking truncate, a punched hole), so the
// space stops using them and drops its references on them first.
class MappingSpace {
 public:
  virtual ~MappingSpace() = default;

  // The translations of file offsets `range`, which this space mapped at its
  // own address `addr` (the address of range.start), are no longer valid.
  // Called from whichever thread changed the file, with the file's mapping
  // lock held: an implementation must not call back into the file.
  // Preconditions: range is non-empty, page-aligned, inside one mapping the
  // space added.
  virtual void invalidate(uint64_t addr, MappableRange range) = 0;
};

// Empty when `result` satisfies every postcondition of
// translate(required, optional, at) above; else a sentence that names the
// first one broken and the translation that broke it.
// Preconditions (checked, abort): required non-empty and page-aligned;
// optional page-aligned and a superset of required.
std::string check_translate_result(MappableRange required, MappableRange optional, Access at,
                                   const TranslateResult& result);

}  // namespace kvmem::tmpfs
