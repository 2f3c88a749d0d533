// The console keeps a bounded record of what a guest writes: the head, the
// tail, and a count of what fell between them.
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "vmm/devices/console.h"

using namespace kvmem;

namespace {

// Byte i of a stream that tells every position apart (mod 251, a prime).
std::string stream(size_t from, size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i++) s[i] = static_cast<char>((from + i) % 251);
  return s;
}

}  // namespace

TEST_CASE("a console under its bound keeps every byte and drops none", "[console]") {
  Console c;
  c.write("hello ");
  c.write(std::string("\xff\x00\x80", 3));  // bytes, not text
  CHECK(c.text() == std::string("hello \xff\x00\x80", 9));
  CHECK(c.dropped() == 0);
}

TEST_CASE("a console past its bound keeps the head and the tail and counts the rest", "[console]") {
  const size_t head = Console::kHeadBytes, tail = Console::kTailBytes;
  struct Case {
    const char* name;
    size_t total;
    size_t chunk;
  } cases[] = {
      {"exactly full", head + tail, 4096},
      {"one byte over", head + tail + 1, 1000},
      {"small writes, many laps of the tail", 10 * (head + tail) + 17, 33},
      {"one write larger than both", 3 * (head + tail) + 5, 3 * (head + tail) + 5},
      {"writes the size of the tail", 5 * tail, tail},
  };
  for (const Case& k : cases) {
    INFO(k.name);
    Console c;
    uint64_t echoed = 0;
    c.set_echo([&](std::string_view s) { echoed += s.size(); });
    for (size_t at = 0; at < k.total; at += k.chunk) c.write(stream(at, std::min(k.chunk, k.total - at)));
    CHECK(echoed == k.total);  // the echo sees everything
    const size_t kept = std::min(k.total, head + tail);
    CHECK(c.buffered() == kept);
    CHECK(c.dropped() == k.total - kept);
    CHECK(c.text() == stream(0, head) + stream(k.total - (kept - head), kept - head));
  }
}

TEST_CASE("a console's memory stays at its bound however much is written", "[console]") {
  Console c;
  const std::string line = stream(0, 4000);
  for (int i = 0; i < 50'000; i++) c.write(line);  // 200 MB
  CHECK(c.buffered() == Console::kHeadBytes + Console::kTailBytes);
  CHECK(c.dropped() == 50'000ull * 4000 - Console::kHeadBytes - Console::kTailBytes);
}

TEST_CASE("vCPUs writing to one console at once lose no count and keep each write whole", "[console][threads]") {
  Console c;
  constexpr int kWriters = 4, kWrites = 20'000;
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; w++)
    writers.emplace_back([&c, w] {
      const std::string line(8, static_cast<char>('a' + w));
      for (int i = 0; i < kWrites; i++) c.write(line);
    });
  for (std::thread& t : writers) t.join();
  const uint64_t total = uint64_t{kWriters} * kWrites * 8;
  CHECK(c.dropped() + c.buffered() == total);
  const std::string text = c.text();
  // Every write is 8 bytes of one letter and the bound is a multiple of 8,
  // so whole writes line up in both the head and the tail.
  for (size_t i = 0; i + 8 <= text.size(); i += 8)
    if (text.substr(i, 8) != std::string(8, text[i])) FAIL("a write was torn at byte " << i);
}
