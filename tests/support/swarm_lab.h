// Driving a swarm on scripts/lab from a test through the CLI, as a user would: init and join,
// node readiness, and the tasks of a service as `service ps --format json` shows them.
#pragma once

#include <cppunit/extensions/HelperMacros.h>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "tests/support/lab.h"
#include "tests/support/process.h"

namespace shoal::test {

// One task as `service ps --format json` shows it.
struct TaskView {
  std::string id, node, desired, state, image, err;
  uint64_t slot = 0;
};

inline void must(const RunResult& r, const std::string& what) {
  CPPUNIT_ASSERT_MESSAGE(what + ": " + r.out + r.err, r.exitCode == 0);
}

// A test fixture's view of its lab's swarm: set lab_ to the test's Lab first. node1 is the
// manager every command goes to unless another node is named.
class SwarmLabClient {
 protected:
  using Seconds = std::chrono::seconds;

  RunResult on(std::vector<std::string> args, const std::string& node = "node1") {
    return lab_->on(node, std::move(args));
  }

  void init(const std::string& heartbeat) {
    must(on({"swarm", "init", "--advertise-addr", lab_->ip("node1"), "--dispatcher-heartbeat",
             heartbeat}),
         "init");
    token_ = trim(on({"swarm", "join-token", "-q", "worker"}).out);
  }
  void join(const std::string& node) {
    must(lab_->on(node, {"swarm", "join", "--token", token_, "--advertise-addr", lab_->ip(node),
                         lab_->ip("node1") + ":2377"}),
         node + " join");
  }
  void waitReady(std::size_t n) {
    CPPUNIT_ASSERT(eventually(
        [&] {
          std::size_t ready = 0;
          for (const char* node : {"node1", "node2", "node3"}) {
            ready += contains(lab_->row("node1", node), "Ready");
          }
          return ready == n;
        },
        Seconds(30)));
  }
  std::string nodeId(const std::string& hostname) {
    std::string row = lab_->row("node1", hostname);
    return row.substr(0, row.find(' '));
  }
  std::vector<TaskView> tasks(const std::string& service, bool runningOnly = false) {
    std::vector<std::string> args = {"service", "ps", service, "--format", "json"};
    if (runningOnly) {
      args.push_back("--filter");
      args.push_back("desired-state=running");
    }
    RunResult r = on(args);
    std::vector<TaskView> out;
    if (r.exitCode != 0) return out;
    Poco::JSON::Array::Ptr list;
    try {
      list = Poco::JSON::Parser().parse(r.out).extract<Poco::JSON::Array::Ptr>();
    } catch (const std::exception&) {
      return out;
    }
    for (std::size_t i = 0; list && i < list->size(); ++i) {
      auto o = list->getObject(static_cast<unsigned>(i));
      TaskView t;
      t.id = o->optValue<std::string>("ID", "");
      t.node = o->optValue<std::string>("NodeID", "");
      t.desired = o->optValue<std::string>("DesiredState", "");
      t.slot = o->optValue<uint64_t>("Slot", 0);
      if (auto st = o->getObject("Status")) {
        t.state = st->optValue<std::string>("State", "");
        t.err = st->optValue<std::string>("Err", "");
      }
      if (auto spec = o->getObject("Spec")) {
        if (auto c = spec->getObject("ContainerSpec"))
          t.image = c->optValue<std::string>("Image", "");
      }
      out.push_back(t);
    }
    return out;
  }
  // Tasks meant to run that run.
  std::vector<TaskView> running(const std::string& service) {
    std::vector<TaskView> out;
    for (auto& t : tasks(service, true)) {
      if (t.state == "running") out.push_back(t);
    }
    return out;
  }
  bool onNode(const std::vector<TaskView>& ts, const std::string& hostname) {
    const std::string id = nodeId(hostname);
    for (const auto& t : ts) {
      if (t.node == id) return true;
    }
    return false;
  }
  std::vector<std::size_t> perNode(const std::vector<TaskView>& ts) {
    std::map<std::string, std::size_t> count;
    for (const char* n : {"node1", "node2", "node3"}) count[nodeId(n)] = 0;
    for (const auto& t : ts) ++count[t.node];
    std::vector<std::size_t> out;
    for (const auto& [id, c] : count) out.push_back(c);
    return out;
  }

  Lab* lab_ = nullptr;
  std::string token_;
};

}  // namespace shoal::test
