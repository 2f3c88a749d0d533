// Fuzz target "config": bytes -> what `kvmem validate` does with a file.
//
// The bytes are parsed as JSON; a stress config ({"stress": ...}) is parsed
// and a round's first and last VM made (vCPUs, backing and prefault from the
// config's ranges and lists) and assembled, as validate and run_stress do;
// anything else is parsed as a run config and every VM's program assembled,
// as the CLI's prepare() does. Every input must end in a value or an Error
// whose message can be reported (validate --json prints it), never in an
// exception, an abort or a sanitizer report. An accepted config's files and
// windows must keep the rules docs/config.md gives them, and every VM
// written back to JSON (config/vm_json.h, what a snapshot keeps) must
// parse to the same VM and code.
//
// It lives in harness/, not config/, because stress VMs are made by
// make_stress_vm (harness/stress.h): a file may not include from above.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "base/check.h"
#include "base/fuzz.h"
#include "config/stress_config.h"
#include "config/vm_config.h"
#include "config/vm_json.h"
#include "guest/abi.h"
#include "guest/boot.h"
#include "guest/layout.h"
#include "guest/program.h"
#include "guest/step.h"
#include "harness/stress.h"
#include "memory/tmpfs/file_system.h"
#include "memory/tmpfs/regular_file.h"

