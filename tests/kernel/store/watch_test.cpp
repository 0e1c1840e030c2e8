// Watches: replay from a version, kind filtering, cut-off of slow subscribers with a resume
// version, too-old versions, cancellation, and apply() never waiting for a watcher.
#include <cppunit/extensions/HelperMacros.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "tests/kernel/store/store_test_util.h"

using namespace shoal::store;
using namespace std::chrono_literals;
using shoal::Status;
using storetest::contains;
using storetest::mustCommit;
using storetest::timeAt;

namespace {

std::unique_ptr<Watch> mustWatch(MemoryStore& store, KindSet kinds,
                                 std::optional<uint64_t> from = std::nullopt) {
  auto w = store.watch(kinds, from);
  CPPUNIT_ASSERT_MESSAGE(w.status().toString(), w.isOk());
  return std::move(*w);
}

EventBatch mustBatch(Watch& w) {
  auto b = w.nextBatch(2s);
  CPPUNIT_ASSERT_MESSAGE(b.status().toString(), b.isOk());
  return std::move(*b);
}

void createService(MemoryStore& store, int n) {
  mustCommit(store, [&](Tx& tx) {
    return tx.create(storetest::service("s" + std::to_string(n), "svc" + std::to_string(n)));
  });
}

void createTask(MemoryStore& store, int n) {
  mustCommit(store,
             [&](Tx& tx) { return tx.create(storetest::task("t" + std::to_string(n), "s1", 1)); });
}

}  // namespace

class WatchTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(WatchTest);
  CPPUNIT_TEST(testReplayFromVersionThenLive);
  CPPUNIT_TEST(testOnlyChosenKindsAreDelivered);
  CPPUNIT_TEST(testEventsCarryObjectAndPrevious);
  CPPUNIT_TEST(testNextHandsOutABatchInOrder);
  CPPUNIT_TEST(testSlowSubscriberIsCutOffWithResumeVersion);
  CPPUNIT_TEST(testTooOldVersionIsRefusedWithWhereToResume);
  CPPUNIT_TEST(testIdleWatchOfOtherKindsSurvivesHistoryTrim);
  CPPUNIT_TEST(testApplyNeverWaitsForWatchers);
  CPPUNIT_TEST(testCancelWakesABlockedConsumer);
  CPPUNIT_TEST(testClosingTheStoreEndsWatches);
  CPPUNIT_TEST(testRestoreEndsWatches);
  CPPUNIT_TEST(testViewAndWatchHasNoGapAndNoOverlap);
  CPPUNIT_TEST(testEmptyKindSetIsRefused);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testReplayFromVersionThenLive() {
    MemoryStore store;
    for (int i = 1; i <= 5; ++i) createService(store, i);
    auto w = mustWatch(store, KindSet{Kind::kService}, 2);
    for (uint64_t v = 3; v <= 5; ++v) {
      EventBatch b = mustBatch(*w);
      CPPUNIT_ASSERT_EQUAL(v, b.version);
      CPPUNIT_ASSERT_EQUAL(std::size_t(1), b.events.size());
      CPPUNIT_ASSERT(b.events[0].type == EventType::kCreated);
      CPPUNIT_ASSERT_EQUAL("s" + std::to_string(v), b.events[0].object->id);
      CPPUNIT_ASSERT_EQUAL(v, b.events[0].version);
    }
    CPPUNIT_ASSERT(w->nextBatch(0ms).status().code() == Status::Code::kTimeout);
    createService(store, 6);
    CPPUNIT_ASSERT_EQUAL(uint64_t(6), mustBatch(*w).version);
    CPPUNIT_ASSERT_EQUAL(uint64_t(6), w->resumeVersion());
    // Default start: now.
    auto now = mustWatch(store, KindSet{Kind::kService});
    CPPUNIT_ASSERT(now->nextBatch(0ms).status().code() == Status::Code::kTimeout);
    // A version ahead of the store: only later changes.
    auto ahead = mustWatch(store, KindSet{Kind::kService}, 7);
    createService(store, 7);
    createService(store, 8);
    CPPUNIT_ASSERT_EQUAL(uint64_t(8), mustBatch(*ahead).version);
  }

  void testOnlyChosenKindsAreDelivered() {
    MemoryStore store;
    auto tasks = mustWatch(store, KindSet{Kind::kTask}, 0);
    auto nodesAndServices = mustWatch(store, KindSet{Kind::kNode, Kind::kService}, 0);
    mustCommit(store, [](Tx& tx) {  // 1: a service and a task
      Status s = tx.create(storetest::service("s1", "web"));
      return s ? tx.create(storetest::task("t1", "s1", 1)) : s;
    });
    mustCommit(store, [](Tx& tx) { return tx.create(storetest::node("n1")); });  // 2
    mustCommit(store, [](Tx& tx) {                                               // 3
      Object t = *tx.get(Kind::kTask, "t1");
      t.nodeId = "n1";
      return tx.update(t);
    });
    EventBatch b = mustBatch(*tasks);
    CPPUNIT_ASSERT_EQUAL(uint64_t(1), b.version);
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), b.events.size());
    CPPUNIT_ASSERT_EQUAL(std::string("t1"), b.events[0].object->id);
    b = mustBatch(*tasks);
    CPPUNIT_ASSERT_EQUAL(uint64_t(3), b.version);  // the node-only changeset is skipped
    CPPUNIT_ASSERT(b.events[0].type == EventType::kUpdated);
    CPPUNIT_ASSERT(tasks->nextBatch(0ms).status().code() == Status::Code::kTimeout);
    CPPUNIT_ASSERT_EQUAL(uint64_t(3), tasks->resumeVersion());

    b = mustBatch(*nodesAndServices);
    CPPUNIT_ASSERT_EQUAL(uint64_t(1), b.version);
    CPPUNIT_ASSERT_EQUAL(std::string("s1"), b.events.at(0).object->id);
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), b.events.size());
    b = mustBatch(*nodesAndServices);
    CPPUNIT_ASSERT_EQUAL(uint64_t(2), b.version);
    CPPUNIT_ASSERT_EQUAL(std::string("n1"), b.events.at(0).object->id);
    CPPUNIT_ASSERT(nodesAndServices->nextBatch(0ms).status().code() == Status::Code::kTimeout);
    CPPUNIT_ASSERT_EQUAL(uint64_t(3), nodesAndServices->resumeVersion());
  }

  void testEventsCarryObjectAndPrevious() {
    MemoryStore store;
    auto w = mustWatch(store, KindSet::all());
    mustCommit(store, [](Tx& tx) { return tx.create(storetest::task("t1", "s1", 1)); });
    mustCommit(store, [](Tx& tx) {
      Object t = *tx.get(Kind::kTask, "t1");
      t.desiredState = TaskState::kShutdown;
      return tx.update(t);
    });
    mustCommit(store, [](Tx& tx) { return tx.remove(Kind::kTask, "t1"); });
    Event created = mustBatch(*w).events.at(0);
    CPPUNIT_ASSERT(created.type == EventType::kCreated && !created.previous);
    CPPUNIT_ASSERT_EQUAL(uint64_t(1), created.object->version);
    Event updated = mustBatch(*w).events.at(0);
    CPPUNIT_ASSERT(updated.type == EventType::kUpdated);
    CPPUNIT_ASSERT(updated.object->desiredState == TaskState::kShutdown);
    CPPUNIT_ASSERT(updated.previous->desiredState == TaskState::kRunning);
    CPPUNIT_ASSERT_EQUAL(uint64_t(1), updated.previous->version);
    Event deleted = mustBatch(*w).events.at(0);
    CPPUNIT_ASSERT(deleted.type == EventType::kDeleted);
    CPPUNIT_ASSERT_EQUAL(uint64_t(3), deleted.version);
    CPPUNIT_ASSERT_EQUAL(uint64_t(2), deleted.object->version);  // as it was last stored
    CPPUNIT_ASSERT_EQUAL(std::string("deleted"), std::string(eventTypeName(deleted.type)));
  }

  void testNextHandsOutABatchInOrder() {
    MemoryStore store;
    auto w = mustWatch(store, KindSet{Kind::kTask});
    mustCommit(store, [](Tx& tx) {
      for (const char* id : {"tc", "ta", "tb"}) {
        Status s = tx.create(storetest::task(id, "s1", 1));
        if (!s) return s;
      }
      return Status::ok();
    });
    std::vector<std::string> order;
    for (int i = 0; i < 3; ++i) {
      auto ev = w->next(2s);
      CPPUNIT_ASSERT(ev.isOk());
      CPPUNIT_ASSERT_EQUAL(uint64_t(1), ev->version);
      order.push_back(ev->object->id);
      // Mid-batch, resuming must not skip the rest of it.
      CPPUNIT_ASSERT_EQUAL(uint64_t(i < 2 ? 0 : 1), w->resumeVersion());
    }
    CPPUNIT_ASSERT((std::vector<std::string>{"tc", "ta", "tb"}) == order);  // changeset order
  }

  void testSlowSubscriberIsCutOffWithResumeVersion() {
    StoreLimits limits;
    limits.watchQueueEvents = 10;
    MemoryStore store(limits);
    auto slow = mustWatch(store, KindSet{Kind::kTask});
    for (int i = 1; i <= 3; ++i) createTask(store, i);
    for (int i = 0; i < 3; ++i) mustBatch(*slow);         // it keeps up for a while...
    for (int i = 4; i <= 20; ++i) createTask(store, i);   // ...then stops reading
    CPPUNIT_ASSERT_EQUAL(uint64_t(20), store.version());  // apply went on regardless
    auto r = slow->nextBatch(0ms);
    CPPUNIT_ASSERT(r.status().code() == Status::Code::kResourceExhausted);
    CPPUNIT_ASSERT_EQUAL(
        std::string("watch fell behind: 11 events waiting (limit 10); resume from version 3"),
        r.status().message());
    CPPUNIT_ASSERT_EQUAL(uint64_t(3), slow->resumeVersion());
    // The watch stays finished...
    CPPUNIT_ASSERT(slow->nextBatch(0ms).status().code() == Status::Code::kResourceExhausted);
    // ...and a new one from the resume version misses nothing.
    auto again = mustWatch(store, KindSet{Kind::kTask}, slow->resumeVersion());
    for (uint64_t v = 4; v <= 20; ++v) {
      EventBatch b = mustBatch(*again);
      CPPUNIT_ASSERT_EQUAL(v, b.version);
      CPPUNIT_ASSERT_EQUAL("t" + std::to_string(v), b.events.at(0).object->id);
    }
  }

  void testTooOldVersionIsRefusedWithWhereToResume() {
    StoreLimits limits;
    limits.historyChangeSets = 5;
    MemoryStore store(limits);
    for (int i = 1; i <= 10; ++i) createService(store, i);
    auto old = store.watch(KindSet::all(), 2);
    CPPUNIT_ASSERT(!old.isOk());
    CPPUNIT_ASSERT(old.status().code() == Status::Code::kFailedPrecondition);
    CPPUNIT_ASSERT_EQUAL(std::string("version 2 is older than the history kept (oldest 5); "
                                     "re-read the store and resume from version 10"),
                         old.status().message());
    auto oldest = mustWatch(store, KindSet::all(), 5);
    for (uint64_t v = 6; v <= 10; ++v) CPPUNIT_ASSERT_EQUAL(v, mustBatch(*oldest).version);
  }

  // A watch with nothing to read is never cut off, however much of other kinds goes by.
  void testIdleWatchOfOtherKindsSurvivesHistoryTrim() {
    StoreLimits limits;
    limits.historyChangeSets = 5;
    limits.watchQueueEvents = 3;
    MemoryStore store(limits);
    auto nodes = mustWatch(store, KindSet{Kind::kNode});
    for (int i = 1; i <= 50; ++i) createTask(store, i);
    mustCommit(store, [](Tx& tx) { return tx.create(storetest::node("n1")); });
    EventBatch b = mustBatch(*nodes);
    CPPUNIT_ASSERT_EQUAL(uint64_t(51), b.version);
  }

  void testApplyNeverWaitsForWatchers() {
    StoreLimits limits;
    limits.watchQueueEvents = 100;
    MemoryStore store(limits);
    auto neverRead = mustWatch(store, KindSet::all());
    auto reader = mustWatch(store, KindSet::all());
    std::atomic<uint64_t> seen{0};
    std::atomic<bool> readerFailed{false};
    std::thread consumer([&] {
      while (seen.load() < 3000) {
        auto b = reader->nextBatch(5s);
        if (!b) {
          readerFailed = true;
          return;
        }
        seen += b->events.size();
        // A consumer slower than the writer at times (but within its limit on average).
        if (b->version % 500 == 0) std::this_thread::sleep_for(1ms);
      }
    });
    auto start = std::chrono::steady_clock::now();
    for (int i = 1; i <= 3000; ++i) createTask(store, i);
    auto took = std::chrono::steady_clock::now() - start;
    consumer.join();
    CPPUNIT_ASSERT_EQUAL(uint64_t(3000), store.version());
    CPPUNIT_ASSERT_MESSAGE("apply was held up", took < 30s);
    // The reader either kept up, or was cut off with a resume version: never silently short.
    if (readerFailed) {
      CPPUNIT_ASSERT(reader->nextBatch(0ms).status().code() == Status::Code::kResourceExhausted);
    } else {
      CPPUNIT_ASSERT_EQUAL(uint64_t(3000), seen.load());
    }
    auto r = neverRead->nextBatch(0ms);
    CPPUNIT_ASSERT(r.status().code() == Status::Code::kResourceExhausted);
    CPPUNIT_ASSERT(contains(r.status().message(), "resume from version 0"));
  }

  void testCancelWakesABlockedConsumer() {
    MemoryStore store;
    auto w = mustWatch(store, KindSet::all());
    std::atomic<int> code{-1};
    auto start = std::chrono::steady_clock::now();
    std::thread consumer([&] { code = static_cast<int>(w->nextBatch(20s).status().code()); });
    std::this_thread::sleep_for(50ms);
    w->cancel();
    consumer.join();
    CPPUNIT_ASSERT(std::chrono::steady_clock::now() - start < 10s);
    CPPUNIT_ASSERT_EQUAL(static_cast<int>(Status::Code::kCancelled), code.load());
    // A cancelled watch no longer counts: the store carries on.
    createService(store, 1);
    CPPUNIT_ASSERT(w->nextBatch(0ms).status().code() == Status::Code::kCancelled);
  }

  void testClosingTheStoreEndsWatches() {
    std::unique_ptr<Watch> w;
    std::thread consumer;
    std::atomic<int> code{-1};
    {
      MemoryStore store;
      w = mustWatch(store, KindSet::all());
      consumer = std::thread([&] { code = static_cast<int>(w->nextBatch(20s).status().code()); });
      std::this_thread::sleep_for(20ms);
    }
    consumer.join();
    CPPUNIT_ASSERT_EQUAL(static_cast<int>(Status::Code::kCancelled), code.load());
    auto r = w->nextBatch(0ms);
    CPPUNIT_ASSERT_EQUAL(std::string("the store was closed"), r.status().message());
  }

  void testRestoreEndsWatches() {
    MemoryStore source;
    for (int i = 1; i <= 4; ++i) createService(source, i);
    MemoryStore store;
    createService(store, 1);
    auto w = mustWatch(store, KindSet::all(), 0);
    CPPUNIT_ASSERT(store.restore(source.snapshot()).isOk());
    // What was published before the restore no longer applies: the watch must re-read.
    auto r = w->nextBatch(0ms);
    CPPUNIT_ASSERT(r.status().code() == Status::Code::kFailedPrecondition);
    CPPUNIT_ASSERT_EQUAL(std::string("the store was replaced by a snapshot at version 4; re-read "
                                     "the store and resume from version 4"),
                         r.status().message());
    CPPUNIT_ASSERT(!store.watch(KindSet::all(), 1).isOk());
    auto after = mustWatch(store, KindSet::all(), 4);
    createService(store, 9);
    CPPUNIT_ASSERT_EQUAL(uint64_t(5), mustBatch(*after).version);
  }

  // viewAndWatch: the view's contents plus the watch's events are exactly the history, with
  // apply() running concurrently.
  void testViewAndWatchHasNoGapAndNoOverlap() {
    MemoryStore store;
    std::atomic<bool> stop{false};
    std::thread writer([&] {
      for (int i = 1; i <= 2000 && !stop; ++i) createTask(store, i);
    });
    while (store.version() < 100) std::this_thread::yield();
    std::size_t seenInView = 0;
    uint64_t viewVersion = 0;
    auto w = store.viewAndWatch(KindSet{Kind::kTask}, [&](const ReadView& v) {
      seenInView = v.list(Kind::kTask).size();
      viewVersion = v.version();
    });
    CPPUNIT_ASSERT(w.isOk());
    writer.join();
    CPPUNIT_ASSERT_EQUAL(std::size_t(viewVersion), seenInView);  // one task per version
    uint64_t expect = viewVersion + 1;
    while (expect <= 2000) {
      EventBatch b = mustBatch(**w);
      CPPUNIT_ASSERT_EQUAL(expect, b.version);
      CPPUNIT_ASSERT_EQUAL("t" + std::to_string(expect), b.events.at(0).object->id);
      ++expect;
    }
  }

  void testEmptyKindSetIsRefused() {
    MemoryStore store;
    auto w = store.watch(KindSet{});
    CPPUNIT_ASSERT(w.status().code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT(contains(w.status().message(), "at least one kind"));
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(WatchTest);
