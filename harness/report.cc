#include "harness/report.h"

#include <algorithm>

#include "memory/tmpfs/regular_file.h"

#include "harness/runner.h"
#include "harness/stress.h"
#include "vmm/failure.h"
#include "vmm/hypercalls.h"

namespace kvmem {
namespace {

using json = nlohmann::json;

// The length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF), 0 if there is
// none, or -1 if s ends inside what could still become one.
int utf8_sequence(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  int n;
  unsigned char lo = 0x80, hi = 0xbf;  // the range of the second byte
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c == 0xe0) n = 3, lo = 0xa0;
  else if (c == 0xed) n = 3, hi = 0x9f;
  else if (c >= 0xe1 && c <= 0xef) n = 3;
  else if (c == 0xf0) n = 4, lo = 0x90;
  else if (c >= 0xf1 && c <= 0xf3) n = 4;
  else if (c == 0xf4) n = 4, hi = 0x8f;
  else return 0;
  for (int k = 1; k < n; k++) {
    if (i + static_cast<size_t>(k) >= s.size()) return -1;
    const unsigned char x = b(static_cast<size_t>(k));
    if (k == 1 ? (x < lo || x > hi) : (x < 0x80 || x > 0xbf)) return 0;
  }
  return n;
}

constexpr std::string_view kReplacement = "\xef\xbf\xbd";  // U+FFFD

// Appends s made safe to out; returns how many bytes at the end were held
// back because they may begin a sequence that a later piece completes.
size_t append_safe(std::string_view s, bool for_terminal, bool hold_tail, std::string& out) {
  for (size_t i = 0; i < s.size();) {
    const int n = utf8_sequence(s, i);
    if (n == -1 && hold_tail) return s.size() - i;
    if (n <= 0) {
      out += kReplacement;
      i++;
      continue;
    }
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (for_terminal && n == 1 && (c < 0x20 || c == 0x7f) && c != '\n' && c != '\t')
      out += fmt::format("\\x{:02x}", c);
    else
      out.append(s.substr(i, static_cast<size_t>(n)));
    i += static_cast<size_t>(n);
  }
  return 0;
}

}  // namespace

std::string valid_utf8(std::string_view bytes) {
  std::string out;
  append_safe(bytes, false, false, out);
  return out;
}

std::string terminal_safe(std::string_view bytes) {
  std::string out;
  append_safe(bytes, true, false, out);
  return out;
}

std::string TerminalText::feed(std::string_view bytes) {
  held_.append(bytes);
  std::string out;
  const size_t kept = append_safe(held_, true, true, out);
  held_.erase(0, held_.size() - kept);
  return out;
}

std::string TerminalText::finish() {
  std::string out = terminal_safe(held_);
  held_.clear();
  return out;
}

