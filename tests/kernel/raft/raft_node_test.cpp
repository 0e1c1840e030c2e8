// RaftNode: the Raft core at work with real threads, real time, LevelDB storage and an
// in-process transport — commit, forwarding, failover, restart from disk, catch-up by
// snapshot, and clear failures without a quorum.
#include <cppunit/extensions/HelperMacros.h>

#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "kernel/raft/raft_node.h"
#include "tests/fakes/local_transport.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace std::chrono_literals;
using shoal::Status;
using shoal::raft::ConfChange;
using shoal::raft::Index;
using shoal::raft::NodeId;
using shoal::raft::RaftNode;
using shoal::raft::RaftNodeOptions;
using shoal::raft::RaftStorage;
using shoal::test::eventually;

namespace {

// A key-value state machine: commands are "key=value"; "fail" is refused deterministically.
class Kv : public shoal::raft::StateMachine {
 public:
  Status apply(Index index, std::string_view command) override {
    std::lock_guard<std::mutex> lock(mu_);
    last_ = index;
    if (command == "fail") return Status::conflict("refused by the state machine");
    auto eq = command.find('=');
    data_[std::string(command.substr(0, eq))] = std::string(command.substr(eq + 1));
    return Status::ok();
  }
  shoal::Result<std::string> snapshot() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    for (const auto& [k, v] : data_) out += k + "=" + v + "\n";
    return out;
  }
  Status restore(Index index, std::string_view data) override {
    std::lock_guard<std::mutex> lock(mu_);
    data_.clear();
    std::string s(data);
    std::size_t pos = 0;
    while (pos < s.size()) {
      auto nl = s.find('\n', pos);
      auto line = s.substr(pos, nl - pos);
      auto eq = line.find('=');
      data_[line.substr(0, eq)] = line.substr(eq + 1);
      pos = nl + 1;
    }
    last_ = index;
    ++restores_;
    return Status::ok();
  }
  void reset() {
    std::lock_guard<std::mutex> lock(mu_);
    data_.clear();
    last_ = 0;
  }
  std::string get(const std::string& k) {
    std::lock_guard<std::mutex> lock(mu_);
    return data_.count(k) ? data_[k] : "";
  }
  std::size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return data_.size();
  }
  int restores() {
    std::lock_guard<std::mutex> lock(mu_);
    return restores_;
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::string> data_;
  Index last_ = 0;
  int restores_ = 0;
};

struct Member {
  std::unique_ptr<shoal::test::LocalTransport> transport;
  Kv kv;
  std::unique_ptr<RaftNode> node;
};

class Cluster {
 public:
  explicit Cluster(int n, Index snapshotEvery = 10000, std::chrono::milliseconds tick = 10ms)
      : snapshotEvery_(snapshotEvery), tick_(tick) {
    for (int i = 1; i <= n; ++i) ids_.push_back(static_cast<NodeId>(i));
    for (NodeId id : ids_) start(id);
  }
  ~Cluster() {
    for (auto& [id, m] : members_) {
      if (m->node) m->node->stop();
    }
  }

  void start(NodeId id) {
    auto& m = members_[id];
    if (!m) m = std::make_unique<Member>();
    auto storage = RaftStorage::open(dir_.file("m" + std::to_string(id)));
    CPPUNIT_ASSERT_MESSAGE(storage.status().toString(), storage.isOk());
    RaftNodeOptions o;
    o.raft.id = id;
    o.raft.voters = ids_;
    o.tick = tick_;
    o.snapshotEvery = snapshotEvery_;
    m->transport = std::make_unique<shoal::test::LocalTransport>(hub, id);
    m->kv.reset();  // a restarted member rebuilds its state from the snapshot and the log
    m->node =
        std::make_unique<RaftNode>(o, std::move(storage.value()), *m->transport, m->kv, random_);
    Status s = m->node->start();
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
  }
  void stop(NodeId id) {
    members_[id]->node->stop();
    members_[id]->node.reset();
  }
  RaftNode& node(NodeId id) { return *members_.at(id)->node; }
  Kv& kv(NodeId id) { return members_.at(id)->kv; }
  bool up(NodeId id) { return members_.at(id)->node != nullptr; }

