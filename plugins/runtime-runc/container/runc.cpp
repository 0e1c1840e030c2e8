#include "runc.h"

#include <shoal/plugin.h>
#include <shoal/plugin.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <sstream>

#include "process.h"
#include "state_files.h"

namespace shoal::runc {
namespace {

constexpr std::size_t kHealthOutputMax = 4096;  // Docker's limit on a health check's output

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  std::size_t begin = 0;
  while (begin < s.size() && (s[begin] == '\n' || s[begin] == ' ')) ++begin;
  return s.substr(begin);
}

// runc prints "time=... level=error msg=..." or a plain message; keep only what it says.
std::string runcMessage(const std::string& err) {
  std::string text = trim(err);
  const auto msg = text.rfind("msg=\"");
  if (msg != std::string::npos && text.find("level=") != std::string::npos) {
    std::string out;
    for (std::size_t i = msg + 5; i < text.size() && text[i] != '"'; ++i) {
      if (text[i] == '\\' && i + 1 < text.size()) ++i;
      out += text[i];
    }
    return out;
  }
  return text;
}

// The "msg" of each error-level line of runc's JSON log.
std::string logErrors(const std::string& logFile) {
  std::string out;
  std::istringstream in(readWholeFile(logFile));
  std::string line;
  while (std::getline(in, line)) {
    FlatObject obj;
    if (!parseFlatObject(line, obj)) continue;
    std::string level, msg;
    for (const auto& [k, v] : obj) {
      if (k == "level") level = v.s;
      if (k == "msg") msg = v.s;
    }
    if ((level == "error" || level == "fatal") && !msg.empty()) {
      if (!out.empty()) out += "; ";
      out += msg;
    }
  }
  return out;
}

bool contains(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

// Case aside: runc says "no such file or directory", crun "No such file or directory".
bool containsNoCase(const std::string& s, const std::string& needle) {
  return std::search(s.begin(), s.end(), needle.begin(), needle.end(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) ==
                  std::tolower(static_cast<unsigned char>(b));
         }) != s.end();
}

}  // namespace

Runc::Runc(std::string binary, std::string root)
    : binary_(std::move(binary)), root_(std::move(root)) {}

std::vector<std::string> Runc::command(std::initializer_list<std::string> args) const {
  std::vector<std::string> argv = {binary_, "--root", root_};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

void Runc::fail(const std::string& op, const std::string& id, int status,
                const std::string& stderrText) const {
  std::string message = runcMessage(stderrText);
  if (message.empty()) message = describeStatus(status);
  shoal_status code = SHOAL_EIO;
  // runc says "container does not exist"; crun names the container's state directory it could
  // not open ("cannot open directory '/run/shoal/runc/ID': No such file or directory").
  if (contains(message, "container does not exist") ||
      (contains(message, root_ + "/" + id) && containsNoCase(message, "no such file"))) {
    code = SHOAL_ENOENT;
  }
  // runc's phrases, then crun's ("the container `ID` is not in `created` or `stopped` state",
  // and an exec into a stopped one, whose namespaces are gone: "setns(...): No such process").
  for (const char* busy :
       {"not stopped", "not running", "stopped container", "already running", "has stopped",
        "not in created state", "already exists", "` state", "No such process"}) {
    if (contains(message, busy)) code = SHOAL_EBUSY;
  }
  // run fails for the bundle's reasons (a missing program, a bad mount): EIO, as launchShim
  // promises.
  if (op == "run") code = SHOAL_EIO;
  throw sdk::Error(code, "runc " + op + " " + id + ": " + message);
}

void Runc::run(const std::string& id, const std::string& bundleDir, const std::string& pidFile,
               const CreateStdio& stdio) {
  std::vector<std::string> argv = {binary_, "--root", root_};
  if (!stdio.logFile.empty()) {
    unlink(stdio.logFile.c_str());
    argv.insert(argv.end(), {"--log", stdio.logFile, "--log-format", "json"});
  }
  argv.insert(argv.end(), {"run", "--detach", "--bundle", bundleDir, "--pid-file", pidFile});
  if (!stdio.consoleSocket.empty()) {
    argv.insert(argv.end(), {"--console-socket", stdio.consoleSocket});
  }
  argv.push_back(id);
  if (stdio.stdinFd < 0 && stdio.stdoutFd < 0 && stdio.stderrFd < 0) {
    CaptureResult r = runCapture(argv, CaptureOptions{});
    if (r.status != 0) fail("run", id, r.status, r.err);
    return;
  }
  SpawnOptions options;
  options.stdinFd = stdio.stdinFd;
  options.stdoutFd = stdio.stdoutFd;
  options.stderrFd = stdio.stderrFd;
  const pid_t pid = spawn(argv, options);
  const int status = waitChild(pid);
  if (status != 0) {
    std::string message = stdio.logFile.empty() ? "" : logErrors(stdio.logFile);
    fail("run", id, status, message);
  }
}

void Runc::kill(const std::string& id, int signal, bool all) {
  std::vector<std::string> argv = command({"kill"});
  if (all) argv.push_back("--all");
  argv.push_back(id);
  argv.push_back(std::to_string(signal));
  CaptureResult r = runCapture(argv, CaptureOptions{});
  if (r.status != 0) fail("kill", id, r.status, r.err);
}

void Runc::remove(const std::string& id, bool force) {
  std::vector<std::string> argv = command({"delete"});
  if (force) argv.push_back("--force");
  argv.push_back(id);
  CaptureResult r = runCapture(argv, CaptureOptions{});
  if (r.status == 0) return;
  try {
    fail("delete", id, r.status, r.err);
  } catch (const sdk::Error& e) {
    if (force && e.code() == SHOAL_ENOENT) return;
    throw;
  }
}

std::string Runc::state(const std::string& id) {
  CaptureResult r = runCapture(command({"state", id}), CaptureOptions{});
  if (r.status != 0) fail("state", id, r.status, r.err);
  return r.out;
}

std::vector<std::string> Runc::list() {
  CaptureResult r = runCapture(command({"list", "-q"}), CaptureOptions{});
  if (r.status != 0) fail("list", "", r.status, r.err);
  std::vector<std::string> ids;
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) ids.push_back(line);
  }
  return ids;
}

