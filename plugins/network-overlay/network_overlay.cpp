// network-overlay: VXLAN overlay networks (one VNI per network, static FDB and neighbour
// entries from cluster state), service VIPs load-balanced with nftables, the routing mesh and
// the embedded DNS.
//
// The manager side (allocation) is ipam.hpp; the node side (attach, detach, update_peers) is
// the dataplane (dataplane/); the embedded DNS (127.0.0.11 in every task namespace) is dns/,
// fed by update_services (services.hpp), which also drives the VIP load balancer (lb/) and
// the ingress routing mesh (mesh/: the "ingress-sbox" pseudo-task, a veth and nftables).
#include <shoal/network.h>

#include <shoal/plugin.hpp>
#include <shoal_plugins/config.hpp>
#include <shoal_plugins/json.hpp>
#include "ipam.hpp"
#include "services.hpp"

#include "dataplane/dataplane.hpp"
#include "dataplane/documents.hpp"
#include "dns/server.hpp"
#include "lb/balancer.hpp"
#include "mesh/mesh.hpp"

#include <Poco/Dynamic/Var.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <chrono>
#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace {

using shoal::plugins::configError;
using shoal::plugins::parseConfig;
using shoal::plugins::toJson;

constexpr char kName[] = "network-overlay";
constexpr char kVersion[] = "0.1.0";

class OverlayNetwork : public shoal::sdk::Instance {
 public:
  OverlayNetwork(const shoal_host* host, shoal_instance* inst, std::string_view config_json)
      : Instance(host, inst) {
    Poco::JSON::Object::Ptr config =
        parseConfig(kName, config_json, {"vxlan_port", "netns_dir", "wireguard_port"});
    shoal::overlay::dataplane::Config dp;
    if (config->has("vxlan_port")) {
      const Poco::Dynamic::Var& value = config->get("vxlan_port");
      // Poco counts booleans as integers; a port is not one.
      if (!value.isInteger() || value.isBoolean() || !value.isSigned() ||
          value.convert<Poco::Int64>() < 1 || value.convert<Poco::Int64>() > 65535) {
        configError(kName, "config key \"vxlan_port\" must be an integer from 1 to 65535");
      }
      vxlan_port_ = static_cast<int>(value.convert<Poco::Int64>());
    }
    if (config->has("wireguard_port")) {
      const Poco::Dynamic::Var& value = config->get("wireguard_port");
      if (!value.isInteger() || value.isBoolean() || !value.isSigned() ||
          value.convert<Poco::Int64>() < 1 || value.convert<Poco::Int64>() > 65535) {
        configError(kName, "config key \"wireguard_port\" must be an integer from 1 to 65535");
      }
      dp.wireguardPort = static_cast<int>(value.convert<Poco::Int64>());
    }
    if (config->has("netns_dir")) {
      const Poco::Dynamic::Var& value = config->get("netns_dir");
      if (!value.isString()) configError(kName, "config key \"netns_dir\" must be a string");
      dp.netnsDir = value.extract<std::string>();
      if (dp.netnsDir.empty() || dp.netnsDir[0] != '/' ||
          dp.netnsDir.find('\0') != std::string::npos) {
        configError(kName, "config key \"netns_dir\" must be an absolute path");
      }
      while (dp.netnsDir.size() > 1 && dp.netnsDir.back() == '/') dp.netnsDir.pop_back();
    }
    dp.vxlanPort = vxlan_port_;
    // Made on this thread, the one init runs on, so that its forwarding sockets live in the
    // node's own namespace (server.hpp); upstreams come from the node's /etc/resolv.conf.
    shoal::overlay::dns::ServerOptions dnsOptions;
    dnsOptions.log = [this](const std::string& message) { warn(message); };
    dns_ = std::make_unique<shoal::overlay::dns::Server>(std::move(dnsOptions));
    // A node without the embedded DNS still runs its tasks: names just do not resolve.
    if (const shoal::overlay::dns::Status s = dns_->start(); !s) warn(s.message());
    // The host namespace is this thread's, the one init runs on (dataplane.hpp).
    dataplane_ = std::make_unique<shoal::overlay::dataplane::Dataplane>(
        dp, [this](int32_t level, const std::string& message) {
          log(level, std::string(kName) + ": " + message);
        });
    lb_ = std::make_unique<shoal::overlay::lb::Balancer>(
        [this](const std::string& message) { warn(message); });
    // Also made on the init thread: its host namespace is this one.
    mesh_ = std::make_unique<shoal::overlay::mesh::Mesh>(
        [this](const std::string& message) { warn(message); });
    // Tasks outlive the daemon; the DNS sockets in their namespaces did not. Their VIP rules
    // did, and are rebuilt at the first update_services.
    for (const std::string& task : dataplane_->tasks()) {
      // The mesh's sandbox: kept, and torn down or updated by the first update_services,
      // which rebuilds it if this node's ingress endpoint changed meanwhile.
      if (task == shoal::overlay::mesh::kSandboxTask) {
        mesh_live_ = true;
        if (auto state = dataplane_->taskState(task);
            state && state->endpoints.size() == 1 && state->networks.size() == 1) {
          shoal::overlay::IngressEndpoint ep;
          ep.network = state->networks[0];
          ep.address = state->endpoints[0].address;
          ep.mac = state->endpoints[0].mac;
          ep.nodeAddr = state->nodeAddr;
          mesh_endpoint_ = ep;
        }
        continue;
      }
      serveDns(task, dataplane_->taskNetnsPath(task), dataplane_->taskNetworks(task));
      balance(task, dataplane_->taskNetnsPath(task), dataplane_->taskNetworks(task));
    }
  }

