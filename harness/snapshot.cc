#include "harness/snapshot.h"

#include <sys/stat.h>

#include <chrono>

#include <nlohmann/json.hpp>

#include "config/vm_config.h"
#include "guest/program.h"
#include "harness/runner.h"
#include "snapshot/files.h"
#include "vmm/kvm/vcpu_state.h"

namespace kvmem {
namespace {

Status write_snapshot(Vm& vm, const SnapshotCapture& capture, const std::string& path) {
  const VmConfig& c = vm.config();
  if (c.source.empty()) return fail("VM {} has no config text to keep", c.name);
  auto w = KVMEM_TRY(SnapshotWriter::create(path));
  KVMEM_TRY(w->add_section(SectionType::kConfig, 0,
                           std::span(reinterpret_cast<const uint8_t*>(c.source.data()), c.source.size())));
  for (size_t i = 0; i < capture.vcpus.size(); i++) {
    std::vector<uint8_t> bytes;
    if (capture.vcpus[i]) bytes = encode_vcpu_state(*capture.vcpus[i]);
    KVMEM_TRY(w->add_section(SectionType::kVcpu, static_cast<uint32_t>(i), bytes));
  }
  KVMEM_TRY(save_devices(vm, *w));
  // Memory in space order: RAM, then the files.
  KVMEM_TRY(save_ram(vm, *w));
  KVMEM_TRY(save_window_files(vm, *w));
  KVMEM_TRY(w->finish());
  return {};
}

RestoredVm refused(int code, std::string why) {
  RestoredVm r;
  r.exit_code = code;
  r.error = std::move(why);
  return r;
}

}  // namespace

Vm::SnapshotSink snapshot_to_dir(std::string dir) {
  return [dir = std::move(dir)](Vm& vm, const SnapshotCapture& capture) -> Status {
    const std::string path = fmt::format("{}/{}.kvmsnap", dir, vm.config().name);
    if (auto s = write_snapshot(vm, capture, path); !s)
      return std::unexpected(s.error().context(fmt::format("cannot write snapshot {}", path)));
    return {};
  };
}

const char* restore_mode_name(RestoreMode mode) { return mode == RestoreMode::kLazy ? "lazy" : "eager"; }

RestoredVm restore_snapshot(const Kvm& kvm, const std::string& path, const RestoreOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  auto reader = SnapshotReader::open(path);
  if (!reader) return refused(2, reader.error().message);
  const SnapshotReader& rd = **reader;
  const std::string what = fmt::format("snapshot {}", path);
  const long config_at = rd.find_section(SectionType::kConfig, 0);
  if (config_at < 0) return refused(2, fmt::format("{}: no config section", what));
  const auto cbytes = rd.section_bytes(static_cast<size_t>(config_at));
  const nlohmann::json j = nlohmann::json::parse(cbytes.begin(), cbytes.end(), nullptr, false);
  if (j.is_discarded()) return refused(2, fmt::format("{}: its config section is not JSON", what));
  auto rc = parse_run_config(j, "vm");
  if (!rc) return refused(2, fmt::format("{}: its config no longer validates: {}", what, rc.error().message));
  if (rc->vms.size() != 1) return refused(2, fmt::format("{}: its config is not one VM's", what));
  if (options.mode == RestoreMode::kLazy && rc->vms[0].backing == RamBacking::kHugetlb)
    return refused(2, fmt::format("{}: RAM on hugetlb is restored eagerly only (restore --eager)", what));
  if (options.mode == RestoreMode::kLazy && rc->vms[0].backing == RamBacking::kAnon)
    return refused(2, fmt::format("{}: anon RAM is restored eagerly only (restore --eager)", what));
  RestoredVm out;
  out.mode = options.mode;
  out.config = rc->vms[0];
  out.config.source = std::string(cbytes.begin(), cbytes.end());
  const VmConfig& c = out.config;
  // Its vCPUs, each checked before anything is made.
  std::vector<std::optional<VcpuState>> states;
  for (uint32_t i = 0; i < std::max(c.vcpus, 1u); i++) {
    const long at = rd.find_section(SectionType::kVcpu, i);
    if (at < 0) return refused(2, fmt::format("{}: no state for vCPU {}", what, i));
    const auto b = rd.section_bytes(static_cast<size_t>(at));
    if (b.empty()) {
      states.emplace_back();
      continue;
    }
    auto s = decode_vcpu_state(b);
    if (!s) return refused(2, fmt::format("{}: vCPU {}: {}", what, i, s.error().message));
    states.emplace_back(std::move(*s));
  }
  if (rd.find_section(SectionType::kVcpu, std::max(c.vcpus, 1u)) >= 0)
    return refused(2, fmt::format("{}: state for more vCPUs than its config's {}", what, c.vcpus));
  const long ram = rd.find_space(kRamSpace);
  if (ram < 0 || rd.spaces()[static_cast<size_t>(ram)].kind != static_cast<uint32_t>(SpaceKind::kRam) ||
      rd.spaces()[static_cast<size_t>(ram)].size != c.memory)
    return refused(2, fmt::format("{}: its RAM space does not match the config's {:#x} bytes of memory", what, c.memory));
  for (const SnapshotSpace& sp : rd.spaces())
    if (sp.id != kRamSpace && sp.kind == static_cast<uint32_t>(SpaceKind::kRam))
      return refused(2, fmt::format("{}: space {} is a second RAM space", what, sp.id));
  // The windows' files and the devices, checked before anything is made.
  auto file_bytes = check_window_files(rd, c);
  if (!file_bytes) return refused(2, file_bytes.error().message);
  auto devices = read_devices(rd, c);
  if (!devices) return refused(2, devices.error().message);
  out.before = std::move(*devices);

  auto image = guest::build_vcpus(c.vcpu_programs(), c.machine());
  if (!image) return refused(2, fmt::format("{}: its program does not assemble: {}", what, image.error().message));
  auto file = make_ram_file(c.backing, c.memory + *file_bytes);
  if (!file) return refused(3, file.error().message);
  out.file = std::move(*file);
  // The files first: the VM's windows show them from the start.
  if (!c.windows.empty()) {
    out.files = std::make_unique<tmpfs::FileSystem>(*out.file);
    auto restored = restore_files(rd, *out.files);
    // An errno is the host's (no memory for the files); the rest is the snapshot's.
    if (!restored) return refused(restored.error().code ? 3 : 2, restored.error().message);
    out.files_restored = restored->files;
    out.load = restored->load;
  }
  auto vm = Vm::create(kvm, *out.file, c, *image, out.files.get());
  if (!vm) return refused(3, vm.error().message);
  out.vm = std::move(*vm);
  // RAM as it was: nothing of what create() wrote, then every extent.
  if (auto d = out.vm->memory().decommit(GuestRange(0, c.memory)); !d) return refused(3, d.error().message);
  if (auto s = out.vm->restore_vcpus(states); !s)
    return refused(2, fmt::format("{}: KVM refused its vCPU state: {}", what, s.error().message));
  if (options.mode == RestoreMode::kEager) {
    auto loaded = load_ram(rd, *out.vm);
    if (!loaded) return refused(2, fmt::format("{}: {}", what, loaded.error().message));
    out.load.extents += loaded->extents;
    out.load.bytes += loaded->bytes;
    out.load.seconds += loaded->seconds;
  } else {
    // The guest may run now: the handler serves what it touches, the
    // filler brings in the rest, and a free report drops what is owed
    // before it punches. Damaged data found on the way stops the VM.
    // (The windows' files were restored whole, above.)
    Vm* target = out.vm.get();
    auto lazy = LazyRam::start(rd, kRamSpace, *out.file, ram_ranges(out.vm->memory()), options.lazy,
                               [target](const std::string& message) { target->stop(FailureKind::kSnapshot, message); });
    if (!lazy) return refused(3, lazy.error().message);
    out.lazy = std::move(*lazy);
    LazyRam* l = out.lazy.get();
    out.vm->memory().set_decommit_observer([l](GuestRange r) { l->forget(r.start, r.end); });
  }
  // The rings last: their setup may read guest RAM, which a lazy restore
  // serves from now on.
  if (auto s = restore_devices(*out.vm, out.before); !s)
    return refused(s.error().code ? 3 : 2, fmt::format("{}: {}", what, s.error().message));
  out.reader = std::move(*reader);
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) out.snapshot_bytes = static_cast<uint64_t>(st.st_size);
  out.restore_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace kvmem
