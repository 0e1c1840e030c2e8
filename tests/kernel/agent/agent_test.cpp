// The agent and the dispatcher together, without TLS: the agent's leader calls go straight to
// a Dispatcher on a single-manager replicated store, and the runtime is a fake that records
// the controller ops. Pins: assigned tasks are driven to RUNNING and reported; exits become
// COMPLETE/FAILED with the exit code; a stop request shuts the task down; a prepare failure
// rejects it; a restarted agent re-attaches (wait) instead of starting again; a dispatcher that
// lost its sessions resynchronises the agent without duplicating anything; the dispatcher
// ignores states for other nodes' tasks and states that would go backwards.
#include <cppunit/extensions/HelperMacros.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "kernel/agent/agent.h"
#include "kernel/agent/wire.h"
#include "kernel/manager/dispatcher.h"
#include "kernel/manager/service_spec.h"
#include "tests/fakes/local_transport.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace std::chrono_literals;
using shoal::Status;
using shoal::agent::Agent;
using shoal::agent::LeaderReply;
using shoal::agent::Runtime;
using shoal::manager::Dispatcher;
using shoal::manager::observedState;
using shoal::manager::ReplicatedStore;
using shoal::manager::TaskStatus;
using shoal::store::Kind;
using shoal::store::Object;
using shoal::store::ObjectPtr;
using shoal::store::TaskState;
using shoal::test::eventually;

#define ASSERT_OK(expr)                               \
  do {                                                \
    const Status s_ = (expr);                         \
    CPPUNIT_ASSERT_MESSAGE(s_.toString(), s_.isOk()); \
  } while (0)

namespace {

// A runtime whose ops finish on its own thread; waits finish when the test says the task exits.
class FakeRuntime final : public Runtime {
 public:
  FakeRuntime() : thread_([this] { loop(); }) {}
  ~FakeRuntime() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  Status prepare(const std::string& id, const std::string& json, Done done) override {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back("prepare " + id);
    lastDocument_ = json;
    if (failPrepare_) {
      queue_.emplace_back(std::move(done), Status::internal("image not found"),
                          "{\"state\":\"failed\",\"message\":\"image not found\"}");
    } else {
      known_[id] = "ready";
      queue_.emplace_back(std::move(done), Status::ok(), "{\"state\":\"ready\"}");
    }
    cv_.notify_all();
    return Status::ok();
  }
  Status start(const std::string& id, Done done) override {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back("start " + id);
    known_[id] = "running";
    if (holdStarts_) {
      // A start that waits (for a health check, say) until the task runs or is stopped.
      starts_[id] = std::move(done);
      return Status::ok();
    }
    queue_.emplace_back(std::move(done), Status::ok(), "{\"state\":\"running\",\"pid\":42}");
    cv_.notify_all();
    return Status::ok();
  }
  Status wait(const std::string& id, Done done) override {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back("wait " + id);
    if (!known_.count(id)) return Status::notFound("no task " + id);
    waits_[id] = std::move(done);
    return Status::ok();
  }
  Status shutdown(const std::string& id, int64_t, Done done) override {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back("shutdown " + id);
    known_[id] = "shutdown";
    if (auto st = starts_.find(id); st != starts_.end()) {
      // Stopped before it ever ran: its start fails first, as runtime-runc's does.
      queue_.emplace_back(std::move(st->second), Status::internal("stopped while starting"),
                          "{\"state\":\"shutdown\",\"exit_code\":0}");
      starts_.erase(st);
    }
    queue_.emplace_back(std::move(done), Status::ok(), "{\"state\":\"shutdown\",\"exit_code\":0}");
    if (auto w = waits_.find(id); w != waits_.end()) {
      queue_.emplace_back(std::move(w->second), Status::ok(),
                          "{\"state\":\"shutdown\",\"exit_code\":0}");
      waits_.erase(w);
    }
    cv_.notify_all();
    return Status::ok();
  }
  Status remove(const std::string& id, Done done) override {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back("remove " + id);
    known_.erase(id);
    queue_.emplace_back(std::move(done), Status::ok(), "");
    cv_.notify_all();
    return Status::ok();
  }
  shoal::Result<std::string> list() override { return std::string("[]"); }
  Status logs(const std::string& id, const std::string&, Chunk chunk, Done done,
              uint64_t* op) override {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back("logs " + id);
    logOps_[id] = {std::move(chunk), std::move(done)};
    *op = ++nextOp_;
    return Status::ok();
  }
  Status cancel(uint64_t) override { return Status::ok(); }
  // A line of task `id`'s log to its logs op; then the op's end (the task stopped).
  void logLine(const std::string& id, const std::string& line) {
    Chunk chunk;
    {
      std::lock_guard<std::mutex> lock(mu_);
      chunk = logOps_.at(id).first;
    }
    chunk("{\"records\":[{\"stream\":\"stdout\",\"timestamp_ns\":1,\"line\":\"" + line + "\"}]}");
  }
  void endLogs(const std::string& id) {
    Done done;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done = std::move(logOps_.at(id).second);
      logOps_.erase(id);
    }
    done(Status::ok(), "");
  }

