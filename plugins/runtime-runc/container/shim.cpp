#include "shim.h"

#include <shoal/plugin.h>
#include <shoal/plugin.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>

#include "process.h"

namespace shoal::runc {
namespace {

std::string join(const std::string& dir, const char* name) { return dir + "/" + name; }

bool exists(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0;
}

struct ShimPid {
  pid_t pid = 0;
  uint64_t startTime = 0;
};

ShimPid readShimPid(const std::string& stateDir) {
  ShimPid out;
  const std::string text = readWholeFile(join(stateDir, kShimPidFile));
  char* end = nullptr;
  out.pid = static_cast<pid_t>(std::strtol(text.c_str(), &end, 10));
  if (end != nullptr) out.startTime = std::strtoull(end, nullptr, 10);
  return out;
}

bool alive(const ShimPid& shim) {
  return shim.pid > 0 && shim.startTime != 0 && processStartTime(shim.pid) == shim.startTime;
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

std::string lastLine(const std::string& text) {
  std::string t = text;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  const auto nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

[[noreturn]] void fail(shoal_status code, const std::string& id, const std::string& what) {
  throw sdk::Error(code, "task " + id + ": " + what);
}

// Parses the complete lines of `buffer` into `out` (skipping bad ones), leaving in `buffer` a
// last line without its newline.
void parseLines(std::string& buffer, std::vector<LogRecord>& out) {
  std::size_t begin = 0;
  while (true) {
    const auto nl = buffer.find('\n', begin);
    if (nl == std::string::npos) break;
    LogRecord record;
    if (decodeLogRecord(std::string_view(buffer).substr(begin, nl - begin), record)) {
      out.push_back(std::move(record));
    }
    begin = nl + 1;
  }
  buffer.erase(0, begin);
}

// Rotated files, oldest first (container.log.N ... container.log.1), not the current one.
std::vector<std::string> rotatedFiles(const std::string& path) {
  std::vector<std::string> files;
  for (int n = 1; n < 10000 && exists(rotatedName(path, n)); ++n)
    files.push_back(rotatedName(path, n));
  std::reverse(files.begin(), files.end());
  return files;
}

void filter(std::vector<LogRecord>& records, int tail, int64_t sinceNs) {
  if (sinceNs > 0) {
    records.erase(std::remove_if(records.begin(), records.end(),
                                 [&](const LogRecord& r) { return r.timestampNs < sinceNs; }),
                  records.end());
  }
  if (tail >= 0 && records.size() > static_cast<std::size_t>(tail)) {
    records.erase(records.begin(), records.end() - tail);
  }
}

}  // namespace

int launchShim(const ShimOptions& o) {
  for (const auto* path :
       {&o.shimPath, &o.runtimePath, &o.runtimeRoot, &o.bundleDir, &o.stateDir}) {
    if (path->empty() || (*path)[0] != '/') {
      fail(SHOAL_EINVAL, o.id, "the shim needs absolute paths (got \"" + *path + "\")");
    }
  }
  if (o.id.empty()) throw sdk::Error(SHOAL_EINVAL, "launchShim: no container id");
  if (!o.cgroupsPath.empty() && o.cgroupsPath[0] != '/') {
    fail(SHOAL_EINVAL, o.id, "the cgroups path must be absolute (got \"" + o.cgroupsPath + "\")");
  }
  if (!makeDirs(o.stateDir, 0700)) {
    fail(SHOAL_EIO, o.id, "cannot create " + o.stateDir + ": " + std::strerror(errno));
  }
  if (alive(readShimPid(o.stateDir))) {
    fail(SHOAL_EBUSY, o.id, "a shim is already running for " + o.stateDir);
  }
  for (const char* stale :
       {kShimPidFile, kContainerPidFile, kStartedFile, kExitFile, kRuncLogFile}) {
    unlink(join(o.stateDir, stale).c_str());
  }
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) {
    fail(SHOAL_EIO, o.id, std::string("pipe: ") + std::strerror(errno));
  }
  std::vector<std::string> argv = {o.shimPath,
                                   "--runtime",
                                   o.runtimePath,
                                   "--root",
                                   o.runtimeRoot,
                                   "--id",
                                   o.id,
                                   "--bundle",
                                   o.bundleDir,
                                   "--state-dir",
                                   o.stateDir,
                                   "--log-max-bytes",
                                   std::to_string(o.logMaxBytes),
                                   "--log-max-files",
                                   std::to_string(o.logMaxFiles),
                                   "--tty",
                                   o.tty ? "1" : "0",
                                   "--ready-fd",
                                   "3"};
  if (!o.cgroupsPath.empty()) argv.insert(argv.end(), {"--cgroup", o.cgroupsPath});
  SpawnOptions spawnOptions;
  spawnOptions.passFd = ready[1];
  pid_t first;
  try {
    first = spawn(argv, spawnOptions);
  } catch (const sdk::Error& e) {
    close(ready[0]);
    close(ready[1]);
    fail(SHOAL_EIO, o.id, std::string("cannot start the shim: ") + e.what());
  }
  close(ready[1]);
  // The shim's first process only forks the real shim and exits.
  waitChild(first);
  std::string report;
  const int64_t deadline = monotonicNs() + int64_t{o.timeoutMs} * 1000000;
  bool eof = false;
  while (!eof) {
    const int64_t left = (deadline - monotonicNs()) / 1000000;
    if (left <= 0) break;
    pollfd pfd{ready[0], POLLIN, 0};
    const int n = ::poll(&pfd, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    char buf[4096];
    const ssize_t got = read(ready[0], buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      eof = true;
    } else {
      report.append(buf, static_cast<std::size_t>(got));
    }
  }
  close(ready[0]);
  if (report.rfind("OK ", 0) == 0) {
    const int pid = std::atoi(report.c_str() + 3);
    if (pid > 0) return pid;
  }
  if (report.rfind("ERR ", 0) == 0) {
    std::string message = report.substr(4);
    while (!message.empty() && message.back() == '\n') message.pop_back();
    fail(SHOAL_EIO, o.id, message);
  }
  if (!eof) {
    fail(SHOAL_ETIMEDOUT, o.id,
         "the shim reported nothing within " + std::to_string(o.timeoutMs) + " ms");
  }
  const std::string shimLog = lastLine(readWholeFile(join(o.stateDir, kShimLogFile)));
  fail(SHOAL_EIO, o.id,
       "the shim exited without reporting" + (shimLog.empty() ? "" : ": " + shimLog));
}

ContainerStatus readStatus(const std::string& stateDir) {
  ContainerStatus status;
  status.pid = readPidFile(join(stateDir, kContainerPidFile));
  status.startedNs = std::strtoll(readWholeFile(join(stateDir, kStartedFile)).c_str(), nullptr, 10);
  status.shimAlive = alive(readShimPid(stateDir));
  bool ok = false;
  const std::string text = readWholeFile(join(stateDir, kExitFile), &ok);
  ExitInfo exit;
  if (ok && decodeExit(text, exit)) status.exit = exit;
  return status;
}

bool removeStateDir(const std::string& stateDir) {
  std::deque<std::string> dirs = {stateDir};
  std::vector<std::string> order;
  while (!dirs.empty()) {
    const std::string dir = dirs.front();
    dirs.pop_front();
    order.push_back(dir);
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) continue;
    while (dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      const std::string path = dir + "/" + name;
      struct stat st {};
      if (lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
        dirs.push_back(path);
      } else {
        unlink(path.c_str());
      }
    }
    closedir(d);
  }
  for (auto it = order.rbegin(); it != order.rend(); ++it) rmdir(it->c_str());
  return !exists(stateDir);
}

// ---------------------------------------------------------------------------------------------

ExitWatcher::ExitWatcher(std::function<void(const std::string&, const ExitInfo&)> onExit)
    : onExit_(std::move(onExit)) {
  inotify_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  wake_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (inotify_ < 0 || wake_ < 0) {
    const int e = errno;
    if (inotify_ >= 0) close(inotify_);
    if (wake_ >= 0) close(wake_);
    throw sdk::Error(SHOAL_EIO, std::string("exit watcher: ") + std::strerror(e));
  }
  thread_ = std::thread([this] { run(); });
}

ExitWatcher::~ExitWatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake();
  thread_.join();
  for (auto& [id, entry] : entries_) {
    if (entry.pidfd >= 0) close(entry.pidfd);
  }
  for (int fd : retiredFds_) close(fd);
  close(inotify_);
  close(wake_);
}

void ExitWatcher::wake() {
  const uint64_t one = 1;
  (void)!::write(wake_, &one, sizeof one);
}

void ExitWatcher::retire(Entry& entry) {
  if (entry.pidfd >= 0) retiredFds_.push_back(entry.pidfd);
  if (entry.wd >= 0) retiredWds_.push_back(entry.wd);
  entry.pidfd = -1;
  entry.wd = -1;
}

void ExitWatcher::watch(const std::string& id, const std::string& stateDir) {
  Entry entry;
  entry.stateDir = stateDir;
  entry.wd = inotify_add_watch(inotify_, stateDir.c_str(),
                               IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE_SELF);
  const ShimPid shim = readShimPid(stateDir);
  if (shim.pid > 0) entry.pidfd = pidfdOpen(shim.pid);
  // Checked after the pidfd is open, so the pid cannot be reused in between.
  if (!alive(shim)) {
    if (entry.pidfd >= 0) close(entry.pidfd);
    entry.pidfd = -1;
    entry.shimGone = true;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it != entries_.end()) retire(it->second);
    entry.generation = nextGeneration_++;
    entries_[id] = std::move(entry);
  }
  wake();
}

