// Tmpfs files in snapshots (snapshot/files.h): the file section's byte
// form, a file saved and made again with its size, seals, data map and
// bytes, and the refusals of file spaces and sections that do not agree.
#include <fcntl.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "memory/memory_file.h"
#include "memory/tmpfs/file_system.h"
#include "snapshot/files.h"
#include "tests/snapshot/snapshot_helpers.h"

using namespace kvmem;
using namespace kvmem::test;

namespace {

constexpr uint64_t kPage = 4096;

std::unique_ptr<MemoryFile> make_memory() {
  auto f = MemoryFile::create({.reservation = uint64_t{1} << 32});
  REQUIRE(f.has_value());
  return std::move(*f);
}

std::vector<uint8_t> page_of(uint64_t seed) {
  std::vector<uint8_t> p(kPage);
  fill_page(p.data(), 0, seed);
  return p;
}

// The data map as file ranges, neighbours joined.
std::vector<MappableRange> data_map(const tmpfs::RegularFile& f) {
  tmpfs::FileImage img = f.image();
  std::vector<MappableRange> out;
  for (const tmpfs::Translation& t : img.runs) {
    f.memory().dec_ref(t.file_range());
    if (!out.empty() && out.back().end == t.source.start) out.back().end = t.source.end;
    else out.push_back(t.source);
  }
  return out;
}

std::vector<uint8_t> contents(const tmpfs::RegularFile& f) {
  std::vector<uint8_t> b(f.size());
  auto n = f.read(0, b);
  REQUIRE(n);
  REQUIRE(*n == b.size());
  return b;
}

std::span<const uint8_t> bytes_of(const std::string& s) {
  return std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace

TEST_CASE("a file state survives its byte form, and damaged bytes are refused by what is wrong", "[snapshot]") {
  const FileState s{.size = 5 * kPage + 1, .seals = tmpfs::kSealWrite | tmpfs::kSealGrow,
                    .data = {MappableRange(0, kPage), MappableRange(2 * kPage, 6 * kPage)}};
  const std::vector<uint8_t> bytes = encode_file_state(s);
  REQUIRE(bytes.size() == 32 + 2 * 16);
  auto back = decode_file_state(bytes);
  REQUIRE(back);
  CHECK(back->size == s.size);
  CHECK(back->seals == s.seals);
  CHECK(back->data == s.data);

  using B = std::vector<uint8_t>;
  struct Case {
    const char* what;
    std::function<void(B&)> edit;
    const char* want;
  };
  const Case cases[] = {
      {"empty", [](B& b) { b.clear(); }, "too short for its magic"},
      {"another magic", [](B& b) { b[0] = 'X'; }, "magic"},
      {"version 2", [](B& b) { put_le(b, 4, 4, 2); }, "version 2"},
      {"cut in its header", [](B& b) { b.resize(20); }, "too short for its header"},
      {"reserved", [](B& b) { put_le(b, 20, 4, 1); }, "reserved is 0x1"},
      {"unknown seals", [](B& b) { put_le(b, 16, 4, 0x20); }, "seals 0x20 has unknown bits"},
      {"a size past the largest", [](B& b) { put_le(b, 8, 8, ~uint64_t{0}); }, "passes the largest file size"},
      {"a count past the bytes", [](B& b) { put_le(b, 24, 8, uint64_t{1} << 60); }, "do not fit"},
      {"a byte too many", [](B& b) { b.push_back(0); }, "do not fit"},
      {"an empty run", [](B& b) { put_le(b, 40, 8, 0); }, "run 0 [0x0, 0x0) of the data map is empty"},
      {"an unaligned run", [](B& b) { put_le(b, 48, 8, 2 * kPage + 8); }, "not 4 KiB-aligned"},
      {"a run past the size", [](B& b) { put_le(b, 56, 8, 7 * kPage); }, "passes the file's size"},
      {"runs unsorted", [](B& b) { put_le(b, 48, 8, 0); }, "is not after run 0"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    B b = bytes;
    c.edit(b);
    auto r = decode_file_state(b);
    REQUIRE_FALSE(r);
    INFO(r.error().message);
    CHECK_THAT(r.error().message, Catch::StartsWith("file state: ") && Catch::Contains(c.want));
  }
}

TEST_CASE("a saved file comes back with its size, seals, data map and bytes, holes staying holes", "[snapshot]") {
  SnapshotDir dir;
  REQUIRE(dir.ok());
  auto memory = make_memory();
  tmpfs::FileSystem fs(*memory);
  auto made = fs.create("box", true);
  REQUIRE(made);
  tmpfs::RegularFile& f = **made;
  // Pages: 0 data, 1 hole, 2 data, 3 zero (written), 4 fallocated, 5 hole,
  // 6 data, and the last page, 7, holds 100 bytes of data.
  REQUIRE(f.write(0, page_of(1)));
  REQUIRE(f.write(2 * kPage, page_of(2)));
  REQUIRE(f.write(3 * kPage, std::vector<uint8_t>(kPage, 0)));
  REQUIRE(f.fallocate(tmpfs::FallocateMode::kDefault, 4 * kPage, kPage));
  REQUIRE(f.write(6 * kPage, page_of(3)));
  REQUIRE(f.write(7 * kPage, std::vector<uint8_t>(100, 0x77)));
  REQUIRE(f.add_seals(tmpfs::kSealWrite | tmpfs::kSealShrink));
  const std::string path = dir.path("f.kvmsnap");
  {
    auto w = SnapshotWriter::create(path);
    REQUIRE(w);
    auto saved = save_file(f, 5, **w);
    INFO((saved ? "" : saved.error().message));
    REQUIRE(saved);
    REQUIRE((*w)->finish());
  }
  auto rd = SnapshotReader::open(path);
  REQUIRE(rd);
  auto listed = snapshot_files(**rd);
  REQUIRE(listed);
  REQUIRE(listed->size() == 1);
  CHECK(listed->front().name == "box");
  CHECK(listed->front().space == 5);
  CHECK(listed->front().data_bytes == 6 * kPage);
  CHECK((*rd)->extents().size() == 3);  // pages 0, 2 and 6-7: zero and fallocated pages are not kept

  auto fresh = make_memory();
  tmpfs::FileSystem back(*fresh);
  auto restored = restore_files(**rd, back);
  INFO((restored ? "" : restored.error().message));
  REQUIRE(restored);
  CHECK(restored->files == 1);
  CHECK(restored->load.extents == 3);
  auto g = back.open("box");
  REQUIRE(g);
  CHECK((*g)->size() == f.size());
  CHECK((*g)->seals() == f.seals());
  CHECK(data_map(**g) == data_map(f));
  // Its pages without data (the zero and the fallocated one) are holes of
  // the memory file: counted before anything reads them (a read through
  // the mapping commits a hole).
  tmpfs::FileImage img = (*g)->image();
  uint64_t data_pages = 0;
  for (const tmpfs::Translation& t : img.runs) {
    for (uint64_t at = t.file_range().start; at < t.file_range().end; at += kPage) {
      const off_t d = lseek(fresh->fd(), static_cast<off_t>(at), SEEK_DATA);
      data_pages += d >= 0 && static_cast<uint64_t>(d) == at;
    }
    fresh->dec_ref(t.file_range());
  }
  CHECK(data_pages == 4);
  CHECK(contents(**g) == contents(f));
  (*g)->check_invariants();
  // The sealed file refuses writes as before.
  CHECK_FALSE((*g)->write(0, page_of(9)));

  // A name already in the file system is refused, naming the file.
  auto again = restore_files(**rd, back);
  REQUIRE_FALSE(again);
  CHECK_THAT(again.error().message, Catch::Contains("cannot restore file \"box\""));
}

TEST_CASE("file spaces and file sections that do not agree are refused, naming the file", "[snapshot]") {
  SnapshotDir dir;
  REQUIRE(dir.ok());
  const std::vector<uint8_t> one_page = page_of(4);
  const std::vector<uint8_t> good = encode_file_state({.size = 2 * kPage, .seals = 0, .data = {MappableRange(0, kPage)}});
  // Each case writes a snapshot with a RAM space 0 and whatever it adds.
  struct Case {
    const char* what;
    std::function<void(SnapshotWriter&)> add;
    const char* want;
  };
  const Case cases[] = {
      {"a file space without its section",
       [&](SnapshotWriter& w) { REQUIRE(w.add_space(1, SpaceKind::kFile, "box", 2 * kPage)); },
       "file \"box\" (space 1): no file section"},
      {"a file section of the RAM space",
       [&](SnapshotWriter& w) { REQUIRE(w.add_section(SectionType::kFile, 0, good)); },
       "file section 0 names space 0, which is not a file space"},
      {"a file section of no space",
       [&](SnapshotWriter& w) { REQUIRE(w.add_section(SectionType::kFile, 7, good)); }, "names space 7"},
      {"a size that is not the space's",
       [&](SnapshotWriter& w) {
         REQUIRE(w.add_space(1, SpaceKind::kFile, "box", 3 * kPage));
         REQUIRE(w.add_section(SectionType::kFile, 1, good));
       },
       "its section says 0x2000 bytes, and its space 1 is 0x3000 bytes"},
      {"data where the data map has a hole",
       [&](SnapshotWriter& w) {
         REQUIRE(w.add_space(1, SpaceKind::kFile, "box", 2 * kPage));
         REQUIRE(w.add_section(SectionType::kFile, 1, good));
         REQUIRE(w.add_memory(1, kPage, one_page));
       },
       "has data at 0x1000, which is a hole of the file's data map"},
      {"two files of one name",
       [&](SnapshotWriter& w) {
         for (uint32_t id : {1u, 2u}) {
           REQUIRE(w.add_space(id, SpaceKind::kFile, "box", 2 * kPage));
           REQUIRE(w.add_section(SectionType::kFile, id, good));
         }
       },
       "file \"box\" (space 2): space 1 has that name too"},
      {"a name a tmpfs file cannot have",
       [&](SnapshotWriter& w) {
         REQUIRE(w.add_space(1, SpaceKind::kFile, "a/b", 2 * kPage));
         REQUIRE(w.add_section(SectionType::kFile, 1, good));
       },
       "a tmpfs file cannot have that name"},
      {"a damaged section",
       [&](SnapshotWriter& w) {
         REQUIRE(w.add_space(1, SpaceKind::kFile, "box", 2 * kPage));
         REQUIRE(w.add_section(SectionType::kFile, 1, bytes_of("KFIL but not much else")));
       },
       "file \"box\" (space 1): file state: "},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    const std::string path = dir.path("bad.kvmsnap");
    {
      auto w = SnapshotWriter::create(path);
      REQUIRE(w);
      REQUIRE((*w)->add_space(0, SpaceKind::kRam, "ram", 16 * kPage));
      c.add(**w);
      REQUIRE((*w)->finish());
    }
    auto rd = SnapshotReader::open(path);
    REQUIRE(rd);
    auto r = snapshot_files(**rd);
    REQUIRE_FALSE(r);
    INFO(r.error().message);
    CHECK_THAT(r.error().message, Catch::Contains(c.want) && Catch::Contains("bad.kvmsnap"));
    auto memory = make_memory();
    tmpfs::FileSystem fs(*memory);
    CHECK_FALSE(restore_files(**rd, fs));
    CHECK(fs.list().empty());
  }
}