  shoal_status describe(shoal_buf* out) {
    Poco::JSON::Array drivers;
    drivers.add(std::string("overlay"));
    // What can carry `--opt encrypted` networks here: userspace WireGuard when wireguard-go and
    // a TUN device are present (this plugin drives no kernel IPsec or WireGuard; PLATFORM.md:
    // the kernel here has neither). Empty: encrypted networks cannot be attached here.
    Poco::JSON::Array encryption;
    if (shoal::overlay::dataplane::wireguardUnavailable().empty()) {
      encryption.add(std::string("wireguard-go"));
    }
    Poco::JSON::Object doc(Poco::JSON_PRESERVE_KEY_ORDER);
    doc.set("drivers", drivers);
    doc.set("encryption", encryption);
    // nftables is Shoal's VIP load balancer; IPVS is only an optional backend, for kernels that
    // have it (see ARCHITECTURE.md), and is not offered by this plugin.
    doc.set("load_balancer", std::string("nftables"));
    // The MTU of the interface holding this node's underlay address (the last node_addr an
    // attach named), else of the default route's interface, minus VXLAN's 50 bytes.
    doc.set("mtu", static_cast<Poco::Int64>(dataplane_->overlayMtu()));
    doc.set("vxlan_port", static_cast<Poco::Int64>(vxlan_port_));
    return reply(out, toJson(doc));
  }

  // ---- manager side: addresses (ipam.hpp), on the leader's allocator thread ----
  shoal_status restore(shoal_str allocations) {
    ipam_.restore(std::string(shoal::sdk::view(allocations)));
    return SHOAL_OK;
  }
  shoal_status networkAllocate(shoal_str network, shoal_buf* out) {
    const std::string doc(shoal::sdk::view(network));
    // An encrypted network is never silently plaintext: the leader refuses one it could not
    // carry itself (each node checks again when a task attaches).
    if (doc.find("\"encrypted\"") != std::string::npos) {
      Poco::JSON::Object::Ptr parsed;
      try {
        parsed = Poco::JSON::Parser().parse(doc).extract<Poco::JSON::Object::Ptr>();
      } catch (const std::exception&) {
        parsed = nullptr;  // ipam names what is wrong with it
      }
      auto options = parsed ? parsed->getObject("options") : nullptr;
      if (options && options->has("encrypted")) {
        if (const std::string why = shoal::overlay::dataplane::wireguardUnavailable();
            !why.empty()) {
          throw shoal::sdk::Error(SHOAL_ENOTSUP,
                                  "--opt encrypted is not available on this manager: " + why +
                                      "; the network is not created rather than left in plaintext");
        }
      }
    }
    return reply(out, ipam_.allocateNetwork(doc));
  }
  shoal_status networkRelease(shoal_str id) {
    ipam_.releaseNetwork(std::string(shoal::sdk::view(id)));
    return SHOAL_OK;
  }
  shoal_status endpointAllocate(shoal_str request, shoal_buf* out) {
    return reply(out, ipam_.allocateEndpoint(std::string(shoal::sdk::view(request))));
  }
  shoal_status endpointRelease(shoal_str endpoint) {
    ipam_.releaseEndpoint(std::string(shoal::sdk::view(endpoint)));
    return SHOAL_OK;
  }

