#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kernel/agent/agent.h"
#include "kernel/agent/network.h"
#include "kernel/agent/runtime.h"
#include "kernel/api/api_server.h"
#include "kernel/api/router.h"
#include "kernel/ca/certificate_authority.h"
#include "kernel/common/clock.h"
#include "kernel/common/random.h"
#include "kernel/common/status.h"
#include "kernel/manager/replicated_store.h"
#include "kernel/plugin/plugin_host.h"
#include "kernel/raft/tcp_transport.h"

namespace shoal::manager {

class Dispatcher;
class Orchestrator;
class SchedulerHost;
class Allocator;

// `swarm init`'s options (Docker's flags).
struct SwarmInitOptions {
  // Where managers listen for each other (Raft over mutual TLS). Port 0: a free port is
  // chosen at init and kept.
  std::string listenAddr = "0.0.0.0:2377";
  // The address other nodes use to reach this one, "IP[:PORT]" (port: the listen port).
  // Empty: the listen IP, or this machine's only non-loopback IPv4 address (an error naming
  // them when there are several, as Docker's), or 127.0.0.1 when there is none.
  std::string advertiseAddr;
  std::chrono::seconds certExpiry = std::chrono::hours(24 * 90);  // Swarm's default
  // How often workers report to the managers; a node missing 3 periods shows as Down.
  std::chrono::seconds heartbeatPeriod{5};
  // Keep managers' keys (and so their Raft data) sealed at rest with an unlock key that is
  // not stored on the node: a restarted manager stays locked until `swarm unlock`.
  bool autolock = false;
};

// `swarm join`'s options.
struct SwarmJoinOptions {
  std::string token;
  std::string remoteAddr;     // a manager's "IP[:PORT]" (port 2377 by default)
  std::string advertiseAddr;  // empty: the address the manager sees this node connect from
  // Where this node listens as a manager (now with a manager token, or once promoted); Raft
  // takes the next port.
  std::string listenAddr = "0.0.0.0:2377";
};

// A manager as the other nodes know it (from its Node object's ManagerStatus).
struct ManagerEntry {
  std::string nodeId;
  uint64_t raftId = 0;
  std::string addr;          // its node API, "ip:port"
  std::string raftAddr;      // its Raft listener, "ip:port"
  std::string reachability;  // reachable | unreachable (as the leader last saw it)
};

// `swarm update`: the cluster settings to change (unset: unchanged).
struct SwarmUpdate {
  std::optional<std::chrono::seconds> certExpiry;          // at least 1 hour
  std::optional<std::chrono::seconds> heartbeatPeriod;     // at least 1 second
  std::optional<int64_t> taskHistoryLimit;                 // tasks kept per slot, >= 0
  std::optional<std::chrono::seconds> overlayKeyRotation;  // encrypted overlays; >= 10 s
  std::optional<bool> autolock;                            // on: a new unlock key; off: none
};

// What `shoal info` shows about the swarm.
struct SwarmStatus {
  std::string state = "inactive";  // inactive | active
  std::string nodeId;
  std::string clusterId;
  std::string role;  // manager | worker
  std::string caDigest;
  std::string advertiseAddr;
  uint64_t managers = 0;
  uint64_t nodes = 0;
  uint64_t raftId = 0;
  uint64_t raftLeader = 0;
  uint64_t raftTerm = 0;
  uint64_t raftApplied = 0;
  std::vector<std::string> managerAddrs;  // workers: the managers' node API addresses
};

// `swarm ca`: the root CA, and how far a rotation has come.
struct RootCaStatus {
  std::string certPem, digest;
  bool rotating = false;
  std::string nextDigest;
  uint64_t nodes = 0;     // nodes that are up
  uint64_t reissued = 0;  // of them, those holding a certificate from the current issuer
};

// One row of `node ls`.
struct NodeSummary {
  std::string id;
  std::string hostname;
  std::string status;         // ready | down | unknown
  std::string availability;   // active | pause | drain
  std::string managerStatus;  // Leader | Reachable | Unreachable | "" (worker)
  std::string engineVersion;
  bool self = false;
  std::string json;  // the whole Node object, as the API shows it
};

// This node's membership of a swarm: its identity (node id, certificate, the cluster CA),
// and, on a manager, the replicated cluster store with its Raft transport.
//
// On disk, under `<data root>/swarm/`: `state.json` (format 1: node id, cluster id, role,
// Raft id, addresses), `certificates/` (swarm-root-ca.crt, swarm-root-ca.key on managers,
// swarm-node.crt, swarm-node.key; 0600) and `raft/` (kernel/raft's LevelDB). init() builds it
// all in `swarm.new/` and renames it into place only once complete, so a failed init leaves
// nothing behind; resume() refuses a directory it cannot fully trust (a missing or corrupt
// file, a certificate not from the cluster CA, a key that does not match) with an error
// naming the file.
//
// THREAD: every method is safe from any thread.
class Swarm {
 public:
  Swarm(std::string dataRoot, std::string engineVersion, Random& random, const Clock& clock);
  ~Swarm();
  Swarm(const Swarm&) = delete;
  Swarm& operator=(const Swarm&) = delete;

