#include "config/vm_config.h"

#include <cerrno>
#include <charconv>
#include <cstring>

#include <nlohmann/json.hpp>

#include "guest/abi.h"
#include "config/fields.h"

namespace kvmem {
namespace {

using namespace json_fields;

using json = nlohmann::json;
using guest::Pattern;
using guest::Step;

Result<Pattern> pattern_value(const json& j, const Ptr& p) {
  if (j.is_string()) {
    if (j == "zero") return Pattern{Pattern::Kind::kZero, 0};
    if (j == "address") return Pattern{Pattern::Kind::kAddress, 0};
    return p.fail("unknown pattern \"{}\" (expected \"zero\", \"address\", {{\"seed\": N}} or {{\"byte\": N}})",
                  j.get<std::string>());
  }
  if (j.is_object() && j.size() == 1) {
    if (j.contains("seed")) {
      auto v = size_value(j.at("seed"), p / "seed");
      if (!v) return std::unexpected(v.error());
      return Pattern{Pattern::Kind::kSeed, *v};
    }
    if (j.contains("byte")) {
      auto v = size_value(j.at("byte"), p / "byte");
      if (!v) return std::unexpected(v.error());
      if (*v > 0xff) return (p / "byte").fail("must be 0..255, found {}", *v);
      return Pattern{Pattern::Kind::kByte, *v};
    }
  }
  return p.fail("expected a pattern: \"zero\", \"address\", {{\"seed\": N}} or {{\"byte\": N}}");
}

Status free_mode(const json& j, const Ptr& p, Step* s) {
  if (!j.contains("mode")) return {};
  if (j.at("mode") == "sync") s->mode = Step::FreeMode::kSync;
  else if (j.at("mode") == "async") s->mode = Step::FreeMode::kAsync;
  else return (p / "mode").fail("expected \"sync\" or \"async\"");
  return {};
}

struct StepParser {
  uint64_t memory;
  size_t steps = 0;

  // [at, at + length) must be word-aligned, non-empty, outside the boot area
  // and inside RAM.
  Status check_range(const json& j, const Ptr& p, uint64_t at, uint64_t length, uint64_t align) {
    if (at % align != 0) return (p / "at").fail("{:#x} is not a multiple of {}", at, align);
    if (length == 0) return (p / "length").fail("must be > 0");
    if (length % 8 != 0) return (p / "length").fail("{:#x} is not a multiple of 8", length);
    if (at < abi::kBootAreaEnd)
      return (p / "at").fail("{:#x} lies in the reserved boot area [0x0, {:#x})", at, abi::kBootAreaEnd);
    if (at >= memory || length > memory - at)
      return (p / (j.contains("length") ? "length" : "at"))
          .fail("the range at {:#x} of {:#x} bytes runs past the end of RAM ({:#x})", at, length, memory);
    return {};
  }

  // Reads "at" and "length" into s and checks the range they make.
  Status at_length(const json& j, const Ptr& p, uint64_t align, Step* s) {
    auto at = required_size(j, p, "at");
    if (!at) return std::unexpected(at.error());
    auto length = required_size(j, p, "length");
    if (!length) return std::unexpected(length.error());
    s->at = *at;
    s->length = *length;
    return check_range(j, p, s->at, s->length, align);
  }

  Result<std::vector<Step>> list(const json& j, const Ptr& p, unsigned depth) {
    if (!j.is_array()) return p.fail("expected an array of steps, found {}", j.type_name());
    std::vector<Step> out;
    for (size_t i = 0; i < j.size(); i++) {
      auto s = step(j[i], p / i, depth);
      if (!s) return std::unexpected(s.error());
      out.push_back(std::move(*s));
    }
    return out;
  }

