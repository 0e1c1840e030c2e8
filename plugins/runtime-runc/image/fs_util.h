// Small filesystem helpers for the image store. Every failure throws shoal::sdk::Error
// (SHOAL_EIO unless stated) whose message names the path and the errno text.
#pragma once

#include <sys/types.h>

#include <string>

namespace shoal::runc::fs {

// Throws SHOAL_EIO "<what>: <strerror(errno)>".
[[noreturn]] void throwErrno(const std::string& what);

bool exists(const std::string& path);  // lstat: a dangling symlink exists
bool isDir(const std::string& path);   // lstat: a symlink to a dir is not one
void mkdirs(const std::string& path, mode_t mode = 0755);
// Removes `path` and everything under it without following symlinks; a missing path is fine.
// Returns the bytes freed (st_blocks of what was removed).
uint64_t removeTree(const std::string& path);
// The whole file; SHOAL_ENOENT when it does not exist.
std::string readFile(const std::string& path);
// Writes `data` to a temporary file in `tmpDir`, fsyncs it, renames it over `path` and fsyncs
// the parent directory: readers see the old or the new content, never a mix, across a crash.
void writeFileAtomic(const std::string& path, const std::string& data, const std::string& tmpDir);
void fsyncPath(const std::string& path);  // fsync a file or directory by path
// A name no other call in this process (or a crashed earlier one) produced:
// "<prefix>-<pid>-<n>-<rnd>".
std::string uniqueName(const std::string& prefix);

}  // namespace shoal::runc::fs
