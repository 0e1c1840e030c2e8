// shoald as a user runs it: starts with every built-in plugin, answers `shoal info` and
// `shoal plugin ls`, refuses bad configs and a second instance, and stops cleanly on
// SIGTERM/SIGINT leaving no socket or pidfile behind.
#include <cppunit/extensions/HelperMacros.h>

#include <sys/stat.h>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <memory>
#include <sstream>
#include <string>

#include "tests/integration/daemon_harness.h"

using shoal::test::Daemon;
using shoal::test::RunResult;
using shoal::test::TempDir;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

bool exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

std::string shoald() { return std::string(SHOAL_BIN_DIR) + "/shoald"; }

}  // namespace

namespace {

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string countLines(const std::string& s) {
  return std::to_string(std::count(s.begin(), s.end(), '\n'));
}

// The rest of the line after `label` in `text` ("" when absent).
std::string field(const std::string& text, const std::string& label) {
  auto at = text.find(label);
  if (at == std::string::npos) return "";
  at += label.size();
  return text.substr(at, text.find('\n', at) - at);
}

}  // namespace

class DaemonTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(DaemonTest);
  CPPUNIT_TEST(testStartsWithAllBuiltInPluginsAndAnswers);
  CPPUNIT_TEST(testSigtermStopsCleanly);
  CPPUNIT_TEST(testSigintStopsCleanly);
  CPPUNIT_TEST(testSecondDaemonIsRefused);
  CPPUNIT_TEST(testBadPluginIsReportedDaemonRuns);
  CPPUNIT_TEST(testMissingRequiredKindStopsStartup);
  CPPUNIT_TEST(testCheckConfigReportsFileLineKey);
  CPPUNIT_TEST(testCheckConfigAcceptsShippedFile);
  CPPUNIT_TEST(testVersionAndHelp);
  CPPUNIT_TEST(testUnknownOptionIsUsageError);
  CPPUNIT_TEST(testSwarmInitNodeLsAndRestart);
  CPPUNIT_TEST(testCorruptSwarmStateStopsStartup);
  CPPUNIT_TEST(testWorkerJoinsHeartbeatsAndLeaves);
  CPPUNIT_TEST(testAutolockedManagerStaysLockedUntilUnlocked);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testStartsWithAllBuiltInPluginsAndAnswers() {
    TempDir dir;
    Daemon d(dir, {SHOAL_PLUGIN_BUILD_DIR});
    CPPUNIT_ASSERT_MESSAGE(d.process().log(), d.waitReady());
    RunResult info = d.shoal({"info"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(info.err, 0, info.exitCode);
    CPPUNIT_ASSERT_MESSAGE(info.out, contains(info.out, "  Scheduler: scheduler-spread\n"));
    CPPUNIT_ASSERT_MESSAGE(info.out, contains(info.out, "  Runtime: runtime-runc runtime-sim\n"));
    CPPUNIT_ASSERT_MESSAGE(info.out, contains(info.out, "  Network: network-overlay\n"));
    CPPUNIT_ASSERT_MESSAGE(info.out, contains(info.out, "  Secrets: secrets-tmpfs\n"));
    CPPUNIT_ASSERT_MESSAGE(info.out, contains(info.out, "  Storage: storage-local\n"));
    CPPUNIT_ASSERT_MESSAGE(info.out, contains(info.out, "Shoal Root Dir: " + dir.file("data")));

    RunResult ls = d.shoal({"plugin", "ls", "--format", "json"});
    CPPUNIT_ASSERT_EQUAL(0, ls.exitCode);
    Poco::JSON::Parser p;
    auto arr = p.parse(ls.out).extract<Poco::JSON::Array::Ptr>();
    CPPUNIT_ASSERT_EQUAL(std::size_t(6), arr->size());
    for (std::size_t i = 0; i < arr->size(); ++i) {
      auto o = arr->getObject(static_cast<unsigned>(i));
      CPPUNIT_ASSERT_EQUAL(std::string("1.2"), o->getValue<std::string>("abi"));
      CPPUNIT_ASSERT_EQUAL(std::string("0.1.0"), o->getValue<std::string>("version"));
    }
    RunResult table = d.shoal({"plugin", "ls"});
    CPPUNIT_ASSERT_MESSAGE(table.out,
                           contains(table.out, "KIND        NAME               VERSION   ABI\n"));
    CPPUNIT_ASSERT_MESSAGE(table.out,
                           contains(table.out, "runtime     runtime-runc       0.1.0     1.2\n"));
    CPPUNIT_ASSERT(table.err.empty());

    struct stat st {};
    CPPUNIT_ASSERT_EQUAL(0, lstat(d.socket().c_str(), &st));
    CPPUNIT_ASSERT_EQUAL(0600u, static_cast<unsigned>(st.st_mode & 0777));
    CPPUNIT_ASSERT_EQUAL(0, stat(dir.file("data").c_str(), &st));
    CPPUNIT_ASSERT_EQUAL(0700u, static_cast<unsigned>(st.st_mode & 0777));
    CPPUNIT_ASSERT_EQUAL(std::to_string(d.process().pid()) + "\n",
                         shoal::test::readFile(d.pidFile()));
  }

  void testSigtermStopsCleanly() { stopsCleanlyOn(SIGTERM); }
  void testSigintStopsCleanly() { stopsCleanlyOn(SIGINT); }

  void testSecondDaemonIsRefused() {
    TempDir dir;
    Daemon first(dir, {SHOAL_PLUGIN_BUILD_DIR});
    CPPUNIT_ASSERT_MESSAGE(first.process().log(), first.waitReady());
    TempDir other;
    RunResult second = shoal::test::runCommand(
        {shoald(), "--data-root", other.file("data"), "--socket", other.file("s.sock"), "--pidfile",
         first.pidFile(), "--plugin-dir", SHOAL_PLUGIN_BUILD_DIR},
        std::chrono::seconds(30));
    CPPUNIT_ASSERT(second.exitCode != 0);
    CPPUNIT_ASSERT_MESSAGE(second.err,
                           contains(second.err, "another shoald is already running (pid " +
                                                    std::to_string(first.process().pid())));
    // The first one is unharmed.
    CPPUNIT_ASSERT_EQUAL(0, first.shoal({"info"}).exitCode);
    CPPUNIT_ASSERT(exists(first.pidFile()));
  }

  void testBadPluginIsReportedDaemonRuns() {
    TempDir dir;
    Daemon d(dir, {SHOAL_PLUGIN_BUILD_DIR, std::string(SHOAL_FIXTURE_DIR) + "/bad-major"});
    CPPUNIT_ASSERT_MESSAGE(d.process().log(), d.waitReady());
    RunResult ls = d.shoal({"plugin", "ls"});
    CPPUNIT_ASSERT_EQUAL(0, ls.exitCode);
    CPPUNIT_ASSERT_MESSAGE(ls.err, contains(ls.err, "fixture-bad-major.so was refused"));
    CPPUNIT_ASSERT_MESSAGE(ls.err, contains(ls.err, "built for Shoal plugin ABI 2."));
    CPPUNIT_ASSERT_MESSAGE(d.process().log(), contains(d.process().log(), "plugin refused"));
  }

  void testMissingRequiredKindStopsStartup() {
    TempDir dir;
    // Only a runtime fixture: the default required kinds include the scheduler.
    Daemon d(dir, {std::string(SHOAL_FIXTURE_DIR) + "/good"});
    CPPUNIT_ASSERT_EQUAL(70, d.process().wait(std::chrono::seconds(20)));
    CPPUNIT_ASSERT_MESSAGE(
        d.process().log(),
        contains(d.process().log(), "no plugin loaded for required kind(s): scheduler"));
    CPPUNIT_ASSERT(!exists(d.socket()));
    CPPUNIT_ASSERT(!exists(d.pidFile()));
  }

  void testCheckConfigReportsFileLineKey() {
    TempDir dir;
    std::string cfg = dir.write("bad.yaml", "data_root: /x\nlog:\n  level: loud\n");
    RunResult r = shoal::test::runCommand({shoald(), "--check-config", "--config", cfg});
    CPPUNIT_ASSERT_EQUAL(78, r.exitCode);
    CPPUNIT_ASSERT_MESSAGE(r.err,
                           contains(r.err, cfg + ":3:10: log.level: unknown log level \"loud\""));
    cfg = dir.write("unknown.yaml", "plugins:\n  dir: [/x]\n");
    r = shoal::test::runCommand({shoald(), "--config", cfg, "--socket", dir.file("s.sock"),
                                 "--pidfile", dir.file("p.pid")});
    CPPUNIT_ASSERT_EQUAL(78, r.exitCode);
    CPPUNIT_ASSERT_MESSAGE(r.err,
                           contains(r.err, cfg + ":2:3: plugins.dir: unknown key in plugins"));
    CPPUNIT_ASSERT(!exists(dir.file("s.sock")));
    r = shoal::test::runCommand({shoald(), "--check-config", "--config", dir.file("missing.yaml")});
    CPPUNIT_ASSERT_EQUAL(78, r.exitCode);
    CPPUNIT_ASSERT_MESSAGE(r.err, contains(r.err, dir.file("missing.yaml")));
  }

  void testCheckConfigAcceptsShippedFile() {
    std::string cfg = std::string(SHOAL_SOURCE_DIR) + "/conf/shoald.yaml";
    RunResult r = shoal::test::runCommand({shoald(), "--check-config", "--config", cfg});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(r.err, 0, r.exitCode);
    CPPUNIT_ASSERT_EQUAL("configuration OK: " + cfg + "\n", r.out);
  }

  void testVersionAndHelp() {
    RunResult r = shoal::test::runCommand({shoald(), "--version"});
    CPPUNIT_ASSERT_EQUAL(0, r.exitCode);
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "shoald version 0.1.0 (plugin ABI 1.2)"));
    r = shoal::test::runCommand({shoald(), "--help"});
    CPPUNIT_ASSERT_EQUAL(0, r.exitCode);
    for (const char* opt :
         {"--config", "--data-root", "--check-config", "--socket", "--plugin-dir"}) {
      CPPUNIT_ASSERT_MESSAGE(opt, contains(r.out, opt));
    }
  }

  // The seeds' first steps on one node: init, node ls, join tokens; the swarm survives a
  // restart of the daemon.
  void testSwarmInitNodeLsAndRestart() {
    TempDir dir;
    std::string nodeId;
    {
      Daemon d(dir, {SHOAL_PLUGIN_BUILD_DIR});
      CPPUNIT_ASSERT_MESSAGE(d.process().log(), d.waitReady());
      RunResult before = d.shoal({"node", "ls"});
      CPPUNIT_ASSERT_EQUAL(1, before.exitCode);
      CPPUNIT_ASSERT_MESSAGE(before.err, contains(before.err, "This node is not a swarm manager"));
      CPPUNIT_ASSERT(contains(d.shoal({"info"}).out, "Swarm: inactive"));

      RunResult init = d.shoal({"swarm", "init", "--listen-addr", "127.0.0.1:0"});
      CPPUNIT_ASSERT_EQUAL_MESSAGE(init.err, 0, init.exitCode);
      CPPUNIT_ASSERT(contains(init.out, "Swarm initialized: current node ("));
      CPPUNIT_ASSERT(contains(init.out, ") is now a manager."));
      CPPUNIT_ASSERT(contains(init.out, "    shoal swarm join --token SWMTKN-1-"));
      CPPUNIT_ASSERT(contains(init.out, "run 'shoal swarm join-token manager'"));
      auto open = init.out.find('(');
      nodeId = init.out.substr(open + 1, init.out.find(')') - open - 1);
      CPPUNIT_ASSERT_EQUAL(std::size_t{25}, nodeId.size());

      RunResult ls = d.shoal({"node", "ls"});
      CPPUNIT_ASSERT_EQUAL_MESSAGE(ls.err, 0, ls.exitCode);
      CPPUNIT_ASSERT(contains(ls.out, "ID"));
      CPPUNIT_ASSERT(contains(ls.out, "MANAGER STATUS"));
      CPPUNIT_ASSERT(contains(ls.out, nodeId + " *"));
      // The node's description lists its plugins (Docker's Engine.Plugins).
      const std::string self = d.shoal({"node", "inspect", "self"}).out;
      CPPUNIT_ASSERT_MESSAGE(self, contains(self, "\"Name\": \"runtime-sim\""));
      CPPUNIT_ASSERT(contains(self, "\"Type\": \"scheduler\""));
      CPPUNIT_ASSERT(contains(ls.out, "Ready"));
      CPPUNIT_ASSERT(contains(ls.out, "Active"));
      CPPUNIT_ASSERT(contains(ls.out, "Leader"));
      CPPUNIT_ASSERT_EQUAL(nodeId + "\n", d.shoal({"node", "ls", "-q"}).out);

      RunResult info = d.shoal({"info"});
      CPPUNIT_ASSERT(contains(info.out, "Swarm: active"));
      CPPUNIT_ASSERT(contains(info.out, "NodeID: " + nodeId));
      CPPUNIT_ASSERT(contains(info.out, "Is Manager: true"));
      CPPUNIT_ASSERT(contains(info.out, "Managers: 1"));

      RunResult token = d.shoal({"swarm", "join-token", "-q", "worker"});
      CPPUNIT_ASSERT_EQUAL(0, token.exitCode);
      CPPUNIT_ASSERT(token.out.starts_with("SWMTKN-1-"));
      RunResult rotated = d.shoal({"swarm", "join-token", "--rotate", "worker"});
      CPPUNIT_ASSERT(contains(rotated.out, "Successfully rotated worker join token."));
      CPPUNIT_ASSERT(!contains(rotated.out, token.out.substr(0, token.out.size() - 1)));
      RunResult badRole = d.shoal({"swarm", "join-token", "admin"});
      CPPUNIT_ASSERT(badRole.exitCode != 0);
      CPPUNIT_ASSERT(contains(badRole.err, "unknown role admin"));

      RunResult upd = d.shoal({"node", "update", "--availability", "pause", "--label-add", "zone=a",
                               "--label-add", "ssd", "self"});
      CPPUNIT_ASSERT_EQUAL_MESSAGE(upd.err, 0, upd.exitCode);
      RunResult pretty = d.shoal({"node", "inspect", "--pretty", "self"});
      CPPUNIT_ASSERT(contains(pretty.out, "ID:                     " + nodeId));
      CPPUNIT_ASSERT(contains(pretty.out, " - zone=a"));
      CPPUNIT_ASSERT(contains(pretty.out, " Availability:          Pause"));
      CPPUNIT_ASSERT(contains(d.shoal({"node", "ls"}).out, "Pause"));
      RunResult demote = d.shoal({"node", "demote", nodeId});
      CPPUNIT_ASSERT_EQUAL(1, demote.exitCode);
      CPPUNIT_ASSERT(contains(demote.err, "attempting to demote the last manager"));

      RunResult again = d.shoal({"swarm", "init"});
      CPPUNIT_ASSERT_EQUAL(1, again.exitCode);
      CPPUNIT_ASSERT(contains(again.err, "already part of a swarm"));
      RunResult badAddr = d.shoal({"swarm", "init", "--listen-addr", "nowhere:1"});
      CPPUNIT_ASSERT(contains(badAddr.err, "already part of a swarm") ||
                     contains(badAddr.err, "not an IPv4 address"));

      d.process().signal(SIGTERM);
      CPPUNIT_ASSERT_EQUAL(0, d.process().wait(std::chrono::seconds(20)));
    }
    Daemon d(dir, {SHOAL_PLUGIN_BUILD_DIR});
    CPPUNIT_ASSERT_MESSAGE(d.process().log(), d.waitReady());
    RunResult ls = d.shoal({"node", "ls"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(ls.err, 0, ls.exitCode);
    CPPUNIT_ASSERT(contains(ls.out, nodeId + " *"));
    CPPUNIT_ASSERT(contains(ls.out, "Leader"));
    CPPUNIT_ASSERT(contains(ls.out, "Pause"));  // the update survived the restart

    RunResult refuse = d.shoal({"swarm", "leave"});
    CPPUNIT_ASSERT_EQUAL(1, refuse.exitCode);
    CPPUNIT_ASSERT(contains(refuse.err, "Use `--force`"));
    RunResult leave = d.shoal({"swarm", "leave", "--force"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(leave.err, 0, leave.exitCode);
    CPPUNIT_ASSERT(contains(leave.out, "Node left the swarm."));
    CPPUNIT_ASSERT(contains(d.shoal({"info"}).out, "Swarm: inactive"));
  }

  // swarm init --autolock prints the unlock key; a restarted shoald is locked and serves no
  // manager command until `swarm unlock` reads the right key from standard input.
  void testAutolockedManagerStaysLockedUntilUnlocked() {
    TempDir dir;
    std::string key;
    {
      Daemon d(dir, {SHOAL_PLUGIN_BUILD_DIR});
      CPPUNIT_ASSERT(d.waitReady());
      RunResult init = d.shoal({"swarm", "init", "--listen-addr", "127.0.0.1:0", "--autolock"});
      CPPUNIT_ASSERT_EQUAL_MESSAGE(init.err, 0, init.exitCode);
      CPPUNIT_ASSERT(contains(init.out, "shoal swarm unlock"));
      const auto at = init.out.find("SWMKEY-1-");
      CPPUNIT_ASSERT(at != std::string::npos);
      key = init.out.substr(at, init.out.find('\n', at) - at);
      CPPUNIT_ASSERT_EQUAL(key, trim(d.shoal({"swarm", "unlock-key", "-q"}).out));
      d.process().signal(SIGTERM);
      CPPUNIT_ASSERT_EQUAL(0, d.process().wait(std::chrono::seconds(20)));
    }
    Daemon d(dir, {SHOAL_PLUGIN_BUILD_DIR});
    CPPUNIT_ASSERT(d.waitReady());
    CPPUNIT_ASSERT(contains(d.shoal({"info"}).out, "Swarm: locked"));
    RunResult ls = d.shoal({"node", "ls"});
    CPPUNIT_ASSERT_EQUAL(1, ls.exitCode);
    CPPUNIT_ASSERT_MESSAGE(ls.err, contains(ls.err, "needs to be unlocked"));
    auto unlockWith = [&](const std::string& k) {
      return shoal::test::runCommand(
          {"sh", "-c", "printf '%s\\n' \"$1\" | \"$2\" -H \"unix://$3\" swarm unlock", "sh", k,
           std::string(SHOAL_BIN_DIR) + "/shoal", d.socket()});
    };
    RunResult none = d.shoal({"swarm", "unlock"});  // stdin is empty
    CPPUNIT_ASSERT(none.exitCode != 0);
    RunResult wrong = unlockWith("SWMKEY-1-" + std::string(43, 'A'));
    CPPUNIT_ASSERT_MESSAGE(wrong.err, wrong.exitCode != 0 && contains(wrong.err, "incorrect"));
    CPPUNIT_ASSERT(contains(d.shoal({"info"}).out, "Swarm: locked"));
    RunResult right = unlockWith(key);
    CPPUNIT_ASSERT_EQUAL_MESSAGE(right.err, 0, right.exitCode);
    CPPUNIT_ASSERT(contains(d.shoal({"info"}).out, "Swarm: active"));
    RunResult after = d.shoal({"node", "ls"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(after.err, 0, after.exitCode);
    CPPUNIT_ASSERT(contains(after.out, "Leader"));
  }

  void testCorruptSwarmStateStopsStartup() {
    TempDir dir;
    {
      Daemon d(dir, {SHOAL_PLUGIN_BUILD_DIR});
      CPPUNIT_ASSERT_MESSAGE(d.process().log(), d.waitReady());
      CPPUNIT_ASSERT_EQUAL(0, d.shoal({"swarm", "init", "--listen-addr", "127.0.0.1:0"}).exitCode);
      d.process().signal(SIGTERM);
      CPPUNIT_ASSERT_EQUAL(0, d.process().wait(std::chrono::seconds(20)));
    }
    dir.write("data/swarm/raft/CURRENT", "MANIFEST-777777\n");
    Daemon d(dir, {SHOAL_PLUGIN_BUILD_DIR});
    CPPUNIT_ASSERT(d.process().wait(std::chrono::seconds(20)) != 0);
    const std::string log = d.process().log();
    CPPUNIT_ASSERT_MESSAGE(log, contains(log, dir.file("data/swarm/raft")));
    CPPUNIT_ASSERT(!d.waitReady());
  }

  // Two daemons on loopback: one inits, the other joins as a worker with the token; the
  // manager sees it Ready, Down when it dies (within 3 heartbeat periods), Ready again when it
  // comes back; bad tokens, another swarm's token and an unreachable manager are refused.
  void testWorkerJoinsHeartbeatsAndLeaves() {
    TempDir mdir, wdir, odir;
    Daemon manager(mdir, {SHOAL_PLUGIN_BUILD_DIR});
    auto worker = std::make_unique<Daemon>(wdir, std::vector<std::string>{SHOAL_PLUGIN_BUILD_DIR});
    Daemon other(odir, {SHOAL_PLUGIN_BUILD_DIR});
    CPPUNIT_ASSERT(manager.waitReady() && worker->waitReady() && other.waitReady());
    RunResult init = manager.shoal(
        {"swarm", "init", "--listen-addr", "127.0.0.1:0", "--dispatcher-heartbeat", "1s"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(init.err, 0, init.exitCode);
    // The join command it prints is the one to run.
    const auto at = init.out.find("shoal swarm join --token ");
    CPPUNIT_ASSERT(at != std::string::npos);
    std::istringstream words(init.out.substr(at));
    std::string w1, w2, w3, w4, token, addr;
    words >> w1 >> w2 >> w3 >> w4 >> token >> addr;
    CPPUNIT_ASSERT(token.starts_with("SWMTKN-1-"));
    CPPUNIT_ASSERT(addr.starts_with("127.0.0.1:"));
    CPPUNIT_ASSERT_EQUAL(0,
                         other.shoal({"swarm", "init", "--listen-addr", "127.0.0.1:0"}).exitCode);
    const std::string otherToken = trim(other.shoal({"swarm", "join-token", "-q", "worker"}).out);

    auto joinWith = [&](const std::string& t, const std::string& a) {
      return worker->shoal({"swarm", "join", "--token", t, a});
    };
    // The same token with its last character changed (to one it is not).
    std::string changed = token;
    changed.back() = changed.back() == '0' ? '1' : '0';
    RunResult wrong = joinWith(changed, addr);
    CPPUNIT_ASSERT_EQUAL(1, wrong.exitCode);
    CPPUNIT_ASSERT_MESSAGE(wrong.err, contains(wrong.err, "A valid join token is necessary"));
    RunResult foreign = joinWith(otherToken, addr);
    CPPUNIT_ASSERT_MESSAGE(foreign.err, contains(foreign.err, "does not match the join token"));
    RunResult malformed = joinWith("SWMTKN-1-nope", addr);
    CPPUNIT_ASSERT_MESSAGE(malformed.err, contains(malformed.err, "invalid join token"));
    RunResult nobody = joinWith(token, "127.0.0.1:1");
    CPPUNIT_ASSERT_MESSAGE(nobody.err, contains(nobody.err, "cannot reach the node API"));
    // None of the failures left anything behind.
    CPPUNIT_ASSERT(contains(worker->shoal({"info"}).out, "Swarm: inactive"));
    CPPUNIT_ASSERT(!exists(wdir.file("data/swarm")));
    CPPUNIT_ASSERT_EQUAL(std::string("1"), countLines(manager.shoal({"node", "ls", "-q"}).out));

    RunResult joined = joinWith(token, addr);
    CPPUNIT_ASSERT_EQUAL_MESSAGE(joined.err, 0, joined.exitCode);
    CPPUNIT_ASSERT(contains(joined.out, "This node joined a swarm as a worker."));
    RunResult winfo = worker->shoal({"info"});
    CPPUNIT_ASSERT(contains(winfo.out, "Swarm: active"));
    CPPUNIT_ASSERT(contains(winfo.out, "Is Manager: false"));
    // A worker lists the managers it reports to (as Docker's info), not the cluster's counts.
    CPPUNIT_ASSERT_MESSAGE(winfo.out, contains(winfo.out, "Manager Addresses:\n   " + addr + "\n"));
    CPPUNIT_ASSERT(!contains(winfo.out, "Managers: "));
    const std::string workerId = field(winfo.out, "NodeID: ");
    RunResult wls = worker->shoal({"node", "ls"});
    CPPUNIT_ASSERT_EQUAL(1, wls.exitCode);
    CPPUNIT_ASSERT(contains(wls.err, "This node is not a swarm manager"));
    CPPUNIT_ASSERT(contains(joinWith(token, addr).err, "already part of a swarm"));

    auto rowOf = [&](const std::string& id) {
      std::istringstream in(manager.shoal({"node", "ls"}).out);
      std::string line;
      while (std::getline(in, line)) {
        if (line.rfind(id, 0) == 0) return line;
      }
      return std::string();
    };
    CPPUNIT_ASSERT(contains(rowOf(workerId), "Ready"));
    CPPUNIT_ASSERT(!contains(rowOf(workerId), "Leader"));

    // Killed: Down within 3 missed periods (1 s each), plus a little for the check itself.
    worker->process().signal(SIGKILL);
    worker->process().wait(std::chrono::seconds(5));
    const auto killed = std::chrono::steady_clock::now();
    CPPUNIT_ASSERT(shoal::test::eventually([&] { return contains(rowOf(workerId), "Down"); },
                                           std::chrono::seconds(10)));
    CPPUNIT_ASSERT(std::chrono::steady_clock::now() - killed < std::chrono::seconds(5));
    // Back: it resumes its membership from disk and reports Ready again.
    worker = std::make_unique<Daemon>(wdir, std::vector<std::string>{SHOAL_PLUGIN_BUILD_DIR});
    CPPUNIT_ASSERT(worker->waitReady());
    CPPUNIT_ASSERT(shoal::test::eventually([&] { return contains(rowOf(workerId), "Ready"); },
                                           std::chrono::seconds(10)));
    RunResult leave = worker->shoal({"swarm", "leave"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(leave.err, 0, leave.exitCode);
    CPPUNIT_ASSERT(contains(worker->shoal({"info"}).out, "Swarm: inactive"));
    CPPUNIT_ASSERT(shoal::test::eventually([&] { return contains(rowOf(workerId), "Down"); },
                                           std::chrono::seconds(10)));
  }

  void testUnknownOptionIsUsageError() {
    RunResult r = shoal::test::runCommand({shoald(), "--frobnicate"});
    CPPUNIT_ASSERT_EQUAL(64, r.exitCode);
    CPPUNIT_ASSERT_MESSAGE(r.err, contains(r.err, "frobnicate"));
  }

 private:
  void stopsCleanlyOn(int sig) {
    TempDir dir;
    Daemon d(dir, {SHOAL_PLUGIN_BUILD_DIR});
    CPPUNIT_ASSERT_MESSAGE(d.process().log(), d.waitReady());
    CPPUNIT_ASSERT(exists(d.socket()));
    CPPUNIT_ASSERT(exists(d.pidFile()));
    d.process().signal(sig);
    CPPUNIT_ASSERT_EQUAL_MESSAGE(d.process().log(), 0, d.process().wait(std::chrono::seconds(20)));
    CPPUNIT_ASSERT(!exists(d.socket()));
    CPPUNIT_ASSERT(!exists(d.pidFile()));
    std::string log = d.process().log();
    CPPUNIT_ASSERT_MESSAGE(log, contains(log, "msg=\"shutting down\""));
    CPPUNIT_ASSERT_MESSAGE(log, contains(log, "msg=\"API stopped\""));
    // A fresh daemon can start on the same paths right away.
    Daemon again(dir, {SHOAL_PLUGIN_BUILD_DIR});
    CPPUNIT_ASSERT_MESSAGE(again.process().log(), again.waitReady());
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(DaemonTest);
