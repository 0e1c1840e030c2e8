// network-overlay's node half (network.h, "node side"): per overlay network a sandbox network
// namespace holding a bridge (br0, the network's gateway address) and a VXLAN device (vxlan0:
// the network's VNI, nolearning, proxy, MTU = underlay - 50), and per task a namespace with a
// veth into each of its networks' sandboxes (eth0, eth1, ... in endpoint order); remote
// endpoints become static FDB and neighbour entries on vxlan0; a task with host-mode ports gets
// a link to the host namespace and a DNAT there (host_ports.hpp). See ../README.md.
//
// Files: everything lives under Config::netnsDir: task namespaces "<dir>/<task_id>", sandboxes
// "<dir>/sb-<first 12 characters of the network id>" (bind mounts of namespaces) and one state
// file per attached task "<dir>/<task_id>.json" (state_file.hpp), from which a new instance
// over the same directory (a restarted daemon) rediscovers what an earlier one built. Nothing
// is shared between instances but that directory, so several instances (lab nodes) can run in
// one process, each over its own directory and "host" namespace.
//
// The host namespace is the network namespace of the thread that constructs the instance: the
// VXLAN devices are made from there (their UDP sockets live there) and the underlay MTU is
// read there.
//
// THREAD: one worker thread per instance does all the work, in the order it was asked for; it
// is the only thread that ever changes namespace (setns), and always comes back to the host
// namespace. Public methods may be called from any one thread at a time (the plugin host
// serialises calls); attach and detach return at once and report through their callback, on
// the worker thread; the others wait for the worker.
// ERRORS: shoal::sdk::Error — SHOAL_EINVAL for bad documents (the parse functions in
// documents.hpp), SHOAL_EIO for kernel and file failures, naming the step and the kernel's
// message. A failed attach undoes what it built.
#pragma once

#include <shoal/plugin.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/documents.hpp"
#include "dataplane/netlink.hpp"
#include "dataplane/netns.hpp"
#include "dataplane/state_file.hpp"
#include "dataplane/tunnel.hpp"

namespace shoal::overlay::dataplane {

// VXLAN over an IPv4 underlay adds 50 bytes (outer Ethernet 14, IPv4 20, UDP 8, VXLAN 8).
constexpr unsigned kVxlanOverhead = 50;
// The underlay MTU assumed when this node has no default route (an isolated node or lab).
constexpr unsigned kFallbackUnderlayMtu = 1500;

struct Config {
  std::string netnsDir = "/run/shoal/netns";  // absolute; made (0711) on first attach
  int vxlanPort = 4789;
  int wireguardPort = 51820;  // the encrypted overlays' tunnel (tunnel.hpp), on every node
};

class Dataplane {
 public:
  using Log = std::function<void(int32_t level, const std::string& message)>;
  // Called once per attach/detach on the worker thread: SHOAL_OK with the result document, or
  // an error code with {"message": "..."}.
  using Done = std::function<void(shoal_status status, const std::string& json)>;

  // Starts the worker in the calling thread's network namespace and rediscovers what earlier
  // instances built under config.netnsDir (dropping what a crash left half-made).
  Dataplane(Config config, Log log);
  // Stops the worker after the job it is running; queued jobs are dropped without their
  // callbacks. Tears nothing down: tasks outlive the daemon.
  ~Dataplane();
  Dataplane(const Dataplane&) = delete;
  Dataplane& operator=(const Dataplane&) = delete;

  // Builds (or, for a task already attached, just reports) the task's namespace:
  // {"netns": "<dir>/<task_id>"}.
  void attach(AttachRequest request, Done done);
  // Removes the task's namespace and every sandbox its leaving empties; "{}". Idempotent.
  // Throws SHOAL_EINVAL at once for an id that cannot be a task's.
  void detach(const std::string& taskId, Done done);
  // Replaces the remote endpoints of one network; applied now if it has a sandbox on this
  // node, else kept for when it gets one. A set with a tunnel replaces the tunnel's keys and
  // nodes (reconfigured at once while an encrypted network has a sandbox here).
  void updatePeers(PeerSet peers);
  // The MTU overlay interfaces get here: that of the interface holding the last node_addr
  // seen, or (none seen yet) of the default route's interface, minus kVxlanOverhead.
  unsigned overlayMtu();

