#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace shoal::test {

// The outcome of a finished command.
struct RunResult {
  int exitCode = -1;  // -1 when killed by a signal or not started
  int signal = 0;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Run argv[0] (found through PATH when it has no '/') to completion, with a time limit after
// which it is killed. stdin is /dev/null.
RunResult runCommand(const std::vector<std::string>& argv,
                     std::chrono::milliseconds limit = std::chrono::seconds(120),
                     const std::vector<std::string>& extraEnv = {});

// A long-running child (a daemon under test). stdout and stderr go to a log file. The
// destructor kills it (SIGKILL) if it is still running, so a failed test leaves no process.
class ChildProcess {
 public:
  ChildProcess(const std::vector<std::string>& argv, const std::string& logPath);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  void signal(int sig);
  // Wait for exit up to `limit`; returns the exit code (-1 on timeout or death by signal).
  int wait(std::chrono::milliseconds limit);
  int exitSignal() const { return exitSignal_; }
  std::string log() const;

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int exitCode_ = -1;
  int exitSignal_ = 0;
  std::string logPath_;
};

// Poll `check` every 20 ms until it returns true or `limit` passes.
template <class F>
bool eventually(F check, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (check()) return true;
    struct timespec ts {
      0, 20 * 1000 * 1000
    };
    nanosleep(&ts, nullptr);
  }
  return check();
}

}  // namespace shoal::test
