#include "memory/host_limits.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <optional>
#include <span>

#include "base/check.h"

namespace kvmem {
namespace {

// cgroup files are a line or two; memory.stat is a few dozen lines. Reading
// more than this means the file is not what it claims to be.
constexpr size_t kMaxCgroupFile = 64 << 10;
// /proc/self/mountinfo of a busy container can be long, but not this long.
constexpr size_t kMaxProcFile = 4 << 20;

// v1 says "no limit" with PAGE_COUNTER_MAX pages (0x7ffffffffffff000 with
// 4 KiB pages); anything this large is no limit on any real machine.
constexpr uint64_t kNoLimitAtOrAbove = uint64_t{1} << 62;

// The whole file, or nullopt when it does not exist.
Result<std::optional<std::string>> read_small_file(const std::string& path, size_t max) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return std::optional<std::string>();
    return sys_fail(fmt::format("cannot read {}", path), "open", errno);
  }
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      close(fd);
      return sys_fail(fmt::format("cannot read {}", path), "read", err);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > max) {
      close(fd);
      return fail("cannot read {}: it is longer than {} bytes", path, max);
    }
  }
  close(fd);
  return std::optional<std::string>(std::move(text));
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  return s;
}

std::optional<uint64_t> parse_bytes(std::string_view s) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// A limit file's bound: nullopt for none ("max", or v1's huge value) and
// for a file that does not exist.
Result<std::optional<uint64_t>> read_limit(const std::string& dir, const char* name) {
  const std::string path = dir + "/" + name;
  auto text = read_small_file(path, kMaxCgroupFile);
  if (!text) return std::unexpected(text.error().context("cannot read the memory cgroup's limit"));
  if (!*text) return std::optional<uint64_t>();
  std::string_view v = trim(**text);
  if (v == "max") return std::optional<uint64_t>();
  auto bytes = parse_bytes(v);
  if (!bytes)
    return fail("cannot read the memory cgroup's limit: {} holds \"{:.40}\", not a number of bytes or \"max\"",
                path, v);
  if (*bytes >= kNoLimitAtOrAbove) return std::optional<uint64_t>();
  return std::optional<uint64_t>(*bytes);
}

