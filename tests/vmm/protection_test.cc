// The boot area protects itself from the CPL3 program: page tables, GDT,
// IDT, TSS, stubs and ring-0 stacks are supervisor-only, the program's code
// is read-only, and a write to any of them is a #PF reported as a guest
// exception, never a way into ring 0.
#include <cstring>

#include <catch2/catch.hpp>

#include "guest/abi.h"
#include "guest/layout.h"
#include "guest/program.h"
#include "harness/runner.h"
#include "tests/support.h"

using namespace kvmem;
namespace layout = guest::layout;

namespace {

constexpr uint64_t kRam = 8 << 20;

// Runs an image on a fresh VM of kRam bytes.
RunResult run_image(const guest::Image& image, std::vector<guest::Step> steps = {}) {
  auto kvm = Kvm::open();
  REQUIRE(kvm);
  auto file = MemoryFile::create(memory_file_options_for(kRam));
  REQUIRE(file);
  VmConfig c;
  c.name = "protection";
  c.memory = kRam;
  c.timeout_ms = 5000;
  c.program = std::move(steps);
  auto vm = Vm::create(*kvm, **file, c, image);
  REQUIRE(vm);
  return (*vm)->run(nullptr);
}

// A raw program, written here: `mov rax, gpa; mov [rax], rax; exit 0`.
guest::Image store_to(uint64_t gpa) {
  guest::Image img;
  img.base = img.entry = layout::kProgramAddr;
  img.bytes = {0x48, 0xb8};
  for (int i = 0; i < 8; i++) img.bytes.push_back(static_cast<uint8_t>(gpa >> (8 * i)));
  for (uint8_t b : std::initializer_list<uint8_t>{0x48, 0x89, 0x00,  // mov [rax], rax
                    0xbf, 0x00, 0x00, 0x00, 0x00,         // mov edi, 0
                    0xb8, 0x02, 0x00, 0x00, 0x00,         // mov eax, kHcExit
                    0xe7, 0xe8})                          // out 0xe8, eax
    img.bytes.push_back(b);
  return img;
}

// seed_mix's inverse in its first argument: the seed that makes a pattern
// word at gpa hold `value`.
uint64_t seed_for(uint64_t gpa, uint64_t value) {
  auto inverse = [](uint64_t k) {  // of an odd k, mod 2^64 (Newton's iteration)
    uint64_t x = k;
    for (int i = 0; i < 6; i++) x *= 2 - k * x;
    return x;
  };
  uint64_t x = value;
  x ^= x >> 33;
  x *= inverse(0xc4ceb9fe1a85ec53ull);
  x ^= x >> 33;
  x *= inverse(0xff51afd7ed558ccdull);
  x ^= x >> 33;
  return x ^ gpa;
}

guest::Step word(uint64_t gpa, uint64_t value) {
  return guest::Fill{gpa, 8, guest::Pattern{guest::Pattern::Kind::kSeed, seed_for(gpa, value)}};
}

}  // namespace

TEST_CASE("a CPL3 write to any ring-0 piece of the boot area, or to the code, is a page fault", "[kvm][vm][protection]") {
  REQUIRE_KVM();
  const uint64_t targets[] = {layout::kGdtAddr, layout::kIdtAddr + 6 * 16, layout::kStubsAddr, layout::kPml4Addr,
                              layout::kLowPtAddr, layout::tss_addr(0), layout::kernel_stack_top(0) - 8,
                              layout::kProgramAddr};
  for (uint64_t gpa : targets) {
    INFO(fmt::format("store to {:#x}", gpa));
    RunResult r = run_image(store_to(gpa));
    CHECK(r.outcome == RunResult::Outcome::kFailed);
    // Error code 7: present, write, user.
    CHECK(r.message == fmt::format("guest exception #PF page fault (vector 14) at rip {:#x}: error code 0x7, cr2 {:#x}",
                                   layout::kProgramAddr + 10, gpa));
  }
  RunResult null = run_image(store_to(8));
  CHECK(null.message.find("error code 0x6, cr2 0x8") != std::string::npos);  // not present
}

TEST_CASE("a CPL3 program writes its stack, report lists and free ring", "[kvm][vm][protection]") {
  REQUIRE_KVM();
  for (uint64_t gpa : {layout::kReportListAddr, layout::kFreeRingAddr, layout::user_stack_top(0) - 8,
                       abi::kBootAreaEnd}) {
    INFO(fmt::format("store to {:#x}", gpa));
    RunResult r = run_image(store_to(gpa));
    INFO(r.message);
    CHECK(r.outcome == RunResult::Outcome::kExited);
    CHECK(r.guest_exit_code == 0);
  }
}

TEST_CASE("steps that repoint the #UD gate at injected code no longer reach ring 0", "[kvm][vm][protection]") {
  REQUIRE_KVM();
  // The attack: code at 2 MiB that reads CR0 and exits with it, a #UD gate
  // (vector 6) pointing there, then ud2. Past config validation, which now
  // refuses both ways a config had to write the IDT.
  const uint64_t code = 2 << 20;
  const uint64_t gate = (code & 0xffff) | (uint64_t{layout::kKernelCs} << 16) | (0x8eull << 40) |
                        ((code >> 16 & 0xffff) << 48);
  std::vector<guest::Step> steps{
      word(code, 0xc78948c0200full),          // mov rax, cr0; mov rdi, rax; (mov eax,
      word(code + 6, 0xf4e8e700000002b8ull),  //  2); out 0xe8, eax; hlt
      word(layout::kIdtAddr + 6 * 16, gate),
      guest::Fault{guest::FaultKind::kInvalidOpcode}};
  // The words overlap by two bytes; the second rewrites them as it wants.
  auto image = guest::build(steps, {.ram_bytes = kRam});
  REQUIRE(image);
  RunResult r = run_image(*image, steps);
  INFO(r.message);
  CHECK_FALSE(r.outcome == RunResult::Outcome::kExited);
  CHECK(r.message.rfind("guest exception #PF page fault (vector 14)", 0) == 0);
  CHECK(r.message.find(fmt::format("cr2 {:#x}", layout::kIdtAddr + 6 * 16)) != std::string::npos);
}
