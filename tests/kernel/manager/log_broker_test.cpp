// The leader's log broker on its own: nodes are told the subscriptions that concern them once,
// publishes reach the reader in order and only for the node's own tasks, a subscription
// without follow ends when every node is done, cancelling tells the nodes, and a reader that
// falls too far behind is told how much it lost.
#include <cppunit/extensions/HelperMacros.h>

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "kernel/common/random.h"
#include "kernel/manager/log_broker.h"

using namespace std::chrono_literals;
using shoal::SeededRandom;
using shoal::manager::LogBroker;

namespace {

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

std::string publishBody(const std::string& sub, const std::string& task,
                        const std::vector<std::string>& lines, bool done, int seq = -1) {
  std::string body = "{\"sub\":\"" + sub + "\",";
  if (seq >= 0) body += "\"seq\":" + std::to_string(seq) + ",";
  body += "\"records\":[";
  for (std::size_t i = 0; i < lines.size(); ++i) {
    body += (i ? "," : "") + std::string("{\"task\":\"") + task +
            "\",\"stream\":\"stdout\",\"ts\":" + std::to_string(i + 1) + ",\"line\":\"" + lines[i] +
            "\"}";
  }
  return body + "],\"done\":" + (done ? "true" : "false") + "}";
}

}  // namespace

class LogBrokerTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(LogBrokerTest);
  CPPUNIT_TEST(testNodesAreToldOnceAndRecordsReachTheReader);
  CPPUNIT_TEST(testANodeSpeaksOnlyForItsOwnTasks);
  CPPUNIT_TEST(testAFollowedServiceTakesInTasksThatStartLater);
  CPPUNIT_TEST(testCancelTellsTheNodesAndEndsPublishing);
  CPPUNIT_TEST(testALateDoneOfAnEndedJobLeavesTheNodeStreaming);
  CPPUNIT_TEST(testAReaderWaitsForRecords);
  CPPUNIT_TEST(testUnknownSubscriptionIsNotFound);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    woken_.clear();
    broker_ = std::make_unique<LogBroker>(random_, [this](const std::string& node) {
      std::lock_guard<std::mutex> lock(mu_);
      woken_.push_back(node);
    });
  }

  void testNodesAreToldOnceAndRecordsReachTheReader() {
    const std::string sub = broker_->subscribe({{"n1", {"t1"}}, {"n2", {"t2"}}}, {});
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, woken_.size());
    CPPUNIT_ASSERT(broker_->hasNewFor("n1"));
    const std::string told = broker_->takeFor("n1");
    CPPUNIT_ASSERT_MESSAGE(told, contains(told, "\"sub\":\"" + sub + "\""));
    CPPUNIT_ASSERT_MESSAGE(told, contains(told, "\"tasks\":[\"t1\"]"));
    CPPUNIT_ASSERT_EQUAL(std::string(), broker_->takeFor("n1"));  // once
    CPPUNIT_ASSERT(!broker_->hasNewFor("n1"));

    CPPUNIT_ASSERT(broker_->publish("n1", publishBody(sub, "t1", {"a", "b"}, true)));
    auto first = broker_->read(sub, 0, 0ms);
    CPPUNIT_ASSERT(first);
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, first->records.size());
    CPPUNIT_ASSERT_EQUAL(std::string("a"), first->records[0].line);
    CPPUNIT_ASSERT_EQUAL(std::string("t1"), first->records[1].taskId);
    CPPUNIT_ASSERT(!first->done);  // n2 has not finished
    CPPUNIT_ASSERT(broker_->publish("n2", publishBody(sub, "t2", {"c"}, true)));
    auto last = broker_->read(sub, first->next, 0ms);
    CPPUNIT_ASSERT(last);
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, last->records.size());
    CPPUNIT_ASSERT_EQUAL(std::string("c"), last->records[0].line);
    CPPUNIT_ASSERT(last->done);
    // A finished subscription is gone once read to its end.
    CPPUNIT_ASSERT(!broker_->read(sub, last->next, 0ms));
  }

  void testANodeSpeaksOnlyForItsOwnTasks() {
    const std::string sub = broker_->subscribe({{"n1", {"t1"}}}, {});
    broker_->takeFor("n1");
    // n2 has no share: told to stop, and nothing it sends is kept.
    auto reply = broker_->publish("n2", publishBody(sub, "t1", {"forged"}, true));
    CPPUNIT_ASSERT(reply);
    CPPUNIT_ASSERT_MESSAGE(*reply, contains(*reply, "\"cancelled\":true"));
    // n1 naming a task that is not its own: dropped.
    CPPUNIT_ASSERT(broker_->publish("n1", publishBody(sub, "t9", {"other"}, false)));
    auto b = broker_->read(sub, 0, 0ms);
    CPPUNIT_ASSERT(b);
    CPPUNIT_ASSERT(b->records.empty());
    CPPUNIT_ASSERT(!broker_->publish("n1", "not json"));
  }

  // `service logs -f SERVICE` follows the service's tasks that start later (replacements, a
  // scale-up), on nodes it already streams from and on new ones; nothing else does.
  void testAFollowedServiceTakesInTasksThatStartLater() {
    LogBroker::Options follow;
    follow.follow = true;
    const std::string sub = broker_->subscribe({{"n1", {"t1"}}}, follow, "svc");
    const std::string once = broker_->subscribe({{"n1", {"t1"}}}, {}, "svc");
    const std::string other = broker_->subscribe({{"n1", {"t1"}}}, follow, "other");
    CPPUNIT_ASSERT(contains(broker_->takeFor("n1"), "\"tasks\":[\"t1\"]"));
    CPPUNIT_ASSERT(!broker_->hasNewFor("n1"));
    woken_.clear();
    broker_->taskStarted("svc", "n2", "t2");  // a node the subscription had no task on
    CPPUNIT_ASSERT(woken_ == std::vector<std::string>{"n2"});
    const std::string n2 = broker_->takeFor("n2");
    CPPUNIT_ASSERT_MESSAGE(n2, contains(n2, "\"sub\":\"" + sub + "\"") &&
                                   contains(n2, "\"tasks\":[\"t2\"]") && !contains(n2, once) &&
                                   !contains(n2, other));
    broker_->taskStarted("svc", "n1", "t3");  // one it streams from already: t3 alone
    CPPUNIT_ASSERT(broker_->hasNewFor("n1"));
    const std::string n1 = broker_->takeFor("n1");
    CPPUNIT_ASSERT_MESSAGE(n1, contains(n1, "\"tasks\":[\"t3\"]") && !contains(n1, "t1"));
    // Told again of a task it has (it may have been asked before the task reached it): asked
    // again, once however often it is told (the agent skips a task it streams already).
    broker_->taskStarted("svc", "n1", "t1");
    broker_->taskStarted("svc", "n1", "t1");
    const std::string again = broker_->takeFor("n1");
    CPPUNIT_ASSERT_MESSAGE(again, contains(again, "\"tasks\":[\"t1\"]"));
    CPPUNIT_ASSERT(!broker_->hasNewFor("n1"));
    // Records of the new tasks reach the reader like the first one's.
    CPPUNIT_ASSERT(broker_->publish("n1", publishBody(sub, "t3", {"from t3"}, false)));
    auto b = broker_->read(sub, 0, 0ms);
    CPPUNIT_ASSERT(b && b->records.size() == 1 && b->records[0].taskId == "t3");
    broker_->cancel(sub);
    woken_.clear();
    broker_->taskStarted("svc", "n3", "t4");  // a cancelled one takes no more
    CPPUNIT_ASSERT(woken_.empty());
  }

  void testCancelTellsTheNodesAndEndsPublishing() {
    LogBroker::Options follow;
    follow.follow = true;
    const std::string sub = broker_->subscribe({{"n1", {"t1"}}}, follow);
    broker_->takeFor("n1");
    woken_.clear();
    broker_->cancel(sub);
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, woken_.size());
    CPPUNIT_ASSERT(broker_->hasNewFor("n1"));
    const std::string told = broker_->takeFor("n1");
    CPPUNIT_ASSERT_MESSAGE(told, contains(told, "\"logs_cancelled\":[\"" + sub + "\"]"));
    auto reply = broker_->publish("n1", publishBody(sub, "t1", {"late"}, false));
    CPPUNIT_ASSERT(reply);
    CPPUNIT_ASSERT_MESSAGE(*reply, contains(*reply, "\"cancelled\":true"));
  }

  // A followed service's node whose job ended (its task stopped) as the broker handed it a new
  // task: the old job's "done" arrives after. The node streams the new task in a new job, so
  // its part is not finished, and a cancel still reaches it.
  void testALateDoneOfAnEndedJobLeavesTheNodeStreaming() {
    LogBroker::Options follow;
    follow.follow = true;
    const std::string sub = broker_->subscribe({{"n1", {"t1"}}}, follow, "svc");
    const std::string first = broker_->takeFor("n1");
    CPPUNIT_ASSERT_MESSAGE(first, contains(first, "\"seq\":1"));
    broker_->taskStarted("svc", "n1", "t2");
    // The old job's "done" (seq 1) before the node was handed t2: not finished, t2 still goes.
    CPPUNIT_ASSERT(broker_->publish("n1", publishBody(sub, "t1", {"last of t1"}, true, 1)));
    const std::string second = broker_->takeFor("n1");
    CPPUNIT_ASSERT_MESSAGE(second,
                           contains(second, "\"tasks\":[\"t2\"]") && contains(second, "\"seq\":2"));
    // ... and after: still not finished.
    CPPUNIT_ASSERT(broker_->publish("n1", publishBody(sub, "t1", {}, true, 1)));
    broker_->cancel(sub);
    CPPUNIT_ASSERT(broker_->hasNewFor("n1"));
    const std::string told = broker_->takeFor("n1");
    CPPUNIT_ASSERT_MESSAGE(told, contains(told, "\"logs_cancelled\":[\"" + sub + "\"]"));
    // The job that took in the latest request finishes the part: nothing more to tell.
    const std::string again = broker_->subscribe({{"n1", {"t3"}}}, follow, "svc");
    broker_->takeFor("n1");
    CPPUNIT_ASSERT(broker_->publish("n1", publishBody(again, "t3", {}, true, 1)));
    broker_->cancel(again);
    CPPUNIT_ASSERT(!broker_->hasNewFor("n1"));
  }

  void testAReaderWaitsForRecords() {
    LogBroker::Options follow;
    follow.follow = true;
    const std::string sub = broker_->subscribe({{"n1", {"t1"}}}, follow);
    broker_->takeFor("n1");
    std::thread node([&] {
      std::this_thread::sleep_for(100ms);
      broker_->publish("n1", publishBody(sub, "t1", {"late line"}, false));
    });
    const auto t0 = std::chrono::steady_clock::now();
    auto b = broker_->read(sub, 0, 3000ms);
    const auto waited = std::chrono::steady_clock::now() - t0;
    node.join();
    CPPUNIT_ASSERT(b);
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, b->records.size());
    CPPUNIT_ASSERT(waited < 2500ms);  // woken by the record, not by the time limit
    CPPUNIT_ASSERT(!b->done);         // a follower lasts
    auto none = broker_->read(sub, b->next, 50ms);
    CPPUNIT_ASSERT(none);
    CPPUNIT_ASSERT(none->records.empty());
  }

  void testUnknownSubscriptionIsNotFound() {
    auto b = broker_->read("nope", 0, 0ms);
    CPPUNIT_ASSERT(!b);
    CPPUNIT_ASSERT(b.status().code() == shoal::Status::Code::kNotFound);
    broker_->cancel("nope");  // harmless
  }

 private:
  SeededRandom random_{7};
  std::mutex mu_;
  std::vector<std::string> woken_;
  std::unique_ptr<LogBroker> broker_;
};

CPPUNIT_TEST_SUITE_REGISTRATION(LogBrokerTest);
