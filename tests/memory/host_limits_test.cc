// Finding and reading the memory cgroup's limit, from /proc-style text over
// a cgroup tree the test makes in a directory of its own.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "memory/host_limits.h"

using namespace kvmem;
namespace fs = std::filesystem;

namespace {

// A directory tree removed when the test ends.
class FakeTree {
 public:
  FakeTree() {
    char tmpl[] = "/tmp/kvmem-cgroup-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    root_ = tmpl;
  }
  ~FakeTree() { fs::remove_all(root_); }
  // Writes `text` to root/path, making the directories on the way.
  void write(const std::string& path, const std::string& text) {
    fs::path p = fs::path(root_) / path;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  const std::string& root() const { return root_; }

 private:
  std::string root_;
};

std::string v2_mountinfo(const std::string& point, const std::string& root = "/") {
  return "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
         "30 23 0:26 " + root + " " + point + " rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate\n";
}

std::string v1_mountinfo(const std::string& point) {
  return "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
         "32 31 0:29 / /x/cpu rw,relatime - cgroup cgroup rw,cpu\n"
         "35 31 0:32 / " + point + " rw,relatime - cgroup cgroup rw,memory\n";
}

}  // namespace

TEST_CASE("a v2 cgroup's memory.max binds, with memory.high as the softer bound", "[memory][limits]") {
  FakeTree t;
  t.write("a/b/memory.max", "268435456\n");
  t.write("a/b/memory.high", "max\n");
  t.write("a/memory.max", "max\n");
  auto limit = find_memory_limit("0::/a/b\n", v2_mountinfo(t.root()));
  REQUIRE(limit);
  REQUIRE(limit->bounds.size() == 1);
  const CgroupMemoryBound& b = limit->tightest();
  CHECK(b.bytes == 256ull << 20);
  CHECK(b.file == "memory.max");
  CHECK(b.dir == t.root() + "/a/b");
  CHECK(b.usage_path() == t.root() + "/a/b/memory.current");
  CHECK(b.describe() == "the memory cgroup limit of 256 MiB (memory.max of " + t.root() + "/a/b)");

  t.write("a/b/memory.high", "134217728\n");
  limit = find_memory_limit("0::/a/b\n", v2_mountinfo(t.root()));
  REQUIRE(limit);
  CHECK(limit->tightest().bytes == 128ull << 20);
  CHECK(limit->tightest().file == "memory.high");
  CHECK(limit->tightest().describe().find("high mark of 128 MiB") != std::string::npos);
}

TEST_CASE("every ancestor's limit binds too, and \"max\" or a missing file means none", "[memory][limits]") {
  FakeTree t;
  t.write("a/b/c/memory.max", "max\n");
  t.write("a/b/memory.max", "1073741824\n");  // 1 GiB on the parent
  t.write("a/memory.max", "536870912\n");     // 512 MiB on the grandparent
  // The root cgroup has no memory.max at all.
  auto limit = find_memory_limit("0::/a/b/c\n", v2_mountinfo(t.root()));
  REQUIRE(limit);
  REQUIRE(limit->bounds.size() == 2);
  CHECK(limit->bounds[0].dir == t.root() + "/a/b");
  CHECK(limit->tightest().bytes == 512ull << 20);
  CHECK(limit->tightest().dir == t.root() + "/a");

  FakeTree none;
  none.write("x/memory.max", "max\n");
  auto unlimited = find_memory_limit("0::/x\n", v2_mountinfo(none.root()));
  REQUIRE(unlimited);
  CHECK(unlimited->none());
}

TEST_CASE("a v1 memory cgroup's limit_in_bytes binds; its 'unlimited' is none", "[memory][limits]") {
  FakeTree t;
  t.write("memory/job/memory.limit_in_bytes", "9223372036854771712\n");
  t.write("memory/memory.limit_in_bytes", "9223372036854771712\n");
  const std::string cgroup = "5:cpu:/job\n4:memory:/job\n0::/\n";
  auto limit = find_memory_limit(cgroup, v1_mountinfo(t.root() + "/memory"));
  REQUIRE(limit);
  CHECK(limit->none());

  t.write("memory/job/memory.limit_in_bytes", "268435456\n");
  limit = find_memory_limit(cgroup, v1_mountinfo(t.root() + "/memory"));
  REQUIRE(limit);
  REQUIRE(limit->bounds.size() == 1);
  CHECK(limit->tightest().bytes == 256ull << 20);
  CHECK(limit->tightest().usage_path() == t.root() + "/memory/job/memory.usage_in_bytes");
  CHECK(!limit->tightest().v2);
}

TEST_CASE("a mount of part of the hierarchy, and an escaped mount point, are followed", "[memory][limits]") {
  FakeTree t;
  t.write("with space/memory.max", "1048576000\n");
  // A container sees /docker/abc as its mount's root; its own cgroup is /docker/abc.
  const std::string point = t.root() + "/with\\040space";
  auto limit = find_memory_limit("0::/docker/abc\n", v2_mountinfo(point, "/docker/abc"));
  REQUIRE(limit);
  REQUIRE(limit->bounds.size() == 1);
  CHECK(limit->tightest().dir == t.root() + "/with space");
  // A cgroup the mount does not show has no limit that can be read.
  auto elsewhere = find_memory_limit("0::/other\n", v2_mountinfo(point, "/docker/abc"));
  REQUIRE(elsewhere);
  CHECK(elsewhere->none());
}

TEST_CASE("a limit file that is not a number is an error naming it", "[memory][limits]") {
  FakeTree t;
  t.write("a/memory.max", "lots\n");
  auto limit = find_memory_limit("0::/a\n", v2_mountinfo(t.root()));
  REQUIRE(!limit);
  CHECK(limit.error().message.find(t.root() + "/a/memory.max") != std::string::npos);
  CHECK(limit.error().message.find("not a number") != std::string::npos);
}

TEST_CASE("usage and reclaimable page cache are read from the cgroup's files", "[memory][limits]") {
  FakeTree t;
  t.write("a/memory.max", "268435456\n");
  t.write("a/memory.current", "104857600\n");
  t.write("a/memory.stat", "anon 1000\nfile 90000000\nactive_file 4096\ninactive_file 8192\nshmem 80000000\n");
  auto limit = find_memory_limit("0::/a\n", v2_mountinfo(t.root()));
  REQUIRE(limit);
  REQUIRE(!limit->none());
  auto usage = read_cgroup_usage(limit->tightest());
  REQUIRE(usage);
  CHECK(*usage == 100ull << 20);
  auto cache = read_cgroup_reclaimable(limit->tightest());
  REQUIRE(cache);
  CHECK(*cache == 4096 + 8192);  // shmem is not on the file LRUs

  t.write("a/memory.current", "?\n");
  auto bad = read_cgroup_usage(limit->tightest());
  REQUIRE(!bad);
  CHECK(bad.error().message.find("memory.current") != std::string::npos);
}

TEST_CASE("this process's own limit can be read", "[memory][limits]") {
  auto limit = host_memory_limit();
  REQUIRE(limit);
  for (const CgroupMemoryBound& b : limit->bounds) {
    INFO(b.describe());
    CHECK(b.bytes > 0);
    CHECK(read_cgroup_usage(b));
  }
  auto cgroups = host_memory_cgroups();
  REQUIRE(cgroups);
}
