// The orchestrator against a real (single-manager) replicated store and a clock the test moves:
// slots and scaling, restart policies, global services following nodes, down and drained
// nodes, task history, rolling updates (both orders), rollback on failure, jobs, removal; and
// the service spec checks that refuse bad specs by field.
#include <cppunit/extensions/HelperMacros.h>

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kernel/manager/orchestrator.h"
#include "kernel/manager/service_spec.h"
#include "tests/fakes/local_transport.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace std::chrono_literals;
using shoal::Status;
using shoal::manager::observedState;
using shoal::manager::Orchestrator;
using shoal::manager::ReplicatedStore;
using shoal::manager::ReplicatedStoreOptions;
using shoal::manager::TaskStatus;
using shoal::store::Kind;
using shoal::store::Object;
using shoal::store::ObjectPtr;
using shoal::store::TaskState;

#define ASSERT_OK(expr)                               \
  do {                                                \
    const Status s_ = (expr);                         \
    CPPUNIT_ASSERT_MESSAGE(s_.toString(), s_.isOk()); \
  } while (0)

namespace {

// Monotonic time the test moves by hand (restart delays, update delays).
class ManualClock final : public shoal::Clock {
 public:
  WallTime now() const override { return std::chrono::system_clock::now() + offset_.load(); }
  MonoTime monotonic() const override { return MonoTime() + offset_.load() + 1h; }
  void advance(std::chrono::nanoseconds d) { offset_.store(offset_.load() + d); }

 private:
  std::atomic<std::chrono::nanoseconds> offset_{std::chrono::nanoseconds(0)};
};

std::string replicated(int n, const std::string& extra = "") {
  return "{\"Mode\":{\"Replicated\":{\"Replicas\":" + std::to_string(n) +
         "}},\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"busybox\"}" + extra + "}}";
}

}  // namespace

class OrchestratorTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(OrchestratorTest);
  CPPUNIT_TEST(testReplicatedServiceGetsOneTaskPerSlot);
  CPPUNIT_TEST(testServiceBiggerThanATransactionFillsEverySlotOnce);
  CPPUNIT_TEST(testTaskSpecsWithAttachmentsStillRunTheirTemplate);
  CPPUNIT_TEST(testHostModePortsGoInTheTaskTemplate);
  CPPUNIT_TEST(testScaleDownPrefersTasksNotRunningThenBusiestNodes);
  CPPUNIT_TEST(testFailedTaskIsReplacedAfterTheRestartDelay);
  CPPUNIT_TEST(testRestartPolicyNoneAndMaxAttemptsStopRestarts);
  CPPUNIT_TEST(testOnFailureDoesNotRestartCompletedTasks);
  CPPUNIT_TEST(testGlobalServiceFollowsJoinsDrainsAndConstraints);
  CPPUNIT_TEST(testTasksOfADownNodeAreRescheduled);
  CPPUNIT_TEST(testTaskPlacedOnANodeThatWentDownIsMoved);
  CPPUNIT_TEST(testTaskHistoryIsPrunedToTheLimit);
  CPPUNIT_TEST(testStopFirstUpdateStopsBeforeReplacing);
  CPPUNIT_TEST(testStartFirstUpdateKeepsOldTaskUntilNewOneRuns);
  CPPUNIT_TEST(testUpdateParallelismAndDelay);
  CPPUNIT_TEST(testFailedUpdateRollsBack);
  CPPUNIT_TEST(testFailedUpdatePauses);
  CPPUNIT_TEST(testReplicatedJobRunsToItsCompletions);
  CPPUNIT_TEST(testRemovedServiceTakesItsTasks);
  CPPUNIT_TEST(testInvalidSpecsAreRefusedNamingTheField);
  CPPUNIT_TEST(testConstraintsParseAndMatch);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    dir_ = std::make_unique<shoal::test::TempDir>();
    auto storage = shoal::raft::RaftStorage::open(dir_->file("raft"));
    CPPUNIT_ASSERT(storage.isOk());
    ReplicatedStoreOptions o;
    o.raft.raft.id = 1;
    o.raft.raft.voters = {1};
    o.raft.tick = 10ms;
    transport_ = std::make_unique<shoal::test::LocalTransport>(hub_, 1);
    store_ = std::make_unique<ReplicatedStore>(o, std::move(storage.value()), *transport_, random_,
                                               shoal::SystemClock::instance());
    ASSERT_OK(store_->start());
    CPPUNIT_ASSERT(shoal::test::eventually([&] { return store_->raft().isLeader(); }));
    orchestrator_ = std::make_unique<Orchestrator>(*store_, random_, clock_);
  }
  void tearDown() override {
    orchestrator_.reset();
    store_.reset();
    transport_.reset();
    dir_.reset();
  }

  // The allocator appends a task's addresses to its spec; the task still runs its service's
  // template (not outdated, grouped with its siblings for scheduling).
  void testTaskSpecsWithAttachmentsStillRunTheirTemplate() {
    using shoal::manager::runsTemplate;
    using shoal::manager::templateOf;
    using shoal::manager::withAttachments;
    const std::string tmpl = "{\"ContainerSpec\":{\"Image\":\"busybox\"}}";
    const std::string a = withAttachments(tmpl, "[{\"Address\":\"10.0.1.3/24\"}]");
    const std::string b = withAttachments(tmpl, "[{\"Address\":\"10.0.1.4/24\"}]");
    CPPUNIT_ASSERT(a != b);
    CPPUNIT_ASSERT(Poco::JSON::Parser().parse(a).extract<Poco::JSON::Object::Ptr>()->has(
        "NetworksAttachments"));
    CPPUNIT_ASSERT(runsTemplate(a, tmpl) && runsTemplate(b, tmpl) && runsTemplate(tmpl, tmpl));
    CPPUNIT_ASSERT_EQUAL(tmpl, templateOf(a));
    CPPUNIT_ASSERT_EQUAL(templateOf(a), templateOf(b));
    CPPUNIT_ASSERT_EQUAL(tmpl, templateOf(tmpl));
    // An empty template, and a different template, are told apart.
    CPPUNIT_ASSERT_EQUAL(std::string("{}"), templateOf(withAttachments("{}", "[]")));
    CPPUNIT_ASSERT(runsTemplate(withAttachments("{}", "[]"), "{}"));
    CPPUNIT_ASSERT(!runsTemplate(a, "{\"ContainerSpec\":{\"Image\":\"alpine\"}}"));
    CPPUNIT_ASSERT(!runsTemplate(a, "{\"ContainerSpec\":{\"Image\":\"busybox\"},\"X\":1}"));
  }

  // Host-mode ports are mapped per task by its node, so they are part of what a task runs:
  // in its template (last, after the TaskTemplate's own members), and a change of them is a
  // change of template (the tasks are replaced, as Swarm does); ingress ports are not.
  void testHostModePortsGoInTheTaskTemplate() {
    using shoal::manager::parseServiceSpec;
    auto spec = [](const std::string& ports) {
      return R"({"TaskTemplate":{"ContainerSpec":{"Image":"busybox"}},"EndpointSpec":{"Ports":[)" +
             ports + "]}}";
    };
    auto host = parseServiceSpec(
        spec(R"({"TargetPort":80,"PublishedPort":8080,"PublishMode":"host"},)"
             R"({"Protocol":"udp","TargetPort":53,"PublishedPort":5353,"PublishMode":"host"},)"
             R"({"TargetPort":443,"PublishedPort":443})"));
    CPPUNIT_ASSERT(host);
    CPPUNIT_ASSERT_EQUAL(
        std::string(R"({"ContainerSpec":{"Image":"busybox"},"HostPorts":[)"
                    R"({"Protocol":"tcp","PublishedPort":8080,"TargetPort":80},)"
                    R"({"Protocol":"udp","PublishedPort":5353,"TargetPort":53}]})"),
        host->taskTemplate);
    CPPUNIT_ASSERT(
        Poco::JSON::Parser().parse(host->taskTemplate).extract<Poco::JSON::Object::Ptr>());
    auto moved =
        parseServiceSpec(spec(R"({"TargetPort":80,"PublishedPort":8081,"PublishMode":"host"})"));
    CPPUNIT_ASSERT(moved && moved->taskTemplate != host->taskTemplate);
    auto ingressOnly = parseServiceSpec(spec(R"({"TargetPort":80,"PublishedPort":8080})"));
    CPPUNIT_ASSERT(ingressOnly);
    CPPUNIT_ASSERT_EQUAL(std::string(R"({"ContainerSpec":{"Image":"busybox"}})"),
                         ingressOnly->taskTemplate);
    // With attachments appended by the allocator, a task still runs it.
    const std::string task = shoal::manager::withAttachments(host->taskTemplate, "[]");
    CPPUNIT_ASSERT(shoal::manager::runsTemplate(task, host->taskTemplate));
    CPPUNIT_ASSERT_EQUAL(host->taskTemplate, shoal::manager::templateOf(task));
  }

  void testReplicatedServiceGetsOneTaskPerSlot() {
    const auto svc = createService("web", replicated(3));
    reconcile();
    auto ts = live(svc);
    CPPUNIT_ASSERT_EQUAL(std::size_t{3}, ts.size());
    std::vector<uint64_t> slots;
    for (const auto& t : ts) {
      slots.push_back(t->slot);
      CPPUNIT_ASSERT(t->nodeId.empty());
      CPPUNIT_ASSERT(observedState(*t) == TaskState::kPending);
      CPPUNIT_ASSERT_EQUAL(std::string("web.") + std::to_string(t->slot), t->name);
    }
    std::sort(slots.begin(), slots.end());
    CPPUNIT_ASSERT(slots == (std::vector<uint64_t>{1, 2, 3}));
    reconcile();  // nothing more to do
    CPPUNIT_ASSERT_EQUAL(std::size_t{3}, all(svc).size());
  }

  // 4,500 slots take three transactions; after the first, the loop creates the next slots
  // without reading the service's tasks again, skipping the slots the first read found held.
  void testServiceBiggerThanATransactionFillsEverySlotOnce() {
    addNode("n1");
    const std::string spec = replicated(4500);
    const auto svc = createService("web", spec);
    const std::string two = addRunningTask(svc, 2, spec, "n1");
    const std::string far = addRunningTask(svc, 3000, spec, "n1");
    orchestrator_->start();
    CPPUNIT_ASSERT(shoal::test::eventually([&] { return all(svc).size() >= 4500; }, 30s));
    std::this_thread::sleep_for(300ms);  // the full pass after the last slots
    orchestrator_->stop();
    const auto ts = all(svc);
    CPPUNIT_ASSERT_EQUAL(std::size_t{4500}, ts.size());
    std::vector<uint64_t> slots;
    for (const auto& t : ts) {
      CPPUNIT_ASSERT(t->desiredState == TaskState::kRunning);
      slots.push_back(t->slot);
    }
    std::sort(slots.begin(), slots.end());
    for (std::size_t i = 0; i < slots.size(); ++i) CPPUNIT_ASSERT_EQUAL(uint64_t{i + 1}, slots[i]);
    CPPUNIT_ASSERT(get(two) && get(far));
  }

  void testScaleDownPrefersTasksNotRunningThenBusiestNodes() {
    addNode("n1");
    addNode("n2");
    const auto svc = createService("web", replicated(4));
    reconcile();
    auto ts = bySlot(svc);
    run(ts[1], "n1");
    run(ts[2], "n1");
    run(ts[3], "n2");  // slot 4 stays pending
    setSpec(svc, replicated(2));
    reconcile();
    auto kept = live(svc);
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, kept.size());
    // The pending task went first, then one of n1's (the busier node).
    std::vector<std::string> nodes;
    for (const auto& t : kept) nodes.push_back(t->nodeId);
    std::sort(nodes.begin(), nodes.end());
    CPPUNIT_ASSERT(nodes == (std::vector<std::string>{"n1", "n2"}));
    reconcile();
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, live(svc).size());
  }

  void testFailedTaskIsReplacedAfterTheRestartDelay() {
    addNode("n1");
    const auto svc =
        createService("web", replicated(1, ",\"RestartPolicy\":{\"Delay\":5000000000}"));
    reconcile();
    auto first = live(svc).at(0);
    run(first, "n1");
    setState(first->id, TaskState::kFailed, 1);
    reconcile();
    CPPUNIT_ASSERT(get(first->id)->desiredState == TaskState::kShutdown);
    CPPUNIT_ASSERT(live(svc).empty());  // waiting out the delay
    clock_.advance(4s);
    reconcile();
    CPPUNIT_ASSERT(live(svc).empty());
    clock_.advance(2s);
    reconcile();
    auto next = live(svc);
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, next.size());
    CPPUNIT_ASSERT_EQUAL(uint64_t{1}, next[0]->slot);
    CPPUNIT_ASSERT(next[0]->id != first->id);
  }

  void testRestartPolicyNoneAndMaxAttemptsStopRestarts() {
    addNode("n1");
    const auto none =
        createService("once", replicated(1, ",\"RestartPolicy\":{\"Condition\":\"none\"}"));
    const auto twice =
        createService("twice", replicated(1, ",\"RestartPolicy\":{\"Delay\":0,\"MaxAttempts\":2}"));
    reconcile();
    auto t = live(none).at(0);
    run(t, "n1");
    setState(t->id, TaskState::kFailed, 2);
    reconcile();
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, all(none).size());  // never replaced
    for (int i = 0; i < 4; ++i) {
      auto ts = live(twice);
      if (ts.empty()) break;
      auto cur = ts.at(0);
      if (isTerminalTask(cur)) break;
      run(cur, "n1");
      setState(cur->id, TaskState::kFailed, 1);
      reconcile();
    }
    // The first task and two restarts; the last failure is left as it is.
    CPPUNIT_ASSERT_EQUAL(std::size_t{3}, all(twice).size());
  }

  void testOnFailureDoesNotRestartCompletedTasks() {
    addNode("n1");
    const auto svc = createService(
        "web", replicated(1, ",\"RestartPolicy\":{\"Condition\":\"on-failure\",\"Delay\":0}"));
    reconcile();
    auto t = live(svc).at(0);
    run(t, "n1");
    setState(t->id, TaskState::kComplete, 0);
    reconcile();
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, all(svc).size());
  }

  void testGlobalServiceFollowsJoinsDrainsAndConstraints() {
    addNode("n1");
    addNode("n2", {{"zone", "east"}});
    const auto svc = createService(
        "agent",
        "{\"Mode\":{\"Global\":{}},\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"x\"},"
        "\"Placement\":{\"Constraints\":[\"node.labels.zone!=west\"]}}}");
    reconcile();
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, live(svc).size());
    for (const auto& t : live(svc)) CPPUNIT_ASSERT(!t->nodeId.empty());
    addNode("n3");
    addNode("n4", {{"zone", "west"}});  // excluded by the constraint
    reconcile();
    CPPUNIT_ASSERT_EQUAL(std::size_t{3}, live(svc).size());
    drain("n1");
    reconcile();
    auto ts = live(svc);
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, ts.size());
    for (const auto& t : ts) CPPUNIT_ASSERT(t->nodeId != "n1");
    // A label change that breaks the constraint stops the node's task.
    setNodeLabels("n2", {{"zone", "west"}});
    reconcile();
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, live(svc).size());
    CPPUNIT_ASSERT_EQUAL(std::string("n3"), live(svc).at(0)->nodeId);
  }

  void testTasksOfADownNodeAreRescheduled() {
    addNode("n1");
    addNode("n2");
    const auto svc = createService("web", replicated(2));
    reconcile();
    auto ts = bySlot(svc);
    run(ts[1], "n1");
    run(ts[2], "n2");
    setNodeState("n2", "down");
    reconcile();
    auto now = live(svc);
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, now.size());
    bool replaced = false;
    for (const auto& t : now) {
      if (t->slot == 2) {
        replaced = t->id != ts[2]->id && t->nodeId.empty();
      }
    }
    CPPUNIT_ASSERT(replaced);
    CPPUNIT_ASSERT(get(ts[2]->id)->desiredState == TaskState::kShutdown);
  }

  // The loop takes no pass for a scheduler's commit, unless the node it chose went down (or was
  // drained) while it chose: the pass that saw the node go saw the task still unassigned.
  void testTaskPlacedOnANodeThatWentDownIsMoved() {
    addNode("n1");
    addNode("n2");
    orchestrator_->start();
    const auto svc = createService("web", replicated(2));
    CPPUNIT_ASSERT(shoal::test::eventually([&] { return bySlot(svc).size() == 2; }));
    auto ts = bySlot(svc);
    setNodeState("n2", "down");
    std::this_thread::sleep_for(300ms);  // the pass for the node's change is done by then
    place(ts[1], "n1", TaskState::kAssigned);
    place(ts[2], "n2", TaskState::kAssigned);
    CPPUNIT_ASSERT(shoal::test::eventually(
        [&] { return get(ts[2]->id)->desiredState == TaskState::kShutdown; }));
    CPPUNIT_ASSERT(shoal::test::eventually([&] {
      for (const auto& t : live(svc)) {
        if (t->slot == 2 && t->id != ts[2]->id) return true;
      }
      return false;
    }));
    CPPUNIT_ASSERT(get(ts[1]->id)->desiredState == TaskState::kRunning);
    orchestrator_->stop();
  }

  void testTaskHistoryIsPrunedToTheLimit() {
    addNode("n1");
    const auto svc = createService("web", replicated(1, ",\"RestartPolicy\":{\"Delay\":0}"));
    reconcile();
    for (int i = 0; i < 9; ++i) {
      auto t = live(svc).at(0);
      run(t, "n1");
      setState(t->id, TaskState::kFailed, 1);
      reconcile();
      reconcile();
    }
    // Swarm's default: 5 ended tasks per slot, plus the live one.
    CPPUNIT_ASSERT_EQUAL(std::size_t{6}, all(svc).size());
  }

  void testStopFirstUpdateStopsBeforeReplacing() {
    addNode("n1");
    const auto svc = createService("web", replicated(1));
    reconcile();
    auto old = live(svc).at(0);
    run(old, "n1");
    updateSpec(svc, replicated(1, ",\"ForceUpdate\":1"));
    reconcile();
    CPPUNIT_ASSERT(get(old->id)->desiredState == TaskState::kShutdown);
    CPPUNIT_ASSERT(live(svc).empty());  // nothing new until the old one stopped
    setState(old->id, TaskState::kShutdown, 0);
    reconcile();
    auto fresh = live(svc);
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, fresh.size());
    CPPUNIT_ASSERT(fresh[0]->spec.find("ForceUpdate") != std::string::npos);
    run(fresh[0], "n1");
    reconcile();
    // Done only once the new task stayed up for the monitor period (5 s by default).
    CPPUNIT_ASSERT_EQUAL(std::string("updating"), updateState(svc));
    clock_.advance(6s);
    reconcile();
    CPPUNIT_ASSERT_EQUAL(std::string("completed"), updateState(svc));
  }

  void testStartFirstUpdateKeepsOldTaskUntilNewOneRuns() {
    addNode("n1");
    const auto svc = createService("web", replicated(2));
    reconcile();
    auto before = bySlot(svc);
    run(before[1], "n1");
    run(before[2], "n1");
    updateSpec(svc,
               "{\"Mode\":{\"Replicated\":{\"Replicas\":2}},\"TaskTemplate\":{\"ContainerSpec\":"
               "{\"Image\":\"busybox:2\"}},\"UpdateConfig\":{\"Order\":\"start-first\"}}");
    reconcile();
    // One slot at a time (parallelism 1): a new task beside the old, which keeps running.
    auto ts = live(svc);
    CPPUNIT_ASSERT_EQUAL(std::size_t{3}, ts.size());
    CPPUNIT_ASSERT(get(before[1]->id)->desiredState == TaskState::kRunning);
    CPPUNIT_ASSERT(get(before[2]->id)->desiredState == TaskState::kRunning);
    ObjectPtr fresh;
    for (const auto& t : ts) {
      if (t->spec.find("busybox:2") != std::string::npos) fresh = t;
    }
    CPPUNIT_ASSERT(fresh);
    run(fresh, "n1");
    reconcile();
    // Its old task goes only now.
    CPPUNIT_ASSERT(get(before[fresh->slot]->id)->desiredState == TaskState::kShutdown);
  }

  void testUpdateParallelismAndDelay() {
    addNode("n1");
    const auto svc = createService("web", replicated(4));
    reconcile();
    for (const auto& t : live(svc)) run(t, "n1");
    updateSpec(svc,
               "{\"Mode\":{\"Replicated\":{\"Replicas\":4}},\"TaskTemplate\":{\"ContainerSpec\":"
               "{\"Image\":\"v2\"}},\"UpdateConfig\":{\"Parallelism\":2,\"Delay\":10000000000}}");
    reconcile();
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, stopping(svc));
    finishStopping(svc);
    reconcile();
    for (const auto& t : live(svc)) {
      if (observedState(*t) == TaskState::kPending) run(t, "n1");
    }
    reconcile();
    // The second batch waits for the delay.
    CPPUNIT_ASSERT_EQUAL(std::size_t{0}, stopping(svc));
    clock_.advance(11s);
    reconcile();
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, stopping(svc));
  }

  void testFailedUpdateRollsBack() {
    addNode("n1");
    const auto svc = createService("web", replicated(1));
    reconcile();
    run(live(svc).at(0), "n1");
    updateSpec(svc,
               "{\"Mode\":{\"Replicated\":{\"Replicas\":1}},\"TaskTemplate\":{\"ContainerSpec\":"
               "{\"Image\":\"broken\"},\"RestartPolicy\":{\"Delay\":0}},\"UpdateConfig\":"
               "{\"FailureAction\":\"rollback\"}}");
    reconcile();
    finishStopping(svc);
    reconcile();
    auto fresh = live(svc).at(0);
    CPPUNIT_ASSERT(fresh->spec.find("broken") != std::string::npos);
    run(fresh, "n1");
    setState(fresh->id, TaskState::kFailed, 1);
    reconcile();
    CPPUNIT_ASSERT_EQUAL(std::string("rollback_started"), updateState(svc));
    auto svcObj = getService(svc);
    CPPUNIT_ASSERT(svcObj->spec.find("busybox") != std::string::npos);
    // The rollback rolls out the previous spec and completes.
    for (int i = 0; i < 6 && updateState(svc) != "rollback_completed"; ++i) {
      finishStopping(svc);
      reconcile();
      for (const auto& t : live(svc)) {
        if (observedState(*t) == TaskState::kPending) run(t, "n1");
      }
      reconcile();
      clock_.advance(6s);
      reconcile();
    }
    CPPUNIT_ASSERT_EQUAL(std::string("rollback_completed"), updateState(svc));
    CPPUNIT_ASSERT(live(svc).at(0)->spec.find("busybox") != std::string::npos);
  }

  void testFailedUpdatePauses() {
    addNode("n1");
    const auto svc = createService("web", replicated(2));
    reconcile();
    for (const auto& t : live(svc)) run(t, "n1");
    updateSpec(svc,
               "{\"Mode\":{\"Replicated\":{\"Replicas\":2}},\"TaskTemplate\":{\"ContainerSpec\":"
               "{\"Image\":\"broken\"},\"RestartPolicy\":{\"Delay\":0}}}");
    reconcile();
    finishStopping(svc);
    reconcile();
    for (const auto& t : live(svc)) {
      if (t->spec.find("broken") != std::string::npos) {
        run(t, "n1");
        setState(t->id, TaskState::kFailed, 1);
      }
    }
    reconcile();
    CPPUNIT_ASSERT_EQUAL(std::string("paused"), updateState(svc));
    // Paused: the other slot keeps its old task.
    reconcile();
    std::size_t old = 0;
    for (const auto& t : live(svc)) old += t->spec.find("broken") == std::string::npos;
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, old);
  }

  void testReplicatedJobRunsToItsCompletions() {
    addNode("n1");
    const auto svc =
        createService("job",
                      "{\"Mode\":{\"ReplicatedJob\":{\"MaxConcurrent\":2,\"TotalCompletions\":5}},"
                      "\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"x\"}}}");
    for (int round = 0; round < 10; ++round) {
      reconcile();
      std::size_t running = 0;
      for (const auto& t : all(svc)) {
        const auto s = observedState(*t);
        if (s == TaskState::kPending) {
          run(t, "n1");
          ++running;
        } else if (s == TaskState::kRunning) {
          ++running;
        }
      }
      CPPUNIT_ASSERT(running <= 2);
      for (const auto& t : all(svc)) {
        if (observedState(*get(t->id)) == TaskState::kRunning) {
          setState(t->id, TaskState::kComplete, 0);
          break;
        }
      }
    }
    std::size_t complete = 0;
    for (const auto& t : all(svc)) complete += observedState(*t) == TaskState::kComplete;
    CPPUNIT_ASSERT_EQUAL(std::size_t{5}, complete);
    CPPUNIT_ASSERT_EQUAL(std::size_t{5}, all(svc).size());
  }

  void testRemovedServiceTakesItsTasks() {
    addNode("n1");
    const auto svc = createService("web", replicated(2));
    reconcile();
    auto ts = bySlot(svc);
    run(ts[1], "n1");  // slot 2 never got a node
    ASSERT_OK(
        store_->update([&](shoal::store::Tx& tx) { return tx.remove(Kind::kService, svc); }, 5s));
    reconcile();
    CPPUNIT_ASSERT(!get(ts[2]->id));  // deleted at once: nothing ran
    CPPUNIT_ASSERT(get(ts[1]->id)->desiredState == TaskState::kRemove);
    setState(ts[1]->id, TaskState::kShutdown, 0);
    reconcile();
    CPPUNIT_ASSERT(!get(ts[1]->id));
  }

  void testInvalidSpecsAreRefusedNamingTheField() {
    auto check = [](const std::string& json, const std::string& expected) {
      auto o = Poco::JSON::Parser().parse(json).extract<Poco::JSON::Object::Ptr>();
      Status s = shoal::manager::validateServiceSpec(*o);
      CPPUNIT_ASSERT_MESSAGE(json, !s.isOk());
      CPPUNIT_ASSERT_MESSAGE(s.message() + " lacks " + expected,
                             s.message().find(expected) != std::string::npos);
    };
    check("{}", "TaskTemplate.ContainerSpec.Image is required");
    check(
        "{\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"x\"},\"RestartPolicy\":{\"Condition\":"
        "\"sometimes\"}}}",
        "TaskTemplate.RestartPolicy.Condition must be one of none, on-failure, any");
    check("{\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"x\",\"Imgae\":1}}}",
          "unknown field TaskTemplate.ContainerSpec.Imgae");
    check("{\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"x\",\"TTY\":\"yes\"}}}",
          "TaskTemplate.ContainerSpec.TTY");
    check(
        "{\"Mode\":{\"Replicated\":{\"Replicas\":-1}},\"TaskTemplate\":{\"ContainerSpec\":"
        "{\"Image\":\"x\"}}}",
        "Mode.Replicated.Replicas must be between 0");
    check(
        "{\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"x\"},\"Placement\":{\"Constraints\":"
        "[\"node.foo==1\"]}}}",
        "unknown key \"node.foo\"");
    check(
        "{\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"x\"}},\"UpdateConfig\":{\"Order\":"
        "\"sideways\"}}",
        "UpdateConfig.Order must be one of stop-first, start-first");
    check(
        "{\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"x\"}},\"EndpointSpec\":{\"Ports\":"
        "[{\"TargetPort\":80,\"PublishedPort\":8080},{\"TargetPort\":81,\"PublishedPort\":8080}]}}",
        "publishes port 8080/tcp twice");
    check(
        "{\"Mode\":{\"Replicated\":{},\"Global\":{}},\"TaskTemplate\":{\"ContainerSpec\":"
        "{\"Image\":\"x\"}}}",
        "Mode must name exactly one");
    CPPUNIT_ASSERT(!shoal::manager::validateServiceName("-web").isOk());
    CPPUNIT_ASSERT(!shoal::manager::validateServiceName(std::string(64, 'a')).isOk());
    CPPUNIT_ASSERT(shoal::manager::validateServiceName("web_1.a-b").isOk());
  }

  void testConstraintsParseAndMatch() {
    shoal::manager::NodeFacts n;
    n.id = "abc";
    n.hostname = "Node1";
    n.role = "worker";
    n.os = "linux";
    n.arch = "x86_64";
    n.labels = {{"zone", "east"}};
    auto m = [&](const std::string& c) {
      auto parsed = shoal::manager::parseConstraint(c);
      CPPUNIT_ASSERT_MESSAGE(c, parsed.isOk());
      return shoal::manager::matches(*parsed, n);
    };
    CPPUNIT_ASSERT(m("node.labels.zone==east"));
    CPPUNIT_ASSERT(!m("node.labels.zone != east"));
    CPPUNIT_ASSERT(m("node.labels.rack!=1"));  // absent label
    CPPUNIT_ASSERT(!m("node.labels.rack==1"));
    CPPUNIT_ASSERT(m("node.hostname==node1"));
    CPPUNIT_ASSERT(m("node.role==worker"));
    CPPUNIT_ASSERT(m("node.id==abc"));
    CPPUNIT_ASSERT(m("node.platform.os==linux"));
    CPPUNIT_ASSERT(!shoal::manager::parseConstraint("node.labels.zone").isOk());
    CPPUNIT_ASSERT(!shoal::manager::parseConstraint("zone==east").isOk());
    CPPUNIT_ASSERT(!shoal::manager::parseConstraint("node.labels.zone==").isOk());
  }

 private:
  void reconcile() { orchestrator_->reconcileAll(); }

  std::string createService(const std::string& name, const std::string& spec) {
    const std::string id = "svc-" + name;
    ASSERT_OK(store_->update(
        [&](shoal::store::Tx& tx) {
          Object o;
          o.kind = Kind::kService;
          o.id = id;
          o.name = name;
          o.spec = spec;
          return tx.create(std::move(o));
        },
        5s));
    return id;
  }
  void setSpec(const std::string& id, const std::string& spec) {
    ASSERT_OK(store_->update(
        [&](shoal::store::Tx& tx) {
          Object o = *tx.get(Kind::kService, id);
          o.spec = spec;
          return tx.update(std::move(o));
        },
        5s));
  }
  // As the API does it: the new spec, the previous one kept, an update in progress.
  void updateSpec(const std::string& id, const std::string& spec) {
    ASSERT_OK(store_->update(
        [&](shoal::store::Tx& tx) {
          Object o = *tx.get(Kind::kService, id);
          const auto now = std::chrono::system_clock::now().time_since_epoch();
          o.status =
              "{\"PreviousSpec\":" + o.spec +
              ",\"UpdateStatus\":{\"State\":\"updating\",\"StartedAtNs\":" +
              std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count()) +
              "}}";
          o.spec = spec;
          return tx.update(std::move(o));
        },
        5s));
  }
  std::string updateState(const std::string& id) {
    auto svc = getService(id);
    auto st = Poco::JSON::Parser().parse(svc->status).extract<Poco::JSON::Object::Ptr>();
    auto us = st->getObject("UpdateStatus");
    return us ? us->optValue<std::string>("State", "") : "";
  }
  ObjectPtr getService(const std::string& id) {
    ObjectPtr o;
    store_->view([&](const shoal::store::ReadView& v) { o = v.get(Kind::kService, id); });
    return o;
  }
  void addNode(const std::string& id, std::map<std::string, std::string> labels = {}) {
    ASSERT_OK(store_->update(
        [&](shoal::store::Tx& tx) {
          Object o;
          o.kind = Kind::kNode;
          o.id = id;
          o.labels = labels;
          o.status = "{\"State\":\"ready\",\"Description\":{\"Hostname\":\"" + id + "\"}}";
          return tx.create(std::move(o));
        },
        5s));
  }
  void editNode(const std::string& id, const std::function<void(Object&)>& fn) {
    ASSERT_OK(store_->update(
        [&](shoal::store::Tx& tx) {
          Object o = *tx.get(Kind::kNode, id);
          fn(o);
          return tx.update(std::move(o));
        },
        5s));
  }
  void drain(const std::string& id) {
    editNode(id, [](Object& o) { o.availability = shoal::store::NodeAvailability::kDrain; });
  }
  void setNodeLabels(const std::string& id, std::map<std::string, std::string> labels) {
    editNode(id, [&](Object& o) { o.labels = labels; });
  }
  void setNodeState(const std::string& id, const std::string& state) {
    editNode(id, [&](Object& o) { o.status = "{\"State\":\"" + state + "\"}"; });
  }
  std::vector<ObjectPtr> all(const std::string& svc) {
    std::vector<ObjectPtr> out;
    store_->view([&](const shoal::store::ReadView& v) { out = v.tasksByService(svc); });
    return out;
  }
  std::vector<ObjectPtr> live(const std::string& svc) {
    std::vector<ObjectPtr> out;
    for (const auto& t : all(svc)) {
      if (t->desiredState <= TaskState::kRunning) out.push_back(t);
    }
    return out;
  }
  std::map<uint64_t, ObjectPtr> bySlot(const std::string& svc) {
    std::map<uint64_t, ObjectPtr> out;
    for (const auto& t : live(svc)) out[t->slot] = t;
    return out;
  }
  // Tasks told to stop that have not stopped yet.
  std::size_t stopping(const std::string& svc) {
    std::size_t n = 0;
    for (const auto& t : all(svc)) {
      n +=
          t->desiredState == TaskState::kShutdown && !shoal::manager::isTerminal(observedState(*t));
    }
    return n;
  }
  void finishStopping(const std::string& svc) {
    for (const auto& t : all(svc)) {
      if (t->desiredState >= TaskState::kShutdown &&
          !shoal::manager::isTerminal(observedState(*t))) {
        setState(t->id, TaskState::kShutdown, 0);
      }
    }
  }
  static bool isTerminalTask(const ObjectPtr& t) {
    return shoal::manager::isTerminal(observedState(*t));
  }
  ObjectPtr get(const std::string& id) {
    ObjectPtr o;
    store_->view([&](const shoal::store::ReadView& v) { o = v.get(Kind::kTask, id); });
    return o;
  }
  // As the scheduler (and an agent, past ASSIGNED) would: on `node`, in `state`.
  void place(const ObjectPtr& t, const std::string& node, TaskState state) {
    ASSERT_OK(store_->update(
        [&](shoal::store::Tx& tx) {
          Object o = *tx.get(Kind::kTask, t->id);
          o.nodeId = node;
          TaskStatus st;
          st.state = state;
          st.timestampNs = clock_.nowNanos();
          o.status = shoal::manager::taskStatusJson(st);
          return tx.update(std::move(o));
        },
        5s));
  }
  void run(const ObjectPtr& t, const std::string& node) { place(t, node, TaskState::kRunning); }
  // A task of `service` in `slot`, RUNNING on `node`, made as if by an earlier leader.
  std::string addRunningTask(const std::string& service, uint64_t slot, const std::string& spec,
                             const std::string& node) {
    auto parsed = shoal::manager::parseServiceSpec(spec);
    CPPUNIT_ASSERT(parsed.isOk());
    Object o;
    o.kind = Kind::kTask;
    o.id = "task-" + std::to_string(slot);
    o.name = "web." + std::to_string(slot);
    o.serviceId = service;
    o.slot = slot;
    o.nodeId = node;
    o.desiredState = TaskState::kRunning;
    o.spec = parsed->taskTemplate;
    TaskStatus st;
    st.state = TaskState::kRunning;
    st.timestampNs = clock_.nowNanos();
    o.status = shoal::manager::taskStatusJson(st);
    const std::string id = o.id;
    ASSERT_OK(store_->update([&](shoal::store::Tx& tx) { return tx.create(std::move(o)); }, 5s));
    return id;
  }
  void setState(const std::string& id, TaskState state, int64_t exitCode) {
    ASSERT_OK(store_->update(
        [&](shoal::store::Tx& tx) {
          Object o = *tx.get(Kind::kTask, id);
          TaskStatus st;
          st.state = state;
          st.exitCode = exitCode;
          o.status = shoal::manager::taskStatusJson(st);
          return tx.update(std::move(o));
        },
        5s));
  }

  std::unique_ptr<shoal::test::TempDir> dir_;
  shoal::test::LocalHub hub_;
  std::unique_ptr<shoal::test::LocalTransport> transport_;
  shoal::SeededRandom random_{7};
  ManualClock clock_;
  std::unique_ptr<ReplicatedStore> store_;
  std::unique_ptr<Orchestrator> orchestrator_;
};

CPPUNIT_TEST_SUITE_REGISTRATION(OrchestratorTest);
