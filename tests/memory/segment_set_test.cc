#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "memory/range.h"
#include "memory/segment_set.h"
#include "tests/memory/test_helpers.h"

using namespace kvmem;

namespace {

using Set = SegmentSet<FileRange, int>;

std::vector<std::string> segments_of(Set& s) {
  std::vector<std::string> out;
  for (auto seg = s.first_segment(); seg.ok(); seg = seg.next_segment())
    out.push_back(fmt::format("{}={}", seg.range().to_string(), seg.value()));
  return out;
}

}  // namespace

TEST_CASE("ranges are half-open, overflow-checked and print as [0x.., 0x..)", "[memory]") {
  FileRange r(0x1000, 0x3000);
  CHECK(r.length() == 0x2000);
  CHECK(r.contains(0x1000));
  CHECK_FALSE(r.contains(0x3000));
  CHECK(r.to_string() == "[0x1000, 0x3000)");
  CHECK(fmt::format("{}", r) == "[0x1000, 0x3000)");
  CHECK(r.intersect(FileRange(0x2000, 0x5000)) == FileRange(0x2000, 0x3000));
  CHECK(r.intersect(FileRange(0x4000, 0x5000)).empty());
  CHECK(r.is_superset_of(FileRange(0x1000, 0x2000)));
  CHECK_FALSE(r.is_superset_of(FileRange(0x0, 0x2000)));
  CHECK_FALSE(FileRange(5, 3).well_formed());
  CHECK(FileRange::of(0x1000, 0x1000).value() == FileRange(0x1000, 0x2000));
  auto bad = GuestRange::of(UINT64_MAX - 0xfff, 0x2000);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message.find("overflows") != std::string::npos);
  CHECK(FileRange(0x1001, 0x2001).round_out().value() == FileRange(0x1000, 0x3000));
  CHECK_FALSE(FileRange(0, UINT64_MAX).round_out().has_value());
  CHECK(GuestAddr(0x2000) - GuestAddr(0x1000) == 0x1000);
}

TEST_CASE("segments merge with equal neighbours and split on isolate", "[memory]") {
  Set s;
  CHECK(s.add(FileRange(0, 10), 1));
  CHECK(s.add(FileRange(20, 30), 1));
  CHECK(s.add(FileRange(10, 20), 1));
  CHECK(segments_of(s) == std::vector<std::string>{"[0x0, 0x1e)=1"});
  CHECK_FALSE(s.add(FileRange(5, 40), 2));  // overlaps
  auto seg = s.isolate(s.find_segment(12), FileRange(10, 15));
  CHECK(seg.range() == FileRange(10, 15));
  seg.value() = 7;
  s.check_invariants();
  CHECK(segments_of(s) ==
        std::vector<std::string>{"[0x0, 0xa)=1", "[0xa, 0xf)=7", "[0xf, 0x1e)=1"});
  seg.value() = 1;
  s.merge_adjacent(FileRange(10, 15));
  CHECK(segments_of(s) == std::vector<std::string>{"[0x0, 0x1e)=1"});
  s.check_invariants();
}

TEST_CASE("apply_contiguous stops at the first gap and reports it", "[memory]") {
  Set s;
  s.add(FileRange(0, 10), 1);
  s.add(FileRange(10, 20), 2);
  s.add(FileRange(25, 30), 3);
  std::vector<std::string> seen;
  auto gap = s.apply_contiguous(FileRange(5, 28), [&](Set::Seg seg) {
    seen.push_back(seg.range().to_string());
  });
  CHECK(seen == std::vector<std::string>{"[0x5, 0xa)", "[0xa, 0x14)"});
  REQUIRE(gap.ok());
  CHECK(gap.range() == FileRange(20, 25));
  CHECK_FALSE(s.apply_contiguous(FileRange(0, 20), [](Set::Seg) {}).ok());
  CHECK(s.apply_contiguous(FileRange(21, 22), [](Set::Seg) {}).range() == FileRange(20, 25));
}