  // Checked here, so a bad document fails the call itself; built on the dataplane's worker.
  shoal_status attach(uint64_t op, shoal_str task_id, shoal_str attach_json) {
    shoal::overlay::dataplane::AttachRequest req = shoal::overlay::dataplane::parseAttach(
        shoal::sdk::view(task_id), shoal::sdk::view(attach_json));
    std::string task = req.taskId;
    std::vector<std::string> networks;  // endpoint order: the first answers a name first
    for (const auto& net : req.networks) networks.push_back(net.id);
    dataplane_->attach(std::move(req),
                       [this, op, task = std::move(task), networks = std::move(networks)](
                           shoal_status status, const std::string& json) {
                         if (status == SHOAL_OK) {
                           serveDns(task, netnsOf(json), networks);
                           balance(task, netnsOf(json), networks);
                         }
                         completeRetrying(op, status, json);
                       });
    return SHOAL_EAGAIN;
  }

  shoal_status detach(uint64_t op, shoal_str task_id) {
    std::string task(shoal::sdk::view(task_id));
    // Dropped in the completion, on the worker: after any attach queued before this detach.
    dataplane_->detach(task, [this, op, task](shoal_status status, const std::string& json) {
      stopDns(task);
      stopBalancing(task);
      completeRetrying(op, status, json);
    });
    return SHOAL_EAGAIN;
  }

  shoal_status updatePeers(shoal_str peers_json) {
    dataplane_->updatePeers(shoal::overlay::dataplane::parsePeers(shoal::sdk::view(peers_json)));
    return SHOAL_OK;
  }

  // The full set: checked whole before anything changes, then the DNS table is swapped at
  // once and every attached task's VIP rules follow (only where they changed).
  // The routing mesh follows last; its failures are logged, never the call's.
  shoal_status updateServices(shoal_str services_json) {
    shoal::overlay::ServiceSet set = shoal::overlay::parseServices(shoal::sdk::view(services_json));
    dns_->setRecords(shoal::overlay::dnsRecords(set));
    std::vector<shoal::overlay::mesh::PublishedPort> ports = meshPorts(set);
    std::optional<shoal::overlay::IngressEndpoint> ingress = set.ingress;
    {
      std::lock_guard<std::mutex> lock(lb_mu_);
      services_ = std::move(set);
      for (auto& [task, t] : lb_tasks_) applyVips(task, t);
    }
    updateMesh(ingress, ports);
    return SHOAL_OK;
  }

 private:
  void warn(const std::string& message) const {
    log(SHOAL_LOG_WARN, std::string(kName) + ": " + message);
  }

  // Every ingress-mode port of the set over its service's backends on the ingress network.
  static std::vector<shoal::overlay::mesh::PublishedPort> meshPorts(
      const shoal::overlay::ServiceSet& set) {
    std::vector<shoal::overlay::mesh::PublishedPort> out;
    if (!set.ingress) return out;
    for (const auto& svc : set.services) {
      for (const auto& port : svc.ports) {
        if (port.mode != shoal::overlay::PublishMode::kIngress) continue;
        shoal::overlay::mesh::PublishedPort p;
        p.protocol = port.protocol == shoal::overlay::PortProtocol::kUdp
                         ? shoal::overlay::mesh::Protocol::kUdp
                     : port.protocol == shoal::overlay::PortProtocol::kSctp
                         ? shoal::overlay::mesh::Protocol::kSctp
                         : shoal::overlay::mesh::Protocol::kTcp;
        p.published = port.published;
        p.target = port.target;
        for (const auto& b : svc.backends) {
          if (b.networkId == set.ingress->network.id) p.backends.push_back(b.address);
        }
        out.push_back(std::move(p));
      }
    }
    return out;
  }

  // Waits for a dataplane job (never with lb_mu_ or dns_mu_ held: completions take them).
  template <class Start>
  static std::pair<shoal_status, std::string> waitFor(Start start) {
    auto done = std::make_shared<std::promise<std::pair<shoal_status, std::string>>>();
    std::future<std::pair<shoal_status, std::string>> result = done->get_future();
    start([done](shoal_status status, const std::string& json) {
      done->set_value({status, json});
    });
    if (result.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
      return {SHOAL_ETIMEDOUT, "{\"message\":\"no completion within 30 s\"}"};
    }
    return result.get();
  }

