#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kernel/agent/network.h"
#include "kernel/agent/runtime.h"
#include "kernel/common/clock.h"
#include "kernel/common/status.h"
#include "kernel/store/object.h"

namespace shoal::agent {

// A reply from the leader's node API.
struct LeaderReply {
  int status = 0;
  std::string body;
};
// Sends a POST to the leader (following redirects and failing over, as the swarm does).
using LeaderCall =
    std::function<Result<LeaderReply>(const std::string& path, const std::string& body)>;

// The node's agent (kernel/agent/README.md): it keeps a session with the leader's dispatcher,
// receives this node's task assignments, drives each task through the runtime with
// SwarmKit's controller steps (prepare, start, wait, shutdown, remove), reports every state
// transition in order and in batches, and keeps its tasks on disk so a restarted agent
// re-attaches to what still runs (the record is rewritten at most once a second while tasks
// change, and at stop; a crash loses at most that much, which the leader's full assignment set
// and the runtime's own records make up for).
// THREAD: start() and stop() from one thread; the agent runs a poller and a worker thread.
class Agent {
 public:
  Agent(std::string stateDir, Runtime& runtime, LeaderCall leader, const Clock& clock);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // The node's network plugin (null: none) and this node's underlay address (the VXLAN
  // local address). Set before start(); without a plugin, tasks on networks are rejected.
  void setNetwork(PluginNetwork* network, std::string nodeAddr);

  Status start();
  void stop();
  // `swarm leave` (as Docker's): every task is shut down (its signal, then its grace period)
  // and removed with its network namespace, and no assignment is taken any more. Returns
  // when none is left, or after the longest grace period plus kRemoveAllSlack, with the
  // number still there. Between start() and stop().
  std::size_t removeAllTasks();
  static constexpr std::chrono::seconds kRemoveAllSlack{15};

  // Tasks this agent holds and their local states, for tests: id -> state name.
  std::map<std::string, std::string> tasks();

 private:
  struct Task {
    std::string id;
    std::string json;  // the task object as last assigned (store::toJson form)
    store::TaskState desired = store::TaskState::kRunning;
    store::TaskState state = store::TaskState::kAssigned;  // what this node knows
    store::TaskState reported = store::TaskState::kAssigned;
    store::TaskState storeState = store::TaskState::kAssigned;  // what the leader shows
    std::string message, err;
    int64_t exitCode = -1;
    int64_t pid = 0;
    int64_t graceNs = 10'000'000'000;
    bool busy = false;      // a runtime op is in flight
    bool starting = false;  // a start is in flight
    bool stopSent = false;  // a shutdown is in flight
    bool waiting = false;   // a wait op is in flight
    bool assigned = true;   // still in the leader's assignment set
    bool removing = false;
    bool attached = false;  // its network namespace is built (or it needs none)
    std::string netns;      // the namespace the network plugin made for it
  };
  struct Completion {
    std::string taskId;
    std::string op;
    Status status;
    std::string result;
  };
  // A `service logs` subscription's share on this node: the runtime's logs ops for its tasks
  // here, and the records not yet published.
  struct LogJob {
    std::map<std::string, uint64_t> ops;  // task id -> logs op still streaming
    std::string records;                  // ",{...}" publish records, in order
    std::string error;
    bool cancelled = false;
    int64_t seq = 0;  // the last request of the subscription taken in (the broker's "seq")
  };

  void pollLoop();
  void workLoop();
  void applyAssignments(const std::string& body);
  void step(Task& t);
  void finish(const Completion& c);
  void transition(Task& t, store::TaskState state, const std::string& message);
  void sendReports();
  void applyLogRequests(std::string_view reply);  // caller holds mu_
  void sendLogs();
  void persist();
  void load();
  Runtime::Done completion(const std::string& taskId, const std::string& op);
  std::string runtimeDocument(const Task& t) const;
  std::string attachDocument(const Task& t) const;
  void detach(const Task& t);
  // The dispatcher's "peers" and "services" for the network plugin; the worker thread, without
  // mu_ (the plugin may take a while).
  void applyPeers(std::string_view reply);

  // What the runtime's callbacks hold instead of the agent: they outlive it (a wait or a
  // following logs op in flight when the agent stops), and find `agent` null then.
  struct Life {
    std::mutex mu;
    Agent* agent = nullptr;  // guarded by mu
  };

  const std::string stateDir_;
  Runtime& runtime_;
  PluginNetwork* network_ = nullptr;  // set before start
  std::string nodeAddr_;              // set before start
  LeaderCall leader_;
  const Clock& clock_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                             // guarded by mu_
  bool leaving_ = false;                          // guarded by mu_: removeAllTasks was called
  std::map<std::string, Task> tasks_;             // guarded by mu_
  std::deque<Completion> completions_;            // guarded by mu_
  std::vector<std::string> assignments_;          // replies waiting for the worker; guarded by mu_
  bool resync_ = false;                           // guarded by mu_: the next reply is a full set
  std::vector<std::string> reports_;              // JSON updates to send; guarded by mu_
  std::map<std::string, LogJob> logJobs_;         // by subscription; guarded by mu_
  std::map<std::string, std::string> peersSent_;  // network id -> peers applied; worker thread
  std::string servicesSent_;                      // services document applied; worker thread
  bool dirty_ = false;                            // guarded by mu_: tasks_ differs from the file
  std::string session_;                           // poller thread only
  Clock::MonoTime lastPersist_{};                 // worker thread only
  // A log publish that found no leader is sent again from then, not in a tight loop.
  Clock::MonoTime logsRetryAt_{};  // guarded by mu_
  std::thread poller_;
  std::thread worker_;
  std::shared_ptr<Life> life_;
};

}  // namespace shoal::agent