TEST_CASE("gaps and segments iterate both ways and bound lookups", "[memory]") {
  Set s;
  s.add(FileRange(10, 20), 1);
  s.add(FileRange(30, 40), 2);
  auto g = s.first_gap();
  CHECK(g.range() == FileRange(0, 10));
  g = g.next_gap();
  CHECK(g.range() == FileRange(20, 30));
  g = g.next_gap();
  CHECK(g.range() == FileRange(40, Set::kMaxKey));
  CHECK_FALSE(g.next_gap().ok());
  CHECK(g.prev_gap().range() == FileRange(20, 30));
  CHECK(g.prev_segment().range() == FileRange(30, 40));
  CHECK(s.last_segment().prev_segment().range() == FileRange(10, 20));
  CHECK_FALSE(s.first_segment().prev_segment().ok());
  CHECK(s.lower_bound_segment(20).range() == FileRange(30, 40));
  CHECK(s.lower_bound_segment(19).range() == FileRange(10, 20));
  CHECK(s.upper_bound_segment(29).range() == FileRange(10, 20));
  CHECK_FALSE(s.upper_bound_segment(9).ok());
  CHECK(s.lower_bound_gap(15).range() == FileRange(20, 30));
  CHECK(s.upper_bound_gap(35).range() == FileRange(20, 30));
  CHECK(s.find_gap(25).range() == FileRange(20, 30));
  CHECK_FALSE(s.find_gap(35).ok());
  s.remove_range(FileRange(15, 35));
  CHECK(segments_of(s) == std::vector<std::string>{"[0xa, 0xf)=1", "[0x23, 0x28)=2"});
  s.check_invariants();
}

TEST_CASE("first_fit finds the lowest aligned gap at or after a key", "[memory]") {
  Set s;
  s.add(FileRange(0, 0x1000), 1);
  s.add(FileRange(0x1800, 0x3000), 1);  // gap [0x1000, 0x1800): 0x800 long
  s.add(FileRange(0x3400, 0x8000), 1);  // gap [0x3000, 0x3400): 0x400 long
  auto fit = s.first_fit(0, 0x400, 0x400);
  REQUIRE(fit.ok());
  CHECK(fit.start == 0x1000);
  fit = s.first_fit(0x1100, 0x400, 0x400);
  CHECK(fit.start == 0x1400);
  fit = s.first_fit(0, 0x800, 0x2000);  // 0x2000 aligned: in neither small gap
  CHECK(fit.start == 0x8000);
  CHECK(fit.gap.range() == FileRange(0x8000, Set::kMaxKey));
  fit = s.first_fit(0x1500, 0x400, 0x400);
  CHECK(fit.start == 0x3000);
}

namespace {

// A per-key model: -1 is a gap, anything else the value there. Keys in
// [0, kKeys); above that everything is gap.
struct Model {
  static constexpr uint64_t kKeys = 192;
  std::vector<int> v = std::vector<int>(kKeys, -1);

  bool free(uint64_t a, uint64_t b) const {
    for (uint64_t k = a; k < b && k < kKeys; k++)
      if (v[k] != -1) return false;
    return true;
  }
  // The maximal runs of equal values: what a maximally merged set must hold.
  std::vector<std::string> runs() const {
    std::vector<std::string> out;
    for (uint64_t k = 0; k < kKeys;) {
      uint64_t e = k + 1;
      while (e < kKeys && v[e] == v[k]) e++;
      if (v[k] != -1) out.push_back(fmt::format("{}={}", FileRange(k, e).to_string(), v[k]));
      k = e;
    }
    return out;
  }
  // The non-empty gaps, the last one running to the end of the key space.
  std::vector<std::string> gaps() const {
    std::vector<std::string> out;
    uint64_t k = 0;
    while (k < kKeys) {
      if (v[k] != -1) {
        k++;
        continue;
      }
      uint64_t start = k;
      while (k < kKeys && v[k] == -1) k++;
      if (k == kKeys) {
        out.push_back(FileRange(start, Set::kMaxKey).to_string());
        return out;
      }
      out.push_back(FileRange(start, k).to_string());
    }
    out.push_back(FileRange(kKeys, Set::kMaxKey).to_string());
    return out;
  }
  int64_t first_fit(uint64_t min, uint64_t len, uint64_t align) const {
    for (uint64_t a = (min + align - 1) / align * align;; a += align)
      if (free(a, a + len)) return static_cast<int64_t>(a);
  }
};

std::vector<std::string> gaps_of(Set& s) {
  std::vector<std::string> out;
  for (auto g = s.first_gap(); g.ok(); g = g.next_gap())
    if (!g.empty()) out.push_back(g.range().to_string());
  return out;
}

}  // namespace

