// The replay's mapping operations: map, unmap, mwrite, mread, on
// tmpfs::HostMapping (memory/tmpfs/host_mapping.h).
//
// An access reports what the same access through a real MAP_SHARED mmap of
// a memfd would do. A mapping covers whole pages: its length rounded up to
// a page is what an access may reach.
//   - past that extent, or a write to a read-only mapping: the address is
//     not mapped, or not for writing: SIGSEGV (checked here, before the
//     layer is asked);
//   - a page of the mapping that lies wholly past the end of the file (the
//     file's size rounded up to a page): SIGBUS. The host mapping reports it
//     as EFAULT, having copied the bytes of the pages before it, as a real
//     copy loop would have before its fault;
//   - the tail of the file's last page, past its size: reads zero until
//     written, and a write there succeeds (the bytes stay in the page, past
//     what a read() of the file returns at this size).
#include <vector>

#include "harness/fs_replay.h"
#include "harness/fs_replay_fields.h"
#include "memory/tmpfs/host_mapping.h"

namespace kvmem {

using namespace replay;

namespace {

// Why an access to [offset, offset + length) of `m` would fault before the
// layer sees it; empty when it would not.
std::string outside(const FsReplay::Mapping& m, const std::string& id, uint64_t offset, uint64_t length,
                    bool write) {
  if (write && !m.writable) return fmt::format("mapping \"{}\" is read-only: a write to it faults", id);
  if (offset > m.extent || length > m.extent - offset)
    return fmt::format("[{:#x}, +{:#x}) reaches past mapping \"{}\", {:#x} bytes long (whole pages)", offset, length,
                       id, m.extent);
  return {};
}

// The result of an access the host mapping refused: a fault for EFAULT,
// the layer's refusal otherwise (ENOMEM filling a hole, say).
json access_failed(const Error& e) {
  if (e.code == EFAULT) return fault("SIGBUS", e.message);
  return failure(e);
}

}  // namespace

Result<FsReplay::Mapping*> FsReplay::mapping_of(const json& j) {
  const std::string id = KVMEM_TRY(required_string(j, "id", kFsReplayMaxIdBytes));
  auto it = mappings_.find(id);
  if (it == mappings_.end()) return (Ptr() / "id").fail("no mapping \"{}\" (map it first)", id);
  return it->second.get();
}

Result<json> FsReplay::op_map(const json& j) {
  const std::string name = KVMEM_TRY(required_string(j, "name"));
  const std::string id = KVMEM_TRY(required_string(j, "id", kFsReplayMaxIdBytes));
  if (id.empty()) return (Ptr() / "id").fail("empty: an id is 1 to {} bytes", kFsReplayMaxIdBytes);
  const uint64_t offset = KVMEM_TRY(required_number(j, "offset"));
  const uint64_t length =
      KVMEM_TRY(bounded_number(j, "length", kFsReplayMaxMapBytes, "the longest mapping a replay makes"));
  const bool writable = KVMEM_TRY(optional_bool(j, "writable", false));
  if (mappings_.contains(id)) return (Ptr() / "id").fail("mapping \"{}\" exists already (unmap it first)", id);
  if (mappings_.size() >= kFsReplayMaxMappings)
    return fail("{} mappings already: the replay keeps at most {} (unmap one first)", kFsReplayMaxMappings,
                kFsReplayMaxMappings);
  auto f = fs_.open(name);
  if (!f) return failure(f.error());
  auto host = tmpfs::HostMapping::create(*f, offset, length, writable);
  check(**f);
  if (!host) return failure(host.error());
  auto m = std::make_unique<Mapping>();
  m->host = std::move(*host);
  m->file = name;
  m->offset = offset;
  m->length = length;
  m->extent = align_down(length + (kPageSize - 1), kPageSize);  // length <= kFsReplayMaxMapBytes: no overflow
  m->writable = writable;
  mappings_.emplace(id, std::move(m));
  return success();
}

Result<json> FsReplay::op_unmap(const json& j) {
  KVMEM_TRY(mapping_of(j));
  mappings_.erase(j.at("id").get<std::string>());
  after_free();
  return success();
}

Result<json> FsReplay::op_mwrite(const json& j) {
  Mapping* m = KVMEM_TRY(mapping_of(j));
  const uint64_t offset = KVMEM_TRY(required_number(j, "offset"));
  const std::vector<uint8_t> data = KVMEM_TRY(required_hex(j, "data_hex"));
  const std::string id = j.at("id").get<std::string>();
  if (std::string why = outside(*m, id, offset, data.size(), true); !why.empty()) return fault("SIGSEGV", why);
  if (auto s = m->host->write(offset, data); !s) return access_failed(s.error());
  json r = success();
  r["n"] = data.size();
  return r;
}

Result<json> FsReplay::op_mread(const json& j) {
  Mapping* m = KVMEM_TRY(mapping_of(j));
  const uint64_t offset = KVMEM_TRY(required_number(j, "offset"));
  const uint64_t length = KVMEM_TRY(bounded_number(j, "length", kFsReplayMaxIoBytes, "the most one mread may move"));
  const std::string id = j.at("id").get<std::string>();
  if (std::string why = outside(*m, id, offset, length, false); !why.empty()) return fault("SIGSEGV", why);
  std::vector<uint8_t> buf(length);
  if (auto s = m->host->read(offset, buf); !s) return access_failed(s.error());
  json r = success();
  r["n"] = length;
  r["data_hex"] = to_hex(buf);
  return r;
}

}  // namespace kvmem
