// LazyRam (lazy_ram.h): in progress.
#include "vmm/memory/lazy_ram.h"

namespace kvmem {

struct LazyRam::State {};

Result<std::unique_ptr<LazyRam>> LazyRam::start(const SnapshotReader&, uint32_t, MemoryFile&, std::vector<SpaceRange>,
                                                const LazyOptions&, ErrorSink) {
  return fail("the lazy restore is not built yet");
}
LazyRam::LazyRam(std::unique_ptr<State> state) : s_(std::move(state)) {}
LazyRam::~LazyRam() = default;
void LazyRam::forget(uint64_t, uint64_t) {}
Status LazyRam::complete() { return {}; }
LazyStats LazyRam::stats() const { return {}; }
void LazyRam::stop() {}

}  // namespace kvmem