TEST_CASE("SegmentSet matches a per-key model over random operations", "[memory]") {
  for (uint64_t seed : {1u, 2u, 3u, 4u, 5u, 6u, 7u, 8u}) {
    std::mt19937_64 rng(seed);
    auto rnd = [&](uint64_t n) { return rng() % n; };
    Set s(seed);
    Model m;
    std::string log;
    INFO("seed " << seed);
    for (int step = 0; step < 3000; step++) {
      uint64_t a = rnd(Model::kKeys), b = rnd(Model::kKeys);
      if (a > b) std::swap(a, b);
      if (a == b) b = a + 1;
      FileRange r(a, b);
      int val = static_cast<int>(rnd(3));
      switch (rnd(6)) {
        case 0:
        case 1: {  // add
          bool want = m.free(a, b);
          log += fmt::format("add {} {} -> {}\n", r.to_string(), val, want);
          REQUIRE(s.add(r, val) == want);
          if (want)
            for (uint64_t k = a; k < b; k++) m.v[k] = val;
          break;
        }
        case 2: {  // remove_range
          log += fmt::format("remove {}\n", r.to_string());
          s.remove_range(r);
          for (uint64_t k = a; k < b; k++) m.v[k] = -1;
          break;
        }
        case 3: {  // apply_contiguous + merge, as the allocator uses it
          bool and_merge = rnd(2) == 0;
          log += fmt::format("apply{} {} := {}\n", and_merge ? "_and_merge" : "", r.to_string(),
                             val);
          auto set_val = [&](Set::Seg seg) { seg.value() = val; };
          auto gap = and_merge ? s.apply_and_merge(r, set_val) : s.apply_contiguous(r, set_val);
          uint64_t k = a;
          for (; k < b && m.v[k] != -1; k++) m.v[k] = val;
          if (k < b) {
            // the first gap in r; when r starts in a gap, the whole of it
            REQUIRE(gap.ok());
            REQUIRE(gap.range().contains(k));
            REQUIRE((k == a || gap.start() == k));
          } else {
            REQUIRE_FALSE(gap.ok());
          }
          if (!and_merge) {
            s.check_invariants(/*merged=*/false);
            s.merge_range(r);
            s.merge_adjacent(r);
          }
          break;
        }
        case 4: {  // isolate then re-merge
          auto seg = s.lower_bound_segment(a);
          if (seg.ok() && seg.start() < b) {
            log += fmt::format("isolate {} to {}\n", seg.range().to_string(), r.to_string());
            seg = s.isolate(seg, r);
            REQUIRE(r.is_superset_of(seg.range()));
            s.check_invariants(/*merged=*/false);
            s.merge_range(FileRange(0, Model::kKeys));
          }
          break;
        }
        case 5: {  // first_fit against a linear scan
          uint64_t len = 1 + rnd(24), align = uint64_t{1} << rnd(5);
          auto fit = s.first_fit(a, len, align);
          REQUIRE(fit.ok());
          INFO(log);
          REQUIRE(static_cast<int64_t>(fit.start) == m.first_fit(a, len, align));
          REQUIRE(fit.gap.range().is_superset_of(FileRange(fit.start, fit.start + len)));
          break;
        }
      }
      s.check_invariants();
      INFO(log);
      REQUIRE(segments_of(s) == m.runs());
      REQUIRE(gaps_of(s) == m.gaps());
      // backwards iteration sees the same segments
      std::vector<std::string> back;
      for (auto seg = s.last_segment(); seg.ok(); seg = seg.prev_segment())
        back.insert(back.begin(), fmt::format("{}={}", seg.range().to_string(), seg.value()));
      REQUIRE(back == m.runs());
      uint64_t k = rnd(Model::kKeys);
      auto f = s.find(k);
      REQUIRE(f.seg.ok() == (m.v[k] != -1));
      REQUIRE(f.gap.ok() == (m.v[k] == -1));
      if (f.seg.ok()) REQUIRE(f.seg.value() == m.v[k]);
    }
  }
}

