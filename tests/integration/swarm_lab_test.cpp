// The seeds' walkthrough on a lab of real nodes (scripts/lab: a shoald per network and UTS
// namespace on a private underlay bridge), asserted step by step:
//  - init on node1, two workers join with the printed token, `node ls` shows 3 Ready, workers
//    cannot run manager commands;
//  - promote node2 and node3: they become Raft voters and show as Reachable;
//  - kill -9 the leader's shoald: the other two elect a leader, `node ls` and writes work there
//    within a few seconds; the killed node comes back and rejoins as Reachable;
//  - cut one manager off (nftables in its namespace): the majority keeps writing, the cut-off
//    one refuses with "no quorum"; heal: it catches up;
//  - a node joining with the manager token is a manager at once; demoting one makes it a
//    worker again; bad tokens and another swarm's token are refused and leave nothing; a
//    removed node's certificate is no longer accepted;
//  - `swarm ca --rotate`: every node is re-issued from a new root while the swarm keeps
//    working, the join tokens then name the new root, and restarted nodes come back on it.
// Needs root (namespaces), like every test in this label.
#include <cppunit/extensions/HelperMacros.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/lab.h"
#include "tests/support/netns_lab.h"
#include "tests/support/process.h"

using namespace std::chrono_literals;
using shoal::test::eventually;
using shoal::test::RunResult;

using shoal::test::contains;
using shoal::test::Lab;
using shoal::test::trim;

class SwarmLabTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(SwarmLabTest);
  CPPUNIT_TEST(testSeedsWalkthroughFailoverAndPartition);
  CPPUNIT_TEST(testManagerTokenDemotionAndRefusals);
  CPPUNIT_TEST(testRootCaRotation);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    CPPUNIT_ASSERT_MESSAGE("this test needs root, ip and nft (network namespaces)",
                           shoal::test::NetnsLab::available());
  }

  void testSeedsWalkthroughFailoverAndPartition() {
    Lab lab(3);
    const std::string addr1 = lab.ip("node1");
    RunResult init = lab.on("node1", {"swarm", "init", "--advertise-addr", addr1});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(init.err, 0, init.exitCode);
    CPPUNIT_ASSERT(contains(init.out, "shoal swarm join --token SWMTKN-1-"));
    CPPUNIT_ASSERT(contains(init.out, addr1 + ":2377"));
    const std::string token = trim(lab.on("node1", {"swarm", "join-token", "-q", "worker"}).out);
    for (const char* node : {"node2", "node3"}) {
      RunResult join = lab.on(node, {"swarm", "join", "--token", token, addr1 + ":2377"});
      CPPUNIT_ASSERT_EQUAL_MESSAGE(join.err, 0, join.exitCode);
      CPPUNIT_ASSERT(contains(join.out, "This node joined a swarm as a worker."));
    }
    // node ls on the manager: three nodes, all Ready; node1 is the Leader, marked as self.
    for (const char* node : {"node1", "node2", "node3"}) {
      CPPUNIT_ASSERT_MESSAGE(node, contains(lab.row("node1", node), "Ready"));
    }
    CPPUNIT_ASSERT(contains(lab.row("node1", "node1"), "Leader"));
    CPPUNIT_ASSERT(contains(lab.row("node1", "node1"), " * "));
    // Workers cannot run manager commands.
    RunResult denied = lab.on("node2", {"node", "ls"});
    CPPUNIT_ASSERT_EQUAL(1, denied.exitCode);
    CPPUNIT_ASSERT(contains(denied.err, "This node is not a swarm manager"));

    // Promote node2 (as Docker's `node update --role manager`) and node3 (`node promote`).
    CPPUNIT_ASSERT_EQUAL(
        0, lab.on("node1", {"node", "update", "--role", "manager", "node2"}).exitCode);
    CPPUNIT_ASSERT_EQUAL(0, lab.on("node1", {"node", "promote", "node3"}).exitCode);
    CPPUNIT_ASSERT_MESSAGE(lab.log("node2"),
                           eventually(
                               [&] {
                                 return contains(lab.row("node1", "node2"), "Reachable") &&
                                        contains(lab.row("node1", "node3"), "Reachable");
                               },
                               30s));
    // A promoted node is a manager: it answers manager commands itself.
    CPPUNIT_ASSERT(eventually([&] { return lab.on("node2", {"node", "ls"}).exitCode == 0; }, 10s));
    CPPUNIT_ASSERT(contains(lab.on("node3", {"info"}).out, "Is Manager: true"));
    CPPUNIT_ASSERT(contains(lab.on("node2", {"swarm", "join-token", "manager"}).out, "SWMTKN-1-"));
    CPPUNIT_ASSERT_EQUAL(
        0, lab.on("node1", {"node", "update", "--label-add", "before=kill", "node3"}).exitCode);

    // kill -9 the leader: the other two elect one and serve node ls and writes.
    CPPUNIT_ASSERT_EQUAL(0, lab.lab({"kill", "node1"}).exitCode);
    const auto killed = std::chrono::steady_clock::now();
    std::string survivor;
    const bool elected = eventually(
        [&] {
          for (const char* node : {"node2", "node3"}) {
            if (contains(lab.row(node, node), "Leader")) survivor = node;
          }
          return !survivor.empty();
        },
        15s);
    // On failure, both survivors' logs say how far their election got.
    CPPUNIT_ASSERT_MESSAGE("no leader 15 s after node1 was killed\n--- node2:\n" +
                               lab.log("node2") + "\n--- node3:\n" + lab.log("node3"),
                           elected);
    RunResult write = lab.on(survivor, {"node", "update", "--label-add", "after=kill", "node2"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(write.err, 0, write.exitCode);
    CPPUNIT_ASSERT(std::chrono::steady_clock::now() - killed < 10s);
    CPPUNIT_ASSERT(contains(lab.on(survivor, {"node", "inspect", "node3"}).out, "\"before\""));
    // The leader marks the dead manager Unreachable.
    CPPUNIT_ASSERT(
        eventually([&] { return contains(lab.row(survivor, "node1"), "Unreachable"); }, 15s));
    // With node1 down, demoting the other live manager would leave one reachable manager of
    // two: refused, naming the quorum.
    const std::string other = survivor == "node2" ? "node3" : "node2";
    RunResult risky = lab.on(survivor, {"node", "demote", other});
    CPPUNIT_ASSERT_MESSAGE(risky.err, risky.exitCode != 0 && contains(risky.err, "quorum"));

    // node1 comes back from its files and rejoins as a follower.
    CPPUNIT_ASSERT_EQUAL(0, lab.lab({"start", "node1"}).exitCode);
    CPPUNIT_ASSERT_MESSAGE(lab.log("node1"),
                           eventually(
                               [&] {
                                 return contains(lab.row(survivor, "node1"), "Reachable") &&
                                        !contains(lab.row(survivor, "node1"), "Unreachable");
                               },
                               20s));
    CPPUNIT_ASSERT(eventually(
        [&] {
          return contains(lab.on("node1", {"node", "inspect", "node2"}).out, "\"after\"");
        },
        10s));

    // Cut node3 off: the majority keeps working, node3 refuses writes.
    CPPUNIT_ASSERT_EQUAL(0, lab.lab({"partition", "node3"}).exitCode);
    std::string majority = survivor == "node3" ? "node1" : survivor;
    CPPUNIT_ASSERT(eventually(
        [&] {
          return lab.on(majority, {"node", "update", "--label-add", "cut=yes", "node1"}).exitCode ==
                 0;
        },
        20s));
    RunResult minority;
    CPPUNIT_ASSERT(eventually(
        [&] {
          minority = lab.on("node3", {"node", "update", "--label-add", "lost=yes", "node3"});
          return minority.exitCode != 0 && contains(minority.err, "no quorum");
        },
        20s));
    // Heal: node3 catches up with what the majority wrote meanwhile.
    CPPUNIT_ASSERT_EQUAL(0, lab.lab({"heal"}).exitCode);
    CPPUNIT_ASSERT(eventually(
        [&] {
          return contains(lab.on("node3", {"node", "inspect", "node1"}).out, "\"cut\"");
        },
        20s));
    CPPUNIT_ASSERT(!contains(lab.on(majority, {"node", "inspect", "node3"}).out, "\"lost\""));

    // A manager leaves: refused without --force; forced, it leaves Raft first, so the two
    // that stay keep their quorum and it shows as a Down worker.
    RunResult stay = lab.on("node3", {"swarm", "leave"});
    CPPUNIT_ASSERT(stay.exitCode != 0 && contains(stay.err, "leaves 2 managers out of 3"));
    RunResult left = lab.on("node3", {"swarm", "leave", "--force"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(left.err, 0, left.exitCode);
    CPPUNIT_ASSERT(contains(lab.on("node3", {"info"}).out, "Swarm: inactive"));
    CPPUNIT_ASSERT(eventually(
        [&] {
          return lab.on(majority, {"node", "update", "--label-add", "after=leave", "node1"})
                     .exitCode == 0;
        },
        15s));
    CPPUNIT_ASSERT(eventually(
        [&] {
          const std::string row = lab.row(majority, "node3");
          return contains(row, "Down") && !contains(row, "Reachable");
        },
        30s));
  }

  void testManagerTokenDemotionAndRefusals() {
    Lab lab(4);
    const std::string addr1 = lab.ip("node1") + ":2377";
    CPPUNIT_ASSERT_EQUAL(0, lab.on("node1", {"swarm", "init", "--advertise-addr", addr1}).exitCode);
    // node4 is another swarm: its tokens are refused by node1's swarm.
    CPPUNIT_ASSERT_EQUAL(
        0, lab.on("node4", {"swarm", "init", "--advertise-addr", lab.ip("node4")}).exitCode);
    const std::string foreign = trim(lab.on("node4", {"swarm", "join-token", "-q", "worker"}).out);
    RunResult f = lab.on("node3", {"swarm", "join", "--token", foreign, addr1});
    CPPUNIT_ASSERT_MESSAGE(f.err, f.exitCode != 0 && contains(f.err, "does not match"));
    RunResult bad = lab.on("node3", {"swarm", "join", "--token", "SWMTKN-1-x-y", addr1});
    CPPUNIT_ASSERT(bad.exitCode != 0 && contains(bad.err, "invalid join token"));
    CPPUNIT_ASSERT(contains(lab.on("node3", {"info"}).out, "Swarm: inactive"));

    // The manager token makes node2 a manager at once: it serves manager commands on return.
    const std::string mtoken = trim(lab.on("node1", {"swarm", "join-token", "-q", "manager"}).out);
    RunResult m = lab.on("node2", {"swarm", "join", "--token", mtoken, addr1});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(m.err + lab.log("node2"), 0, m.exitCode);
    CPPUNIT_ASSERT(contains(m.out, "This node joined a swarm as a manager."));
    RunResult ls = lab.on("node2", {"node", "ls"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(ls.err, 0, ls.exitCode);
    CPPUNIT_ASSERT(contains(lab.row("node2", "node2"), "Reachable"));
    CPPUNIT_ASSERT(contains(lab.row("node2", "node1"), "Leader"));

    // A rotated-out worker token is refused; the new one works.
    const std::string old = trim(lab.on("node1", {"swarm", "join-token", "-q", "worker"}).out);
    CPPUNIT_ASSERT_EQUAL(0,
                         lab.on("node2", {"swarm", "join-token", "--rotate", "worker"}).exitCode);
    RunResult stale = lab.on("node3", {"swarm", "join", "--token", old, addr1});
    CPPUNIT_ASSERT(stale.exitCode != 0 && contains(stale.err, "A valid join token"));
    const std::string fresh = trim(lab.on("node1", {"swarm", "join-token", "-q", "worker"}).out);
    CPPUNIT_ASSERT(fresh != old);
    // Joining through the follower manager works as well.
    RunResult w = lab.on("node3", {"swarm", "join", "--token", fresh, lab.ip("node2") + ":2377"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(w.err, 0, w.exitCode);
    CPPUNIT_ASSERT(eventually([&] { return contains(lab.row("node1", "node3"), "Ready"); }, 15s));

    // Demote node2: it leaves Raft and becomes a worker; the last manager cannot be demoted.
    CPPUNIT_ASSERT_EQUAL(0, lab.on("node1", {"node", "demote", "node2"}).exitCode);
    CPPUNIT_ASSERT_MESSAGE(
        lab.log("node2"),
        eventually([&] { return contains(lab.on("node2", {"info"}).out, "Is Manager: false"); },
                   20s));
    CPPUNIT_ASSERT(eventually(
        [&] {
          const std::string row = lab.row("node1", "node2");
          return contains(row, "Ready") && !contains(row, "Reachable");
        },
        15s));
    RunResult last = lab.on("node1", {"node", "demote", "node1"});
    CPPUNIT_ASSERT(last.exitCode != 0 && contains(last.err, "last manager"));

    // node rm: a live worker needs --force; once removed, its heartbeats are refused and it
    // is gone from node ls; a manager cannot be removed.
    RunResult live = lab.on("node1", {"node", "rm", "node3"});
    CPPUNIT_ASSERT(live.exitCode != 0 && contains(live.err, "is not down"));
    RunResult mgr = lab.on("node1", {"node", "rm", "--force", "node1"});
    CPPUNIT_ASSERT(mgr.exitCode != 0 && contains(mgr.err, "must be demoted"));
    CPPUNIT_ASSERT_EQUAL(0, lab.on("node1", {"node", "rm", "--force", "node3"}).exitCode);
    CPPUNIT_ASSERT(lab.row("node1", "node3").empty());
    CPPUNIT_ASSERT(
        eventually([&] { return contains(lab.log("node3"), "heartbeat refused"); }, 20s));
    CPPUNIT_ASSERT(lab.row("node1", "node3").empty());
  }

  void testRootCaRotation() {
    Lab lab(3);
    const std::string addr1 = lab.ip("node1") + ":2377";
    CPPUNIT_ASSERT_EQUAL(0, lab.on("node1", {"swarm", "init", "--advertise-addr", addr1}).exitCode);
    const std::string mtoken = trim(lab.on("node1", {"swarm", "join-token", "-q", "manager"}).out);
    const std::string wtoken = trim(lab.on("node1", {"swarm", "join-token", "-q", "worker"}).out);
    CPPUNIT_ASSERT_EQUAL(0, lab.on("node2", {"swarm", "join", "--token", mtoken, addr1}).exitCode);
    CPPUNIT_ASSERT_EQUAL(0, lab.on("node3", {"swarm", "join", "--token", wtoken, addr1}).exitCode);
    auto digest = [&](const std::string& node) {
      const std::string info = lab.on(node, {"info"}).out;
      const auto at = info.find("CA Digest: ");
      return at == std::string::npos ? std::string()
                                     : info.substr(at + 11, info.find('\n', at) - at - 11);
    };
    const std::string before = digest("node1");
    CPPUNIT_ASSERT(before.starts_with("sha256:"));

    RunResult rotate = lab.on("node1", {"swarm", "ca", "--rotate"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(rotate.err + lab.log("node1"), 0, rotate.exitCode);
    CPPUNIT_ASSERT(contains(rotate.out, "rotated TLS certificates: "));
    CPPUNIT_ASSERT(contains(rotate.out, "BEGIN CERTIFICATE"));
    // Every node, the worker included, ends up on the new root.
    std::string after;
    CPPUNIT_ASSERT(eventually(
        [&] {
          after = digest("node1");
          return after != before && digest("node2") == after && digest("node3") == after;
        },
        30s));
    // Managers restart with their new certificates, so either may lead afterwards.
    auto managerUp = [](const std::string& row) {
      return contains(row, "Leader") ||
             (contains(row, "Reachable") && !contains(row, "Unreachable"));
    };
    CPPUNIT_ASSERT_MESSAGE(lab.on("node1", {"node", "ls"}).out,
                           eventually(
                               [&] {
                                 return managerUp(lab.row("node1", "node2")) &&
                                        managerUp(lab.row("node1", "node1")) &&
                                        contains(lab.row("node1", "node3"), "Ready");
                               },
                               20s));
    // The join tokens name the new root: the old one is refused, the new one works.
    const std::string fresh = trim(lab.on("node1", {"swarm", "join-token", "-q", "worker"}).out);
    CPPUNIT_ASSERT(fresh != wtoken);
    CPPUNIT_ASSERT_EQUAL(0, lab.on("node3", {"swarm", "leave"}).exitCode);
    RunResult stale = lab.on("node3", {"swarm", "join", "--token", wtoken, addr1});
    CPPUNIT_ASSERT_MESSAGE(stale.err, stale.exitCode != 0 && contains(stale.err, "does not match"));
    RunResult rejoin = lab.on("node3", {"swarm", "join", "--token", fresh, addr1});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(rejoin.err, 0, rejoin.exitCode);
    // A manager restarted from its files trusts the new root only and rejoins.
    CPPUNIT_ASSERT_EQUAL(0, lab.lab({"stop", "node2"}).exitCode);
    CPPUNIT_ASSERT_EQUAL(0, lab.lab({"start", "node2"}).exitCode);
    CPPUNIT_ASSERT(eventually(
        [&] {
          return managerUp(lab.row("node1", "node2")) && managerUp(lab.row("node1", "node1"));
        },
        20s));
    CPPUNIT_ASSERT_EQUAL(after, digest("node2"));
    // A second rotation is refused while one runs, and works after.
    RunResult again = lab.on("node1", {"swarm", "ca", "--rotate", "--detach"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(again.err + lab.log("node1") + lab.log("node2"), 0,
                                 again.exitCode);
    // (node1 itself restarts to take its new certificate: a moment of "restarting" is fine.)
    RunResult busy;
    eventually(
        [&] {
          busy = lab.on("node1", {"swarm", "ca", "--rotate", "--detach"});
          return busy.exitCode == 0 || !contains(busy.err, "restarting");
        },
        10s);
    CPPUNIT_ASSERT_MESSAGE(busy.err,
                           busy.exitCode != 0 && contains(busy.err, "already in progress"));
    CPPUNIT_ASSERT(eventually(
        [&] {
          const std::string d = digest("node1");
          return d != after && digest("node2") == d && digest("node3") == d;
        },
        40s));
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(SwarmLabTest);
