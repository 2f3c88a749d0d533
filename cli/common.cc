#include <atomic>
#include <charconv>
#include <cstdio>

#include "cli/cli.h"
#include "guest/abi.h"
#include "harness/report.h"

namespace kvmem::cli {

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

int report_error(bool as_json, int code, const std::string& message) {
  if (as_json) {
    print_json(json{{"exit_code", code}, {"error", message}});
  } else {
    std::fprintf(stderr, "kvmem: %s\n", terminal_safe(message).c_str());
  }
  return code;
}

Result<Prepared> prepare(const std::string& path) {
  auto config = load_run_config(path);
  if (!config) return std::unexpected(config.error());
  return assemble(std::move(*config), path);
}

Result<Prepared> assemble(RunConfig config, const std::string& path) {
  Prepared p{std::move(config), {}};
  for (const VmConfig& vm : p.config.vms) {
    auto image = guest::build_vcpus(vm.vcpu_programs(), vm.machine());
    if (!image) return std::unexpected(image.error().context(fmt::format("{}: vm {}", path, vm.name)));
    p.images.push_back(std::move(*image));
  }
  return p;
}

CLI::Validator whole_number(uint64_t min, uint64_t max) {
  return CLI::Validator(
      [min, max](std::string& s) -> std::string {
        uint64_t v = 0;
        const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        const bool digits = !s.empty() && end == s.data() + s.size();
        if (ec == std::errc::result_out_of_range || (ec == std::errc{} && digits && (v < min || v > max)))
          return fmt::format("{} is out of range: it must be {}..{}", s, min, max);
        if (ec != std::errc{} || !digits) return fmt::format("{} is not a whole number {}..{}", s, min, max);
        return {};
      },
      fmt::format("{}..{}", min, max));
}

void write_stdout(std::string_view bytes) {
  static std::atomic<bool> reader_gone{false};
  if (reader_gone.load() || bytes.empty()) return;
  if (std::fwrite(bytes.data(), 1, bytes.size(), stdout) != bytes.size() || std::fflush(stdout) != 0) {
    reader_gone.store(true);
    std::clearerr(stdout);
  }
}

void print_json(const json& j) { write_stdout(dump_report(j) + "\n"); }

}  // namespace kvmem::cli

namespace kvmem::cli {

void ConsoleEcho::operator()(std::string_view vm, std::string_view text) {
  std::lock_guard lock(mu_);
  if (!prefix_) {
    write_stdout(raw_.feed(text));
    return;
  }
  std::string& pending = pending_[std::string(vm)];
  pending.append(text);
  // A '\n' byte is never inside a UTF-8 sequence: a whole line is safe to clean alone.
  for (size_t nl; (nl = pending.find('\n')) != std::string::npos; pending.erase(0, nl + 1))
    write_stdout(fmt::format("[{}] {}\n", vm, terminal_safe(std::string_view(pending).substr(0, nl))));
}

void ConsoleEcho::flush() {
  std::lock_guard lock(mu_);
  write_stdout(raw_.finish());
  for (auto& [vm, pending] : pending_)
    if (!pending.empty()) write_stdout(fmt::format("[{}] {}\n", vm, terminal_safe(pending)));
  pending_.clear();
}

}  // namespace kvmem::cli
