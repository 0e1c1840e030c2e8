#pragma once

#include <string>

namespace shoal::test {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
// Kept short, since unix socket paths inside it must fit in 107 bytes.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  // Write `text` to `name` inside the directory; returns the full path.
  std::string write(const std::string& name, const std::string& text) const;

 private:
  std::string path_;
};

// The whole content of a file ("" when it cannot be read).
std::string readFile(const std::string& path);

}  // namespace shoal::test
