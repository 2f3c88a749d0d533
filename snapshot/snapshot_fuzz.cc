// Fuzz target "snapshot": bytes -> a memfd -> SnapshotReader::open -> read
// every extent -> the tmpfs files (snapshot_files, restore_files).
//
// The first byte is a mode; the rest is the file. Mode bit 0 reseals the
// file first (reseal_snapshot: the metadata and header checksums made
// right), so that mutations of the tables reach the checks behind the
// checksums instead of stopping at them. Every input must end in a reader
// or an Error that names the snapshot; an accepted file must keep every
// rule reader.h promises, checked here again independently of the reader;
// and each extent's data then reads back or fails with a message. The
// files of an accepted snapshot (its kFile spaces and sections) are listed
// by snapshot_files, which accepts them or names the snapshot; accepted
// ones keep the rules of snapshot/files.h (checked again here), and when
// their data maps are small they are made with restore_files on a memory
// file of the input's own and must come back with the size, seals and
// data map their sections say.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/check.h"
#include "base/fd.h"
#include "base/fuzz.h"
#include "memory/memory_file.h"
#include "memory/tmpfs/file_system.h"
#include "snapshot/files.h"
#include "snapshot/reader.h"

namespace kvmem::fuzz {
namespace {

constexpr const char* kName = "fuzz-input";

// The rules an accepted snapshot keeps, restated.
void check_accepted(const SnapshotReader& r, uint64_t size) {
  const SnapshotHeader& h = r.header();
  KVMEM_CHECK(h.file_size == size && h.meta_offset <= size && h.data_offset % kSnapshotPageSize == 0,
              "accepted header: file_size {:#x} of {:#x}, meta {:#x}, data {:#x}", h.file_size, size, h.meta_offset,
              h.data_offset);
  for (size_t i = 0; i < r.sections().size(); i++) {
    const SnapshotSection& s = r.sections()[i];
    KVMEM_CHECK(s.offset >= h.meta_offset && s.length <= size - s.offset, "accepted section {} out of the metadata", i);
  }
  for (size_t i = 0; i < r.spaces().size(); i++) {
    KVMEM_CHECK(i == 0 || r.spaces()[i - 1].id < r.spaces()[i].id, "accepted spaces unsorted at {}", i);
    const std::string name = r.space_name(i);
    KVMEM_CHECK(!name.empty() && name.size() <= kSnapshotMaxNameBytes && name.find('\0') == std::string::npos,
                "accepted space {} with a bad name", i);
  }
  uint64_t prev_data_end = h.data_offset;
  for (size_t i = 0; i < r.extents().size(); i++) {
    const SnapshotExtent& e = r.extents()[i];
    const long s = r.find_space(e.space);
    KVMEM_CHECK(s >= 0, "accepted extent {} of an unknown space {}", i, e.space);
    const uint64_t space_end = (r.spaces()[static_cast<size_t>(s)].size + kSnapshotPageSize - 1) / kSnapshotPageSize *
                               kSnapshotPageSize;
    KVMEM_CHECK(e.length > 0 && e.length % kSnapshotPageSize == 0 && e.length <= h.extent_cap &&
                    e.offset % kSnapshotPageSize == 0 && e.offset <= space_end && e.length <= space_end - e.offset,
                "accepted extent {} outside its space or malformed", i);
    KVMEM_CHECK(e.data_offset >= prev_data_end && e.data_offset % kSnapshotPageSize == 0 &&
                    e.data_offset + e.length <= h.meta_offset,
                "accepted extent {}'s data out of place", i);
    if (i > 0) {
      const SnapshotExtent& p = r.extents()[i - 1];
      KVMEM_CHECK(p.space < e.space || (p.space == e.space && p.offset + p.length <= e.offset),
                  "accepted extents {} and {} unordered or overlapping", i - 1, i);
    }
    prev_data_end = e.data_offset + e.length;
  }
  size_t counted = 0;
  for (const SnapshotSpace& sp : r.spaces()) counted += r.extents_of(sp.id).size();
  KVMEM_CHECK(counted == r.extents().size(), "extents_of covers {} of {} extents", counted, r.extents().size());
}

// Data maps larger than this are listed but not made: the point is the
// restore's handling of what the list accepted, not the allocator's size.
constexpr uint64_t kMaxRestoredBytes = uint64_t{16} << 20;

// The rules an accepted file keeps, restated, and its restore.
void check_files(const SnapshotReader& r) {
  auto files = snapshot_files(r);
  if (!files) {
    KVMEM_CHECK(files.error().message.find(kName) != std::string::npos, "a file error that does not name the snapshot: {}",
                files.error().message);
    return;
  }
  uint64_t total = 0;
  for (const SnapshotFile& f : *files) {
    const long at = r.find_space(f.space);
    KVMEM_CHECK(at >= 0 && r.spaces()[static_cast<size_t>(at)].kind == static_cast<uint32_t>(SpaceKind::kFile) &&
                    r.spaces()[static_cast<size_t>(at)].size == f.state.size,
                "accepted file {} without its space", f.name);
    const uint64_t eof = (f.state.size + kSnapshotPageSize - 1) / kSnapshotPageSize * kSnapshotPageSize;
    uint64_t prev = 0;
    for (const MappableRange& run : f.state.data) {
      KVMEM_CHECK(!run.empty() && run.is_page_aligned() && run.start >= prev && run.end <= eof,
                  "accepted file {} with a bad run {}", f.name, run);
      prev = run.end;
    }
    for (const SnapshotExtent& e : r.extents_of(f.space)) {
      uint64_t reached = e.offset;
      for (const MappableRange& run : f.state.data)
        if (run.start <= reached && reached < run.end) reached = run.end;
      KVMEM_CHECK(reached >= e.offset + e.length, "accepted file {} with data [{:#x}, {:#x}) outside its data map",
                  f.name, e.offset, e.offset + e.length);
    }
    total += f.data_bytes;
  }
  if (files->empty() || total > kMaxRestoredBytes) return;
  auto memory = MemoryFile::create({.reservation = uint64_t{1} << 28});
  KVMEM_CHECK(memory.has_value(), "cannot make the fuzz memory file: {}", memory.error().message);
  {
    tmpfs::FileSystem fs(**memory);
    auto made = restore_files(r, fs);
    if (!made) {
      // What the list accepted can still fail to load: an extent whose data
      // does not match its checksum.
      KVMEM_CHECK(made.error().message.find(kName) != std::string::npos, "a restore error that does not name the "
                  "snapshot: {}", made.error().message);
      return;
    }
    KVMEM_CHECK(made->files == files->size(), "restored {} of {} files", made->files, files->size());
    for (const SnapshotFile& f : *files) {
      auto g = fs.open(f.name);
      KVMEM_CHECK(g.has_value(), "restored file {} is missing", f.name);
      const tmpfs::FileStat st = (*g)->stat();
      KVMEM_CHECK(st.size == f.state.size && st.seals == f.state.seals && st.allocated == f.data_bytes,
                  "restored file {}: size {:#x} seals {:#x} allocated {:#x}, its section: {:#x} {:#x} {:#x}", f.name,
                  st.size, st.seals, st.allocated, f.state.size, f.state.seals, f.data_bytes);
      (*g)->check_invariants();
    }
  }
  (*memory)->wait_for_reclaim();
}

}  // namespace

int snapshot_one(const uint8_t* data, size_t size) {
  Input in(data, size);
  const uint8_t mode = in.byte();
  size_t n = 0;
  const uint8_t* bytes = in.bytes(in.remaining(), &n);
  std::vector<uint8_t> file(bytes, bytes + n);
  if (mode & 1) reseal_snapshot(file);

  int fd = memfd_create("kvmem-snapshot-fuzz", MFD_CLOEXEC);
  KVMEM_CHECK(fd >= 0, "memfd_create: errno {}", errno);
  Fd owner(fd);
  for (size_t done = 0; done < file.size();) {
    ssize_t w = ::write(fd, file.data() + done, file.size() - done);
    KVMEM_CHECK(w > 0, "write to the fuzz memfd: errno {}", errno);
    done += static_cast<size_t>(w);
  }
  auto r = SnapshotReader::open_fd(std::move(owner), kName);
  if (!r) {
    KVMEM_CHECK(r.error().message.find(kName) != std::string::npos, "an error that does not name the snapshot: {}",
                r.error().message);
    return 0;
  }
  check_accepted(**r, file.size());
  std::vector<uint8_t> scratch;
  for (size_t i = 0; i < (*r)->extents().size(); i++) {
    scratch.resize((*r)->extents()[i].length);
    auto st = (*r)->read_extent(i, scratch);
    if (!st)
      KVMEM_CHECK(st.error().message.find(fmt::format("extent {}", i)) != std::string::npos,
                  "an extent error that does not name extent {}: {}", i, st.error().message);
  }
  check_files(**r);
  return 0;
}

}  // namespace kvmem::fuzz

KVMEM_FUZZ_TARGET(kvmem::fuzz::snapshot_one)
