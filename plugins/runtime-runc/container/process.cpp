#include "process.h"

#include <shoal/plugin.h>
#include <shoal/plugin.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace shoal::runc {
namespace {

constexpr char kDefaultEnvPath[] =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

void closeRange(unsigned first, unsigned last) {
  if (first > last) return;
#ifdef SYS_close_range
  if (syscall(SYS_close_range, first, last, 0) == 0) return;
#endif
  // No close_range (Linux < 5.9): close one by one, as far as the usual limit.
  for (unsigned fd = first; fd <= last && fd < 65536; ++fd) close(static_cast<int>(fd));
}

int pidfdOpen(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

bool readSome(int fd, std::string& into, std::size_t maxBytes, bool& open) {
  char buf[16384];
  ssize_t n = read(fd, buf, sizeof buf);
  if (n > 0) {
    const std::size_t room = maxBytes > into.size() ? maxBytes - into.size() : 0;
    into.append(buf, std::min(room, static_cast<std::size_t>(n)));
    return true;
  }
  if (n == 0 || (errno != EINTR && errno != EAGAIN)) open = false;
  return false;
}

}  // namespace

void closeFdsFrom(int lowest, int keep) {
  if (keep < lowest) {
    closeRange(static_cast<unsigned>(lowest), ~0U);
    return;
  }
  closeRange(static_cast<unsigned>(lowest), static_cast<unsigned>(keep - 1));
  closeRange(static_cast<unsigned>(keep + 1), ~0U);
}

pid_t spawn(const std::vector<std::string>& argv, const SpawnOptions& options) {
  if (argv.empty()) throw sdk::Error(SHOAL_EINVAL, "spawn: no program");
  // Everything the child needs is built before fork: after it, only async-signal-safe calls.
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> envStrings = options.env;
  if (envStrings.empty()) envStrings.push_back(kDefaultEnvPath);
  std::vector<char*> envp;
  for (const std::string& e : envStrings) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  int errPipe[2];
  if (pipe2(errPipe, O_CLOEXEC) != 0) {
    throw sdk::Error(SHOAL_EIO, "pipe: " + std::string(std::strerror(errno)));
  }
  const int sources[4] = {options.stdinFd, options.stdoutFd, options.stderrFd, options.passFd};
  const int targets = options.passFd >= 0 ? 4 : 3;
  const pid_t pid = fork();
  if (pid < 0) {
    const int e = errno;
    close(errPipe[0]);
    close(errPipe[1]);
    throw sdk::Error(SHOAL_EIO, "fork: " + std::string(std::strerror(e)));
  }
  if (pid == 0) {
    if (options.newSession) setsid();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &dfl, nullptr);
    // Copy every source (and the error pipe, and /dev/null) to fds above 3 first, so that none
    // sitting at 0..3 is overwritten before it is used; dup2 then clears close-on-exec on the
    // targets.
    const int errFd = fcntl(errPipe[1], F_DUPFD_CLOEXEC, 4);
    if (errFd < 0) _exit(127);
    int nullFd = -1;
    int copies[4];
    for (int i = 0; i < targets; ++i) {
      if (sources[i] < 0 && nullFd < 0) {
        const int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        nullFd = fd < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 4);
        if (fd >= 0) close(fd);
      }
      copies[i] = sources[i] >= 0 ? fcntl(sources[i], F_DUPFD_CLOEXEC, 4) : nullFd;
      if (copies[i] < 0) {
        const int e = errno;
        (void)!write(errFd, &e, sizeof e);
        _exit(127);
      }
    }
    for (int i = 0; i < targets; ++i) {
      if (dup2(copies[i], i) < 0) {
        const int e = errno;
        (void)!write(errFd, &e, sizeof e);
        _exit(127);
      }
    }
    closeFdsFrom(targets, errFd);
    execve(args[0], args.data(), envp.data());
    const int e = errno;
    (void)!write(errFd, &e, sizeof e);
    _exit(127);
  }
  close(errPipe[1]);
  int childErrno = 0;
  ssize_t n;
  do {
    n = read(errPipe[0], &childErrno, sizeof childErrno);
  } while (n < 0 && errno == EINTR);
  close(errPipe[0]);
  if (n == static_cast<ssize_t>(sizeof childErrno)) {
    waitChild(pid);
    throw sdk::Error(SHOAL_EIO, argv[0] + ": " + std::strerror(childErrno));
  }
  return pid;
}

int waitChild(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return status;
}

