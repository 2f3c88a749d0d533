// The parts of a VM's snapshot beside its config and vCPU states
// (harness/snapshot.h has the whole): guest RAM of every backing, the files
// its windows show, and the devices' state. Each part has its save, a check
// that runs before a restore makes anything, and its restore, so that the
// eager and the lazy restore share them.
//
// Synopsis
//   save_ram(vm, writer)                 space 0: RAM's populated, non-zero pages
//   load_ram(reader, vm)                 -> Result<LoadStats>: space 0 into fresh RAM
//   save_window_files(vm, writer)        spaces 1..n: each file a window shows
//   check_window_files(reader, config)   -> Result<uint64_t>: their bytes
//   save_devices(vm, writer)             device sections 0, 1, 2
//   read_devices(reader, config)         -> Result<SnapshotDevices>
//   restore_devices(vm, devices)         the free rings, as they were
//
// RAM. File-backed RAM (memfd, memfd-thp, hugetlb) is saved from its
// memory-file ranges (save_ranges: SEEK_DATA extents) and loaded into the
// fresh VM's with pwrite (load_extents). Anonymous RAM has no file: its
// populated pages come from /proc/self/pagemap (memory/page_map.h: present
// or swapped, so a swapped-out page is not lost as mincore would lose it)
// and are read straight into the fresh VM's mapping (load_extents_into).
// Either way the writer drops zero pages, and a restore first decommits all
// of the new VM's RAM, so what create() wrote is gone and every page no
// extent covers reads as zero.
//
// Files. Each file a window shows is saved once (snapshot/files.h), as
// spaces 1, 2, ... in the order of the file names. A restore makes them
// (restore_files) in a fresh FileSystem on the restored VM's memory file
// before the VM, whose windows then show them: private copies, whoever
// else shared them when the snapshot was taken. A file another VM was
// writing meanwhile is saved as its pages read at that moment.
//
// Devices (vmm/devices/device_state.h has the payloads): the console's
// record (0), every vCPU's free ring as the host keeps it (1), and the
// free-page report counters (2). A restore sets the rings up again (their
// doorbells bound, the rings' thread started), so a guest that set up its
// ring before the snapshot frees through it after; the console record and
// the counters are what came before the snapshot, which the restored
// VM's report gives apart from the restored run's own (restore.before).
#pragma once

#include <cstdint>
#include <vector>

#include "base/error.h"
#include "snapshot/memory.h"
#include "snapshot/reader.h"
#include "snapshot/writer.h"
#include "vmm/devices/device_state.h"
#include "vmm/vm.h"
#include "vmm/vm_config.h"

namespace kvmem {

inline constexpr uint32_t kRamSpace = 0;

// RAM's file ranges in guest order, with their space offsets (file-backed
// RAM only: memslots() is in guest order, one slot per piece).
std::vector<SpaceRange> ram_ranges(const GuestMemory& memory);

// Adds space 0 ("ram", of the VM's RAM size) and its pages. Preconditions:
// the VM is paused (a sink's); the first space the writer gets memory for.
Status save_ram(Vm& vm, SnapshotWriter& writer);
// Reads space 0 into the VM's RAM, which reads as zero (decommitted) and
// is no larger or smaller than the space (checked by the caller). Errors:
// load_extents' and load_extents_into's.
Result<LoadStats> load_ram(const SnapshotReader& reader, Vm& vm);

// Adds each file the VM's windows show, once, as spaces 1..n by name.
// Errors: two different files of one name (one was unlinked and made
// again), save_file's.
Status save_window_files(Vm& vm, SnapshotWriter& writer);
// The snapshot's files against the config's windows: every window's file
// is in the snapshot, every file of the snapshot is shown by some window,
// and together they stay under the config's limit on files (kMaxFileBytes),
// besides snapshot_files' own checks. Returns their bytes, page-rounded
// (to size the memory file). Errors name the snapshot and the window or
// the file.
Result<uint64_t> check_window_files(const SnapshotReader& reader, const VmConfig& config);

struct SnapshotDevices {
  ConsoleState console;               // what the guest printed before the snapshot
  FreeCounts frees;                   // its free-page reports before the snapshot
  std::vector<FreeRingState> rings;   // one per vCPU
};

// Adds device sections 0 (console), 1 (free rings) and 2 (free counts).
// Precondition: the VM is paused and its rings quiesced (a sink's).
Status save_devices(Vm& vm, SnapshotWriter& writer);
// Decodes and checks the three device sections against the config (the
// rings inside its RAM or its writable windows, one per vCPU). Errors name the snapshot and the
// section: one missing, an index this kvmem does not know, the decoders'.
Result<SnapshotDevices> read_devices(const SnapshotReader& reader, const VmConfig& config);
// Sets up the VM's free rings as `devices` has them; before run(), after
// RAM is back (a ring's header is read from RAM).
Status restore_devices(Vm& vm, const SnapshotDevices& devices);

}  // namespace kvmem
