#include "config/vm_json.h"

namespace kvmem {
namespace {

using json = nlohmann::json;
using namespace guest;

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};

const char* mode_name(FreeMode m) { return m == FreeMode::kAsync ? "async" : "sync"; }

json steps_json(const std::vector<Step>& steps) {
  json out = json::array();
  for (const Step& s : steps) out.push_back(step_json(s));
  return out;
}

template <class RangeStep>
json range_json(const char* op, const RangeStep& s) {
  return {{"op", op}, {"at", s.at}, {"length", s.length}, {"pattern", pattern_json(s.pattern)}};
}

}  // namespace

json pattern_json(const Pattern& p) {
  switch (p.kind) {
    case Pattern::Kind::kZero: return "zero";
    case Pattern::Kind::kByte: return {{"byte", p.arg}};
    case Pattern::Kind::kAddress:
      if (!p.origin) return "address";
      return {{"address", true}, {"origin", p.origin}};
    case Pattern::Kind::kSeed: {
      json j = {{"seed", p.arg}};
      if (p.origin) j["origin"] = p.origin;
      return j;
    }
  }
  return "zero";
}

json step_json(const Step& step) {
  return std::visit(
      Overloaded{
          [](const Print& s) -> json { return {{"op", "print"}, {"text", s.text}}; },
          [](const Fill& s) -> json { return range_json("fill", s); },
          [](const Verify& s) -> json { return range_json("verify", s); },
          [](const Touch& s) -> json {
            json j = {{"op", "touch"},   {"at", s.at},       {"length", s.length},
                      {"stride", s.stride}, {"write", s.write}, {"pattern", pattern_json(s.pattern)}};
            if (s.samples) j["samples"] = s.samples;
            return j;
          },
          [](const Loop& s) -> json { return {{"op", "loop"}, {"count", s.count}, {"body", steps_json(s.body)}}; },
          [](const Hypercall& s) -> json {
            json j = {{"op", "hypercall"}, {"nr", s.nr}, {"args", s.args}};
            if (s.expect) j["expect"] = *s.expect;
            return j;
          },
          [](const Exit& s) -> json { return {{"op", "exit"}, {"code", s.code}}; },
          [](const Fault& s) -> json { return {{"op", "fault"}, {"kind", fault_name(s.kind)}}; },
          [](const Free& s) -> json {
            json j = {{"op", "free"},          {"at", s.at},       {"length", s.length},
                      {"granule", s.granule}, {"batch", s.batch}, {"mode", mode_name(s.mode)}};
            if (s.stride) j["stride"] = s.stride;
            return j;
          },
          [](const Report& s) -> json {
            json ranges = json::array(), expect = json::array();
            bool any = false;
            for (const auto& [gpa, length] : s.ranges) ranges.push_back(json::array({gpa, length}));
            for (const auto& e : s.expects) {
              expect.push_back(e ? json(*e) : json());
              any = any || e.has_value();
            }
            json j = {{"op", "report"}, {"ranges", std::move(ranges)}, {"mode", mode_name(s.mode)}};
            if (any) j["expect"] = std::move(expect);
            return j;
          },
          [](const Out& s) -> json { return {{"op", "out"}, {"port", s.port}, {"value", s.value}}; },
          [](const Timestamp& s) -> json { return {{"op", "timestamp"}, {"slot", s.slot}}; },
          [](const StoreWord& s) -> json { return {{"op", "store_word"}, {"at", s.at}, {"value", s.value}}; },
          [](const WaitWord& s) -> json {
            return {{"op", "wait_word"}, {"at", s.at}, {"value", s.value}, {"timeout_ms", s.timeout_ms}};
          },
          [](const Barrier& s) -> json {
            json j = {{"op", "barrier"}};
            if (s.timeout_ms) j["timeout_ms"] = s.timeout_ms;
            return j;
          },
          [](const Snapshot& s) -> json { return {{"op", "snapshot"}, {"then", s.exit ? "exit" : "continue"}}; },
      },
      static_cast<const StepVariant&>(step));
}

json vm_config_json(const VmConfig& c) {
  json j = {{"name", c.name},
            {"memory", c.memory},
            {"vcpus", c.vcpus},
            {"timeout_ms", c.timeout_ms},
            {"guest_page_size", c.page_size == PageSize::k1G ? "1G" : "2M"},
            {"ram_unit", c.ram_unit},
            {"backing", ram_backing_name(c.backing)},
            {"prefault", prefault_name(c.prefault)}};
  // The parser takes these only with the prefault they serve.
  if (c.prefault == Prefault::kAhead) {
    j["prefault_threads"] = c.prefault_threads;
    j["prefault_chunk"] = c.prefault_chunk;
  }
  if (c.prefault != Prefault::kNone && !c.prefault_lanes.empty()) {
    json lanes = json::array();
    for (const GuestRange& l : c.prefault_lanes) lanes.push_back({{"at", l.start}, {"length", l.end - l.start}});
    j["prefault_lanes"] = std::move(lanes);
  }
  if (!c.windows.empty()) {
    json windows = json::array();
    for (const WindowConfig& w : c.windows)
      windows.push_back(
          {{"file", w.file}, {"at", w.at}, {"offset", w.offset}, {"length", w.length}, {"writable", w.writable}});
    j["windows"] = std::move(windows);
  }
  if (c.programs.empty()) {
    j["program"] = steps_json(c.program);
  } else {
    json programs = json::array();
    for (const auto& p : c.programs) programs.push_back(steps_json(p));
    j["programs"] = std::move(programs);
  }
  return j;
}

Result<std::string> vm_config_source(const VmConfig& c) {
  try {
    return vm_config_json(c).dump();
  } catch (const json::exception& e) {  // type_error 316: a string that is not UTF-8
    return fail("the config of VM {} cannot be written as JSON: {}", c.name, e.what());
  }
}

}  // namespace kvmem
