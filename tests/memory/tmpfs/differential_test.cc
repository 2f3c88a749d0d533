// The same seeded random operations on a real memfd and on a RegularFile:
// results, errnos, sizes, seals and contents must agree. Mappings are a real
// mmap(MAP_SHARED) of the memfd on one side and a HostMapping on the other;
// an access past the end is predicted (SIGBUS on the real side) and only
// the bytes before the faulting page are copied there.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bitset>
#include <cerrno>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "tests/memory/tmpfs/tmpfs_helpers.h"

using namespace kvmem;
using namespace kvmem::tmpfs;

namespace {

constexpr uint64_t kPage = 4096;
constexpr int kSeeds = 96;
constexpr int kOpsPerSeed = 160;

struct RealMap {
  uint8_t* addr = nullptr;
  uint64_t offset = 0, length = 0;
};

struct Outcome {
  long value = 0;  // bytes, or 0
  int err = 0;     // errno, 0 on success
  bool operator==(const Outcome&) const = default;
};

Outcome real_outcome(long r) { return r < 0 ? Outcome{0, errno} : Outcome{r, 0}; }
template <class T>
Outcome our_outcome(const Result<T>& r) {
  if (!r) return Outcome{0, r.error().code};
  if constexpr (!std::is_integral_v<T>)
    return Outcome{0, 0};
  else
    return Outcome{static_cast<long>(*r), 0};
}

class Differential {
 public:
  Differential(MemoryFile& memory, uint64_t seed) : fs_(memory), rng_(seed), seed_(seed) {
    real_ = memfd_create("diff", MFD_ALLOW_SEALING | MFD_CLOEXEC);
    REQUIRE(real_ >= 0);
    // Read-only mappings come from a read-only descriptor: a read-only
    // mapping of the read-write memfd may still be made writable
    // (VM_MAYWRITE), so the kernel counts it against F_SEAL_WRITE.
    real_ro_ = open(fmt::format("/proc/self/fd/{}", real_).c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(real_ro_ >= 0);
    auto f = fs_.create("diff", true);
    REQUIRE(f.has_value());
    ours_ = *f;
  }
  ~Differential() {
    for (auto& m : real_maps_) munmap(m.addr, m.length);
    our_maps_.clear();
    close(real_ro_);
    close(real_);
  }

  uint64_t size() const { return ours_->size(); }
  uint32_t seals() const { return ours_->seals(); }

  // A random operation, or the planned seal (when `plan` is not negative).
  void step(int plan) {
    if (plan >= 0) {
      // Writable mappings would make WRITE EBUSY; the plan is to reach it.
      if (plan & F_SEAL_WRITE)
        while (!real_maps_.empty()) unmap(0);
      // With a writable mapping, the same seals and WRITE are EBUSY and add
      // nothing, on both sides.
      const bool writable_mapped = std::any_of(our_maps_.begin(), our_maps_.end(),
                                               [](const auto& m) { return m->writable(); });
      if (writable_mapped) add_seals(static_cast<uint32_t>(plan) | F_SEAL_WRITE);
      add_seals(static_cast<uint32_t>(plan));
      planned_ = true;
      return;
    }
    switch (rng_() % 16) {
      case 0: case 1: case 2: do_write(); break;
      case 3: case 4: do_read(); break;
      case 5: do_truncate(); break;
      case 6: case 7: do_fallocate(); break;
      // Random seals only after the planned one, which so finds the file
      // unsealed and makes exactly its combination.
      case 8: if (planned_ && rng_() % 4 == 0) add_seals(random_seals()); break;
      case 9: case 10: do_map(); break;
      case 11: if (!real_maps_.empty()) unmap(rng_() % real_maps_.size()); break;
      default: do_map_access(); break;
    }
  }

  // Sizes, seals and every byte (of small files; the ends of huge ones).
  void compare_all() {
    struct stat st;
    REQUIRE(fstat(real_, &st) == 0);
    expect(static_cast<uint64_t>(st.st_size) == size(),
           fmt::format("size: real {:#x}, ours {:#x}", st.st_size, size()));
    const long real_seals = fcntl(real_, F_GET_SEALS);
    expect(real_seals == static_cast<long>(seals()),
           fmt::format("seals: real {:#x}, ours {:#x}", real_seals, seals()));
    const uint64_t n = size();
    compare_range(0, std::min<uint64_t>(n, 1 << 20));
    if (n > (1 << 20)) compare_range(n - 65536, 65536);
    compare_tail();
    ours_->check_invariants();
  }

  // The rest of the last page, past the end: what mappings wrote there
  // stays on both sides until a truncate or a punch zeroes it.
  void compare_tail() {
    const uint64_t n = size();
    if (n % kPage == 0 || n > kMaxFileSize - kPage) return;
    const uint64_t page = n / kPage * kPage;
    auto* real = static_cast<uint8_t*>(
        mmap(nullptr, kPage, PROT_READ, MAP_SHARED, real_ro_, static_cast<off_t>(page)));
    REQUIRE(real != MAP_FAILED);
    auto mine = HostMapping::create(ours_, page, kPage, false);
    REQUIRE(mine.has_value());
    std::vector<uint8_t> got(kPage);
    REQUIRE((*mine)->read(0, got));
    const auto diff = std::mismatch(got.begin(), got.end(), real);
    const uint64_t at = static_cast<uint64_t>(diff.first - got.begin());
    const std::string what =
        at == kPage ? "" : fmt::format("the last page differs at {:#x}: real {:#x}, ours {:#x}",
                                       page + at, *diff.second, *diff.first);
    munmap(real, kPage);
    expect(what.empty(), what);
  }

  void log(std::string s) { log_.push_back(std::move(s)); }

  // Per operation kind: how often the kernel said yes and no, and which
  // errnos it gave.
  static inline std::map<std::string, int> successes, failures;
  static inline std::set<int> errnos;

 private:
  uint64_t offset_near(uint64_t span) {
    switch (rng_() % 24) {
      case 0: return kMaxFileSize - rng_() % 8200;  // the largest offsets
      case 1: return kMaxFileSize + 1 + rng_() % 4;  // negative as off_t
      default: return rng_() % span;
    }
  }
  uint64_t length_upto(uint64_t max) {
    switch (rng_() % 8) {
      case 0: return 0;
      case 1: return (rng_() % 4 + 1) * kPage;
      case 2: return rng_() % 64;
      default: return rng_() % max;
    }
  }
  uint32_t random_seals() {
    uint32_t s = 0;
    for (int i = 0; i < 5; i++)
      if (rng_() % 4 == 0) s |= 1u << i;
    if (rng_() % 16 == 0) s |= 0x40;  // unknown: EINVAL on both sides
    return s;
  }

  void expect(bool ok, const std::string& what) {
    if (ok) return;
    std::string all;
    for (const auto& l : log_) all += "  " + l + "\n";
    FAIL(fmt::format("differential mismatch, seed {}: {}\noperation log:\n{}", seed_, what, all));
  }
  void expect_same(const std::string& op, Outcome real, Outcome ours, const std::string& msg) {
    const std::string kind = op.substr(0, op.find('('));
    (real.err ? failures : successes)[kind]++;
    if (real.err) errnos.insert(real.err);
    log(fmt::format("{} -> real {}/{}, ours {}/{}{}", op, real.value, real.err, ours.value,
                    ours.err, msg.empty() ? "" : " (" + msg + ")"));
    expect(real == ours, op);
  }

  void compare_range(uint64_t off, uint64_t n) {
    std::vector<uint8_t> a(n), b(n);
    ssize_t got = pread(real_, a.data(), n, static_cast<off_t>(off));
    auto mine = ours_->read(off, b);
    expect(got == static_cast<ssize_t>(n) && mine && *mine == n,
           fmt::format("reading back [{:#x}, +{:#x})", off, n));
    if (a != b) {
      size_t i = std::mismatch(a.begin(), a.end(), b.begin()).first - a.begin();
      expect(false, fmt::format("contents differ at {:#x}: real {:#x}, ours {:#x}", off + i, a[i],
                                b[i]));
    }
  }

  void do_write() {
    const uint64_t off = offset_near(256 * 1024), len = length_upto(40000);
    auto data = test::pattern(len, rng_());
    Outcome real = real_outcome(pwrite(real_, data.data(), len, static_cast<off_t>(off)));
    auto r = ours_->write(off, data);
    expect_same(fmt::format("write({:#x}, {:#x})", off, len), real, our_outcome(r),
                r ? "" : r.error().message);
  }
  void do_read() {
    const uint64_t off = offset_near(size() + 8192 + 1), len = length_upto(40000);
    std::vector<uint8_t> a(len), b(len);
    Outcome real = real_outcome(pread(real_, a.data(), len, static_cast<off_t>(off)));
    auto r = ours_->read(off, b);
    expect_same(fmt::format("read({:#x}, {:#x})", off, len), real, our_outcome(r),
                r ? "" : r.error().message);
    if (real.err == 0)
      expect(std::equal(a.begin(), a.begin() + real.value, b.begin()), "read contents differ");
  }
  void do_truncate() {
    uint64_t sz = rng_() % (300 * 1024);
    if (rng_() % 3 == 0) sz = size() + (rng_() % 3) * kPage - kPage + rng_() % 3;
    if (rng_() % 40 == 0) sz = rng_() % 2 ? kMaxFileSize : kMaxFileSize + 1;
    if (sz > kMaxFileSize + 1) sz = rng_() % 4096;
    Outcome real = real_outcome(ftruncate(real_, static_cast<off_t>(sz)));
    auto r = ours_->truncate(sz);
    expect_same(fmt::format("truncate({:#x})", sz), real, our_outcome(r),
                r ? "" : r.error().message);
  }
  void do_fallocate() {
    static constexpr int kModes[] = {0, FALLOC_FL_KEEP_SIZE,
                                     FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE};
    static constexpr FallocateMode kOurs[] = {FallocateMode::kDefault, FallocateMode::kKeepSize,
                                              FallocateMode::kPunchHole};
    const int m = static_cast<int>(rng_() % 3);
    const uint64_t off = offset_near(size() + 65536 + 1);
    uint64_t len = length_upto(100000);
    if (rng_() % 30 == 0) len = kMaxFileSize + 1 + rng_() % 3;  // negative
    if (off > kMaxFileSize / 2 && len > 8192 && m != 2) len %= 8192;  // keep allocations small
    Outcome real = real_outcome(
        fallocate(real_, kModes[m], static_cast<off_t>(off), static_cast<off_t>(len)));
    auto r = ours_->fallocate(kOurs[m], off, len);
    expect_same(fmt::format("fallocate(mode {}, {:#x}, {:#x})", m, off, len), real,
                our_outcome(r), r ? "" : r.error().message);
  }
  void add_seals(uint32_t s) {
    Outcome real = real_outcome(fcntl(real_, F_ADD_SEALS, s));
    auto r = ours_->add_seals(s);
    expect_same(fmt::format("add_seals({:#x})", s), real, our_outcome(r),
                r ? "" : r.error().message);
  }
  void do_map() {
    if (real_maps_.size() >= 4) return;
    uint64_t off = (rng_() % 70) * kPage, len = (rng_() % 16 + 1) * kPage - rng_() % 2 * 100;
    if (rng_() % 20 == 0) off += 512;  // unaligned: EINVAL
    if (rng_() % 25 == 0) off = (kMaxFileSize + 1) - (rng_() % 4 + 1) * kPage;  // EOVERFLOW?
    if (rng_() % 20 == 0) len = 0;     // EINVAL
    const bool w = rng_() % 2;
    void* p = mmap(nullptr, len, PROT_READ | (w ? PROT_WRITE : 0), MAP_SHARED,
                   w ? real_ : real_ro_, static_cast<off_t>(off));
    Outcome real = p == MAP_FAILED ? Outcome{0, errno} : Outcome{0, 0};
    auto r = HostMapping::create(ours_, off, len, w);
    expect_same(fmt::format("map({:#x}, {:#x}, {})", off, len, w ? "rw" : "ro"), real,
                our_outcome(r), r ? "" : r.error().message);
    if (p == MAP_FAILED) return;
    const uint64_t rounded = (len + kPage - 1) / kPage * kPage;
    real_maps_.push_back(RealMap{static_cast<uint8_t*>(p), off, rounded});
    our_maps_.push_back(std::move(*r));
  }
  void unmap(size_t i) {
    log(fmt::format("unmap #{} ({:#x}, {:#x})", i, real_maps_[i].offset, real_maps_[i].length));
    REQUIRE(munmap(real_maps_[i].addr, real_maps_[i].length) == 0);
    real_maps_.erase(real_maps_.begin() + static_cast<long>(i));
    our_maps_.erase(our_maps_.begin() + static_cast<long>(i));
  }
  void do_map_access() {
    if (real_maps_.empty()) return;
    const size_t i = rng_() % real_maps_.size();
    RealMap& rm = real_maps_[i];
    HostMapping& hm = *our_maps_[i];
    const uint64_t off = rng_() % rm.length, len = std::min(rng_() % 9000, rm.length - off);
    const bool w = hm.writable() && rng_() % 2;
    // Pages at or past the end raise SIGBUS: the real side copies only the
    // bytes before the first of them.
    uint64_t eof_page = (size() + kPage - 1) / kPage * kPage;
    if (size() > kMaxFileSize - kPage) eof_page = kMaxFileSize + 1;
    const uint64_t file_off = rm.offset + off;
    const uint64_t ok_bytes =
        file_off >= eof_page ? 0 : std::min(len, eof_page - file_off);
    auto data = test::pattern(len, rng_());
    std::vector<uint8_t> got(len);
    Status st = w ? hm.write(off, data) : hm.read(off, got);
    if (w)
      std::memcpy(rm.addr + off, data.data(), ok_bytes);
    const bool faults = ok_bytes < len;
    log(fmt::format("map #{} {}({:#x}, {:#x}) file offset {:#x}: {}", i, w ? "write" : "read",
                    off, len, file_off,
                    st ? "ok" : st.error().message));
    (faults ? failures : successes)[w ? "map write" : "map read"]++;
    if (faults) {
      expect(!st && st.error().code == EFAULT &&
                 st.error().message.find("beyond the end of file diff (size") != std::string::npos,
             "an access past the end must fail with EFAULT");
    } else {
      expect(st.has_value(), "an access inside the file must succeed");
    }
    if (!w) {
      auto diff = std::mismatch(got.begin(), got.begin() + static_cast<long>(ok_bytes), rm.addr + off);
      const uint64_t at = static_cast<uint64_t>(diff.first - got.begin());
      expect(at == ok_bytes, fmt::format("mapping contents differ at file offset {:#x}: real "
                                         "{:#x}, ours {:#x}",
                                         file_off + at, at < ok_bytes ? *diff.second : 0,
                                         at < ok_bytes ? *diff.first : 0));
    }
  }

  FileSystem fs_;
  std::mt19937_64 rng_;
  uint64_t seed_;
  int real_ = -1, real_ro_ = -1;
  std::shared_ptr<RegularFile> ours_;
  std::vector<RealMap> real_maps_;
  std::vector<std::unique_ptr<HostMapping>> our_maps_;
  std::vector<std::string> log_;
  bool planned_ = false;
};

}  // namespace

TEST_CASE("a regular file behaves as the kernel's memfd, errno for errno", "[tmpfs]") {
  auto memory = test::make_memory();
  const uint64_t base = Catch::rngSeed() ? Catch::rngSeed() : 20261202;
  std::bitset<32> seen;
  int ops = 0;
  for (int k = 0; k < kSeeds; k++) {
    const uint64_t seed = base * 1000 + static_cast<uint64_t>(k);
    Differential d(*memory, seed);
    d.log(fmt::format("seed {}", seed));
    std::mt19937_64 plan_rng(seed ^ 0x5eed);
    const int plan_at = static_cast<int>(plan_rng() % (kOpsPerSeed / 2));
    for (int i = 0; i < kOpsPerSeed; i++) {
      d.step(i == plan_at ? k % 32 : -1);
      seen.set(d.seals() & 0x1f);
      ops++;
      if (i % 10 == 9) d.compare_all();
    }
    d.compare_all();
  }
  INFO("seed base " << base << ", " << ops << " operations");
  CHECK(seen.all());
  // Every kind of operation both succeeded and failed, with every errno a
  // memfd gives for them: a generator that never reaches an error would
  // compare nothing.
  for (const char* kind : {"write", "read", "truncate", "fallocate", "add_seals", "map",
                           "map write", "map read"}) {
    INFO(kind);
    CHECK(Differential::successes[kind] > 0);
    CHECK(Differential::failures[kind] > 0);
  }
  for (int e : {EINVAL, EPERM, EBUSY, EFBIG, EOVERFLOW}) {
    INFO("errno " << e);
    CHECK(Differential::errnos.contains(e));
  }
  memory->check_invariants();
}
