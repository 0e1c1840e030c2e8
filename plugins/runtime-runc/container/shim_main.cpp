// shoal-shim: one small process per container (README.md, "The shim").
//
//   shoal-shim --runtime RUNC --root ROOT --id ID --bundle DIR --state-dir DIR
//              [--log-max-bytes N] [--log-max-files N] [--tty 0|1] [--cgroup PATH]
//              [--ready-fd FD]
//
// Detaches (setsid, fork: the process that started it exits at once), becomes the subreaper of
// the container's init, runs `runc run --detach` with pipes as the container's stdout/stderr
// (with --tty 1, a console socket through which runc hands over the pty's master instead),
// reports "OK <pid>" or "ERR <message>" on the ready fd, then copies the
// container's output into rotated log files until the container exits, records the exit in
// exit.json and exits itself. It never deletes the container.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>

#include "process.h"
#include "runc.h"
#include "state_files.h"

namespace {

using namespace shoal::runc;

constexpr std::size_t kMaxLine = 16 * 1024;  // Docker's: longer lines become several records
constexpr int64_t kDrainNs = int64_t{2} * 1000 * 1000 * 1000;

struct Args {
  std::string runtime, root, id, bundle, stateDir;
  std::string cgroup;  // the container's cgroupsPath ("/shoal/ID"), where OOM kills are counted
  uint64_t logMaxBytes = 10 << 20;
  int logMaxFiles = 3;
  bool tty = false;
  int readyFd = -1;
};

void say(const char* fmt, const std::string& a) {
  std::fprintf(stderr, fmt, a.c_str());
  std::fputc('\n', stderr);
  std::fflush(stderr);
}

bool parseArgs(int argc, char** argv, Args& a, std::string& error) {
  for (int i = 1; i < argc; ++i) {
    const std::string key = argv[i];
    if (i + 1 >= argc) {
      error = "missing value for " + key;
      return false;
    }
    const std::string value = argv[++i];
    if (key == "--runtime") {
      a.runtime = value;
    } else if (key == "--root") {
      a.root = value;
    } else if (key == "--id") {
      a.id = value;
    } else if (key == "--bundle") {
      a.bundle = value;
    } else if (key == "--state-dir") {
      a.stateDir = value;
    } else if (key == "--log-max-bytes") {
      a.logMaxBytes = std::strtoull(value.c_str(), nullptr, 10);
    } else if (key == "--log-max-files") {
      a.logMaxFiles = std::atoi(value.c_str());
    } else if (key == "--tty") {
      a.tty = value == "1";
    } else if (key == "--cgroup") {
      a.cgroup = value;
    } else if (key == "--ready-fd") {
      a.readyFd = std::atoi(value.c_str());
    } else {
      error = "unknown option " + key;
      return false;
    }
  }
  if (a.runtime.empty() || a.root.empty() || a.id.empty() || a.bundle.empty() ||
      a.stateDir.empty()) {
    error =
        "usage: shoal-shim --runtime RUNC --root ROOT --id ID --bundle DIR --state-dir DIR "
        "[--log-max-bytes N] [--log-max-files N] [--tty 0|1] [--cgroup PATH] [--ready-fd FD]";
    return false;
  }
  return true;
}

void report(int& readyFd, const std::string& text) {
  if (readyFd < 0) return;
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(readyFd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  close(readyFd);
  readyFd = -1;
}

// One of the container's output streams: a pipe, split into lines.
struct Stream {
  const char* name;
  int fd = -1;
  std::string partial;

  void flush(LogWriter& log, bool all) {
    std::size_t begin = 0;
    while (true) {
      const auto nl = partial.find('\n', begin);
      if (nl == std::string::npos) break;
      emit(log, partial.substr(begin, nl - begin));
      begin = nl + 1;
    }
    partial.erase(0, begin);
    while (partial.size() >= kMaxLine) {
      emit(log, partial.substr(0, kMaxLine));
      partial.erase(0, kMaxLine);
    }
    if (all && !partial.empty()) {
      emit(log, partial);
      partial.clear();
    }
  }

  void emit(LogWriter& log, std::string line) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    LogRecord record{name, nowNs(), std::move(line)};
    if (!log.write(record)) say("shoal-shim: cannot write the log: %s", std::strerror(errno));
  }

  // Reads what is there; false at EOF (the fd is then closed).
  bool read(LogWriter& log) {
    char buf[16384];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
    if (n <= 0) {
      close(fd);
      fd = -1;
      flush(log, true);
      return false;
    }
    partial.append(buf, static_cast<std::size_t>(n));
    flush(log, false);
    return true;
  }
};

// The unix socket `runc run --console-socket` sends a terminal's pty master to, in a
// directory of its own under /tmp (a state directory's path may be too long for sun_path).
class ConsoleSocket {
 public:
  ConsoleSocket() {
    char dir[] = "/tmp/shoal-tty-XXXXXX";
    if (mkdtemp(dir) == nullptr) throw std::runtime_error(errnoText("mkdtemp /tmp/shoal-tty"));
    dir_ = dir;
    path_ = dir_ + "/s";
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        listen(fd_, 1) != 0) {
      const std::string error = errnoText("console socket " + path_);
      cleanUp();
      throw std::runtime_error(error);
    }
  }
  ~ConsoleSocket() { cleanUp(); }
  ConsoleSocket(const ConsoleSocket&) = delete;
  ConsoleSocket& operator=(const ConsoleSocket&) = delete;
  const std::string& path() const { return path_; }

