// runtime-sim as an agent drives it: loaded through the plugin host from the build tree, every
// op called through PluginInstance::invoke, every event gathered from the host's dispatcher.
// Pins the simulated lifecycle (prepare, start, wait, shutdown, terminate, remove), the SIM_*
// variables, logs, cancel, the TASK_STATUS stream, persistence across a reload, and scale.
#include <cppunit/extensions/HelperMacros.h>

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <shoal/runtime.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "kernel/common/clock.h"
#include "kernel/plugin/plugin_host.h"
#include "tests/support/temp_dir.h"

using shoal::Status;
using shoal::plugin::Kind;
using shoal::plugin::PluginEvent;
using shoal::plugin::PluginHost;
using shoal::plugin::PluginInstance;
using namespace std::chrono_literals;

namespace {

constexpr int64_t kNsPerMs = 1000 * 1000;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::size_t countOf(const std::string& haystack, const std::string& needle) {
  std::size_t n = 0;
  for (auto p = haystack.find(needle); p != std::string::npos; p = haystack.find(needle, p + 1)) {
    ++n;
  }
  return n;
}

shoal_str str(const std::string& s) { return shoal_str{s.data(), s.size()}; }

std::string take(shoal_buf& b) {
  std::string s(b.ptr, b.len);
  std::free(b.ptr);
  b = {};
  return s;
}

// The real clocks, with a wall clock the test can move forward (the time a daemon was down).
class OffsetClock final : public shoal::Clock {
 public:
  WallTime now() const override {
    return std::chrono::system_clock::now() +
           std::chrono::duration_cast<std::chrono::system_clock::duration>(
               std::chrono::nanoseconds(offset_ns_.load()));
  }
  MonoTime monotonic() const override { return std::chrono::steady_clock::now(); }
  void advance(std::chrono::nanoseconds d) { offset_ns_ += d.count(); }
  void reset() { offset_ns_ = 0; }

 private:
  std::atomic<int64_t> offset_ns_{0};
};

// One clock for the whole run: the host keeps a pointer to it in a global.
OffsetClock& testClock() {
  static OffsetClock clock;
  return clock;
}

Poco::JSON::Object::Ptr parseObject(const std::string& json) {
  Poco::JSON::Parser parser;
  Poco::Dynamic::Var v = parser.parse(json);
  CPPUNIT_ASSERT_MESSAGE(json, v.type() == typeid(Poco::JSON::Object::Ptr));
  return v.extract<Poco::JSON::Object::Ptr>();
}

Poco::JSON::Array::Ptr parseArray(const std::string& json) {
  Poco::JSON::Parser parser;
  Poco::Dynamic::Var v = parser.parse(json);
  CPPUNIT_ASSERT_MESSAGE(json, v.type() == typeid(Poco::JSON::Array::Ptr));
  return v.extract<Poco::JSON::Array::Ptr>();
}

// A status document, read.
struct TaskStatus {
  std::string task_id;
  std::string state;
  int64_t pid = 0;
  int64_t exit_code = 0;
  std::string message;
  int64_t timestamp_ns = 0;
};

TaskStatus statusOf(const Poco::JSON::Object& o) {
  CPPUNIT_ASSERT_EQUAL(std::string("shoal.task-status/v1"), o.getValue<std::string>("schema"));
  CPPUNIT_ASSERT_EQUAL(false, o.getValue<bool>("oom_killed"));
  CPPUNIT_ASSERT_EQUAL(std::string(""), o.getValue<std::string>("health"));
  TaskStatus s;
  s.task_id = o.getValue<std::string>("task_id");
  s.state = o.getValue<std::string>("state");
  s.pid = o.getValue<Poco::Int64>("pid");
  s.exit_code = o.getValue<Poco::Int64>("exit_code");
  s.message = o.getValue<std::string>("message");
  s.timestamp_ns = o.getValue<Poco::Int64>("timestamp_ns");
  CPPUNIT_ASSERT(s.pid > 0);
  return s;
}

TaskStatus statusOf(const std::string& json) {
  CPPUNIT_ASSERT_MESSAGE("empty status document", !json.empty());
  return statusOf(*parseObject(json));
}

struct LogRecord {
  int64_t timestamp_ns = 0;
  std::string line;
};

// Every event the host delivers, in delivery order, with the OP_DONE events also by op id.
class Events {
 public:
  // Keep only OP_DONE statuses (no documents, no other events): for the scale test.
  void setLight(bool light) {
    std::lock_guard<std::mutex> lock(mu_);
    light_ = light;
  }

  void push(const PluginEvent& e) {
    std::lock_guard<std::mutex> lock(mu_);
    if (e.type == SHOAL_EVENT_OP_DONE) {
      if (done_.count(e.op) != 0) ++duplicates_;
      PluginEvent& kept = done_[e.op];
      kept.type = e.type;
      kept.op = e.op;
      kept.status = e.status;
      if (!light_) kept.json = e.json;
    }
    if (!light_) all_.push_back(e);
    cv_.notify_all();
  }

  // The OP_DONE of `op`; fails the test if it does not come within `timeout`.
  PluginEvent waitDone(uint64_t op, std::chrono::milliseconds timeout = 5000ms) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return done_.count(op) != 0; })) {
      CPPUNIT_FAIL("op " + std::to_string(op) + " did not complete in time");
    }
    return done_[op];
  }

  bool isDone(uint64_t op) {
    std::lock_guard<std::mutex> lock(mu_);
    return done_.count(op) != 0;
  }

  // Whether `op` completes within `timeout` (no failure when it does not).
  bool doneWithin(uint64_t op, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return done_.count(op) != 0; });
  }

  bool waitCount(std::size_t done_count, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return done_.size() >= done_count; });
  }

  std::vector<PluginEvent> all() {
    std::lock_guard<std::mutex> lock(mu_);
    return all_;
  }

  std::map<uint64_t, shoal_status> doneStatuses() {
    std::lock_guard<std::mutex> lock(mu_);
    std::map<uint64_t, shoal_status> out;
    for (const auto& d : done_) out[d.first] = d.second.status;
    return out;
  }

  // The TASK_STATUS events of one task, in order.
  std::vector<TaskStatus> statusesOf(const std::string& task) {
    std::vector<TaskStatus> out;
    for (const auto& e : all()) {
      if (e.type == SHOAL_EVENT_TASK_STATUS && e.subject == task) {
        out.push_back(statusOf(e.json));
        CPPUNIT_ASSERT_EQUAL(task, out.back().task_id);
      }
    }
    return out;
  }

  // Waits until the task has posted a TASK_STATUS with `state`.
  bool waitStatus(const std::string& task, const std::string& state,
                  std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      for (const auto& e : all_) {
        if (e.type == SHOAL_EVENT_TASK_STATUS && e.subject == task &&
            contains(e.json, "\"state\":\"" + state + "\"")) {
          return true;
        }
      }
      return false;
    });
  }

  // The LOG_CHUNK records of `op`, and whether one of its chunks said eof.
  std::vector<LogRecord> recordsOf(uint64_t op, bool* eof = nullptr) {
    std::vector<LogRecord> out;
    if (eof != nullptr) *eof = false;
    for (const auto& e : all()) {
      if (e.type != SHOAL_EVENT_LOG_CHUNK || e.op != op) continue;
      auto chunk = parseObject(e.json);
      CPPUNIT_ASSERT_EQUAL(std::string("shoal.log-chunk/v1"),
                           chunk->getValue<std::string>("schema"));
      CPPUNIT_ASSERT_EQUAL(e.subject, chunk->getValue<std::string>("task_id"));
      auto records = chunk->getArray("records");
      for (std::size_t i = 0; i < records->size(); ++i) {
        auto r = records->getObject(static_cast<unsigned>(i));
        CPPUNIT_ASSERT_EQUAL(std::string("stdout"), r->getValue<std::string>("stream"));
        out.push_back({r->getValue<Poco::Int64>("timestamp_ns"), r->getValue<std::string>("line")});
      }
      if (chunk->getValue<bool>("eof") && eof != nullptr) *eof = true;
    }
    return out;
  }

  // Waits until op's log stream holds a line containing `text`.
  bool waitLine(uint64_t op, const std::string& text, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      for (const auto& e : all_) {
        if (e.type == SHOAL_EVENT_LOG_CHUNK && e.op == op && contains(e.json, text)) return true;
      }
      return false;
    });
  }

  int duplicates() {
    std::lock_guard<std::mutex> lock(mu_);
    return duplicates_;
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    all_.clear();
    done_.clear();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool light_ = false;                              // guarded by mu_
  std::vector<PluginEvent> all_;                    // guarded by mu_
  std::unordered_map<uint64_t, PluginEvent> done_;  // guarded by mu_
  int duplicates_ = 0;                              // guarded by mu_
};

