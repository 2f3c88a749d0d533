#include "memory/tmpfs/file_system.h"

#include <cerrno>

#include <fmt/format.h>

namespace kvmem::tmpfs {
namespace {

std::unexpected<Error> name_error(int code, std::string_view op, std::string_view name,
                                  std::string_view why) {
  // The name is untrusted: printed escaped, and at most kMaxNameLength + 1
  // bytes of it.
  const std::string_view shown = name.substr(0, kMaxNameLength + 1);
  return std::unexpected(Error{code, fmt::format("cannot {} file {:?}: {}: {}", op, shown, why,
                                                 errno_name(code))});
}

}  // namespace

Result<std::shared_ptr<RegularFile>> FileSystem::create(std::string_view name, bool allow_seals) {
  if (name.empty() || name.size() > kMaxNameLength)
    return name_error(EINVAL, "create", name,
                      fmt::format("a name is 1 to {} bytes long", kMaxNameLength));
  if (name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos)
    return name_error(EINVAL, "create", name, "a name holds no '/' and no NUL");
  std::lock_guard l(mu_);
  if (files_.contains(name)) return name_error(EEXIST, "create", name, "the name is taken");
  auto file = std::make_shared<RegularFile>(memory_, std::string(name), allow_seals);
  files_.emplace(std::string(name), file);
  return file;
}

Result<std::shared_ptr<RegularFile>> FileSystem::open(std::string_view name) const {
  std::lock_guard l(mu_);
  auto it = files_.find(name);
  if (it == files_.end()) return name_error(ENOENT, "open", name, "no such file");
  return it->second;
}

Status FileSystem::unlink(std::string_view name) {
  std::shared_ptr<RegularFile> last;  // let go of outside mu_: the file's locks
  std::lock_guard l(mu_);
  auto it = files_.find(name);
  if (it == files_.end()) return name_error(ENOENT, "unlink", name, "no such file");
  last = std::move(it->second);
  files_.erase(it);
  return {};
}

std::vector<std::string> FileSystem::list() const {
  std::lock_guard l(mu_);
  std::vector<std::string> out;
  out.reserve(files_.size());
  for (const auto& [name, file] : files_) out.push_back(name);
  return out;
}

Result<FileStat> FileSystem::stat(std::string_view name) const {
  std::shared_ptr<RegularFile> file;
  {
    std::lock_guard l(mu_);
    auto it = files_.find(name);
    if (it == files_.end()) return name_error(ENOENT, "stat", name, "no such file");
    file = it->second;
  }
  return file->stat();
}

}  // namespace kvmem::tmpfs
