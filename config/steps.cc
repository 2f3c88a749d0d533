#include "config/steps.h"

#include <algorithm>
#include <charconv>
#include <string>
#include <string_view>

#include "config/vm_config.h"
#include "guest/abi.h"
#include "guest/layout.h"

namespace kvmem {
namespace {

using namespace json_fields;
using namespace guest;

// Where a step is parsed: the VM's RAM and windows, and the steps and
// loops so far.
struct Context {
  uint64_t memory;
  const std::vector<GuestRange>* windows;
  unsigned vcpus = 1;  // of the VM: report lists and free rings are sliced by them
  size_t steps = 0;
  unsigned depth = 0;
};

// Returns the error of a failed Result or Status from the enclosing function.
#define KVMEM_STEP_TRY(expr)                                   \
  do {                                                         \
    if (auto kvmem_r = (expr); !kvmem_r) return std::unexpected(kvmem_r.error()); \
  } while (0)

Result<std::vector<Step>> parse_list(const json& j, const Ptr& p, Context& cx);

constexpr const char* kPatternForms =
    "\"zero\", \"address\", {\"seed\": N}, {\"byte\": N} or {\"address\": true}, the last three with an optional "
    "\"origin\"";

// {"seed": N}, {"byte": N} or {"address": true}, and "origin" (a size,
// default 0) for the two whose words depend on the address.
Result<Pattern> pattern_object(const json& j, const Ptr& p) {
  const int kinds = int{j.contains("seed")} + int{j.contains("byte")} + int{j.contains("address")};
  if (kinds != 1) return p.fail("expected a pattern: {}", kPatternForms);
  KVMEM_STEP_TRY(check_keys(j, p, {"seed", "byte", "address", "origin"}));
  Pattern pat;
  if (j.contains("seed")) {
    auto v = size_value(j.at("seed"), p / "seed");
    if (!v) return std::unexpected(v.error());
    pat = Pattern{Pattern::Kind::kSeed, *v};
  } else if (j.contains("byte")) {
    auto v = size_value(j.at("byte"), p / "byte");
    if (!v) return std::unexpected(v.error());
    if (*v > 0xff) return (p / "byte").fail("must be 0..255, found {}", *v);
    pat = Pattern{Pattern::Kind::kByte, *v};
  } else {
    if (j.at("address") != true) return (p / "address").fail("expected true");
    pat = Pattern{Pattern::Kind::kAddress, 0};
  }
  if (j.contains("origin")) {
    if (pat.kind == Pattern::Kind::kByte)
      return (p / "origin").fail("a byte pattern is the same at every address: it takes no origin");
    auto o = size_value(j.at("origin"), p / "origin");
    if (!o) return std::unexpected(o.error());
    pat.origin = *o;
  }
  return pat;
}

Result<Pattern> pattern_value(const json& j, const Ptr& p) {
  return parse_pattern(j, p);
}

}  // namespace

Result<Pattern> parse_pattern(const json& j, const Ptr& p) {
  if (j.is_string()) {
    if (j == "zero") return Pattern{Pattern::Kind::kZero, 0};
    if (j == "address") return Pattern{Pattern::Kind::kAddress, 0};
    return p.fail("unknown pattern \"{}\" (expected {})", j.get<std::string>(), kPatternForms);
  }
  if (j.is_object()) return pattern_object(j, p);
  return p.fail("expected a pattern: {}", kPatternForms);
}

namespace {

// Both modes work from every vCPU: each has its own report lists and its
// own free ring (guest/layout.h).
Result<FreeMode> free_mode(const json& j, const Ptr& p, const Context&) {
  if (!j.contains("mode")) return FreeMode::kSync;
  if (j.at("mode") == "sync") return FreeMode::kSync;
  if (j.at("mode") == "async") return FreeMode::kAsync;
  return (p / "mode").fail("expected \"sync\" or \"async\"");
}

// [at, at + length) must be aligned, non-empty, a whole number of words,
// and wholly in one window, or else outside the boot area and inside RAM.
Status check_range(const json& j, const Ptr& p, const Context& cx, uint64_t at, uint64_t length, uint64_t align) {
  if (at % align != 0) return (p / "at").fail("{:#x} is not a multiple of {}", at, align);
  if (length == 0) return (p / "length").fail("must be > 0");
  if (length % 8 != 0) return (p / "length").fail("{:#x} is not a multiple of 8", length);
  for (const GuestRange& w : *cx.windows)
    if (w.contains(at)) {
      if (length > w.end - at)
        return (p / (j.contains("length") ? "length" : "at"))
            .fail("the range at {:#x} of {:#x} bytes runs past the end of the window {}", at, length, w);
      return {};
    }
  if (at < abi::kBootAreaEnd)
    return (p / "at").fail("{:#x} lies in the reserved boot area [0x0, {:#x})", at, abi::kBootAreaEnd);
  if (at >= cx.memory || length > cx.memory - at)
    return (p / (j.contains("length") ? "length" : "at"))
        .fail("the range at {:#x} of {:#x} bytes runs past the end of RAM ({:#x})", at, length, cx.memory);
  return {};
}

// Reads "at" and "length", and checks the range they make.
Status at_length(const json& j, const Ptr& p, const Context& cx, uint64_t align, uint64_t* at, uint64_t* length) {
  auto a = required_size(j, p, "at");
  if (!a) return std::unexpected(a.error());
  auto l = required_size(j, p, "length");
  if (!l) return std::unexpected(l.error());
  *at = *a;
  *length = *l;
  return check_range(j, p, cx, *at, *length, align);
}

// "pattern", required unless a default is given.
Status pattern_key(const json& j, const Ptr& p, bool required, Pattern* out) {
  if (!j.contains("pattern")) {
    if (required) return p.fail("missing required key \"pattern\"");
    return {};
  }
  auto pat = pattern_value(j.at("pattern"), p / "pattern");
  if (!pat) return std::unexpected(pat.error());
  *out = *pat;
  return {};
}

Result<Step> parse_print(const json& j, const Ptr& p, Context&) {
  KVMEM_STEP_TRY(check_keys(j, p, {"op", "text"}));
  if (!j.contains("text") || !j.at("text").is_string()) return (p / "text").fail("expected a string");
  Print s{j.at("text").get<std::string>()};
  if (s.text.size() > 65536) return (p / "text").fail("longer than 65536 bytes");
  return s;
}

// fill and verify take the same keys: a range of words and its pattern.
template <class PatternStep>
Result<Step> parse_pattern_range(const json& j, const Ptr& p, Context& cx) {
  KVMEM_STEP_TRY(check_keys(j, p, {"op", "at", "length", "pattern"}));
  PatternStep s;
  KVMEM_STEP_TRY(at_length(j, p, cx, 8, &s.at, &s.length));
  KVMEM_STEP_TRY(pattern_key(j, p, true, &s.pattern));
  return s;
}

Result<Step> parse_fill(const json& j, const Ptr& p, Context& cx) { return parse_pattern_range<Fill>(j, p, cx); }
Result<Step> parse_verify(const json& j, const Ptr& p, Context& cx) { return parse_pattern_range<Verify>(j, p, cx); }

// A timed touch's "samples": a word per access, in RAM (not a window),
// outside the boot area and apart from the range it times.
Status touch_samples(const json& j, const Ptr& p, const Context& cx, Touch* s) {
  auto at = size_value(j.at("samples"), p / "samples");
  if (!at) return std::unexpected(at.error());
  const Ptr sp = p / "samples";
  if (*at == 0) return sp.fail("must not be 0 (leave the key out for an untimed touch)");
  if (*at % 8 != 0) return sp.fail("{:#x} is not a multiple of 8", *at);
  const uint64_t bytes = s->accesses() * 8;
  for (const GuestRange& w : *cx.windows)
    if (w.overlaps(GuestRange(*at, *at + std::min(bytes, UINT64_MAX - *at))))
      return sp.fail("the samples at {:#x} ({:#x} bytes) overlap the window {}: they go in RAM", *at, bytes, w);
  if (*at < abi::kBootAreaEnd)
    return sp.fail("{:#x} lies in the reserved boot area [0x0, {:#x})", *at, abi::kBootAreaEnd);
  if (*at >= cx.memory || bytes > cx.memory - *at)
    return sp.fail("the samples at {:#x} ({} accesses, {:#x} bytes) run past the end of RAM ({:#x})", *at,
                   s->accesses(), bytes, cx.memory);
  if (*at < s->at + s->length && s->at < *at + bytes)
    return sp.fail("the samples at {:#x} ({:#x} bytes) overlap the range they time [{:#x}, {:#x})", *at, bytes,
                   s->at, s->at + s->length);
  s->samples = *at;
  return {};
}

Result<Step> parse_touch(const json& j, const Ptr& p, Context& cx) {
  KVMEM_STEP_TRY(check_keys(j, p, {"op", "at", "length", "pattern", "stride", "write", "samples"}));
  Touch s;
  KVMEM_STEP_TRY(at_length(j, p, cx, 8, &s.at, &s.length));
  KVMEM_STEP_TRY(pattern_key(j, p, false, &s.pattern));
  if (j.contains("stride")) {
    auto st = size_value(j.at("stride"), p / "stride");
    if (!st) return std::unexpected(st.error());
    if (*st == 0 || *st % 8 != 0) return (p / "stride").fail("must be a non-zero multiple of 8");
    // The guest steps with a 64-bit add: past 2^64 it would go on below
    // `at`, into the boot area. Its cursor goes on from the last word by one
    // more stride, and the last word lies below the range's end, so this
    // bound covers that step too.
    if (*st > UINT64_MAX - (s.at + s.length))
      return (p / "stride").fail("{:#x} carries past 2^64 from the end of the range", *st);
    s.stride = *st;
  }
  if (j.contains("write")) {
    if (!j.at("write").is_boolean()) return (p / "write").fail("expected true or false");
    s.write = j.at("write").get<bool>();
  }
  if (j.contains("samples")) KVMEM_STEP_TRY(touch_samples(j, p, cx, &s));
  return s;
}

Result<Step> parse_loop(const json& j, const Ptr& p, Context& cx) {
  KVMEM_STEP_TRY(check_keys(j, p, {"op", "count", "body"}));
  if (cx.depth + 1 > kMaxLoopDepth) return p.fail("loops nest deeper than {}", kMaxLoopDepth);
  auto count = required_size(j, p, "count");
  if (!count) return std::unexpected(count.error());
  if (*count == 0) return (p / "count").fail("must be >= 1");
  if (!j.contains("body")) return p.fail("missing required key \"body\"");
  cx.depth++;
  auto body = parse_list(j.at("body"), p / "body", cx);
  cx.depth--;
  if (!body) return std::unexpected(body.error());
  return Loop{*count, std::move(*body)};
}

Result<Step> parse_hypercall(const json& j, const Ptr& p, Context&) {
  KVMEM_STEP_TRY(check_keys(j, p, {"op", "nr", "args", "expect"}));
  auto nr = required_size(j, p, "nr");
  if (!nr) return std::unexpected(nr.error());
  if (*nr > UINT32_MAX) return (p / "nr").fail("must fit in 32 bits, found {}", *nr);
  Hypercall s;
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
  return s;
}

Result<Step> parse_exit(const json& j, const Ptr& p, Context&) {
  KVMEM_STEP_TRY(check_keys(j, p, {"op", "code"}));
  Exit s;
  if (j.contains("code")) {
    auto c = size_value(j.at("code"), p / "code");
    if (!c) return std::unexpected(c.error());
    if (*c > 255) return (p / "code").fail("must be 0..255, found {}", *c);
    s.code = *c;
  }
  return s;
}

Result<Step> parse_fault(const json& j, const Ptr& p, Context&) {
  KVMEM_STEP_TRY(check_keys(j, p, {"op", "kind"}));
  const json* kind = j.contains("kind") ? &j.at("kind") : nullptr;
  for (int f = 0; kind && kind->is_string() && f < kFaultKinds; f++)
    if (*kind == fault_name(static_cast<FaultKind>(f))) return Fault{static_cast<FaultKind>(f)};
  return (p / "kind").fail("expected one of: divide-by-zero, invalid-opcode, breakpoint, unmapped-read, "
                           "halt, unknown-port, spin");
}

// "granule", "stride" and "batch" of a free step whose mode is known.
Status free_sizes(const json& j, const Ptr& p, const Context& cx, Free* s) {
  if (j.contains("granule")) {
    auto g = size_value(j.at("granule"), p / "granule");
    if (!g) return std::unexpected(g.error());
    if (*g == 0 || *g % 4096 != 0) return (p / "granule").fail("must be a non-zero multiple of 4K");
    s->granule = *g;
  }
  if (j.contains("stride")) {
    auto st = size_value(j.at("stride"), p / "stride");
    if (!st) return std::unexpected(st.error());
    if (*st < s->granule || *st % 4096 != 0)
      return (p / "stride").fail("must be a multiple of 4K no smaller than the granule ({:#x})", s->granule);
    s->stride = *st;
  }
  if (s->length % s->stride_or_granule() != 0)
    return (p / "length").fail("{:#x} is not a multiple of the {} ({:#x})", s->length,
                               s->stride ? "stride" : "granule", s->stride_or_granule());
  const uint64_t max_batch = s->mode == FreeMode::kSync ? layout::report_list_entries(cx.vcpus) : layout::free_ring_entries(cx.vcpus);
  if (j.contains("batch")) {
    auto b = size_value(j.at("batch"), p / "batch");
    if (!b) return std::unexpected(b.error());
    if (*b == 0 || *b > max_batch) return (p / "batch").fail("must be 1..{} in this mode, found {}", max_batch, *b);
    s->batch = *b;
  }
  return {};
}

Result<Step> parse_free(const json& j, const Ptr& p, Context& cx) {
  KVMEM_STEP_TRY(check_keys(j, p, {"op", "at", "length", "granule", "stride", "batch", "mode"}));
  Free s;
  auto mode = free_mode(j, p, cx);
  if (!mode) return std::unexpected(mode.error());
  s.mode = *mode;
  KVMEM_STEP_TRY(at_length(j, p, cx, 4096, &s.at, &s.length));
  // A guest gives back only its own RAM: the VMM would refuse a window's
  // pages with -EPERM and the run would fail, so say so now.
  if (s.at >= cx.memory || s.length > cx.memory - s.at)
    return (p / "at").fail("free hands back RAM only; the range at {:#x} of {:#x} bytes lies in a window", s.at,
                           s.length);
  KVMEM_STEP_TRY(free_sizes(j, p, cx, &s));
  return s;
}

Result<Step> parse_report(const json& j, const Ptr& p, Context& cx) {
  KVMEM_STEP_TRY(check_keys(j, p, {"op", "ranges", "expect", "mode"}));
  Report s;
  auto mode = free_mode(j, p, cx);
  if (!mode) return std::unexpected(mode.error());
  s.mode = *mode;
  if (!j.contains("ranges")) return p.fail("missing required key \"ranges\"");
  const json& ranges = j.at("ranges");
  if (!ranges.is_array() || ranges.empty() || ranges.size() > kMaxReportRanges)
    return (p / "ranges").fail("expected an array of 1..{} [address, length] pairs", kMaxReportRanges);
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
  return s;
}

Result<Step> parse_timestamp(const json& j, const Ptr& p, Context& cx) {
  KVMEM_STEP_TRY(check_keys(j, p, {"op", "slot"}));
  auto slot = required_size(j, p, "slot");
  if (!slot) return std::unexpected(slot.error());
  // The slots live in whole pages at the top of RAM, above the boot area.
  const uint64_t room = (cx.memory - abi::kBootAreaEnd) / kPageSize * kPageSize / 8;
  const uint64_t slots = std::min(layout::kMaxResultSlots, room);
  if (*slot >= slots) return (p / "slot").fail("must be 0..{}, found {}", slots - 1, *slot);
  return Timestamp{*slot};
}

Result<Step> parse_out(const json& j, const Ptr& p, Context&) {
  KVMEM_STEP_TRY(check_keys(j, p, {"op", "port", "value"}));
  auto port = required_size(j, p, "port");
  if (!port) return std::unexpected(port.error());
  if (*port > 0xff) return (p / "port").fail("must be 0..255, found {}", *port);
  Out s;
  s.port = static_cast<uint8_t>(*port);
  if (j.contains("value")) {
    auto v = size_value(j.at("value"), p / "value");
    if (!v) return std::unexpected(v.error());
    if (*v > UINT32_MAX) return (p / "value").fail("must fit in 32 bits");
    s.value = static_cast<uint32_t>(*v);
  }
  return s;
}

// A 64-bit word: an integer, or a string of decimal or 0x-hex digits, so a
// value past 2^53 survives JSON tools that hold numbers as doubles.
Result<uint64_t> word_value(const json& j, const Ptr& p) {
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  if (j.is_number_integer() && j.get<int64_t>() >= 0) return static_cast<uint64_t>(j.get<int64_t>());
  if (j.is_string()) {
    uint64_t v = 0;
    const std::errc ec = parse_unsigned(j.get_ref<const std::string&>(), &v);
    if (ec == std::errc()) return v;
    if (ec == std::errc::result_out_of_range) return p.fail("\"{}\" does not fit in 64 bits", j.get<std::string>());
  }
  return p.fail("expected a 64-bit word: an integer from 0 to 2^64 - 1, or a string such as \"0xfeedf00d\"");
}

// "at": one aligned word of RAM or of a window, as fill's range would be.
Status word_at(const json& j, const Ptr& p, const Context& cx, uint64_t* at) {
  auto a = required_size(j, p, "at");
  if (!a) return std::unexpected(a.error());
  *at = *a;
  return check_range(j, p, cx, *at, 8, 8);
}

Result<Step> parse_store_word(const json& j, const Ptr& p, Context& cx) {
  KVMEM_STEP_TRY(check_keys(j, p, {"op", "at", "value"}));
  StoreWord s;
  KVMEM_STEP_TRY(word_at(j, p, cx, &s.at));
  if (!j.contains("value")) return p.fail("missing required key \"value\"");
  auto v = word_value(j.at("value"), p / "value");
  if (!v) return std::unexpected(v.error());
  s.value = *v;
  return s;
}

Result<Step> parse_wait_word(const json& j, const Ptr& p, Context& cx) {
  KVMEM_STEP_TRY(check_keys(j, p, {"op", "at", "value", "timeout_ms"}));
  WaitWord s;
  KVMEM_STEP_TRY(word_at(j, p, cx, &s.at));
  if (!j.contains("value")) return p.fail("missing required key \"value\"");
  auto v = word_value(j.at("value"), p / "value");
  if (!v) return std::unexpected(v.error());
  s.value = *v;
  // No longer than a VM may run: a wait the watchdog would cut short ends
  // as a timeout of the whole run, not as this step's failure.
  auto t = required_size(j, p, "timeout_ms");
  if (!t) return std::unexpected(t.error());
  if (*t == 0 || *t > kMaxTimeoutMs) return (p / "timeout_ms").fail("must be 1..{}, found {}", kMaxTimeoutMs, *t);
  s.timeout_ms = *t;
  return s;
}

Result<Step> parse_barrier(const json& j, const Ptr& p, Context&) {
  KVMEM_STEP_TRY(check_keys(j, p, {"op", "timeout_ms"}));
  Barrier s;
  if (j.contains("timeout_ms")) {
    // As for wait_word: no longer than a VM may run.
    auto t = size_value(j.at("timeout_ms"), p / "timeout_ms");
    if (!t) return std::unexpected(t.error());
    if (*t == 0 || *t > kMaxTimeoutMs) return (p / "timeout_ms").fail("must be 1..{}, found {}", kMaxTimeoutMs, *t);
    s.timeout_ms = *t;
  }
  return s;
}

Result<Step> parse_snapshot(const json& j, const Ptr& p, Context&) {
  KVMEM_STEP_TRY(check_keys(j, p, {"op", "then"}));
  Snapshot s;
  if (j.contains("then")) {
    if (j.at("then") == "exit") s.exit = true;
    else if (j.at("then") != "continue") return (p / "then").fail("expected \"continue\" or \"exit\"");
  }
  return s;
}

using Parser = Result<Step> (*)(const json&, const Ptr&, Context&);
struct OpParser {
  const char* name;
  Parser parse;
};
constexpr OpParser kParsers[] = {
    {"print", parse_print},   {"fill", parse_fill},     {"touch", parse_touch},   {"verify", parse_verify},
    {"loop", parse_loop},     {"hypercall", parse_hypercall}, {"exit", parse_exit}, {"fault", parse_fault},
    {"free", parse_free},     {"report", parse_report}, {"out", parse_out},       {"timestamp", parse_timestamp},
    {"store_word", parse_store_word}, {"wait_word", parse_wait_word}, {"barrier", parse_barrier},
    {"snapshot", parse_snapshot},
};
static_assert(std::size(kParsers) == std::variant_size_v<StepVariant>, "one parser per op");

Result<Step> parse_step(const json& j, const Ptr& p, Context& cx) {
  if (++cx.steps > kMaxSteps) return p.fail("too many steps (at most {})", kMaxSteps);
  if (!j.is_object()) return p.fail("expected a step object, found {}", j.type_name());
  if (!j.contains("op")) return p.fail("missing required key \"op\"");
  const json& op = j.at("op");
  if (!op.is_string()) return (p / "op").fail("expected a string, found {}", op.type_name());
  for (const OpParser& parser : kParsers)
    if (op == parser.name) return parser.parse(j, p, cx);
  return (p / "op").fail("unknown step \"{}\" (expected print, fill, touch, verify, loop, hypercall, exit, fault, "
                         "free, report, out, timestamp, store_word, wait_word, barrier or snapshot)",
                         op.get<std::string>());
}

Result<std::vector<Step>> parse_list(const json& j, const Ptr& p, Context& cx) {
  if (!j.is_array()) return p.fail("expected an array of steps, found {}", j.type_name());
  std::vector<Step> out;
  for (size_t i = 0; i < j.size(); i++) {
    auto s = parse_step(j[i], p / i, cx);
    if (!s) return std::unexpected(s.error());
    out.push_back(std::move(*s));
  }
  return out;
}

// RAM above the boot area, where result slots may go.
uint64_t memory_above_boot(uint64_t ram) { return ram > abi::kBootAreaEnd ? ram - abi::kBootAreaEnd : 0; }

// No step of `steps` (at pointer p) walks memory in `reserved`.
Status check_clear_of(const std::vector<Step>& steps, const Ptr& p, GuestRange reserved, const char* what) {
  for (size_t i = 0; i < steps.size(); i++) {
    if (const auto* l = std::get_if<Loop>(&steps[i])) {
      KVMEM_STEP_TRY(check_clear_of(l->body, p / i / "body", reserved, what));
      continue;
    }
    const auto walked = memory_walked(steps[i]);
    if (walked && walked->overlaps(reserved))
      return (p / i).fail("{} {} overlaps {}, {}", op_name(steps[i]), *walked, reserved, what);
    if (const auto* t = std::get_if<Touch>(&steps[i]); t && t->samples) {
      const GuestRange samples(t->samples, t->samples + t->accesses() * 8);
      if (samples.overlaps(reserved))
        return (p / i / "samples").fail("the samples {} overlap {}, {}", samples, reserved, what);
    }
  }
  return {};
}

}  // namespace

Result<std::vector<Step>> parse_program(const json& j, const Ptr& p, const GuestLayout& layout) {
  const uint64_t memory = layout.ram;
  Context cx{memory, &layout.windows, layout.vcpus};
  auto steps = parse_list(j, p, cx);
  if (!steps) return steps;
  if (const uint64_t slots = result_slots_used(*steps))
    KVMEM_STEP_TRY(check_clear_of(*steps, p, layout::result_slots_range(memory, slots),
                                  "the result slots of the program's timestamp steps at the top of RAM"));
  return steps;
}

Result<std::vector<std::vector<Step>>> parse_programs(const json& vm, const Ptr& root, const GuestLayout& layout) {
  const bool one = vm.contains("program"), many = vm.contains("programs");
  if (one == many) return root.fail("expected exactly one of \"program\" (every vCPU runs it) and \"programs\" (one per vCPU)");
  if (one) {
    // Every vCPU runs the same steps, so they pass the same barriers.
    std::vector<std::vector<Step>> out;
    out.push_back(KVMEM_TRY(parse_program(vm.at("program"), root / "program", layout)));
    const uint64_t bytes = layout::result_slots_bytes(result_slots_used(out[0])) * layout.vcpus;
    if (layout.vcpus > 1 && bytes) {
      if (bytes > memory_above_boot(layout.ram))
        return (root / "program").fail("the result slots of {} vCPUs ({:#x} bytes) do not fit in RAM", layout.vcpus, bytes);
      KVMEM_STEP_TRY(check_clear_of(out[0], root / "program", GuestRange(layout.ram - bytes, layout.ram),
                                    "the result slots of every vCPU's timestamp steps at the top of RAM"));
    }
    return out;
  }
  const Ptr p = root / "programs";
  const json& j = vm.at("programs");
  if (!j.is_array() || j.size() != layout.vcpus)
    return p.fail("expected an array of {} step arrays, one per vCPU", layout.vcpus);
  Context cx{layout.ram, &layout.windows, layout.vcpus};  // shared: kMaxSteps bounds them all
  std::vector<std::vector<Step>> out;
  uint64_t bytes = 0;
  for (size_t i = 0; i < j.size(); i++) {
    out.push_back(KVMEM_TRY(parse_list(j[i], p / i, cx)));
    bytes += layout::result_slots_bytes(result_slots_used(out.back()));
    if (bytes > memory_above_boot(layout.ram))
      return (p / i).fail("the result slots of vCPUs 0..{} ({:#x} bytes) do not fit in RAM", i, bytes);
  }
  for (size_t i = 0; i < out.size(); i++) {
    if (bytes)
      KVMEM_STEP_TRY(check_clear_of(out[i], p / i, GuestRange(layout.ram - bytes, layout.ram),
                                    "the result slots of every vCPU's timestamp steps at the top of RAM"));
    if (barriers_passed(out[i]) != barriers_passed(out[0]))
      return (p / i).fail("vCPU {} passes {} barriers and vCPU 0 passes {}: every vCPU must pass the same number",
                          i, barriers_passed(out[i]), barriers_passed(out[0]));
    if (snapshots_passed(out[i]) != snapshots_passed(out[0]))
      return (p / i).fail("vCPU {} passes {} snapshot steps and vCPU 0 passes {}: every vCPU must pass the same "
                          "number (a snapshot is taken when all have reached one)",
                          i, snapshots_passed(out[i]), snapshots_passed(out[0]));
  }
  return out;
}

}  // namespace kvmem
