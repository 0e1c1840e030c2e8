#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kernel/agent/network.h"
#include "kernel/common/clock.h"
#include "kernel/manager/replicated_store.h"

namespace shoal::manager {

// The leader's allocator (ARCHITECTURE.md, "How a service becomes containers"): between the
// orchestrator, which creates a task NEW when its service uses networks, and the scheduler,
// which takes PENDING tasks. Through the network plugin's manager half it gives
//  - every network its subnet, gateway and VXLAN id (network status: State allocated|failed,
//    Err, Allocation = the plugin's shoal.network-alloc/v1 document);
//  - every service a VIP on each of its networks unless its endpoint mode is dnsrr (service
//    status Endpoint.VirtualIPs[{NetworkID, Addr}]); a service publishing ingress ports is on
//    the `ingress` network too;
//  - every node an address on the ingress network (its status Nodes{id: {Address, MAC}}),
//    for the routing mesh's sandbox on that node;
//  - every NEW task an address on each of its networks (task spec NetworksAttachments
//    [{NetworkID, Name, Subnet, Gateway, VNI, Options, Address, MAC, Aliases}]), then moves it
//    to PENDING. A task whose network is not allocated yet waits NEW with a message saying so.
// Addresses of tasks that ended or were removed, VIPs of removed services and networks that
// were removed are released. At start (a manager becoming leader) everything the store holds
// is replayed into the plugin first (restore), so nothing is handed out twice across leader
// changes. Without a network plugin, networks fail and tasks wait with a message naming the
// problem.
// THREAD: one thread of its own; start()/stop() from one thread.
class Allocator {
 public:
  Allocator(ReplicatedStore& store, agent::PluginNetwork* network, const Clock& clock);
  ~Allocator();
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  void start();
  void stop();

 private:
  struct Held {
    std::vector<std::string> endpoints;  // shoal.endpoint/v1 documents
  };

  void run();
  Status restoreAll();
  void allocateNetworks(const std::set<std::string>& ids);
  void allocateServices(const std::set<std::string>& ids);
  void allocateTasks(const std::set<std::string>& ids);
  // Gives every node an address on the ingress network (the routing mesh's sandbox there),
  // kept in the ingress network's status Nodes{node id: {Address, MAC}}; releases those of
  // removed nodes. False when the commit was refused (tried again on the next pass).
  bool allocateIngressNodes();
  // While any network is encrypted, keeps for every node a WireGuard key pair and an address
  // in kTunnelSubnet (cluster status Tunnels{Subnet, Nodes{id: {PrivateKey, PublicKey,
  // Address, Created}}}; the Raft data holding them is sealed at rest), replacing key pairs
  // older than the cluster's EncryptionConfig.OverlayKeyRotation seconds (default 12 h) and
  // keeping each node's address; with no encrypted network left, drops them all. False when
  // the commit was refused (tried again on the next pass). Sets nextRotation_.
  bool allocateTunnels();
  void release(std::map<std::string, Held>& held, const std::string& owner);
  bool stopping();

  ReplicatedStore& store_;
  agent::PluginNetwork* network_;  // null: the leader has no network plugin
  const Clock& clock_;

  // What the plugin holds for each task and each service (VIPs), so each is released once.
  std::map<std::string, Held> tasks_;
  std::map<std::string, Held> services_;
  // What a refused commit sends back for another try.
  std::set<std::string> retryTasks_, retryServices_;
  Clock::WallTime nextRotation_ = Clock::WallTime::max();  // the next key pair due

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

// The encrypted overlays' tunnel addresses (link-local, clear of the routing mesh's
// 169.254.221.0/30), and how often node key pairs are replaced unless the cluster says.
inline constexpr char kTunnelSubnet[] = "169.254.64.0/18";
inline constexpr int64_t kDefaultKeyRotationSeconds = 12 * 3600;

// Whether a network spec asks for encryption (Options.encrypted, Docker's `--opt encrypted`).
bool networkEncrypted(const std::string& networkSpecJson);

// The networks a service's tasks attach to, in order: `ingress` first when it publishes a
// port in ingress mode, then its TaskTemplate.Networks targets (network ids). With aliases.
struct ServiceNetwork {
  std::string target;
  std::vector<std::string> aliases;
};
std::vector<ServiceNetwork> serviceNetworks(const std::string& serviceSpecJson,
                                            const std::string& ingressId);

}  // namespace shoal::manager
