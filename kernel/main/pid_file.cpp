#include "kernel/main/pid_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace shoal::daemon {

PidFile::~PidFile() { release(); }

Status PidFile::acquire(const std::string& path) {
  std::error_code ec;
  auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Status::failedPrecondition("cannot open pidfile " + path + ": " + std::strerror(errno));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    std::string other;
    std::ifstream in(path);
    std::getline(in, other);
    ::close(fd);
    return Status::failedPrecondition("another shoald is already running (pid " +
                                      (other.empty() ? std::string("unknown") : other) +
                                      ", pidfile " + path + ")");
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 ||
      ::write(fd, pid.data(), pid.size()) != static_cast<ssize_t>(pid.size())) {
    int err = errno;
    ::close(fd);
    return Status::failedPrecondition("cannot write pidfile " + path + ": " + std::strerror(err));
  }
  path_ = path;
  fd_ = fd;
  return Status::ok();
}

void PidFile::release() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());
  ::close(fd_);
  fd_ = -1;
}

}  // namespace shoal::daemon
