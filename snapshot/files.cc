// Tmpfs files in snapshots: the kFile section's codec, its checks against
// the space, saving a file and making the files of a snapshot again.
#include "snapshot/files.h"

#include <algorithm>
#include <map>

#include "snapshot/payload.h"

namespace kvmem {
namespace {

constexpr uint32_t kMagic = payload_magic("KFIL");
constexpr uint64_t kHeaderBytes = 32;  // magic, version, size, seals, reserved, n
constexpr uint64_t kRunBytes = 16;
constexpr const char* kWhat = "file state";

uint64_t pages_end(uint64_t size) { return (size + kSnapshotPageSize - 1) / kSnapshotPageSize * kSnapshotPageSize; }

// Drops the references an image's runs carry.
struct RunRefs {
  MemoryFile& memory;
  std::vector<tmpfs::Translation> runs;
  ~RunRefs() {
    for (const tmpfs::Translation& t : runs) memory.dec_ref(t.file_range());
  }
};

std::vector<SpaceRange> space_ranges(const std::vector<tmpfs::Translation>& runs) {
  std::vector<SpaceRange> out;
  for (const tmpfs::Translation& t : runs) out.push_back({t.source.start, t.file_range()});
  return out;
}

}  // namespace

std::vector<uint8_t> encode_file_state(const FileState& s) {
  PayloadWriter w;
  w.u32(kMagic);
  w.u32(kFileStateVersion);
  w.u64(s.size);
  w.u32(s.seals);
  w.u32(0);
  w.u64(s.data.size());
  for (const MappableRange& r : s.data) {
    w.u64(r.start);
    w.u64(r.end);
  }
  return w.take();
}

Result<FileState> decode_file_state(std::span<const uint8_t> bytes) {
  PayloadReader r(bytes);
  KVMEM_TRY(payload_header(r, kWhat, kMagic, kFileStateVersion));
  FileState s;
  uint32_t reserved = 0;
  uint64_t n = 0;
  if (!r.u64(&s.size) || !r.u32(&s.seals) || !r.u32(&reserved) || !r.u64(&n))
    return fail("{}: {} bytes is too short for its header of {}", kWhat, bytes.size(), kHeaderBytes);
  if (reserved != 0) return fail("{}: reserved is {:#x}, not 0", kWhat, reserved);
  if (s.seals & ~tmpfs::kAllSeals) return fail("{}: seals {:#x} has unknown bits", kWhat, s.seals);
  if (s.size > tmpfs::kMaxFileSize) return fail("{}: size {:#x} passes the largest file size", kWhat, s.size);
  if (n > r.remaining() / kRunBytes || r.remaining() != n * kRunBytes)
    return fail("{}: {} runs of the data map do not fit its {} bytes after the header", kWhat, n, r.remaining());
  const uint64_t eof = pages_end(s.size);
  s.data.reserve(n);
  for (uint64_t i = 0; i < n; i++) {
    MappableRange run;
    (void)r.u64(&run.start);
    (void)r.u64(&run.end);
    if (!run.well_formed() || run.empty() || !run.is_aligned(kSnapshotPageSize))
      return fail("{}: run {} {} of the data map is empty or not 4 KiB-aligned", kWhat, i, run);
    if (run.end > eof)
      return fail("{}: run {} {} of the data map passes the file's size {:#x} rounded up to a page", kWhat, i, run,
                  s.size);
    if (!s.data.empty() && run.start < s.data.back().end)
      return fail("{}: run {} {} of the data map is not after run {} {}", kWhat, i, run, i - 1, s.data.back());
    s.data.push_back(run);
  }
  return s;
}

Status check_file_state(const SnapshotReader& reader, size_t space_index, const FileState& state) {
  const SnapshotSpace& sp = reader.spaces()[space_index];
  if (sp.kind != static_cast<uint32_t>(SpaceKind::kFile))
    return fail("space {} is of kind {}, not a file", sp.id, space_kind_name(static_cast<SpaceKind>(sp.kind)));
  if (sp.size != state.size)
    return fail("its section says {:#x} bytes, and its space {} is {:#x} bytes", state.size, sp.id, sp.size);
  // Extents and runs are both sorted: walk them together.
  const auto extents = reader.extents_of(sp.id);
  const size_t first = reader.first_extent_of(sp.id);
  size_t k = 0;
  for (size_t j = 0; j < extents.size(); j++) {
    const SnapshotExtent& e = extents[j];
    const MappableRange er(e.offset, e.offset + e.length);
    while (k < state.data.size() && state.data[k].end <= er.start) k++;
    // Runs may touch: the extent may span several of them.
    uint64_t at = er.start;
    for (size_t m = k; m < state.data.size() && state.data[m].start <= at && at < er.end; m++) at = state.data[m].end;
    if (at < er.end)
      return fail("extent {} {} of space {} has data at {:#x}, which is a hole of the file's data map", first + j, er,
                  sp.id, at);
  }
  return {};
}

Result<std::vector<SnapshotFile>> snapshot_files(const SnapshotReader& reader) {
  std::vector<SnapshotFile> out;
  std::map<std::string, uint32_t> names;
  for (size_t i = 0; i < reader.spaces().size(); i++) {
    const SnapshotSpace& sp = reader.spaces()[i];
    if (sp.kind != static_cast<uint32_t>(SpaceKind::kFile)) continue;
    SnapshotFile f{.space = sp.id, .name = reader.space_name(i), .state = {}, .data_bytes = 0};
    const std::string what = fmt::format("snapshot {}: file \"{}\" (space {})", reader.name(), f.name, sp.id);
    if (f.name.size() > tmpfs::kMaxNameLength || f.name.find('/') != std::string::npos)
      return fail("{}: a tmpfs file cannot have that name (1 to {} bytes, no '/')", what, tmpfs::kMaxNameLength);
    if (auto [it, fresh] = names.emplace(f.name, sp.id); !fresh)
      return fail("{}: space {} has that name too", what, it->second);
    const long at = reader.find_section(SectionType::kFile, sp.id);
    if (at < 0) return fail("{}: no file section (type {}, index {}) says its size, seals and data map", what,
                            static_cast<uint32_t>(SectionType::kFile), sp.id);
    auto state = decode_file_state(reader.section_bytes(static_cast<size_t>(at)));
    if (!state) return std::unexpected(state.error().context(what));
    if (auto s = check_file_state(reader, i, *state); !s) return std::unexpected(s.error().context(what));
    for (const MappableRange& r : state->data) f.data_bytes += r.length();
    f.state = std::move(*state);
    out.push_back(std::move(f));
  }
  for (const SnapshotSection& s : reader.sections()) {
    if (s.type != static_cast<uint32_t>(SectionType::kFile)) continue;
    const long sp = reader.find_space(s.index);
    if (sp < 0 || reader.spaces()[static_cast<size_t>(sp)].kind != static_cast<uint32_t>(SpaceKind::kFile))
      return fail("snapshot {}: file section {} names space {}, which is not a file space", reader.name(), s.index,
                  s.index);
  }
  return out;
}

Status save_file(const tmpfs::RegularFile& file, uint32_t space, SnapshotWriter& writer) {
  MemoryFile& memory = file.memory();
  const tmpfs::FileImage img = file.image();
  RunRefs refs{memory, img.runs};
  FileState state{.size = img.size, .seals = img.seals, .data = {}};
  // The data map's runs, joined where file offsets touch: the memory-file
  // offsets behind them do not matter in the snapshot.
  for (const tmpfs::Translation& t : img.runs) {
    if (!state.data.empty() && state.data.back().end == t.source.start) state.data.back().end = t.source.end;
    else state.data.push_back(t.source);
  }
  KVMEM_TRY(writer.add_space(space, SpaceKind::kFile, file.name(), img.size));
  KVMEM_TRY(writer.add_section(SectionType::kFile, space, encode_file_state(state)));
  const std::vector<SpaceRange> ranges = space_ranges(img.runs);
  return save_ranges(memory, space, ranges, writer);
}

Result<FilesLoad> restore_files(const SnapshotReader& reader, tmpfs::FileSystem& fs) {
  const std::vector<SnapshotFile> files = KVMEM_TRY(snapshot_files(reader));
  MemoryFile& memory = fs.memory();
  if (memory.page_size() != kSnapshotPageSize && !files.empty())
    return fail("cannot restore the files of snapshot {}: their memory file has pages of {:#x} bytes, not 4 KiB",
                reader.name(), memory.page_size());
  FilesLoad out;
  for (const SnapshotFile& sf : files) {
    const std::string what = fmt::format("cannot restore file \"{}\" of snapshot {}", sf.name, reader.name());
    auto f = KVMEM_TRY_CTX(fs.create(sf.name, true), what);
    KVMEM_TRY_CTX(f->truncate(sf.state.size), what);
    for (const MappableRange& r : sf.state.data) KVMEM_TRY_CTX(f->fill_holes(r), what);
    const tmpfs::FileImage img = f->image();
    RunRefs refs{memory, img.runs};
    const std::vector<SpaceRange> ranges = space_ranges(img.runs);
    const LoadStats loaded = KVMEM_TRY_CTX(load_extents(reader, sf.space, memory, ranges), what);
    if (sf.state.seals) KVMEM_TRY_CTX(f->add_seals(sf.state.seals), what);
    out.files++;
    out.load.extents += loaded.extents;
    out.load.bytes += loaded.bytes;
  }
  return out;
}

}  // namespace kvmem