std::string dump_report(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json vm_report(const VmOutcome& v) {
  json j = json::object();
  for (const char* key : kVmReportKeys) j[key] = nullptr;
  j["name"] = v.name;
  j["exit_code"] = v.exit_code();
  j["memory_bytes"] = v.memory_bytes;
  j["backing"] = ram_backing_name(v.backing);
  if (!v.setup_error.empty()) {
    j["outcome"] = "not_started";
    j["message"] = v.setup_error;
    return j;
  }
  const RunResult& r = v.result;
  json hc = json::object();
  for (uint32_t i = 0; i < abi::kHypercallCount; i++)
    if (r.hypercalls.calls[i]) hc[hypercall_name(i)] = r.hypercalls.calls[i];
  j["outcome"] = r.outcome_name();
  j["failure"] = failure_kind_name(r.failure);
  if (r.outcome == RunResult::Outcome::kExited) j["guest_exit_code"] = r.guest_exit_code;
  if (!r.message.empty()) j["message"] = r.message;
  j["console"] = r.console;
  j["console_dropped_bytes"] = r.console_dropped_bytes;
  j["exits"] = r.exits;
  j["hypercalls"] = hc;
  j["hypercalls_unknown"] = r.hypercalls.unknown;
  j["hypercalls_invalid"] = r.hypercalls.invalid;
  j["memslots"] = v.memslots;
  j["committed_bytes"] = v.committed_bytes;
  j["host_committed_bytes"] = v.host_committed_bytes;
  j["free_reports"] = r.free_reports;
  j["free_ranges"] = r.free_ranges;
  j["free_ranges_invalid"] = r.free_ranges_invalid;
  j["bytes_reported_free"] = r.bytes_reported_free;
  j["bytes_decommitted"] = r.bytes_decommitted;
  j["run_ms"] = r.run_ms;
  if (r.prefault.mode != Prefault::kNone) {
    const PrefaultStats& p = r.prefault;
    json pf = json::object();
    pf["mode"] = prefault_name(p.mode);
    pf["bytes"] = p.bytes;
    pf["wall_ms"] = p.wall_ms;
    pf["cpu_ms"] = p.cpu_ms;
    pf["threads"] = p.threads;
    pf["errors"] = p.errors;
    pf["error"] = p.error.empty() ? json(nullptr) : json(p.error);
    pf["stopped"] = p.stopped;
    j["prefault"] = std::move(pf);
  }
  if (!r.timestamps.empty()) j["timestamps"] = r.timestamps;
  // A VM of several vCPUs whose programs write timestamps: every vCPU's.
  if (r.vcpu_timestamps.size() > 1 &&
      std::any_of(r.vcpu_timestamps.begin(), r.vcpu_timestamps.end(), [](const auto& t) { return !t.empty(); }))
    j["vcpu_timestamps"] = r.vcpu_timestamps;
  return j;
}

json run_report(const RunTotals& t) {
  json list = json::array();
  for (const VmOutcome& v : t.vms) list.push_back(vm_report(v));
  json memory = json::object();
  memory["peak_host_committed_bytes"] = t.peak_committed_bytes;
  memory["limit_bytes"] = t.memory_limit.none() ? json(nullptr) : json(t.memory_limit.tightest().bytes);
  memory["limit"] = t.memory_limit.none() ? json(nullptr) : json(t.memory_limit.tightest().describe());
  memory["limit_stops"] = t.memory_limit_stops;
  memory["limit_error"] = t.memory_limit_error.empty() ? json(nullptr) : json(t.memory_limit_error);
  memory["committed_bytes_after"] = t.committed_bytes_after;
  memory["host_committed_bytes_after"] = t.host_committed_bytes_after;
  json files = json::array();
  for (const FileOutcome& f : t.files) {
    json seals = json::array();
    for (const std::string& s : tmpfs::seal_names(f.seals)) seals.push_back(s);
    files.push_back({{"name", f.name}, {"size", f.size}, {"allocated_bytes", f.allocated_bytes}, {"seals", seals}});
  }
  return {{"exit_code", t.exit_code()}, {"vms", list}, {"files", files}, {"memory", memory}, {"wall_ms", t.wall_ms}};
}

json stress_report(const StressSummary& s) {
  const double gib_reclaimed = static_cast<double>(s.bytes_reclaimed) / (1ull << 30);
  json j = json::object();
  j["exit_code"] = s.exit_code();
  j["seed"] = s.seed;
  j["seed_string"] = std::to_string(s.seed);  // JSON tools round integers above 2^53
  j["rounds"] = s.rounds;
  j["vms_booted"] = s.vms_booted;
  j["vcpus_booted"] = s.vcpus_booted;
  j["bytes_written"] = s.bytes_written;
  j["bytes_freed"] = s.bytes_freed;
  j["bytes_reclaimed"] = s.bytes_reclaimed;
  j["baseline_commit_bytes"] = s.baseline_commit_bytes;
  j["peak_commit_bytes"] = s.peak_commit_bytes;
  j["final_commit_bytes"] = s.final_commit_bytes;
  j["commit_budget_bytes"] = s.commit_budget_bytes;
  j["budget_exceeded"] = s.budget_exceeded;
  j["integrity_errors"] = s.integrity_errors;
  j["vm_failures"] = s.vm_failures;
  j["commit_leaks"] = s.commit_leaks;
  j["vm_leaks"] = s.vm_leaks;
  json backings = json::object();
  for (const StressBackingTally& t : s.backings) {
    json& b = backings[ram_backing_name(t.backing)];  // key by key: see problems below
    b["vms"] = t.vms;
    b["failed"] = t.failed;
  }
  j["backings"] = std::move(backings);
  j["snapshots"] = {{"vms", s.snapshot_vms},
                    {"taken", s.snapshots_taken},
                    {"restored_lazy", s.restored_lazy},
                    {"restored_eager", s.restored_eager},
                    {"snapshot_failures", s.snapshot_failures},
                    {"restore_failures", s.restore_failures},
                    {"dir", s.snapshot_dir.empty() ? json() : json(s.snapshot_dir)}};
  j["elapsed_s"] = s.elapsed_s;
  j["vms_per_s"] = s.elapsed_s > 0 ? static_cast<double>(s.vms_booted) / s.elapsed_s : 0.0;
  j["gib_reclaimed_per_s"] = s.elapsed_s > 0 ? gib_reclaimed / s.elapsed_s : 0.0;
  // Element by element: converting the vector whole trips a false
  // -Warray-bounds in GCC 12 with JSON_DIAGNOSTICS.
  json problems = json::array();
  for (const std::string& p : s.problems) problems.push_back(p);
  j["problems"] = std::move(problems);
  return j;
}

}  // namespace kvmem
