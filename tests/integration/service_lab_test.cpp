// Services on a lab of three real nodes (scripts/lab, runtime-sim: tasks without containers),
// driven through the CLI as a user would:
//  - replicated services spread evenly, scale up and down, and converge with Docker's progress
//    output; constraints and placement preferences decide the nodes; a task that fits nowhere
//    stays pending with Swarm's explanation;
//  - a global service follows a node joining and a node being drained;
//  - a task that dies is replaced, per its restart policy;
//  - a rolling update with start-first never has fewer running tasks than replicas, and
//    `service rollback` brings the previous spec back;
//  - a replicated job runs to its completions, never more at once than --max-concurrent;
//  - a node whose daemon stops heartbeating is marked down and its tasks move to the others.
// Needs root (namespaces), like every test in this label.
#include <cppunit/extensions/HelperMacros.h>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/lab.h"
#include "tests/support/netns_lab.h"
#include "tests/support/process.h"
#include "tests/support/swarm_lab.h"
#include "tests/support/temp_dir.h"

using namespace std::chrono_literals;
using shoal::test::contains;
using shoal::test::eventually;
using shoal::test::Lab;
using shoal::test::RunResult;
using shoal::test::trim;

using shoal::test::must;
using shoal::test::TaskView;

class ServiceLabTest : public CppUnit::TestFixture, protected shoal::test::SwarmLabClient {
  CPPUNIT_TEST_SUITE(ServiceLabTest);
  CPPUNIT_TEST(testServicesAcrossTheLab);
  CPPUNIT_TEST(testTasksOfANodeThatStopsHeartbeatingMove);
  CPPUNIT_TEST(testLuaPoliciesPlaceTasksAndARunawayOneIsContained);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    CPPUNIT_ASSERT_MESSAGE("this test needs root, ip and nft (network namespaces)",
                           shoal::test::NetnsLab::available());
  }

  void testServicesAcrossTheLab() {
    Lab lab(3);
    lab_ = &lab;
    init("1s");
    join("node2");
    waitReady(2);

    // A global service follows a node joining.
    must(on({"service", "create", "--name", "agents", "--mode", "global", "-q", "busybox"}),
         "global create");
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, running("agents").size());
    join("node3");
    waitReady(3);
    CPPUNIT_ASSERT(eventually([&] { return running("agents").size() == 3; }, 20s));

    // Replicated: spread evenly, with Docker's progress lines.
    RunResult created = on({"service", "create", "--name", "web", "--replicas", "6", "busybox"});
    must(created, "create web");
    CPPUNIT_ASSERT(contains(created.out, "overall progress: 6 out of 6 tasks"));
    CPPUNIT_ASSERT(contains(created.out, "verify: Service converged"));
    CPPUNIT_ASSERT(perNode(running("web")) == (std::vector<std::size_t>{2, 2, 2}));
    RunResult ls = on({"service", "ls"});
    CPPUNIT_ASSERT_MESSAGE(ls.out, contains(ls.out, "replicated   6/6"));

    // Scale down and up.
    must(on({"service", "scale", "web=2"}), "scale down");
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, running("web").size());
    must(on({"service", "scale", "web=4"}), "scale up");
    CPPUNIT_ASSERT_EQUAL(std::size_t{4}, running("web").size());

    // Draining a node empties it: the global task stops, replicated ones move.
    must(on({"node", "update", "--availability", "drain", nodeId("node2")}), "drain");
    CPPUNIT_ASSERT(eventually(
        [&] {
          auto g = running("agents");
          auto w = running("web");
          return g.size() == 2 && w.size() == 4 && !onNode(g, "node2") && !onNode(w, "node2");
        },
        30s));
    must(on({"node", "update", "--availability", "active", nodeId("node2")}), "activate");
    CPPUNIT_ASSERT(eventually([&] { return running("agents").size() == 3; }, 20s));

    // Constraints and preferences.
    must(on({"node", "update", "--label-add", "zone=a", nodeId("node1")}), "label node1");
    must(on({"node", "update", "--label-add", "zone=b", nodeId("node2")}), "label node2");
    must(on({"node", "update", "--label-add", "zone=b", nodeId("node3")}), "label node3");
    must(on({"service", "create", "--name", "pinned", "--replicas", "3", "--constraint",
             "node.labels.zone==b", "-q", "busybox"}),
         "constrained create");
    for (const auto& t : running("pinned")) CPPUNIT_ASSERT(t.node != nodeId("node1"));
    must(on({"service", "create", "--name", "zoned", "--replicas", "4", "--placement-pref",
             "spread=node.labels.zone", "-q", "busybox"}),
         "preference create");
    std::size_t inA = 0;
    for (const auto& t : running("zoned")) inA += t.node == nodeId("node1");
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, inA);  // half of them in zone a (one node)
    RunResult nowhere = on({"service", "create", "--name", "nowhere", "--constraint",
                            "node.labels.zone==c", "-d", "busybox"});
    must(nowhere, "unplaceable create");
    CPPUNIT_ASSERT(eventually(
        [&] {
          auto ts = tasks("nowhere");
          return !ts.empty() && ts[0].state == "pending" &&
                 contains(ts[0].err,
                          "no suitable node (scheduling constraints not satisfied on 3 nodes)");
        },
        10s));
    must(on({"service", "rm", "nowhere", "pinned", "zoned"}), "rm");

    // A task that dies is replaced.
    must(on({"service", "create", "--name", "dying", "--restart-delay", "100ms", "-e",
             "SIM_RUN_MS=500", "-e", "SIM_EXIT_CODE=137", "-d", "busybox"}),
         "dying create");
    CPPUNIT_ASSERT(eventually(
        [&] {
          std::size_t failed = 0;
          for (const auto& t : tasks("dying")) {
            failed += t.state == "failed" && contains(t.err, "non-zero exit (137)");
          }
          return failed >= 2;
        },
        20s));
    must(on({"service", "rm", "dying"}), "rm dying");

    // Rolling update, start-first: never below the replica count.
    must(on({"service", "update", "--replicas", "3", "-q", "web"}), "scale to 3");
    RunResult update;
    std::thread updater([&] {
      update = on({"service", "update", "--image", "busybox:v2", "--update-order", "start-first",
                   "--env-add", "SIM_START_DELAY_MS=300", "web"});
    });
    std::size_t lowest = 99, samples = 0;
    const auto until = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < until) {
      auto r = running("web");
      lowest = std::min(lowest, r.size());
      ++samples;
      bool done = r.size() == 3;
      for (const auto& t : r) done = done && t.image == "busybox:v2";
      if (done) break;
      std::this_thread::sleep_for(100ms);
    }
    updater.join();
    must(update, "start-first update");
    CPPUNIT_ASSERT_MESSAGE("running tasks dropped to " + std::to_string(lowest), lowest >= 3);
    CPPUNIT_ASSERT(samples > 3);
    for (const auto& t : running("web")) CPPUNIT_ASSERT_EQUAL(std::string("busybox:v2"), t.image);
    RunResult pretty = on({"service", "inspect", "--pretty", "web"});
    CPPUNIT_ASSERT_MESSAGE(pretty.out, contains(pretty.out, "update completed"));

    // Rollback: the previous spec again.
    RunResult back = on({"service", "rollback", "web"});
    must(back, "rollback");
    CPPUNIT_ASSERT(eventually(
        [&] {
          auto r = running("web");
          bool old = r.size() == 3;
          for (const auto& t : r) old = old && t.image == "busybox";
          return old;
        },
        30s));

    // A replicated job runs to its completions, two at a time.
    must(on({"service", "create", "--name", "batch", "--mode", "replicated-job", "--replicas", "5",
             "--max-concurrent", "2", "-e", "SIM_RUN_MS=300", "busybox"}),
         "job");
    std::size_t complete = 0;
    for (const auto& t : tasks("batch")) complete += t.state == "complete";
    CPPUNIT_ASSERT_EQUAL(std::size_t{5}, complete);
    RunResult jobs = on({"service", "ls"});
    CPPUNIT_ASSERT_MESSAGE(jobs.out, contains(jobs.out, "(5/5 completed)"));

    // Bad input: named field, usage exit code, nothing created.
    RunResult bad =
        on({"service", "create", "--name", "bad", "--restart-condition", "sometimes", "busybox"});
    CPPUNIT_ASSERT_EQUAL(125, bad.exitCode);
    CPPUNIT_ASSERT_MESSAGE(bad.err, contains(bad.err, "--restart-condition"));
    // What only the daemon can check comes back naming the field.
    RunResult refused =
        on({"service", "create", "--name", "bad", "--constraint", "zone==a", "busybox"});
    CPPUNIT_ASSERT_EQUAL(1, refused.exitCode);
    CPPUNIT_ASSERT_MESSAGE(refused.err,
                           contains(refused.err, "TaskTemplate.Placement.Constraints[0]"));
    CPPUNIT_ASSERT(!contains(on({"service", "ls"}).out, " bad "));

    // Logs gather at the leader; another manager serves them too (it asks the leader).
    must(on({"node", "promote", "node2"}), "promote node2");
    RunResult here;
    CPPUNIT_ASSERT_MESSAGE(here.out + here.err,
                           eventually(
                               [&] {
                                 here = lab.on("node2", {"service", "logs", "web"});
                                 return here.exitCode == 0 && contains(here.out, "sim: started") &&
                                        contains(here.out, "web.1.");
                               },
                               30s));
    // Followed, there too, the logs take in tasks that start later (a scale-up).
    shoal::test::TempDir logs;
    shoal::test::ChildProcess follow(
        {std::string(SHOAL_BIN_DIR) + "/shoal", "-H", "unix://" + lab.dir("node2") + "/shoald.sock",
         "service", "logs", "-f", "web"},
        logs.file("follow.log"));
    CPPUNIT_ASSERT(eventually([&] { return contains(follow.log(), "web.3."); }, 30s));
    CPPUNIT_ASSERT(!contains(follow.log(), "web.5."));
    must(on({"service", "scale", "web=5"}), "scale web to 5");
    CPPUNIT_ASSERT_MESSAGE(follow.log(), eventually(
                                             [&] {
                                               const std::string seen = follow.log();
                                               return contains(seen, "web.4.") &&
                                                      contains(seen, "web.5.");
                                             },
                                             30s));
    follow.signal(SIGINT);
    CPPUNIT_ASSERT_EQUAL(0, follow.wait(10s));
    lab_ = nullptr;
  }

  void testTasksOfANodeThatStopsHeartbeatingMove() {
    Lab lab(3);
    lab_ = &lab;
    init("1s");
    join("node2");
    join("node3");
    waitReady(3);
    must(on({"service", "create", "--name", "web", "--replicas", "6", "-q", "busybox"}), "create");
    CPPUNIT_ASSERT(perNode(running("web")) == (std::vector<std::size_t>{2, 2, 2}));
    const std::string gone = nodeId("node3");
    must(lab.lab({"kill", "node3"}), "kill node3");
    // 3 missed heartbeats of 1 s: down, and its two tasks start elsewhere.
    CPPUNIT_ASSERT(eventually([&] { return contains(lab.row("node1", "node3"), "Down"); }, 20s));
    CPPUNIT_ASSERT(eventually(
        [&] {
          auto r = running("web");
          std::size_t live = 0;
          for (const auto& t : r) live += t.node != gone && t.state == "running";
          return live == 6;
        },
        30s));
    lab_ = nullptr;
  }

  void testLuaPoliciesPlaceTasksAndARunawayOneIsContained() {
    Lab lab(2);
    lab_ = &lab;
    init("5s");
    join("node2");
    waitReady(2);
    must(on({"node", "update", "--label-add", "maintenance=true", nodeId("node2")}), "label");
    const std::string policies = std::string(SHOAL_SOURCE_DIR) + "/conf/policies/";
    must(on({"policy", "create", "keep-off", policies + "keep-off-maintenance.lua"}),
         "create policy");
    RunResult ls = on({"policy", "ls"});
    CPPUNIT_ASSERT_MESSAGE(ls.out, contains(ls.out, "keep-off"));
    must(on({"service", "create", "--name", "careful", "--replicas", "4", "--placement-policy",
             "keep-off", "-q", "busybox"}),
         "policy service");
    for (const auto& t : running("careful")) CPPUNIT_ASSERT_EQUAL(nodeId("node1"), t.node);
    // A dry run against the live cluster: where 6 tasks would go, nothing started.
    RunResult preview =
        on({"policy", "test", "keep-off", "--service", "careful", "--replicas", "6"});
    must(preview, "policy test");
    CPPUNIT_ASSERT_MESSAGE(preview.out, contains(preview.out, "Tasks per node: node1=6"));
    CPPUNIT_ASSERT_EQUAL(std::size_t{4}, tasks("careful").size());
    must(on({"service", "create", "--name", "elsewhere", "--replicas", "2", "--constraint-lua",
             "node.hostname ~= \"node1\"", "-q", "busybox"}),
         "lua constraint service");
    for (const auto& t : running("elsewhere")) CPPUNIT_ASSERT_EQUAL(nodeId("node2"), t.node);
    // A policy in use cannot be removed.
    RunResult rm = on({"policy", "rm", "keep-off"});
    CPPUNIT_ASSERT(rm.exitCode != 0);
    CPPUNIT_ASSERT_MESSAGE(rm.err, contains(rm.err, "in use by service careful"));

    // A runaway policy fails its own service's scheduling, and only that.
    const std::string spin = "/tmp/shoal-spin-" + std::to_string(getpid()) + ".lua";
    {
      std::FILE* f = std::fopen(spin.c_str(), "w");
      CPPUNIT_ASSERT(f != nullptr);
      std::fputs("return shoal.policy{ filter = function(task, node) while true do end end }\n", f);
      std::fclose(f);
    }
    must(on({"policy", "create", "spin", spin}), "create spin");
    std::remove(spin.c_str());
    must(
        on({"service", "create", "--name", "stuck", "--placement-policy", "spin", "-d", "busybox"}),
        "stuck create");
    RunResult fine = on({"service", "create", "--name", "fine", "--replicas", "2", "busybox"});
    must(fine, "a service without the policy still converges");
    CPPUNIT_ASSERT(eventually(
        [&] {
          auto ts = tasks("stuck");
          return !ts.empty() && ts[0].state == "pending" &&
                 contains(ts[0].err, "instruction limit");
        },
        20s));
    lab_ = nullptr;
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(ServiceLabTest);
