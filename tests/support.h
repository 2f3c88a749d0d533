// Helpers shared by the tests.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace kvmem::test {

// Runs fn in a forked child with stderr captured. Returns true if the child
// died by SIGABRT and its stderr contains `needle`; *output receives stderr.
bool dies_with(const std::function<void()>& fn, const std::string& needle,
               std::string* output = nullptr);

// True when /dev/kvm can be opened read-write. When it cannot, prints one loud
// line naming the test that is skipped.
bool kvm_available(const char* test_name);

// Path of the kvmem binary under test (KVMEM_BIN, else build/kvmem).
std::string kvmem_binary();

struct CommandResult {
  int exit_code = -1;  // exit status, or 128 + signal
  std::string out;
  std::string err;
};
// Runs argv (argv[0] is looked up as given, not on PATH) and captures output.
// `env` entries ("NAME=value") are added to the child's environment.
CommandResult run_command(const std::vector<std::string>& argv, const std::vector<std::string>& env = {});

}  // namespace kvmem::test

// Ends the current test early, with one loud line, when KVM is unusable.
#define REQUIRE_KVM()                                                                           \
  if (!::kvmem::test::kvm_available(Catch::getResultCapture().getCurrentTestName().c_str())) \
  return
