// network-overlay: VXLAN overlay networks (one VNI per network, static FDB and neighbour
// entries from cluster state), service VIPs load-balanced with nftables, the routing mesh and
// the embedded DNS.
//
// This is the plugin's shell: it loads, checks its configuration and describes this node's
// networking truthfully. Every other operation answers SHOAL_ENOTSUP until the networking work
// lands (issue #7).
#include <shoal/network.h>
#include <shoal/plugin.hpp>
#include <shoal_plugins/config.hpp>
#include <shoal_plugins/json.hpp>

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>

namespace {

using shoal::plugins::configError;
using shoal::plugins::parseConfig;
using shoal::plugins::toJson;
using shoal::sdk::Error;

constexpr char kName[] = "network-overlay";
constexpr char kVersion[] = "0.1.0";

// VXLAN over an IPv4 underlay adds 50 bytes (outer Ethernet 14, IPv4 20, UDP 8, VXLAN 8).
constexpr int kVxlanOverhead = 50;
// The underlay MTU assumed when this node has no default route (an isolated node or lab).
constexpr int kFallbackUnderlayMtu = 1500;
constexpr unsigned long kRouteUp = 0x0001;  // RTF_UP in /proc/net/route's Flags

// Parses `text` as a whole unsigned number in `base`; false when it is not one.
bool parseUnsigned(const std::string& text, int base, unsigned long* out) {
  if (text.empty() || !std::isxdigit(static_cast<unsigned char>(text[0]))) return false;
  char* end = nullptr;
  errno = 0;
  const unsigned long value = std::strtoul(text.c_str(), &end, base);
  if (errno != 0 || end == nullptr || *end != '\0') return false;
  *out = value;
  return true;
}

// The interface of the IPv4 default route with the lowest metric, or "" when there is none.
std::string defaultRouteInterface() {
  std::ifstream routes("/proc/net/route");
  if (!routes) throw Error(SHOAL_EIO, std::string(kName) + ": cannot read /proc/net/route");
  std::string line;
  std::getline(routes, line);  // the header
  std::string best;
  unsigned long best_metric = std::numeric_limits<unsigned long>::max();
  while (std::getline(routes, line)) {
    // Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT
    std::istringstream fields(line);
    std::string iface, destination, gateway, flags, refcnt, use, metric, mask;
    if (!(fields >> iface >> destination >> gateway >> flags >> refcnt >> use >> metric >> mask)) {
      continue;
    }
    unsigned long dst = 1, msk = 1, flg = 0, met = 0;
    if (!parseUnsigned(destination, 16, &dst) || !parseUnsigned(mask, 16, &msk) ||
        !parseUnsigned(flags, 16, &flg) || !parseUnsigned(metric, 10, &met)) {
      continue;
    }
    if (dst == 0 && msk == 0 && (flg & kRouteUp) != 0 && met < best_metric) {
      best = iface;
      best_metric = met;
    }
  }
  return best;
}

// The MTU that overlay interfaces get on this node: the underlay's MTU minus VXLAN's overhead,
// where the underlay is the interface of the default route. Read at every describe, since
// routes and links change under a running daemon.
long overlayMtu() {
  const std::string iface = defaultRouteInterface();
  if (iface.empty()) return kFallbackUnderlayMtu - kVxlanOverhead;
  if (iface.find('/') != std::string::npos || iface == "." || iface == "..") {
    throw Error(SHOAL_EIO, std::string(kName) + ": odd interface name in /proc/net/route");
  }
  const std::string path = "/sys/class/net/" + iface + "/mtu";
  std::ifstream file(path);
  std::string text;
  unsigned long mtu = 0;
  if (!file || !std::getline(file, text) || !parseUnsigned(text, 10, &mtu)) {
    throw Error(SHOAL_EIO, std::string(kName) + ": cannot read the underlay MTU from " + path);
  }
  if (mtu <= static_cast<unsigned long>(kVxlanOverhead) + 68) {  // 68: IPv4's minimum MTU
    throw Error(SHOAL_EIO, std::string(kName) + ": underlay " + iface + " has MTU " +
                               std::to_string(mtu) + ", too small for VXLAN");
  }
  return static_cast<long>(mtu) - kVxlanOverhead;
}

class OverlayNetwork : public shoal::sdk::Instance {
 public:
  OverlayNetwork(const shoal_host* host, shoal_instance* inst, std::string_view config_json)
      : Instance(host, inst) {
    Poco::JSON::Object::Ptr config = parseConfig(kName, config_json, {"vxlan_port"});
    if (config->has("vxlan_port")) {
      const Poco::Dynamic::Var& value = config->get("vxlan_port");
      // Poco counts booleans as integers; a port is not one.
      if (!value.isInteger() || value.isBoolean() || !value.isSigned() ||
          value.convert<Poco::Int64>() < 1 || value.convert<Poco::Int64>() > 65535) {
        configError(kName, "config key \"vxlan_port\" must be an integer from 1 to 65535");
      }
      vxlan_port_ = static_cast<int>(value.convert<Poco::Int64>());
    }
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
    doc.set("mtu", static_cast<Poco::Int64>(overlayMtu()));
    doc.set("vxlan_port", static_cast<Poco::Int64>(vxlan_port_));
    return reply(out, toJson(doc));
  }

  shoal_status restore(shoal_str) { return notYet("restore"); }
  shoal_status networkAllocate(shoal_str, shoal_buf*) { return notYet("network_allocate"); }
  shoal_status networkRelease(shoal_str) { return notYet("network_release"); }
  shoal_status endpointAllocate(shoal_str, shoal_buf*) { return notYet("endpoint_allocate"); }
  shoal_status endpointRelease(shoal_str) { return notYet("endpoint_release"); }
  shoal_status attach(uint64_t, shoal_str, shoal_str) { return notYet("attach"); }
  shoal_status detach(uint64_t, shoal_str) { return notYet("detach"); }
  shoal_status updatePeers(shoal_str) { return notYet("update_peers"); }
  shoal_status updateServices(shoal_str) { return notYet("update_services"); }

 private:
  shoal_status notYet(const char* op) const {
    return host()->fail(instance(), SHOAL_ENOTSUP, "%s: %s is not supported yet", kName, op);
  }

  int vxlan_port_ = 4789;  // the UDP port of every VXLAN device on this node (IANA's port)
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
