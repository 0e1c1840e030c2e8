// Network namespaces kept as files: made by unshare(CLONE_NEWNET) on the calling thread and
// bind-mounted onto an empty file (as `ip netns add` does), removed by unmounting and
// unlinking the file.
//
// setns() and unshare() change only the calling thread's namespace, so every function here
// that enters another namespace returns the thread to `home` before it returns (or throws);
// when even that fails the thread is left elsewhere and *stuck is set, so the caller can stop
// using the thread. These must only run on a thread dedicated to that (the dataplane's
// worker), never on a thread the plugin host called in on.
//
// ERRORS: shoal::sdk::Error(SHOAL_EIO) naming the step, the path and errno's message.
#pragma once

#include <shoal/plugin.h>
#include <shoal/plugin.hpp>

#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

namespace shoal::overlay::dataplane {

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// The network namespace of the calling thread (/proc/thread-self/ns/net).
Fd currentThreadNetns();
// An fd of the namespace bound at `path`.
Fd openNetns(const std::string& path);
// True when `path` is a bind mount of a namespace (nsfs), as createNetnsFile makes.
bool isNetnsMount(const std::string& path);
// True when `fd` and the calling thread's network namespace are the same namespace.
bool isCurrentNetns(int fd);

// Makes a new network namespace bound at `path`, which must not exist. The calling thread is
// back in `home` when this returns or throws; a failure leaves no file behind.
void createNetnsFile(const std::string& path, int home, bool* stuck);
// Unmounts and unlinks `path`; a missing file is not an error. The namespace itself lives on
// while anything (a process, an fd, a socket) still holds it.
void removeNetnsFile(const std::string& path);

[[noreturn]] void throwErrno(const std::string& step);

// Runs `fn` with the calling thread in the namespace `target`, then returns it to `home`.
template <class F>
auto inNetns(int home, int target, bool* stuck, F&& fn) -> decltype(fn()) {
  if (::setns(target, CLONE_NEWNET) != 0) throwErrno("setns into a network namespace");
  struct Back {
    int home;
    bool* stuck;
    ~Back() {
      if (::setns(home, CLONE_NEWNET) != 0) *stuck = true;
    }
  } back{home, stuck};
  return std::forward<F>(fn)();
}

}  // namespace shoal::overlay::dataplane
