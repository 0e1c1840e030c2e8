// Starting programs without a shell (fork + execve), safe to call from a multi-threaded process
// such as shoald: between fork and execve the child only makes async-signal-safe calls.
// Plain POSIX, no Poco: the shim uses it too.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace shoal::runc {

// How the child is started. Fds are the parent's; -1 means /dev/null.
struct SpawnOptions {
  int stdinFd = -1;
  int stdoutFd = -1;
  int stderrFd = -1;
  int passFd = -1;               // given to the child as fd 3 (-1: none)
  bool newSession = false;       // setsid() in the child
  std::vector<std::string> env;  // the child's whole environment; empty = PATH only
};

// Starts argv (argv[0] an absolute path) with the given fds as 0, 1 and 2 (and passFd as 3),
// every other fd closed, the signal mask empty and every signal at its default. Returns the child's
// pid. Throws shoal::sdk::Error(SHOAL_EIO) when fork fails or argv[0] cannot be executed (the
// message says why, e.g. "/usr/sbin/runc: No such file or directory").
pid_t spawn(const std::vector<std::string>& argv, const SpawnOptions& options);

// waitpid() that retries on EINTR; returns the wait status, or -1 if `pid` is not a child
// (e.g. SIGCHLD is ignored, so it was reaped by the kernel).
int waitChild(pid_t pid);

// The result of runCapture.
struct CaptureResult {
  int status = 0;  // the wait status (or -1, see waitChild)
  std::string out;
  std::string err;
  bool timedOut = false;
};

// How runCapture runs its child.
struct CaptureOptions {
  int timeoutMs = -1;              // < 0: no limit
  std::size_t maxBytes = 1 << 20;  // kept of each stream; the rest is read and dropped
  bool mergeStderr = false;        // stderr into `out` (one pipe, so the order is kept)
  // Called once at the timeout with the child's pid (default: SIGKILL to the child). The child
  // then gets 2 s to exit before it is sent SIGKILL anyway.
  std::function<void(pid_t)> onTimeout;
};

// Runs argv to completion, capturing its stdout and stderr. Once the child has exited, what is
// buffered in the pipes is read and capture stops, even if a process it left behind still
// holds a pipe open.
CaptureResult runCapture(const std::vector<std::string>& argv, const CaptureOptions& options);

// "exited with code N" / "killed by signal SIGKILL" for a wait status.
std::string describeStatus(int status);

// The exit code Docker reports for a wait status: the exit code, or 128 + the signal.
int exitCode(int status);

// CLOCK_REALTIME / CLOCK_MONOTONIC in nanoseconds.
int64_t nowNs();
int64_t monotonicNs();

// Writes `text` to `path` atomically: a temporary file in the same directory, fsync, rename,
// fsync of the directory. Returns false (errno set) on failure.
bool writeFileAtomic(const std::string& path, const std::string& text);

// The whole file ("" when it cannot be read); `ok` (optional) says whether it could.
std::string readWholeFile(const std::string& path, bool* ok = nullptr);

// The pid a pid file (runc's --pid-file) holds, 0 when there is none.
pid_t readPidFile(const std::string& path);

// mkdir -p with `mode` for the directories it creates. Returns false (errno set) on failure.
bool makeDirs(const std::string& path, mode_t mode);

// The start time of process `pid` (field 22 of /proc/PID/stat, clock ticks since boot), or 0
// when there is no such process (or only its zombie). With the pid it names one process across
// pid reuse.
uint64_t processStartTime(pid_t pid);

// Closes every fd >= `lowest` except `keep` (-1: none).
void closeFdsFrom(int lowest, int keep);

}  // namespace shoal::runc
