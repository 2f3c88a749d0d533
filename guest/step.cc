#include "guest/step.h"

#include <algorithm>

#include <fmt/format.h>

namespace kvmem::guest {
namespace {

constexpr uint64_t kMix1 = 0xff51afd7ed558ccdull;
constexpr uint64_t kMix2 = 0xc4ceb9fe1a85ec53ull;

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};

}  // namespace

uint64_t seed_mix(uint64_t addr, uint64_t seed) {
  uint64_t x = addr ^ seed;
  x ^= x >> 33;
  x *= kMix1;
  x ^= x >> 33;
  x *= kMix2;
  x ^= x >> 33;
  return x;
}

uint64_t Pattern::word(uint64_t gpa) const {
  const uint64_t a = gpa - origin;  // wraps as the guest's `sub` does
  switch (kind) {
    case Kind::kZero: return 0;
    case Kind::kAddress: return a;
    case Kind::kSeed: return seed_mix(a, arg);
    case Kind::kByte: return (arg & 0xff) * 0x0101010101010101ull;
  }
  return 0;
}

std::string Pattern::describe() const {
  const std::string from = origin ? fmt::format(" from {:#x}", origin) : "";
  switch (kind) {
    case Kind::kZero: return "zero";
    case Kind::kAddress: return "address" + from;
    case Kind::kSeed: return fmt::format("seed {}{}", arg, from);
    case Kind::kByte: return fmt::format("byte {:#04x}", arg);
  }
  return "?";
}

const char* op_name(const Step& s) {
  return std::visit(Overloaded{[](const Print&) { return "print"; }, [](const Fill&) { return "fill"; },
                               [](const Touch&) { return "touch"; }, [](const Verify&) { return "verify"; },
                               [](const Loop&) { return "loop"; }, [](const Hypercall&) { return "hypercall"; },
                               [](const Exit&) { return "exit"; }, [](const Fault&) { return "fault"; },
                               [](const Free&) { return "free"; }, [](const Report&) { return "report"; },
                               [](const Out&) { return "out"; }, [](const Timestamp&) { return "timestamp"; },
                               [](const StoreWord&) { return "store_word"; },
                               [](const WaitWord&) { return "wait_word"; },
                               [](const Barrier&) { return "barrier"; }, [](const Snapshot&) { return "snapshot"; }},
                    s);
}

const char* fault_name(FaultKind f) {
  switch (f) {
    case FaultKind::kDivideByZero: return "divide-by-zero";
    case FaultKind::kInvalidOpcode: return "invalid-opcode";
    case FaultKind::kBreakpoint: return "breakpoint";
    case FaultKind::kUnmappedRead: return "unmapped-read";
    case FaultKind::kHalt: return "halt";
    case FaultKind::kUnknownPort: return "unknown-port";
    case FaultKind::kSpin: return "spin";
  }
  return "?";
}

bool uses_free_ring(const std::vector<Step>& steps) {
  return std::any_of(steps.begin(), steps.end(), [](const Step& s) {
    if (const auto* f = std::get_if<Free>(&s)) return f->mode == FreeMode::kAsync;
    if (const auto* r = std::get_if<Report>(&s)) return r->mode == FreeMode::kAsync;
    if (const auto* l = std::get_if<Loop>(&s)) return uses_free_ring(l->body);
    return false;
  });
}

bool uses_boot_info(const std::vector<Step>& steps) {
  return std::any_of(steps.begin(), steps.end(), [](const Step& s) {
    if (const auto* l = std::get_if<Loop>(&s)) return uses_boot_info(l->body);
    return s.is<WaitWord>() || (s.is<Barrier>() && s.as<Barrier>().timeout_ms);
  });
}

uint64_t last_touched(const Touch& t) { return t.at + (t.length - 1) / t.stride * t.stride; }

std::optional<GuestRange> memory_walked(const Step& s) {
  if (const auto* f = std::get_if<Fill>(&s)) return GuestRange(f->at, f->at + f->length);
  if (const auto* v = std::get_if<Verify>(&s)) return GuestRange(v->at, v->at + v->length);
  if (const auto* t = std::get_if<Touch>(&s)) return GuestRange(t->at, last_touched(*t) + 8);
  if (const auto* fr = std::get_if<Free>(&s)) return GuestRange(fr->at, fr->at + fr->length);
  if (const auto* st = std::get_if<StoreWord>(&s)) return GuestRange(st->at, st->at + 8);
  if (const auto* w = std::get_if<WaitWord>(&s)) return GuestRange(w->at, w->at + 8);
  return std::nullopt;
}

uint64_t result_slots_used(const std::vector<Step>& steps) {
  uint64_t used = 0;
  for (const Step& s : steps) {
    if (const auto* t = std::get_if<Timestamp>(&s)) used = std::max(used, t->slot == UINT64_MAX ? t->slot : t->slot + 1);
    if (const auto* l = std::get_if<Loop>(&s)) used = std::max(used, result_slots_used(l->body));
  }
  return used;
}

namespace {

template <class Op>
uint64_t passed(const std::vector<Step>& steps) {
  uint64_t n = 0;
  for (const Step& s : steps) {
    uint64_t add = s.is<Op>() ? 1 : 0;
    if (const auto* l = std::get_if<Loop>(&s)) {
      const uint64_t body = passed<Op>(l->body);
      add = body && l->count > UINT64_MAX / body ? UINT64_MAX : body * l->count;
    }
    n = add > UINT64_MAX - n ? UINT64_MAX : n + add;
  }
  return n;
}

}  // namespace

uint64_t barriers_passed(const std::vector<Step>& steps) { return passed<Barrier>(steps); }
uint64_t snapshots_passed(const std::vector<Step>& steps) { return passed<Snapshot>(steps); }

namespace {

void collect_barrier_steps(const std::vector<Step>& steps, const std::string& prefix, std::vector<std::string>& out) {
  for (size_t i = 0; i < steps.size(); i++) {
    const std::string here = prefix + std::to_string(i);
    if (steps[i].is<Barrier>()) out.push_back(here);
    if (const auto* l = std::get_if<Loop>(&steps[i])) collect_barrier_steps(l->body, here + "/body/", out);
  }
}

}  // namespace

std::vector<std::string> barrier_steps(const std::vector<Step>& steps) {
  std::vector<std::string> out;
  collect_barrier_steps(steps, "", out);
  return out;
}

bool uses_barrier(const std::vector<Step>& steps) {
  return std::any_of(steps.begin(), steps.end(), [](const Step& s) {
    if (const auto* l = std::get_if<Loop>(&s)) return uses_barrier(l->body);
    return s.is<Barrier>();
  });
}

}  // namespace kvmem::guest
