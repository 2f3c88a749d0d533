// What the CLI tests share: running the binary, and config files that go
// away when the test ends.
#pragma once

#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/support.h"

namespace kvmem::test {

inline CommandResult run_kvmem(std::vector<std::string> args, std::vector<std::string> env = {}) {
  args.insert(args.begin(), kvmem_binary());
  return run_command(args, env);
}

// A config file that is removed when the test ends.
class TempConfig {
 public:
  explicit TempConfig(const std::string& text, const std::string& suffix = "") {
    std::string tmpl = "/tmp/kvmem-cli-XXXXXX" + suffix;
    int fd = mkstemps(tmpl.data(), static_cast<int>(suffix.size()));
    REQUIRE(fd >= 0);
    close(fd);
    path_ = tmpl;
    std::ofstream(path_, std::ios::binary) << text;
  }
  ~TempConfig() { unlink(path_.c_str()); }
  TempConfig(const TempConfig&) = delete;
  TempConfig& operator=(const TempConfig&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace kvmem::test
