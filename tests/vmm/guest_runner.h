// Boots a guest from an in-test JSON config, as `kvmem run` would.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "memory/memory_file.h"
#include "vmm/vm.h"

namespace kvmem::test {

struct GuestRun {
  std::string setup_error;  // non-empty when the config or the host refused
  RunResult result;
  std::unique_ptr<MemoryFile> file;  // declared before vm: the VM goes first
  std::unique_ptr<Vm> vm;   // kept so tests can look at guest memory afterwards
};

GuestRun run_guest(const nlohmann::json& config);
// The same, without running it: vm is set unless setup_error is.
GuestRun create_guest(const nlohmann::json& config);
// The same, with `tweak` changing the parsed config before the VM is made
// (settings a JSON config does not reach, such as prefault lanes).
GuestRun create_guest(const nlohmann::json& config, const std::function<void(VmConfig&)>& tweak);

}  // namespace kvmem::test
