#pragma once

#include <string>

#include "kernel/common/status.h"

namespace shoal::daemon {

// A pidfile held with an exclusive lock (flock) for the daemon's lifetime, so a second daemon
// with the same pidfile refuses to start instead of stealing the socket and the data root.
class PidFile {
 public:
  PidFile() = default;
  ~PidFile();
  PidFile(const PidFile&) = delete;
  PidFile& operator=(const PidFile&) = delete;

  // Create (and lock) the file and write our pid. kFailedPrecondition naming the running
  // daemon's pid when another process holds the lock.
  Status acquire(const std::string& path);
  // Remove the file and drop the lock. Idempotent.
  void release();

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace shoal::daemon