// find() tries its finger (the last segment it found or inserted, or the one
// after a removal) and that segment's successor before descending. Walks of
// neighbouring keys between mutations land on exactly those shortcuts; every
// answer must still be the segment or gap that holds the key, whole.
TEST_CASE("find answers through its finger exactly as by descent", "[memory]") {
  for (uint64_t seed : {11u, 12u, 13u, 14u}) {
    std::mt19937_64 rng(seed);
    auto rnd = [&](uint64_t n) { return rng() % n; };
    Set s(seed);
    Model m;
    INFO("seed " << seed);
    // The whole run or gap of the model that holds k.
    auto holder = [&](uint64_t k) {
      uint64_t a = k, b = k + 1;
      while (a > 0 && m.v[a - 1] == m.v[k]) a--;
      while (b < Model::kKeys && m.v[b] == m.v[k]) b++;
      if (m.v[k] == -1 && b == Model::kKeys) b = Set::kMaxKey;
      return FileRange(a, b);
    };
    uint64_t k = 0;
    for (int step = 0; step < 2000; step++) {
      uint64_t a = rnd(Model::kKeys), b = std::min<uint64_t>(a + 1 + rnd(8), Model::kKeys);
      FileRange r(a, b);
      int val = static_cast<int>(rnd(2));
      switch (rnd(4)) {
        case 0:  // insert, as allocate does: into the gap holding a
          if (m.free(a, b)) {
            REQUIRE(s.add(r, val));
            for (uint64_t i = a; i < b; i++) m.v[i] = val;
          }
          break;
        case 1:  // remove, as the reclaimer does: one whole segment
          if (auto seg = s.find_segment(a); seg.ok()) {
            for (uint64_t i = seg.start(); i < seg.end(); i++) m.v[i] = -1;
            s.remove(seg);
          }
          break;
        case 2:  // change values over r and re-merge, as dec_ref does
          s.apply_and_merge(r, [&](Set::Seg seg) {
            seg.value() = val;
            for (uint64_t i = seg.start(); i < seg.end(); i++) m.v[i] = val;
          });
          break;
        case 3:  // split without merging back, then merge
          if (auto seg = s.find_segment(a); seg.ok() && seg.start() < a) {
            s.split(seg, a);
            s.check_invariants(/*merged=*/false);
            s.merge_range(FileRange(a - 1, a + 1));
          }
          break;
      }
      s.check_invariants();
      // A short walk from the last key: the finger and its successor first.
      for (int j = 0; j < 4; j++) {
        k = std::min<uint64_t>(k + rnd(6), Model::kKeys - 1);
        if (rnd(4) == 0) k = rnd(Model::kKeys);
        auto f = s.find(k);
        FileRange want = holder(k);
        if (m.v[k] == -1) {
          REQUIRE(f.gap.ok());
          REQUIRE_FALSE(f.seg.ok());
          REQUIRE(f.gap.range() == want);
        } else {
          REQUIRE(f.seg.ok());
          REQUIRE_FALSE(f.gap.ok());
          REQUIRE(f.seg.range() == want);
          REQUIRE(f.seg.value() == m.v[k]);
        }
      }
    }
  }
}

