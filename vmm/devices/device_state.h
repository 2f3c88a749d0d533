// The devices' state as snapshot sections (SectionType::kDevice): what a
// restored VM needs of each device, or what its report says came before.
//
// Synopsis
//   kDeviceConsole, kDeviceFreeRings, kDeviceFreeCounts   the section indices
//   ConsoleState    the console's record (Console::text, dropped)
//   FreeRingState   one vCPU's free ring, host side (entries 0: none)
//   FreeCounts      the free-page reports' counters (FreeStats)
//   encode_* / decode_*   each one's versioned payload
//   check_free_rings(rings, ram_bytes, vcpus, windows)   the rings against the VM
//
// Section indices (docs/snapshot.md, "Devices"):
//   0  console      u32 magic "KCON", u32 version 1, u64 dropped,
//                   u64 n, n bytes: the record, head then tail, at most
//                   Console::kHeadBytes + kTailBytes
//   1  free rings   u32 magic "KRNG", u32 version 1, u32 vCPUs, u32 0,
//                   then per vCPU u64 ring gpa, u64 entries, u64 completed
//                   (all 0 for a vCPU without a ring)
//   2  free counts  u32 magic "KFRC", u32 version 1, then u64 reports,
//                   ranges, invalid ranges, bytes reported, bytes
//                   decommitted
// Every payload is little-endian and exactly as long as its fields. The
// decoders take hostile bytes: each refusal is an Error that names the
// payload and what is wrong, never an abort.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "memory/range.h"

namespace kvmem {

inline constexpr uint32_t kDeviceConsole = 0;
inline constexpr uint32_t kDeviceFreeRings = 1;
inline constexpr uint32_t kDeviceFreeCounts = 2;
inline constexpr uint32_t kDeviceStateVersion = 1;

struct ConsoleState {
  std::string text;      // bytes, the guest's: never trusted
  uint64_t dropped = 0;  // written between the head and the tail, not kept

  bool operator==(const ConsoleState&) const = default;
};

// What the host keeps of one vCPU's ring (FreeRing): where it is, its
// slots, and the `completed` it last published. The rest of the ring (the
// guest's `produced`, the slots, `invalid`) is in guest RAM.
struct FreeRingState {
  uint64_t gpa = 0;
  uint64_t entries = 0;  // 0: this vCPU has no ring
  uint64_t completed = 0;

  bool present() const { return entries != 0; }
  bool operator==(const FreeRingState&) const = default;
};

struct FreeCounts {
  uint64_t reports = 0;
  uint64_t ranges = 0;
  uint64_t invalid_ranges = 0;
  uint64_t bytes_reported = 0;
  uint64_t bytes_decommitted = 0;

  bool operator==(const FreeCounts&) const = default;
};

std::vector<uint8_t> encode_console_state(const ConsoleState& s);
// Errors: short, long, another magic or version; a record longer than the
// console keeps; bytes dropped while the record is not full (the console
// drops only once its head and tail are full).
Result<ConsoleState> decode_console_state(std::span<const uint8_t> bytes);

std::vector<uint8_t> encode_free_rings(const std::vector<FreeRingState>& rings);
// Errors: short, long, another magic or version, a reserved word not 0,
// more vCPUs than abi::kMaxDoorbells. The rings are not checked against a
// VM here (check_free_rings).
Result<std::vector<FreeRingState>> decode_free_rings(std::span<const uint8_t> bytes);
// The rings as a VM of `vcpus` vCPUs, `ram_bytes` of RAM and the writable
// windows `windows` could have set them up (FreeRing::create's rules): one
// state per vCPU; a ring's entries a power of two up to
// abi::kRingMaxEntries, its address 64-byte aligned, the header and slots
// wholly inside RAM or inside one of the windows (where a guest may put
// its ring too); no two rings overlapping; a vCPU without a ring all
// zeros. Errors name the vCPU and the values. (Whether the memory is
// there, in one piece, is FreeRing::create's to say when the ring is set
// up again.)
Status check_free_rings(const std::vector<FreeRingState>& rings, uint64_t ram_bytes, unsigned vcpus,
                        std::span<const GuestRange> windows = {});

std::vector<uint8_t> encode_free_counts(const FreeCounts& c);
// Errors: short, long, another magic or version.
Result<FreeCounts> decode_free_counts(std::span<const uint8_t> bytes);

}  // namespace kvmem
