// `kvmem bench fault` (bench/fault.h): cycles to nanoseconds, the JSON
// latency objects, the host facts and the table.
#include <sys/utsname.h>

#include <filesystem>
#include <thread>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "bench/fault.h"
#include "bench/table.h"

namespace kvmem {
namespace {

using json = nlohmann::json;

std::string first_line(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  std::getline(f, line);
  return line;
}

// The value after "key:" in a file of "key: value" lines (/proc/cpuinfo,
// /proc/meminfo), trimmed; empty when absent.
std::string keyed(const std::string& path, const std::string& key) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string k = line.substr(0, colon);
    while (!k.empty() && (k.back() == ' ' || k.back() == '\t')) k.pop_back();
    if (k != key) continue;
    std::string v = line.substr(colon + 1);
    const size_t b = v.find_first_not_of(" \t");
    return b == std::string::npos ? "" : v.substr(b);
  }
  return "";
}

// PVM, VMX or SVM, from the modules that are loaded.
std::string kvm_flavour() {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists("/sys/module/kvm_pvm", ec)) return "pvm";
  if (fs::exists("/sys/module/kvm_intel", ec)) return "vmx";
  if (fs::exists("/sys/module/kvm_amd", ec)) return "svm";
  return "unknown";
}

std::string cell_us(const json& lat, const char* key) {
  if (!lat.is_object() || !lat.contains(key) || !lat[key].is_number()) return "-";
  return fixed(lat[key].get<double>() / 1000.0, 2);
}

std::string cell(const json& v, int digits) { return v.is_number() ? fixed(v.get<double>(), digits) : "-"; }

}  // namespace

double ticks_to_ns(uint64_t ticks, uint64_t tsc_khz) {
  // ticks / (khz · 1000) s = ticks · 1e6 / khz ns; in double, exact enough
  // for any count of ticks a benchmark sees.
  return static_cast<double>(ticks) * 1e6 / static_cast<double>(tsc_khz);
}

json latency_json(const Summary& s, double total_ms) {
  if (s.count == 0)
    return {{"p50", nullptr}, {"p90", nullptr}, {"p99", nullptr}, {"p999", nullptr},
            {"max", nullptr}, {"mean", nullptr}, {"total_ms", nullptr}, {"count", 0}};
  return {{"p50", s.p50}, {"p90", s.p90},   {"p99", s.p99},           {"p999", s.p999},
          {"max", s.max}, {"mean", s.mean}, {"total_ms", total_ms}, {"count", s.count}};
}

json fault_host_facts(uint64_t tsc_khz, const std::string& tsc_source) {
  utsname u{};
  std::string kernel = uname(&u) == 0 ? fmt::format("{} {}", u.sysname, u.release) : "unknown";
  auto number = [](const std::string& s) -> json {
    std::istringstream in(s);
    long v = -1;
    if (in >> v && v >= 0) return v;
    return nullptr;
  };
  return {{"kernel", kernel},
          {"kvm", kvm_flavour()},
          {"cpu", keyed("/proc/cpuinfo", "model name")},
          {"cpus", std::thread::hardware_concurrency()},
          {"thp_enabled", first_line("/sys/kernel/mm/transparent_hugepage/enabled")},
          {"thp_shmem_enabled", first_line("/sys/kernel/mm/transparent_hugepage/shmem_enabled")},
          {"hugepages_total", number(keyed("/proc/meminfo", "HugePages_Total"))},
          {"hugepages_free", number(keyed("/proc/meminfo", "HugePages_Free"))},
          {"tsc_khz", tsc_khz},
          {"tsc_source", tsc_source}};
}

std::string format_fault_bench(const std::vector<json>& rows) {
  Table t({{"backing", "", TableColumn::Align::kLeft},
           {"prefault", "", TableColumn::Align::kLeft},
           {"vcpus"},
           {"p50", "us"},
           {"p90", "us"},
           {"p99", "us"},
           {"p99.9", "us"},
           {"max", "us"},
           {"total", "ms"},
           {"host p50", "us"},
           {"host total", "ms"},
           {"prefaulted p50", "us"},
           {"2nd pass p50", "us"},
           {"ratio p50"},
           {"ratio total"},
           {"exits"},
           {"prefault cpu", "ms"}});
  std::string notes, selftest;
  for (const json& r : rows) {
    if (r.contains("error") && !r.contains("backing")) {
      notes += fmt::format("error: {}\n", r["error"].get<std::string>());
      continue;
    }
    const std::string backing = r.value("backing", "?"), mode = r.value("prefault", "?");
    if (r.value("skipped", false)) {
      t.add_row({backing, mode, std::to_string(r.value("vcpus", 0u)), "skipped"});
      notes += fmt::format("{} / {}: skipped: {}\n", backing, mode, r.value("reason", ""));
      continue;
    }
    const json& f = r["first_touch_ns"];
    t.add_row({backing, mode, std::to_string(r.value("vcpus", 0u)), cell_us(f, "p50"), cell_us(f, "p90"),
               cell_us(f, "p99"), cell_us(f, "p999"), cell_us(f, "max"), cell(f["total_ms"], 1),
               cell_us(r["host_first_touch_ns"], "p50"), cell(r["host_first_touch_ns"]["total_ms"], 1),
               cell_us(r["prefaulted_touch_ns"], "p50"), cell_us(r["second_pass_ns"], "p50"), cell(r["ratio_p50"], 2),
               cell(r["ratio_total"], 2), cell(r["exits_during_measure"], 0), cell(r["prefault_cpu_ms"], 1)});
    // What demand_paging_test prints, for side-by-side reading.
    selftest += fmt::format("{} / {}: Total guest execution time: {:.6f}s; Overall demand paging rate: {:.1f} pgs/sec\n",
                            backing, mode, f["total_ms"].is_number() ? f["total_ms"].get<double>() / 1e3 : 0.0,
                            r["pages_per_s"].is_number() ? r["pages_per_s"].get<double>() : 0.0);
  }
  std::string out = t.render() + selftest + notes;
  if (!rows.empty() && rows.back().contains("host")) {
    const json& h = rows.back()["host"];
    out += fmt::format("host: {}, KVM {}, {}, TSC {} kHz ({}), shmem THP {}, huge pages {} free\n",
                       h.value("kernel", "?"), h.value("kvm", "?"), h.value("cpu", "?"), h.value("tsc_khz", 0ull),
                       h.value("tsc_source", "?"), h.value("thp_shmem_enabled", "?"),
                       h["hugepages_free"].is_number() ? std::to_string(h["hugepages_free"].get<long>()) : "?");
  }
  return out;
}

}  // namespace kvmem
