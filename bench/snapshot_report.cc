// `kvmem bench snapshot` (bench/snapshot.h): the medians of repeats, the
// folder's facts and the tables.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "bench/snapshot.h"
#include "bench/table.h"

namespace kvmem {
namespace {

using json = nlohmann::json;

// The median of values that are all numbers: the sample of nearest rank
// ceil(n/2), as bench/stats.h takes it, so an integer stays an integer.
json median_of(std::vector<json> values) {
  std::sort(values.begin(), values.end(),
            [](const json& a, const json& b) { return a.get<double>() < b.get<double>(); });
  return values[(values.size() + 1) / 2 - 1];
}

json merge(const std::vector<json>& values) {
  const json& first = values.front();
  if (first.is_object()) {
    for (const json& v : values)
      if (v.is_object() && v.contains("error")) return v;
    json out = json::object();
    for (const auto& [key, _] : first.items()) {
      std::vector<json> kids;
      for (const json& v : values)
        if (v.is_object() && v.contains(key)) kids.push_back(v[key]);
      out[key] = merge(kids);
    }
    return out;
  }
  if (std::all_of(values.begin(), values.end(), [](const json& v) { return v.is_number(); })) return median_of(values);
  return first;
}

// A mountinfo field with its octal escapes (\040 for a space) undone.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '\\' && i + 3 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::string cell(const json& section, const char* key, int digits, double scale = 1) {
  if (!section.is_object() || !section.contains(key) || !section[key].is_number()) return "-";
  return fixed(section[key].get<double>() * scale, digits);
}

std::string mib(const json& section, const char* key) { return cell(section, key, 1, 1.0 / (1 << 20)); }

}  // namespace

bool snapshot_row_failed(const json& row) {
  if (row.contains("error")) return true;
  for (const char* section : {"save", "load_floor", "eager", "lazy"})
    if (row.contains(section) && row[section].is_object() && row[section].contains("error")) return true;
  return false;
}

json median_snapshot_rows(const std::vector<json>& rows) {
  if (rows.empty()) return json::object();
  return merge(rows);
}

json folder_facts(const std::string& path) {
  std::error_code ec;
  std::string real = std::filesystem::weakly_canonical(path, ec).string();
  if (ec || real.empty()) real = path;
  json facts = {{"path", path}, {"mount", nullptr}, {"fstype", nullptr}, {"source", nullptr}};
  // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  size_t best = 0;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, mount, word;
    if (!(fields >> id >> parent >> dev >> root >> mount)) continue;
    while (fields >> word && word != "-") {
    }
    std::string fstype, source;
    if (!(fields >> fstype >> source)) continue;
    mount = unescape(mount);
    const bool holds = mount == "/" || real == mount || real.rfind(mount + "/", 0) == 0;
    // The longest, and of equal ones the last: a later mount hides an earlier one.
    if (!holds || mount.size() < best) continue;
    best = mount.size();
    facts["mount"] = mount;
    facts["fstype"] = fstype;
    facts["source"] = unescape(source);
  }
  return facts;
}

std::string format_snapshot_bench(const std::vector<json>& rows) {
  Table save({{"RAM", "", TableColumn::Align::kLeft},
              {"committed", "%"},
              {"committed", "MiB"},
              {"non-zero", "MiB"},
              {"file", "MiB"},
              {"over non-zero", "%"},
              {"extents"},
              {"save", "ms"},
              {"save", "MB/s"},
              {"write+fsync", "MB/s"},
              {"save/floor"}});
  Table restore({{"RAM", "", TableColumn::Align::kLeft},
                 {"committed", "%"},
                 {"restore", "", TableColumn::Align::kLeft},
                 {"ready", "ms"},
                 {"1st KVM_RUN", "ms"},
                 {"1st insn", "ms"},
                 {"verify", "ms"},
                 {"all read", "ms"},
                 {"load", "MB/s"},
                 {"raw load", "MB/s"},
                 {"load/floor"},
                 {"faults"},
                 {"waited", "MiB"},
                 {"fill", "MB/s"}});
  std::string notes;
  for (const json& r : rows) {
    if (!r.contains("size")) {
      notes += fmt::format("error: {}\n", r.value("error", "?"));
      continue;
    }
    const std::string ram = size_name(r["size"].get<uint64_t>());
    const std::string pct = std::to_string(r.value("committed_percent", 0u));
    const std::string what = fmt::format("{}, {}%", ram, pct);
    if (r.contains("error")) {
      save.add_row({ram, pct, "error"});
      notes += fmt::format("{}: {}\n", what, r["error"].get<std::string>());
      continue;
    }
    const json& s = r["snapshot"];
    const json& v = r["save"];
    save.add_row({ram, pct, mib(s, "committed_bytes"), mib(s, "nonzero_bytes"), mib(s, "file_bytes"),
                  cell(s, "over_nonzero_percent", 2), cell(s, "extents", 0), cell(v, "ms", 1), cell(v, "mb_s", 0),
                  cell(v, "floor_mb_s", 0), cell(v, "ratio", 2)});
    for (const char* section : {"save", "load_floor"})
      if (r.contains(section) && r[section].contains("error"))
        notes += fmt::format("{}: {}: {}\n", what, section, r[section]["error"].get<std::string>());
    for (const char* mode : {"eager", "lazy"}) {
      if (!r.contains(mode)) continue;
      const json& m = r[mode];
      if (m.contains("error")) {
        restore.add_row({ram, pct, mode, "error"});
        notes += fmt::format("{}: {} restore: {}\n", what, mode, m["error"].get<std::string>());
        continue;
      }
      restore.add_row({ram, pct, mode, cell(m, "restore_ms", 2), cell(m, "first_run_ms", 2),
                       cell(m, "first_instruction_ms", 2), cell(m, "verify_ms", 1), cell(m, "all_read_ms", 1),
                       cell(m, "load_mb_s", 0), cell(m, "load_floor_mb_s", 0), cell(m, "load_ratio", 2),
                       cell(m, "faults", 0), mib(m, "bytes_on_demand"), cell(m, "fill_mb_s", 0)});
    }
  }
  std::string out = save.render();
  if (restore.rows() > 0) out += "\n" + restore.render();
  out += notes;
  // Every row of a run has the same folder and host; any row that has them says.
  auto with = [&](const char* key) -> const json* {
    for (const json& r : rows)
      if (r.contains(key)) return &r;
    return nullptr;
  };
  if (const json* r = with("dir")) {
    const json& d = (*r)["dir"];
    auto text = [](const json& v) { return v.is_string() ? v.get<std::string>() : std::string("?"); };
    const unsigned repeat = r->value("repeat", 1u);
    out += fmt::format("snapshots under {} ({} on {}, mounted at {}); restores read them {}{}\n", text(d["path"]),
                       text(d["fstype"]), text(d["source"]), text(d["mount"]),
                       r->value("cold", false) ? "from the disk (--cold)" : "from the page cache",
                       repeat > 1 ? fmt::format("; medians of {} runs, each ratio the median of the runs' own", repeat)
                                  : "");
  }
  if (const json* r = with("host")) {
    const json& h = (*r)["host"];
    out += fmt::format("host: {}, KVM {}, {}, {} CPUs, TSC {} kHz ({})\n", h.value("kernel", "?"), h.value("kvm", "?"),
                       h.value("cpu", "?"), h.value("cpus", 0u), h.value("tsc_khz", 0ull), h.value("tsc_source", "?"));
  }
  return out;
}

}  // namespace kvmem
