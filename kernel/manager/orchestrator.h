#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "kernel/common/clock.h"
#include "kernel/common/random.h"
#include "kernel/manager/replicated_store.h"
#include "kernel/manager/service_spec.h"

namespace shoal::manager {

// The leader's reconciliation loop (kernel/manager/README.md, "Orchestration"): it watches
// services, tasks, nodes and the cluster settings and writes back tasks until every service has
// what its spec asks for — one task per slot (replicated), one per eligible node (global), the
// completions a job wants — replacing failed tasks per the restart policy, moving tasks off
// down and drained nodes, rolling updates through slots, and pruning task history.
//
// It never calls the scheduler or the dispatcher: it creates tasks PENDING and unassigned (or,
// for global services, on their node), and reads back the states the agents report.
// THREAD: start() and stop() from one thread; the loop runs on its own.
class Orchestrator {
 public:
  Orchestrator(ReplicatedStore& store, Random& random, const Clock& clock);
  ~Orchestrator();
  Orchestrator(const Orchestrator&) = delete;
  Orchestrator& operator=(const Orchestrator&) = delete;

  void start();
  void stop();

  // One reconciliation of every service against the store as it is now (what the loop does at
  // start-up). Exposed for tests.
  void reconcileAll();

 private:
  struct SlotKey {
    std::string service;
    uint64_t slot = 0;
    std::string node;  // global services: the node
    // Slot first: a pass compares keys of one service only, whose ids are all equal.
    bool operator<(const SlotKey& o) const {
      return std::tie(slot, node, service) < std::tie(o.slot, o.node, o.service);
    }
  };

  void run();
  void reconcile(const std::set<std::string>& services);
  // The changes one service needs, added to `tx`; returns the next time it wants another look
  // (a restart delay or update delay running out), or max() for none.
  Clock::MonoTime reconcileService(store::Tx& tx, const std::string& serviceId);
  void removeOrphans(store::Tx& tx, const std::string& serviceId);

  ReplicatedStore& store_;
  Random& random_;
  const Clock& clock_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;

  // Only the loop's thread touches these.
  std::map<SlotKey, Clock::MonoTime> restartAt_;              // delayed restarts
  std::map<SlotKey, std::vector<Clock::MonoTime>> restarts_;  // restart times, for MaxAttempts
  std::map<std::string, Clock::MonoTime> wakeAt_;             // per service
  std::map<std::string, Clock::MonoTime> nextBatchAt_;        // rolling updates: per service
  std::map<std::string, std::pair<std::string, ServiceSpec>> specs_;  // service -> spec read

  // A replicated service whose scale-up ran out of transaction budget, and nothing but the
  // loop's own creations (and changes no pass acts on) happened to it since: the next pass
  // creates the next slots without reading the service's tasks again. Dropped by any change
  // that would make the loop look at the service; the pass that creates the last slots is
  // followed by a full one.
  struct Creation {
    uint64_t serviceVersion = 0;
    std::set<uint64_t> held;  // slot numbers in use when the full pass read the service
    uint64_t next = 1;        // the lowest slot number that may still be free
    uint64_t remaining = 0;   // slots still to create
  };
  std::map<std::string, Creation> creating_;
  // Tasks this loop created whose watch event has not come back yet: a pass made them, so
  // their creation tells no pass anything new.
  std::unordered_set<std::string> ownCreates_;
  std::vector<std::string> createdInPass_;  // ids the current transaction creates
};

}  // namespace shoal::manager