  Result<Step> step(const json& j, const Ptr& p, unsigned depth) {
    if (++steps > kMaxSteps) return p.fail("too many steps (at most {})", kMaxSteps);
    if (!j.is_object()) return p.fail("expected a step object, found {}", j.type_name());
    if (!j.contains("op")) return p.fail("missing required key \"op\"");
    const json& op = j.at("op");
    if (!op.is_string()) return (p / "op").fail("expected a string, found {}", op.type_name());
    const std::string name = op.get<std::string>();
    Step s;
    if (name == "print") {
      if (auto k = check_keys(j, p, {"op", "text"}); !k) return std::unexpected(k.error());
      if (!j.contains("text") || !j.at("text").is_string()) return (p / "text").fail("expected a string");
      s.op = Step::Op::kPrint;
      s.text = j.at("text").get<std::string>();
      if (s.text.size() > 65536) return (p / "text").fail("longer than 65536 bytes");
    } else if (name == "fill" || name == "verify" || name == "touch") {
      bool touch = name == "touch";
      auto k = touch ? check_keys(j, p, {"op", "at", "length", "pattern", "stride", "write"})
                     : check_keys(j, p, {"op", "at", "length", "pattern"});
      if (!k) return std::unexpected(k.error());
      s.op = name == "fill" ? Step::Op::kFill : touch ? Step::Op::kTouch : Step::Op::kVerify;
      if (auto r = at_length(j, p, 8, &s); !r) return std::unexpected(r.error());
      if (j.contains("pattern")) {
        auto pat = pattern_value(j.at("pattern"), p / "pattern");
        if (!pat) return std::unexpected(pat.error());
        s.pattern = *pat;
      } else if (touch) {
        s.pattern = Pattern{Pattern::Kind::kAddress, 0};
      } else {
        return p.fail("missing required key \"pattern\"");
      }
      if (j.contains("stride")) {
        auto st = size_value(j.at("stride"), p / "stride");
        if (!st) return std::unexpected(st.error());
        if (*st == 0 || *st % 8 != 0) return (p / "stride").fail("must be a non-zero multiple of 8");
        // The guest steps with a 64-bit add: past 2^64 it would go on below `at`.
        if (*st > UINT64_MAX - (s.at + s.length))
          return (p / "stride").fail("{:#x} carries past 2^64 from the end of the range", *st);
        s.stride = *st;
      }
      if (j.contains("write")) {
        if (!j.at("write").is_boolean()) return (p / "write").fail("expected true or false");
        s.write = j.at("write").get<bool>();
      }
    } else if (name == "loop") {
      if (auto k = check_keys(j, p, {"op", "count", "body"}); !k) return std::unexpected(k.error());
      if (depth + 1 > kMaxLoopDepth) return p.fail("loops nest deeper than {}", kMaxLoopDepth);
      auto count = required_size(j, p, "count");
      if (!count) return std::unexpected(count.error());
      if (*count == 0) return (p / "count").fail("must be >= 1");
      s.op = Step::Op::kLoop;
      s.count = *count;
      if (!j.contains("body")) return p.fail("missing required key \"body\"");
      auto body = list(j.at("body"), p / "body", depth + 1);
      if (!body) return std::unexpected(body.error());
      s.body = std::move(*body);
    } else if (name == "hypercall") {
      if (auto k = check_keys(j, p, {"op", "nr", "args", "expect"}); !k) return std::unexpected(k.error());
      auto nr = required_size(j, p, "nr");
      if (!nr) return std::unexpected(nr.error());
      if (*nr > UINT32_MAX) return (p / "nr").fail("must fit in 32 bits, found {}", *nr);
      s.op = Step::Op::kHypercall;
      s.nr = static_cast<uint32_t>(*nr);
      if (j.contains("args")) {
        const json& args = j.at("args");
        if (!args.is_array()) return (p / "args").fail("expected an array, found {}", args.type_name());
        if (args.size() > 6) return (p / "args").fail("at most 6 arguments, found {}", args.size());
        for (size_t i = 0; i < args.size(); i++) {
          // Negative integers are allowed here: they travel as their two's complement.
          if (args[i].is_number_integer() && !args[i].is_number_unsigned()) {
            s.args[i] = static_cast<uint64_t>(args[i].get<int64_t>());
            continue;
          }
          auto v = size_value(args[i], p / "args" / i);
          if (!v) return std::unexpected(v.error());
          s.args[i] = *v;
        }
      }
      if (j.contains("expect")) {
        auto e = signed_value(j.at("expect"), p / "expect");
        if (!e) return std::unexpected(e.error());
        s.expect = *e;
      }
    } else if (name == "exit") {
      if (auto k = check_keys(j, p, {"op", "code"}); !k) return std::unexpected(k.error());
      s.op = Step::Op::kExit;
      if (j.contains("code")) {
        auto c = size_value(j.at("code"), p / "code");
        if (!c) return std::unexpected(c.error());
        if (*c > 255) return (p / "code").fail("must be 0..255, found {}", *c);
        s.code = *c;
      }
    } else if (name == "free") {
      if (auto k = check_keys(j, p, {"op", "at", "length", "granule", "stride", "batch", "mode"}); !k)
        return std::unexpected(k.error());
      s.op = Step::Op::kFree;
      if (auto m = free_mode(j, p, &s); !m) return std::unexpected(m.error());
      if (auto r = at_length(j, p, 4096, &s); !r) return std::unexpected(r.error());
      if (j.contains("granule")) {
        auto g = size_value(j.at("granule"), p / "granule");
        if (!g) return std::unexpected(g.error());
        if (*g == 0 || *g % 4096 != 0) return (p / "granule").fail("must be a non-zero multiple of 4K");
        s.granule = *g;
      }
      if (j.contains("stride")) {
        auto st = size_value(j.at("stride"), p / "stride");
        if (!st) return std::unexpected(st.error());
        if (*st < s.granule || *st % 4096 != 0)
          return (p / "stride").fail("must be a multiple of 4K no smaller than the granule ({:#x})", s.granule);
        s.stride_bytes = *st;
      }
      if (s.length % s.stride_or_granule() != 0)
        return (p / "length").fail("{:#x} is not a multiple of the {} ({:#x})", s.length,
                                   s.stride_bytes ? "stride" : "granule", s.stride_or_granule());
      const uint64_t max_batch = s.mode == Step::FreeMode::kSync ? abi::kReportMax : abi::kFreeRingEntries;
      if (j.contains("batch")) {
        auto b = size_value(j.at("batch"), p / "batch");
        if (!b) return std::unexpected(b.error());
        if (*b == 0 || *b > max_batch) return (p / "batch").fail("must be 1..{} in this mode, found {}", max_batch, *b);
        s.batch = *b;
      }
    } else if (name == "report") {
      if (auto k = check_keys(j, p, {"op", "ranges", "expect", "mode"}); !k) return std::unexpected(k.error());
      s.op = Step::Op::kReport;
      if (auto m = free_mode(j, p, &s); !m) return std::unexpected(m.error());
      if (!j.contains("ranges")) return p.fail("missing required key \"ranges\"");
      const json& ranges = j.at("ranges");
      if (!ranges.is_array() || ranges.empty() || ranges.size() > guest::kMaxReportRanges)
        return (p / "ranges").fail("expected an array of 1..{} [address, length] pairs", guest::kMaxReportRanges);
      for (size_t i = 0; i < ranges.size(); i++) {
        const json& r = ranges[i];
        if (!r.is_array() || r.size() != 2) return (p / "ranges" / i).fail("expected [address, length]");
        auto gpa = size_value(r[0], p / "ranges" / i / 0);
        if (!gpa) return std::unexpected(gpa.error());
        auto len = size_value(r[1], p / "ranges" / i / 1);
        if (!len) return std::unexpected(len.error());
        s.ranges.emplace_back(*gpa, *len);  // deliberately unchecked: the VMM must refuse bad ones
      }
      s.expects.assign(s.ranges.size(), std::nullopt);
      if (j.contains("expect")) {
        const json& e = j.at("expect");
        if (!e.is_array() || e.size() != s.ranges.size())
          return (p / "expect").fail("expected an array with one status (or null) per range");
        for (size_t i = 0; i < e.size(); i++) {
          if (e[i].is_null()) continue;
          auto v = signed_value(e[i], p / "expect" / i);
          if (!v) return std::unexpected(v.error());
          s.expects[i] = *v;
        }
      }
    } else if (name == "timestamp") {
      if (auto k = check_keys(j, p, {"op", "slot"}); !k) return std::unexpected(k.error());
      s.op = Step::Op::kTimestamp;
      auto slot = required_size(j, p, "slot");
      if (!slot) return std::unexpected(slot.error());
      if (*slot >= abi::kResultSlots) return (p / "slot").fail("must be 0..{}, found {}", abi::kResultSlots - 1, *slot);
      s.slot = *slot;
    } else if (name == "out") {
      if (auto k = check_keys(j, p, {"op", "port", "value"}); !k) return std::unexpected(k.error());
      s.op = Step::Op::kOut;
      auto port = required_size(j, p, "port");
      if (!port) return std::unexpected(port.error());
      if (*port > 0xff) return (p / "port").fail("must be 0..255, found {}", *port);
      s.port = static_cast<uint8_t>(*port);
      if (j.contains("value")) {
        auto v = size_value(j.at("value"), p / "value");
        if (!v) return std::unexpected(v.error());
        if (*v > UINT32_MAX) return (p / "value").fail("must fit in 32 bits");
        s.value = static_cast<uint32_t>(*v);
      }
    } else if (name == "fault") {
      if (auto k = check_keys(j, p, {"op", "kind"}); !k) return std::unexpected(k.error());
      s.op = Step::Op::kFault;
      const json* kind = j.contains("kind") ? &j.at("kind") : nullptr;
      bool found = false;
      for (int f = 0; kind && kind->is_string() && f <= static_cast<int>(Step::Fault::kSpin); f++) {
        if (*kind == guest::fault_name(static_cast<Step::Fault>(f))) {
          s.fault = static_cast<Step::Fault>(f);
          found = true;
        }
      }
      if (!found)
        return (p / "kind").fail("expected one of: divide-by-zero, invalid-opcode, breakpoint, unmapped-read, "
                                 "halt, unknown-port, spin");
    } else {
      return (p / "op").fail("unknown step \"{}\" (expected print, fill, touch, verify, loop, hypercall, exit, fault, free, report, out or timestamp)", name);
    }
    return s;
  }
};

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
  StepParser sp{c.memory};
  auto program = sp.list(j.at("program"), root / "program", 0);
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