  // The plugins this node's description lists (Docker's Engine.Plugins): called when the
  // node joins or creates a swarm. Set before resume(); by default none.
  using PluginLister = std::function<std::vector<std::pair<std::string, std::string>>()>;
  void setPluginLister(PluginLister lister);
  // The plugins the agent and the leader's scheduler use: the runtime named `runtimeName`
  // (empty: runtime-runc when loaded, else the first runtime) and the first scheduler. Set
  // before resume(); without it the node runs no tasks and the leader schedules none.
  void setPlugins(plugin::PluginHost* host, const std::string& runtimeName);
  // Plugin events (the plugin host's handler): runtime completions go to the agent.
  void onPluginEvent(const plugin::PluginEvent& event);
  // Runs `fn` with this manager's replicated store and this node's id, under the swarm's lock;
  // the error of not being an active manager otherwise. For the service API.
  Status withStore(const std::function<Status(ReplicatedStore&, const std::string&)>& fn);
  // The scheduler plugin the leader uses (null without one), for placement previews.
  plugin::PluginInstance* schedulerPlugin() const { return scheduler_; }
  // The leader's dispatcher (null on other nodes), for `service logs`.
  // A route of this manager's node API (mutual TLS) for what a follower manager forwards
  // because only the leader can answer it (service logs): served once the caller is checked to
  // hold a manager certificate of this swarm and this manager leads; a follower answers with
  // the leader's address, which askLeader follows. Add before resume().
  void addLeaderRoute(const std::string& path, std::function<api::Response(const api::Request&)> h);
  // POSTs `body` to `path` (with its query) on the leader's node API under this manager's
  // certificate, and gives back the leader's answer; UNAVAILABLE on a worker or when no
  // manager answers.
  Result<api::Response> askLeader(const std::string& path, const std::string& body);
  std::shared_ptr<Dispatcher> dispatcher();
  // This node's runtime, for its images (null without one). Set by setPlugins.
  agent::PluginRuntime* runtime() const { return runtime_.get(); }
  // This node's network plugin (null without one). Set by setPlugins.
  agent::PluginNetwork* network() const { return network_.get(); }
  // The agent's tasks and their local states (tests).
  std::map<std::string, std::string> agentTasks();

  // At daemon start: rejoin the swarm this node belongs to, if any.
  Status resume();
  // Stops Raft and the transport (the swarm stays on disk). Idempotent.
  void stop();

  // `swarm init`: a new cluster with this node as its only manager. Returns the node id.
  // Errors: already part of a swarm; bad addresses; no leader within the time limit.
  Result<std::string> init(const SwarmInitOptions& options);