  // Introspection (tests, logs): the attached tasks, and the networks with a sandbox.
  std::vector<std::string> tasks();
  std::vector<std::string> sandboxes();
  std::string taskNetnsPath(const std::string& taskId) const;
  // The ids of the networks an attached task is on, in endpoint order (eth0's first); empty
  // for a task that is not attached.
  std::vector<std::string> taskNetworks(const std::string& taskId);
  // What an attached task was built from (its endpoints, networks, node address, host ports);
  // nothing for a task that is not attached.
  std::optional<TaskState> taskState(const std::string& taskId);
  std::string sandboxPath(const std::string& networkId) const;

 private:
  struct Sandbox {
    std::string networkId;
    std::string path;
    Fd ns;
    std::unique_ptr<Netlink> nl;  // bound to the sandbox
    int bridge = 0;
    int vxlan = 0;
    uint32_t vni = 0;
    uint32_t nodeAddr = 0;
    unsigned mtu = 0;
    bool encrypted = false;  // its VXLAN device runs over the tunnel
    std::set<std::string> tasks;
  };

  // ---- the worker ----
  void post(std::function<void()> job);
  void loop();
  template <class F>
  auto runSync(F fn) -> decltype(fn());
  void checkThread();

  // ---- jobs (worker thread only) ----
  void rediscover();
  std::string attachNow(const AttachRequest& req);
  void detachNow(const std::string& taskId);
  void buildSandbox(const NetworkSpec& net, uint32_t nodeAddr, unsigned mtu);
  bool adoptSandbox(const NetworkSpec& net, uint32_t nodeAddr);
  void teardownSandbox(const std::string& networkId);
  void sweepEmptySandboxes();
  void destroySandboxFile(const std::string& path);
  void removeStaleTask(const std::string& taskId);
  // Another attached task of `sb` whose veth is also called `veth` (a hash collision), if any.
  const std::string* vethOwner(const Sandbox& sb, const std::string& veth,
                               const std::string& taskId) const;
  void applyPeers(Sandbox& sb);
  // Encrypted networks: the tunnel interface up and configured with tunnel_ (started when
  // missing); dropped with the last encrypted sandbox.
  void ensureTunnel();
  void stopTunnelIfUnused();    // also rewrites the filter (applyTunnelFilter)
  bool encryptedInUse() const;  // some sandbox here is an encrypted network's
  // The host's filter of clear VXLAN for the encrypted sandboxes' VNIs (tunnel.hpp).
  void applyTunnelFilter();
  // Host-mode ports (host_ports.hpp): the task's link to the host namespace and the table.
  static std::string hostLinkName(const std::string& taskId);
  int freeHostSlot() const;  // the lowest slot no attached task holds; SHOAL_ENOSPC when none
  // `*made` turns true once the veth exists (what a failed attach must delete).
  void buildHostLink(const std::string& taskId, int slot, const std::string& ifname, unsigned mtu,
                     int taskNs, Netlink& taskNl, bool* made);
  // Rewrites `table ip shoal_hostports` from the attached tasks (plus `adding`, not attached
  // yet); deletes it when no task has host-mode ports.
  void applyHostPorts(const TaskState* adding);
  unsigned mtuForNodeAddr(uint32_t nodeAddr);
  unsigned fallbackMtu();
  void ensureDir();
  std::unique_ptr<Netlink> socketIn(int ns);
  std::string statePath(const std::string& taskId) const;
  void warn(const std::string& message) const;

  const Config config_;
  const Log log_;
  Fd home_;  // the host namespace

  // Worker-thread state: touched only by jobs, so no lock.
  std::unique_ptr<Netlink> hostNl_;
  std::map<std::string, TaskState> tasks_;
  std::map<std::string, Sandbox> sandboxes_;
  std::map<std::string, std::vector<Peer>> peers_;  // by network id, kept across teardowns
  uint32_t nodeAddr_ = 0;
  const std::string tunnelName_;
  std::optional<TunnelSpec> tunnel_;     // the latest keys and nodes from the managers
  std::optional<TunnelSpec> tunnelSet_;  // what the running interface holds (unknown: none)
  int tunnelIf_ = 0;                     // its index in the host namespace; 0: not up
  std::vector<uint32_t> filteredVnis_;   // what the host's shoal_tunnel table drops in clear
  bool stuck_ = false;  // the worker could not return to home_: it refuses all work

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;  // guarded by mu_
  bool stopped_ = false;                    // guarded by mu_
  std::thread worker_;
};

}  // namespace shoal::overlay::dataplane
