#include "config/vm_config.h"

#include "guest/layout.h"

#include <cerrno>
#include <charconv>
#include <cstring>

#include <nlohmann/json.hpp>

#include "config/fields.h"
#include "config/steps.h"
#include "memory/tmpfs/file_system.h"

namespace kvmem {
namespace {

using namespace json_fields;

using json = nlohmann::json;

bool valid_name(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

}  // namespace

Result<uint64_t> parse_size_string(std::string_view s) {
  std::string_view digits = s;
  uint64_t mult = 1;
  if (!digits.empty()) {
    switch (digits.back()) {
      case 'K': case 'k': mult = 1ull << 10; break;
      case 'M': case 'm': mult = 1ull << 20; break;
      case 'G': case 'g': mult = 1ull << 30; break;
      case 'T': case 't': mult = 1ull << 40; break;
      default: break;
    }
    if (mult != 1) digits.remove_suffix(1);
  }
  uint64_t v = 0;
  const std::errc ec = json_fields::parse_unsigned(digits, &v);
  if (ec == std::errc::invalid_argument)
    return fail("\"{}\" is not a size (use an integer, or a string like \"64M\" or \"0x200000\")", s);
  if (ec == std::errc::result_out_of_range || v > UINT64_MAX / mult)
    return fail("\"{}\" overflows 64 bits", s);
  return v * mult;
}

namespace {

Result<WindowConfig> parse_window(const json& j, const Ptr& p, const std::vector<FileConfig>& files, uint64_t ram) {
  KVMEM_TRY(check_keys(j, p, {"file", "at", "offset", "length", "writable"}));
  WindowConfig w;
  if (!j.contains("file")) return p.fail("missing required key \"file\"");
  w.file = KVMEM_TRY(string_value(j.at("file"), p / "file"));
  if (std::none_of(files.begin(), files.end(), [&](const FileConfig& f) { return f.name == w.file; }))
    return (p / "file").fail("no file \"{}\" in the config's \"files\"", w.file);
  w.at = KVMEM_TRY(required_size(j, p, "at"));
  w.length = KVMEM_TRY(required_size(j, p, "length"));
  if (j.contains("offset")) w.offset = KVMEM_TRY(size_value(j.at("offset"), p / "offset"));
  if (j.contains("writable")) w.writable = KVMEM_TRY(bool_value(j.at("writable"), p / "writable"));
  if (w.at % kPageSize) return (p / "at").fail("{:#x} is not a multiple of the page size (4K)", w.at);
  if (w.offset % kPageSize) return (p / "offset").fail("{:#x} is not a multiple of the page size (4K)", w.offset);
  if (w.length == 0 || w.length % kPageSize)
    return (p / "length").fail("must be a non-zero multiple of the page size (4K), found {:#x}", w.length);
  if (w.at < ram) return (p / "at").fail("{:#x} lies in RAM [0x0, {:#x}): a window goes above RAM", w.at, ram);
  if (w.at > guest::kMaxGuestPhysical || w.length > guest::kMaxGuestPhysical - w.at)
    return (p / "length").fail("the window at {:#x} of {:#x} bytes runs past {:#x}, as far as the guest's page tables reach",
                               w.at, w.length, guest::kMaxGuestPhysical);
  if (w.offset > tmpfs::kMaxFileSize - w.length)
    return (p / "offset").fail("offset {:#x} + length {:#x} passes the largest file size", w.offset, w.length);
  return w;
}

// "windows": sorted by address on return; overlaps are refused.
Status parse_windows(const json& j, const Ptr& root, const std::vector<FileConfig>& files, VmConfig& c) {
  if (!j.contains("windows")) return {};
  const json& ws = j.at("windows");
  if (!ws.is_array() || ws.size() > kMaxWindows)
    return (root / "windows").fail("expected an array of at most {} windows", kMaxWindows);
  for (size_t i = 0; i < ws.size(); i++) {
    WindowConfig w = KVMEM_TRY(parse_window(ws[i], root / "windows" / i, files, c.memory));
    for (const WindowConfig& o : c.windows)
      if (o.guest().overlaps(w.guest()))
        return (root / "windows" / i).fail("{} overlaps the window {} onto \"{}\"", w.guest(), o.guest(), o.file);
    c.windows.push_back(std::move(w));
  }
  std::sort(c.windows.begin(), c.windows.end(), [](const WindowConfig& a, const WindowConfig& b) { return a.at < b.at; });
  return {};
}

// "backing", "prefault", "prefault_threads", "prefault_chunk", "prefault_lanes":
// where RAM lives and how the host populates it. Needs c.memory.
Status parse_ram_keys(const json& j, const Ptr& root, VmConfig& c) {
  if (j.contains("backing")) {
    const Ptr p = root / "backing";
    const std::string name = KVMEM_TRY(string_value(j.at("backing"), p));
    auto b = parse_ram_backing(name);
    if (!b) return p.fail("unknown backing \"{}\" (expected \"memfd\", \"memfd-thp\", \"hugetlb\" or \"anon\")", name);
    c.backing = *b;
  }
  if (j.contains("prefault")) {
    const Ptr p = root / "prefault";
    const std::string name = KVMEM_TRY(string_value(j.at("prefault"), p));
    auto m = parse_prefault(name);
    if (!m) return p.fail("unknown prefault \"{}\" (expected \"none\", \"eager\" or \"ahead\")", name);
    c.prefault = *m;
  }
  const bool ahead = c.prefault == Prefault::kAhead;
  for (const char* key : {"prefault_threads", "prefault_chunk", "prefault_lanes"})
    if (j.contains(key) && c.prefault == Prefault::kNone)
      return (root / key).fail("means nothing without \"prefault\": \"eager\" or \"ahead\"");
  if (j.contains("prefault_threads")) {
    const Ptr p = root / "prefault_threads";
    if (!ahead) return p.fail("is for \"prefault\": \"ahead\" (eager populates on the VM's own thread)");
    const uint64_t n = KVMEM_TRY(size_value(j.at("prefault_threads"), p));
    if (n > kMaxPrefaultThreads) return p.fail("must be 0 (let kvmem pick) to {}, found {}", kMaxPrefaultThreads, n);
    c.prefault_threads = static_cast<unsigned>(n);
  }
  if (j.contains("prefault_chunk")) {
    const Ptr p = root / "prefault_chunk";
    if (!ahead) return p.fail("is for \"prefault\": \"ahead\"");
    const uint64_t chunk = KVMEM_TRY(size_value(j.at("prefault_chunk"), p));
    if (chunk == 0 || chunk % kPageSize || chunk > c.memory)
      return p.fail("must be a non-zero multiple of 4K no larger than RAM ({:#x}), found {:#x}", c.memory, chunk);
    c.prefault_chunk = chunk;
  }
  if (j.contains("prefault_lanes")) {
    const Ptr p = root / "prefault_lanes";
    const json& ls = j.at("prefault_lanes");
    if (!ls.is_array() || ls.empty() || ls.size() > kMaxPrefaultLanes)
      return p.fail("expected an array of 1..{} lanes, each {{\"at\": ..., \"length\": ...}}", kMaxPrefaultLanes);
    for (size_t i = 0; i < ls.size(); i++) {
      KVMEM_TRY(check_keys(ls[i], p / i, {"at", "length"}));
      const uint64_t at = KVMEM_TRY(required_size(ls[i], p / i, "at"));
      const uint64_t length = KVMEM_TRY(required_size(ls[i], p / i, "length"));
      if (at % kPageSize || length == 0 || length % kPageSize)
        return (p / i).fail("a lane is a non-empty range of whole 4K pages, found at {:#x} length {:#x}", at, length);
      if (at >= c.memory || length > c.memory - at)
        return (p / i).fail("[{:#x}, +{:#x}) runs past RAM ({:#x} bytes)", at, length, c.memory);
      c.prefault_lanes.push_back(GuestRange(at, at + length));
    }
  }
  return {};
}

bool valid_file_name(const std::string& n) {
  if (n.empty() || n.size() > tmpfs::kMaxNameLength) return false;
  for (char c : n)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

Result<uint32_t> parse_seals(const json& j, const Ptr& p) {
  if (!j.is_array()) return p.fail("expected an array of seal names (\"seal\", \"shrink\", \"grow\", \"write\", \"future_write\")");
  uint32_t seals = 0;
  for (size_t i = 0; i < j.size(); i++) {
    std::string name = KVMEM_TRY(string_value(j[i], p / i));
    auto bit = tmpfs::parse_seal(name);
    if (!bit) return (p / i).fail("{}", bit.error().message);
    seals |= *bit;
  }
  return seals;
}

Result<FileConfig> parse_file(const json& j, const Ptr& p) {
  KVMEM_TRY(check_keys(j, p, {"name", "size", "pattern", "seals"}));
  FileConfig f;
  if (!j.contains("name")) return p.fail("missing required key \"name\"");
  f.name = KVMEM_TRY(string_value(j.at("name"), p / "name"));
  if (!valid_file_name(f.name))
    return (p / "name").fail("expected 1 to {} characters of letters, digits, '.', '_' or '-'", tmpfs::kMaxNameLength);
  f.size = KVMEM_TRY(required_size(j, p, "size"));
  if (f.size > kMaxFileBytes) return (p / "size").fail("{:#x} is more than the {} GiB a file may have", f.size, kMaxFileBytes >> 30);
  if (j.contains("pattern")) f.pattern = KVMEM_TRY(parse_pattern(j.at("pattern"), p / "pattern"));
  if (j.contains("seals")) f.seals = KVMEM_TRY(parse_seals(j.at("seals"), p / "seals"));
  return f;
}

// The run's "files" (at the top level of either form).
Result<std::vector<FileConfig>> parse_files(const json& j) {
  std::vector<FileConfig> files;
  if (!j.is_object() || !j.contains("files")) return files;
  const Ptr p = Ptr() / "files";
  const json& fs = j.at("files");
  if (!fs.is_array() || fs.size() > kMaxFiles) return p.fail("expected an array of at most {} files", kMaxFiles);
  uint64_t total = 0;
  for (size_t i = 0; i < fs.size(); i++) {
    FileConfig f = KVMEM_TRY(parse_file(fs[i], p / i));
    for (const FileConfig& o : files)
      if (o.name == f.name) return (p / i / "name").fail("\"{}\" names two files", f.name);
    total += f.size;
    if (total > kMaxFileBytes) return (p / i / "size").fail("the files add up to more than {} GiB", kMaxFileBytes >> 30);
    files.push_back(std::move(f));
  }
  return files;
}

Result<VmConfig> parse_vm_at(const json& j, const Ptr& root, std::string_view default_name,
                             const std::vector<FileConfig>& files, bool top_level) {
  if (auto k = top_level ? check_keys(j, root, {"name", "memory", "vcpus", "timeout_ms", "guest_page_size", "ram_unit",
                                                "windows", "program", "programs", "backing", "prefault",
                                                "prefault_threads", "prefault_chunk", "prefault_lanes", "files"})
                         : check_keys(j, root, {"name", "memory", "vcpus", "timeout_ms", "guest_page_size", "ram_unit",
                                                "windows", "program", "programs", "backing", "prefault",
                                                "prefault_threads", "prefault_chunk", "prefault_lanes"});
      !k)
    return std::unexpected(k.error());
  VmConfig c;
  c.name = default_name;
  if (j.contains("name")) {
    const json& n = j.at("name");
    if (!n.is_string() || !valid_name(n.get<std::string>()))
      return (root / "name").fail("expected 1 to 64 characters of letters, digits, '.', '_' or '-'");
    c.name = n.get<std::string>();
  }
  if (j.contains("guest_page_size")) {
    const json& g = j.at("guest_page_size");
    if (g == "2M") c.page_size = guest::PageSize::k2M;
    else if (g == "1G") c.page_size = guest::PageSize::k1G;
    else return (root / "guest_page_size").fail("expected \"2M\" or \"1G\"");
  }
  auto memory = required_size(j, root, "memory");
  if (!memory) return std::unexpected(memory.error());
  const uint64_t unit = c.page_size == guest::PageSize::k1G ? 1ull << 30 : 2ull << 20;
  if (*memory == 0) return (root / "memory").fail("must be > 0");
  if (*memory % unit != 0)
    return (root / "memory").fail("{:#x} is not a multiple of the guest page size ({})", *memory,
                                  unit == (1ull << 30) ? "1G" : "2M");
  if (*memory > guest::kMaxRamBytes)
    return (root / "memory").fail("{:#x} is more than the {} GiB a guest may have", *memory,
                                  guest::kMaxRamBytes >> 30);
  c.memory = *memory;
  if (j.contains("ram_unit")) {
    auto u = size_value(j.at("ram_unit"), root / "ram_unit");
    if (!u) return std::unexpected(u.error());
    if (*u < (2ull << 20) || *u % (2ull << 20) != 0)
      return (root / "ram_unit").fail("must be a non-zero multiple of 2M, found {:#x}", *u);
    c.ram_unit = *u;
  }
  if (j.contains("vcpus")) {
    auto v = size_value(j.at("vcpus"), root / "vcpus");
    if (!v) return std::unexpected(v.error());
    if (*v < 1 || *v > guest::layout::kMaxVcpus)
      return (root / "vcpus").fail("must be 1..{}, found {}", guest::layout::kMaxVcpus, *v);
    c.vcpus = static_cast<unsigned>(*v);
  }
  if (j.contains("timeout_ms")) {
    auto t = size_value(j.at("timeout_ms"), root / "timeout_ms");
    if (!t) return std::unexpected(t.error());
    if (*t == 0 || *t > kMaxTimeoutMs) return (root / "timeout_ms").fail("must be 1..{}, found {}", kMaxTimeoutMs, *t);
    c.timeout_ms = *t;
  }
  KVMEM_TRY(parse_ram_keys(j, root, c));
  KVMEM_TRY(parse_windows(j, root, files, c));
  if (!c.windows.empty() && (c.backing == RamBacking::kMemfdThp || c.backing == RamBacking::kHugetlb))
    return (root / "windows").fail("a VM of backing {} cannot have windows: the shared files live in the run's plain "
                                   "memfd, and a VM's file-backed RAM and windows share one memory file (use backing "
                                   "\"memfd\" or \"anon\")",
                                   ram_backing_name(c.backing));
  if (!j.contains("program") && !j.contains("programs")) return root.fail("missing required key \"program\"");
  std::vector<GuestRange> windows;
  for (const WindowConfig& w : c.windows) windows.push_back(w.guest());
  auto programs = parse_programs(j, root, GuestLayout{c.memory, windows, c.vcpus});
  if (!programs) return std::unexpected(programs.error());
  if (j.contains("program"))
    c.program = std::move(programs->front());
  else
    c.programs = std::move(*programs);
  return c;
}

std::string stem_of(const std::string& path) {
  std::string stem = path.substr(path.find_last_of('/') + 1);
  if (auto dot = stem.rfind('.'); dot != std::string::npos && dot > 0) stem.resize(dot);
  return valid_name(stem) ? stem : "vm";
}

// The VM's config as one VM's config of its own, the form a snapshot keeps:
// its keys, its name, and the files its windows show.
std::string standalone_source(const json& vm, const VmConfig& c, const json& top) {
  json one = vm;
  one.erase("files");
  one["name"] = c.name;
  json files = json::array();
  if (top.is_object() && top.contains("files"))
    for (const json& f : top.at("files"))
      if (std::any_of(c.windows.begin(), c.windows.end(), [&](const WindowConfig& w) { return f.at("name") == w.file; }))
        files.push_back(f);
  if (!files.empty()) one["files"] = std::move(files);
  return one.dump();
}

Result<RunConfig> parse_run_at(const json& j, std::string_view default_name) {
  RunConfig rc;
  rc.files = KVMEM_TRY(parse_files(j));
  if (!j.is_object() || !j.contains("vms")) {
    rc.vms.push_back(KVMEM_TRY(parse_vm_at(j, Ptr(), default_name, rc.files, true)));
    rc.vms.back().source = standalone_source(j, rc.vms.back(), j);
    return rc;
  }
  Ptr root;
  if (auto k = check_keys(j, root, {"vms", "files"}); !k) return std::unexpected(k.error());
  const json& vms = j.at("vms");
  if (!vms.is_array() || vms.empty() || vms.size() > kMaxVms)
    return (root / "vms").fail("expected an array of 1..{} VM configs", kMaxVms);
  for (size_t i = 0; i < vms.size(); i++) {
    auto c = parse_vm_at(vms[i], root / "vms" / i, fmt::format("{}-{}", default_name, i), rc.files, false);
    if (!c) return std::unexpected(c.error());
    for (const VmConfig& other : rc.vms)
      if (other.name == c->name) return (root / "vms" / i / "name").fail("\"{}\" names two VMs", c->name);
    c->source = standalone_source(vms[i], *c, j);
    rc.vms.push_back(std::move(*c));
  }
  return rc;
}

}  // namespace

Result<VmConfig> parse_vm_config(const json& j, std::string_view default_name) {
  return guarded([&] { return parse_vm_at(j, Ptr(), default_name, {}, false); });
}

Result<RunConfig> parse_run_config(const json& j, std::string_view default_name) {
  return guarded([&] { return parse_run_at(j, default_name); });
}

Result<RunConfig> run_config_from(const json& j, const std::string& path) {
  auto c = parse_run_config(j, stem_of(path));
  if (!c) return std::unexpected(c.error().context(path));
  return c;
}

Result<RunConfig> load_run_config(const std::string& path) {
  auto j = read_json(path);
  if (!j) return std::unexpected(j.error());
  return run_config_from(*j, path);
}

}  // namespace kvmem