  void exit(const std::string& id, int code) {
    std::lock_guard<std::mutex> lock(mu_);
    known_[id] = "exited";
    auto w = waits_.find(id);
    if (w == waits_.end()) return;
    queue_.emplace_back(std::move(w->second), Status::ok(),
                        "{\"state\":\"" + std::string(code ? "failed" : "complete") +
                            "\",\"exit_code\":" + std::to_string(code) + "}");
    waits_.erase(w);
    cv_.notify_all();
  }
  bool waiting(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    return waits_.count(id) != 0;
  }
  std::size_t count(const std::string& call) {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<std::size_t>(std::count(calls_.begin(), calls_.end(), call));
  }
  void failPrepare() {
    std::lock_guard<std::mutex> lock(mu_);
    failPrepare_ = true;
  }
  void holdStarts() {
    std::lock_guard<std::mutex> lock(mu_);
    holdStarts_ = true;
  }
  std::string lastDocument() {
    std::lock_guard<std::mutex> lock(mu_);
    return lastDocument_;
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      auto [done, status, json] = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      done(status, json);
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool failPrepare_ = false;
  bool holdStarts_ = false;
  std::map<std::string, Done> starts_;
  std::deque<std::tuple<Done, Status, std::string>> queue_;
  std::map<std::string, Done> waits_;
  std::map<std::string, std::string> known_;
  std::vector<std::string> calls_;
  std::string lastDocument_;
  std::map<std::string, std::pair<Chunk, Done>> logOps_;
  uint64_t nextOp_ = 0;
  std::thread thread_;
};

}  // namespace

class AgentTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(AgentTest);
  CPPUNIT_TEST(testAssignedTaskRunsAndIsReported);
  CPPUNIT_TEST(testTemplatesInHostnameAndEnvAreExpanded);
  CPPUNIT_TEST(testExitsAreReportedWithTheirExitCode);
  CPPUNIT_TEST(testTaskToldToStopIsShutDownAndRemoved);
  CPPUNIT_TEST(testLeavingRemovesEveryTaskAndTakesNoMore);
  CPPUNIT_TEST(testStopDuringAStartThatWaitsIsNotHeldUp);
  CPPUNIT_TEST(testPrepareFailureRejectsTheTask);
  CPPUNIT_TEST(testRestartedAgentReattachesInsteadOfStartingAgain);
  CPPUNIT_TEST(testRecordsInTheEarlierFormatStillLoad);
  CPPUNIT_TEST(testDamagedRecordsFallBackToTheLeadersAssignments);
  CPPUNIT_TEST(testNewDispatcherResynchronisesWithoutDuplicates);
  CPPUNIT_TEST(testDispatcherIgnoresOtherNodesAndBackwardStates);
  CPPUNIT_TEST(testBadStatusRequestsAreRefused);
  CPPUNIT_TEST(testLogsGoToTheBrokerNamingTheRequestTheyAnswer);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    dir_ = std::make_unique<shoal::test::TempDir>();
    auto storage = shoal::raft::RaftStorage::open(dir_->file("raft"));
    CPPUNIT_ASSERT(storage.isOk());
    shoal::manager::ReplicatedStoreOptions o;
    o.raft.raft.id = 1;
    o.raft.raft.voters = {1};
    o.raft.tick = 10ms;
    transport_ = std::make_unique<shoal::test::LocalTransport>(hub_, 1);
    store_ = std::make_unique<ReplicatedStore>(o, std::move(storage.value()), *transport_, random_,
                                               shoal::SystemClock::instance());
    ASSERT_OK(store_->start());
    CPPUNIT_ASSERT(eventually([&] { return store_->raft().isLeader(); }));
    startDispatcher();
    runtime_ = std::make_unique<FakeRuntime>();
  }
  void tearDown() override {
    agent_.reset();
    runtime_.reset();
    dispatcher_.reset();
    store_.reset();
    transport_.reset();
    dir_.reset();
  }

  void testAssignedTaskRunsAndIsReported() {
    assign("t1", "n1");
    startAgent();
    CPPUNIT_ASSERT(eventually([&] { return state("t1") == TaskState::kRunning; }));
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, runtime_->count("prepare t1"));
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, runtime_->count("start t1"));
    CPPUNIT_ASSERT(eventually([&] { return runtime_->waiting("t1"); }));
    // The runtime got the container spec from the task.
    CPPUNIT_ASSERT(runtime_->lastDocument().find("\"image\":\"busybox\"") != std::string::npos);
    CPPUNIT_ASSERT(runtime_->lastDocument().find("\"schema\":\"shoal.task/v1\"") !=
                   std::string::npos);
  }

  void testTemplatesInHostnameAndEnvAreExpanded() {
    assign("t9", "n1",
           "{\"ContainerSpec\":{\"Image\":\"busybox\",\"Hostname\":\"{{.Service.Name}}-{{ "
           ".Task.Slot }}\","
           "\"Env\":[\"NODE={{.Node.ID}}\",\"KEEP={{.Unknown}}\"]}}",
           "web.app.1");
    startAgent();
    CPPUNIT_ASSERT(eventually([&] { return runtime_->count("prepare t9") == 1; }));
    const std::string doc = runtime_->lastDocument();
    CPPUNIT_ASSERT_MESSAGE(doc, doc.find("\"hostname\":\"web.app-1\"") != std::string::npos);
    CPPUNIT_ASSERT_MESSAGE(doc, doc.find("\"NODE=n1\"") != std::string::npos);
    CPPUNIT_ASSERT_MESSAGE(doc, doc.find("\"KEEP={{.Unknown}}\"") != std::string::npos);
  }

  void testExitsAreReportedWithTheirExitCode() {
    assign("ok", "n1");
    assign("bad", "n1");
    startAgent();
    CPPUNIT_ASSERT(eventually([&] { return runtime_->waiting("ok") && runtime_->waiting("bad"); }));
    runtime_->exit("ok", 0);
    runtime_->exit("bad", 3);
    CPPUNIT_ASSERT(eventually([&] { return state("ok") == TaskState::kComplete; }));
    CPPUNIT_ASSERT(eventually([&] { return state("bad") == TaskState::kFailed; }));
    auto st = shoal::manager::parseTaskStatus(task("bad")->status);
    CPPUNIT_ASSERT(st.isOk());
    CPPUNIT_ASSERT_EQUAL(int64_t{3}, st->exitCode);
    CPPUNIT_ASSERT_EQUAL(std::string("task: non-zero exit (3)"), st->err);
  }

  void testTaskToldToStopIsShutDownAndRemoved() {
    assign("t1", "n1");
    startAgent();
    CPPUNIT_ASSERT(eventually([&] { return runtime_->waiting("t1"); }));
    edit("t1", [](Object& o) { o.desiredState = TaskState::kShutdown; });
    CPPUNIT_ASSERT(eventually([&] { return state("t1") == TaskState::kShutdown; }));
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, runtime_->count("shutdown t1"));
    // Ended and told to stop: out of the assignments, so removed from the runtime and the agent.
    CPPUNIT_ASSERT(eventually([&] { return runtime_->count("remove t1") == 1; }));
    CPPUNIT_ASSERT(eventually([&] { return agent_->tasks().empty(); }));
  }

  // `swarm leave`: every task is shut down and removed, and what the managers still assign
  // afterwards is not run.
  void testLeavingRemovesEveryTaskAndTakesNoMore() {
    assign("t1", "n1");
    assign("t2", "n1");
    startAgent();
    CPPUNIT_ASSERT(eventually([&] { return runtime_->waiting("t1") && runtime_->waiting("t2"); }));
    CPPUNIT_ASSERT_EQUAL(std::size_t{0}, agent_->removeAllTasks());
    CPPUNIT_ASSERT(agent_->tasks().empty());
    for (const char* t : {"t1", "t2"}) {
      CPPUNIT_ASSERT_EQUAL(std::size_t{1}, runtime_->count(std::string("shutdown ") + t));
      CPPUNIT_ASSERT_EQUAL(std::size_t{1}, runtime_->count(std::string("remove ") + t));
    }
    assign("t3", "n1");
    std::this_thread::sleep_for(500ms);
    CPPUNIT_ASSERT_EQUAL(std::size_t{0}, runtime_->count("prepare t3"));
    CPPUNIT_ASSERT(agent_->tasks().empty());
  }

  void testStopDuringAStartThatWaitsIsNotHeldUp() {
    runtime_->holdStarts();
    assign("t1", "n1");
    startAgent();
    CPPUNIT_ASSERT(eventually([&] { return runtime_->count("start t1") == 1; }));
    CPPUNIT_ASSERT(eventually([&] { return state("t1") == TaskState::kStarting; }));
    edit("t1", [](Object& o) { o.desiredState = TaskState::kShutdown; });
    // Shut down (not failed) without waiting for the start, then removed.
    CPPUNIT_ASSERT(eventually([&] { return state("t1") == TaskState::kShutdown; }));
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, runtime_->count("shutdown t1"));
    CPPUNIT_ASSERT(eventually([&] { return runtime_->count("remove t1") == 1; }));
    CPPUNIT_ASSERT(eventually([&] { return agent_->tasks().empty(); }));
  }

  void testPrepareFailureRejectsTheTask() {
    runtime_->failPrepare();
    assign("t1", "n1");
    startAgent();
    CPPUNIT_ASSERT(eventually([&] { return state("t1") == TaskState::kRejected; }));
    auto st = shoal::manager::parseTaskStatus(task("t1")->status);
    CPPUNIT_ASSERT(st->err.find("image not found") != std::string::npos);
    CPPUNIT_ASSERT_EQUAL(std::size_t{0}, runtime_->count("start t1"));
  }

  void testRestartedAgentReattachesInsteadOfStartingAgain() {
    assign("t1", "n1");
    startAgent();
    CPPUNIT_ASSERT(eventually([&] { return runtime_->waiting("t1"); }));
    CPPUNIT_ASSERT(eventually([&] { return state("t1") == TaskState::kRunning; }));
    agent_.reset();  // the daemon stops; the task keeps running in the runtime
    startAgent();
    CPPUNIT_ASSERT(eventually([&] { return runtime_->count("wait t1") == 2; }));
    std::this_thread::sleep_for(300ms);
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, runtime_->count("prepare t1"));
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, runtime_->count("start t1"));
    runtime_->exit("t1", 0);
    CPPUNIT_ASSERT(eventually([&] { return state("t1") == TaskState::kComplete; }));
  }

  // Records hold each task as the object the dispatcher sent; those written when it was an
  // escaped string still load, and the next write turns them into the object.
  void testRecordsInTheEarlierFormatStillLoad() {
    assign("t1", "n1");
    startAgent();
    CPPUNIT_ASSERT(eventually([&] { return state("t1") == TaskState::kRunning; }));
    agent_.reset();
    const std::string path = dir_->file("agent") + "/tasks.json";
    std::string record = shoal::test::readFile(path);
    const std::string key = "\"task\":";
    const std::size_t at = record.find(key);
    CPPUNIT_ASSERT(at != std::string::npos);
    const std::size_t from = at + key.size();
    CPPUNIT_ASSERT_EQUAL('{', record[from]);  // an object now
    const std::size_t to = shoal::agent::wire::skipValue(record, from);
    const std::string task = record.substr(from, to - from);
    std::string quoted = "\"";
    for (char c : task) quoted += c == '"' ? std::string("\\\"") : std::string(1, c);
    quoted += '"';
    record.replace(from, to - from, quoted);
    dir_->write("agent/tasks.json", record);
    // No leader to ask: what the agent knows comes from the record alone.
    stopDispatcher();
    startAgent();
    CPPUNIT_ASSERT(eventually([&] { return runtime_->count("wait t1") == 2; }));
    CPPUNIT_ASSERT_EQUAL(std::string("running"), agent_->tasks()["t1"]);
    startDispatcher();
    std::this_thread::sleep_for(300ms);
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, runtime_->count("start t1"));
    runtime_->exit("t1", 0);
    CPPUNIT_ASSERT(eventually([&] { return state("t1") == TaskState::kComplete; }));
    agent_.reset();
    record = shoal::test::readFile(path);
    CPPUNIT_ASSERT(record.find(key + "{") != std::string::npos);
    CPPUNIT_ASSERT(record.find("\"state\":\"complete\"") != std::string::npos);
  }

  void testDamagedRecordsFallBackToTheLeadersAssignments() {
    assign("t1", "n1");
    startAgent();
    CPPUNIT_ASSERT(eventually([&] { return state("t1") == TaskState::kRunning; }));
    agent_.reset();
    dir_->write("agent/tasks.json", "[{\"id\":\"t1\",\"task\":{\"ID\"");
    // The record does not read: the leader's full set says what runs here, and the task it
    // says is running is waited on again, not started twice.
    startAgent();
    CPPUNIT_ASSERT(eventually([&] { return runtime_->count("wait t1") == 2; }));
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, runtime_->count("start t1"));
    runtime_->exit("t1", 0);
    CPPUNIT_ASSERT(eventually([&] { return state("t1") == TaskState::kComplete; }));
  }

  void testNewDispatcherResynchronisesWithoutDuplicates() {
    assign("t1", "n1");
    startAgent();
    CPPUNIT_ASSERT(eventually([&] { return state("t1") == TaskState::kRunning; }));
    // A new leader: its dispatcher knows no session, and the store lost the last report.
    stopDispatcher();
    edit("t1", [](Object& o) {
      TaskStatus st;
      st.state = TaskState::kStarting;
      o.status = shoal::manager::taskStatusJson(st);
    });
    startDispatcher();
    CPPUNIT_ASSERT(eventually([&] { return state("t1") == TaskState::kRunning; }));
    assign("t2", "n1");
    CPPUNIT_ASSERT(eventually([&] { return state("t2") == TaskState::kRunning; }));
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, runtime_->count("prepare t1"));
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, runtime_->count("start t1"));
  }

  void testDispatcherIgnoresOtherNodesAndBackwardStates() {
    assign("t1", "n1");
    auto post = [&](const std::string& node, const std::string& state) {
      auto r =
          dispatcher_->status(node, "{\"updates\":[{\"ID\":\"t1\",\"State\":\"" + state + "\"}]}");
      CPPUNIT_ASSERT_EQUAL(200, r.status);
      dispatcher_->flush();
    };
    post("n2", "running");
    CPPUNIT_ASSERT(state("t1") == TaskState::kAssigned);
    post("n1", "running");
    CPPUNIT_ASSERT(state("t1") == TaskState::kRunning);
    post("n1", "preparing");
    CPPUNIT_ASSERT(state("t1") == TaskState::kRunning);
  }

  void testBadStatusRequestsAreRefused() {
    CPPUNIT_ASSERT_EQUAL(400, dispatcher_->status("n1", "not json").status);
    CPPUNIT_ASSERT_EQUAL(400, dispatcher_->status("n1", "{}").status);
    CPPUNIT_ASSERT_EQUAL(
        400,
        dispatcher_->status("n1", "{\"updates\":[{\"ID\":\"t1\",\"State\":\"bogus\"}]}").status);
    // An agent cannot claim a task back into the scheduler's states.
    CPPUNIT_ASSERT_EQUAL(
        400,
        dispatcher_->status("n1", "{\"updates\":[{\"ID\":\"t1\",\"State\":\"pending\"}]}").status);
    CPPUNIT_ASSERT_EQUAL(400, dispatcher_->assignments("n1", "[1]").status);
  }

  // `service logs -f`: the request reaches the agent in its next poll, the runtime's lines go to
  // the broker, and each publish names the last request its job took in ("seq"), so that the
  // broker can tell a late "done" of a job that ended from the job streaming a new task.
  void testLogsGoToTheBrokerNamingTheRequestTheyAnswer() {
    assign("t1", "n1");
    assign("t2", "n1");
    startAgent();
    CPPUNIT_ASSERT(eventually([&] { return runtime_->waiting("t1") && runtime_->waiting("t2"); }));
    shoal::manager::LogBroker::Options follow;
    follow.follow = true;
    shoal::manager::LogBroker& broker = dispatcher_->logBroker();
    const std::string sub = broker.subscribe({{"n1", {"t1"}}}, follow, "svc");
    CPPUNIT_ASSERT(eventually([&] { return runtime_->count("logs t1") == 1; }));
    runtime_->logLine("t1", "hello");
    runtime_->endLogs("t1");  // t1 stopped: the job is over
    // Its last publish (the line may have gone in one before it) says it is done, as of seq 1.
    CPPUNIT_ASSERT(eventually([&] { return publishedWith({"\"done\":true"}) == 1; }));
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, publishedWith({"\"done\":true", "\"seq\":1"}));
    auto batch = broker.read(sub, 0, 1s);
    CPPUNIT_ASSERT(batch && batch->records.size() == 1 && batch->records[0].line == "hello");
    // The service's next task on this node: a second request, streamed by a new job.
    broker.taskStarted("svc", "n1", "t2");
    CPPUNIT_ASSERT(eventually([&] { return runtime_->count("logs t2") == 1; }));
    runtime_->logLine("t2", "again");
    CPPUNIT_ASSERT(eventually([&] { return publishedWith({"\"again\"", "\"seq\":2"}) == 1; }));
    broker.cancel(sub);
    // With no leader, a publish is tried again every 500 ms, not as fast as calls fail (50 ms
    // here).
    stopDispatcher();
    runtime_->logLine("t2", "nobody hears this");
    const int before = logCalls_;
    std::this_thread::sleep_for(2s);
    const int tries = logCalls_ - before;
    CPPUNIT_ASSERT_MESSAGE(std::to_string(tries), tries >= 1 && tries <= 6);
  }

 private:
  // How many of the agent's log publishes hold every one of `parts`.
  std::size_t publishedWith(const std::vector<std::string>& parts) {
    std::lock_guard<std::mutex> lock(publishedMu_);
    return static_cast<std::size_t>(
        std::count_if(published_.begin(), published_.end(), [&](const std::string& b) {
          return std::all_of(parts.begin(), parts.end(),
                             [&](const std::string& p) { return b.find(p) != std::string::npos; });
        }));
  }
  // The leader goes: calls find no dispatcher until startDispatcher().
  void stopDispatcher() {
    std::shared_ptr<Dispatcher> old;
    {
      std::lock_guard<std::mutex> lock(dispatcherMu_);
      old = std::move(dispatcher_);
    }
    old->stop();
  }
  void startDispatcher() {
    std::lock_guard<std::mutex> lock(dispatcherMu_);
    dispatcher_ = std::make_shared<Dispatcher>(*store_, random_, shoal::SystemClock::instance());
    dispatcher_->start();
  }
  void startAgent() {
    auto call = [this](const std::string& path,
                       const std::string& body) -> shoal::Result<LeaderReply> {
      if (path == "/dispatcher/logs") ++logCalls_;
      std::unique_lock<std::mutex> lock(dispatcherMu_);
      if (!dispatcher_) {
        lock.unlock();
        std::this_thread::sleep_for(50ms);
        return Status::unavailable("no leader");
      }
      std::shared_ptr<Dispatcher> d = dispatcher_;
      // Calls run without the lock held (long polls), as the node API would run them.
      lock.unlock();
      if (path == "/dispatcher/logs") {
        std::lock_guard<std::mutex> published(publishedMu_);
        published_.push_back(body);
      }
      auto r = path == "/dispatcher/assignments" ? d->assignments("n1", body)
               : path == "/dispatcher/logs"      ? d->logs("n1", body)
                                                 : d->status("n1", body);
      return LeaderReply{r.status, r.body};
    };
    agent_ = std::make_unique<Agent>(dir_->file("agent"), *runtime_, call,
                                     shoal::SystemClock::instance());
    ASSERT_OK(agent_->start());
  }
  void assign(const std::string& id, const std::string& node,
              const std::string& spec = "{\"ContainerSpec\":{\"Image\":\"busybox\"}}",
              const std::string& name = "svc.1") {
    ASSERT_OK(store_->update(
        [&](shoal::store::Tx& tx) {
          Object o;
          o.kind = Kind::kTask;
          o.id = id;
          o.serviceId = "svc";
          o.slot = 1;
          o.nodeId = node;
          o.desiredState = TaskState::kRunning;
          o.spec = spec;
          o.name = name;
          TaskStatus st;
          st.state = TaskState::kAssigned;
          o.status = shoal::manager::taskStatusJson(st);
          return tx.create(std::move(o));
        },
        5s));
  }
  void edit(const std::string& id, const std::function<void(Object&)>& fn) {
    ASSERT_OK(store_->update(
        [&](shoal::store::Tx& tx) {
          Object o = *tx.get(Kind::kTask, id);
          fn(o);
          return tx.update(std::move(o));
        },
        5s));
  }
  ObjectPtr task(const std::string& id) {
    ObjectPtr o;
    store_->view([&](const shoal::store::ReadView& v) { o = v.get(Kind::kTask, id); });
    return o;
  }
  TaskState state(const std::string& id) {
    auto t = task(id);
    return t ? observedState(*t) : TaskState::kNew;
  }

  std::unique_ptr<shoal::test::TempDir> dir_;
  shoal::test::LocalHub hub_;
  std::unique_ptr<shoal::test::LocalTransport> transport_;
  shoal::SeededRandom random_{3};
  std::unique_ptr<ReplicatedStore> store_;
  std::mutex dispatcherMu_;
  std::atomic<int> logCalls_{0};  // the agent's calls to /dispatcher/logs, answered or not
  std::mutex publishedMu_;
  std::vector<std::string> published_;  // guarded by publishedMu_: the agent's log publishes
  std::shared_ptr<Dispatcher> dispatcher_;
  std::unique_ptr<FakeRuntime> runtime_;
  std::unique_ptr<Agent> agent_;
};

CPPUNIT_TEST_SUITE_REGISTRATION(AgentTest);
