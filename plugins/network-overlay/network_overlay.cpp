// network-overlay: VXLAN overlay networks (one VNI per network, static FDB and neighbour
// entries from cluster state), service VIPs load-balanced with nftables, the routing mesh and
// the embedded DNS.
//
// The manager side (allocation) is ipam.hpp; the node side (attach, detach, update_peers) is
// the dataplane (dataplane/). update_services answers SHOAL_ENOTSUP until the embedded DNS
// and the nftables VIPs are wired in (issue #7).
#include <shoal/network.h>

#include <shoal/plugin.hpp>
#include <shoal_plugins/config.hpp>
#include <shoal_plugins/json.hpp>
#include "ipam.hpp"

#include "dataplane/dataplane.hpp"
#include "dataplane/documents.hpp"

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

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
    Poco::JSON::Object::Ptr config = parseConfig(kName, config_json, {"vxlan_port", "netns_dir"});
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
    // The host namespace is this thread's, the one init runs on (dataplane.hpp).
    dataplane_ = std::make_unique<shoal::overlay::dataplane::Dataplane>(
        dp, [this](int32_t level, const std::string& message) {
          log(level, std::string(kName) + ": " + message);
        });
  }

  shoal_status describe(shoal_buf* out) {
    Poco::JSON::Array drivers;
    drivers.add(std::string("overlay"));
    // Empty until the networking work (issue #7) probes what this kernel offers (IPsec ESP,
    // WireGuard, or userspace wireguard-go): an encrypted network is never silently plaintext.
    Poco::JSON::Array encryption;
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
    return reply(out, ipam_.allocateNetwork(std::string(shoal::sdk::view(network))));
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
    dataplane_->attach(std::move(req), [this, op](shoal_status status, const std::string& json) {
      completeRetrying(op, status, json);
    });
    return SHOAL_EAGAIN;
  }

  shoal_status detach(uint64_t op, shoal_str task_id) {
    dataplane_->detach(std::string(shoal::sdk::view(task_id)),
                       [this, op](shoal_status status, const std::string& json) {
                         completeRetrying(op, status, json);
                       });
    return SHOAL_EAGAIN;
  }

  shoal_status updatePeers(shoal_str peers_json) {
    dataplane_->updatePeers(shoal::overlay::dataplane::parsePeers(shoal::sdk::view(peers_json)));
    return SHOAL_OK;
  }

  shoal_status updateServices(shoal_str) { return notYet("update_services"); }

 private:
  shoal_status notYet(const char* op) const {
    return host()->fail(instance(), SHOAL_ENOTSUP, "%s: %s is not supported yet", kName, op);
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