  // Builds, updates or tears down the mesh (mesh/mesh.hpp); serialised by mesh_mu_.
  void updateMesh(const std::optional<shoal::overlay::IngressEndpoint>& ingress,
                  const std::vector<shoal::overlay::mesh::PublishedPort>& ports) {
    namespace mesh = shoal::overlay::mesh;
    std::lock_guard<std::mutex> meshLock(mesh_mu_);
    const std::string sbox = mesh::kSandboxTask;
    if (!ingress || ports.empty()) {
      if (!mesh_live_) return;
      {
        std::lock_guard<std::mutex> lock(lb_mu_);
        if (const mesh::Status s = mesh_->remove(dataplane_->taskNetnsPath(sbox)); !s) {
          warn(s.message());
          return;  // the next update tries again
        }
      }
      const auto [status, json] =
          waitFor([&](auto done) { dataplane_->detach(sbox, std::move(done)); });
      if (status != SHOAL_OK) {
        warn("mesh: detach " + sbox + ": " + json);
        return;
      }
      mesh_live_ = false;
      mesh_endpoint_.reset();
      return;
    }
    // A sandbox attached with another endpoint (the ingress network was remade): rebuilt.
    if (mesh_endpoint_ && !(*mesh_endpoint_ == *ingress)) {
      const auto [status, json] =
          waitFor([&](auto done) { dataplane_->detach(sbox, std::move(done)); });
      if (status != SHOAL_OK) warn("mesh: detach " + sbox + ": " + json);
      mesh_endpoint_.reset();
    }
    shoal::overlay::dataplane::AttachRequest req;
    req.taskId = sbox;
    req.nodeAddr = ingress->nodeAddr;
    req.endpoints.push_back({ingress->network.id, ingress->address, ingress->mac});
    req.networks.push_back(ingress->network);
    mesh_live_ = true;
    const auto [status, json] =
        waitFor([&](auto done) { dataplane_->attach(std::move(req), std::move(done)); });
    if (status != SHOAL_OK) {
      warn("mesh: attach " + sbox + ": " + json);
      return;
    }
    mesh_endpoint_ = ingress;
    std::lock_guard<std::mutex> lock(lb_mu_);
    if (const mesh::Status s = mesh_->apply(netnsOf(json), ports); !s) warn(s.message());
  }

  // The "netns" of an attach result ("" when it has none).
  static std::string netnsOf(const std::string& json) {
    try {
      Poco::JSON::Parser parser;
      Poco::JSON::Object::Ptr doc = parser.parse(json).extract<Poco::JSON::Object::Ptr>();
      return doc->optValue<std::string>("netns", "");
    } catch (const Poco::Exception&) {
      return "";
    }
  }

  // Opens the task's 127.0.0.11 sockets, unless they are open (attaching an attached task
  // answers the same namespace and networks). A failure costs the task its names, not its
  // attachment: it is logged, and the next attach of the task tries again.
  void serveDns(const std::string& task, const std::string& netns,
                const std::vector<std::string>& networks) {
    std::lock_guard<std::mutex> lock(dns_mu_);
    if (dns_tasks_.count(task) != 0) return;
    if (netns.empty()) {
      warn("dns: task " + task + ": the attach result names no network namespace");
      return;
    }
    if (const shoal::overlay::dns::Status s = dns_->addSandbox(task, netns, networks); !s) {
      warn("dns: task " + task + ": " + s.message());
      return;
    }
    dns_tasks_.insert(task);
  }

  // A task's share of the load balancer: its namespace, its networks, and the VIP table last
  // applied there.
  struct Balanced {
    std::string netns;
    std::vector<std::string> networks;
    shoal::overlay::lb::VipTable applied;
    bool ever = false;  // applied at least once by this instance
  };

  // The VIPs a task on `networks` reaches: every vip-mode service's VIP on each of them, over
  // that service's backends there.
  std::vector<shoal::overlay::lb::Vip> vipsFor(const std::vector<std::string>& networks) const {
    std::vector<shoal::overlay::lb::Vip> out;
    for (const auto& svc : services_.services) {
      if (svc.mode != shoal::overlay::EndpointMode::kVip) continue;
      for (const auto& vip : svc.vips) {
        bool on = false;
        for (const auto& n : networks) on = on || n == vip.networkId;
        if (!on) continue;
        shoal::overlay::lb::Vip v;
        v.address = vip.address;
        for (const auto& b : svc.backends) {
          if (b.networkId == vip.networkId) v.backends.push_back(b.address);
        }
        out.push_back(std::move(v));
      }
    }
    return out;
  }