  // The master runc sent (runc run has returned, so it is waiting in the socket).
  int receiveMaster() {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 5000) <= 0) throw std::runtime_error("runc sent no terminal within 5 s");
    const int conn = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) throw std::runtime_error(errnoText("accept on the console socket"));
    char name[4096];
    iovec iov{name, sizeof name};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    do {
      n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    close(conn);
    const cmsghdr* c = n >= 0 ? CMSG_FIRSTHDR(&msg) : nullptr;
    if (c == nullptr || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
      throw std::runtime_error("runc's console socket message carried no terminal");
    }
    int master = -1;
    std::memcpy(&master, CMSG_DATA(c), sizeof master);
    return master;
  }

 private:
  static std::string errnoText(const std::string& what) {
    return what + ": " + std::strerror(errno);
  }
  void cleanUp() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    if (!path_.empty()) unlink(path_.c_str());
    if (!dir_.empty()) rmdir(dir_.c_str());
    path_.clear();
    dir_.clear();
  }
  std::string dir_, path_;
  int fd_ = -1;
};

// Where the kernel counts the OOM kills of the container in cgroup `path` (its absolute
// cgroupsPath, which runc takes from the hierarchy's root): memory.oom_control ("oom_kill N")
// in cgroup v1's memory hierarchy, else memory.events in the v2 tree. Found from the path, not
// from /proc/PID/cgroup: an init that has already exited shows the root cgroup there.
std::string oomCounterFile(const std::string& path) {
  if (path.empty()) return "";
  if (access("/sys/fs/cgroup/memory", F_OK) == 0) {
    return "/sys/fs/cgroup/memory" + path + "/memory.oom_control";
  }
  if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0) {
    return "/sys/fs/cgroup" + path + "/memory.events";
  }
  return "";
}

int64_t oomKills(const std::string& file) {
  if (file.empty()) return 0;
  const std::string text = readWholeFile(file);
  const auto pos = text.find("oom_kill ");
  return pos == std::string::npos ? 0 : std::strtoll(text.c_str() + pos + 9, nullptr, 10);
}

// Ends a container runc started that this shim will not look after (no terminal reached it, or
// runc wrote no pid): by its pid, reaped, when the pid file names one, else by id through runc.
void endStarted(Runc& runc, const std::string& id, const std::string& pidFile) {
  const pid_t pid = readPidFile(pidFile);
  if (pid > 0 && kill(pid, SIGKILL) == 0) {
    waitpid(pid, nullptr, 0);
    return;
  }
  try {
    runc.kill(id, SIGKILL, true);
  } catch (const std::exception&) {
    // Nothing runc knows is running: nothing left to end.
  }
}

// Docker's exit codes for a container that never started. runc and crun say why in their own
// words and case ("executable file not found in $PATH", "executable file `x` not found in
// $PATH: No such file or directory").
int startFailureCode(std::string message) {
  for (char& c : message) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (message.find("executable file not found") != std::string::npos ||
      message.find("no such file or directory") != std::string::npos) {
    return 127;
  }
  if (message.find("permission denied") != std::string::npos) return 126;
  return 128;
}

void recordExit(const Args& a, const ExitInfo& exit) {
  if (!writeFileAtomic(a.stateDir + "/" + kExitFile, encodeExit(exit))) {
    say("shoal-shim: cannot write exit.json: %s", std::strerror(errno));
  }
}

