#include "fs_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <shoal/plugin.h>
#include <sys/stat.h>
#include <unistd.h>
#include <shoal/plugin.hpp>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>

namespace shoal::runc::fs {

void throwErrno(const std::string& what) {
  int err = errno;
  throw sdk::Error(err == ENOENT   ? SHOAL_ENOENT
                   : err == ENOSPC ? SHOAL_ENOSPC
                                   : SHOAL_EIO,
                   what + ": " + std::strerror(err));
}

bool exists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}

bool isDir(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void mkdirs(const std::string& path, mode_t mode) {
  if (path.empty() || isDir(path)) return;
  auto slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0) mkdirs(path.substr(0, slash), mode);
  if (mkdir(path.c_str(), mode) != 0 && errno != EEXIST) throwErrno("mkdir " + path);
}

namespace {

// Removes everything inside the directory open as `dirFd` (which it closes).
uint64_t removeContents(int dirFd, const std::string& path) {
  DIR* dir = fdopendir(dirFd);
  if (dir == nullptr) {
    close(dirFd);
    throwErrno("opendir " + path);
  }
  uint64_t freed = 0;
  while (struct dirent* e = readdir(dir)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (fstatat(dirfd(dir), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    freed += static_cast<uint64_t>(st.st_blocks) * 512;
    if (S_ISDIR(st.st_mode)) {
      int child = openat(dirfd(dir), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (child < 0 && errno == EACCES) {
        // Not root and a layer made the directory unreadable: make it ours to remove.
        fchmodat(dirfd(dir), name.c_str(), 0700, 0);
        child = openat(dirfd(dir), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      }
      if (child < 0) {
        closedir(dir);
        throwErrno("open " + path + "/" + name);
      }
      freed += removeContents(child, path + "/" + name);
      if (unlinkat(dirfd(dir), name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
        closedir(dir);
        throwErrno("rmdir " + path + "/" + name);
      }
    } else if (unlinkat(dirfd(dir), name.c_str(), 0) != 0 && errno != ENOENT) {
      closedir(dir);
      throwErrno("unlink " + path + "/" + name);
    }
  }
  closedir(dir);
  return freed;
}

}  // namespace

uint64_t removeTree(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return 0;
    throwErrno("stat " + path);
  }
  uint64_t freed = static_cast<uint64_t>(st.st_blocks) * 512;
  if (S_ISDIR(st.st_mode)) {
    int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES) {
      chmod(path.c_str(), 0700);
      fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) throwErrno("open " + path);
    freed += removeContents(fd, path);
    if (rmdir(path.c_str()) != 0 && errno != ENOENT) throwErrno("rmdir " + path);
  } else if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    throwErrno("unlink " + path);
  }
  return freed;
}

std::string readFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throwErrno("open " + path);
  std::string data;
  char buf[65536];
  while (true) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      close(fd);
      errno = err;
      throwErrno("read " + path);
    }
    if (n == 0) break;
    data.append(buf, static_cast<std::size_t>(n));
  }
  close(fd);
  return data;
}

void fsyncPath(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throwErrno("open " + path);
  if (fsync(fd) != 0) {
    int err = errno;
    close(fd);
    errno = err;
    throwErrno("fsync " + path);
  }
  close(fd);
}

void writeFileAtomic(const std::string& path, const std::string& data, const std::string& tmpDir) {
  std::string tmp = tmpDir + "/" + uniqueName("write");
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throwErrno("create " + tmp);
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      close(fd);
      unlink(tmp.c_str());
      errno = err;
      throwErrno("write " + tmp);
    }
    done += static_cast<std::size_t>(n);
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    errno = err;
    throwErrno("fsync " + tmp);
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    errno = err;
    throwErrno("rename " + tmp + " to " + path);
  }
  auto slash = path.find_last_of('/');
  fsyncPath(slash == std::string::npos || slash == 0 ? "/" : path.substr(0, slash));
}

std::string uniqueName(const std::string& prefix) {
  static std::atomic<uint64_t> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return prefix + "-" + std::to_string(getpid()) + "-" + std::to_string(++counter) + "-" +
         std::to_string(rng() % 1000000);
}

}  // namespace shoal::runc::fs
