#include "tests/support.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace kvmem::test {
namespace {

std::string read_all(int fd) {
  std::string s;
  char buf[4096];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    s.append(buf, static_cast<size_t>(n));
  }
  return s;
}

}  // namespace

bool dies_with(const std::function<void()>& fn, const std::string& needle, std::string* output) {
  int p[2];
  if (pipe(p) != 0) return false;
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    // The test framework's own SIGABRT handler would report the abort as a
    // failed test from inside the child; the child must just die.
    signal(SIGABRT, SIG_DFL);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(p[1], 2);
    close(p[0]);
    close(p[1]);
    fn();
    _exit(0);  // did not die
  }
  close(p[1]);
  std::string err = read_all(p[0]);
  close(p[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (output) *output = err;
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && err.find(needle) != std::string::npos;
}

bool kvm_available(const char* test_name) {
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd >= 0) {
    close(fd);
    return true;
  }
  std::fprintf(stderr, "!!! SKIPPED (no usable /dev/kvm): %s\n", test_name);
  return false;
}

std::string kvmem_binary() {
  if (const char* b = std::getenv("KVMEM_BIN")) return b;
  return "build/kvmem";
}

CommandResult run_command(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  int out[2], err[2];
  CommandResult r;
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) return r;
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  // Drain both pipes without deadlocking on either.
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  int open_fds = 2;
  char buf[4096];
  while (open_fds > 0) {
    if (poll(fds, 2, -1) < 0) break;
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        open_fds--;
      } else {
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
      }
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace kvmem::test
