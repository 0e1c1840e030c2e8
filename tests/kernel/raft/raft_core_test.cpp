// The Raft core's behaviours one at a time, on a fault-free simulated cluster (faults are the
// deterministic simulation's job, tests/dst).
#include <cppunit/extensions/HelperMacros.h>

#include "tests/dst/sim_cluster.h"

using shoal::Status;
using shoal::dst::Faults;
using shoal::dst::SimCluster;
using shoal::raft::NodeId;
using shoal::raft::Role;

namespace {

Faults calm() {
  Faults f;
  f.clientOp = 0;
  return f;
}

NodeId waitForLeader(SimCluster& c, int ticks = 200) {
  for (int i = 0; i < ticks; ++i) {
    if (NodeId l = c.leader()) return l;
    c.tick();
  }
  return 0;
}

void runTicks(SimCluster& c, int n) {
  for (int i = 0; i < n; ++i) c.tick();
}

}  // namespace

class RaftCoreTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(RaftCoreTest);
  CPPUNIT_TEST(testSingleMemberCommitsAlone);
  CPPUNIT_TEST(testThreeMembersElectOneLeaderAndReplicate);
  CPPUNIT_TEST(testFollowerRefusesProposalsNamingTheLeader);
  CPPUNIT_TEST(testAForwardedProposalNobodyTakesGoesBack);
  CPPUNIT_TEST(testIsolatedLeaderStepsDownAndMajorityMovesOn);
  CPPUNIT_TEST(testPreVoteKeepsAPartitionedMemberFromDisruptingTheLeader);
  CPPUNIT_TEST(testRestartedFollowerCatchesUpFromItsDisk);
  CPPUNIT_TEST(testMinorityCannotCommit);
  CPPUNIT_TEST(testLeadershipTransferHandsOver);
  CPPUNIT_TEST(testReadIndexNeedsAQuorum);
  CPPUNIT_TEST(testLaggingFollowerCatchesUpBySnapshot);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testSingleMemberCommitsAlone() {
    SimCluster c(1, 1, calm());
    NodeId l = waitForLeader(c);
    CPPUNIT_ASSERT_EQUAL(NodeId(1), l);
    CPPUNIT_ASSERT(c.propose(l, "1 put a x").isOk());
    runTicks(c, 2);
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), c.applied(1).size());  // the no-op, then ours
    CPPUNIT_ASSERT_EQUAL(std::string("1 put a x"), c.applied(1).back().data);
  }

  void testThreeMembersElectOneLeaderAndReplicate() {
    SimCluster c(3, 2, calm());
    NodeId l = waitForLeader(c);
    CPPUNIT_ASSERT(l != 0);
    for (int i = 0; i < 50; ++i)
      CPPUNIT_ASSERT(c.propose(l, std::to_string(i) + " put k v").isOk());
    runTicks(c, 20);
    for (NodeId id : {1, 2, 3}) {
      CPPUNIT_ASSERT_EQUAL(std::size_t(51), c.applied(id).size());
      CPPUNIT_ASSERT_EQUAL(c.applied(l).back().term, c.applied(id).back().term);
    }
    int leaders = 0;
    for (NodeId id : {1, 2, 3}) leaders += c.core(id)->role() == Role::kLeader;
    CPPUNIT_ASSERT_EQUAL(1, leaders);
    CPPUNIT_ASSERT(!c.failed());
  }

  void testFollowerRefusesProposalsNamingTheLeader() {
    SimCluster c(3, 3, calm());
    NodeId l = waitForLeader(c);
    runTicks(c, 5);
    NodeId f = l == 1 ? 2 : 1;
    auto r = c.propose(f, "x");
    CPPUNIT_ASSERT(r.status().code() == Status::Code::kUnavailable);
    CPPUNIT_ASSERT_EQUAL("not the leader (the leader is " + std::to_string(l) + ")",
                         r.status().message());
  }

  void testAForwardedProposalNobodyTakesGoesBack() {
    // A member that just started knows no leader: a proposal forwarded to it (by a member
    // still in the old leader's lease) is sent back, entries and all, not silently dropped.
    shoal::SeededRandom random(3);
    shoal::raft::RaftConfig config;
    config.id = 2;
    config.voters = {1, 2};
    shoal::raft::RaftCore fresh(config, random);
    shoal::raft::Message fwd;
    fwd.type = shoal::raft::MessageType::kPropose;
    fwd.from = 1;
    fwd.to = 2;
    fwd.entries.resize(2);
    fwd.entries[0].data = "first";
    fwd.entries[1].data = "second";
    fresh.step(fwd);
    CPPUNIT_ASSERT(fresh.hasReady());
    shoal::raft::Ready rd = fresh.ready();
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), rd.messages.size());
    const shoal::raft::Message& back = rd.messages[0];
    CPPUNIT_ASSERT(back.type == shoal::raft::MessageType::kProposeDropped);
    CPPUNIT_ASSERT_EQUAL(NodeId(1), back.to);
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), back.entries.size());
    CPPUNIT_ASSERT_EQUAL(std::string("first"), back.entries[0].data);
    CPPUNIT_ASSERT_EQUAL(std::string("second"), back.entries[1].data);
    CPPUNIT_ASSERT_EQUAL(shoal::raft::Index(0), fresh.lastIndex());  // nothing appended
    fresh.advance();

    // A leader handing over sends them back too.
    config.id = 1;
    shoal::raft::RaftCore leader(config, random);
    auto drain = [&] {
      std::vector<shoal::raft::Message> out;
      while (leader.hasReady()) {
        shoal::raft::Ready r = leader.ready();
        out.insert(out.end(), r.messages.begin(), r.messages.end());
        leader.advance();
      }
      return out;
    };
    leader.campaign();
    drain();
    shoal::raft::Message vote;
    vote.type = shoal::raft::MessageType::kPreVoteResp;
    vote.from = 2;
    vote.to = 1;
    vote.term = leader.term() + 1;
    leader.step(vote);
    vote.type = shoal::raft::MessageType::kVoteResp;
    vote.term = leader.term();
    leader.step(vote);
    CPPUNIT_ASSERT(leader.role() == Role::kLeader);
    drain();
    CPPUNIT_ASSERT(leader.transferLeadership(2).isOk());
    drain();
    const auto before = leader.lastIndex();
    fwd.from = 2;
    fwd.to = 1;
    leader.step(fwd);
    CPPUNIT_ASSERT_EQUAL(before, leader.lastIndex());
    bool sentBack = false;
    for (const auto& m : drain()) {
      sentBack = sentBack || (m.type == shoal::raft::MessageType::kProposeDropped && m.to == 2 &&
                              m.entries.size() == 2);
    }
    CPPUNIT_ASSERT(sentBack);
  }

  void testIsolatedLeaderStepsDownAndMajorityMovesOn() {
    SimCluster c(3, 4, calm());
    NodeId old = waitForLeader(c);
    auto oldTerm = c.core(old)->term();
    c.isolate(old);
    runTicks(c, 60);  // a few election timeouts
    // Check-quorum: the cut-off leader no longer acts as one.
    CPPUNIT_ASSERT(c.core(old)->role() != Role::kLeader);
    NodeId fresh = c.leader();
    CPPUNIT_ASSERT(fresh != 0 && fresh != old);
    CPPUNIT_ASSERT(c.core(fresh)->term() > oldTerm);
    CPPUNIT_ASSERT(c.propose(fresh, "7 put a b").isOk());
    runTicks(c, 10);
    CPPUNIT_ASSERT_EQUAL(std::string("7 put a b"), c.applied(fresh).back().data);
    c.healAll();
    runTicks(c, 30);
    CPPUNIT_ASSERT_EQUAL(std::string("7 put a b"), c.applied(old).back().data);
    CPPUNIT_ASSERT(!c.failed());
  }

  void testPreVoteKeepsAPartitionedMemberFromDisruptingTheLeader() {
    SimCluster c(3, 5, calm());
    NodeId l = waitForLeader(c);
    runTicks(c, 5);
    NodeId f = l == 3 ? 1 : 3;
    auto term = c.core(l)->term();
    c.isolate(f);
    runTicks(c, 300);
    // Its pre-votes fail, so its term never moves...
    CPPUNIT_ASSERT_EQUAL(term, c.core(f)->term());
    c.healAll();
    runTicks(c, 30);
    // ...and rejoining does not depose the leader.
    CPPUNIT_ASSERT_EQUAL(l, c.leader());
    CPPUNIT_ASSERT_EQUAL(term, c.core(l)->term());
  }

  void testRestartedFollowerCatchesUpFromItsDisk() {
    SimCluster c(3, 6, calm());
    NodeId l = waitForLeader(c);
    runTicks(c, 5);
    NodeId f = l == 2 ? 3 : 2;
    c.crash(f);
    for (int i = 0; i < 300; ++i)
      c.propose(l, std::to_string(i) + " put k" + std::to_string(i) + " v");
    runTicks(c, 10);
    c.restart(f);
    runTicks(c, 60);
    CPPUNIT_ASSERT_EQUAL(c.applied(l).size(), c.applied(f).size());
    CPPUNIT_ASSERT(c.applied(f).size() >= 301);
    CPPUNIT_ASSERT(!c.failed());
  }

  void testMinorityCannotCommit() {
    SimCluster c(5, 7, calm());
    NodeId l = waitForLeader(c);
    runTicks(c, 5);
    std::size_t before = c.applied(l).size();
    // Cut the leader and one follower off from the other three.
    NodeId buddy = l == 1 ? 2 : 1;
    for (NodeId a : {l, buddy}) {
      c.isolate(a);
    }
    auto r = c.propose(l, "9 put lost x");
    CPPUNIT_ASSERT(r.isOk());  // accepted into its log...
    runTicks(c, 5);
    CPPUNIT_ASSERT_EQUAL(before, c.applied(l).size());  // ...but never committed
    runTicks(c, 60);
    CPPUNIT_ASSERT(c.core(l)->role() != Role::kLeader);
    c.healAll();
    runTicks(c, 60);
    for (NodeId id : {1, 2, 3, 4, 5}) {
      for (const auto& e : c.applied(id)) CPPUNIT_ASSERT(e.data != "9 put lost x");
    }
    CPPUNIT_ASSERT(!c.failed());
  }

  void testLeadershipTransferHandsOver() {
    SimCluster c(3, 8, calm());
    NodeId l = waitForLeader(c);
    runTicks(c, 5);
    NodeId to = l == 3 ? 1 : 3;
    auto term = c.core(l)->term();
    CPPUNIT_ASSERT(c.core(l)->transferLeadership(to).isOk());
    auto refused = c.propose(l, "x");
    CPPUNIT_ASSERT(!refused.isOk());
    CPPUNIT_ASSERT(refused.status().message().find("being transferred") != std::string::npos);
    runTicks(c, 10);
    CPPUNIT_ASSERT_EQUAL(to, c.leader());
    CPPUNIT_ASSERT_EQUAL(term + 1, c.core(to)->term());
    CPPUNIT_ASSERT(c.core(l)->role() == Role::kFollower);
    CPPUNIT_ASSERT(!c.core(l)->transferLeadership(2).isOk());  // no longer the leader
    CPPUNIT_ASSERT(!c.failed());
  }

  void testReadIndexNeedsAQuorum() {
    SimCluster c(3, 9, calm());
    NodeId l = waitForLeader(c);
    runTicks(c, 5);
    NodeId f = l == 1 ? 2 : 1;
    CPPUNIT_ASSERT(c.core(f)->readIndex(1).code() == Status::Code::kUnavailable);
    CPPUNIT_ASSERT(c.core(l)->readIndex(2).isOk());
    runTicks(c, 3);
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), c.confirmedReads(l).size());
    CPPUNIT_ASSERT_EQUAL(uint64_t(2), c.confirmedReads(l)[0].id);
    CPPUNIT_ASSERT_EQUAL(c.core(l)->commitIndex(), c.confirmedReads(l)[0].index);
    // Cut off from both followers, the leader cannot confirm a read.
    c.isolate(l);
    CPPUNIT_ASSERT(c.core(l)->readIndex(3).isOk());
    runTicks(c, 8);
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), c.confirmedReads(l).size());
  }

  void testLaggingFollowerCatchesUpBySnapshot() {
    Faults f = calm();
    f.snapshotEvery = 20;
    SimCluster c(3, 10, f);
    NodeId l = waitForLeader(c);
    runTicks(c, 5);
    NodeId lag = l == 2 ? 3 : 2;
    c.crash(lag);
    for (int i = 0; i < 200; ++i)
      c.propose(l, std::to_string(i) + " put k" + std::to_string(i % 7) + " v" + std::to_string(i));
    runTicks(c, 20);
    CPPUNIT_ASSERT(c.core(l)->snapshot().index > 100);
    c.restart(lag);
    runTicks(c, 40);
    CPPUNIT_ASSERT(c.snapshotsInstalled() >= 1);
    CPPUNIT_ASSERT_EQUAL(c.applied(l).size(), c.applied(lag).size());
    CPPUNIT_ASSERT(!c.failed());
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(RaftCoreTest);