  // `swarm join`: becomes a worker of the swarm the token names. The manager's CA is checked
  // against the token's digest before anything is sent; then the manager signs this node's
  // certificate. Returns the node id. Errors: already part of a swarm; a malformed, wrong or
  // rotated-out token; a token of another swarm; an unreachable manager; a manager token
  // A manager token makes it a manager: it gets the CA key and a Raft id, starts its store
  // empty and is added to the Raft membership (as a learner, then a voter) by the leader
  // before join returns. Nothing is left behind on this node on failure.
  Result<std::string> join(const SwarmJoinOptions& options);

  SwarmStatus status() const;
  // The join token for `role` ("worker" or "manager"); `rotate` replaces it first (the old
  // one stops working). Manager only.
  Result<std::string> joinToken(const std::string& role, bool rotate);
  // Every node, in id order. Manager only.
  Result<std::vector<NodeSummary>> nodes();

  // The Node object (API JSON) for `ref`: an id, a unique id prefix, a hostname, or "self".
  // Errors: not found naming the reference; invalid argument when a prefix or hostname is
  // ambiguous. Manager only.
  Result<std::string> inspectNode(const std::string& ref);

  // `node rm`: forgets a node and refuses its certificate from then on. A node that is not
  // down needs `force`; a manager must be demoted first (Docker's rules).
  Status removeNode(const std::string& ref, bool force);

  // `node update`: any of availability, labels to add (key -> value) and remove, role.
  struct NodeUpdate {
    std::string availability;  // "" = unchanged; active | pause | drain
    std::map<std::string, std::string> labelAdd;
    std::vector<std::string> labelRm;
    std::string role;  // "" = unchanged; worker | manager
  };
  // A role change sets the node's desired role; the node follows by itself (a worker asks for
  // a manager certificate and joins Raft; the leader removes a demoted manager from Raft and
  // the node then asks for a worker certificate).
  // Errors: bad values (named), an unknown node, a label to remove that the node lacks
  // (Docker's "key X doesn't exist in node's labels"), demoting the last manager, or one whose
  // removal would leave fewer reachable managers than a quorum. Manager only.
  Status updateNode(const std::string& ref, const NodeUpdate& update);

  // `swarm leave`: a manager needs `force` (Docker's warnings: leaving the last manager
  // erases the swarm's state; leaving another weakens the quorum). A forced manager first
  // leaves Raft as a demotion would, when others remain. The swarm directory is removed and
  // the node is inactive after.
  Status leave(bool force);

  // `swarm update`. Returns the new unlock key when it turns autolock on ("" otherwise).
  // Errors: values out of range (named); not a manager.
  Result<std::string> update(const SwarmUpdate& update);

  // `swarm ca --rotate`: a new root CA, cross-signed by the current one; every node is issued a
  // certificate from it (presented with the cross-signed certificate, so nodes that still
  // trust only the old root accept it) and trusts both; once every node that is up holds one,
  // the leader makes it the root and the join tokens name it. Returns the new root's digest.
  // Errors: a rotation in progress; not a manager.
  Result<std::string> rotateRootCa();
  // `swarm ca`: the root CA and the progress of a rotation. Manager only.
  Result<RootCaStatus> rootCaStatus();

  // `swarm unlock`: a locked manager (its keys sealed at rest, autolock) opens them with the
  // unlock key and starts. Errors: not locked; a malformed or wrong key (nothing starts).
  Status unlock(const std::string& key);
  // `swarm unlock-key [--rotate]`: the cluster's unlock key; rotate replaces it (every
  // manager reseals its keys with the new one). Errors: autolock is off; not a manager.
  Result<std::string> unlockKey(bool rotate);

  // "This node is not a swarm manager. ..." when it is not one (as Docker says it).
  Status requireManager() const;

  // The files a node presents over TLS to other nodes: the CA, its certificate, its key.
  struct Credentials {
    std::string caFile, certFile, keyFile;
  };