// "shoal.task/v1" for `id`, with spec.env = `env`.
std::string taskJson(const std::string& id, const std::vector<std::string>& env = {}) {
  std::string e;
  for (const auto& v : env) e += (e.empty() ? "\"" : ",\"") + v + "\"";
  return "{\"schema\":\"shoal.task/v1\",\"id\":\"" + id +
         "\",\"service_id\":\"svc\",\"slot\":1,\"node_id\":\"node-1\",\"spec\":{\"image\":"
         "\"busybox:latest\",\"env\":[" +
         e + "]}}";
}

int64_t nowNs() { return testClock().nowNanos(); }

}  // namespace

class RuntimeSimTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(RuntimeSimTest);
  CPPUNIT_TEST(testTaskRunsForSimRunMsThenCompletes);
  CPPUNIT_TEST(testNonZeroSimExitCodeFailsTheTask);
  CPPUNIT_TEST(testStartDelayKeepsTheTaskStarting);
  CPPUNIT_TEST(testFailureRateOneFailsEveryStartedTask);
  CPPUNIT_TEST(testSameSeedFailsTheSameTasks);
  CPPUNIT_TEST(testSimFailPrepareFailsPrepareWithItsMessage);
  CPPUNIT_TEST(testMalformedSimVariablesAreRefusedNamingThem);
  CPPUNIT_TEST(testBadTaskDocumentsAreRefused);
  CPPUNIT_TEST(testUnknownTaskIdsAreNotFound);
  CPPUNIT_TEST(testStartNeedsAPreparedTaskAndRunsOnce);
  CPPUNIT_TEST(testPrepareIsIdempotent);
  CPPUNIT_TEST(testGracefulShutdownTakesTheStopDelay);
  CPPUNIT_TEST(testShutdownKillsWhenGraceEndsFirst);
  CPPUNIT_TEST(testShutdownOfAStartingTaskCancelsItsStart);
  CPPUNIT_TEST(testTerminateKillsAtOnce);
  CPPUNIT_TEST(testStoppingAnExitedTaskCompletesAtOnce);
  CPPUNIT_TEST(testRemoveIsRefusedWhileRunningThenForgets);
  CPPUNIT_TEST(testCancelEndsAPendingWait);
  CPPUNIT_TEST(testLogsTailSinceAndTimestamps);
  CPPUNIT_TEST(testLogsFollowStreamsUntilExitOrCancel);
  CPPUNIT_TEST(testTaskStatusEventsFollowEveryTransitionInOrder);
  CPPUNIT_TEST(testListReportsEveryKnownTask);
  CPPUNIT_TEST(testEventsHeldBackByAFullHostQueueArriveInOrder);
  CPPUNIT_TEST(testNewConfigKeysAreValidated);
  CPPUNIT_TEST(testStateDirectoryIsPrivateAndWrittenSoon);
  CPPUNIT_TEST(testTasksSurviveAReload);
  CPPUNIT_TEST(testCorruptStateFileFailsInitNamingIt);
  CPPUNIT_TEST(testTenThousandTasksReachRunningQuickly);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    testClock().reset();
    dir_ = std::make_unique<shoal::test::TempDir>();
    root_ = dir_->file("sim");
  }

  void tearDown() override {
    unload();
    const int duplicates = events_.duplicates();
    dir_.reset();
    CPPUNIT_ASSERT_EQUAL_MESSAGE("ops completed twice", 0, duplicates);
  }

  // ---- lifecycle ----

  void testTaskRunsForSimRunMsThenCompletes() {
    load();
    PluginEvent prepared = prepare("web.1", {"SIM_RUN_MS=150"});
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, prepared.status);
    TaskStatus ready = statusOf(prepared.json);
    CPPUNIT_ASSERT_EQUAL(std::string("ready"), ready.state);
    CPPUNIT_ASSERT_EQUAL(std::string("web.1"), ready.task_id);

    const auto began = std::chrono::steady_clock::now();
    PluginEvent started = events_.waitDone(start("web.1"));
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, started.status);
    TaskStatus running = statusOf(started.json);
    CPPUNIT_ASSERT_EQUAL(std::string("running"), running.state);
    CPPUNIT_ASSERT_EQUAL(ready.pid, running.pid);  // one stable pid per task
    CPPUNIT_ASSERT_EQUAL(std::string("running"), inspect("web.1").state);

    PluginEvent exited = events_.waitDone(wait("web.1"));
    const auto took = std::chrono::steady_clock::now() - began;
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, exited.status);
    TaskStatus done = statusOf(exited.json);
    CPPUNIT_ASSERT_EQUAL(std::string("complete"), done.state);
    CPPUNIT_ASSERT_EQUAL(int64_t{0}, done.exit_code);
    CPPUNIT_ASSERT_EQUAL(ready.pid, done.pid);
    CPPUNIT_ASSERT(took >= 150ms);
    CPPUNIT_ASSERT(done.timestamp_ns - running.timestamp_ns >= 150 * kNsPerMs);
    CPPUNIT_ASSERT_EQUAL(std::string("complete"), inspect("web.1").state);

    // A wait on a task that has exited completes at once, with the same final document.
    PluginEvent again = events_.waitDone(wait("web.1"), 1000ms);
    CPPUNIT_ASSERT_EQUAL(exited.json, again.json);
  }

  void testNonZeroSimExitCodeFailsTheTask() {
    load();
    prepare("job.1", {"SIM_RUN_MS=20", "SIM_EXIT_CODE=3"});
    events_.waitDone(start("job.1"));
    PluginEvent exited = events_.waitDone(wait("job.1"));
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, exited.status);  // wait succeeds: the exit code is the news
    TaskStatus s = statusOf(exited.json);
    CPPUNIT_ASSERT_EQUAL(std::string("failed"), s.state);
    CPPUNIT_ASSERT_EQUAL(int64_t{3}, s.exit_code);
    CPPUNIT_ASSERT_MESSAGE(s.message, contains(s.message, "exited with code 3"));
  }

  void testStartDelayKeepsTheTaskStarting() {
    load("\"start_delay_ms\":400");
    prepare("slow.1");
    const auto began = std::chrono::steady_clock::now();
    const uint64_t op = start("slow.1");
    CPPUNIT_ASSERT(!events_.doneWithin(op, 100ms));
    CPPUNIT_ASSERT_EQUAL(std::string("starting"), inspect("slow.1").state);
    PluginEvent started = events_.waitDone(op);
    CPPUNIT_ASSERT(std::chrono::steady_clock::now() - began >= 400ms);
    CPPUNIT_ASSERT_EQUAL(std::string("running"), statusOf(started.json).state);

    // SIM_START_DELAY_MS overrides the configured delay for one task.
    prepare("quick.1", {"SIM_START_DELAY_MS=0"});
    const uint64_t quick = start("quick.1");
    // With no delay it is running as start returns (its OP_DONE was posted already).
    CPPUNIT_ASSERT_EQUAL(std::string("running"), inspect("quick.1").state);
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, events_.waitDone(quick, 1000ms).status);
  }

  void testFailureRateOneFailsEveryStartedTask() {
    load("\"failure_rate\":1.0,\"start_delay_ms\":10,\"seed\":7");
    std::vector<uint64_t> waits;
    for (int i = 0; i < 20; ++i) {
      const std::string id = "flaky." + std::to_string(i);
      prepare(id);
      start(id);
      waits.push_back(wait(id));
    }
    for (int i = 0; i < 20; ++i) {
      // Each fails "shortly after" running: within start_delay_ms + 100 ms of it.
      TaskStatus s = statusOf(events_.waitDone(waits[i], 2000ms).json);
      CPPUNIT_ASSERT_EQUAL(std::string("failed"), s.state);
      CPPUNIT_ASSERT_EQUAL(int64_t{1}, s.exit_code);
      CPPUNIT_ASSERT_MESSAGE(s.message, contains(s.message, "simulated failure"));
      auto statuses = events_.statusesOf("flaky." + std::to_string(i));
      CPPUNIT_ASSERT(statuses.size() >= 2);
      const TaskStatus& running = statuses[statuses.size() - 2];
      CPPUNIT_ASSERT_EQUAL(std::string("running"), running.state);
      CPPUNIT_ASSERT(s.timestamp_ns - running.timestamp_ns <= 110 * kNsPerMs);
    }
  }

  void testSameSeedFailsTheSameTasks() {
    std::set<std::string> failed[2];
    for (int round = 0; round < 2; ++round) {
      load("\"failure_rate\":0.5,\"seed\":42,\"root\":\"" + root_ + "/" + std::to_string(round) +
               "\"",
           /*with_root=*/false);
      std::vector<uint64_t> waits;
      for (int i = 0; i < 16; ++i) {
        const std::string id = "t" + std::to_string(i);
        prepare(id, {"SIM_RUN_MS=200"});
        start(id);
        waits.push_back(wait(id));
      }
      for (int i = 0; i < 16; ++i) {
        TaskStatus s = statusOf(events_.waitDone(waits[i]).json);
        if (s.state == "failed") failed[round].insert(s.task_id);
      }
      unload();
    }
    CPPUNIT_ASSERT(!failed[0].empty());
    CPPUNIT_ASSERT(failed[0].size() < 16);
    CPPUNIT_ASSERT(failed[0] == failed[1]);
  }

  void testSimFailPrepareFailsPrepareWithItsMessage() {
    load();
    PluginEvent p = prepare("bad.1", {"SIM_FAIL_PREPARE=image not found"});
    CPPUNIT_ASSERT_EQUAL(SHOAL_EIO, p.status);
    TaskStatus s = statusOf(p.json);
    CPPUNIT_ASSERT_EQUAL(std::string("failed"), s.state);
    CPPUNIT_ASSERT_EQUAL(std::string("image not found"), s.message);
    CPPUNIT_ASSERT_EQUAL(std::string("failed"), inspect("bad.1").state);
    // Idempotent: asking again gives the same failure.
    PluginEvent again = prepare("bad.1", {"SIM_FAIL_PREPARE=image not found"});
    CPPUNIT_ASSERT_EQUAL(SHOAL_EIO, again.status);
    Status st =
        attempt("start", [&](void* s, uint64_t op) { return rt().start(s, op, str("bad.1")); });
    CPPUNIT_ASSERT_MESSAGE(st.toString(), st.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(st.message(), contains(st.message(), "task \"bad.1\" is not prepared"));
    CPPUNIT_ASSERT_MESSAGE(st.message(), contains(st.message(), "image not found"));
  }

  void testMalformedSimVariablesAreRefusedNamingThem() {
    load();
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"SIM_RUN_MS=abc", "SIM_RUN_MS=\"abc\" is not an integer"},
        {"SIM_RUN_MS=", "SIM_RUN_MS=\"\" is not an integer"},
        {"SIM_RUN_MS=1.5", "SIM_RUN_MS=\"1.5\" is not an integer"},
        {"SIM_START_DELAY_MS=-5", "SIM_START_DELAY_MS=-5 is negative"},
        {"SIM_STOP_DELAY_MS=86400001", "SIM_STOP_DELAY_MS=86400001 is too large"},
        {"SIM_RUN_MS=99999999999999999999", "SIM_RUN_MS=99999999999999999999 is too large"},
        {"SIM_EXIT_CODE=256", "SIM_EXIT_CODE=256 is too large"},
        {"SIM_RUN_SM=5", "unknown simulation variable SIM_RUN_SM"},
    };
    for (const auto& c : cases) {
      Status s = tryPrepare("t.1", taskJson("t.1", {c.first}));
      CPPUNIT_ASSERT_MESSAGE(c.first + ": " + s.toString(),
                             s.code() == Status::Code::kInvalidArgument);
      CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), c.second));
      CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "task \"t.1\""));
    }
    // Nothing was created by the refused prepares.
    CPPUNIT_ASSERT(tryInspect("t.1").code() == Status::Code::kNotFound);
  }

  void testBadTaskDocumentsAreRefused() {
    load();
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"{not json", "is not valid JSON"},
        {"[1,2]", "must be a JSON object"},
        {"{\"id\":\"t.1\"}", "has no \"spec\" object"},
        {"{\"id\":\"t.1\",\"spec\":[]}", "has no \"spec\" object"},
        {"{\"spec\":{}}", "has no \"id\""},
        {"{\"id\":\"other\",\"spec\":{}}", "id \"other\" differs"},
        {"{\"id\":\"t.1\",\"spec\":{\"env\":\"SIM_RUN_MS=5\"}}", "spec.env must be an array"},
        {"{\"id\":\"t.1\",\"spec\":{\"env\":[5]}}", "spec.env must be an array"},
        {"{\"schema\":\"shoal.task/v9\",\"id\":\"t.1\",\"spec\":{}}", "schema must be"},
    };
    for (const auto& c : cases) {
      Status s = tryPrepare("t.1", c.first);
      CPPUNIT_ASSERT_MESSAGE(c.first + ": " + s.toString(),
                             s.code() == Status::Code::kInvalidArgument);
      CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), c.second));
    }
    Status empty = tryPrepare("", taskJson(""));
    CPPUNIT_ASSERT(empty.code() == Status::Code::kInvalidArgument);
    // A minimal document is enough.
    CPPUNIT_ASSERT(tryPrepare("t.1", "{\"id\":\"t.1\",\"spec\":{}}").isOk());
  }

  void testUnknownTaskIdsAreNotFound() {
    load();
    const std::string id = "ghost.1";
    std::vector<std::pair<std::string, Status>> results = {
        {"wait", attempt("wait", [&](void* s, uint64_t op) { return rt().wait(s, op, str(id)); })},
        {"shutdown",
         attempt("shutdown",
                 [&](void* s, uint64_t op) { return rt().shutdown(s, op, str(id), 1000); })},
        {"terminate",
         attempt("terminate",
                 [&](void* s, uint64_t op) { return rt().terminate(s, op, str(id)); })},
        {"remove",
         attempt("remove", [&](void* s, uint64_t op) { return rt().remove(s, op, str(id)); })},
        {"logs",
         attempt("logs",
                 [&](void* s, uint64_t op) { return rt().logs(s, op, str(id), str("{}")); })},
        {"inspect", tryInspect(id)},
    };
    for (const auto& r : results) {
      CPPUNIT_ASSERT_MESSAGE(r.first + ": " + r.second.toString(),
                             r.second.code() == Status::Code::kNotFound);
      CPPUNIT_ASSERT_MESSAGE(r.second.message(), contains(r.second.message(), "\"ghost.1\""));
    }
  }

  void testStartNeedsAPreparedTaskAndRunsOnce() {
    load();
    Status early =
        attempt("start", [&](void* s, uint64_t op) { return rt().start(s, op, str("new.1")); });
    CPPUNIT_ASSERT_MESSAGE(early.toString(), early.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(early.message(),
                           contains(early.message(), "task \"new.1\" is not prepared"));
    prepare("new.1");
    events_.waitDone(start("new.1"));
    Status twice =
        attempt("start", [&](void* s, uint64_t op) { return rt().start(s, op, str("new.1")); });
    CPPUNIT_ASSERT_MESSAGE(twice.toString(), twice.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(twice.message(), contains(twice.message(), "already started"));
  }

  void testPrepareIsIdempotent() {
    load();
    TaskStatus first = statusOf(prepare("idem.1").json);
    const std::size_t statuses = events_.statusesOf("idem.1").size();
    PluginEvent second = prepare("idem.1");
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, second.status);
    TaskStatus again = statusOf(second.json);
    CPPUNIT_ASSERT_EQUAL(std::string("ready"), again.state);
    CPPUNIT_ASSERT_EQUAL(first.pid, again.pid);
    CPPUNIT_ASSERT_EQUAL(first.timestamp_ns, again.timestamp_ns);
    CPPUNIT_ASSERT_EQUAL(statuses, events_.statusesOf("idem.1").size());  // no new transition
  }

  // ---- stopping ----

  void testGracefulShutdownTakesTheStopDelay() {
    load("\"stop_delay_ms\":300");
    prepare("svc.1");
    events_.waitDone(start("svc.1"));
    const uint64_t waiter = wait("svc.1");
    const auto began = std::chrono::steady_clock::now();
    const uint64_t op = shutdown("svc.1", 10'000 * kNsPerMs);
    CPPUNIT_ASSERT(!events_.doneWithin(op, 50ms));
    CPPUNIT_ASSERT_EQUAL(std::string("running"), inspect("svc.1").state);  // still stopping
    PluginEvent done = events_.waitDone(op);
    CPPUNIT_ASSERT(std::chrono::steady_clock::now() - began >= 300ms);
    TaskStatus s = statusOf(done.json);
    CPPUNIT_ASSERT_EQUAL(std::string("shutdown"), s.state);
    CPPUNIT_ASSERT_EQUAL(int64_t{0}, s.exit_code);
    CPPUNIT_ASSERT_EQUAL(done.json, events_.waitDone(waiter).json);
  }

  void testShutdownKillsWhenGraceEndsFirst() {
    load();
    prepare("stubborn.1", {"SIM_STOP_DELAY_MS=60000"});
    events_.waitDone(start("stubborn.1"));
    const auto began = std::chrono::steady_clock::now();
    PluginEvent done = events_.waitDone(shutdown("stubborn.1", 100 * kNsPerMs), 2000ms);
    const auto took = std::chrono::steady_clock::now() - began;
    CPPUNIT_ASSERT(took >= 100ms);
    CPPUNIT_ASSERT(took < 1500ms);
    TaskStatus s = statusOf(done.json);
    CPPUNIT_ASSERT_EQUAL(std::string("shutdown"), s.state);
    CPPUNIT_ASSERT_EQUAL(int64_t{137}, s.exit_code);
    bool eof = false;
    auto lines = events_.recordsOf(logs("stubborn.1", "{}"), &eof);
    CPPUNIT_ASSERT(eof);
    CPPUNIT_ASSERT(lines.size() >= 3);
    CPPUNIT_ASSERT_EQUAL(std::string("sim: received SIGTERM"), lines[lines.size() - 3].line);
    CPPUNIT_ASSERT(contains(lines[lines.size() - 2].line, "killed by SIGKILL"));
    CPPUNIT_ASSERT_EQUAL(std::string("sim: exited with code 137"), lines.back().line);
  }

  void testShutdownOfAStartingTaskCancelsItsStart() {
    load("\"start_delay_ms\":60000");
    prepare("late.1");
    const uint64_t starting = start("late.1");
    Status no = attempt("cancel", [&](void* s, uint64_t) { return rt().cancel(s, starting); });
    CPPUNIT_ASSERT_MESSAGE(no.toString(), no.code() == Status::Code::kInvalidArgument);
    PluginEvent done = events_.waitDone(shutdown("late.1", 1000 * kNsPerMs), 1000ms);
    CPPUNIT_ASSERT_EQUAL(std::string("shutdown"), statusOf(done.json).state);
    PluginEvent start_done = events_.waitDone(starting, 1000ms);
    CPPUNIT_ASSERT_EQUAL(SHOAL_ECANCELED, start_done.status);
    CPPUNIT_ASSERT_EQUAL(std::string("shutdown"), statusOf(start_done.json).state);
  }

  void testTerminateKillsAtOnce() {
    load("\"stop_delay_ms\":60000");
    prepare("victim.1");
    events_.waitDone(start("victim.1"));
    const uint64_t waiter = wait("victim.1");
    const uint64_t op = terminate("victim.1");
    CPPUNIT_ASSERT_EQUAL(std::string("shutdown"), inspect("victim.1").state);  // gone at once
    TaskStatus s = statusOf(events_.waitDone(op, 1000ms).json);
    CPPUNIT_ASSERT_EQUAL(std::string("shutdown"), s.state);
    CPPUNIT_ASSERT_EQUAL(int64_t{137}, s.exit_code);
    CPPUNIT_ASSERT_EQUAL(int64_t{137}, statusOf(events_.waitDone(waiter).json).exit_code);
  }

  void testStoppingAnExitedTaskCompletesAtOnce() {
    load();
    prepare("brief.1", {"SIM_RUN_MS=0", "SIM_EXIT_CODE=2"});
    events_.waitDone(start("brief.1"));
    PluginEvent exited = events_.waitDone(wait("brief.1"));
    const uint64_t stop = shutdown("brief.1", 1000 * kNsPerMs);
    const uint64_t kill = terminate("brief.1");
    CPPUNIT_ASSERT_EQUAL(exited.json, events_.waitDone(stop, 1000ms).json);
    CPPUNIT_ASSERT_EQUAL(exited.json, events_.waitDone(kill, 1000ms).json);
    CPPUNIT_ASSERT_EQUAL(int64_t{2}, statusOf(exited.json).exit_code);
    // Shutting down a task that never started completes at once too, and ends it.
    prepare("idle.1");
    TaskStatus idle = statusOf(events_.waitDone(shutdown("idle.1", 0), 1000ms).json);
    CPPUNIT_ASSERT_EQUAL(std::string("shutdown"), idle.state);
  }

  void testRemoveIsRefusedWhileRunningThenForgets() {
    load();
    prepare("doomed.1");
    events_.waitDone(start("doomed.1"));
    Status busy = attempt(
        "remove", [&](void* s, uint64_t op) { return rt().remove(s, op, str("doomed.1")); });
    CPPUNIT_ASSERT_MESSAGE(busy.toString(), busy.code() == Status::Code::kFailedPrecondition);
    CPPUNIT_ASSERT_MESSAGE(busy.message(), contains(busy.message(), "is running"));
    events_.waitDone(terminate("doomed.1"));
    PluginEvent removed = events_.waitDone(remove("doomed.1"), 1000ms);
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, removed.status);
    CPPUNIT_ASSERT(tryInspect("doomed.1").code() == Status::Code::kNotFound);
    CPPUNIT_ASSERT(!contains(list(), "doomed.1"));
    // The id can be used again, as a new task.
    CPPUNIT_ASSERT_EQUAL(std::string("ready"), statusOf(prepare("doomed.1").json).state);
  }

  // ---- cancel and logs ----

  void testCancelEndsAPendingWait() {
    load();
    prepare("long.1");
    events_.waitDone(start("long.1"));
    const uint64_t doomed = wait("long.1");
    const uint64_t kept = wait("long.1");
    CPPUNIT_ASSERT(cancel(doomed).isOk());
    PluginEvent cancelled = events_.waitDone(doomed, 1000ms);
    CPPUNIT_ASSERT_EQUAL(SHOAL_ECANCELED, cancelled.status);
    Status twice = cancel(doomed);
    CPPUNIT_ASSERT_MESSAGE(twice.toString(), twice.code() == Status::Code::kNotFound);
    CPPUNIT_ASSERT(cancel(987654321).code() == Status::Code::kNotFound);
    CPPUNIT_ASSERT(!events_.doneWithin(kept, 50ms));  // the other wait still waits...
    events_.waitDone(terminate("long.1"));
    PluginEvent exited = events_.waitDone(kept, 1000ms);  // ...until the task exits
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, exited.status);
  }

  void testLogsTailSinceAndTimestamps() {
    load();
    prepare("chatty.1", {"SIM_RUN_MS=0"});
    events_.waitDone(start("chatty.1"));
    events_.waitDone(wait("chatty.1"));

    bool eof = false;
    const uint64_t all = logs("chatty.1", "{}");
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, events_.waitDone(all).status);
    auto lines = events_.recordsOf(all, &eof);
    CPPUNIT_ASSERT(eof);
    std::vector<std::string> text;
    for (const auto& l : lines) text.push_back(l.line);
    const std::vector<std::string> expected = {"sim: preparing image busybox:latest",
                                               "sim: prepared", "sim: starting", "sim: started",
                                               "sim: exited with code 0"};
    CPPUNIT_ASSERT(expected == text);

    auto tail = events_.recordsOf(logs("chatty.1", "{\"tail\":2}"));
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), tail.size());
    CPPUNIT_ASSERT_EQUAL(std::string("sim: started"), tail[0].line);
    CPPUNIT_ASSERT_EQUAL(std::string("sim: exited with code 0"), tail[1].line);
    CPPUNIT_ASSERT(events_.recordsOf(logs("chatty.1", "{\"tail\":0}")).empty());

    const std::string since = "{\"since_ns\":" + std::to_string(lines.back().timestamp_ns) + "}";
    auto recent = events_.recordsOf(logs("chatty.1", since));
    CPPUNIT_ASSERT(!recent.empty());
    for (const auto& r : recent) CPPUNIT_ASSERT(r.timestamp_ns >= lines.back().timestamp_ns);
    CPPUNIT_ASSERT(events_
                       .recordsOf(logs("chatty.1", "{\"since_ns\":" +
                                                       std::to_string(nowNs() + 1000000000) + "}"))
                       .empty());

    auto stamped = events_.recordsOf(logs("chatty.1", "{\"timestamps\":true,\"tail\":1}"));
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), stamped.size());
    // "2025-01-02T03:04:05.123456789Z sim: exited with code 0"
    const std::string& l = stamped[0].line;
    CPPUNIT_ASSERT_MESSAGE(l, l.size() > 31 && l[4] == '-' && l[10] == 'T' && l[29] == 'Z');
    CPPUNIT_ASSERT_EQUAL(std::string(" sim: exited with code 0"), l.substr(30));

    for (const char* bad :
         {"{\"tail\":\"x\"}", "{\"follow\":1}", "{\"lines\":3}", "[", "{\"tail\":-2}"}) {
      Status s = attempt("logs", [&](void* st, uint64_t op) {
        return rt().logs(st, op, str("chatty.1"), str(bad));
      });
      CPPUNIT_ASSERT_MESSAGE(std::string(bad) + ": " + s.toString(),
                             s.code() == Status::Code::kInvalidArgument);
    }
  }

  void testLogsFollowStreamsUntilExitOrCancel() {
    load();
    prepare("stream.1", {"SIM_RUN_MS=200"});
    events_.waitDone(start("stream.1"));
    const uint64_t follow = logs("stream.1", "{\"follow\":true,\"tail\":1}");
    const uint64_t cancelled = logs("stream.1", "{\"follow\":true}");
    CPPUNIT_ASSERT(events_.waitLine(follow, "sim: started", 1000ms));
    CPPUNIT_ASSERT(!events_.doneWithin(follow, 50ms));
    CPPUNIT_ASSERT(cancel(cancelled).isOk());
    CPPUNIT_ASSERT_EQUAL(SHOAL_ECANCELED, events_.waitDone(cancelled, 1000ms).status);

    PluginEvent done = events_.waitDone(follow, 2000ms);
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, done.status);
    bool eof = false;
    auto lines = events_.recordsOf(follow, &eof);
    CPPUNIT_ASSERT(eof);
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), lines.size());
    CPPUNIT_ASSERT_EQUAL(std::string("sim: started"), lines[0].line);
    CPPUNIT_ASSERT_EQUAL(std::string("sim: exited with code 0"), lines[1].line);
    // The cancelled stream saw no line after it was cancelled, and no eof.
    bool cancelled_eof = true;
    auto cut = events_.recordsOf(cancelled, &cancelled_eof);
    CPPUNIT_ASSERT(!cancelled_eof);
    for (const auto& l : cut) CPPUNIT_ASSERT(l.line != "sim: exited with code 0");
  }

  void testTaskStatusEventsFollowEveryTransitionInOrder() {
    load("\"start_delay_ms\":30");
    prepare("seq.1", {"SIM_RUN_MS=30"});
    const uint64_t started = start("seq.1");
    const uint64_t waited = wait("seq.1");
    events_.waitDone(waited);
    auto statuses = events_.statusesOf("seq.1");
    std::vector<std::string> states;
    for (const auto& s : statuses) states.push_back(s.state);
    const std::vector<std::string> expected = {"preparing", "ready", "starting", "running",
                                               "complete"};
    CPPUNIT_ASSERT(expected == states);
    for (std::size_t i = 1; i < statuses.size(); ++i) {
      CPPUNIT_ASSERT(statuses[i].timestamp_ns >= statuses[i - 1].timestamp_ns);
    }
    // Each status event comes before the completion it caused.
    int running_at = -1, start_done_at = -1, complete_at = -1, wait_done_at = -1;
    auto all = events_.all();
    for (int i = 0; i < static_cast<int>(all.size()); ++i) {
      const auto& e = all[i];
      if (e.type == SHOAL_EVENT_TASK_STATUS && contains(e.json, "\"state\":\"running\"")) {
        running_at = i;
      }
      if (e.type == SHOAL_EVENT_TASK_STATUS && contains(e.json, "\"state\":\"complete\"")) {
        complete_at = i;
      }
      if (e.type == SHOAL_EVENT_OP_DONE && e.op == started) start_done_at = i;
      if (e.type == SHOAL_EVENT_OP_DONE && e.op == waited) wait_done_at = i;
    }
    CPPUNIT_ASSERT(running_at >= 0 && running_at < start_done_at);
    CPPUNIT_ASSERT(complete_at >= 0 && complete_at < wait_done_at);
  }

  void testListReportsEveryKnownTask() {
    load();
    CPPUNIT_ASSERT_EQUAL(std::string("[]"), list());
    prepare("a.1");
    prepare("b.1");
    events_.waitDone(start("b.1"));
    auto array = parseArray(list());
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), array->size());
    std::map<std::string, std::string> states;
    for (std::size_t i = 0; i < array->size(); ++i) {
      TaskStatus s = statusOf(*array->getObject(static_cast<unsigned>(i)));
      states[s.task_id] = s.state;
    }
    CPPUNIT_ASSERT_EQUAL(std::string("ready"), states["a.1"]);
    CPPUNIT_ASSERT_EQUAL(std::string("running"), states["b.1"]);
  }

  void testEventsHeldBackByAFullHostQueueArriveInOrder() {
    // The host's queue holds 65536 events and nobody drains it until start().
    loadWithoutDispatcher();
    prepareNoWait("exited.1", {"SIM_RUN_MS=0"});
    prepareNoWait("running.1");
    start("exited.1");
    start("running.1");
    const int kWaits = 70000;  // one OP_DONE each, at once: more than the queue takes
    std::vector<uint64_t> ops;
    for (int i = 0; i < kWaits; ++i) ops.push_back(wait("exited.1"));
    const uint64_t killed = terminate("running.1");  // a TASK_STATUS and an OP_DONE after them
    host_->start();
    PluginEvent last = events_.waitDone(killed, 30000ms);
    CPPUNIT_ASSERT_EQUAL(std::string("shutdown"), statusOf(last.json).state);
    // Nothing lost, nothing twice (tearDown), and in the order posted.
    std::vector<uint64_t> order;
    int status_at = -1, killed_at = -1;
    auto all = events_.all();
    for (int i = 0; i < static_cast<int>(all.size()); ++i) {
      const auto& e = all[i];
      if (e.type == SHOAL_EVENT_OP_DONE && e.op >= ops.front() && e.op <= ops.back()) {
        order.push_back(e.op);
      }
      if (e.type == SHOAL_EVENT_TASK_STATUS && e.subject == "running.1" &&
          contains(e.json, "\"state\":\"shutdown\"")) {
        status_at = i;
      }
      if (e.type == SHOAL_EVENT_OP_DONE && e.op == killed) killed_at = i;
    }
    CPPUNIT_ASSERT(order == ops);
    CPPUNIT_ASSERT(status_at > 0 && status_at < killed_at);
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, events_.waitDone(ops.back()).status);
  }

  // ---- config and persistence ----

  void testNewConfigKeysAreValidated() {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"{\"stop_delay_ms\":-1}", "\"stop_delay_ms\" must be between 0 and 86400000"},
        {"{\"stop_delay_ms\":true}", "\"stop_delay_ms\" must be an integer"},
        {"{\"seed\":\"x\"}", "\"seed\" must be an integer"},
        {"{\"root\":\"relative\"}", "\"root\" must be an absolute path"},
        {"{\"root\":5}", "\"root\" must be a string"},
    };
    for (const auto& c : cases) {
      Status s = tryLoad(c.first);
      CPPUNIT_ASSERT_MESSAGE(c.first, !s.isOk());
      CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), c.second));
      unload();
    }
    CPPUNIT_ASSERT(tryLoad("{\"root\":\"" + root_ + "\",\"stop_delay_ms\":5,\"seed\":-3}").isOk());
  }

  void testStateDirectoryIsPrivateAndWrittenSoon() {
    load();
    struct stat st {};
    CPPUNIT_ASSERT(::stat(root_.c_str(), &st) != 0);  // created on first use, not at load
    prepare("disk.1");
    CPPUNIT_ASSERT_EQUAL(0, ::stat(root_.c_str(), &st));
    CPPUNIT_ASSERT(S_ISDIR(st.st_mode));
    CPPUNIT_ASSERT_EQUAL(0700, static_cast<int>(st.st_mode & 0777));
    // The timer thread writes the state within its 100 ms batching period.
    std::string found;
    for (int i = 0; i < 100 && found.empty(); ++i) {
      for (int shard = 0; shard < 64 && found.empty(); ++shard) {
        char name[32];
        std::snprintf(name, sizeof name, "/tasks-%02x.json", shard);
        std::string text = shoal::test::readFile(root_ + name);
        if (contains(text, "\"disk.1\"")) found = text;
      }
      if (found.empty()) std::this_thread::sleep_for(10ms);
    }
    CPPUNIT_ASSERT_MESSAGE("disk.1 was never written under " + root_, !found.empty());
    CPPUNIT_ASSERT(contains(found, "\"schema\":\"shoal.runtime-sim-state/v1\""));
  }

  void testTasksSurviveAReload() {
    load();
    prepare("forever.1");
    prepare("left.1", {"SIM_RUN_MS=61000"});
    prepare("gone.1", {"SIM_RUN_MS=30000", "SIM_EXIT_CODE=4"});
    prepare("done.1", {"SIM_RUN_MS=0"});
    prepare("idle.1");
    for (const char* id : {"forever.1", "left.1", "gone.1", "done.1"}) events_.waitDone(start(id));
    events_.waitDone(wait("done.1"));
    const TaskStatus forever = inspect("forever.1");
    const TaskStatus gone_running = inspect("gone.1");
    unload();

    // The daemon is down for a minute.
    testClock().advance(60s);
    events_.clear();
    load();
    TaskStatus f = inspect("forever.1");
    CPPUNIT_ASSERT_EQUAL(std::string("running"), f.state);
    CPPUNIT_ASSERT_EQUAL(forever.pid, f.pid);
    CPPUNIT_ASSERT_EQUAL(forever.timestamp_ns, f.timestamp_ns);
    CPPUNIT_ASSERT_EQUAL(std::string("ready"), inspect("idle.1").state);
    CPPUNIT_ASSERT_EQUAL(std::string("complete"), inspect("done.1").state);
    // Its 30 s ran out while nothing was loaded: it exited then, with its exit code.
    TaskStatus g = inspect("gone.1");
    CPPUNIT_ASSERT_EQUAL(std::string("failed"), g.state);
    CPPUNIT_ASSERT_EQUAL(int64_t{4}, g.exit_code);
    CPPUNIT_ASSERT_EQUAL(gone_running.timestamp_ns + 30'000 * kNsPerMs, g.timestamp_ns);
    CPPUNIT_ASSERT(events_.waitStatus("gone.1", "failed", 1000ms));  // posted during init
    auto news = events_.statusesOf("gone.1");
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), news.size());  // the exit, and nothing else
    CPPUNIT_ASSERT_EQUAL(std::string("failed"), news[0].state);
    // 61 s minus the minute: a second left to run.
    TaskStatus l = inspect("left.1");
    CPPUNIT_ASSERT_EQUAL(std::string("running"), l.state);
    PluginEvent left_done = events_.waitDone(wait("left.1"), 3000ms);
    TaskStatus left = statusOf(left_done.json);
    CPPUNIT_ASSERT_EQUAL(std::string("complete"), left.state);
    CPPUNIT_ASSERT_EQUAL(l.timestamp_ns + 61'000 * kNsPerMs, left.timestamp_ns);
    // Logs survived too, and the reloaded tasks can still be driven.
    bool eof = false;
    auto lines = events_.recordsOf(logs("gone.1", "{}"), &eof);
    CPPUNIT_ASSERT(lines.size() >= 2);
    CPPUNIT_ASSERT_EQUAL(std::string("sim: started"), lines[lines.size() - 2].line);
    CPPUNIT_ASSERT_EQUAL(std::string("sim: exited with code 4"), lines.back().line);
    CPPUNIT_ASSERT_EQUAL(int64_t{137},
                         statusOf(events_.waitDone(terminate("forever.1")).json).exit_code);
    CPPUNIT_ASSERT_EQUAL(std::string("running"),
                         statusOf(events_.waitDone(start("idle.1")).json).state);
    // A new task gets a pid of its own.
    CPPUNIT_ASSERT(statusOf(prepare("new.1").json).pid > f.pid);
  }

  void testCorruptStateFileFailsInitNamingIt() {
    load();
    prepare("victim.1");
    unload();
    // Find the file that holds the task and cut it in half, as a crash of the disk might.
    std::string path;
    for (int shard = 0; shard < 64 && path.empty(); ++shard) {
      char name[32];
      std::snprintf(name, sizeof name, "/tasks-%02x.json", shard);
      if (contains(shoal::test::readFile(root_ + name), "victim.1")) path = root_ + name;
    }
    CPPUNIT_ASSERT(!path.empty());
    const std::string text = shoal::test::readFile(path);
    dir_->write("sim/" + path.substr(root_.size() + 1), text.substr(0, text.size() / 2));
    Status s = tryLoad(config());
    CPPUNIT_ASSERT(!s.isOk());
    CPPUNIT_ASSERT_MESSAGE(s.message(),
                           contains(s.message(), "state file " + path + " is corrupt"));
    unload();
    // Valid JSON with a wrong field is just as corrupt.
    dir_->write("sim/" + path.substr(root_.size() + 1),
                "{\"schema\":\"shoal.runtime-sim-state/v1\",\"tasks\":[{\"id\":\"x\"}]}");
    s = tryLoad(config());
    CPPUNIT_ASSERT(!s.isOk());
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), path + " is corrupt: task #0"));
  }

  void testTenThousandTasksReachRunningQuickly() {
    // SHOAL_SIM_TASKS=100000 turns this into the benchmark; it then prints its figures.
    const char* env = std::getenv("SHOAL_SIM_TASKS");
    const int n = env != nullptr ? std::atoi(env) : 10000;
    events_.setLight(true);
    load();
    const auto began = std::chrono::steady_clock::now();
    std::vector<uint64_t> starts;
    starts.reserve(n);
    for (int i = 0; i < n; ++i) {
      const std::string id = "scale." + std::to_string(i);
      const std::string json = taskJson(id);
      const uint64_t p = begin(
          "prepare", [&](void* s, uint64_t op) { return rt().prepare(s, op, str(id), str(json)); });
      (void)p;
      starts.push_back(start(id));
    }
    CPPUNIT_ASSERT(events_.waitCount(2 * static_cast<std::size_t>(n), 120'000ms));
    const auto running = std::chrono::steady_clock::now();
    for (const auto& d : events_.doneStatuses()) CPPUNIT_ASSERT_EQUAL(SHOAL_OK, d.second);
    const std::string all = list();
    CPPUNIT_ASSERT_EQUAL(static_cast<std::size_t>(n), countOf(all, "\"state\":\"running\""));
    const auto listed = std::chrono::steady_clock::now();
    unload();  // fini writes every shard
    const auto unloaded = std::chrono::steady_clock::now();
#ifndef SHOAL_SANITIZE_BUILD
    // Every task comes back running. (Skipped under ASan, where parsing the state's millions of
    // small allocations takes seconds; testTasksSurviveAReload covers reloading there.)
    load();
    CPPUNIT_ASSERT_EQUAL(static_cast<std::size_t>(n), countOf(list(), "\"state\":\"running\""));
#endif
    const auto reloaded = std::chrono::steady_clock::now();
    auto ms = [](auto d) {
      return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    };
    if (env != nullptr) {
      std::cerr << "\nruntime-sim: " << n << " tasks prepared+started to running in "
                << ms(running - began) << " ms; list " << ms(listed - running) << " ms; unload "
                << ms(unloaded - listed) << " ms; reload " << ms(reloaded - unloaded) << " ms\n";
    }
    // Generous for a 2-core machine under ASan; an O(n) scan per op would blow it.
    CPPUNIT_ASSERT(running - began < std::chrono::seconds(n / 1000 + 10));
  }

 private:
  const shoal_runtime_ops& rt() { return sim_->ops<shoal_runtime_ops>(); }

  std::string config(const std::string& extra = "") {
    return "{\"root\":\"" + root_ + "\"" + (extra.empty() ? "" : "," + extra) + "}";
  }

  Status tryLoad(const std::string& config_json, bool dispatch = true) {
    host_ = std::make_unique<PluginHost>(testClock());
    host_->setPluginConfig({{"runtime-sim", config_json}});
    host_->setEventHandler([this](const PluginEvent& e) { events_.push(e); });
    if (dispatch) host_->start();
    Status s = host_->loadFile(std::string(SHOAL_PLUGIN_BUILD_DIR) + "/runtime-sim.so");
    sim_ = host_->find(Kind::kRuntime, "runtime-sim");
    return s;
  }

  void load(const std::string& extra = "", bool with_root = true) {
    const std::string c = with_root ? config(extra) : "{" + extra + "}";
    Status s = tryLoad(c);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    CPPUNIT_ASSERT(sim_ != nullptr);
  }

  // Loaded, but events stay in the host's queue until host_->start().
  void loadWithoutDispatcher() {
    Status s = tryLoad(config(), false);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
  }

  void prepareNoWait(const std::string& id, const std::vector<std::string>& env = {}) {
    const std::string json = taskJson(id, env);
    begin("prepare", [&](void* s, uint64_t op) { return rt().prepare(s, op, str(id), str(json)); });
  }

  void unload() {
    if (host_) host_->shutdown();  // fini, then the queued events are delivered
    host_.reset();
    sim_ = nullptr;
  }

  // Invoke an async op with a fresh op id; it must be accepted. Returns the op id.
  template <class F>
  uint64_t begin(const char* name, F&& f) {
    const uint64_t op = ++next_op_;
    Status s = sim_->invoke(
        name, [&](void* st) { return f(st, op); }, true);
    CPPUNIT_ASSERT_MESSAGE(std::string(name) + ": " + s.toString(), s.isOk());
    return op;
  }

  // Invoke an async op with a fresh op id; returns how the call itself went.
  template <class F>
  Status attempt(const char* name, F&& f) {
    const uint64_t op = ++next_op_;
    return sim_->invoke(
        name, [&](void* st) { return f(st, op); }, true);
  }

  Status tryPrepare(const std::string& id, const std::string& json) {
    uint64_t op = 0;
    Status s = attempt("prepare", [&](void* st, uint64_t o) {
      op = o;
      return rt().prepare(st, o, str(id), str(json));
    });
    if (s.isOk()) events_.waitDone(op);
    return s;
  }

  PluginEvent prepare(const std::string& id, const std::vector<std::string>& env = {}) {
    const std::string json = taskJson(id, env);
    return events_.waitDone(begin(
        "prepare", [&](void* s, uint64_t op) { return rt().prepare(s, op, str(id), str(json)); }));
  }

  uint64_t start(const std::string& id) {
    return begin("start", [&](void* s, uint64_t op) { return rt().start(s, op, str(id)); });
  }
  uint64_t wait(const std::string& id) {
    return begin("wait", [&](void* s, uint64_t op) { return rt().wait(s, op, str(id)); });
  }
  uint64_t shutdown(const std::string& id, int64_t grace_ns) {
    return begin("shutdown",
                 [&](void* s, uint64_t op) { return rt().shutdown(s, op, str(id), grace_ns); });
  }
  uint64_t terminate(const std::string& id) {
    return begin("terminate", [&](void* s, uint64_t op) { return rt().terminate(s, op, str(id)); });
  }
  uint64_t remove(const std::string& id) {
    return begin("remove", [&](void* s, uint64_t op) { return rt().remove(s, op, str(id)); });
  }
  // A logs op that is expected to finish (not following): waits for its OP_DONE.
  uint64_t logs(const std::string& id, const std::string& options) {
    const uint64_t op =
        begin("logs", [&](void* s, uint64_t o) { return rt().logs(s, o, str(id), str(options)); });
    if (!contains(options, "\"follow\":true")) events_.waitDone(op);
    return op;
  }
  Status cancel(uint64_t op) {
    return sim_->invoke("cancel", [&](void* s) { return rt().cancel(s, op); });
  }

  Status tryInspect(const std::string& id, std::string* json = nullptr) {
    shoal_buf out{};
    Status s = sim_->invoke("inspect", [&](void* st) { return rt().inspect(st, str(id), &out); });
    if (out.ptr != nullptr) {
      std::string text = take(out);
      if (json != nullptr) *json = text;
    }
    return s;
  }

  TaskStatus inspect(const std::string& id) {
    std::string json;
    Status s = tryInspect(id, &json);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    return statusOf(json);
  }

  std::string list() {
    shoal_buf out{};
    Status s = sim_->invoke("list", [&](void* st) { return rt().list(st, &out); });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    return take(out);
  }

  std::unique_ptr<shoal::test::TempDir> dir_;
  std::string root_;
  Events events_;
  std::unique_ptr<PluginHost> host_;  // after events_: its dispatcher calls into events_
  PluginInstance* sim_ = nullptr;
  uint64_t next_op_ = 0;
};

CPPUNIT_TEST_SUITE_REGISTRATION(RuntimeSimTest);
