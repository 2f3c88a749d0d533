// What the fuzz targets (*_fuzz.cc, docs/fuzzing.md) share.
//
// Each target is a plain function, `int kvmem::fuzz::NAME_one(const
// uint8_t*, size_t)`, that the g++ test binary calls on every file of its
// corpus (tests/fuzz/NAME/) and that `make fuzz` wraps for libFuzzer with
// KVMEM_FUZZ_TARGET. A target returns 0; a broken expectation aborts
// through KVMEM_CHECK, so libFuzzer and the replay test both see it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace kvmem::fuzz {

// Reads typed values off the front of a fuzzer's input. Past the end every
// value is zero, so any input, however short, is a complete program for a
// target to run.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return size_ == 0; }
  size_t remaining() const { return size_; }

  template <class T>
  T take() {
    T v{};
    const size_t n = sizeof(T) < size_ ? sizeof(T) : size_;
    if (n > 0) std::memcpy(&v, data_, n);
    data_ += n;
    size_ -= n;
    return v;
  }
  uint8_t byte() { return take<uint8_t>(); }
  uint64_t u64() { return take<uint64_t>(); }
  // A value in [0, bound), bound > 0.
  uint64_t below(uint64_t bound) { return u64() % bound; }
  // Up to `max` bytes, as many as are left.
  const uint8_t* bytes(size_t max, size_t* got) {
    *got = max < size_ ? max : size_;
    const uint8_t* p = data_;
    data_ += *got;
    size_ -= *got;
    return p;
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

}  // namespace kvmem::fuzz

// The libFuzzer entry for one target, compiled only by `make fuzz`.
#ifdef KVMEM_LIBFUZZER
#define KVMEM_FUZZ_TARGET(fn) \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { return fn(data, size); }
#else
#define KVMEM_FUZZ_TARGET(fn)
#endif
