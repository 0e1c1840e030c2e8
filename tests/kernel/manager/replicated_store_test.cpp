// ReplicatedStore: the object store kept by Raft across three managers (real LevelDB storage,
// in-process transport) — writes reach every replica with the same versions and times,
// followers forward, stale transactions are refused, a cut-off manager says "no quorum", and
// a restart (with and without snapshots) comes back with exactly the committed state.
#include <cppunit/extensions/HelperMacros.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kernel/manager/replicated_store.h"
#include "tests/fakes/local_transport.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace std::chrono_literals;
using shoal::Status;
using shoal::manager::ReplicatedStore;
using shoal::manager::ReplicatedStoreOptions;
using shoal::raft::NodeId;
using shoal::store::Kind;
using shoal::store::Object;
using shoal::store::ReadView;
using shoal::store::Tx;
using shoal::test::eventually;

#define ASSERT_OK(expr)                               \
  do {                                                \
    const Status s_ = (expr);                         \
    CPPUNIT_ASSERT_MESSAGE(s_.toString(), s_.isOk()); \
  } while (0)

namespace {

class Cluster {
 public:
  explicit Cluster(shoal::raft::Index snapshotEvery = 10000) : every_(snapshotEvery) {
    for (NodeId id : {1, 2, 3}) start(id);
  }
  ~Cluster() {
    for (auto& [id, m] : members_) m.store.reset();
  }
  Status start(NodeId id) {
    auto& m = members_[id];
    auto storage = shoal::raft::RaftStorage::open(dir_.file("m" + std::to_string(id)));
    if (!storage) return storage.status();
    ReplicatedStoreOptions o;
    o.raft.raft.id = id;
    o.raft.raft.voters = {1, 2, 3};
    o.raft.tick = 10ms;
    o.raft.snapshotEvery = every_;
    m.transport = std::make_unique<shoal::test::LocalTransport>(hub_, id);
    m.store = std::make_unique<ReplicatedStore>(o, std::move(storage.value()), *m.transport,
                                                random_, shoal::SystemClock::instance());
    return m.store->start();
  }
  void stop(NodeId id) { members_[id].store.reset(); }
  ReplicatedStore& at(NodeId id) { return *members_.at(id).store; }
  NodeId waitLeader() {
    NodeId found = 0;
    eventually([&] {
      for (auto& [id, m] : members_) {
        if (m.store && m.store->raft().isLeader()) found = id;
      }
      return found != 0;
    });
    return found;
  }
  NodeId follower(NodeId leader) { return leader == 1 ? 2 : 1; }
  shoal::test::LocalHub& hub() { return hub_; }
  std::string dataDir(NodeId id) { return dir_.file("m" + std::to_string(id)); }

 private:
  struct Member {
    std::unique_ptr<shoal::test::LocalTransport> transport;
    std::unique_ptr<ReplicatedStore> store;
  };
  shoal::test::TempDir dir_;
  shoal::test::LocalHub hub_;
  shoal::SeededRandom random_{7};
  shoal::raft::Index every_;
  std::map<NodeId, Member> members_;
};

Object service(const std::string& id, const std::string& name, int replicas) {
  Object o;
  o.kind = Kind::kService;
  o.id = id;
  o.name = name;
  o.spec = "{\"replicas\":" + std::to_string(replicas) + "}";
  return o;
}

Status createService(ReplicatedStore& s, const std::string& id, int replicas = 1) {
  return s.update([&](Tx& tx) { return tx.create(service(id, "svc-" + id, replicas)); }, 5s);
}

shoal::store::ObjectPtr get(ReplicatedStore& s, Kind kind, const std::string& id) {
  shoal::store::ObjectPtr out;
  s.view([&](const ReadView& v) { out = v.get(kind, id); });
  return out;
}

}  // namespace

class ReplicatedStoreTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(ReplicatedStoreTest);
  CPPUNIT_TEST(testWritesReachEveryReplicaAlike);
  CPPUNIT_TEST(testFollowerWritesAreForwarded);
  CPPUNIT_TEST(testStaleTransactionIsRefusedAsAConflict);
  CPPUNIT_TEST(testLinearizableViewSeesAcknowledgedWrites);
  CPPUNIT_TEST(testCutOffManagerRefusesWritesWithNoQuorum);
  CPPUNIT_TEST(testRestartComesBackWithTheCommittedState);
  CPPUNIT_TEST(testRestartFromSnapshotAndLog);
  CPPUNIT_TEST(testCorruptFilesRefuseToStart);
  CPPUNIT_TEST(testUndecodableCommandIsRefusedOnEveryReplica);
  CPPUNIT_TEST(testConcurrentWritersEachGetTheirOwnOutcome);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testWritesReachEveryReplicaAlike() {
    Cluster c;
    NodeId l = c.waitLeader();
    CPPUNIT_ASSERT(l != 0);
    ASSERT_OK(createService(c.at(l), "a"));
    auto mine = get(c.at(l), Kind::kService, "a");
    CPPUNIT_ASSERT(mine);
    CPPUNIT_ASSERT(mine->version > 0);
    CPPUNIT_ASSERT(mine->createdNs > 0);
    for (NodeId id : {1, 2, 3}) {
      CPPUNIT_ASSERT(
          eventually([&] { return c.at(id).store().digest() == c.at(l).store().digest(); }));
      auto theirs = get(c.at(id), Kind::kService, "a");
      CPPUNIT_ASSERT(theirs);
      CPPUNIT_ASSERT(*theirs == *mine);  // same version and the proposer's times everywhere
    }
  }

  void testFollowerWritesAreForwarded() {
    Cluster c;
    NodeId l = c.waitLeader();
    NodeId f = c.follower(l);
    ASSERT_OK(createService(c.at(f), "from-follower"));
    // Acknowledged means applied on the member that was asked.
    CPPUNIT_ASSERT(get(c.at(f), Kind::kService, "from-follower"));
    CPPUNIT_ASSERT(
        eventually([&] { return get(c.at(l), Kind::kService, "from-follower") != nullptr; }));
  }

  void testStaleTransactionIsRefusedAsAConflict() {
    Cluster c;
    NodeId l = c.waitLeader();
    ASSERT_OK(createService(c.at(l), "s"));
    auto read = get(c.at(l), Kind::kService, "s");
    Object first = *read;
    first.spec = "{\"replicas\":2}";
    ASSERT_OK(c.at(l).update([&](Tx& tx) { return tx.update(first); }, 5s));
    // A second writer that read the same version before the first write landed.
    Object second = *read;
    second.spec = "{\"replicas\":9}";
    std::string encoded;
    {
      shoal::store::ChangeSet cs;
      shoal::store::Op op;
      op.type = shoal::store::OpType::kUpdate;
      op.expectedVersion = read->version;
      op.object = second;
      cs.ops.push_back(op);
      encoded = shoal::store::encodeChangeSet(cs);
    }
    Status s = c.at(l).raft().propose(shoal::manager::encodeStoreCommand(1, encoded), 5s);
    CPPUNIT_ASSERT_EQUAL(Status::Code::kConflict, s.code());
    CPPUNIT_ASSERT(s.message().find("service s") != std::string::npos);
    CPPUNIT_ASSERT_EQUAL(std::string("{\"replicas\":2}"), get(c.at(l), Kind::kService, "s")->spec);
    // Through update(), a transaction built on a view is checked when it is made.
    Status t = c.at(l).update([&](Tx& tx) { return tx.update(second); }, 5s);
    CPPUNIT_ASSERT_EQUAL(Status::Code::kConflict, t.code());
  }

  void testLinearizableViewSeesAcknowledgedWrites() {
    Cluster c;
    NodeId l = c.waitLeader();
    NodeId f = c.follower(l);
    for (int i = 0; i < 20; ++i) {
      ASSERT_OK(createService(c.at(f), "w" + std::to_string(i)));
      bool seen = false;
      ASSERT_OK(c.at(l).linearizableView(
          [&](const ReadView& v) {
            seen = v.get(Kind::kService, "w" + std::to_string(i)) != nullptr;
          },
          5s));
      CPPUNIT_ASSERT(seen);
    }
    Status s = c.at(f).linearizableView([](const ReadView&) {}, 1s);
    CPPUNIT_ASSERT_EQUAL(Status::Code::kUnavailable, s.code());
  }

  void testCutOffManagerRefusesWritesWithNoQuorum() {
    Cluster c;
    NodeId l = c.waitLeader();
    ASSERT_OK(createService(c.at(l), "before"));
    NodeId cut = l;  // the leader itself: check-quorum makes it step down
    c.hub().isolate(cut, true);
    CPPUNIT_ASSERT(eventually([&] { return c.at(cut).raft().leader() == 0; }));
    Status s = createService(c.at(cut), "minority");
    CPPUNIT_ASSERT_EQUAL(Status::Code::kUnavailable, s.code());
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.message().find("no quorum") != std::string::npos);
    // The majority elects a leader of its own and keeps working.
    NodeId other = cut == 1 ? 2 : 1;
    CPPUNIT_ASSERT(eventually([&] {
      NodeId ld = c.at(other).raft().leader();
      return ld != 0 && ld != cut;
    }));
    ASSERT_OK(createService(c.at(other), "majority"));
    c.hub().isolate(cut, false);
    CPPUNIT_ASSERT(
        eventually([&] { return get(c.at(cut), Kind::kService, "majority") != nullptr; }));
    CPPUNIT_ASSERT(!get(c.at(cut), Kind::kService, "minority"));
  }

  void testRestartComesBackWithTheCommittedState() {
    Cluster c;
    NodeId l = c.waitLeader();
    for (int i = 0; i < 30; ++i) {
      ASSERT_OK(createService(c.at(l), "r" + std::to_string(i), i));
    }
    CPPUNIT_ASSERT(eventually([&] {
      return c.at(1).store().digest() == c.at(2).store().digest() &&
             c.at(2).store().digest() == c.at(3).store().digest();
    }));
    const std::string digest = c.at(1).store().digest();
    const uint64_t version = c.at(1).store().version();
    for (NodeId id : {1, 2, 3}) c.stop(id);
    for (NodeId id : {1, 2, 3}) ASSERT_OK(c.start(id));
    for (NodeId id : {1, 2, 3}) {
      CPPUNIT_ASSERT(eventually([&] { return c.at(id).store().version() >= version; }));
      CPPUNIT_ASSERT_EQUAL(digest, c.at(id).store().digest());
    }
    l = c.waitLeader();
    ASSERT_OK(createService(c.at(l), "after"));
  }

  void testRestartFromSnapshotAndLog() {
    Cluster c(/*snapshotEvery=*/8);
    NodeId l = c.waitLeader();
    for (int i = 0; i < 45; ++i) {  // several compactions, then a tail of log entries
      ASSERT_OK(createService(c.at(l), "s" + std::to_string(i)));
    }
    CPPUNIT_ASSERT(eventually([&] { return c.at(3).store().size() == 45; }));
    const std::string digest = c.at(3).store().digest();
    c.stop(3);
    ASSERT_OK(c.start(3));
    // Alone (its peers are cut off), it has only what it stored itself.
    c.hub().isolate(3, true);
    CPPUNIT_ASSERT(eventually([&] { return c.at(3).store().digest() == digest; }));
    CPPUNIT_ASSERT_EQUAL(std::size_t{45}, c.at(3).store().size());
    c.hub().isolate(3, false);
  }

  void testCorruptFilesRefuseToStart() {
    Cluster c;
    NodeId l = c.waitLeader();
    ASSERT_OK(createService(c.at(l), "x"));
    c.stop(3);
    // Replace the database's CURRENT pointer with junk: LevelDB cannot find its manifest.
    {
      FILE* f = std::fopen((c.dataDir(3) + "/CURRENT").c_str(), "w");
      CPPUNIT_ASSERT(f);
      std::fputs("MANIFEST-999999\n", f);
      std::fclose(f);
    }
    Status s = c.start(3);
    CPPUNIT_ASSERT(!s.isOk());
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.message().find(c.dataDir(3)) != std::string::npos);
  }

  // Many writers at once: their transactions share Raft entries (the member packs proposals
  // that arrive together), yet each gets its own verdict, and every replica ends equal.
  void testConcurrentWritersEachGetTheirOwnOutcome() {
    Cluster c;
    NodeId l = c.waitLeader();
    NodeId f = c.follower(l);
    std::atomic<int> ok{0}, taken{0}, other{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 16; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 20; ++i) {
          // Every pair of threads races for the same ids: one create wins, one is refused.
          const std::string id = "p" + std::to_string(t / 2) + "-" + std::to_string(i);
          Status s = createService(c.at(t % 4 == 0 ? f : l), id);
          if (s.isOk()) {
            ++ok;
          } else if (s.code() == Status::Code::kAlreadyExists) {
            ++taken;
          } else {
            ++other;
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    CPPUNIT_ASSERT_EQUAL(0, other.load());
    CPPUNIT_ASSERT_EQUAL(160, ok.load());  // 8 pairs x 20 ids, one winner each
    CPPUNIT_ASSERT_EQUAL(160, taken.load());
    for (NodeId id : {1, 2, 3}) {
      CPPUNIT_ASSERT(eventually([&] {
        return c.at(id).store().version() == c.at(l).store().version() &&
               c.at(id).store().digest() == c.at(l).store().digest();
      }));
    }
    CPPUNIT_ASSERT_EQUAL(std::size_t{160}, c.at(l).store().size());
  }

  void testUndecodableCommandIsRefusedOnEveryReplica() {
    Cluster c;
    NodeId l = c.waitLeader();
    Status s = c.at(l).raft().propose("junk", 5s);
    CPPUNIT_ASSERT_EQUAL(Status::Code::kInvalidArgument, s.code());
    s = c.at(l).raft().propose(shoal::manager::encodeStoreCommand(5, "not a changeset"), 5s);
    CPPUNIT_ASSERT(!s.isOk());
    ASSERT_OK(createService(c.at(l), "still-fine"));
    for (NodeId id : {1, 2, 3}) {
      CPPUNIT_ASSERT(eventually([&] {
        return c.at(id).store().version() == c.at(l).store().version() &&
               c.at(id).store().digest() == c.at(l).store().digest();
      }));
    }
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(ReplicatedStoreTest);
