// cli/ holds main (the app and the dispatch) and one file per subcommand.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <fmt/format.h>

namespace fs = std::filesystem;

TEST_CASE("each subcommand lives in its own file and main.cc only dispatches", "[cli]") {
  for (const char* sub : {"run", "validate", "stress", "bench"}) {
    const fs::path file = fs::path("cli") / (std::string(sub) + ".cc");
    INFO(file);
    REQUIRE(fs::exists(file));
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    CHECK(std::regex_search(text.str(), std::regex(fmt::format("add_subcommand\\(\\s*\"{}\"", sub))));
  }
  std::ifstream in("cli/main.cc");
  std::stringstream main_text;
  main_text << in.rdbuf();
  CHECK(main_text.str().find("add_subcommand(") == std::string::npos);
}
