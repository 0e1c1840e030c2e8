#include "tests/support/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <stdexcept>

#include "tests/support/temp_dir.h"

extern char** environ;

namespace shoal::test {
namespace {

[[noreturn]] void execChild(const std::vector<std::string>& argv,
                            const std::vector<std::string>& extraEnv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (const auto& e : extraEnv) putenv(const_cast<char*>(e.c_str()));
  execvp(args[0], args.data());
  std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
  _exit(127);
}

void decode(int status, int& code, int& sig) {
  if (WIFEXITED(status)) {
    code = WEXITSTATUS(status);
    sig = 0;
  } else if (WIFSIGNALED(status)) {
    code = -1;
    sig = WTERMSIG(status);
  }
}

}  // namespace

RunResult runCommand(const std::vector<std::string>& argv, std::chrono::milliseconds limit,
                     const std::vector<std::string>& extraEnv) {
  RunResult r;
  int outPipe[2], errPipe[2];
  if (pipe2(outPipe, O_CLOEXEC) != 0 || pipe2(errPipe, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe failed");
  }
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    dup2(outPipe[1], 1);
    dup2(errPipe[1], 2);
    execChild(argv, extraEnv);
  }
  close(outPipe[1]);
  close(errPipe[1]);
  auto deadline = std::chrono::steady_clock::now() + limit;
  pollfd fds[2] = {{outPipe[0], POLLIN, 0}, {errPipe[0], POLLIN, 0}};
  int openFds = 2;
  bool killed = false;
  while (openFds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill(pid, SIGKILL);
      killed = true;
      break;
    }
    int n = poll(fds, 2, static_cast<int>(std::min<long>(left.count(), 1000)));
    if (n <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      ssize_t got = read(fds[i].fd, buf, sizeof buf);
      if (got <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --openFds;
      } else {
        (i == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(got));
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) close(f.fd);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  decode(status, r.exitCode, r.signal);
  if (killed) r.err += "\n[killed: time limit exceeded]";
  return r;
}

ChildProcess::ChildProcess(const std::vector<std::string>& argv, const std::string& logPath)
    : logPath_(logPath) {
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    int devnull = open("/dev/null", O_RDONLY);
    int log = open(logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(devnull, 0);
    dup2(log, 1);
    dup2(log, 2);
    // A fresh signal mask: the test runner's must not leak into the daemon.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execChild(argv, {});
  }
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !reaped_) {
    kill(pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
  }
}

bool ChildProcess::running() {
  if (reaped_) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    decode(status, exitCode_, exitSignal_);
    return false;
  }
  return true;
}

void ChildProcess::signal(int sig) {
  if (!reaped_) kill(pid_, sig);
}

int ChildProcess::wait(std::chrono::milliseconds limit) {
  eventually([this] { return !running(); }, limit);
  return reaped_ ? exitCode_ : -1;
}

std::string ChildProcess::log() const { return readFile(logPath_); }

}  // namespace shoal::test