// Splits on single spaces; mountinfo has no empty fields.
std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  while (!line.empty()) {
    size_t sp = line.find(' ');
    out.push_back(line.substr(0, sp));
    if (sp == std::string_view::npos) break;
    line.remove_prefix(sp + 1);
  }
  return out;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '\\' && s.size() - i >= 4) {
      const char a = s[i + 1], b = s[i + 2], c = s[i + 3];
      if (a >= '0' && a <= '3' && b >= '0' && b <= '7' && c >= '0' && c <= '7') {
        out.push_back(static_cast<char>((a - '0') * 64 + (b - '0') * 8 + (c - '0')));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

bool has_option(std::string_view list, std::string_view option) {
  while (!list.empty()) {
    size_t comma = list.find(',');
    if (list.substr(0, comma) == option) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

struct Mount {
  std::string root, point;
};

// The mount that shows the memory hierarchy: cgroup2, or a v1 cgroup mount
// with the memory controller.
std::vector<Mount> memory_mounts(std::string_view mountinfo, bool v2) {
  std::vector<Mount> out;
  while (!mountinfo.empty()) {
    size_t nl = mountinfo.find('\n');
    std::string_view line = mountinfo.substr(0, nl);
    mountinfo.remove_prefix(nl == std::string_view::npos ? mountinfo.size() : nl + 1);
    std::vector<std::string_view> f = fields(line);
    auto dash = std::find(f.begin(), f.end(), std::string_view("-"));
    if (f.size() < 6 || dash == f.end() || f.end() - dash < 4) continue;
    const std::string_view type = dash[1], super = dash[3];
    if (v2 ? type != "cgroup2" : (type != "cgroup" || !has_option(super, "memory"))) continue;
    out.push_back(Mount{unescape(f[3]), unescape(f[4])});
  }
  return out;
}

// Where the cgroup at `path` (as /proc/self/cgroup names it) lives under
// the mount, or nullopt when the mount does not show it.
std::optional<std::string> relative_to(const Mount& m, const std::string& path) {
  if (m.root == "/") return path;
  if (path == m.root) return std::string("/");
  if (path.size() > m.root.size() && path.compare(0, m.root.size(), m.root) == 0 && path[m.root.size()] == '/')
    return path.substr(m.root.size());
  return std::nullopt;
}

// Adds the bound of every level from the cgroup up to its mount's root.
Status add_levels(const MemoryCgroup& cg, MemoryLimit* out) {
  static constexpr const char* kV2Files[] = {"memory.max", "memory.high"};
  static constexpr const char* kV1Files[] = {"memory.limit_in_bytes"};
  for (std::string dir = cg.dir;;) {
    std::optional<CgroupMemoryBound> level;
    for (const char* name : cg.v2 ? std::span<const char* const>(kV2Files) : std::span<const char* const>(kV1Files)) {
      auto bound = read_limit(dir, name);
      if (!bound) return std::unexpected(bound.error());
      if (*bound && (!level || **bound < level->bytes)) level = CgroupMemoryBound{dir, name, **bound, cg.v2};
    }
    if (level) out->bounds.push_back(*level);
    if (dir.size() <= cg.mount.size()) return {};
    dir.resize(dir.find_last_of('/'));
  }
}

std::string mib_text(uint64_t bytes) {
  if (bytes % (1 << 20) == 0) return fmt::format("{} MiB", bytes >> 20);
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20));
}

}  // namespace

std::string CgroupMemoryBound::usage_path() const {
  return dir + (v2 ? "/memory.current" : "/memory.usage_in_bytes");
}

std::string CgroupMemoryBound::stat_path() const { return dir + "/memory.stat"; }

std::string CgroupMemoryBound::describe() const {
  return fmt::format("the memory cgroup {} of {} ({} of {})", file == "memory.high" ? "high mark" : "limit",
                     mib_text(bytes), file, dir);
}

const CgroupMemoryBound& MemoryLimit::tightest() const {
  KVMEM_CHECK(!bounds.empty(), "the tightest of no memory limits");
  return *std::min_element(bounds.begin(), bounds.end(),
                           [](const CgroupMemoryBound& a, const CgroupMemoryBound& b) { return a.bytes < b.bytes; });
}

std::vector<MemoryCgroup> find_memory_cgroups(std::string_view proc_cgroup, std::string_view mountinfo) {
  std::vector<MemoryCgroup> out;
  while (!proc_cgroup.empty()) {
    size_t nl = proc_cgroup.find('\n');
    std::string_view line = proc_cgroup.substr(0, nl);
    proc_cgroup.remove_prefix(nl == std::string_view::npos ? proc_cgroup.size() : nl + 1);
    // hierarchy-ID:controller-list:cgroup-path; the path may hold ':'.
    size_t c1 = line.find(':');
    size_t c2 = c1 == std::string_view::npos ? c1 : line.find(':', c1 + 1);
    if (c2 == std::string_view::npos) continue;
    const std::string_view id = line.substr(0, c1), controllers = line.substr(c1 + 1, c2 - c1 - 1);
    const std::string path(line.substr(c2 + 1));
    const bool v2 = id == "0" && controllers.empty();
    if (!v2 && !has_option(controllers, "memory")) continue;
    if (path.empty() || path[0] != '/') continue;
    for (const Mount& m : memory_mounts(mountinfo, v2)) {
      auto rel = relative_to(m, path);
      if (!rel) continue;
      std::string dir = *rel == "/" ? m.point : m.point == "/" ? *rel : m.point + *rel;
      out.push_back(MemoryCgroup{std::move(dir), m.point, v2});
      break;  // one mount of a hierarchy is enough
    }
  }
  return out;
}

Result<MemoryLimit> find_memory_limit(std::string_view proc_cgroup, std::string_view mountinfo) {
  MemoryLimit limit;
  for (const MemoryCgroup& cg : find_memory_cgroups(proc_cgroup, mountinfo))
    if (auto s = add_levels(cg, &limit); !s) return std::unexpected(s.error());
  return limit;
}

Result<MemoryLimit> host_memory_limit() {
  auto cgroup = read_small_file("/proc/self/cgroup", kMaxProcFile);
  if (!cgroup) return std::unexpected(cgroup.error());
  auto mountinfo = read_small_file("/proc/self/mountinfo", kMaxProcFile);
  if (!mountinfo) return std::unexpected(mountinfo.error());
  if (!*cgroup || !*mountinfo) return MemoryLimit{};
  return find_memory_limit(**cgroup, **mountinfo);
}

Result<std::vector<MemoryCgroup>> host_memory_cgroups() {
  auto cgroup = read_small_file("/proc/self/cgroup", kMaxProcFile);
  if (!cgroup) return std::unexpected(cgroup.error());
  auto mountinfo = read_small_file("/proc/self/mountinfo", kMaxProcFile);
  if (!mountinfo) return std::unexpected(mountinfo.error());
  if (!*cgroup || !*mountinfo) return std::vector<MemoryCgroup>{};
  return find_memory_cgroups(**cgroup, **mountinfo);
}

Result<uint64_t> read_cgroup_usage(const CgroupMemoryBound& bound) {
  const std::string path = bound.usage_path();
  auto text = read_small_file(path, kMaxCgroupFile);
  if (!text) return std::unexpected(text.error().context("cannot read the memory cgroup's usage"));
  if (!*text) return fail("cannot read the memory cgroup's usage: {} does not exist", path);
  auto bytes = parse_bytes(trim(**text));
  if (!bytes) return fail("cannot read the memory cgroup's usage: {} does not hold a number of bytes", path);
  return *bytes;
}

Result<uint64_t> read_cgroup_reclaimable(const CgroupMemoryBound& bound) {
  auto text = read_small_file(bound.stat_path(), kMaxCgroupFile);
  if (!text) return std::unexpected(text.error().context("cannot read the memory cgroup's statistics"));
  if (!*text) return uint64_t{0};
  // v1's usage counts the subtree, and so do its total_ counters; v2's
  // counters always do.
  const std::string_view active = bound.v2 ? "active_file" : "total_active_file";
  const std::string_view inactive = bound.v2 ? "inactive_file" : "total_inactive_file";
  uint64_t sum = 0;
  std::string_view rest = **text;
  while (!rest.empty()) {
    size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
    size_t sp = line.find(' ');
    if (sp == std::string_view::npos) continue;
    const std::string_view key = line.substr(0, sp);
    if (key != active && key != inactive) continue;
    if (auto v = parse_bytes(trim(line.substr(sp + 1)))) sum += *v;
  }
  return sum;
}

}  // namespace kvmem
