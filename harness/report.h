// The JSON reports kvmem prints, and how untrusted text reaches a reader.
//
// One writer per report, one list of keys: every VM object of `run --json`
// has exactly kVmReportKeys, whatever its outcome, with null where a key
// does not apply (docs/report.md says what each means). Every report goes
// out through dump_report(), which never throws: guest console bytes and
// error text are untrusted bytes, and invalid UTF-8 in them becomes U+FFFD.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace kvmem {

struct VmOutcome;
struct RunTotals;
struct StressSummary;

// The keys of one VM's object in `run --json` (the library writes them sorted).
inline constexpr std::array<const char*, 26> kVmReportKeys = {
    "name",           "outcome",           "failure",           "exit_code",           "guest_exit_code",   "message",
    "memory_bytes",   "backing",           "prefault",   "console",           "console_dropped_bytes", "exits",           "hypercalls",
    "hypercalls_unknown", "hypercalls_invalid", "memslots",    "committed_bytes",     "host_committed_bytes",
    "free_reports",   "free_ranges",       "free_ranges_invalid", "bytes_reported_free", "bytes_decommitted",
    "run_ms",         "timestamps",        "vcpu_timestamps"};

// The keys of `run --json`'s top level and of its "memory" object.
inline constexpr std::array<const char*, 5> kRunReportKeys = {"exit_code", "vms", "files", "memory", "wall_ms"};
// The keys of each object of `run --json`'s "files".
inline constexpr std::array<const char*, 4> kRunFileKeys = {"name", "size", "allocated_bytes", "seals"};
inline constexpr std::array<const char*, 7> kRunMemoryKeys = {
    "peak_host_committed_bytes", "limit_bytes", "limit", "limit_stops", "limit_error", "committed_bytes_after",
    "host_committed_bytes_after"};

nlohmann::json vm_report(const VmOutcome& vm);
nlohmann::json run_report(const RunTotals& totals);
nlohmann::json stress_report(const StressSummary& summary);

// One line of JSON; invalid UTF-8 anywhere in it is replaced, never thrown.
std::string dump_report(const nlohmann::json& j);

// Bytes as valid UTF-8: each invalid sequence becomes U+FFFD.
std::string valid_utf8(std::string_view bytes);

// Untrusted text made safe for a terminal: valid UTF-8 (as valid_utf8),
// and every control character but \n and \t written as \xNN, so that an
// ESC sequence from a guest reaches the user as text, not as a command.
std::string terminal_safe(std::string_view bytes);

// terminal_safe() for text that arrives in pieces: a UTF-8 sequence split
// between two pieces is held back until its end arrives.
class TerminalText {
 public:
  std::string feed(std::string_view bytes);
  std::string finish();  // whatever is held back, made safe

 private:
  std::string held_;
};

}  // namespace kvmem
