#include "vmm/kvm/stats.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace kvmem {
namespace {

// pread until `n` bytes are in or the file ends.
bool pread_all(int fd, void* buf, size_t n, off_t at) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, at);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r, n -= static_cast<size_t>(r), at += r;
  }
  return true;
}

}  // namespace

Result<KvmStats> KvmStats::open(int vcpu_fd) {
  const int fd = ::ioctl(vcpu_fd, KVM_GET_STATS_FD, 0);
  if (fd < 0) return sys_fail("cannot read the vCPU's KVM statistics", "KVM_GET_STATS_FD", errno);
  Fd owned(fd);
  kvm_stats_header h{};
  if (!pread_all(fd, &h, sizeof(h), 0))
    return sys_fail("cannot read the KVM statistics header", "pread", errno ? errno : EIO);
  // A descriptor is 16 fixed bytes (flags, exponent, size, offset,
  // bucket_size), then name_size bytes of name. Not sizeof(kvm_stats_desc):
  // in C++ the header's flexible-array wrapper pads the struct to 20.
  constexpr size_t kFixed = 16;
  const size_t desc_size = kFixed + h.name_size;
  if (h.num_desc > 4096 || h.name_size == 0 || h.name_size > 1024)
    return fail("the KVM statistics header is implausible ({} descriptors, names of {} bytes)", h.num_desc,
                h.name_size);
  std::vector<uint8_t> descs(desc_size * h.num_desc);
  if (!pread_all(fd, descs.data(), descs.size(), h.desc_offset))
    return sys_fail("cannot read the KVM statistics descriptors", "pread", errno ? errno : EIO);
  std::vector<Counter> counters;
  for (uint32_t i = 0; i < h.num_desc; i++) {
    const uint8_t* d = descs.data() + i * desc_size;
    uint32_t flags = 0, offset = 0;
    uint16_t size = 0;
    std::memcpy(&flags, d, 4);
    std::memcpy(&size, d + 6, 2);
    std::memcpy(&offset, d + 8, 4);
    const char* name = reinterpret_cast<const char*>(d + kFixed);
    const uint32_t type = flags & KVM_STATS_TYPE_MASK;
    if (size != 1 || (type != KVM_STATS_TYPE_CUMULATIVE && type != KVM_STATS_TYPE_INSTANT)) continue;
    counters.push_back({std::string(name, strnlen(name, h.name_size)), uint64_t{h.data_offset} + offset});
  }
  return KvmStats(std::move(owned), std::move(counters));
}

Result<std::map<std::string, uint64_t>> KvmStats::read() const {
  std::map<std::string, uint64_t> out;
  for (const Counter& c : counters_) {
    uint64_t v = 0;
    if (!pread_all(fd_.get(), &v, sizeof(v), static_cast<off_t>(c.offset)))
      return sys_fail("cannot read a KVM statistic", "pread", errno ? errno : EIO);
    out[c.name] = v;
  }
  return out;
}

std::map<std::string, uint64_t> stats_delta(const std::map<std::string, uint64_t>& before,
                                            const std::map<std::string, uint64_t>& after) {
  std::map<std::string, uint64_t> d;
  for (const auto& [name, v] : after) {
    auto it = before.find(name);
    const uint64_t b = it == before.end() ? 0 : it->second;
    d[name] = v >= b ? v - b : 0;
  }
  return d;
}

}  // namespace kvmem