  NodeId waitLeader(std::chrono::milliseconds limit = 5s) {
    NodeId found = 0;
    eventually(
        [&] {
          for (NodeId id : ids_) {
            if (up(id) && node(id).isLeader()) {
              found = id;
              return true;
            }
          }
          return false;
        },
        limit);
    return found;
  }

  shoal::test::LocalHub hub;

 private:
  shoal::test::TempDir dir_;
  shoal::SeededRandom random_{7};
  std::vector<NodeId> ids_;
  std::map<NodeId, std::unique_ptr<Member>> members_;
  Index snapshotEvery_;
  std::chrono::milliseconds tick_;
};

}  // namespace

class RaftNodeTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(RaftNodeTest);
  CPPUNIT_TEST(testProposalsCommitEverywhere);
  CPPUNIT_TEST(testFollowerForwardsToTheLeader);
  CPPUNIT_TEST(testStateMachineOutcomeReachesTheProposer);
  CPPUNIT_TEST(testProposalForwardedToARestartedLeaderStillCommits);
  CPPUNIT_TEST(testLeaderLossFailsOverAndKeepsAcknowledgedWrites);
  CPPUNIT_TEST(testRestartFromDiskKeepsCommittedState);
  CPPUNIT_TEST(testLaggingMemberCatchesUpBySnapshot);
  CPPUNIT_TEST(testNoQuorumIsAClearFailure);
  CPPUNIT_TEST(testReadBarrierAndTransfer);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testProposalsCommitEverywhere() {
    Cluster c(3);
    NodeId l = c.waitLeader();
    CPPUNIT_ASSERT(l != 0);
    for (int i = 0; i < 50; ++i) {
      Status s = c.node(l).propose("k" + std::to_string(i) + "=v", 2s);
      CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    }
    for (NodeId id : {1, 2, 3}) {
      CPPUNIT_ASSERT(eventually([&] { return c.kv(id).size() == 50; }));
    }
  }

  void testFollowerForwardsToTheLeader() {
    Cluster c(3);
    NodeId l = c.waitLeader();
    NodeId f = l == 1 ? 2 : 1;
    CPPUNIT_ASSERT(eventually([&] { return c.node(f).leader() == l; }));
    Status s = c.node(f).propose("from=follower", 2s);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("follower"), c.kv(f).get("from"));
    CPPUNIT_ASSERT(eventually([&] { return c.kv(l).get("from") == "follower"; }));
  }

  void testStateMachineOutcomeReachesTheProposer() {
    Cluster c(3);
    NodeId l = c.waitLeader();
    Status s = c.node(l).propose("fail", 2s);
    CPPUNIT_ASSERT(s.code() == Status::Code::kConflict);
    CPPUNIT_ASSERT_EQUAL(std::string("refused by the state machine"), s.message());
  }

  void testProposalForwardedToARestartedLeaderStillCommits() {
    // Two members, as in a swarm of two managers. The leader restarts; the follower, still
    // within its lease, forwards a proposal to it, and the restarted member (no leader known
    // yet) sends it back. The follower proposes it again once a leader is elected, instead of
    // waiting out its timeout for an entry nobody holds.
    Cluster c(2, 10000, 50ms);  // elections after 0.5-1 s, so the lease outlives the restart
    NodeId l = c.waitLeader();
    CPPUNIT_ASSERT(l != 0);
    NodeId f = l == 1 ? 2 : 1;
    CPPUNIT_ASSERT(eventually([&] { return c.node(f).leader() == l; }));
    CPPUNIT_ASSERT(c.node(l).propose("before=restart", 2s).isOk());
    c.stop(l);
    c.start(l);
    CPPUNIT_ASSERT_EQUAL(l, c.node(f).leader());  // the follower has not noticed
    const auto t0 = std::chrono::steady_clock::now();
    Status s = c.node(f).propose("after=restart", 5s);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    CPPUNIT_ASSERT(std::chrono::steady_clock::now() - t0 < 4s);
    CPPUNIT_ASSERT_EQUAL(std::string("restart"), c.kv(f).get("after"));
    CPPUNIT_ASSERT(eventually([&] { return c.kv(l).get("after") == "restart"; }));
  }

  void testLeaderLossFailsOverAndKeepsAcknowledgedWrites() {
    Cluster c(3);
    NodeId l = c.waitLeader();
    for (int i = 0; i < 20; ++i)
      CPPUNIT_ASSERT(c.node(l).propose("a" + std::to_string(i) + "=1", 2s).isOk());
    c.stop(l);
    auto t0 = std::chrono::steady_clock::now();
    NodeId l2 = c.waitLeader();
    auto failover = std::chrono::steady_clock::now() - t0;
    CPPUNIT_ASSERT(l2 != 0 && l2 != l);
    // Election timeout is 10-20 ticks of 10 ms here.
    CPPUNIT_ASSERT(failover < 1s);
    CPPUNIT_ASSERT(c.node(l2).propose("after=failover", 2s).isOk());
    for (int i = 0; i < 20; ++i)
      CPPUNIT_ASSERT_EQUAL(std::string("1"), c.kv(l2).get("a" + std::to_string(i)));
    c.start(l);
    CPPUNIT_ASSERT(eventually([&] { return c.kv(l).get("after") == "failover"; }));
  }

  void testRestartFromDiskKeepsCommittedState() {
    Cluster c(3);
    NodeId l = c.waitLeader();
    for (int i = 0; i < 30; ++i)
      CPPUNIT_ASSERT(c.node(l).propose("r" + std::to_string(i) + "=x", 2s).isOk());
    for (NodeId id : {1, 2, 3}) c.stop(id);
    for (NodeId id : {1, 2, 3}) c.start(id);
    NodeId l2 = c.waitLeader();
    CPPUNIT_ASSERT(l2 != 0);
    CPPUNIT_ASSERT(c.node(l2).propose("fresh=1", 2s).isOk());
    for (NodeId id : {1, 2, 3}) {
      CPPUNIT_ASSERT(eventually([&] { return c.kv(id).size() == 31; }));
    }
  }

  void testLaggingMemberCatchesUpBySnapshot() {
    Cluster c(3, /*snapshotEvery=*/20);
    NodeId l = c.waitLeader();
    NodeId lag = l == 3 ? 2 : 3;
    c.stop(lag);
    for (int i = 0; i < 100; ++i)
      CPPUNIT_ASSERT(c.node(l).propose("s" + std::to_string(i) + "=y", 2s).isOk());
    c.start(lag);
    CPPUNIT_ASSERT(eventually([&] { return c.kv(lag).size() == 100; }));
    CPPUNIT_ASSERT(c.kv(lag).restores() >= 1);
  }

  void testNoQuorumIsAClearFailure() {
    Cluster c(3);
    NodeId l = c.waitLeader();
    for (NodeId id : {1, 2, 3}) {
      if (id != l) c.stop(id);
    }
    Status s = c.node(l).propose("lonely=1", 300ms);
    CPPUNIT_ASSERT(s.code() == Status::Code::kTimeout);
    CPPUNIT_ASSERT_MESSAGE(s.message(), s.message().find("no quorum") != std::string::npos);
    // Check-quorum: it stops acting as leader, and then refuses outright.
    CPPUNIT_ASSERT(eventually([&] { return !c.node(l).isLeader(); }, 2s));
    s = c.node(l).propose("lonely=2", 300ms);
    CPPUNIT_ASSERT_MESSAGE(
        s.toString(), s.code() == Status::Code::kUnavailable || s.code() == Status::Code::kTimeout);
  }

  void testReadBarrierAndTransfer() {
    Cluster c(3);
    NodeId l = c.waitLeader();
    CPPUNIT_ASSERT(c.node(l).propose("x=1", 2s).isOk());
    CPPUNIT_ASSERT(eventually([&] { return c.node(l).readBarrier(1s).isOk(); }));
    NodeId to = l == 1 ? 2 : 1;
    Status s = c.node(l).transferLeadership(to, 2s);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    CPPUNIT_ASSERT(c.node(to).isLeader());
    CPPUNIT_ASSERT(c.node(l).readBarrier(500ms).code() == Status::Code::kUnavailable);
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(RaftNodeTest);