 private:
  struct Identity;
  // Points keyFile_ at the node key for the TLS code: the file on disk, or, when the key is
  // sealed at rest, an in-memory copy. Caller holds mu_.
  Status useNodeKey(const Identity& id, const std::string& dir);
  Credentials credentials() const;
  // `bootstrap`: this node is the cluster's first voter (init); otherwise it starts with no
  // membership and learns it from the leader. `peers`: managers to reach before the store
  // has caught up (a joining manager).
  Status startManager(const Identity& id, const std::string& dir, bool serveNodeApi, bool bootstrap,
                      const std::vector<ManagerEntry>& peers = {});
  void startWorker(const Identity& id);
  // Reads for the API: linearizable on the leader, this manager's committed view on a
  // follower that knows a leader, "no leader" otherwise.
  Status readView(ReplicatedStore& store, const store::Store::ViewFn& fn);
  // On a new manager: asks the leader to add this node to the Raft membership; returns once
  // it is a voter.
  Status joinRaft(const Identity& id, const std::vector<ManagerEntry>& managers);
  // Makes `id` this node's identity and schedules its certificate's renewal; caller holds mu_.
  void setIdentity(Identity id, bool freshCertificate);
  // Time to renew this node's certificate.
  bool certificateDue() const;
  // A manager whose trusted roots or certificate issuer are not the cluster's (a root CA
  // rotation): it renews, taking both from the leader.
  bool rootChanged(ReplicatedStore& store, const Identity& self) const;
  // Follows the role the managers want for this node (promotion, demotion), and renews its
  // certificate when due, on roleThread_.
  void requestRoleChange();
  void changeRole();
  // On the leader: ends a root rotation once every node that is up was re-issued.
  void finishRootRotation(ReplicatedStore& store, const std::string& clusterId);
  // The leader's duties each monitor round: node states, managers' reachability, demotions.
  void leaderRound(ReplicatedStore& store, const Identity& self,
                   std::chrono::steady_clock::time_point started);
  // Every manager, each round: its keys at rest sealed with the cluster's unlock key (or not).
  void syncUnlockKey(ReplicatedStore& store);
  // Starts the manager or worker `id` describes (from `dir`) and makes it this node's; caller
  // holds mu_.
  Status startIdentity(Identity id, const std::string& dir);
  // Every manager, each round: Raft peers from the store. True when the store says this
  // manager is to be a worker.
  bool syncPeers(ReplicatedStore& store, raft::TcpTransport& transport, const Identity& self);
  api::Response handleCertificate(const api::Request& r);
  api::Response handleRaftJoin(const api::Request& r);
  // What a node API call only the leader serves works with.
  struct LeaderCall {
    ReplicatedStore* store = nullptr;
    raft::TcpTransport* transport = nullptr;
    std::string clusterId, caCertPem, caKeyPem;
  };
  // Admits a call from a node of this swarm (a manager, with `managersOnly`) on the leader,
  // filling `call`; otherwise the response to send instead: not a manager, the wrong
  // certificate (naming `what` needs), or 421 naming the leader.
  std::optional<api::Response> admitLeaderCall(const api::Request& r, const std::string& what,
                                               bool managersOnly, LeaderCall& call);
  // 421 naming the leader's node API, for requests only the leader serves.
  api::Response redirectToLeader(ReplicatedStore& store);
  // Takes everything running out under mu_ and stops it with mu_ released (node API
  // handlers take mu_, and stopping the API waits for them).
  void stopRunning(std::unique_lock<std::mutex>& lock);
  api::Response handleCa(const api::Request& r);
  api::Response handleJoin(const api::Request& r);
  api::Response handleHeartbeat(const api::Request& r);
  void monitorHeartbeats();
  void sendHeartbeats(std::string dir);
  std::chrono::seconds heartbeatPeriod();
  Status commitInitialState(const Identity& id, const SwarmInitOptions& options);
  std::string nodeDescriptionJson() const;
  // The id `ref` names among `nodes` (see inspectNode); caller holds mu_.
  Result<std::string> resolveNode(const store::ReadView& view, const std::string& ref) const;