void ExitWatcher::unwatch(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    retire(it->second);
    entries_.erase(it);
  }
  wake();
}

void ExitWatcher::check(const std::string& id) {
  std::string stateDir;
  uint64_t generation = 0;
  bool shimGone = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return;
    stateDir = it->second.stateDir;
    generation = it->second.generation;
    shimGone = it->second.shimGone;
  }
  ExitInfo exit;
  bool ok = false;
  const std::string text = readWholeFile(join(stateDir, kExitFile), &ok);
  bool recorded = ok && decodeExit(text, exit);
  if (!recorded && !shimGone) return;
  if (!recorded) {
    exit = ExitInfo{};
    exit.exitCode = 255;
    exit.finishedNs = nowNs();
    exit.message = "the shim of task " + id +
                   " died without recording an exit (the container may still be running)";
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end() || it->second.generation != generation) return;
    retire(it->second);
    entries_.erase(it);
  }
  onExit_(id, exit);
}

void ExitWatcher::run() {
  std::vector<pollfd> fds;
  std::vector<std::string> pidfdIds;
  while (true) {
    std::vector<std::string> toCheck;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      for (int fd : retiredFds_) close(fd);
      retiredFds_.clear();
      for (int wd : retiredWds_) {
        // inotify gives the same wd for the same directory: keep it while another entry uses it.
        const bool used = std::any_of(entries_.begin(), entries_.end(),
                                      [&](const auto& e) { return e.second.wd == wd; });
        if (!used) inotify_rm_watch(inotify_, wd);
      }
      retiredWds_.clear();
      fds.assign({{inotify_, POLLIN, 0}, {wake_, POLLIN, 0}});
      pidfdIds.clear();
      for (auto& [id, entry] : entries_) {
        if (entry.check) {
          toCheck.push_back(id);
          entry.check = false;
        }
        if (entry.pidfd >= 0) {
          fds.push_back({entry.pidfd, POLLIN, 0});
          pidfdIds.push_back(id);
        }
      }
    }
    if (!toCheck.empty()) {
      for (const std::string& id : toCheck) check(id);
      continue;  // the set of fds may have changed
    }
    if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) continue;
    std::lock_guard<std::mutex> lock(mu_);
    if (fds[1].revents != 0) {
      uint64_t count = 0;
      (void)!::read(wake_, &count, sizeof count);
    }
    if (fds[0].revents != 0) {
      alignas(inotify_event) char buf[8192];
      while (true) {
        const ssize_t n = ::read(inotify_, buf, sizeof buf);
        if (n <= 0) break;
        for (ssize_t off = 0; off < n;) {
          const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
          const bool relevant = (ev->mask & (IN_DELETE_SELF | IN_IGNORED | IN_Q_OVERFLOW)) != 0 ||
                                (ev->len > 0 && std::strcmp(ev->name, kExitFile) == 0);
          if (relevant) {
            for (auto& [id, entry] : entries_) {
              if (entry.wd == ev->wd || (ev->mask & IN_Q_OVERFLOW) != 0) entry.check = true;
            }
          }
          off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
        }
      }
    }
    for (std::size_t i = 2; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      auto it = entries_.find(pidfdIds[i - 2]);
      if (it == entries_.end() || it->second.pidfd != fds[i].fd) continue;
      it->second.shimGone = true;
      it->second.check = true;
      retiredFds_.push_back(it->second.pidfd);
      it->second.pidfd = -1;
    }
  }
}

