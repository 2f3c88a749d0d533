#include "harness/snapshot_parts.h"

#include <algorithm>
#include <map>

#include "config/vm_config.h"
#include "memory/page_map.h"
#include "snapshot/files.h"

namespace kvmem {
namespace {

uint64_t page_rounded(uint64_t size) { return (size + kPageSize - 1) / kPageSize * kPageSize; }

// RAM's one host-contiguous span (anonymous RAM is one piece).
Result<std::span<uint8_t>> anon_ram(GuestMemory& m) {
  std::span<uint8_t> ram = m.ram_run(GuestAddr(0), m.ram_size());
  if (ram.size() != m.ram_size())
    return fail("anonymous RAM of {:#x} bytes is not one piece ({:#x} bytes)", m.ram_size(), ram.size());
  return ram;
}

}  // namespace

std::vector<SpaceRange> ram_ranges(const GuestMemory& memory) {
  std::vector<SpaceRange> out;
  for (const MemslotInfo& s : memory.memslots())
    if (s.guest.end <= memory.ram_size()) out.push_back({s.guest.start, s.file});
  return out;
}

Status save_ram(Vm& vm, SnapshotWriter& writer) {
  GuestMemory& m = vm.memory();
  KVMEM_TRY(writer.add_space(kRamSpace, SpaceKind::kRam, "ram", m.ram_size()));
  if (!m.anonymous()) {
    const std::vector<SpaceRange> ranges = ram_ranges(m);
    return save_ranges(m.file(), kRamSpace, ranges, writer);
  }
  const std::span<uint8_t> ram = KVMEM_TRY(anon_ram(m));
  const std::vector<HostRange> populated = KVMEM_TRY(populated_ranges(ram));
  return save_host_ranges(kRamSpace, ram, populated, writer);
}

Result<LoadStats> load_ram(const SnapshotReader& reader, Vm& vm) {
  GuestMemory& m = vm.memory();
  if (!m.anonymous()) {
    const std::vector<SpaceRange> ranges = ram_ranges(m);
    return load_extents(reader, kRamSpace, m.file(), ranges);
  }
  const std::span<uint8_t> ram = KVMEM_TRY(anon_ram(m));
  return load_extents_into(reader, kRamSpace, ram);
}

Status save_window_files(Vm& vm, SnapshotWriter& writer) {
  std::map<std::string, const tmpfs::RegularFile*> files;
  for (const auto& w : vm.windows().all()) {
    const tmpfs::RegularFile* f = &w->file();
    auto [it, fresh] = files.emplace(f->name(), f);
    if (!fresh && it->second != f)
      return fail("the windows of VM {} show two different files named \"{}\"", vm.config().name, f->name());
  }
  uint32_t space = kRamSpace + 1;
  for (const auto& [name, f] : files) KVMEM_TRY(save_file(*f, space++, writer));
  return {};
}

Result<uint64_t> check_window_files(const SnapshotReader& reader, const VmConfig& config) {
  const std::vector<SnapshotFile> files = KVMEM_TRY(snapshot_files(reader));
  const auto named = [&](const std::string& name) {
    return std::find_if(files.begin(), files.end(), [&](const SnapshotFile& f) { return f.name == name; });
  };
  for (const WindowConfig& w : config.windows)
    if (named(w.file) == files.end())
      return fail("snapshot {}: the window at {} shows file \"{}\", which the snapshot lacks", reader.name(),
                  w.guest(), w.file);
  uint64_t bytes = 0;
  for (const SnapshotFile& f : files) {
    if (std::none_of(config.windows.begin(), config.windows.end(), [&](const WindowConfig& w) { return w.file == f.name; }))
      return fail("snapshot {}: file \"{}\" (space {}) is shown by none of its config's windows", reader.name(),
                  f.name, f.space);
    bytes += page_rounded(f.state.size);  // each at most 2^63: no overflow before the check below
    if (bytes > kMaxFileBytes)
      return fail("snapshot {}: its files add up to more than the {} GiB a config's files may have (file \"{}\" "
                  "is {:#x} bytes)",
                  reader.name(), kMaxFileBytes >> 30, f.name, f.state.size);
  }
  return bytes;
}

Status save_devices(Vm& vm, SnapshotWriter& writer) {
  KVMEM_TRY(writer.add_section(SectionType::kDevice, kDeviceConsole, encode_console_state(vm.console_state())));
  KVMEM_TRY(writer.add_section(SectionType::kDevice, kDeviceFreeRings, encode_free_rings(vm.free_ring_states())));
  KVMEM_TRY(writer.add_section(SectionType::kDevice, kDeviceFreeCounts, encode_free_counts(vm.free_counts())));
  return {};
}

Result<SnapshotDevices> read_devices(const SnapshotReader& reader, const VmConfig& config) {
  const std::string what = fmt::format("snapshot {}", reader.name());
  for (const SnapshotSection& s : reader.sections())
    if (s.type == static_cast<uint32_t>(SectionType::kDevice) && s.index > kDeviceFreeCounts)
      return fail("{}: device section {} is not one this kvmem knows (0 console, 1 free rings, 2 free counts)", what,
                  s.index);
  const auto section = [&](uint32_t index, const char* name) -> Result<std::span<const uint8_t>> {
    const long at = reader.find_section(SectionType::kDevice, index);
    if (at < 0) return fail("{}: no device section {} ({})", what, index, name);
    return reader.section_bytes(static_cast<size_t>(at));
  };
  const std::span<const uint8_t> console = KVMEM_TRY(section(kDeviceConsole, "console"));
  const std::span<const uint8_t> rings = KVMEM_TRY(section(kDeviceFreeRings, "free rings"));
  const std::span<const uint8_t> counts = KVMEM_TRY(section(kDeviceFreeCounts, "free counts"));
  SnapshotDevices d;
  d.console = KVMEM_TRY_CTX(decode_console_state(console), what);
  d.rings = KVMEM_TRY_CTX(decode_free_rings(rings), what);
  std::vector<GuestRange> writable;  // a guest may put its ring in one (FreeRing::create takes it)
  for (const WindowConfig& w : config.windows)
    if (w.writable) writable.push_back(w.guest());
  KVMEM_TRY_CTX(check_free_rings(d.rings, config.memory, std::max(config.vcpus, 1u), writable), what);
  d.frees = KVMEM_TRY_CTX(decode_free_counts(counts), what);
  return d;
}

Status restore_devices(Vm& vm, const SnapshotDevices& devices) { return vm.restore_free_rings(devices.rings); }

}  // namespace kvmem
