#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "kernel/api/router.h"
#include "kernel/common/clock.h"
#include "kernel/common/random.h"
#include "kernel/manager/log_broker.h"
#include "kernel/manager/replicated_store.h"

namespace shoal::manager {

// The leader's side of agent sessions (kernel/manager/README.md, "Dispatcher"). Agents reach it
// over the node API (mutual TLS; the node id comes from the client certificate):
//
//  POST /dispatcher/assignments {"session": "...", "wait_ms": N}
//    -> {"session", "full": bool, "tasks": [task objects], "removed": [task ids]}
//    Long-polls (up to wait_ms, at most 3 s) until the node's assignments differ from what this
//    session was last sent, then sends only the difference. An unknown or empty session gets a
//    new one and the full set ("full": true), so a reconnecting agent resynchronises without
//    duplicating anything: it reconciles against the full set.
//    "Differ" means what the agent acts on: a task joining or leaving the set, or any of its
//    fields other than its status (desired state, spec, node, ...) changing. A change of status
//    alone — the agent's own reports coming back — is not sent again: the agent already knows
//    it, and sending it would echo every report as a whole task object. A full set carries
//    each task's current status, which is how an agent notices a report the leader lacks.
//    With `service logs` subscriptions for this node's tasks (LogBroker), the reply also
//    carries them: "logs": [{"sub", "seq", "tasks", "options"}], "logs_cancelled": [ids]; a new one
//    ends the wait at once. When this node's tasks are on overlay networks, "peers":
//    [{"network_id", "peers": [{"address", "mac", "node_addr", "task_id"}]}] lists every task
//    of those networks that is on a node and not ended (sent when it changed, and with every
//    full set); a task joining or leaving a network wakes every session.
//  POST /dispatcher/logs {"sub", "seq", "records", "done", "error"} -> {"cancelled": bool}
//    An agent's log records for a subscription (LogBroker::publish).
//  POST /dispatcher/status {"updates": [{"ID", "State", "Message", "Err", "ExitCode", "PID",
//    "Timestamp"}]}
//    Queues the states; a flusher commits everything queued, from every agent, in one
//    transaction as soon as something is queued (what arrives during a commit waits for the
//    next one, so a busy cluster batches by itself). A state is applied only to a task
//    assigned to that node and only if it moves the task forward. A flush the store refuses (no
//    quorum, a timeout) keeps its states queued for the next one, tried 50 ms later.
//
// Both calls are cheap when nothing changed: a waiting poll sleeps on its own node's wake-up
// (not on one shared by every agent), and the watcher wakes a node only for changes that
// would be sent.
//
// A node's assignments are its tasks that have reached ASSIGNED and are not both ended and
// told to stop; when a task leaves the set the agent removes it from its runtime.
// THREAD: handlers run on the node API's threads; start() and stop() from one thread.
class Dispatcher {
 public:
  Dispatcher(ReplicatedStore& store, Random& random, const Clock& clock);
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  void start();
  void stop();

  api::Response assignments(const std::string& nodeId, const std::string& body);
  api::Response status(const std::string& nodeId, const std::string& body);
  api::Response logs(const std::string& nodeId, const std::string& body);

  // The log broker the service API subscribes through.
  LogBroker& logBroker() { return logs_; }

  // Commits the queued status updates now (the flusher does this as soon as some are
  // queued). False when the store refused some (they stay queued).
  bool flush();

 private:
  struct Session {
    std::string nodeId;
    std::map<std::string, store::ObjectPtr> sent;  // task id -> the task as last sent
    Clock::MonoTime lastUsed;
    std::string peers;  // the "peers" member as last sent ("" for none)
  };
  // A node's change count and the wake-up its waiting polls sleep on.
  struct NodeWake {
    uint64_t generation = 0;
    std::condition_variable cv;
  };
  struct Update {
    std::string nodeId;
    std::string taskId;
    std::string statusJson;
    int32_t state = 0;
  };

  void watchLoop();
  void flushLoop();
  NodeWake& wakeFor(const std::string& nodeId);  // caller holds mu_
  void bump(const std::string& nodeId);          // caller holds mu_
  void wakeAll();                                // caller holds mu_

  ReplicatedStore& store_;
  Random& random_;
  const Clock& clock_;

  std::mutex mu_;
  std::condition_variable stopping_;         // the flusher's sleep; woken by stop() and status()
  std::map<std::string, Session> sessions_;  // guarded by mu_
  Clock::MonoTime nextExpiry_{};             // guarded by mu_: next look for idle sessions
  std::unordered_map<std::string, std::unique_ptr<NodeWake>> nodes_;  // guarded by mu_
  std::vector<Update> queue_;                                         // guarded by mu_
  bool stop_ = false;                                                 // guarded by mu_
  std::mutex flushMu_;                                                // one flush at a time
  std::thread watcher_;
  std::thread flusher_;
  LogBroker logs_;  // wakes nodes through bump(): constructed last, after mu_ and nodes_
};

}  // namespace shoal::manager
