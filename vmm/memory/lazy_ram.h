// LazyRam: guest RAM restored on demand from a snapshot (docs/snapshot.md,
// "Lazy restore").
//
// Synopsis
//   LazyRam::start(reader, space, file, ranges, options, on_error)
//                           -> Result<unique_ptr<LazyRam>>; the guest may run
//   forget(space range)     before a range is punched (a free report): the
//                           snapshot's data there is dropped, never written
//   complete()              waits until every extent is in (before a snapshot
//                           of the restored VM is taken, which reads the file)
//   stats()                 faults served, bytes waited for, the fill's pace
//   stop()                  ends both threads and the userfaultfd registration
//
// The RAM space's memory-file ranges must be fresh (all holes, as a punched
// VM's RAM is) and mapped, at file.base() + file offset, MAP_SHARED: they
// are registered with a userfaultfd in MISSING mode, so that the first
// touch of a hole, by a vCPU (through KVM's own fault), by the VMM's
// threads or anyone else, waits for the handler thread. The handler serves
// a fault in a page an extent covers by loading that whole extent (read,
// checksum, pwrite into the memfd) and waking the range; in a page no
// extent covers (a zero page in the snapshot, or one forgotten) by
// UFFDIO_ZEROPAGE. Meanwhile the filler thread walks the extents in order
// and loads each one nobody has loaded yet, with pwrite, which raises no
// userfaultfd events. When every extent is in, the ranges are unregistered
// and faults on holes go back to being the kernel's own.
//
// One extent is loaded at most once, by whichever thread claims it first
// (a mutex guards the per-extent state; the I/O runs outside it). A fault
// on an extent the filler is loading is not waited for on the handler's
// thread: the filler wakes the range when it is done. forget() waits for a
// load of an extent it overlaps to finish, then clears those pages from
// what is owed, so nothing is written there after the punch that follows.
//
// A failure (a damaged extent, a failed pwrite or ioctl) calls on_error
// once with the message, and then the ranges are unregistered so no thread
// stays blocked; the pages not loaded then read zero, so the caller must
// stop the VM (the guest's data is not whole), from on_error: then it is
// stopped before any fault waiting in the ranges returns.
//
// Lifetime: reader and file outlive the LazyRam; stop() (or the destructor)
// must run before the ranges are given back to the file.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "base/error.h"
#include "memory/memory_file.h"
#include "snapshot/memory.h"
#include "snapshot/reader.h"

namespace kvmem {

struct LazyStats {
  uint64_t faults = 0;             // userfaultfd page faults the handler took
  uint64_t zero_faults = 0;        // of them, served with a zero page
  uint64_t extents_on_demand = 0;  // extents loaded because a fault waited on them
  uint64_t bytes_on_demand = 0;    // their bytes: what the guest waited for
  uint64_t extents_filled = 0;     // extents the background filler loaded
  uint64_t bytes_filled = 0;
  uint64_t bytes_forgotten = 0;    // owed bytes dropped by forget() before anyone loaded them
  double fill_ms = 0;              // from start() until every extent was in (0: not yet)
  double fill_busy_ms = 0;         // time the filler spent loading (its MB/s: bytes_filled / this)
  double wait_ms = 0;              // summed time from a fault's event read to its wake
  bool complete = false;           // every extent is in and the ranges are unregistered
  std::string error;               // the failure on_error was given, if any
};

struct LazyOptions {
  bool fill = true;  // run the background filler (false: only faults load, for tests and benchmarks)
};

class LazyRam {
 public:
  using ErrorSink = std::function<void(const std::string&)>;
  static Result<std::unique_ptr<LazyRam>> start(const SnapshotReader& reader, uint32_t space, MemoryFile& file,
                                                std::vector<SpaceRange> ranges, const LazyOptions& options,
                                                ErrorSink on_error);
  LazyRam(const LazyRam&) = delete;
  LazyRam& operator=(const LazyRam&) = delete;
  ~LazyRam();

  // [start, end) of the space is about to be punched: drop what is owed
  // there. Waits for a load in flight there to finish. Page-aligned.
  void forget(uint64_t start, uint64_t end);
  // Loads whatever is left on the caller's thread and waits for loads in
  // flight; afterwards the file holds all of the snapshot's data. Errors:
  // a load's (also passed to on_error).
  Status complete();
  LazyStats stats() const;
  void stop();

 private:
  struct State;
  explicit LazyRam(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

}  // namespace kvmem
