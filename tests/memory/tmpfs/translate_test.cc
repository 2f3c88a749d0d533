// translate(): its postconditions on random files and ranges, checked with
// check_translate_result after every call, and the checker's own ability to
// fail.
#include <cerrno>
#include <cstring>
#include <random>

#include <catch2/catch.hpp>

#include "tests/memory/test_helpers.h"
#include "tests/memory/tmpfs/tmpfs_helpers.h"

using namespace kvmem;
using namespace kvmem::tmpfs;
using kvmem::test::pattern;

namespace {

constexpr uint64_t kPage = 4096, kMiB = 1 << 20;

TranslateResult result(std::vector<Translation> ts, TranslateError e = TranslateError::kNone,
                       std::string message = "") {
  TranslateResult r;
  r.translations = std::move(ts);
  r.error = e;
  r.message = std::move(message);
  return r;
}

void release(MemoryFile& m, const TranslateResult& r) {
  for (const Translation& t : r.translations) m.dec_ref(t.file_range());
}

}  // namespace

TEST_CASE("translate keeps its postconditions on random files and ranges", "[tmpfs]") {
  auto memory = test::make_memory();
  const uint64_t seed = Catch::rngSeed() ? Catch::rngSeed() : 7;
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 40; round++) {
    RegularFile f(*memory, "t", true);
    const uint64_t pages = rng() % 64 + 1;
    for (int i = 0; i < 12; i++) {
      const uint64_t off = rng() % (pages * kPage), len = rng() % (6 * kPage) + 1;
      if (rng() % 3 == 0)
        REQUIRE(f.fallocate(FallocateMode::kPunchHole, off, len));
      else
        REQUIRE(f.write(off, pattern(len, rng())));
    }
    REQUIRE(f.truncate(rng() % (pages * kPage) + 1));
    for (int i = 0; i < 30; i++) {
      const uint64_t a = rng() % (pages + 4), b = a + rng() % 8 + 1;
      const uint64_t oa = a - std::min(a, rng() % 4), ob = b + rng() % 4;
      const MappableRange req(a * kPage, b * kPage), opt(oa * kPage, ob * kPage);
      const Access at = rng() % 2 ? Access::kRead : Access::kWrite;
      TranslateResult r = f.translate(req, opt, at);
      INFO("required " << req << ", optional " << opt << ", size " << f.size());
      CHECK(check_translate_result(req, opt, at, r) == "");
      const uint64_t eof = (f.size() + kPage - 1) / kPage * kPage;
      CHECK((r.error == TranslateError::kBeyondEof) == (req.end > eof));
      // Each translation shows the file's own bytes.
      for (const Translation& t : r.translations) {
        auto span = memory->map_internal(t.file_range());
        REQUIRE(span.has_value());
        const uint64_t n = std::min(t.source.end, f.size()) - t.source.start;
        auto bytes = test::read_back(f, t.source.start, n);
        CHECK(std::memcmp(bytes.data(), span->data(), n) == 0);
      }
      release(*memory, r);
      f.check_invariants();
    }
  }
  memory->check_invariants();
}

TEST_CASE("a fresh 1 GiB file mapped whole takes one allocation and one translation", "[tmpfs]") {
  auto memory = test::make_memory();
  RegularFile f(*memory, "big", true);
  REQUIRE(f.truncate(1024 * kMiB));
  const MappableRange all(0, 1024 * kMiB);
  TranslateResult r = f.translate(MappableRange(0, kPage), all, Access::kWrite);
  CHECK(check_translate_result(MappableRange(0, kPage), all, Access::kWrite, r) == "");
  REQUIRE(r.translations.size() == 1);
  CHECK(r.translations[0].source == all);
  CHECK(f.stat().allocated == 1024 * kMiB);
  release(*memory, r);
}

