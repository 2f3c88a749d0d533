// VM configs back to JSON: the inverse of config/vm_config.h's parser, for
// VMs made in code (stress) that must carry their config text
// (VmConfig::source) into a snapshot, where a restore parses it again.
//
// Synopsis
//   pattern_json(p)        "zero", "address", {"seed": N, "origin": O}, ...
//   step_json(s)           {"op": "fill", "at": ..., ...}; a loop with its body
//   vm_config_json(c)      one VM's config: every key the parser reads
//   vm_config_source(c)    its text, or why it has none
//
// The promise is a round trip: parse_vm_config(vm_config_json(c)) gives a
// config whose programs assemble to the same bytes as c's (tests/config/
// vm_json_test.cc). Numbers are written as JSON integers (64-bit unsigned
// ones are exact in nlohmann's JSON); a value the parser would refuse is
// written as it is, and refused when parsed.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "guest/step.h"
#include "vmm/vm_config.h"

namespace kvmem {

nlohmann::json pattern_json(const guest::Pattern& p);
nlohmann::json step_json(const guest::Step& s);

// One VM's config with its name, RAM keys and program(s), and its windows;
// the files those show are not in a VmConfig: a caller with windows adds
// "files" itself.
nlohmann::json vm_config_json(const VmConfig& c);

// vm_config_json(c) as text. Errors: a print step's text that is not UTF-8
// (JSON strings are), naming the VM.
Result<std::string> vm_config_source(const VmConfig& c);

}  // namespace kvmem
