// Real containers through shoal-shim and runc (root, runc at /usr/sbin/runc, /bin/busybox):
// logs, exit codes, signals, OOM kills, a shim outliving its launcher, the exit watcher across
// a simulated shoald restart, log rotation, health-check style exec, and removal leaving
// nothing behind. Each test uses its own ids, runc root, state dirs and cgroup parent
// (/shoal-test-<pid>), and tearDown removes everything even after a failed assertion.
#include <cppunit/extensions/HelperMacros.h>

#include <dirent.h>
#include <shoal/plugin.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <shoal/plugin.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "oci_spec.h"
#include "process.h"
#include "runc.h"
#include "shim.h"
#include "task_spec.h"
#include "tests/support/oci_runtime.h"
#include "tests/support/temp_dir.h"

using namespace shoal::runc;
using shoal::test::TempDir;
using Strings = std::vector<std::string>;
namespace fs = std::filesystem;

namespace {

constexpr char kBusybox[] = "/bin/busybox";

using shoal::test::ociRuntime;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

bool canRun() {
  static const bool ok = [] {
    if (geteuid() != 0 || access(kBusybox, X_OK) != 0) {
      std::cerr << "\n(runc_shim_test needs root and " << kBusybox << ": skipped) ";
      return false;
    }
    if (const std::string why = shoal::test::ociRuntimeUnusable(); !why.empty()) {
      std::cerr << "\n(" << why << ": skipped) ";
      return false;
    }
    return true;
  }();
  return ok;
}

std::string cgroupParent() { return "shoal-test-" + std::to_string(getpid()); }

// Lines of the records of one stream.
Strings linesOf(const std::vector<LogRecord>& records, const std::string& stream) {
  Strings out;
  for (const LogRecord& r : records) {
    if (r.stream == stream) out.push_back(r.line);
  }
  return out;
}

int64_t rssKiB(pid_t pid) {
  const std::string status = readWholeFile("/proc/" + std::to_string(pid) + "/status");
  const auto pos = status.find("VmRSS:");
  return pos == std::string::npos ? -1 : std::strtoll(status.c_str() + pos + 6, nullptr, 10);
}

pid_t shimPidOf(const std::string& stateDir) {
  return static_cast<pid_t>(std::atoi(readWholeFile(stateDir + "/shim.pid").c_str()));
}

}  // namespace

class RuncShimTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(RuncShimTest);
  CPPUNIT_TEST(testOutputLinesAreLoggedAndExitCodeRecorded);
  CPPUNIT_TEST(testSigkillIsExit137WithSignal9);
  CPPUNIT_TEST(testOomKillIsRecorded);
  CPPUNIT_TEST(testATerminalsOutputIsLoggedAsStdout);
  CPPUNIT_TEST(testCreateFailureQuotesRunc);
  CPPUNIT_TEST(testShimOutlivesItsLauncher);
  CPPUNIT_TEST(testExitWatcherAcrossARestartAndAShimDeath);
  CPPUNIT_TEST(testLogsRotateKeepingMaxFiles);
  CPPUNIT_TEST(testExecReturnsExitCodeAndTimesOut);
  CPPUNIT_TEST(testLimitsApplyAndRemoveLeavesNothing);
  CPPUNIT_TEST(testStartLatencyAndShimMemory);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    if (!canRun()) return;
    tmp_ = std::make_unique<TempDir>();
    rootfs_ = tmp_->file("rootfs");
    for (const char* d : {"bin", "etc", "proc", "sys", "dev", "tmp"}) {
      fs::create_directories(rootfs_ + "/" + d);
    }
    fs::copy_file(kBusybox, rootfs_ + "/bin/busybox");
    for (const char* tool : {"sh", "echo", "sleep", "cat", "tail", "head", "ls", "true", "false",
                             "seq", "hostname", "id", "pwd", "env", "kill"}) {
      fs::create_symlink("busybox", rootfs_ + "/bin/" + tool);
    }
    tmp_->write("rootfs/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
    tmp_->write("rootfs/etc/group", "root:x:0:\n");
    runcRoot_ = tmp_->file("runc");
    runc_ = std::make_unique<Runc>(ociRuntime(), runcRoot_);
  }

  void tearDown() override {
    if (!canRun()) return;
    for (const std::string& id : ids_) {
      try {
        runc_->remove(id, true);
      } catch (const shoal::sdk::Error&) {
      }
    }
    for (const std::string& id : ids_) {
      const std::string dir = stateDir(id);
      const ContainerStatus s = readStatus(dir);
      if (s.shimAlive) kill(shimPidOf(dir), SIGKILL);
    }
    // The cgroup parent in every hierarchy (runc delete removed the containers' own).
    for (int attempt = 0; attempt < 50; ++attempt) {
      bool left = false;
      for (const auto& hierarchy : fs::directory_iterator("/sys/fs/cgroup")) {
        const fs::path parent = hierarchy.path() / cgroupParent();
        if (!fs::exists(parent)) continue;
        for (const auto& child : fs::directory_iterator(parent)) {
          if (child.is_directory()) rmdir(child.path().c_str());
        }
        if (rmdir(parent.c_str()) != 0) left = true;
      }
      if (!left) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ids_.clear();
    runc_.reset();
    tmp_.reset();
  }

  void testOutputLinesAreLoggedAndExitCodeRecorded() {
    if (!canRun()) return;
    const std::string id = start("logs",
                                 {"sh", "-c",
                                  "echo out1; echo err1 >&2; echo host=$(hostname) "
                                  "v=$V dir=$(pwd); printf 'no newline'; exit 3"},
                                 [](TaskSpec& t) {
                                   t.env = {"V=42"};
                                   t.hostname = "h1";
                                   t.workdir = "/tmp";
                                 });
    const ExitInfo exit = waitExit(id);
    CPPUNIT_ASSERT_EQUAL(3, exit.exitCode);
    CPPUNIT_ASSERT_EQUAL(0, exit.signal);
    CPPUNIT_ASSERT(!exit.oomKilled);
    CPPUNIT_ASSERT(exit.finishedNs > 0);
    CPPUNIT_ASSERT_EQUAL(std::string("exited with code 3"), exit.message);
    const std::vector<LogRecord> logs = readLogs(stateDir(id), -1, 0);
    CPPUNIT_ASSERT(linesOf(logs, "stdout") ==
                   Strings({"out1", "host=h1 v=42 dir=/tmp", "no newline"}));
    CPPUNIT_ASSERT(linesOf(logs, "stderr") == Strings({"err1"}));
    for (const LogRecord& r : logs) CPPUNIT_ASSERT(r.timestampNs >= startedNs_);
    const ContainerStatus s = readStatus(stateDir(id));
    CPPUNIT_ASSERT(s.pid > 0);
    CPPUNIT_ASSERT(s.startedNs >= startedNs_);
    waitShimGone(id);
  }

  // --tty: the container's stdio is a pseudo-terminal whose master the shim gets from runc
  // (--console-socket); everything written to it is logged as stdout, as Docker does.
  void testATerminalsOutputIsLoggedAsStdout() {
    if (!canRun()) return;
    const std::string id = start(
        "tty",
        {"sh", "-c",
         "test -t 0 && test -t 1 && test -t 2 && echo \"on $(tty) TERM=$TERM\"; echo err >&2; "
         "printf 'no newline'; exit 4"},
        [](TaskSpec& t) { t.tty = true; }, [](ShimOptions& o) { o.tty = true; });
    const ExitInfo exit = waitExit(id);
    CPPUNIT_ASSERT_EQUAL(4, exit.exitCode);
    const std::vector<LogRecord> logs = readLogs(stateDir(id), -1, 0);
    const Strings out = linesOf(logs, "stdout");
    CPPUNIT_ASSERT_EQUAL_MESSAGE(
        std::accumulate(out.begin(), out.end(), std::string(),
                        [](std::string a, const std::string& b) { return a + b + "|"; }),
        std::size_t{3}, out.size());
    CPPUNIT_ASSERT_EQUAL(std::string("on /dev/pts/0 TERM=xterm"), out[0]);  // "\r\n" lines too
    CPPUNIT_ASSERT_EQUAL(std::string("err"), out[1]);
    CPPUNIT_ASSERT_EQUAL(std::string("no newline"), out[2]);
    CPPUNIT_ASSERT(linesOf(logs, "stderr").empty());
    waitShimGone(id);
    // Nothing of the console socket is left in /tmp.
    std::size_t consoleDirs = 0;
    if (DIR* d = opendir("/tmp")) {
      while (const dirent* e = readdir(d)) {
        consoleDirs += std::string(e->d_name).rfind("shoal-tty-", 0) == 0;
      }
      closedir(d);
    }
    CPPUNIT_ASSERT_EQUAL(std::size_t{0}, consoleDirs);
  }

  void testSigkillIsExit137WithSignal9() {
    if (!canRun()) return;
    const std::string id = start("kill", {"sleep", "1000"});
    runc_->kill(id, SIGKILL);
    const ExitInfo exit = waitExit(id);
    CPPUNIT_ASSERT_EQUAL(137, exit.exitCode);
    CPPUNIT_ASSERT_EQUAL(9, exit.signal);
    CPPUNIT_ASSERT(!exit.oomKilled);
    CPPUNIT_ASSERT_EQUAL(std::string("killed by signal SIGKILL"), exit.message);
  }

  void testOomKillIsRecorded() {
    if (!canRun()) return;
    // tail keeps a file without newlines in memory: it grows until the 32 MiB limit.
    const std::string id =
        start("oom", {"tail", "/dev/zero"}, [](TaskSpec& t) { t.memoryLimitBytes = 32 << 20; });
    const ExitInfo exit = waitExit(id, 60000);
    CPPUNIT_ASSERT_EQUAL(137, exit.exitCode);
    CPPUNIT_ASSERT_EQUAL(9, exit.signal);
    CPPUNIT_ASSERT(exit.oomKilled);
    CPPUNIT_ASSERT(contains(exit.message, "out of memory"));
  }

  void testCreateFailureQuotesRunc() {
    if (!canRun()) return;
    try {
      start("fail", {"/no/such/program"});
      CPPUNIT_FAIL("launchShim succeeded for a missing program");
    } catch (const shoal::sdk::Error& e) {
      CPPUNIT_ASSERT_EQUAL(SHOAL_EIO, e.code());
      const std::string message = e.what();
      CPPUNIT_ASSERT_MESSAGE(message, contains(message, "runc run " + ids_.back()));
      CPPUNIT_ASSERT_MESSAGE(message, contains(message, "/no/such/program"));
      std::string lower = message;
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      CPPUNIT_ASSERT_MESSAGE(message, contains(lower, "no such file or directory"));
    }
    const ContainerStatus s = readStatus(stateDir(ids_.back()));
    CPPUNIT_ASSERT(s.exit);
    CPPUNIT_ASSERT_EQUAL(127, s.exit->exitCode);
    CPPUNIT_ASSERT_EQUAL(int64_t{0}, s.startedNs);
  }

  void testShimOutlivesItsLauncher() {
    if (!canRun()) return;
    const std::string id =
        prepare("orphan", {"sh", "-c", "trap 'exit 0' TERM; sleep 86400 & wait"});
    int report[2];
    CPPUNIT_ASSERT_EQUAL(0, pipe(report));
    const pid_t launcher = fork();
    if (launcher == 0) {
      close(report[0]);
      int pid = -1;
      try {
        pid = launchShim(options(id));
      } catch (...) {
      }
      (void)!write(report[1], &pid, sizeof pid);
      _exit(0);
    }
    close(report[1]);
    int pid = -1;
    CPPUNIT_ASSERT_EQUAL(static_cast<ssize_t>(sizeof pid), read(report[0], &pid, sizeof pid));
    close(report[0]);
    int status = 0;
    CPPUNIT_ASSERT_EQUAL(launcher, waitpid(launcher, &status, 0));
    CPPUNIT_ASSERT(pid > 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    // The launcher is gone; the shim and the container are not.
    ContainerStatus s = readStatus(stateDir(id));
    CPPUNIT_ASSERT(s.shimAlive);
    CPPUNIT_ASSERT_EQUAL(pid, s.pid);
    CPPUNIT_ASSERT(!s.exit);
    CPPUNIT_ASSERT_EQUAL(0, kill(pid, 0));
    CPPUNIT_ASSERT(contains(runc_->state(id), "\"running\""));
    // The container's init is the shim's child (subreaper), the shim nobody's we know.
    const std::string stat = readWholeFile("/proc/" + std::to_string(pid) + "/stat");
    const pid_t initParent =
        static_cast<pid_t>(std::atoi(stat.substr(stat.rfind(')') + 4).c_str()));
    CPPUNIT_ASSERT_EQUAL(shimPidOf(stateDir(id)), initParent);
    runc_->kill(id, SIGTERM);
    const ExitInfo exit = waitExit(id);
    CPPUNIT_ASSERT_EQUAL(0, exit.exitCode);
    waitShimGone(id);
  }

  void testExitWatcherAcrossARestartAndAShimDeath() {
    if (!canRun()) return;
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::pair<std::string, ExitInfo>> exits;
    auto onExit = [&](const std::string& id, const ExitInfo& exit) {
      std::lock_guard<std::mutex> lock(mu);
      exits.emplace_back(id, exit);
      cv.notify_all();
    };
    auto waitFor = [&](std::size_t n, int seconds) {
      std::unique_lock<std::mutex> lock(mu);
      return cv.wait_for(lock, std::chrono::seconds(seconds), [&] { return exits.size() >= n; });
    };
    const std::string later = start("later", {"sh", "-c", "sleep 1; exit 4"});
    const std::string done = start("done", {"sh", "-c", "exit 5"});
    const std::string victim = start("victim", {"sleep", "1000"});
    waitExit(done);
    {
      // shoald before its restart: watching, then gone before `later` exits.
      ExitWatcher before(onExit);
      before.watch(later, stateDir(later));
    }
    CPPUNIT_ASSERT(exits.empty());
    ExitWatcher after(onExit);
    after.watch(done, stateDir(done));  // exited while nobody watched: reported at once
    CPPUNIT_ASSERT(waitFor(1, 5));
    CPPUNIT_ASSERT_EQUAL(done, exits[0].first);
    CPPUNIT_ASSERT_EQUAL(5, exits[0].second.exitCode);
    after.watch(later, stateDir(later));
    after.watch(victim, stateDir(victim));
    CPPUNIT_ASSERT(waitFor(2, 10));
    CPPUNIT_ASSERT_EQUAL(later, exits[1].first);
    CPPUNIT_ASSERT_EQUAL(4, exits[1].second.exitCode);
    // A shim killed outright records nothing; the watcher says so.
    kill(shimPidOf(stateDir(victim)), SIGKILL);
    CPPUNIT_ASSERT(waitFor(3, 5));
    CPPUNIT_ASSERT_EQUAL(victim, exits[2].first);
    CPPUNIT_ASSERT_EQUAL(255, exits[2].second.exitCode);
    CPPUNIT_ASSERT(contains(exits[2].second.message, "died without recording"));
  }

  void testLogsRotateKeepingMaxFiles() {
    if (!canRun()) return;
    const std::string id = start(
        "rotate", {"sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done"}, {},
        [](ShimOptions& o) {
          o.logMaxBytes = 4096;
          o.logMaxFiles = 3;
        });
    CPPUNIT_ASSERT_EQUAL(0, waitExit(id).exitCode);
    const std::string log = stateDir(id) + "/container.log";
    CPPUNIT_ASSERT(fs::exists(log));
    CPPUNIT_ASSERT(fs::exists(log + ".1"));
    CPPUNIT_ASSERT(fs::exists(log + ".2"));
    CPPUNIT_ASSERT(!fs::exists(log + ".3"));
    for (const std::string& f : {log, log + ".1", log + ".2"}) {
      CPPUNIT_ASSERT(fs::file_size(f) <= 4096);
    }
    const Strings lines = linesOf(readLogs(stateDir(id), -1, 0), "stdout");
    CPPUNIT_ASSERT(lines.size() > 100 && lines.size() < 2000);
    CPPUNIT_ASSERT_EQUAL(std::string("line-1999"), lines.back());
    const int first = std::atoi(lines.front().c_str() + 5);
    for (std::size_t i = 0; i < lines.size(); ++i) {
      CPPUNIT_ASSERT_EQUAL("line-" + std::to_string(first + static_cast<int>(i)), lines[i]);
    }
    const std::vector<LogRecord> tail = readLogs(stateDir(id), 5, 0);
    CPPUNIT_ASSERT_EQUAL(std::size_t{5}, tail.size());
    CPPUNIT_ASSERT_EQUAL(std::string("line-1995"), tail[0].line);
  }

  void testExecReturnsExitCodeAndTimesOut() {
    if (!canRun()) return;
    const std::string id = start("exec", {"sleep", "1000"}, [](TaskSpec& t) { t.env = {"X=7"}; });
    const int pid = readStatus(stateDir(id)).pid;
    // Nothing of the shim's or the plugin's leaks into the container.
    Strings fds;
    for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
      fds.push_back(e.path().filename());
    }
    std::sort(fds.begin(), fds.end());
    CPPUNIT_ASSERT(fds == Strings({"0", "1", "2"}));
    // A health check: the container's env, its exit code and output.
    ExecResult r = runc_->exec(id, {"sh", "-c", "echo ok $X; echo err >&2; exit 3"}, 10000);
    CPPUNIT_ASSERT(!r.timedOut);
    CPPUNIT_ASSERT_EQUAL(3, r.exitCode);
    // runc copies the process's stdout and stderr through a pipe each: their order is not kept.
    CPPUNIT_ASSERT_MESSAGE(r.output, r.output == "ok 7\nerr\n" || r.output == "err\nok 7\n");
    CPPUNIT_ASSERT_EQUAL(0, runc_->exec(id, {"true"}, 10000).exitCode);
    // One that outlives its timeout is killed.
    const int64_t begin = monotonicNs();
    r = runc_->exec(id, {"sh", "-c", "echo started; sleep 30"}, 500);
    const int64_t tookMs = (monotonicNs() - begin) / 1000000;
    CPPUNIT_ASSERT(r.timedOut);
    CPPUNIT_ASSERT_EQUAL(-1, r.exitCode);
    CPPUNIT_ASSERT_MESSAGE(std::to_string(tookMs), tookMs >= 500 && tookMs < 5000);
    // Only the init is left in the container's cgroup.
    const std::string procs = "/sys/fs/cgroup/pids/" + cgroupParent() + "/" + id + "/cgroup.procs";
    std::string left;
    for (int i = 0; i < 100; ++i) {
      left = readWholeFile(procs);
      if (left == std::to_string(pid) + "\n") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    CPPUNIT_ASSERT_EQUAL(std::to_string(pid) + "\n", left);
    // runc's own failure is an error, not an exit code.
    try {
      runc_->exec(id, {"/no/such/tool"}, 10000);
      CPPUNIT_FAIL("exec of a missing tool");
    } catch (const shoal::sdk::Error& e) {
      CPPUNIT_ASSERT_MESSAGE(e.what(), contains(e.what(), "runc exec " + id));
    }
    runc_->kill(id, SIGKILL);
    waitExit(id);
  }

  void testLimitsApplyAndRemoveLeavesNothing() {
    if (!canRun()) return;
    const bool swap = shoal::runc::hostLimitsSwap();
    const std::string id = start("limits", {"sleep", "1000"}, [&](TaskSpec& t) {
      t.memoryLimitBytes = 64 << 20;
      if (swap) t.memorySwapBytes = 128 << 20;
      t.nanoCpus = 500000000;
      t.pidsLimit = 20;
    });
    const std::string cg = "/" + cgroupParent() + "/" + id;
    CPPUNIT_ASSERT_EQUAL(std::string("67108864\n"),
                         readWholeFile("/sys/fs/cgroup/memory" + cg + "/memory.limit_in_bytes"));
    if (swap) {  // this machine's kernel accounts swap (PLATFORM.md: cgroup v1 memsw)
      CPPUNIT_ASSERT_EQUAL(
          std::string("134217728\n"),
          readWholeFile("/sys/fs/cgroup/memory" + cg + "/memory.memsw.limit_in_bytes"));
    }
    CPPUNIT_ASSERT_EQUAL(std::string("50000\n"),
                         readWholeFile("/sys/fs/cgroup/cpu" + cg + "/cpu.cfs_quota_us"));
    CPPUNIT_ASSERT_EQUAL(std::string("20\n"),
                         readWholeFile("/sys/fs/cgroup/pids" + cg + "/pids.max"));
    // Busy with a running container: no delete without force.
    try {
      runc_->remove(id);
      CPPUNIT_FAIL("deleted a running container");
    } catch (const shoal::sdk::Error& e) {
      CPPUNIT_ASSERT_EQUAL(SHOAL_EBUSY, e.code());
      CPPUNIT_ASSERT(contains(e.what(), "runc delete " + id));
    }
    const pid_t shim = shimPidOf(stateDir(id));
    runc_->kill(id, SIGKILL);
    waitExit(id);
    // A late kill is EBUSY with runc; crun signals nothing and says nothing.
    try {
      runc_->kill(id, SIGKILL);
      CPPUNIT_ASSERT_MESSAGE("runc killed a stopped container", contains(ociRuntime(), "crun"));
    } catch (const shoal::sdk::Error& e) {
      CPPUNIT_ASSERT_EQUAL_MESSAGE(e.what(), SHOAL_EBUSY, e.code());
    }
    try {
      runc_->exec(id, {"true"}, 1000);
      CPPUNIT_FAIL("exec in a stopped container");
    } catch (const shoal::sdk::Error& e) {
      CPPUNIT_ASSERT_EQUAL_MESSAGE(e.what(), SHOAL_EBUSY, e.code());
    }
    runc_->remove(id);
    try {
      runc_->state(id);
      CPPUNIT_FAIL("runc still knows the container");
    } catch (const shoal::sdk::Error& e) {
      CPPUNIT_ASSERT_EQUAL(SHOAL_ENOENT, e.code());
    }
    CPPUNIT_ASSERT(!fs::exists(runcRoot_ + "/" + id));
    for (const auto& hierarchy : fs::directory_iterator("/sys/fs/cgroup")) {
      CPPUNIT_ASSERT_MESSAGE(hierarchy.path().string(),
                             !fs::exists(hierarchy.path().string() + cg));
    }
    waitShimGone(id);
    CPPUNIT_ASSERT_EQUAL(uint64_t{0}, processStartTime(shim));
    const std::string mounts = readWholeFile("/proc/self/mountinfo");
    CPPUNIT_ASSERT(!contains(mounts, tmp_->path()));
    CPPUNIT_ASSERT(removeStateDir(stateDir(id)));
    runc_->remove(id, true);  // already gone: not an error with force
  }

  void testStartLatencyAndShimMemory() {
    if (!canRun()) return;
    std::vector<double> ms;
    std::vector<int64_t> rss;
    std::vector<std::string> ids;
    for (int i = 0; i < 20; ++i) {
      const std::string id = prepare("lat" + std::to_string(i), {"sleep", "1000"},
                                     [](TaskSpec& t) { t.memoryLimitBytes = 64 << 20; });
      const int64_t begin = monotonicNs();
      launchShim(options(id));
      ms.push_back(static_cast<double>(monotonicNs() - begin) / 1e6);
      ids.push_back(id);
    }
    for (const std::string& id : ids) rss.push_back(rssKiB(shimPidOf(stateDir(id))));
    std::sort(ms.begin(), ms.end());
    std::sort(rss.begin(), rss.end());
    std::cerr << "\n  a start through the shim (runc run): median " << ms[ms.size() / 2]
              << " ms (min " << ms.front() << ", max " << ms.back() << "); shim RSS: median "
              << rss[rss.size() / 2] << " KiB (max " << rss.back() << ")\n  ";
    for (const std::string& id : ids) runc_->kill(id, SIGKILL);
    const int64_t begin = monotonicNs();
    for (const std::string& id : ids) {
      waitExit(id);
      runc_->remove(id);
    }
    std::cerr << "exit + runc delete of 20: " << (monotonicNs() - begin) / 1000000 << " ms ";
    CPPUNIT_ASSERT(rss.back() > 0 && rss.back() < 25 * 1024);
  }

 private:
  std::string stateDir(const std::string& id) const { return tmp_->file("state/" + id); }

  ShimOptions options(const std::string& id) const {
    ShimOptions o;
    o.shimPath = SHOAL_BIN_DIR "/shoal-shim";
    o.runtimePath = ociRuntime();
    o.runtimeRoot = runcRoot_;
    o.id = id;
    o.bundleDir = tmp_->file("bundles/" + id);
    o.cgroupsPath = "/" + cgroupParent() + "/" + id;
    o.stateDir = stateDir(id);
    o.logMaxBytes = 1 << 20;
    o.logMaxFiles = 3;
    return o;
  }

  // Writes the bundle of a new container running `args`; returns its id.
  std::string prepare(const std::string& name, const Strings& args,
                      const std::function<void(TaskSpec&)>& tweak = {}) {
    TaskSpec t;
    t.id = "rt" + std::to_string(getpid()) + "-" + name;
    t.image = "busybox";
    t.command = args;
    if (tweak) tweak(t);
    ids_.push_back(t.id);
    const std::string bundle = tmp_->file("bundles/" + t.id);
    fs::create_directories(bundle);
    tmp_->write("bundles/" + t.id + "/config.json",
                buildOciConfig(t, ImageDefaults{}, rootfs_, "/" + cgroupParent() + "/" + t.id));
    return t.id;
  }

  std::string start(const std::string& name, const Strings& args,
                    const std::function<void(TaskSpec&)>& tweak = {},
                    const std::function<void(ShimOptions&)>& tweakOptions = {}) {
    const std::string id = prepare(name, args, tweak);
    ShimOptions o = options(id);
    if (tweakOptions) tweakOptions(o);
    startedNs_ = nowNs();
    const int pid = launchShim(o);
    CPPUNIT_ASSERT(pid > 0);
    return id;
  }

  ExitInfo waitExit(const std::string& id, int timeoutMs = 20000) {
    const int64_t deadline = monotonicNs() + int64_t{timeoutMs} * 1000000;
    while (monotonicNs() < deadline) {
      const ContainerStatus s = readStatus(stateDir(id));
      if (s.exit) return *s.exit;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CPPUNIT_FAIL("no exit recorded for " + id);
    return {};
  }

  void waitShimGone(const std::string& id) {
    for (int i = 0; i < 200 && readStatus(stateDir(id)).shimAlive; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CPPUNIT_ASSERT(!readStatus(stateDir(id)).shimAlive);
  }

  std::unique_ptr<TempDir> tmp_;
  std::string rootfs_, runcRoot_;
  std::unique_ptr<Runc> runc_;
  std::vector<std::string> ids_;
  int64_t startedNs_ = 0;
};

CPPUNIT_TEST_SUITE_REGISTRATION(RuncShimTest);