namespace kvmem::fuzz {
namespace {

using json = nlohmann::json;

// An error must say something, and must survive the JSON report.
void check_reportable(const Error& e) {
  KVMEM_CHECK(!e.message.empty(), "an error without a message");
  (void)json{{"error", e.message}}.dump();
}

// The contract of an accepted config: every word a step will write or read
// lies in RAM above the boot area, or wholly in one of the VM's windows, not
// only its first and last. The guest walks a range as
// `for (a = at; a < at + length; a += stride)` in 64-bit registers, so a
// stride that carries past 2^64 lands below `at`.
void check_stays_in_bounds(const std::vector<guest::Step>& program, const VmConfig& vm) {
  for (const guest::Step& s : program) {
    if (const auto* l = std::get_if<guest::Loop>(&s)) check_stays_in_bounds(l->body, vm);
    uint64_t at = 0, length = 0, step = 8;
    if (const auto* f = std::get_if<guest::Fill>(&s)) {
      at = f->at, length = f->length;
    } else if (const auto* v = std::get_if<guest::Verify>(&s)) {
      at = v->at, length = v->length;
    } else if (const auto* t = std::get_if<guest::Touch>(&s)) {
      at = t->at, length = t->length, step = t->stride;
      if (t->samples) {
        const uint64_t bytes = t->accesses() * 8;
        KVMEM_CHECK(t->samples >= abi::kBootAreaEnd && t->samples <= vm.memory && bytes <= vm.memory - t->samples &&
                        (t->samples + bytes <= t->at || t->at + t->length <= t->samples),
                    "touch samples at {:#x} ({:#x} bytes) escape RAM or overlap [{:#x}, +{:#x})", t->samples, bytes,
                    t->at, t->length);
      }
    } else if (const auto* fr = std::get_if<guest::Free>(&s)) {
      at = fr->at, length = fr->length, step = fr->stride_or_granule();
      KVMEM_CHECK(fr->granule <= step && fr->length % step == 0, "free ranges of {:#x} every {:#x} over {:#x} bytes",
                  fr->granule, step, fr->length);
      // A batch fills at most the vCPU's own report list or free ring
      // (guest/layout.h slices both by the VM's vCPUs): more would write
      // into the next vCPU's.
      const uint64_t max_batch = fr->mode == guest::FreeMode::kSync ? guest::layout::report_list_entries(vm.vcpus)
                                                                    : guest::layout::free_ring_entries(vm.vcpus);
      KVMEM_CHECK(fr->batch >= 1 && fr->batch <= max_batch, "a {} free batch of {} on a VM of {} vCPUs",
                  fr->mode == guest::FreeMode::kSync ? "sync" : "async", fr->batch, vm.vcpus);
    } else if (s.is<guest::StoreWord>() || s.is<guest::WaitWord>()) {
      const GuestRange word = *guest::memory_walked(s);  // its one word
      at = word.start, length = word.length();
    } else {
      continue;
    }
    const uint64_t memory = vm.memory;
    const bool in_ram = at >= abi::kBootAreaEnd && length > 0 && at <= memory && length <= memory - at;
    const bool in_window = std::any_of(vm.windows.begin(), vm.windows.end(), [&](const WindowConfig& w) {
      return length > 0 && at >= w.at && at < w.at + w.length && length <= w.at + w.length - at;
    });
    KVMEM_CHECK(in_ram || in_window, "a step on [{:#x}, +{:#x}) in {:#x} bytes of RAM and {} windows", at, length,
                memory, vm.windows.size());
    KVMEM_CHECK(step > 0, "a step of 0 bytes");
    const uint64_t end = at + length;
    const uint64_t last = at + (length - 1) / step * step;
    const uint64_t next = last + step;
    KVMEM_CHECK(next > last || next >= end, "after [{:#x}, +{:#x}) every {:#x} the guest goes on at {:#x}", at,
                length, step, next);
  }
}

// The rules of docs/config.md, "Shared files and windows": names differ and
// are the layer's, sizes add up to at most kMaxFileBytes; a VM's windows are
// sorted, disjoint, page-aligned, above its RAM and below the page tables'
// reach, each onto a file of the config.
void check_files_and_windows(const RunConfig& c) {
  constexpr uint32_t kAllSeals =
      tmpfs::kSealSeal | tmpfs::kSealShrink | tmpfs::kSealGrow | tmpfs::kSealWrite | tmpfs::kSealFutureWrite;
  KVMEM_CHECK(c.files.size() <= kMaxFiles, "{} files", c.files.size());
  uint64_t total = 0;
  for (size_t i = 0; i < c.files.size(); i++) {
    const FileConfig& f = c.files[i];
    KVMEM_CHECK(!f.name.empty() && f.name.size() <= tmpfs::kMaxNameLength, "a file named \"{}\"", f.name);
    for (size_t k = 0; k < i; k++) KVMEM_CHECK(c.files[k].name != f.name, "two files named \"{}\"", f.name);
    KVMEM_CHECK(f.size <= kMaxFileBytes - total, "files of {:#x} bytes and more", total);
    total += f.size;
    KVMEM_CHECK((f.seals & ~kAllSeals) == 0, "file \"{}\" has seals {:#x}", f.name, f.seals);
  }
  for (const VmConfig& vm : c.vms) {
    KVMEM_CHECK(vm.windows.size() <= kMaxWindows, "{} windows", vm.windows.size());
    uint64_t previous_end = vm.memory;
    for (const WindowConfig& w : vm.windows) {
      KVMEM_CHECK(w.at % kPageSize == 0 && w.offset % kPageSize == 0 && w.length % kPageSize == 0 && w.length > 0,
                  "window {} at file offset {:#x}", w.guest(), w.offset);
      KVMEM_CHECK(w.at >= previous_end && w.at <= guest::kMaxGuestPhysical &&
                      w.length <= guest::kMaxGuestPhysical - w.at,
                  "window {} of a VM with {:#x} bytes of RAM, after {:#x}", w.guest(), vm.memory, previous_end);
      KVMEM_CHECK(std::any_of(c.files.begin(), c.files.end(), [&](const FileConfig& f) { return f.name == w.file; }),
                  "a window onto \"{}\", which is not a file of the config", w.file);
      previous_end = w.at + w.length;
    }
  }
}

// docs/config.md, "RAM backing and prefault": RAM on a file of its own has no
// windows; prefault keys only with a prefault that uses them; lanes in RAM.
void check_backing_and_prefault(const RunConfig& c) {
  for (const VmConfig& vm : c.vms) {
    KVMEM_CHECK(vm.windows.empty() || vm.backing == RamBacking::kMemfd || vm.backing == RamBacking::kAnon,
                "a VM of backing {} with {} windows", ram_backing_name(vm.backing), vm.windows.size());
    KVMEM_CHECK(vm.prefault_threads <= kMaxPrefaultThreads, "{} prefault threads", vm.prefault_threads);
    KVMEM_CHECK(vm.prefault_chunk > 0 && vm.prefault_chunk % kPageSize == 0 && vm.prefault_chunk <= vm.memory,
                "a prefault chunk of {:#x} bytes in {:#x} of RAM", vm.prefault_chunk, vm.memory);
    KVMEM_CHECK(vm.prefault_lanes.size() <= kMaxPrefaultLanes, "{} prefault lanes", vm.prefault_lanes.size());
    KVMEM_CHECK(vm.prefault_lanes.empty() || vm.prefault != Prefault::kNone, "prefault lanes without a prefault");
    for (const GuestRange& l : vm.prefault_lanes)
      KVMEM_CHECK(l.well_formed() && !l.empty() && l.is_page_aligned() && l.end <= vm.memory,
                  "prefault lane {} in {:#x} bytes of RAM", l, vm.memory);
  }
}

void check_assembles(const std::vector<guest::Step>& program, uint64_t memory) {
  auto image = guest::build(program, {.ram_bytes = memory});
  if (!image) return check_reportable(image.error());
  KVMEM_CHECK(image->bytes.size() <= guest::layout::kProgramEnd - guest::layout::kProgramAddr, "{} bytes of guest code",
              image->bytes.size());
}

// What a snapshot keeps of a VM is its config written back to JSON
// (config/vm_json.h), and a restore parses it again: it must parse, to the
// same VM and the same code.
void check_round_trip(const VmConfig& vm, const std::vector<FileConfig>& files) {
  json j = vm_config_json(vm);
  if (!vm.windows.empty()) {
    json fs = json::array();
    for (const FileConfig& f : files) fs.push_back({{"name", f.name}, {"size", f.size}});
    j["files"] = std::move(fs);
  }
  auto again = parse_run_config(j, "fuzz");
  KVMEM_CHECK(again && again->vms.size() == 1, "VM {} written back as {} does not parse: {}", vm.name, j.dump(),
              again ? std::string("more than one VM") : again.error().message);
  const VmConfig& b = again->vms[0];
  KVMEM_CHECK(b.name == vm.name && b.memory == vm.memory && b.vcpus == vm.vcpus && b.backing == vm.backing &&
                  b.prefault == vm.prefault && b.windows.size() == vm.windows.size(),
              "VM {} written back as {} parses to another VM", vm.name, j.dump());
  auto x = guest::build_vcpus(vm.vcpu_programs(), vm.machine());
  auto y = guest::build_vcpus(b.vcpu_programs(), b.machine());
  KVMEM_CHECK(x.has_value() == y.has_value() && (!x || x->bytes == y->bytes),
              "VM {} written back as {} assembles to other code", vm.name, j.dump());
}

void stress(const json& j) {
  auto c = parse_stress_config(j);
  if (!c) return check_reportable(c.error());
  KVMEM_CHECK(c->vcpus_min >= 1 && c->vcpus_min <= c->vcpus_max && c->vcpus_max <= guest::layout::kMaxVcpus,
              "vcpus {}..{}", c->vcpus_min, c->vcpus_max);
  KVMEM_CHECK(!c->backings.empty() && !c->prefaults.empty(), "{} backings, {} prefaults", c->backings.size(),
              c->prefaults.size());
  (void)check_stress_backings(*c);  // the host's answer, either way; it must not throw
  const uint64_t seed = c->seed ? c->seed : 1;
  for (uint64_t i : {uint64_t{0}, c->vms_per_round - 1}) {
    const StressVm s = make_stress_vm(*c, seed, 0, i);
    const VmConfig& vm = s.config;
    KVMEM_CHECK(vm.vcpus >= c->vcpus_min && vm.vcpus <= c->vcpus_max, "a VM of {} vCPUs", vm.vcpus);
    KVMEM_CHECK(std::find(c->backings.begin(), c->backings.end(), vm.backing) != c->backings.end(),
                "backing {} is not in the list", ram_backing_name(vm.backing));
    KVMEM_CHECK(std::find(c->prefaults.begin(), c->prefaults.end(), vm.prefault) != c->prefaults.end(),
                "prefault {} is not in the list", prefault_name(vm.prefault));
    for (const auto& program : vm.vcpu_programs()) check_stays_in_bounds(program, vm);
    auto image = build_stress_vm(s);
    if (!image) {
      check_reportable(image.error());
      continue;
    }
    KVMEM_CHECK(image->bytes.size() <= guest::layout::kProgramEnd - guest::layout::kProgramAddr,
                "{} bytes of guest code", image->bytes.size());
    if (s.snapshot) {
      KVMEM_CHECK(vm.backing != RamBacking::kAnon && !vm.source.empty(), "a {} VM chosen for a snapshot, source {}",
                  ram_backing_name(vm.backing), vm.source.size());
      check_round_trip(vm, {});
    }
  }
}

void run(const json& j) {
  auto c = parse_run_config(j, "fuzz");
  if (!c) return check_reportable(c.error());
  KVMEM_CHECK(!c->vms.empty() && c->vms.size() <= kMaxVms, "{} VMs", c->vms.size());
  check_backing_and_prefault(*c);
  check_files_and_windows(*c);
  for (const VmConfig& vm : c->vms) {
    (void)json{{"name", vm.name}}.dump();  // validate --json names every VM
    check_stays_in_bounds(vm.program, vm);
    check_assembles(vm.program, vm.memory);
    check_round_trip(vm, c->files);
  }
}

}  // namespace

int config_one(const uint8_t* data, size_t size) {
  // read_json() turns the library's parse error into an Error; no exception
  // here is the same outcome.
  const json j = json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  if (j.is_object() && j.contains("stress"))
    stress(j);
  else
    run(j);
  return 0;
}

}  // namespace kvmem::fuzz

KVMEM_FUZZ_TARGET(kvmem::fuzz::config_one)