ExecResult Runc::exec(const std::string& id, const std::vector<std::string>& argv, int timeoutMs) {
  if (argv.empty()) throw sdk::Error(SHOAL_EINVAL, "runc exec " + id + ": no command");
  // The pid file tells us the process to kill at the timeout: runc forwards catchable signals
  // to it, but SIGKILL for runc would leave it running in the container.
  char pidTemplate[] = "/tmp/shoal-exec-XXXXXX";
  const int tmpFd = mkstemp(pidTemplate);
  if (tmpFd < 0) throw sdk::Error(SHOAL_EIO, "runc exec " + id + ": cannot make a pid file");
  close(tmpFd);
  const std::string pidFile = pidTemplate;
  unlink(pidFile.c_str());  // runc refuses to overwrite nothing; it creates the file itself
  std::vector<std::string> full = command({"exec", "--pid-file", pidFile, id});
  full.insert(full.end(), argv.begin(), argv.end());
  CaptureOptions options;
  options.timeoutMs = timeoutMs;
  options.maxBytes = kHealthOutputMax;
  options.mergeStderr = true;
  options.onTimeout = [&](pid_t runcPid) {
    const pid_t target = readPidFile(pidFile);
    if (target > 0 && processStartTime(target) != 0) {
      ::kill(target, SIGKILL);
    } else {
      ::kill(runcPid, SIGKILL);  // not started yet: stop runc instead
    }
  };
  CaptureResult r;
  try {
    r = runCapture(full, options);
  } catch (...) {
    unlink(pidFile.c_str());
    throw;
  }
  unlink(pidFile.c_str());
  ExecResult result;
  result.output = r.out;
  result.timedOut = r.timedOut;
  result.exitCode = r.timedOut ? -1 : exitCode(r.status);
  // runc's own failure says "exec failed"; crun's, for a program it cannot find, "executable
  // file `X` not found". A program of the container's that exits 255 says neither. crun
  // refuses a stopped container with exit code 1: "the container `ID` is not running".
  const bool runtimeFailed =
      (result.exitCode == 255 &&
       (contains(r.out, "exec failed") || contains(r.out, "executable file `"))) ||
      (result.exitCode == 1 && contains(r.out, "the container `" + id + "` is not running"));
  if (!r.timedOut && runtimeFailed) {
    fail("exec", id, r.status, r.out);
  }
  return result;
}

}  // namespace shoal::runc
