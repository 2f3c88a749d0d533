// tools/check-layers, the include-order check that `make test` runs, on
// small trees made here: it passes a downward include and fails an upward one.
#include <catch2/catch.hpp>

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/support.h"

using namespace kvmem;
namespace fs = std::filesystem;

namespace {

class TempTree {
 public:
  TempTree() {
    char tmpl[] = "/tmp/kvmem-layers-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    root_ = tmpl;
  }
  ~TempTree() { fs::remove_all(root_); }
  void write(const std::string& path, const std::string& text) {
    fs::create_directories((root_ / path).parent_path());
    std::ofstream(root_ / path) << text;
  }
  std::string root() const { return root_.string(); }

 private:
  fs::path root_;
};

test::CommandResult check(const TempTree& t) { return test::run_command({"tools/check-layers", t.root()}); }

}  // namespace

TEST_CASE("the layer check passes the repository itself", "[layers]") {
  auto r = test::run_command({"tools/check-layers"});
  INFO(r.err);
  CHECK(r.exit_code == 0);
}

TEST_CASE("the layer check accepts includes from a file's own folder and below", "[layers]") {
  TempTree t;
  t.write("base/error.h", "#pragma once\n");
  t.write("memory/range.h", "#include \"base/error.h\"\n#include <vector>\n");
  t.write("vmm/vm.cc", "#include \"vmm/vm.h\"\n#include \"vmm/kvm/kvm.h\"\n#include \"memory/range.h\"\n");
  t.write("tests/x_test.cc", "#include \"cli/anything.h\"\n");  // tests are not checked
  auto r = check(t);
  INFO(r.err);
  CHECK(r.exit_code == 0);
}

TEST_CASE("the layer check fails an include from a folder above", "[layers]") {
  TempTree t;
  t.write("memory/memory_file.cc", "#include \"memory/range.h\"\n  #include \"vmm/kvm/kvm.h\"\n");
  t.write("vmm/kvm/kvm.cc", "#include \"vmm/memory/guest_memory.h\"\n");  // a sub-folder above kvm
  auto r = check(t);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("memory/memory_file.cc:2 includes \"vmm/kvm/kvm.h\"") != std::string::npos);
  CHECK(r.err.find("vmm/kvm/kvm.cc:1 includes \"vmm/memory/guest_memory.h\"") != std::string::npos);
  CHECK(r.err.find("2 upward include(s)") != std::string::npos);
}
