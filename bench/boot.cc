#include "bench/boot.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <vector>

#include "bench/stats.h"
#include "bench/table.h"

extern char** environ;

namespace kvmem {
namespace {

struct Sample {
  double wall_ms;
  uint64_t max_rss_bytes;
  uint64_t guest_resident_bytes;
};

Result<std::string> self_path() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n < 0) return sys_fail("cannot find the kvmem binary", "readlink /proc/self/exe", errno);
  return std::string(buf, static_cast<size_t>(n));
}

Result<Sample> one_run(const std::string& self, const std::string& config) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) < 0) return sys_fail("cannot make a pipe", "pipe2", errno);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  std::string a0 = "kvmem", a1 = "run", a2 = "--json";
  std::string a3 = config;
  char* argv[] = {a0.data(), a1.data(), a2.data(), a3.data(), nullptr};
  const auto start = std::chrono::steady_clock::now();
  pid_t pid;
  int err = posix_spawn(&pid, self.c_str(), &fa, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  close(out[1]);
  if (err) {
    close(out[0]);
    return sys_fail("cannot start kvmem", "posix_spawn", err);
  }
  std::string report;
  char buf[4096];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;) report.append(buf, static_cast<size_t>(n));
  close(out[0]);
  int status = 0;
  rusage ru{};
  if (wait4(pid, &status, 0, &ru) < 0) return sys_fail("cannot reap kvmem", "wait4", errno);
  const double wall = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return fail("kvmem run {} did not succeed ({}): {}", config, describe_wait_status(status), report);
  auto j = nlohmann::json::parse(report, nullptr, false);
  if (j.is_discarded() || !j.contains("vms") || !j["vms"].is_array())
    return fail("kvmem run --json {} printed no usable report: {}", config, report);
  uint64_t guest = 0;
  for (const auto& vm : j["vms"])
    if (vm.is_object() && vm.contains("committed_bytes") && vm["committed_bytes"].is_number_unsigned())
      guest += vm["committed_bytes"].get<uint64_t>();
  return Sample{wall, static_cast<uint64_t>(ru.ru_maxrss) * 1024, guest};
}

}  // namespace

std::string default_boot_config() {
  const std::string rel = "configs/hello.json";
  if (access(rel.c_str(), R_OK) == 0) return rel;
  auto self = self_path();
  if (!self) return rel;
  const std::string dir = self->substr(0, self->find_last_of('/'));  // .../build
  return dir.substr(0, dir.find_last_of('/') + 1) + rel;
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = sigabbrev_np(WTERMSIG(status));
    return name ? fmt::format("killed by signal SIG{}", name) : fmt::format("killed by signal {}", WTERMSIG(status));
  }
  return fmt::format("wait status {:#x}", status);
}

Result<nlohmann::json> run_boot_bench(const BootBenchOptions& o) {
  if (o.runs == 0) return fail("--runs must be at least 1");
  auto self = self_path();
  if (!self) return std::unexpected(self.error());
  for (unsigned i = 0; i < o.warmup; i++)
    if (auto s = one_run(*self, o.config); !s) return std::unexpected(s.error());
  std::vector<double> walls;
  uint64_t max_rss = 0, max_beyond = 0, guest = 0;
  for (unsigned i = 0; i < o.runs; i++) {
    auto s = one_run(*self, o.config);
    if (!s) return std::unexpected(s.error());
    walls.push_back(s->wall_ms);
    max_rss = std::max(max_rss, s->max_rss_bytes);
    guest = std::max(guest, s->guest_resident_bytes);
    max_beyond = std::max(max_beyond, s->max_rss_bytes - std::min(s->max_rss_bytes, s->guest_resident_bytes));
  }
  const Summary wall = summarize(std::move(walls));
  return nlohmann::json{{"bench", "boot"},
                        {"config", o.config},
                        {"runs", o.runs},
                        {"wall_ms_median", wall.p50},
                        {"wall_ms_p10", wall.p10},
                        {"wall_ms_p90", wall.p90},
                        {"wall_ms_min", wall.min},
                        {"max_rss_bytes", max_rss},
                        {"guest_resident_bytes", guest},
                        {"rss_beyond_guest_bytes", max_beyond}};
}

std::string format_boot_bench(const nlohmann::json& r) {
  auto mib = [](uint64_t b) { return static_cast<double>(b) / (1 << 20); };
  Table wall({{.header = "", .align = TableColumn::Align::kLeft},
              {"median", "ms"},
              {"p10", "ms"},
              {"p90", "ms"},
              {"min", "ms"}});
  wall.add_row({"wall time", fixed(r["wall_ms_median"].get<double>(), 2), fixed(r["wall_ms_p10"].get<double>(), 2),
                fixed(r["wall_ms_p90"].get<double>(), 2), fixed(r["wall_ms_min"].get<double>(), 2)});
  return fmt::format("boot: kvmem run {} x{}\n", r["config"].get<std::string>(), r["runs"].get<unsigned>()) +
         wall.render() +
         fmt::format("  peak RSS   {:.2f} MiB, of which guest RAM {:.2f} MiB; beyond guest RAM {:.2f} MiB\n",
                     mib(r["max_rss_bytes"].get<uint64_t>()), mib(r["guest_resident_bytes"].get<uint64_t>()),
                     mib(r["rss_beyond_guest_bytes"].get<uint64_t>()));
}

}  // namespace kvmem
