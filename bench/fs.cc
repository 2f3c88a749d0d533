#include "bench/fs.h"

#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "base/fd.h"
#include "bench/stats.h"
#include "bench/table.h"
#include "memory/memory_file.h"
#include "memory/tmpfs/file_system.h"

namespace kvmem {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// One side of the comparison: a file to write and read in `size` pieces.
struct Target {
  virtual ~Target() = default;
  virtual Status write(uint64_t offset, std::span<const uint8_t> b) = 0;
  virtual Status read(uint64_t offset, std::span<uint8_t> b) = 0;
};

struct Memfd final : Target {
  Fd fd;
  Status write(uint64_t offset, std::span<const uint8_t> b) override {
    if (pwrite(fd.get(), b.data(), b.size(), static_cast<off_t>(offset)) != static_cast<ssize_t>(b.size()))
      return sys_fail("bench memfd", "pwrite", errno);
    return {};
  }
  Status read(uint64_t offset, std::span<uint8_t> b) override {
    if (pread(fd.get(), b.data(), b.size(), static_cast<off_t>(offset)) != static_cast<ssize_t>(b.size()))
      return sys_fail("bench memfd", "pread", errno);
    return {};
  }
};

struct Layer final : Target {
  std::shared_ptr<tmpfs::RegularFile> file;
  Status write(uint64_t offset, std::span<const uint8_t> b) override {
    KVMEM_TRY(file->write(offset, b));
    return {};
  }
  Status read(uint64_t offset, std::span<uint8_t> b) override {
    KVMEM_TRY(file->read(offset, b));
    return {};
  }
};

// Seconds for one pass over [0, total) in pieces of buf.size().
Result<double> pass(Target& t, std::vector<uint8_t>& buf, uint64_t total, bool write) {
  const auto t0 = Clock::now();
  for (uint64_t off = 0; off < total; off += buf.size())
    KVMEM_TRY(write ? t.write(off, buf) : t.read(off, buf));
  return seconds_since(t0);
}

struct Passes {
  std::vector<double> fresh, over, read;  // seconds per pass
};

// One trial of each kind on a new file of each side.
Status trial(tmpfs::FileSystem& fs, uint64_t size, uint64_t total, Passes& layer, Passes& memfd) {
  std::vector<uint8_t> buf(size);
  for (size_t i = 0; i < buf.size(); i++) buf[i] = static_cast<uint8_t>(i * 7 + 1);
  Memfd m;
  const int fd = memfd_create("kvmem-bench-fs", MFD_CLOEXEC);
  if (fd < 0) return sys_fail("cannot create the bench memfd", "memfd_create", errno);
  m.fd = Fd(fd);
  Layer l;
  l.file = KVMEM_TRY(fs.create("bench", true));
  for (auto [t, p] : {std::pair<Target*, Passes*>{&m, &memfd}, {&l, &layer}}) {
    p->fresh.push_back(KVMEM_TRY(pass(*t, buf, total, true)));
    p->over.push_back(KVMEM_TRY(pass(*t, buf, total, true)));
    p->read.push_back(KVMEM_TRY(pass(*t, buf, total, false)));
  }
  KVMEM_TRY(fs.unlink("bench"));
  l.file.reset();
  fs.memory().wait_for_reclaim();  // the next trial's fresh writes find fresh pages
  return {};
}

json io_row(const char* op, uint64_t size, uint64_t total, const std::vector<double>& layer,
            const std::vector<double>& memfd) {
  const double mb = static_cast<double>(total) / 1e6;
  const double l = mb / summarize(layer).p50, m = mb / summarize(memfd).p50;
  return {{"bench", "io"}, {"op", op}, {"size", size}, {"layer_mb_s", l}, {"memfd_mb_s", m}, {"ratio", l / m},
          {"trials", layer.size()}};
}

}  // namespace

std::vector<json> run_fs_io_bench(const FsBenchOptions& options, const std::function<void(const std::string&)>& progress) {
  std::vector<json> rows;
  MemoryFileOptions mo;
  mo.name = "kvmem-bench-fs";
  mo.reservation = 1ull << 34;
  auto file = MemoryFile::create(mo);
  if (!file) return {json{{"bench", "io"}, {"error", file.error().message}}};
  tmpfs::FileSystem fs(**file);
  const uint64_t total = options.quick ? 8ull << 20 : 64ull << 20;
  const int trials = options.quick ? 1 : 5;
  for (uint64_t size : {4096ull, 64ull << 10, 1ull << 20, 16ull << 20}) {
    if (options.quick && size > (1ull << 20)) continue;
    if (progress) progress(fmt::format("io: {} KiB operations over {} MiB, {} trials", size >> 10, total >> 20, trials));
    Passes layer, memfd;
    for (int i = 0; i < trials; i++)
      if (auto s = trial(fs, size, total, layer, memfd); !s) {
        rows.push_back({{"bench", "io"}, {"size", size}, {"error", s.error().message}});
        return rows;
      }
    rows.push_back(io_row("write_fresh", size, total, layer.fresh, memfd.fresh));
    rows.push_back(io_row("write", size, total, layer.over, memfd.over));
    rows.push_back(io_row("read", size, total, layer.read, memfd.read));
  }
  return rows;
}

std::string format_fs_bench(const std::vector<json>& rows) {
  std::string out;
  Table io({{"op", "", TableColumn::Align::kLeft}, {"size", "KiB"}, {"layer", "MB/s"}, {"memfd", "MB/s"}, {"ratio"}});
  Table window({{"file", "GiB"}, {"map", "ms"}, {"memslots"}, {"allocations"}});
  Table ping({{"side", "", TableColumn::Align::kLeft}, {"rounds"}, {"one-way", "ns"}, {"vs host"}});
  std::vector<std::string> errors;
  for (const json& r : rows) {
    if (r.contains("error")) {
      errors.push_back(fmt::format("{}: {}", r.value("bench", "?"), r["error"].get<std::string>()));
      continue;
    }
    const std::string bench = r["bench"];
    if (bench == "io")
      io.add_row({r["op"], std::to_string(r["size"].get<uint64_t>() >> 10), fixed(r["layer_mb_s"], 0),
                  fixed(r["memfd_mb_s"], 0), fixed(r["ratio"], 2)});
    else if (bench == "window")
      window.add_row({fixed(r["file_bytes"].get<double>() / (1 << 30), 2), fixed(r["map_ms"], 2),
                      std::to_string(r["memslots"].get<uint64_t>()), std::to_string(r["allocations"].get<uint64_t>())});
    else if (bench == "pingpong") {
      ping.add_row({"two VMs, a window", std::to_string(r["rounds"].get<uint64_t>()), fixed(r["guest_one_way_ns"], 0),
                    fixed(r["ratio"], 2)});
      ping.add_row({"two host threads", std::to_string(r["rounds"].get<uint64_t>()), fixed(r["host_one_way_ns"], 0), "1.00"});
    }
  }
  if (io.rows()) out += "file layer against the kernel's memfd (median of trials)\n" + io.render() + "\n";
  if (window.rows()) out += "a fresh file shown in a running guest\n" + window.render() + "\n";
  if (ping.rows()) out += "ping-pong through a window\n" + ping.render() + "\n";
  for (const std::string& e : errors) out += "error: " + e + "\n";
  return out;
}

}  // namespace kvmem
