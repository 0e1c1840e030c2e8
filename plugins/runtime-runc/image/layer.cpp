#include "layer.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sched.h>
#include <shoal/plugin.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <shoal/plugin.hpp>

#include <cerrno>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "digest.h"

namespace shoal::runc {

namespace {

[[noreturn]] void fail(const std::string& what, const std::string& message) {
  throw sdk::Error(SHOAL_EIO, what + ": " + message);
}

[[noreturn]] void failErrno(const std::string& what, const std::string& message) {
  fail(what, message + ": " + std::strerror(errno));
}

// Splits a tar path into its components, refusing absolute paths and "..". "./a//b/" -> a, b.
std::vector<std::string> components(const std::string& what, const char* raw, const char* kind) {
  if (raw == nullptr) fail(what, std::string("a tar entry without a ") + kind);
  std::string path = raw;
  if (!path.empty() && path[0] == '/') {
    fail(what, std::string(kind) + " \"" + path + "\" is absolute: it escapes the layer");
  }
  std::vector<std::string> out;
  std::string::size_type begin = 0;
  while (begin <= path.size()) {
    auto end = path.find('/', begin);
    if (end == std::string::npos) end = path.size();
    std::string c = path.substr(begin, end - begin);
    if (c == "..")
      fail(what, std::string(kind) + " \"" + path + "\" has \"..\": it escapes the layer");
    if (!c.empty() && c != ".") out.push_back(c);
    begin = end + 1;
  }
  return out;
}

std::string join(const std::vector<std::string>& parts, std::size_t count) {
  std::string s;
  for (std::size_t i = 0; i < count; ++i) s += (i ? "/" : "") + parts[i];
  return s;
}

// Opens the directory `parts[0..count)` below `rootFd`, never following a symlink, creating
// missing directories (0755) on the way.
int openDirBelow(int rootFd, const std::vector<std::string>& parts, std::size_t count,
                 const std::string& what) {
  int fd = dup(rootFd);
  if (fd < 0) failErrno(what, "dup");
  for (std::size_t i = 0; i < count; ++i) {
    int next = openat(fd, parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0 && errno == ENOENT) {
      if (mkdirat(fd, parts[i].c_str(), 0755) != 0 && errno != EEXIST) {
        int err = errno;
        close(fd);
        errno = err;
        failErrno(what, "mkdir " + join(parts, i + 1));
      }
      next = openat(fd, parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (next < 0) {
      int err = errno;
      close(fd);
      if (err == ELOOP || err == ENOTDIR) {
        fail(what, "\"" + join(parts, i + 1) + "\" is not a directory (a symlink?): refusing to " +
                       "write through it");
      }
      errno = err;
      failErrno(what, "open " + join(parts, i + 1));
    }
    close(fd);
    fd = next;
  }
  return fd;
}

void makeWhiteout(int rootFd, const std::vector<std::string>& parts, const std::string& what) {
  int dir = openDirBelow(rootFd, parts, parts.size() - 1, what);
  std::string name = parts.back().substr(4);
  std::string shown = join(parts, parts.size() - 1);
  shown += (shown.empty() ? "" : "/") + name;
  if (name.empty() || name == "." || name == "..") {
    close(dir);
    fail(what, "bad whiteout \"" + join(parts, parts.size()) + "\"");
  }
  // A whiteout replaces whatever this same layer put there earlier.
  if (unlinkat(dir, name.c_str(), 0) != 0 && errno == EISDIR) {
    unlinkat(dir, name.c_str(), AT_REMOVEDIR);
  }
  if (mknodat(dir, name.c_str(), S_IFCHR | 0000, makedev(0, 0)) != 0) {
    int err = errno;
    close(dir);
    errno = err;
    failErrno(what, "whiteout " + shown + ": mknod (overlayfs whiteouts need CAP_MKNOD)");
  }
  close(dir);
}

void makeOpaque(int rootFd, const std::vector<std::string>& parts, const std::string& what) {
  int dir = openDirBelow(rootFd, parts, parts.size() - 1, what);
  if (fsetxattr(dir, "trusted.overlay.opaque", "y", 1, 0) != 0) {
    int err = errno;
    close(dir);
    errno = err;
    failErrno(what, "opaque directory " + join(parts, parts.size() - 1) +
                        ": setxattr trusted.overlay.opaque (needs CAP_SYS_ADMIN)");
  }
  close(dir);
}

// Archive A decompresses the file (any filter, "raw" format); archive B reads tar from A's
// output through this callback, which hashes every byte it hands on: the diff_id is checked
// while extracting, without a second pass.
struct Source {
  archive* raw = nullptr;
  Sha256 hash;
  uint64_t bytes = 0;
  std::string error;
};

la_ssize_t readThrough(archive*, void* client, const void** buffer) {
  auto* s = static_cast<Source*>(client);
  size_t size = 0;
  la_int64_t offset = 0;
  int r = archive_read_data_block(s->raw, buffer, &size, &offset);
  if (r == ARCHIVE_EOF) return 0;
  if (r < ARCHIVE_OK) {
    s->error = archive_error_string(s->raw) ? archive_error_string(s->raw) : "decompression failed";
    return -1;
  }
  s->hash.update(*buffer, size);
  s->bytes += size;
  return static_cast<la_ssize_t>(size);
}

struct ArchiveCloser {
  void operator()(archive* a) const {
    if (a != nullptr) archive_read_free(a);
  }
};
struct DiskCloser {
  void operator()(archive* a) const {
    if (a != nullptr) archive_write_free(a);
  }
};

std::string archiveError(archive* a, const char* fallback) {
  const char* e = archive_error_string(a);
  return e != nullptr ? e : fallback;
}

// The unpack proper; the calling thread's working directory is destDir.
UnpackResult unpackHere(const std::string& blobPath, int rootFd, const std::string& what) {
  Source src;
  std::unique_ptr<archive, ArchiveCloser> raw(archive_read_new());
  src.raw = raw.get();
  archive_read_support_filter_all(raw.get());
  archive_read_support_format_raw(raw.get());
  if (archive_read_open_filename(raw.get(), blobPath.c_str(), 1 << 17) != ARCHIVE_OK) {
    fail(what, "cannot read " + blobPath + ": " + archiveError(raw.get(), "open failed"));
  }
  archive_entry* rawEntry = nullptr;
  if (archive_read_next_header(raw.get(), &rawEntry) != ARCHIVE_OK) {
    fail(what, "not a tar stream: " + archiveError(raw.get(), "empty"));
  }

  std::unique_ptr<archive, ArchiveCloser> tar(archive_read_new());
  archive_read_support_format_tar(tar.get());
  archive_read_support_format_gnutar(tar.get());
  if (archive_read_open(tar.get(), &src, nullptr, readThrough, nullptr) != ARCHIVE_OK) {
    fail(what, "not a tar stream: " +
                   (src.error.empty() ? archiveError(tar.get(), "open failed") : src.error));
  }

  std::unique_ptr<archive, DiskCloser> disk(archive_write_disk_new());
  int flags = ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_XATTR |
              ARCHIVE_EXTRACT_ACL | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
              ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;
  if (geteuid() == 0) flags |= ARCHIVE_EXTRACT_OWNER;
  archive_write_disk_set_options(disk.get(), flags);
  // No user/group name lookup: numeric ids only, never this host's /etc/passwd.

  UnpackResult result;
  archive_entry* entry = nullptr;
  while (true) {
    int r = archive_read_next_header(tar.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) {
      fail(what, "corrupt tar: " +
                     (src.error.empty() ? archiveError(tar.get(), "read failed") : src.error));
    }
    ++result.entries;
    std::vector<std::string> parts = components(what, archive_entry_pathname(entry), "path");
    if (parts.empty()) continue;  // the layer's root: its attributes come from the upper dir
    std::string path = join(parts, parts.size());
    archive_entry_set_pathname(entry, path.c_str());
    if (const char* link = archive_entry_hardlink(entry)) {
      std::vector<std::string> target = components(what, link, "hardlink target");
      if (target.empty()) fail(what, "hardlink " + path + " points at the layer's root");
      archive_entry_set_hardlink(entry, join(target, target.size()).c_str());
    }
    const std::string& base = parts.back();
    if (base.rfind(".wh.", 0) == 0) {
      if (base == ".wh..wh..opq") {
        makeOpaque(rootFd, parts, what);
      } else if (base.rfind(".wh..wh.", 0) != 0) {
        makeWhiteout(rootFd, parts, what);
      }
      archive_read_data_skip(tar.get());
      continue;
    }
    r = archive_write_header(disk.get(), entry);
    if (r < ARCHIVE_WARN) fail(what, path + ": " + archiveError(disk.get(), "cannot create"));
    if (archive_entry_size(entry) > 0) {
      const void* buf = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      while ((r = archive_read_data_block(tar.get(), &buf, &size, &offset)) == ARCHIVE_OK) {
        if (archive_write_data_block(disk.get(), buf, size, offset) < ARCHIVE_WARN) {
          fail(what, path + ": " + archiveError(disk.get(), "write failed"));
        }
      }
      if (r < ARCHIVE_WARN) {
        fail(what, path + ": " +
                       (src.error.empty() ? archiveError(tar.get(), "read failed") : src.error));
      }
    }
    if (archive_write_finish_entry(disk.get()) < ARCHIVE_WARN) {
      fail(what, path + ": " + archiveError(disk.get(), "cannot finish"));
    }
  }
  if (archive_write_close(disk.get()) < ARCHIVE_WARN) {
    fail(what, archiveError(disk.get(), "cannot finish the layer"));
  }
  // The tar's end may leave padding unread; the diff_id covers the whole stream.
  const void* buf = nullptr;
  while (readThrough(tar.get(), &src, &buf) > 0) {
  }
  if (!src.error.empty()) fail(what, "corrupt stream: " + src.error);
  result.diffId = src.hash.digest();
  result.tarBytes = src.bytes;
  return result;
}

// Serialises unpacks when this thread cannot have a working directory of its own.
std::mutex gCwdMutex;

}  // namespace

UnpackResult unpackLayer(const std::string& blobPath, const std::string& destDir,
                         const std::string& what) {
  UnpackResult result;
  std::exception_ptr error;
  std::thread worker([&] {
    try {
      int rootFd = open(destDir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (rootFd < 0) failErrno(what, "open " + destDir);
      struct FdGuard {
        int fd;
        ~FdGuard() { close(fd); }
      } guard{rootFd};
      fchmod(rootFd, 0755);
      // This thread's cwd, root and umask become its own, so chdir cannot disturb the rest of
      // the process. Where unshare is refused (a seccomp filter), fall back to a process-wide
      // chdir under a lock and go back afterwards.
      if (unshare(CLONE_FS) == 0) {
        umask(0);
        if (fchdir(rootFd) != 0) failErrno(what, "chdir " + destDir);
        result = unpackHere(blobPath, rootFd, what);
      } else {
        std::lock_guard<std::mutex> lock(gCwdMutex);
        int old = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (old < 0 || fchdir(rootFd) != 0) failErrno(what, "chdir " + destDir);
        try {
          result = unpackHere(blobPath, rootFd, what);
        } catch (...) {
          if (fchdir(old) != 0) {
          }
          close(old);
          throw;
        }
        if (fchdir(old) != 0) {
        }
        close(old);
      }
    } catch (...) {
      error = std::current_exception();
    }
  });
  worker.join();
  if (error) std::rethrow_exception(error);
  return result;
}

}  // namespace shoal::runc