  // Starts the agent for the identity just set; caller holds mu_.
  void startAgent();
  // Starts or stops the leader's orchestrator, scheduler and dispatcher to match `leader`.
  void syncLeaderServices(ReplicatedStore& store, bool leader);
  using DispatcherCall = api::Response (Dispatcher::*)(const std::string& nodeId,
                                                       const std::string& body);
  api::Response handleDispatcher(const api::Request& r, DispatcherCall call);
  std::vector<ManagerEntry> agentManagers();

  PluginLister plugins_;                           // set before any thread starts
  plugin::PluginHost* pluginHost_ = nullptr;       // set before any thread starts
  std::unique_ptr<agent::PluginRuntime> runtime_;  // set before any thread starts
  std::unique_ptr<agent::PluginNetwork> network_;  // set before any thread starts; may be null
  plugin::PluginInstance* scheduler_ = nullptr;    // set before any thread starts
  const std::string dataRoot_;
  const std::string engineVersion_;
  Random& random_;
  const Clock& clock_;

  mutable std::mutex mu_;
  std::unique_ptr<Identity> identity_;  // guarded by mu_; null: inactive
  Clock::WallTime renewAt_;             // guarded by mu_: certificate renewal
  bool locked_ = false;  // guarded by mu_: a manager whose keys are sealed, not unlocked yet
  std::string keyFile_;  // guarded by mu_: see useNodeKey
  int keyMemfd_ = -1;    // guarded by mu_
  std::unique_ptr<raft::TcpTransport> transport_;  // guarded by mu_
  std::unique_ptr<ReplicatedStore> store_;         // guarded by mu_
  std::unique_ptr<api::ApiServer> nodeApi_;        // guarded by mu_ (managers)
  api::Router nodeRouter_;                         // routes set in the constructor
  std::thread hbThread_;                           // guarded by mu_
  std::unique_ptr<agent::Agent> agent_;            // guarded by mu_
  // The leader's components, running while this manager leads.
  std::shared_ptr<Dispatcher> dispatcher_;        // guarded by mu_
  std::unique_ptr<Orchestrator> orchestrator_;    // guarded by mu_
  std::unique_ptr<SchedulerHost> schedulerHost_;  // guarded by mu_
  std::unique_ptr<Allocator> allocator_;          // guarded by mu_

  // Heartbeats: the monitor (managers) or the sender (workers) runs until hbStop_.
  std::mutex hbMu_;
  std::condition_variable hbCv_;
  bool hbStop_ = false;                                                    // guarded by hbMu_
  std::map<std::string, std::chrono::steady_clock::time_point> lastSeen_;  // guarded by hbMu_
  // Managers: when the leader last had a Raft connection to each (node id).
  std::map<std::string, std::chrono::steady_clock::time_point> managerSeen_;  // guarded by hbMu_
  // What a heartbeat's answer takes from the cluster object, at one version of it.
  struct HeartbeatCluster {
    std::string id;
    uint64_t version = 0;
    std::chrono::seconds period{5};
    std::optional<std::string> trust, issuer;  // the cluster CA's, when it has one
  };
  std::optional<HeartbeatCluster> hbCluster_;  // guarded by hbMu_

  // Raft peers as the store names them, for the transport's certificate check.
  std::mutex peersMu_;
  std::map<uint64_t, std::string> raftPeers_;  // Raft id -> raft address; guarded by peersMu_
  std::map<uint64_t, std::string> raftNodes_;  // Raft id -> node id; guarded by peersMu_
  std::set<std::string> removedNodes_;         // guarded by peersMu_

  // Role changes run on their own thread (they stop and start the others).
  std::mutex roleMu_;       // held for a whole role change
  std::thread roleThread_;  // guarded by mu_
  bool roleBusy_ = false;   // guarded by mu_
  bool stopping_ = false;   // guarded by mu_
};

}  // namespace shoal::manager
