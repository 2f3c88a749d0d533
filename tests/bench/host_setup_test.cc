// --setup-host (bench/host_setup.h) on a directory of fake settings files:
// applied, then put back when the HostSetup goes, when applying fails
// half-way, and when a signal ends the process.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

#include "bench/host_setup.h"

using namespace kvmem;
namespace fs = std::filesystem;

namespace {

struct FakeHost {
  fs::path root;
  FakeHost(const std::string& shmem, long nr, long total, long free_pages) {
    char tmpl[] = "/tmp/kvmem-host-setup-XXXXXX";
    root = ::mkdtemp(tmpl);
    fs::create_directories(root / "sys/kernel/mm/transparent_hugepage");
    fs::create_directories(root / "proc/sys/vm");
    put("sys/kernel/mm/transparent_hugepage/shmem_enabled", shmem + "\n");
    put("proc/sys/vm/nr_hugepages", std::to_string(nr) + "\n");
    put("proc/meminfo", fmt::format("MemTotal: 1000 kB\nHugePages_Total: {}\nHugePages_Free: {}\n", total, free_pages));
  }
  ~FakeHost() { fs::remove_all(root); }
  void put(const std::string& rel, const std::string& text) { std::ofstream(root / rel) << text; }
  std::string get(const std::string& rel) const {
    std::ifstream f(root / rel);
    std::string line;
    std::getline(f, line);
    return line;
  }
  std::string prefix() const { return root.string(); }
};

}  // namespace

TEST_CASE("setup-host turns on shmem THP and reserves huge pages, and puts both back", "[bench-fault]") {
  FakeHost h("always within_size advise [never] deny force", 0, 0, 0);
  {
    auto s = HostSetup::apply({.thp = true, .hugetlb_bytes = 64ull << 20}, h.prefix());
    REQUIRE(s);
    CHECK(h.get("sys/kernel/mm/transparent_hugepage/shmem_enabled") == "advise");
    CHECK(h.get("proc/sys/vm/nr_hugepages") == "32");
    REQUIRE((*s)->changes().size() == 2);
    CHECK((*s)->changes()[0] == "shmem_enabled: never -> advise");
    CHECK((*s)->changes()[1] == "nr_hugepages: 0 -> 32");
  }
  CHECK(h.get("sys/kernel/mm/transparent_hugepage/shmem_enabled") == "never");
  CHECK(h.get("proc/sys/vm/nr_hugepages") == "0");
}

TEST_CASE("setup-host changes nothing the host already allows", "[bench-fault]") {
  FakeHost h("always within_size [advise] never deny force", 40, 40, 40);
  auto s = HostSetup::apply({.thp = true, .hugetlb_bytes = 64ull << 20}, h.prefix());
  INFO((s ? "" : s.error().message));
  REQUIRE(s);
  CHECK((*s)->changes().empty());
  CHECK(h.get("proc/sys/vm/nr_hugepages") == "40");
}

TEST_CASE("setup-host that fails half-way puts back what it changed and names the file", "[bench-fault]") {
  FakeHost h("[never]", 0, 0, 0);
  // The pool's file cannot be read (a directory stands in its place): the
  // error names it, and the THP policy already changed comes back.
  fs::remove(h.root / "proc/sys/vm/nr_hugepages");
  fs::create_directory(h.root / "proc/sys/vm/nr_hugepages");
  auto s = HostSetup::apply({.thp = true, .hugetlb_bytes = 64ull << 20}, h.prefix());
  REQUIRE_FALSE(s);
  CHECK_THAT(s.error().message, Catch::Contains("nr_hugepages"));
  CHECK(h.get("sys/kernel/mm/transparent_hugepage/shmem_enabled") == "never");
  // And a second setup may follow a failed one.
  fs::remove(h.root / "proc/sys/vm/nr_hugepages");
  h.put("proc/sys/vm/nr_hugepages", "0\n");
  CHECK(HostSetup::apply({.thp = true}, h.prefix()));
  CHECK(h.get("sys/kernel/mm/transparent_hugepage/shmem_enabled") == "never");
}

TEST_CASE("setup-host puts the settings back when a signal ends the process", "[bench-fault]") {
  FakeHost h("[never]", 0, 0, 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    auto s = HostSetup::apply({.thp = true}, h.prefix());
    if (!s || h.get("sys/kernel/mm/transparent_hugepage/shmem_enabled") != "advise") ::_exit(7);
    ::raise(SIGTERM);
    ::_exit(8);  // not reached: SIGTERM's default action ends the process
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGTERM);
  CHECK(h.get("sys/kernel/mm/transparent_hugepage/shmem_enabled") == "never");
}
