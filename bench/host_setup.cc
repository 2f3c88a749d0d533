#include "bench/host_setup.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace kvmem {
namespace {

constexpr uint64_t k2M = 2ull << 20;
constexpr const char* kShmemEnabled = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
constexpr const char* kNrHugepages = "/proc/sys/vm/nr_hugepages";
constexpr const char* kMeminfo = "/proc/meminfo";

// What the signal handler writes back: fixed buffers, filled before the
// handler is installed and cleared after it is removed.
constexpr int kMaxSaved = 4;
struct SignalSaved {
  char path[512];
  char value[128];
};
SignalSaved g_saved[kMaxSaved];
std::atomic<int> g_count{0};
struct sigaction g_old_actions[3];
constexpr int kSignals[3] = {SIGINT, SIGTERM, SIGHUP};

void write_back_all() {
  const int n = g_count.load();
  for (int i = n - 1; i >= 0; i--) {
    const int fd = ::open(g_saved[i].path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0) continue;
    const ssize_t w = ::write(fd, g_saved[i].value, ::strlen(g_saved[i].value));
    (void)w;
    ::close(fd);
  }
}

void on_signal(int sig) {
  write_back_all();
  g_count.store(0);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

std::string read_line(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  return line;
}

// "always within_size [advise] never": the bracketed word.
std::string selected(const std::string& line) {
  const size_t open = line.find('['), close = line.find(']');
  if (open == std::string::npos || close == std::string::npos || close < open) return line;
  return line.substr(open + 1, close - open - 1);
}

long meminfo(const std::string& path, const std::string& key) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string k;
    long v = -1;
    if (in >> k >> v && k == key + ":") return v;
  }
  return -1;
}

Status write_value(const std::string& path, const std::string& value) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0) return sys_fail(fmt::format("cannot set {} for --setup-host (it needs root)", path), "open", errno);
  const ssize_t w = ::write(fd, value.data(), value.size());
  const int err = errno;
  ::close(fd);
  if (w != static_cast<ssize_t>(value.size()))
    return sys_fail(fmt::format("cannot write \"{}\" to {}", value, path), "write", w < 0 ? err : EIO);
  return {};
}

}  // namespace

Status HostSetup::set(const std::string& path, const std::string& old_value, const std::string& value,
                      const char* name) {
  if (saved_.size() >= kMaxSaved || path.size() >= sizeof(g_saved[0].path) ||
      old_value.size() >= sizeof(g_saved[0].value))
    return fail("--setup-host: cannot keep the old value of {} to restore it", path);
  // Saved for the handler before the write: a signal between the two
  // writes back a value that is still there, which is harmless.
  const int i = g_count.load();
  std::snprintf(g_saved[i].path, sizeof(g_saved[i].path), "%s", path.c_str());
  std::snprintf(g_saved[i].value, sizeof(g_saved[i].value), "%s", old_value.c_str());
  g_count.store(i + 1);
  saved_.push_back({path, old_value});
  KVMEM_TRY(write_value(path, value));
  changes_.push_back(fmt::format("{}: {} -> {}", name, old_value, value));
  return {};
}

Result<std::unique_ptr<HostSetup>> HostSetup::apply(const HostNeeds& needs, const std::string& root) {
  if (g_count.load() != 0) return fail("--setup-host: another host setup is active in this process");
  std::unique_ptr<HostSetup> s(new HostSetup());
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int i = 0; i < 3; i++) sigaction(kSignals[i], &sa, &g_old_actions[i]);
  if (needs.thp) {
    const std::string path = root + kShmemEnabled;
    const std::string mode = selected(read_line(path));
    if (mode.empty()) return fail("--setup-host: cannot read the shmem THP policy from {}", path);
    if (mode == "never" || mode == "deny") KVMEM_TRY(s->set(path, mode, "advise", "shmem_enabled"));
  }
  if (needs.hugetlb_bytes) {
    const std::string path = root + kNrHugepages;
    const long total = meminfo(root + kMeminfo, "HugePages_Total");
    const long free_pages = meminfo(root + kMeminfo, "HugePages_Free");
    const std::string nr = read_line(path);
    if (total < 0 || free_pages < 0 || nr.empty())
      return fail("--setup-host: cannot read the huge page pool ({} and {})", root + kMeminfo, path);
    const long want = static_cast<long>((needs.hugetlb_bytes + k2M - 1) / k2M);
    if (free_pages < want) {
      const long asked = total + (want - free_pages);
      KVMEM_TRY(s->set(path, nr, std::to_string(asked), "nr_hugepages"));
      // The kernel grows the pool as far as it can: reading back says how far.
      const long got = std::atol(read_line(path).c_str());
      if (got < asked)
        return fail("--setup-host: asked {} for {} huge pages, but the pool holds {} (memory is short)", path,
                    asked, got);
    }
  }
  return s;
}

void HostSetup::restore() {
  for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) (void)write_value(it->path, it->old_value);
  saved_.clear();
}

HostSetup::~HostSetup() {
  restore();
  g_count.store(0);
  for (int i = 0; i < 3; i++) sigaction(kSignals[i], &g_old_actions[i], nullptr);
}

}  // namespace kvmem
