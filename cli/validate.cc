// `kvmem validate FILE`: parse a config and assemble its programs, run nothing.
#include <cstdio>

#include "cli/cli.h"
#include "config/stress_config.h"
#include "config/vm_config.h"
#include "guest/abi.h"
#include "guest/program.h"
#include "harness/stress.h"

namespace kvmem::cli {
namespace {

class ValidateCommand : public Command {
 public:
  explicit ValidateCommand(CLI::App& app) {
    cmd_ = app.add_subcommand("validate",
                              "Check a VM, many-VM or stress config (and assemble its programs) without running it");
    cmd_->add_option("FILE", file_, "the VM config")->required();
    cmd_->add_flag("--json", json_, "print the result as JSON");
  }

  // The file is read once (it may be a pipe), then parsed as what it is.
  int run(Clock::time_point) override {
    auto j = read_config_json(file_);
    if (!j) return report_error(json_, kExitUsage, j.error().message);
    return is_stress_config(*j) ? validate_stress(*j) : validate_vms(*j);
  }

 private:
  // A stress config validates as one, with what a round will run.
  int validate_stress(const json& j) {
    auto c = stress_config_from(j, file_);
    if (!c) return report_error(json_, kExitUsage, c.error().message);
    // Every program any round's VM can get must assemble, not just one.
    if (auto ok = check_stress_programs(*c); !ok) return report_error(json_, kExitUsage, ok.error().context(file_).message);
    if (json_) {
      json stress = {{"vms_per_round", c->vms_per_round},
                     {"vm_memory_bytes", c->vm_memory},
                     {"rounds", c->rounds},
                     {"duration_s", c->duration_s},
                     {"commit_budget_bytes", c->commit_budget}};
      stress["vcpus"] = json::array({c->vcpus_min, c->vcpus_max});
      json backings = json::array(), prefaults = json::array();  // element by element, as in harness/report.cc
      for (RamBacking b : c->backings) backings.push_back(ram_backing_name(b));
      for (Prefault m : c->prefaults) prefaults.push_back(prefault_name(m));
      stress["backings"] = std::move(backings);
      stress["prefault"] = std::move(prefaults);
      stress["snapshots"] = {{"probability", c->snapshots.probability}, {"lazy", c->snapshots.lazy}};
      print_json({{"exit_code", 0}, {"stress", std::move(stress)}});
    } else {
      std::printf("%s: ok (stress: %llu VMs of %llu MiB per round, %s)\n", file_.c_str(),
                  static_cast<unsigned long long>(c->vms_per_round),
                  static_cast<unsigned long long>(c->vm_memory >> 20),
                  c->rounds ? fmt::format("{} rounds", c->rounds).c_str() : fmt::format("{} s", c->duration_s).c_str());
    }
    return kExitOk;
  }

  int validate_vms(const json& j) {
    auto config = run_config_from(j, file_);
    if (!config) return report_error(json_, kExitUsage, config.error().message);
    auto p = assemble(std::move(*config), file_);
    if (!p) return report_error(json_, kExitUsage, p.error().message);
    json vms = json::array();
    std::string text;
    for (size_t i = 0; i < p->config.vms.size(); i++) {
      const VmConfig& c = p->config.vms[i];
      const size_t code_bytes = p->images[i].bytes.size();
      vms.push_back({{"name", c.name}, {"memory_bytes", c.memory}, {"steps", c.program.size()}, {"code_bytes", code_bytes}});
      text += fmt::format("{}vm {}, {} MiB, {} steps, {} bytes of guest code", text.empty() ? "" : "; ", c.name,
                          c.memory >> 20, c.program.size(), code_bytes);
    }
    if (json_)
      print_json({{"exit_code", 0}, {"vms", vms}});
    else
      std::printf("%s: ok (%s)\n", file_.c_str(), text.c_str());
    return kExitOk;
  }

  std::string file_;
  bool json_ = false;
};

}  // namespace

std::unique_ptr<Command> add_validate_command(CLI::App& app) { return std::make_unique<ValidateCommand>(app); }

}  // namespace kvmem::cli
