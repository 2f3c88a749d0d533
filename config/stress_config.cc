// Parsing of `kvmem stress` configs: {"stress": {...}}.
#include "config/stress_config.h"

#include "config/fields.h"
#include "guest/layout.h"

namespace kvmem {

using namespace json_fields;

namespace {

// "vcpus": N, or [min, max].
Status parse_vcpus(const json& j, const Ptr& p, StressConfig& c) {
  const uint64_t max = guest::layout::kMaxVcpus;
  auto one = [&](const json& v, const Ptr& at) -> Result<unsigned> {
    const uint64_t n = KVMEM_TRY(size_value(v, at));
    if (n < 1 || n > max) return at.fail("must be 1..{}, found {}", max, n);
    return static_cast<unsigned>(n);
  };
  if (!j.is_array()) {
    c.vcpus_min = c.vcpus_max = KVMEM_TRY(one(j, p));
    return {};
  }
  if (j.size() != 2) return p.fail("expected a number or a [min, max] pair, found an array of {}", j.size());
  c.vcpus_min = KVMEM_TRY(one(j.at(0), p / size_t{0}));
  c.vcpus_max = KVMEM_TRY(one(j.at(1), p / size_t{1}));
  if (c.vcpus_min > c.vcpus_max) return p.fail("min {} is larger than max {}", c.vcpus_min, c.vcpus_max);
  return {};
}

// A list of names (a lone string is a list of one), each one parse(name)
// knows; `expected` says which those are.
template <class T, class Parse>
Result<std::vector<T>> parse_names(const json& j, const Ptr& p, Parse parse, const char* what, const char* expected) {
  if (j.is_string()) return parse_names<T>(json::array({j}), p, parse, what, expected);
  if (!j.is_array() || j.empty()) return p.fail("expected a non-empty array of {} names ({})", what, expected);
  if (j.size() > 64) return p.fail("at most 64 names, found {}", j.size());
  std::vector<T> out;
  for (size_t i = 0; i < j.size(); i++) {
    const std::string name = KVMEM_TRY(string_value(j.at(i), p / i));
    auto v = parse(name);
    if (!v) return (p / i).fail("unknown {} \"{}\" (expected {})", what, name, expected);
    out.push_back(*v);
  }
  return out;
}

// "snapshots": {"probability", "lazy", "dir", "keep"}.
Status parse_snapshots(const json& j, const Ptr& p, StressSnapshots& s) {
  KVMEM_TRY(check_keys(j, p, {"probability", "lazy", "dir", "keep"}));
  if (!j.contains("probability")) return p.fail("missing required key \"probability\"");
  s.probability = KVMEM_TRY(fraction_value(j.at("probability"), p / "probability"));
  if (j.contains("lazy")) s.lazy = KVMEM_TRY(fraction_value(j.at("lazy"), p / "lazy"));
  if (j.contains("dir")) {
    s.dir = KVMEM_TRY(string_value(j.at("dir"), p / "dir"));
    if (s.dir.empty() || s.dir.size() > 4000 || s.dir.find('\0') != std::string::npos)
      return (p / "dir").fail("expected the path of a folder (1..4000 bytes, no NUL)");
  }
  if (j.contains("keep")) s.keep = KVMEM_TRY(bool_value(j.at("keep"), p / "keep"));
  return {};
}

Result<StressConfig> parse_stress_at(const json& j) {
  Ptr root;
  if (auto k = check_keys(j, root, {"stress"}); !k) return std::unexpected(k.error());
  if (!j.contains("stress")) return root.fail("missing required key \"stress\"");
  const json& s = j.at("stress");
  const Ptr p = root / "stress";
  if (auto k = check_keys(s, p, {"seed", "rounds", "duration_s", "vms_per_round", "vm_memory", "ram_unit",
                                 "regions_per_vm", "region_min", "region_max", "commit_budget", "slack", "timeout_ms",
                                 "inject_corruption", "vcpus", "backings", "prefault", "snapshots"});
      !k)
    return std::unexpected(k.error());
  StressConfig c;
  struct Field {
    const char* key;
    uint64_t* out;
    uint64_t min, max;
  } fields[] = {{"seed", &c.seed, 0, UINT64_MAX},
                {"rounds", &c.rounds, 0, kMaxStressRounds},
                {"duration_s", &c.duration_s, 0, kMaxStressDurationS},
                {"vms_per_round", &c.vms_per_round, 1, kMaxVms},
                {"vm_memory", &c.vm_memory, 4ull << 20, guest::kMaxRamBytes},
                {"ram_unit", &c.ram_unit, 2ull << 20, guest::kMaxRamBytes},
                {"regions_per_vm", &c.regions_per_vm, 1, 1000},
                {"region_min", &c.region_min, 2ull << 20, guest::kMaxRamBytes},
                {"region_max", &c.region_max, 2ull << 20, guest::kMaxRamBytes},
                {"commit_budget", &c.commit_budget, 0, UINT64_MAX},
                {"slack", &c.slack, 0, UINT64_MAX},
                {"timeout_ms", &c.timeout_ms, 1, kMaxTimeoutMs}};
  if (s.contains("inject_corruption")) {
    auto b = bool_value(s.at("inject_corruption"), p / "inject_corruption");
    if (!b) return std::unexpected(b.error());
    c.inject_corruption = *b;
  }
  if (s.contains("vcpus")) KVMEM_TRY(parse_vcpus(s.at("vcpus"), p / "vcpus", c));
  if (s.contains("backings"))
    c.backings = KVMEM_TRY(parse_names<RamBacking>(s.at("backings"), p / "backings", parse_ram_backing, "backing",
                                                   "\"memfd\", \"memfd-thp\", \"hugetlb\" or \"anon\""));
  if (s.contains("prefault"))
    c.prefaults = KVMEM_TRY(parse_names<Prefault>(s.at("prefault"), p / "prefault", parse_prefault, "prefault",
                                                  "\"none\", \"eager\" or \"ahead\""));
  if (s.contains("snapshots")) KVMEM_TRY(parse_snapshots(s.at("snapshots"), p / "snapshots", c.snapshots));
  for (const Field& f : fields) {
    if (!s.contains(f.key)) continue;
    auto v = size_value(s.at(f.key), p / f.key);
    if (!v) return std::unexpected(v.error());
    if (*v < f.min || *v > f.max) return (p / f.key).fail("must be {:#x}..{:#x}, found {:#x}", f.min, f.max, *v);
    *f.out = *v;
  }
  for (auto [key, v] : {std::pair{"vm_memory", c.vm_memory}, std::pair{"ram_unit", c.ram_unit},
                        std::pair{"region_min", c.region_min}, std::pair{"region_max", c.region_max}})
    if (v % (2ull << 20) != 0) return (p / key).fail("{:#x} is not a multiple of 2M", v);
  if (c.region_min > c.region_max) return (p / "region_min").fail("is larger than region_max");
  if (c.region_max > c.vm_memory - (2ull << 20))
    return (p / "region_max").fail("leaves no room: a VM has {:#x} bytes and the first 2M are not used", c.vm_memory);
  if (c.rounds == 0 && c.duration_s == 0) return p.fail("rounds and duration_s cannot both be 0 (unlimited)");
  return c;
}

}  // namespace

Result<StressConfig> parse_stress_config(const json& j) {
  return guarded([&] { return parse_stress_at(j); });
}

bool is_stress_config(const json& j) { return j.is_object() && j.contains("stress"); }

Result<json> read_config_json(const std::string& path) { return read_json(path); }

Result<StressConfig> stress_config_from(const json& j, const std::string& path) {
  auto c = parse_stress_config(j);
  if (!c) return std::unexpected(c.error().context(path));
  return c;
}

Result<StressConfig> load_stress_config(const std::string& path) {
  auto j = read_json(path);
  if (!j) return std::unexpected(j.error());
  return stress_config_from(*j, path);
}

}  // namespace kvmem
