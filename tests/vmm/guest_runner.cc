#include "tests/vmm/guest_runner.h"

#include "guest/abi.h"
#include "config/vm_config.h"
#include "harness/runner.h"

namespace kvmem::test {

GuestRun create_guest(const nlohmann::json& config) { return create_guest(config, nullptr); }

GuestRun create_guest(const nlohmann::json& config, const std::function<void(VmConfig&)>& tweak) {
  GuestRun out;
  auto c = parse_vm_config(config, "test");
  if (!c) {
    out.setup_error = c.error().message;
    return out;
  }
  if (tweak) tweak(*c);
  auto image = guest::build_vcpus(c->vcpu_programs(), c->machine());
  if (!image) {
    out.setup_error = image.error().message;
    return out;
  }
  auto kvm = Kvm::open();
  if (!kvm) {
    out.setup_error = kvm.error().message;
    return out;
  }
  // The config's backing (anon: a plain file for windows), as kvmem run gives it.
  auto file = make_ram_file(c->backing, c->memory);
  if (!file) {
    out.setup_error = file.error().message;
    return out;
  }
  out.file = std::move(*file);
  auto vm = Vm::create(*kvm, *out.file, *c, *image);
  if (!vm) {
    out.setup_error = vm.error().message;
    return out;
  }
  out.vm = std::move(*vm);
  return out;
}

GuestRun run_guest(const nlohmann::json& config) {
  GuestRun out = create_guest(config);
  if (out.vm) out.result = out.vm->run(nullptr);
  return out;
}

}  // namespace kvmem::test