// ---------------------------------------------------------------------------------------------

std::vector<LogRecord> readLogs(const std::string& stateDir, int tail, int64_t sinceNs) {
  const std::string path = join(stateDir, kLogFile);
  std::vector<LogRecord> records;
  std::vector<std::string> files = rotatedFiles(path);
  files.push_back(path);
  for (const std::string& file : files) {
    std::string text = readWholeFile(file);
    if (!text.empty() && text.back() != '\n') text += '\n';  // a torn last record is skipped
    parseLines(text, records);
  }
  filter(records, tail, sinceNs);
  return records;
}

LogFollower::LogFollower(std::string stateDir, int tail, int64_t sinceNs)
    : stateDir_(std::move(stateDir)),
      path_(join(stateDir_, kLogFile)),
      tail_(tail),
      sinceNs_(sinceNs) {
  inotify_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_ >= 0) {
    inotify_add_watch(inotify_, stateDir_.c_str(),
                      IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE_SELF);
  }
}

LogFollower::~LogFollower() {
  if (fd_ >= 0) close(fd_);
  if (inotify_ >= 0) close(inotify_);
}

void LogFollower::readFd(std::vector<LogRecord>& out) {
  char buf[65536];
  while (true) {
    const ssize_t n = read(fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending_.append(buf, static_cast<std::size_t>(n));
  }
  parseLines(pending_, out);
}

void LogFollower::readCurrent(std::vector<LogRecord>& out) {
  if (fd_ < 0) {
    fd_ = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) return;
    struct stat st {};
    inode_ = fstat(fd_, &st) == 0 ? st.st_ino : 0;
  }
  readFd(out);
  struct stat st {};
  if (stat(path_.c_str(), &st) == 0 && st.st_ino == inode_) return;
  // Rotated: finish the old file (the shim wrote to it until the rename), then go on with the
  // new one from its start.
  readFd(out);
  pending_.clear();
  close(fd_);
  fd_ = -1;
  fd_ = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) return;
  inode_ = fstat(fd_, &st) == 0 ? st.st_ino : 0;
  readFd(out);
}

std::vector<LogRecord> LogFollower::poll() {
  std::vector<LogRecord> out;
  if (finished_) return out;
  // Looked at before reading: everything the shim wrote before exit.json is then read below.
  const bool over = exists(join(stateDir_, kExitFile)) || !alive(readShimPid(stateDir_));
  if (first_) {
    first_ = false;
    for (const std::string& file : rotatedFiles(path_)) {
      std::string text = readWholeFile(file);
      if (!text.empty() && text.back() != '\n') text += '\n';
      parseLines(text, out);
    }
    readCurrent(out);
    filter(out, tail_, sinceNs_);
  } else {
    readCurrent(out);
    if (sinceNs_ > 0) filter(out, -1, sinceNs_);
  }
  if (over) finished_ = true;
  return out;
}

void LogFollower::wait(int timeoutMs) {
  if (inotify_ < 0) {
    usleep(static_cast<useconds_t>(std::min(timeoutMs, 200)) * 1000);
    return;
  }
  pollfd pfd{inotify_, POLLIN, 0};
  if (::poll(&pfd, 1, timeoutMs) > 0) {
    char buf[4096];
    while (read(inotify_, buf, sizeof buf) > 0) {
    }
  }
}

}  // namespace shoal::runc
