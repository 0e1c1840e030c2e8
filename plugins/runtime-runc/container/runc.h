// runc (or a runc-compatible runtime) driven through its command line: fork + execve, no
// shell. Plain C++/POSIX, no Poco: the shim uses it too.
//
// ERRORS: a failed command throws shoal::sdk::Error whose message names the operation and the
// container and quotes runc's stderr ("runc delete t1: cannot delete container t1 that is not
// stopped: running"). Codes: SHOAL_ENOENT for a container runc does not know ("container does
// not exist"), SHOAL_EBUSY for one in the wrong state (delete of a running container without
// force, kill or exec of a stopped one), SHOAL_EIO otherwise, always for run, and
// when runc cannot be started at all.
// THREAD: any; calls for different containers may run concurrently.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace shoal::runc {

// The container's stdio for `runc run` (runc passes its own 0, 1, 2 to the container).
// -1 is /dev/null. With stderrFd set, runc's own errors also go to the container's stderr, so
// they are read from logFile (runc --log, JSON) for the error message.
struct CreateStdio {
  int stdinFd = -1;
  int stdoutFd = -1;
  int stderrFd = -1;
  // runc --log FILE --log-format json. With every fd -1, runc's stderr is captured instead and
  // logFile is optional; with any fd set, the error message comes only from logFile.
  std::string logFile;
  // runc run --console-socket PATH, for a bundle whose process has "terminal": true: runc
  // sends the pty's master (SCM_RIGHTS) to the unix socket listening there. The fds above
  // are then runc's own, not the container's.
  std::string consoleSocket;
};

// The result of a process run with exec.
struct ExecResult {
  int exitCode = 0;  // Docker's: exit code, 128 + signal; -1 when it timed out
  // stdout and stderr together, at most 4 KiB (Docker's health output). runc copies each
  // through its own pipe, so lines of one may overtake lines of the other.
  std::string output;
  bool timedOut = false;
};

class Runc {
 public:
  // binary: an absolute path ("/usr/sbin/runc"); root: runc's --root (its state directory).
  Runc(std::string binary, std::string root);

  const std::string& binary() const { return binary_; }
  const std::string& root() const { return root_; }

  // runc run --detach --bundle bundleDir --pid-file pidFile id: creates and starts the
  // container in one runc process (one Go start-up fewer than create + start, a fifth of the
  // time runc takes here). Returns once the container's process runs; its pid is in pidFile.
  void run(const std::string& id, const std::string& bundleDir, const std::string& pidFile,
           const CreateStdio& stdio = {});
  // runc kill [--all] id signal.
  void kill(const std::string& id, int signal, bool all = false);
  // runc delete [--force] id. A container runc does not know is not an error here when `force`
  // is set (it is already gone).
  void remove(const std::string& id, bool force = false);
  // runc state id: runc's JSON ({"id","pid","status","bundle","created",...}).
  std::string state(const std::string& id);
  // Container ids runc knows (runc list -q).
  std::vector<std::string> list();

  // runc exec id argv...: runs argv in the running container with the container's own process
  // settings (env, cwd, user, capabilities from its config.json), as a health check does.
  // timeoutMs < 0: no limit; at the timeout the process is killed (SIGKILL) and the result
  // says timedOut. Throws (see ERRORS) only when runc itself fails (e.g. the container is not
  // running: exit code 255 with runc's message is returned as an error).
  ExecResult exec(const std::string& id, const std::vector<std::string>& argv, int timeoutMs);

 private:
  std::vector<std::string> command(std::initializer_list<std::string> args) const;
  [[noreturn]] void fail(const std::string& op, const std::string& id, int status,
                         const std::string& stderrText) const;

  std::string binary_;
  std::string root_;
};

}  // namespace shoal::runc