TEST_CASE("translate past the end translates what exists and says kBeyondEof", "[tmpfs]") {
  auto memory = test::make_memory();
  RegularFile f(*memory, "eof", true);
  REQUIRE(f.truncate(2 * kPage + 1));
  const MappableRange req(kPage, 8 * kPage), opt(0, 8 * kPage);
  TranslateResult r = f.translate(req, opt, Access::kRead);
  CHECK(check_translate_result(req, opt, Access::kRead, r) == "");
  CHECK(r.error == TranslateError::kBeyondEof);
  CHECK(r.message.find("beyond the end of file eof (size 8193)") != std::string::npos);
  REQUIRE(r.translations.size() == 1);
  CHECK(r.translations[0].source == MappableRange(0, 3 * kPage));
  release(*memory, r);
  TranslateResult none = f.translate(MappableRange(3 * kPage, 4 * kPage), opt, Access::kRead);
  CHECK(none.translations.empty());
  CHECK(none.error == TranslateError::kBeyondEof);
}

TEST_CASE("translate without memory says kNoMemory and translates nothing", "[tmpfs]") {
  MemoryFileOptions o;
  o.reservation = kChunkSize;  // 16 MiB in all
  auto memory = MemoryFile::create(o);
  REQUIRE(memory.has_value());
  RegularFile f(**memory, "nomem", true);
  REQUIRE(f.truncate(64 * kMiB));
  const MappableRange req(0, 32 * kMiB), opt(0, 64 * kMiB);
  TranslateResult r = f.translate(req, opt, Access::kRead);
  CHECK(check_translate_result(req, opt, Access::kRead, r) == "");
  CHECK(r.error == TranslateError::kNoMemory);
  // A smaller required still fits once optional is given up.
  TranslateResult small = f.translate(MappableRange(0, kMiB), opt, Access::kRead);
  CHECK(small.ok());
  CHECK(check_translate_result(MappableRange(0, kMiB), opt, Access::kRead, small) == "");
  release(**memory, small);
  f.check_invariants();
}

TEST_CASE("check_translate_result catches every kind of broken result", "[tmpfs]") {
  const MappableRange req(2 * kPage, 4 * kPage), opt(0, 8 * kPage);
  const auto t = [](uint64_t a, uint64_t b, uint64_t off = 0x100000,
                    Access p = Access::kReadWrite) {
    return Translation{MappableRange(a * kPage, b * kPage), FileOffset(off), p};
  };
  struct Case {
    const char* what;
    TranslateResult result;
    const char* needle;
  };
  const std::vector<Case> cases = {
      {"nothing and no error", result({}), "no translation"},
      {"an error without a sentence", result({}, TranslateError::kBeyondEof), "no sentence"},
      {"a first translation after required.start", result({t(3, 4)}), "does not contain"},
      {"an empty translation", result({t(2, 4), t(4, 4)}), "empty"},
      {"an unaligned memory-file offset", result({t(2, 4, 0x100010)}), "not page-aligned"},
      {"a gap between translations", result({t(2, 3), t(4, 5)}), "does not start where"},
      {"a translation off required", result({t(1, 4), t(4, 6)}), "does not overlap required"},
      {"a translation outside optional",
       result({Translation{MappableRange(2 * kPage, 9 * kPage), FileOffset(0),
                           Access::kReadWrite}}),
       "not inside optional"},
      {"a read-only translation for a write", result({t(2, 4, 0, Access::kRead)}), "does not permit"},
      {"short of required without an error", result({t(2, 3)}), "short of required.end"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    const std::string got = check_translate_result(req, opt, Access::kWrite, c.result);
    CHECK(got.find(c.needle) != std::string::npos);
  }
  // And a good one passes, short with a reason too.
  CHECK(check_translate_result(req, opt, Access::kWrite, result({t(1, 3), t(3, 5)})) == "");
  CHECK(check_translate_result(req, opt, Access::kWrite,
                               result({t(2, 3)}, TranslateError::kBeyondEof, "past the end")) == "");
}

TEST_CASE("check_translate_result aborts on a required range outside optional",
          "[tmpfs][fork]") {
  CHECK(test::aborts_with(
      [] {
        (void)check_translate_result(MappableRange(0, 2 * kPage), MappableRange(kPage, 2 * kPage),
                                     Access::kRead, TranslateResult{});
      },
      "must be page-aligned and hold required"));
}