  // Caller holds lb_mu_. A failure is logged; the next update tries again.
  void applyVips(const std::string& task, Balanced& t) {
    const std::vector<shoal::overlay::lb::Vip> vips = vipsFor(t.networks);
    shoal::overlay::lb::VipTable table = shoal::overlay::lb::normalizeVips(vips);
    if (t.ever && table == t.applied) return;
    if (const shoal::overlay::lb::Status s = lb_->apply(task, t.netns, vips); !s) {
      warn("load balancer: task " + task + ": " + s.message());
      return;
    }
    t.applied = std::move(table);
    t.ever = true;
  }

  void balance(const std::string& task, const std::string& netns,
               const std::vector<std::string>& networks) {
    if (netns.empty()) return;
    std::lock_guard<std::mutex> lock(lb_mu_);
    Balanced& t = lb_tasks_[task];
    t.netns = netns;
    t.networks = networks;
    applyVips(task, t);
  }

  void stopBalancing(const std::string& task) {
    std::lock_guard<std::mutex> lock(lb_mu_);
    if (lb_tasks_.erase(task) == 0) return;
    if (const shoal::overlay::lb::Status s = lb_->remove(task); !s) {
      warn("load balancer: task " + task + ": " + s.message());
    }
  }

  void stopDns(const std::string& task) {
    std::lock_guard<std::mutex> lock(dns_mu_);
    dns_->removeSandbox(task);
    dns_tasks_.erase(task);
  }

  // host->post refuses (SHOAL_ENOMEM) while the host's queue is full: an op must complete.
  void completeRetrying(uint64_t op, shoal_status status, const std::string& json) const {
    for (int attempt = 0; attempt < 200; ++attempt) {
      if (complete(op, status, json) != SHOAL_ENOMEM) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    log(SHOAL_LOG_ERROR, std::string(kName) +
                             ": the host's event queue stayed full; the "
                             "completion of op " +
                             std::to_string(op) + " was dropped");
  }

  int vxlan_port_ = 4789;      // the UDP port of every VXLAN device on this node (IANA's port)
  shoal::overlay::Ipam ipam_;  // the manager half's allocations (used on the leader only)
  // The VIP load balancer (nftables in each task's namespace), the last update_services set it
  // is built from, and the attached tasks it serves; guarded by lb_mu_ (attach and detach
  // complete on the dataplane's worker, updates arrive on the host's threads).
  std::unique_ptr<shoal::overlay::lb::Balancer> lb_;
  std::mutex lb_mu_;
  shoal::overlay::ServiceSet services_;
  std::map<std::string, Balanced> lb_tasks_;
  // The routing mesh: its kernel side, whether an ingress sandbox may exist (attached by this
  // instance or found at start), and the endpoint this instance attached it with; guarded by
  // mesh_mu_ (taken before lb_mu_, which also serialises mesh_'s nftables work with lb_'s).
  std::unique_ptr<shoal::overlay::mesh::Mesh> mesh_;
  std::mutex mesh_mu_;
  bool mesh_live_ = false;
  std::optional<shoal::overlay::IngressEndpoint> mesh_endpoint_;
  // The embedded DNS: outlives the dataplane, whose worker adds and removes its sandboxes.
  std::unique_ptr<shoal::overlay::dns::Server> dns_;
  std::mutex dns_mu_;
  std::set<std::string> dns_tasks_;  // the tasks dns_ serves; guarded by dns_mu_
  // Declared last, so its worker (which calls back into this object) stops first.
  std::unique_ptr<shoal::overlay::dataplane::Dataplane> dataplane_;
};

const shoal_network_ops kOps = [] {
  using shoal::sdk::op;
  shoal_network_ops o{};
  o.struct_size = sizeof o;
  o.describe = op<&OverlayNetwork::describe>;
  o.restore = op<&OverlayNetwork::restore>;
  o.network_allocate = op<&OverlayNetwork::networkAllocate>;
  o.network_release = op<&OverlayNetwork::networkRelease>;
  o.endpoint_allocate = op<&OverlayNetwork::endpointAllocate>;
  o.endpoint_release = op<&OverlayNetwork::endpointRelease>;
  o.attach = op<&OverlayNetwork::attach>;
  o.detach = op<&OverlayNetwork::detach>;
  o.update_peers = op<&OverlayNetwork::updatePeers>;
  o.update_services = op<&OverlayNetwork::updateServices>;
  return o;
}();

const shoal_plugin_desc kDesc =
    shoal::sdk::describe<OverlayNetwork>(SHOAL_KIND_NETWORK, kName, kVersion, &kOps);

}  // namespace

SHOAL_PLUGIN(kDesc)
