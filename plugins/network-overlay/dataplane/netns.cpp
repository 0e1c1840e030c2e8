#include "dataplane/netns.hpp"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>

namespace shoal::overlay::dataplane {
namespace {

constexpr long kNsfsMagic = 0x6e736673;  // NSFS_MAGIC (linux/magic.h)

}  // namespace

void throwErrno(const std::string& step) {
  throw sdk::Error(SHOAL_EIO, step + ": " + std::strerror(errno));
}

Fd currentThreadNetns() {
  const int fd = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (fd < 0) throwErrno("open /proc/thread-self/ns/net");
  return Fd(fd);
}

Fd openNetns(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throwErrno("open network namespace " + path);
  return Fd(fd);
}

bool isNetnsMount(const std::string& path) {
  struct statfs fs {};
  return ::statfs(path.c_str(), &fs) == 0 && static_cast<long>(fs.f_type) == kNsfsMagic;
}

bool isCurrentNetns(int fd) {
  struct stat a {};
  struct stat b {};
  if (::fstat(fd, &a) != 0 || ::stat("/proc/thread-self/ns/net", &b) != 0) return false;
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

void createNetnsFile(const std::string& path, int home, bool* stuck) {
  const int file = ::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
  if (file < 0) throwErrno("create network namespace file " + path);
  ::close(file);
  if (::unshare(CLONE_NEWNET) != 0) {
    const int saved = errno;
    ::unlink(path.c_str());
    errno = saved;
    throwErrno("unshare a new network namespace for " + path);
  }
  const bool mounted =
      ::mount("/proc/thread-self/ns/net", path.c_str(), "none", MS_BIND, nullptr) == 0;
  const int saved = errno;
  // The new namespace now lives on through the mount (or dies with this thread's reference).
  if (::setns(home, CLONE_NEWNET) != 0) *stuck = true;
  if (!mounted) {
    ::unlink(path.c_str());
    errno = saved;
    throwErrno("bind-mount a new network namespace on " + path);
  }
  if (*stuck) {
    removeNetnsFile(path);
    throwErrno("return to the plugin's network namespace after creating " + path);
  }
}

void removeNetnsFile(const std::string& path) {
  // MNT_DETACH, as `ip netns delete`: a busy mount still goes away from the tree at once.
  if (::umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
    throwErrno("unmount network namespace " + path);
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    throwErrno("remove network namespace file " + path);
  }
}

}  // namespace shoal::overlay::dataplane