int runShim(const Args& a, int readyFd) {
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    report(readyFd, std::string("ERR cannot become a subreaper: ") + std::strerror(errno));
    return 1;
  }
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, nullptr);
  const int sigfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  const pid_t self = getpid();
  if (sigfd < 0 || !writeFileAtomic(a.stateDir + "/" + kShimPidFile,
                                    std::to_string(self) + " " +
                                        std::to_string(processStartTime(self)) + "\n")) {
    report(readyFd, std::string("ERR shim setup: ") + std::strerror(errno));
    return 1;
  }

  // The container's output: two pipes, or with a terminal the pty's master alone (a terminal
  // has one stream, which Docker logs as stdout).
  int out[2] = {-1, -1}, err[2] = {-1, -1};
  if (!a.tty && (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)) {
    report(readyFd, std::string("ERR pipe: ") + std::strerror(errno));
    return 1;
  }
  Runc runc(a.runtime, a.root);
  const std::string pidFile = a.stateDir + "/" + kContainerPidFile;
  pid_t pid = 0;
  try {
    CreateStdio stdio;
    stdio.logFile = a.stateDir + "/" + kRuncLogFile;
    if (a.tty) {
      ConsoleSocket console;
      stdio.consoleSocket = console.path();
      runc.run(a.id, a.bundle, pidFile, stdio);
      try {
        out[0] = console.receiveMaster();
      } catch (const std::exception&) {
        // Running with a terminal nobody holds: end it rather than leave it there.
        endStarted(runc, a.id, pidFile);
        throw;
      }
    } else {
      stdio.stdoutFd = out[1];
      stdio.stderrFd = err[1];
      runc.run(a.id, a.bundle, pidFile, stdio);
    }
    pid = readPidFile(pidFile);
    if (pid <= 0) {
      endStarted(runc, a.id, pidFile);
      throw std::runtime_error("runc run " + a.id + " wrote no pid file");
    }
  } catch (const std::exception& e) {
    ExitInfo exit;
    exit.exitCode = startFailureCode(e.what());
    exit.finishedNs = nowNs();
    exit.message = e.what();
    recordExit(a, exit);
    report(readyFd, std::string("ERR ") + e.what());
    return 1;
  }
  if (out[1] >= 0) close(out[1]);
  if (err[1] >= 0) close(err[1]);
  // runc made this cgroup for this container (and its delete removes it), so every OOM kill
  // counted there is this container's: no count from before the start to subtract.
  const std::string oomFile = oomCounterFile(a.cgroup);
  writeFileAtomic(a.stateDir + "/" + kStartedFile, std::to_string(nowNs()) + "\n");
  report(readyFd, "OK " + std::to_string(pid) + "\n");

  LogWriter log(a.stateDir + "/" + kLogFile, a.logMaxBytes, a.logMaxFiles);
  Stream streams[2] = {{"stdout", out[0], {}}, {"stderr", err[0], {}}};
  for (Stream& s : streams) {
    if (s.fd >= 0) fcntl(s.fd, F_SETFL, fcntl(s.fd, F_GETFL) | O_NONBLOCK);
  }
  bool exited = pid <= 0;
  int status = -1;
  int64_t drainUntil = 0;
  while (true) {
    const bool open = streams[0].fd >= 0 || streams[1].fd >= 0;
    if (exited && (!open || monotonicNs() >= drainUntil)) break;
    int timeout = -1;
    if (exited) timeout = static_cast<int>((drainUntil - monotonicNs()) / 1000000) + 1;
    pollfd fds[3] = {{streams[0].fd, POLLIN, 0}, {streams[1].fd, POLLIN, 0}, {sigfd, POLLIN, 0}};
    if (poll(fds, 3, timeout) < 0 && errno != EINTR) {
      say("shoal-shim: poll: %s", std::strerror(errno));
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].revents != 0) streams[i].read(log);
    }
    if (fds[2].revents != 0) {
      signalfd_siginfo info;
      while (read(sigfd, &info, sizeof info) > 0) {
      }
      // Reap everything: runc's helpers and whatever else re-parents to us, and the init.
      int st = 0;
      pid_t reaped;
      while ((reaped = waitpid(-1, &st, WNOHANG)) > 0) {
        if (reaped == pid && !exited) {
          exited = true;
          status = st;
          // The container's processes die with its init (pid namespace), closing the pipes;
          // something holding them longer is not waited for beyond this.
          drainUntil = monotonicNs() + kDrainNs;
        }
      }
    }
  }
  for (Stream& s : streams) {
    s.flush(log, true);
    if (s.fd >= 0) close(s.fd);
  }

  ExitInfo exit;
  exit.finishedNs = nowNs();
  exit.exitCode = pid > 0 ? exitCode(status) : 255;
  exit.signal = status != -1 && WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  exit.oomKilled = oomKills(oomFile) > 0;
  exit.message = describeStatus(status);
  if (exit.oomKilled) exit.message += " (out of memory)";
  recordExit(a, exit);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  std::string error;
  const bool ok = parseArgs(argc, argv, a, error);
  int readyFd = a.readyFd;
  if (readyFd >= 0 && fcntl(readyFd, F_SETFD, FD_CLOEXEC) != 0) readyFd = -1;
  if (!ok) {
    std::fprintf(stderr, "shoal-shim: %s\n", error.c_str());
    report(readyFd, "ERR shoal-shim: " + error);
    return 2;
  }
  // Detach: a new session, and a child that the caller never has to wait for (the caller reaps
  // this first process at once; the shim is re-parented to init or the nearest subreaper).
  setsid();
  const pid_t child = fork();
  if (child < 0) {
    report(readyFd, std::string("ERR shoal-shim: fork: ") + std::strerror(errno));
    return 1;
  }
  if (child > 0) _exit(0);
  if (chdir("/") != 0) return 1;
  signal(SIGHUP, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  umask(022);
  // stdin/stdout to /dev/null, stderr to the shim's own log; nothing else inherited.
  const int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  const int shimLog = open((a.stateDir + "/" + kShimLogFile).c_str(),
                           O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(shimLog >= 0 ? shimLog : null, 2);
  }
  closeFdsFrom(3, readyFd);
  return runShim(a, readyFd);
}