CaptureResult runCapture(const std::vector<std::string>& argv, const CaptureOptions& options) {
  int outPipe[2], errPipe[2] = {-1, -1};
  if (pipe2(outPipe, O_CLOEXEC) != 0) {
    throw sdk::Error(SHOAL_EIO, "pipe: " + std::string(std::strerror(errno)));
  }
  if (!options.mergeStderr && pipe2(errPipe, O_CLOEXEC) != 0) {
    const int e = errno;
    close(outPipe[0]);
    close(outPipe[1]);
    throw sdk::Error(SHOAL_EIO, "pipe: " + std::string(std::strerror(e)));
  }
  auto closeAll = [&] {
    for (int fd : {outPipe[0], outPipe[1], errPipe[0], errPipe[1]}) {
      if (fd >= 0) close(fd);
    }
  };
  SpawnOptions spawnOptions;
  spawnOptions.stdoutFd = outPipe[1];
  spawnOptions.stderrFd = options.mergeStderr ? outPipe[1] : errPipe[1];
  pid_t pid;
  try {
    pid = spawn(argv, spawnOptions);
  } catch (...) {
    closeAll();
    throw;
  }
  close(outPipe[1]);
  outPipe[1] = -1;
  if (errPipe[1] >= 0) close(errPipe[1]);
  errPipe[1] = -1;
  CaptureResult result;
  const int pidfd = pidfdOpen(pid);
  bool outOpen = true, errOpen = errPipe[0] >= 0, exited = false, killed = false;
  const int64_t start = monotonicNs();
  int64_t deadline = options.timeoutMs >= 0 ? start + int64_t{options.timeoutMs} * 1000000 : -1;
  // Until the child exits (not until the pipes close: it may close them and go on running).
  while (!exited) {
    int wait = -1;
    if (deadline >= 0) {
      wait = static_cast<int>(std::max<int64_t>(0, (deadline - monotonicNs() + 999999) / 1000000));
    }
    if (pidfd < 0) wait = wait < 0 ? 50 : std::min(wait, 50);
    pollfd fds[3] = {{outOpen ? outPipe[0] : -1, POLLIN, 0},
                     {errOpen ? errPipe[0] : -1, POLLIN, 0},
                     {pidfd, POLLIN, 0}};
    if (poll(fds, 3, wait) < 0 && errno != EINTR) break;
    if (fds[0].revents != 0) readSome(outPipe[0], result.out, options.maxBytes, outOpen);
    if (fds[1].revents != 0) readSome(errPipe[0], result.err, options.maxBytes, errOpen);
    siginfo_t info{};
    if (pidfd >= 0
            ? fds[2].revents != 0
            : (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
               info.si_pid == pid)) {
      exited = true;
    }
    if (deadline >= 0 && !exited && monotonicNs() >= deadline) {
      if (!result.timedOut) {
        result.timedOut = true;
        if (options.onTimeout) {
          options.onTimeout(pid);
        } else {
          kill(pid, SIGKILL);
          killed = true;
        }
        deadline = monotonicNs() + int64_t{2000} * 1000000;
      } else if (!killed) {
        kill(pid, SIGKILL);
        killed = true;
        deadline = -1;
      } else {
        deadline = -1;
      }
    }
  }
  // Drain what is buffered without waiting for writers that outlive the child.
  for (int fd : {outPipe[0], errPipe[0]}) {
    if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  bool open = outOpen;
  while (open && readSome(outPipe[0], result.out, options.maxBytes, open)) {
  }
  open = errOpen;
  while (open && readSome(errPipe[0], result.err, options.maxBytes, open)) {
  }
  closeAll();
  if (pidfd >= 0) close(pidfd);
  result.status = waitChild(pid);
  return result;
}

std::string describeStatus(int status) {
  if (status == -1) return "exited with an unknown status";
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = sigabbrev_np(WTERMSIG(status));
    return "killed by signal " +
           (name != nullptr ? "SIG" + std::string(name) : std::to_string(WTERMSIG(status)));
  }
  return "stopped";
}

int exitCode(int status) {
  if (status == -1) return 255;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 255;
}

int64_t nowNs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

int64_t monotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

bool writeFileAtomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int e = errno;
      close(fd);
      unlink(tmp.c_str());
      errno = e;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    const int e = errno;
    unlink(tmp.c_str());
    errno = e;
    return false;
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    unlink(tmp.c_str());
    errno = e;
    return false;
  }
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return true;
}

std::string readWholeFile(const std::string& path, bool* ok) {
  std::string out;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (ok != nullptr) *ok = false;
    return out;
  }
  char buf[16384];
  while (true) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  close(fd);
  if (ok != nullptr) *ok = true;
  return out;
}

pid_t readPidFile(const std::string& path) {
  return static_cast<pid_t>(std::atoi(readWholeFile(path).c_str()));
}

bool makeDirs(const std::string& path, mode_t mode) {
  std::string dir = path;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.empty()) return true;
  // The directory itself first: it usually exists, or only it is missing, and then one call
  // is all it takes instead of one per component.
  if (mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) {
    const auto slash = dir.rfind('/');
    if (errno != ENOENT || slash == std::string::npos || slash == 0) return false;
    if (!makeDirs(dir.substr(0, slash), mode)) return false;
    if (mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) return false;
  }
  struct stat st {};
  return stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

uint64_t processStartTime(pid_t pid) {
  if (pid <= 0) return 0;
  const std::string stat = readWholeFile("/proc/" + std::to_string(pid) + "/stat");
  // The command (field 2) may contain spaces and parentheses: fields restart after the last ')'.
  const auto close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return 0;
  std::size_t pos = close + 2;  // field 3, the state
  if (stat[pos] == 'Z' || stat[pos] == 'X') return 0;
  for (int field = 3; field < 22 && pos < stat.size(); ++field) {
    pos = stat.find(' ', pos);
    if (pos == std::string::npos) return 0;
    ++pos;
  }
  return std::strtoull(stat.c_str() + pos, nullptr, 10);
}

}  // namespace shoal::runc
