// shoal-shim, seen from the plugin: starting a container through its shim, and reading what
// the shim records in its state directory (pids, exit, logs), also after shoald restarted.
// The shim and its files are described in README.md.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "state_files.h"  // ExitInfo, LogRecord, the file names

namespace shoal::runc {

// What the shim is told (all of it goes on its command line).
struct ShimOptions {
  std::string shimPath;     // absolute path of shoal-shim
  std::string runtimePath;  // absolute path of runc
  std::string runtimeRoot;  // runc --root
  std::string id;           // the container id (the task id)
  std::string bundleDir;    // the OCI bundle (config.json, rootfs)
  std::string stateDir;     // the shim's state directory (created 0700 if missing)
  // The bundle's linux.cgroupsPath, absolute ("/shoal/ID"): where the shim counts the
  // container's OOM kills. Empty: none are counted.
  std::string cgroupsPath;
  uint64_t logMaxBytes = 10 << 20;
  int logMaxFiles = 3;
  bool tty = false;        // the bundle's process has a terminal: its output is the pty's
  int timeoutMs = 120000;  // how long launchShim waits for runc run
};

// A container as its shim's files describe it.
struct ContainerStatus {
  int pid = 0;             // the container's init (host pid namespace), 0 before run
  int64_t startedNs = 0;   // when runc run returned, 0 if it never did
  bool shimAlive = false;  // the shim process (pid and start time from shim.pid) still runs
  std::optional<ExitInfo> exit;
};

// Starts the container through a new shim: the shim detaches (it is not the caller's child and
// outlives it), runs runc run --detach, and reports back. Returns the container's pid once it
// runs. Throws shoal::sdk::Error: SHOAL_EIO with runc's error ("task T: runc run T: ...") if
// run failed or the shim could not run (its exit is then in exit.json
// when it got that far), SHOAL_EBUSY if a live shim already owns stateDir, SHOAL_ETIMEDOUT if
// no report came within timeoutMs, SHOAL_EINVAL for missing options. Stale pid/exit files of an
// earlier run in stateDir are removed first; container.log is kept (appended to).
// THREAD: any (fork + execve only; safe in a multi-threaded process).
int launchShim(const ShimOptions& options);

// The container's status from the shim's files; works after a shoald restart. Never throws:
// missing files leave their fields at zero.
ContainerStatus readStatus(const std::string& stateDir);

// Removes stateDir and everything in it (after runc delete). Returns false if something stayed.
bool removeStateDir(const std::string& stateDir);

// One thread that calls back when a watched container's exit is recorded (exit.json appears:
// inotify on the state directories) or when its shim dies without recording one (a pidfd per
// shim): ExitInfo{exitCode 255, message "shim ... died without recording an exit ..."}.
// A container whose exit is already recorded when watch() is called is reported at once (from
// the thread). Each watch fires at most once, and is then forgotten.
// THREAD: watch/unwatch from any thread; the callback runs on the watcher's thread with no lock
// held (it may call watch/unwatch). Nothing is called back after unwatch(id) or the destructor
// returns, except a callback already running.
class ExitWatcher {
 public:
  explicit ExitWatcher(std::function<void(const std::string& id, const ExitInfo&)> onExit);
  ~ExitWatcher();
  ExitWatcher(const ExitWatcher&) = delete;
  ExitWatcher& operator=(const ExitWatcher&) = delete;

  // Starts (or restarts) watching `id`, whose shim keeps its files in stateDir.
  void watch(const std::string& id, const std::string& stateDir);
  void unwatch(const std::string& id);

 private:
  struct Entry {
    std::string stateDir;
    uint64_t generation = 0;
    int wd = -1;
    int pidfd = -1;
    bool shimGone = false;  // the pidfd fired, or no live shim was found at watch()
    bool check = true;      // look at the files on the next round
  };
  void run();
  void check(const std::string& id);
  void retire(Entry& entry);  // REQUIRES mu_
  void wake();

  std::function<void(const std::string&, const ExitInfo&)> onExit_;
  int inotify_ = -1;
  int wake_ = -1;
  std::mutex mu_;
  std::map<std::string, Entry> entries_;  // guarded by mu_
  std::vector<int> retiredFds_;           // guarded by mu_; closed by the thread
  std::vector<int> retiredWds_;           // guarded by mu_; removed by the thread
  uint64_t nextGeneration_ = 1;           // guarded by mu_
  bool stop_ = false;                     // guarded by mu_
  std::thread thread_;
};

// The container's log records, across rotated files, oldest first: those with timestampNs >=
// sinceNs, then the last `tail` of them (-1: all). Lines that cannot be parsed (a record being
// written) are skipped.
std::vector<LogRecord> readLogs(const std::string& stateDir, int tail, int64_t sinceNs);

// Follows a container's log for `logs --follow`: the first poll() returns what readLogs(tail,
// sinceNs) would, each later poll() the records written since, across rotations (a file
// rotated twice between two polls loses the middle one). THREAD: one user at a time.
class LogFollower {
 public:
  LogFollower(std::string stateDir, int tail, int64_t sinceNs);
  ~LogFollower();
  LogFollower(const LogFollower&) = delete;
  LogFollower& operator=(const LogFollower&) = delete;

  std::vector<LogRecord> poll();
  // Blocks until the log directory changes or timeoutMs passes (inotify).
  void wait(int timeoutMs);
  // True once the exit is recorded (or the shim is gone) and poll() has returned everything
  // written before that: nothing more will come.
  bool finished() const { return finished_; }

 private:
  void readCurrent(std::vector<LogRecord>& out);
  void readFd(std::vector<LogRecord>& out);

  std::string stateDir_;
  std::string path_;
  int tail_;
  int64_t sinceNs_;
  bool first_ = true;
  bool finished_ = false;
  int fd_ = -1;
  uint64_t inode_ = 0;
  std::string pending_;  // a record not yet complete
  int inotify_ = -1;
};

}  // namespace shoal::runc
