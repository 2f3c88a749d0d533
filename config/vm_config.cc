#include "config/vm_config.h"

#include <cerrno>
#include <charconv>
#include <cstring>

#include <nlohmann/json.hpp>

#include "config/fields.h"
#include "config/steps.h"

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
  int base = 10;
  if (digits.size() > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X')) {
    digits.remove_prefix(2);
    base = 16;
  }
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v, base);
  if (digits.empty() || ec == std::errc::invalid_argument || end != digits.data() + digits.size())
    return fail("\"{}\" is not a size (use an integer, or a string like \"64M\" or \"0x200000\")", s);
  if (ec == std::errc::result_out_of_range || v > UINT64_MAX / mult)
    return fail("\"{}\" overflows 64 bits", s);
  return v * mult;
}

namespace {

Result<VmConfig> parse_vm_at(const json& j, const Ptr& root, std::string_view default_name) {
  if (auto k = check_keys(j, root, {"name", "memory", "vcpus", "timeout_ms", "guest_page_size", "ram_unit", "program"}); !k)
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
    if (*v != 1) return (root / "vcpus").fail("only 1 vCPU per VM is supported for now, found {}", *v);
  }
  if (j.contains("timeout_ms")) {
    auto t = size_value(j.at("timeout_ms"), root / "timeout_ms");
    if (!t) return std::unexpected(t.error());
    if (*t == 0 || *t > kMaxTimeoutMs) return (root / "timeout_ms").fail("must be 1..{}, found {}", kMaxTimeoutMs, *t);
    c.timeout_ms = *t;
  }
  if (!j.contains("program")) return root.fail("missing required key \"program\"");
  auto program = parse_program(j.at("program"), root / "program", c.memory);
  if (!program) return std::unexpected(program.error());
  c.program = std::move(*program);
  return c;
}

std::string stem_of(const std::string& path) {
  std::string stem = path.substr(path.find_last_of('/') + 1);
  if (auto dot = stem.rfind('.'); dot != std::string::npos && dot > 0) stem.resize(dot);
  return valid_name(stem) ? stem : "vm";
}

Result<RunConfig> parse_run_at(const json& j, std::string_view default_name) {
  RunConfig rc;
  if (!j.is_object() || !j.contains("vms")) {
    auto c = parse_vm_config(j, default_name);
    if (!c) return std::unexpected(c.error());
    rc.vms.push_back(std::move(*c));
    return rc;
  }
  Ptr root;
  if (auto k = check_keys(j, root, {"vms"}); !k) return std::unexpected(k.error());
  const json& vms = j.at("vms");
  if (!vms.is_array() || vms.empty() || vms.size() > kMaxVms)
    return (root / "vms").fail("expected an array of 1..{} VM configs", kMaxVms);
  for (size_t i = 0; i < vms.size(); i++) {
    auto c = parse_vm_at(vms[i], root / "vms" / i, fmt::format("{}-{}", default_name, i));
    if (!c) return std::unexpected(c.error());
    for (const VmConfig& other : rc.vms)
      if (other.name == c->name) return (root / "vms" / i / "name").fail("\"{}\" names two VMs", c->name);
    rc.vms.push_back(std::move(*c));
  }
  return rc;
}

}  // namespace

Result<VmConfig> parse_vm_config(const json& j, std::string_view default_name) {
  return guarded([&] { return parse_vm_at(j, Ptr(), default_name); });
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
