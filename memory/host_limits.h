// The memory limit the host puts on this process: its memory cgroup's.
//
// Synopsis
//   host_memory_limit()                        -> Result<MemoryLimit>, from /proc/self
//   find_memory_limit(proc_cgroup, mountinfo)  -> the same, from those files' text
//   host_memory_cgroups()  find_memory_cgroups(...)  where the process's memory cgroups are
//   read_cgroup_usage(bound)                   -> bytes the cgroup is charged now
//   read_cgroup_reclaimable(bound)             -> of which page cache the kernel can drop
//   MemoryLimit::tightest()  bound.describe()
//
// What binds. Under cgroup v2 a cgroup's memory.max is a hard limit (past it
// the kernel's OOM killer picks a process) and memory.high a softer one (past
// it the kernel throttles and reclaims; with guest RAM in shmem and no swap
// there is nothing to reclaim, so the process crawls): each level's bound is
// the lower of the two. Under cgroup v1 it is memory.limit_in_bytes ("max" in
// v2 and any v1 value at or above 2^62 mean none). Every ancestor's limit
// applies too, and its usage counts its whole subtree, so each level with a
// limit is one bound; the hybrid layout (v1 memory controller, v2 mounted
// beside it) is read through whichever hierarchy has the memory files.
//
// What counts. The kernel charges a cgroup for everything its processes use:
// anonymous memory, shmem (the memory file's pages, charged to whoever first
// touched them: a vCPU's faults are the VMM's), page cache, and kernel memory
// such as KVM's per-memslot arrays. memory.current (v2) and
// memory.usage_in_bytes (v1) say the total; memory.stat's file LRU counters
// say how much of it is page cache the kernel can drop before it kills
// anyone (shmem is not on those lists).
//
// No KVM and no JSON here: the harness decides what to do about a limit.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace kvmem {

// One cgroup whose limit bounds this process.
struct CgroupMemoryBound {
  std::string dir;       // the cgroup's directory, e.g. /sys/fs/cgroup/memory/a/b
  std::string file;      // what set the bound: memory.max, memory.high or memory.limit_in_bytes
  uint64_t bytes = 0;    // the bound
  bool v2 = false;

  std::string usage_path() const;  // memory.current or memory.usage_in_bytes
  std::string stat_path() const;   // memory.stat
  // "the memory cgroup limit of 256 MiB (memory.max of /sys/fs/cgroup/x)"
  std::string describe() const;
};

struct MemoryLimit {
  // Own cgroup first, then its ancestors: only levels with a limit. Empty:
  // nothing bounds the process but the machine.
  std::vector<CgroupMemoryBound> bounds;

  bool none() const { return bounds.empty(); }
  // The lowest bound. Precondition: !none().
  const CgroupMemoryBound& tightest() const;
};

// A memory cgroup this process is in: one per hierarchy that has the memory
// files (the v1 memory controller's, the v2 unified one).
struct MemoryCgroup {
  std::string dir;    // its directory
  std::string mount;  // where its hierarchy is mounted (the top of what can be seen)
  bool v2 = false;
};
std::vector<MemoryCgroup> find_memory_cgroups(std::string_view proc_cgroup, std::string_view mountinfo);
Result<std::vector<MemoryCgroup>> host_memory_cgroups();

// The limits on this process, from /proc/self/cgroup and
// /proc/self/mountinfo. No cgroup files (or no memory controller): no limit.
// Errors: a limit or usage file that exists but does not hold a number.
Result<MemoryLimit> host_memory_limit();

// The same from the two files' text (tests feed their own, with mount points
// in a directory of their own).
Result<MemoryLimit> find_memory_limit(std::string_view proc_cgroup, std::string_view mountinfo);

// Bytes charged to the bound's cgroup now (its subtree included).
Result<uint64_t> read_cgroup_usage(const CgroupMemoryBound& bound);
// Bytes of that charge on the file LRU lists (page cache the kernel reclaims
// before it kills); 0 when memory.stat does not say.
Result<uint64_t> read_cgroup_reclaimable(const CgroupMemoryBound& bound);

}  // namespace kvmem
