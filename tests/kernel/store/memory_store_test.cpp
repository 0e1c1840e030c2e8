// MemoryStore: CRUD, names, indexes, transactions, the replicated apply, snapshots, digests.
#include <Poco/Checksum.h>
#include <cppunit/extensions/HelperMacros.h>

#include <atomic>
#include <set>
#include <thread>

#include "kernel/common/random.h"
#include "kernel/store/codec.h"
#include "tests/kernel/store/store_test_util.h"

using namespace shoal::store;
using shoal::Status;
using storetest::commit;
using storetest::contains;
using storetest::get;
using storetest::mustCommit;
using storetest::timeAt;

namespace {

std::vector<std::string> ids(const std::vector<ObjectPtr>& objects) {
  std::vector<std::string> out;
  for (const auto& o : objects) out.push_back(o->id);
  return out;
}

using Ids = std::vector<std::string>;

Status create(Tx& tx, Object o) { return tx.create(std::move(o)); }

std::string reseal(std::string bytes) {
  bytes.resize(bytes.size() - 4);
  Poco::Checksum c(Poco::Checksum::TYPE_CRC32);
  c.update(bytes.data(), static_cast<unsigned>(bytes.size()));
  putFixed32(bytes, c.checksum());
  return bytes;
}

// A store with three nodes, two services and five tasks.
void populate(MemoryStore& store) {
  mustCommit(store, [](Tx& tx) {
    Status s;
    if (!(s = create(tx, storetest::node("n1", NodeRole::kManager)))) return s;
    if (!(s = create(tx, storetest::node("n2", NodeRole::kWorker, NodeAvailability::kDrain))))
      return s;
    if (!(s = create(tx, storetest::node("n3")))) return s;
    if (!(s = create(tx, storetest::service("s1", "web")))) return s;
    if (!(s = create(tx, storetest::service("s2", "db")))) return s;
    if (!(s = create(tx, storetest::task("t1", "s1", 1, "n1")))) return s;
    if (!(s = create(tx, storetest::task("t2", "s1", 2, "n3")))) return s;
    if (!(s = create(tx, storetest::task("t3", "s1", 2, "n3", TaskState::kShutdown)))) return s;
    if (!(s = create(tx, storetest::task("t4", "s2", 1, "n1")))) return s;
    return create(tx, storetest::task("t5", "s2", 2, "", TaskState::kRunning));
  });
}

}  // namespace

class MemoryStoreTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(MemoryStoreTest);
  CPPUNIT_TEST(testCreateGetUpdateDelete);
  CPPUNIT_TEST(testNamesAreUniquePerKindExceptTasks);
  CPPUNIT_TEST(testNamesCanMoveWithinOneTransaction);
  CPPUNIT_TEST(testNameUniquenessIsRecheckedAtApply);
  CPPUNIT_TEST(testIndexesAnswerAndFollowChanges);
  CPPUNIT_TEST(testReadYourWritesInsideTx);
  CPPUNIT_TEST(testFailedTransactionProducesNothing);
  CPPUNIT_TEST(testChangesetWithOneBadOpChangesNothing);
  CPPUNIT_TEST(testStaleUpdateConflictNamesObjectAndVersions);
  CPPUNIT_TEST(testRequireGuardsAnObjectOnlyRead);
  CPPUNIT_TEST(testOversizedTransactionsAreRefusedNotTruncated);
  CPPUNIT_TEST(testAlreadyAppliedIndexIsRefused);
  CPPUNIT_TEST(testUndecodableEntryConsumesItsIndex);
  CPPUNIT_TEST(testGroupAppliesInOrderWithOneOutcomeEach);
  CPPUNIT_TEST(testReplicasFedTheSameChangesetsAgree);
  CPPUNIT_TEST(testSnapshotRestoreRoundTrip);
  CPPUNIT_TEST(testCorruptSnapshotLeavesStoreUntouched);
  CPPUNIT_TEST(testReadersSeeWholeChangesetsWhileApplyRuns);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testCreateGetUpdateDelete() {
    MemoryStore store;
    mustCommit(store, [](Tx& tx) { return tx.create(storetest::service("s1", "web")); });
    ObjectPtr s = get(store, Kind::kService, "s1");
    CPPUNIT_ASSERT(s);
    CPPUNIT_ASSERT_EQUAL(uint64_t(1), s->version);
    CPPUNIT_ASSERT_EQUAL(timeAt(1), s->createdNs);
    CPPUNIT_ASSERT_EQUAL(timeAt(1), s->updatedNs);
    CPPUNIT_ASSERT_EQUAL(std::string("web"), s->name);

    mustCommit(store, [&](Tx& tx) {
      Object next = *tx.get(Kind::kService, "s1");
      next.spec = R"({"Mode":{"Replicated":{"Replicas":5}}})";
      next.labels["tier"] = "front";
      return tx.update(std::move(next));
    });
    ObjectPtr s2 = get(store, Kind::kService, "s1");
    CPPUNIT_ASSERT_EQUAL(uint64_t(2), s2->version);
    CPPUNIT_ASSERT_EQUAL(timeAt(1), s2->createdNs);
    CPPUNIT_ASSERT_EQUAL(timeAt(2), s2->updatedNs);
    CPPUNIT_ASSERT_EQUAL(std::string("front"), s2->labels.at("tier"));
    CPPUNIT_ASSERT(contains(s2->spec, "\"Replicas\":5"));
    CPPUNIT_ASSERT_EQUAL(uint64_t(1), s->version);  // the old object is immutable

    mustCommit(store, [](Tx& tx) { return tx.remove(Kind::kService, "s1"); });
    CPPUNIT_ASSERT(!get(store, Kind::kService, "s1"));
    CPPUNIT_ASSERT_EQUAL(uint64_t(3), store.version());
    CPPUNIT_ASSERT_EQUAL(std::size_t(0), store.size());

    Status missing = commit(store, [](Tx& tx) { return tx.remove(Kind::kService, "s1"); });
    CPPUNIT_ASSERT(missing.code() == Status::Code::kNotFound);
    CPPUNIT_ASSERT_EQUAL(std::string("delete: service s1 does not exist"), missing.message());
    Status dup = commit(store, [](Tx& tx) {
      Status s = tx.create(storetest::service("s9", "a"));
      return s ? tx.create(storetest::service("s9", "b")) : s;
    });
    CPPUNIT_ASSERT(dup.code() == Status::Code::kAlreadyExists);
    CPPUNIT_ASSERT_EQUAL(std::string("service s9 already exists"), dup.message());
  }

  void testNamesAreUniquePerKindExceptTasks() {
    MemoryStore store;
    mustCommit(store, [](Tx& tx) { return tx.create(storetest::service("s1", "web")); });
    Status s = commit(store, [](Tx& tx) { return tx.create(storetest::service("s2", "web")); });
    CPPUNIT_ASSERT(s.code() == Status::Code::kAlreadyExists);
    CPPUNIT_ASSERT_EQUAL(std::string("service name \"web\" is already used by service s1"),
                         s.message());
    // Another kind may use the name; tasks may share names.
    mustCommit(store, [](Tx& tx) {
      Object net;
      net.kind = Kind::kNetwork;
      net.id = "net1";
      net.name = "web";
      Status st = tx.create(net);
      if (!st) return st;
      st = tx.create(storetest::task("t1", "s1", 1));
      return st ? tx.create(storetest::task("t2", "s1", 1)) : st;
    });
    store.view([](const ReadView& v) {
      CPPUNIT_ASSERT_EQUAL(std::string("s1"), v.findByName(Kind::kService, "web")->id);
      CPPUNIT_ASSERT_EQUAL(std::string("net1"), v.findByName(Kind::kNetwork, "web")->id);
      CPPUNIT_ASSERT((Ids{"t1", "t2"}) == ids(v.find(Query::byName(Kind::kTask, "s1.1"))));
      CPPUNIT_ASSERT(!v.findByName(Kind::kService, "nope"));
    });
    // Renaming into a taken name is refused too.
    mustCommit(store, [](Tx& tx) { return tx.create(storetest::service("s2", "api")); });
    Status rename = commit(store, [](Tx& tx) {
      Object o = *tx.get(Kind::kService, "s2");
      o.name = "web";
      return tx.update(o);
    });
    CPPUNIT_ASSERT(rename.code() == Status::Code::kAlreadyExists);
  }

  void testNamesCanMoveWithinOneTransaction() {
    MemoryStore store;
    mustCommit(store, [](Tx& tx) { return tx.create(storetest::service("s1", "web")); });
    // Rename s1 away and give its name to a new service, in one transaction.
    mustCommit(store, [](Tx& tx) {
      Object o = *tx.get(Kind::kService, "s1");
      o.name = "web-old";
      Status s = tx.update(o);
      return s ? tx.create(storetest::service("s2", "web")) : s;
    });
    // Delete s2 and reuse its name in the same transaction.
    mustCommit(store, [](Tx& tx) {
      Status s = tx.remove(Kind::kService, "s2");
      return s ? tx.create(storetest::service("s3", "web")) : s;
    });
    store.view([](const ReadView& v) {
      CPPUNIT_ASSERT_EQUAL(std::string("s3"), v.findByName(Kind::kService, "web")->id);
      CPPUNIT_ASSERT_EQUAL(std::string("s1"), v.findByName(Kind::kService, "web-old")->id);
    });
  }

  void testNameUniquenessIsRecheckedAtApply() {
    MemoryStore store;
    // Two writers build against the same view; both look fine on their own.
    auto a = store.prepare([](Tx& tx) { return tx.create(storetest::service("s1", "web")); });
    auto b = store.prepare([](Tx& tx) { return tx.create(storetest::service("s2", "web")); });
    CPPUNIT_ASSERT(a.isOk() && b.isOk());
    CPPUNIT_ASSERT(store.apply(1, timeAt(1), *a).isOk());
    Status s = store.apply(2, timeAt(2), *b);
    CPPUNIT_ASSERT(s.code() == Status::Code::kAlreadyExists);
    CPPUNIT_ASSERT_EQUAL(std::string("changeset at index 2 refused: create of service s2 refused: "
                                     "service name \"web\" is already used by service s1"),
                         s.message());
    CPPUNIT_ASSERT(!get(store, Kind::kService, "s2"));
  }

  void testIndexesAnswerAndFollowChanges() {
    MemoryStore store;
    populate(store);
    store.view([](const ReadView& v) {
      CPPUNIT_ASSERT((Ids{"t1", "t2", "t3"}) == ids(v.tasksByService("s1")));
      CPPUNIT_ASSERT((Ids{"t4", "t5"}) == ids(v.tasksByService("s2")));
      CPPUNIT_ASSERT((Ids{"t1", "t4"}) == ids(v.tasksByNode("n1")));
      CPPUNIT_ASSERT((Ids{"t5"}) == ids(v.tasksByNode("")));  // unassigned
      CPPUNIT_ASSERT((Ids{"t2", "t3"}) == ids(v.tasksBySlot("s1", 2)));
      CPPUNIT_ASSERT((Ids{"t1"}) == ids(v.tasksBySlot("s1", 1)));
      CPPUNIT_ASSERT(v.tasksBySlot("s1", 3).empty());
      CPPUNIT_ASSERT((Ids{"t1", "t2", "t4", "t5"}) ==
                     ids(v.tasksByDesiredState(TaskState::kRunning)));
      CPPUNIT_ASSERT((Ids{"t3"}) == ids(v.tasksByDesiredState(TaskState::kShutdown)));
      CPPUNIT_ASSERT((Ids{"n1"}) == ids(v.nodesByRole(NodeRole::kManager)));
      CPPUNIT_ASSERT((Ids{"n2", "n3"}) == ids(v.nodesByRole(NodeRole::kWorker)));
      CPPUNIT_ASSERT((Ids{"n2"}) == ids(v.nodesByAvailability(NodeAvailability::kDrain)));
      CPPUNIT_ASSERT((Ids{"n1", "n3"}) == ids(v.nodesByAvailability(NodeAvailability::kActive)));
      CPPUNIT_ASSERT(v.nodesByAvailability(NodeAvailability::kPause).empty());
      CPPUNIT_ASSERT((Ids{"s1", "s2"}) == ids(v.list(Kind::kService)));
      CPPUNIT_ASSERT_EQUAL(std::string("s2"), v.findByName(Kind::kService, "db")->id);
    });
    // Move t1 to n2 and shut it down, promote n3, drain n1, delete t4, rename s2.
    mustCommit(store, [](Tx& tx) {
      Object t1 = *tx.get(Kind::kTask, "t1");
      t1.nodeId = "n2";
      t1.desiredState = TaskState::kShutdown;
      t1.slot = 7;
      Object n3 = *tx.get(Kind::kNode, "n3");
      n3.role = NodeRole::kManager;
      Object n1 = *tx.get(Kind::kNode, "n1");
      n1.availability = NodeAvailability::kDrain;
      Object s2 = *tx.get(Kind::kService, "s2");
      s2.name = "database";
      Status s;
      if (!(s = tx.update(t1)) || !(s = tx.update(n3)) || !(s = tx.update(n1)) ||
          !(s = tx.update(s2))) {
        return s;
      }
      return tx.remove(Kind::kTask, "t4");
    });
    store.view([](const ReadView& v) {
      CPPUNIT_ASSERT(v.tasksByNode("n1").empty());
      CPPUNIT_ASSERT((Ids{"t1"}) == ids(v.tasksByNode("n2")));
      CPPUNIT_ASSERT((Ids{"t1"}) == ids(v.tasksBySlot("s1", 7)));
      CPPUNIT_ASSERT(v.tasksBySlot("s1", 1).empty());
      CPPUNIT_ASSERT((Ids{"t1", "t3"}) == ids(v.tasksByDesiredState(TaskState::kShutdown)));
      CPPUNIT_ASSERT((Ids{"t2", "t5"}) == ids(v.tasksByDesiredState(TaskState::kRunning)));
      CPPUNIT_ASSERT((Ids{"t5"}) == ids(v.tasksByService("s2")));
      CPPUNIT_ASSERT((Ids{"n1", "n3"}) == ids(v.nodesByRole(NodeRole::kManager)));
      CPPUNIT_ASSERT((Ids{"n1", "n2"}) == ids(v.nodesByAvailability(NodeAvailability::kDrain)));
      CPPUNIT_ASSERT(!v.findByName(Kind::kService, "db"));
      CPPUNIT_ASSERT_EQUAL(std::string("s2"), v.findByName(Kind::kService, "database")->id);
      CPPUNIT_ASSERT(!v.get(Kind::kTask, "t4"));
      CPPUNIT_ASSERT(v.find(Query::tasksByService("s1")).size() == 3);
      // An index of another kind answers nothing rather than something wrong.
      CPPUNIT_ASSERT(v.find(Query::byName(Kind::kNode, "")).empty());
    });
  }

  void testReadYourWritesInsideTx() {
    MemoryStore store;
    populate(store);
    const std::string before = store.digest();
    auto cs = store.prepare([](Tx& tx) {
      CPPUNIT_ASSERT(tx.create(storetest::task("t9", "s1", 3, "n2")).isOk());
      ObjectPtr t9 = tx.get(Kind::kTask, "t9");
      CPPUNIT_ASSERT(t9);
      CPPUNIT_ASSERT_EQUAL(uint64_t(0), t9->version);
      CPPUNIT_ASSERT((Ids{"t1", "t2", "t3", "t9"}) == ids(tx.tasksByService("s1")));
      CPPUNIT_ASSERT((Ids{"t9"}) == ids(tx.tasksByNode("n2")));

      Object t1 = *tx.get(Kind::kTask, "t1");
      t1.nodeId = "n2";
      CPPUNIT_ASSERT(tx.update(t1).isOk());
      CPPUNIT_ASSERT((Ids{"t1", "t9"}) == ids(tx.tasksByNode("n2")));
      CPPUNIT_ASSERT((Ids{"t4"}) == ids(tx.tasksByNode("n1")));
      CPPUNIT_ASSERT_EQUAL(std::string("n2"), tx.get(Kind::kTask, "t1")->nodeId);
      // A second update passes the version the object was read at, again.
      Object again = *tx.get(Kind::kTask, "t1");
      CPPUNIT_ASSERT_EQUAL(uint64_t(1), again.version);
      again.desiredState = TaskState::kShutdown;
      CPPUNIT_ASSERT(tx.update(again).isOk());
      CPPUNIT_ASSERT((Ids{"t1", "t3"}) == ids(tx.tasksByDesiredState(TaskState::kShutdown)));

      CPPUNIT_ASSERT(tx.remove(Kind::kTask, "t2").isOk());
      CPPUNIT_ASSERT(!tx.get(Kind::kTask, "t2"));
      CPPUNIT_ASSERT((Ids{"t1", "t3", "t9"}) == ids(tx.tasksByService("s1")));
      Status gone = tx.update(storetest::task("t2", "s1", 2));
      CPPUNIT_ASSERT(gone.code() == Status::Code::kNotFound);
      CPPUNIT_ASSERT(contains(gone.message(), "was deleted in this transaction"));

      // Created then deleted: no operation at all.
      CPPUNIT_ASSERT(tx.create(storetest::task("tmp", "s1", 9)).isOk());
      CPPUNIT_ASSERT(tx.remove(Kind::kTask, "tmp").isOk());
      CPPUNIT_ASSERT_EQUAL(std::size_t(3), tx.size());  // t9, t1, t2
      return Status::ok();
    });
    CPPUNIT_ASSERT(cs.isOk());
    // Nothing reached the store yet.
    CPPUNIT_ASSERT_EQUAL(before, store.digest());
    CPPUNIT_ASSERT_EQUAL(std::size_t(3), cs->ops.size());
    CPPUNIT_ASSERT(cs->ops[0].type == OpType::kCreate && cs->ops[0].object.id == "t9");
    CPPUNIT_ASSERT(cs->ops[1].type == OpType::kUpdate && cs->ops[1].expectedVersion == 1);
    CPPUNIT_ASSERT(cs->ops[2].type == OpType::kDelete && cs->ops[2].object.id == "t2");
    CPPUNIT_ASSERT(store.apply(2, timeAt(2), *cs).isOk());
    store.view([](const ReadView& v) {
      CPPUNIT_ASSERT((Ids{"t1", "t9"}) == ids(v.tasksByNode("n2")));
      CPPUNIT_ASSERT(!v.get(Kind::kTask, "t2"));
      CPPUNIT_ASSERT(v.get(Kind::kTask, "t1")->desiredState == TaskState::kShutdown);
    });
  }

  void testFailedTransactionProducesNothing() {
    MemoryStore store;
    populate(store);
    auto cs = store.prepare([](Tx& tx) {
      CPPUNIT_ASSERT(tx.create(storetest::service("s3", "cache")).isOk());
      Object bad = storetest::service("s4", "broken");
      bad.spec = "{not json";
      return tx.create(bad);
    });
    CPPUNIT_ASSERT(!cs.isOk());
    CPPUNIT_ASSERT(cs.status().code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT(contains(cs.status().message(), "create: service s4: spec is not valid JSON"));
    CPPUNIT_ASSERT(!get(store, Kind::kService, "s3"));
  }

  void testChangesetWithOneBadOpChangesNothing() {
    MemoryStore store;
    populate(store);
    const std::string before = store.digest();
    auto watch = store.watch(KindSet::all());
    CPPUNIT_ASSERT(watch.isOk());
    auto refuse = [&](ChangeSet cs, Status::Code code, const std::string& text) {
      uint64_t index = store.version() + 1;
      Status s = store.apply(index, timeAt(index), cs);
      CPPUNIT_ASSERT_MESSAGE(s.toString(), s.code() == code);
      CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), text));
      CPPUNIT_ASSERT_EQUAL(before, store.digest());
      CPPUNIT_ASSERT_EQUAL(index, store.version());  // the index is consumed on every replica
    };
    ObjectPtr t1 = get(store, Kind::kTask, "t1");
    Object moved = *t1;
    moved.nodeId = "n2";
    Op good1{OpType::kCreate, 0, storetest::service("s3", "cache")};
    Op good2{OpType::kUpdate, 1, moved};
    Op good3{OpType::kDelete, 1, storetest::task("t2", "s1", 2)};

    Op stale{OpType::kUpdate, 0, *get(store, Kind::kService, "s1")};
    refuse(ChangeSet{{good1, good2, good3, stale}}, Status::Code::kConflict,
           "update of service s1 (\"web\") refused: it is at version 1, the change was based on "
           "version 0");
    Op badJson = good1;
    badJson.object.id = "s4";
    badJson.object.name = "other";
    badJson.object.spec = "{";
    refuse(ChangeSet{{good1, good2, badJson}}, Status::Code::kInvalidArgument,
           "create: service s4: spec is not valid JSON");
    refuse(ChangeSet{{good1, good2, good2}}, Status::Code::kInvalidArgument,
           "more than one operation on task t1");
    Op missing{OpType::kDelete, 1, storetest::task("nope", "s1", 1)};
    refuse(ChangeSet{{good1, missing}}, Status::Code::kNotFound,
           "delete of task nope refused: it does not exist");
    Op exists{OpType::kCreate, 0, storetest::node("n1")};
    refuse(ChangeSet{{good1, exists}}, Status::Code::kAlreadyExists, "node n1 already exists");
    Op twin = good1;
    twin.object.id = "s5";
    refuse(ChangeSet{{good1, twin}}, Status::Code::kAlreadyExists,
           "service name \"cache\" is given to both service s3 and service s5 in one changeset");
    // Nothing was published either.
    auto ev = (*watch)->next(std::chrono::milliseconds(0));
    CPPUNIT_ASSERT(ev.status().code() == Status::Code::kTimeout);
    // The good ops alone go through.
    uint64_t index = store.version() + 1;
    CPPUNIT_ASSERT(store.apply(index, timeAt(index), ChangeSet{{good1, good2, good3}}).isOk());
    CPPUNIT_ASSERT(get(store, Kind::kService, "s3"));
    CPPUNIT_ASSERT(!get(store, Kind::kTask, "t2"));
  }

  void testGroupAppliesInOrderWithOneOutcomeEach() {
    MemoryStore store;
    mustCommit(store, [](Tx& tx) { return tx.create(storetest::service("s1", "web")); });
    ObjectPtr seen = get(store, Kind::kService, "s1");
    auto watch = store.watch(KindSet{Kind::kService}, std::nullopt);
    CPPUNIT_ASSERT(watch.isOk());
    auto scale = [&](const std::string& replicas) {
      auto cs = store.prepare([&](Tx& tx) {
        Object o = *seen;
        o.spec = R"({"Mode":{"Replicated":{"Replicas":)" + replicas + "}}}";
        return tx.update(o);
      });
      return encodeChangeSet(*cs);
    };
    const std::string first = scale("5");
    const std::string second = scale("7");  // built on the same read: must conflict
    const std::string fresh = encodeChangeSet(
        *store.prepare([](Tx& tx) { return tx.create(storetest::service("s2", "db")); }));
    const std::string taken = encodeChangeSet(
        *store.prepare([](Tx& tx) { return tx.create(storetest::service("s3", "db")); }));
    std::vector<Status> out = store.applyGroup(2, {{timeAt(2), first},
                                                   {timeAt(2), second},
                                                   {timeAt(2), "junk"},
                                                   {timeAt(2), fresh},
                                                   {timeAt(2), taken}});
    CPPUNIT_ASSERT_EQUAL(std::size_t{5}, out.size());
    CPPUNIT_ASSERT(out[0].isOk());
    CPPUNIT_ASSERT(out[1].code() == Status::Code::kConflict);  // sees the first one's result
    CPPUNIT_ASSERT(out[2].code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT(out[3].isOk());
    CPPUNIT_ASSERT(out[4].code() == Status::Code::kAlreadyExists);  // name "db" just taken
    CPPUNIT_ASSERT_EQUAL(uint64_t{2}, store.version());
    CPPUNIT_ASSERT(contains(get(store, Kind::kService, "s1")->spec, "5"));
    CPPUNIT_ASSERT_EQUAL(uint64_t{2}, get(store, Kind::kService, "s2")->version);
    CPPUNIT_ASSERT(!get(store, Kind::kService, "s3"));
    // Watches see the whole entry as one step at its index.
    auto batch = (*watch)->nextBatch(std::chrono::seconds(1));
    CPPUNIT_ASSERT(batch.isOk());
    CPPUNIT_ASSERT_EQUAL(uint64_t{2}, batch->version);
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, batch->events.size());
    // An index already applied refuses the whole group.
    out = store.applyGroup(2, {{timeAt(2), fresh}});
    CPPUNIT_ASSERT(out[0].code() == Status::Code::kFailedPrecondition);
  }

  void testStaleUpdateConflictNamesObjectAndVersions() {
    MemoryStore store;
    mustCommit(store, [](Tx& tx) { return tx.create(storetest::service("s1", "web")); });
    ObjectPtr seen = get(store, Kind::kService, "s1");  // read at version 1
    auto scale = [&](const std::string& replicas) {
      return store.prepare([&](Tx& tx) {
        Object o = *seen;
        o.spec = R"({"Mode":{"Replicated":{"Replicas":)" + replicas + "}}}";
        return tx.update(o);
      });
    };
    auto first = scale("5");
    auto second = scale("7");
    CPPUNIT_ASSERT(first.isOk() && second.isOk());
    CPPUNIT_ASSERT(store.apply(2, timeAt(2), *first).isOk());
    Status s = store.apply(3, timeAt(3), *second);
    CPPUNIT_ASSERT(s.code() == Status::Code::kConflict);
    CPPUNIT_ASSERT_EQUAL(std::string("changeset at index 3 refused: update of service s1 "
                                     "(\"web\") refused: it is at version 2, the change was "
                                     "based on version 1"),
                         s.message());
    CPPUNIT_ASSERT(contains(get(store, Kind::kService, "s1")->spec, "5"));
    // A writer holding the stale object is told early, by the Tx.
    Status early = store.prepare([&](Tx& tx) { return tx.update(*seen); }).status();
    CPPUNIT_ASSERT(early.code() == Status::Code::kConflict);
    CPPUNIT_ASSERT_EQUAL(std::string("update of service s1 refused: it is at version 2, the "
                                     "update was based on version 1"),
                         early.message());
    Status del = store.prepare([](Tx& tx) { return tx.remove(Kind::kService, "s1", 1); }).status();
    CPPUNIT_ASSERT(del.code() == Status::Code::kConflict);
    CPPUNIT_ASSERT(
        contains(del.message(), "it is at version 2, the delete was based on version 1"));
  }

  void testRequireGuardsAnObjectOnlyRead() {
    MemoryStore store;
    populate(store);
    // A scheduler places t5 on n3 only if n3 has not changed since it looked.
    auto place = store.prepare([](Tx& tx) {
      Status s = tx.require(Kind::kNode, "n3");
      if (!s) return s;
      Object t5 = *tx.get(Kind::kTask, "t5");
      t5.nodeId = "n3";
      return tx.update(t5);
    });
    CPPUNIT_ASSERT(place.isOk());
    CPPUNIT_ASSERT(place->ops[0].type == OpType::kCheck);
    mustCommit(store, [](Tx& tx) {
      Object n3 = *tx.get(Kind::kNode, "n3");
      n3.availability = NodeAvailability::kDrain;
      return tx.update(n3);
    });
    Status s = store.apply(3, timeAt(3), *place);
    CPPUNIT_ASSERT(s.code() == Status::Code::kConflict);
    CPPUNIT_ASSERT(contains(s.message(), "check of node n3 refused: it is at version 2"));
    CPPUNIT_ASSERT_EQUAL(std::string(""), get(store, Kind::kTask, "t5")->nodeId);
    CPPUNIT_ASSERT(
        store.prepare([](Tx& tx) { return tx.require(Kind::kNode, "zz"); }).status().code() ==
        Status::Code::kNotFound);
  }

  void testOversizedTransactionsAreRefusedNotTruncated() {
    StoreLimits limits;
    limits.maxTxObjects = 5;
    limits.maxTxBytes = 2000;
    MemoryStore store(limits);
    auto many = store.prepare([](Tx& tx) {
      for (int i = 0; i < 6; ++i) {
        Status s = tx.create(storetest::task("t" + std::to_string(i), "s1", i));
        if (!s) return s;
      }
      return Status::ok();
    });
    CPPUNIT_ASSERT(many.status().code() == Status::Code::kResourceExhausted);
    CPPUNIT_ASSERT_EQUAL(std::string("transaction too large: it would change 6 objects (limit 5)"),
                         many.status().message());
    auto big = store.prepare([](Tx& tx) {
      Object o = storetest::service("s1", "web");
      o.spec = "{\"Blob\":\"" + std::string(3000, 'x') + "\"}";
      return tx.create(o);
    });
    CPPUNIT_ASSERT(big.status().code() == Status::Code::kResourceExhausted);
    CPPUNIT_ASSERT(contains(big.status().message(), "bytes (limit 2000)"));
    // The same bounds hold at apply(), for changesets that did not come from a Tx.
    ChangeSet cs;
    for (int i = 0; i < 6; ++i) {
      cs.ops.push_back(Op{OpType::kCreate, 0, storetest::task("t" + std::to_string(i), "s1", i)});
    }
    Status s = store.apply(1, timeAt(1), cs);
    CPPUNIT_ASSERT(s.code() == Status::Code::kResourceExhausted);
    CPPUNIT_ASSERT(contains(s.message(), "it changes 6 objects (limit 5)"));
    CPPUNIT_ASSERT_EQUAL(std::size_t(0), store.size());
    cs.ops.pop_back();
    CPPUNIT_ASSERT(store.apply(2, timeAt(2), cs).isOk());
    CPPUNIT_ASSERT_EQUAL(std::size_t(5), store.size());
  }

  void testAlreadyAppliedIndexIsRefused() {
    MemoryStore store;
    populate(store);
    const std::string before = store.digest();
    ChangeSet cs{{Op{OpType::kCreate, 0, storetest::service("s3", "cache")}}};
    Status s = store.apply(1, timeAt(1), cs);
    CPPUNIT_ASSERT(s.code() == Status::Code::kFailedPrecondition);
    CPPUNIT_ASSERT_EQUAL(std::string("Raft index 1 is already applied (the store is at version 1)"),
                         s.message());
    CPPUNIT_ASSERT_EQUAL(before, store.digest());
    // An empty changeset still moves the version.
    CPPUNIT_ASSERT(store.apply(5, timeAt(5), ChangeSet{}).isOk());
    CPPUNIT_ASSERT_EQUAL(uint64_t(5), store.version());
    CPPUNIT_ASSERT_EQUAL(before, store.digest());
  }

  void testUndecodableEntryConsumesItsIndex() {
    MemoryStore store;
    populate(store);
    Status s = store.applyEncoded(4, timeAt(4), "garbage!garbage!");
    CPPUNIT_ASSERT(s.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT(contains(s.message(), "changeset at index 4 refused: corrupt changeset"));
    CPPUNIT_ASSERT_EQUAL(uint64_t(4), store.version());
  }

  // The replication contract: stores fed the same committed entries end identical, including
  // the entries they refuse (built against stale views, so some conflict).
  void testReplicasFedTheSameChangesetsAgree() {
    MemoryStore a, b, c;
    shoal::SeededRandom random(2024);
    std::vector<ChangeSet> pending;  // prepared earlier, applied later: the stale ones
    uint64_t index = 0;
    int refused = 0;
    std::string snapshotAtHalf;
    for (int round = 0; round < 400; ++round) {
      auto cs = a.prepare([&](Tx& tx) {
        int ops = 1 + static_cast<int>(random.uniform(5));
        std::set<std::string> touched;  // one op per object (ids are not reused in a Tx)
        for (int i = 0; i < ops; ++i) {
          std::string id = "t" + std::to_string(random.uniform(40));
          if (!touched.insert(id).second) continue;
          ObjectPtr cur = tx.get(Kind::kTask, id);
          Status s;
          if (!cur) {
            s = tx.create(storetest::task(id, "s" + std::to_string(random.uniform(3)),
                                          random.uniform(4),
                                          "n" + std::to_string(random.uniform(3))));
          } else if (random.uniform(4) == 0) {
            s = tx.remove(Kind::kTask, id);
          } else {
            Object o = *cur;
            o.nodeId = "n" + std::to_string(random.uniform(3));
            o.desiredState = random.uniform(2) ? TaskState::kRunning : TaskState::kShutdown;
            o.labels["round"] = std::to_string(round);
            s = tx.update(o);
          }
          if (!s) return s;
        }
        return Status::ok();
      });
      CPPUNIT_ASSERT_MESSAGE(cs.status().toString(), cs.isOk());
      pending.push_back(std::move(*cs));
      // Apply the oldest pending changeset, sometimes letting several pile up.
      while (!pending.empty() && (random.uniform(3) != 0 || pending.size() > 3)) {
        std::string bytes = encodeChangeSet(pending.front());
        pending.erase(pending.begin());
        ++index;
        Status sa = a.applyEncoded(index, timeAt(index), bytes);
        Status sb = b.applyEncoded(index, timeAt(index), bytes);
        Status sc = c.applyEncoded(index, timeAt(index), bytes);
        CPPUNIT_ASSERT_EQUAL(sa.toString(), sb.toString());
        CPPUNIT_ASSERT_EQUAL(sa.toString(), sc.toString());
        if (!sa) ++refused;
      }
      if (round == 200) {
        // c catches up from a snapshot, as a lagging follower would.
        snapshotAtHalf = a.snapshot();
        CPPUNIT_ASSERT(c.restore(snapshotAtHalf).isOk());
      }
    }
    CPPUNIT_ASSERT_MESSAGE("the workload should produce conflicts", refused > 10);
    CPPUNIT_ASSERT_MESSAGE("and successes", a.size() > 10);
    CPPUNIT_ASSERT_EQUAL(a.digest(), b.digest());
    CPPUNIT_ASSERT_EQUAL(a.digest(), c.digest());
    CPPUNIT_ASSERT_EQUAL(a.version(), c.version());
    CPPUNIT_ASSERT(a.snapshot() == b.snapshot());
    CPPUNIT_ASSERT(a.snapshot() == c.snapshot());
    // And the digest does see differences.
    MemoryStore d;
    CPPUNIT_ASSERT(d.restore(snapshotAtHalf).isOk());
    CPPUNIT_ASSERT(d.digest() != a.digest());
  }

  void testSnapshotRestoreRoundTrip() {
    MemoryStore store;
    populate(store);
    mustCommit(store, [](Tx& tx) {
      Object s1 = *tx.get(Kind::kService, "s1");
      s1.labels["a"] = "b";
      s1.status = R"({"UpdateStatus":{"State":"completed"}})";
      return tx.update(s1);
    });
    std::string snap = store.snapshot();
    MemoryStore other;
    mustCommit(other, [](Tx& tx) { return tx.create(storetest::service("zz", "to-be-replaced")); });
    CPPUNIT_ASSERT(other.restore(snap).isOk());
    CPPUNIT_ASSERT_EQUAL(store.digest(), other.digest());
    CPPUNIT_ASSERT_EQUAL(uint64_t(2), other.version());
    CPPUNIT_ASSERT_EQUAL(store.size(), other.size());
    CPPUNIT_ASSERT(!get(other, Kind::kService, "zz"));
    other.view([](const ReadView& v) {
      CPPUNIT_ASSERT((Ids{"t1", "t4"}) == ids(v.tasksByNode("n1")));
      CPPUNIT_ASSERT((Ids{"n2"}) == ids(v.nodesByAvailability(NodeAvailability::kDrain)));
      CPPUNIT_ASSERT_EQUAL(std::string("s1"), v.findByName(Kind::kService, "web")->id);
      ObjectPtr s1 = v.get(Kind::kService, "s1");
      CPPUNIT_ASSERT_EQUAL(uint64_t(2), s1->version);
      CPPUNIT_ASSERT_EQUAL(timeAt(1), s1->createdNs);
      CPPUNIT_ASSERT_EQUAL(timeAt(2), s1->updatedNs);
    });
    // The restored store carries on like the original.
    mustCommit(other, [](Tx& tx) { return tx.remove(Kind::kTask, "t1"); });
    CPPUNIT_ASSERT_EQUAL(uint64_t(3), other.version());
    CPPUNIT_ASSERT(other.snapshot() != snap);
    CPPUNIT_ASSERT(MemoryStore().restore(MemoryStore().snapshot()).isOk());  // empty store
  }

  void testCorruptSnapshotLeavesStoreUntouched() {
    MemoryStore source;
    populate(source);
    const std::string snap = source.snapshot();
    MemoryStore store;
    mustCommit(store, [](Tx& tx) { return tx.create(storetest::service("keep", "me")); });
    const std::string before = store.digest();
    auto refused = [&](const std::string& bytes, const std::string& text) {
      Status s = store.restore(bytes);
      CPPUNIT_ASSERT_MESSAGE("accepted a corrupt snapshot", !s.isOk());
      CPPUNIT_ASSERT(s.code() == Status::Code::kInvalidArgument);
      CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), text));
      CPPUNIT_ASSERT_EQUAL(before, store.digest());
      CPPUNIT_ASSERT_EQUAL(uint64_t(1), store.version());
    };
    for (std::size_t n = 0; n < snap.size(); n += 7) refused(snap.substr(0, n), "");
    for (std::size_t i = 0; i < snap.size(); i += 3) {
      std::string bad = snap;
      bad[i] = static_cast<char>(bad[i] ^ 0x20);
      refused(bad, "");
    }
    std::string flipped = snap;
    flipped[30] ^= 1;
    refused(flipped, "corrupt snapshot: checksum mismatch");
    refused(std::string("SHCS") + snap.substr(4), "do not start with \"SHSN\"");
    std::string future = snap;
    future[4] = 9;
    refused(reseal(future), "snapshot format version 9 is not supported");

    // Well-formed bytes with meaningless content: a duplicate id, a duplicate name, an
    // invalid object, a version beyond the snapshot's.
    auto build = [](uint64_t version, const std::vector<Object>& objects) {
      std::string s = "SHSN";
      s += '\x01';
      putVarint(s, version);
      putVarint(s, objects.size());
      for (const auto& o : objects) encodeObject(o, s);
      s += "0000";
      return reseal(s);
    };
    Object s1 = storetest::service("s1", "web");
    s1.version = 3;
    Object s2 = storetest::service("s2", "web");
    s2.version = 3;
    refused(build(5, {s1, s1}), "service s1 appears twice");
    refused(build(5, {s1, s2}), "service name \"web\" is used twice");
    refused(build(2, {s1}), "service s1 has version 3, outside the snapshot's 1..2");
    Object bad = s1;
    bad.spec = "nope";
    refused(build(5, {bad}), "service s1: spec is not valid JSON");
    std::string trailing = build(5, {s1});
    trailing.insert(trailing.size() - 4, "x");
    refused(reseal(trailing), "1 unexpected bytes after the last object");
    s2.name = "api";
    CPPUNIT_ASSERT(store.restore(build(5, {s1, s2})).isOk());  // the builder itself is sound
    CPPUNIT_ASSERT_EQUAL(uint64_t(5), store.version());
    CPPUNIT_ASSERT(store.restore(snap).isOk());
    CPPUNIT_ASSERT_EQUAL(source.digest(), store.digest());
  }

  // Readers never see half a changeset: each changeset creates two tasks or flips both.
  void testReadersSeeWholeChangesetsWhileApplyRuns() {
    MemoryStore store;
    std::atomic<bool> stop{false};
    std::atomic<int> views{0};
    std::atomic<bool> torn{false};
    std::vector<std::thread> readers;
    for (int r = 0; r < 2; ++r) {
      readers.emplace_back([&] {
        while (!stop) {
          store.view([&](const ReadView& v) {
            auto all = v.list(Kind::kTask);
            auto running = v.tasksByDesiredState(TaskState::kRunning);
            auto shut = v.tasksByDesiredState(TaskState::kShutdown);
            if (all.size() % 2 != 0 || running.size() % 2 != 0 ||
                running.size() + shut.size() != all.size()) {
              torn = true;
            }
          });
          ++views;
        }
      });
    }
    for (int i = 0; i < 1000; ++i) {
      mustCommit(store, [&](Tx& tx) {
        if (i % 2 == 0) {
          Status s = tx.create(storetest::task("a" + std::to_string(i), "s1", 1));
          return s ? tx.create(storetest::task("b" + std::to_string(i), "s1", 2)) : s;
        }
        for (const std::string& id : {"a" + std::to_string(i - 1), "b" + std::to_string(i - 1)}) {
          Object o = *tx.get(Kind::kTask, id);
          o.desiredState = TaskState::kShutdown;
          Status s = tx.update(o);
          if (!s) return s;
        }
        return Status::ok();
      });
    }
    while (views.load() < 50) std::this_thread::yield();
    stop = true;
    for (auto& t : readers) t.join();
    CPPUNIT_ASSERT(!torn);
    CPPUNIT_ASSERT_EQUAL(std::size_t(1000), store.size());
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(MemoryStoreTest);