// Guest memory's map is built once and then read by the vCPU's thread and
// the free ring's thread with no lock: lookups must write nothing (the
// finger included). Under ThreadSanitizer (make tsan) a write is a report.
TEST_CASE("concurrent lookups of an unchanging set write nothing", "[memory][threads]") {
  Set s(3);
  for (uint64_t i = 0; i < 4096; i++)
    REQUIRE(s.add(FileRange(4 * i, 4 * i + 2), static_cast<int>(i % 3)));
  // A mutation last, so the readers start with a finger to read.
  REQUIRE_FALSE(s.apply_and_merge(FileRange(8, 10), [](Set::Seg seg) { seg.value() = 7; }).ok());
  auto reader = [&s](uint64_t seed, uint64_t* hits) {
    std::mt19937_64 rng(seed);
    for (int i = 0; i < 20000; i++) {
      uint64_t k = rng() % (4 * 4096);
      auto f = s.find(k);
      if (f.seg.ok()) ++*hits;
      if (auto g = s.find_gap(k); g.ok()) (void)g.next_segment();
      if (auto seg = s.find_segment(k); seg.ok()) (void)seg.next_gap().length();
      (void)s.first_fit(k, 2, 1);
      (void)s.lower_bound_segment(k);
    }
  };
  uint64_t a = 0, b = 0;
  std::thread t1(reader, 1, &a), t2(reader, 2, &b);
  t1.join();
  t2.join();
  CHECK(a > 0);
  CHECK(b > 0);
  s.check_invariants();
}

TEST_CASE("first_fit over many fragmented segments agrees with a linear scan", "[memory]") {
  Set s(7);
  std::mt19937_64 rng(99);
  // 20000 segments with gaps of 1..64 pages between them.
  uint64_t at = 0;
  for (int i = 0; i < 20000; i++) {
    at += (1 + rng() % 64) * kPageSize;
    uint64_t len = (1 + rng() % 16) * kPageSize;
    REQUIRE(s.add(FileRange(at, at + len), i));
    at += len;
  }
  s.check_invariants();
  for (int q = 0; q < 300; q++) {
    uint64_t min = (rng() % (at / kPageSize)) * kPageSize;
    uint64_t len = (1 + rng() % 80) * kPageSize;
    uint64_t align = kPageSize << (rng() % 4);
    auto fit = s.first_fit(min, len, align);
    REQUIRE(fit.ok());
    uint64_t want = 0;
    for (auto g = s.find(min).gap.ok() ? s.find_gap(min) : s.find_segment(min).next_gap(); g.ok();
         g = g.next_gap()) {
      uint64_t st = std::max(g.start(), min);
      st = (st + align - 1) / align * align;
      if (st <= g.end() && g.end() - st >= len) {
        want = st;
        break;
      }
    }
    REQUIRE(fit.start == want);
  }
}

namespace {

// A tmpfs-style map: file offset -> memory-file offset. Neighbours merge when
// their targets are contiguous too; a split moves the right half's target.
struct Translation {
  static std::optional<uint64_t> merge(const FileRange& a, uint64_t va, const FileRange&,
                                       uint64_t vb) {
    if (va + a.length() == vb) return va;
    return std::nullopt;
  }
  static std::pair<uint64_t, uint64_t> split(const FileRange& r, uint64_t v, uint64_t at) {
    return {v, v + (at - r.start)};
  }
};

}  // namespace

TEST_CASE("a policy decides merging and splitting of values", "[memory]") {
  SegmentSet<FileRange, uint64_t, Translation> s;
  CHECK(s.add(FileRange(0, 0x1000), 0x10000));
  CHECK(s.add(FileRange(0x1000, 0x2000), 0x11000));  // contiguous: merges
  CHECK(s.add(FileRange(0x2000, 0x3000), 0x50000));  // not contiguous: stays apart
  CHECK(s.size() == 2);
  auto seg = s.isolate(s.find_segment(0), FileRange(0x800, 0x1800));
  CHECK(seg.value() == 0x10800);
  CHECK(seg.next_segment().value() == 0x11800);
  s.merge_range(FileRange(0, 0x3000));
  CHECK(s.size() == 2);
  s.check_invariants();

  // The same container over guest-physical keys.
  SegmentSet<GuestRange, int> g;
  CHECK(g.add(GuestRange(0x100000, 0x200000), 1));
  CHECK(g.find_segment(0x1fffff).ok());
}

TEST_CASE("SegmentSet aborts loudly on a bad insert", "[memory]") {
  std::string out;
  CHECK(test::aborts_with(
      [] {
        Set s;
        s.add(FileRange(0, 10), 1);
        s.insert(s.first_gap(), FileRange(5, 20), 1);
      },
      "insert of [0x5, 0x14) into gap", &out));
  INFO(out);
}
