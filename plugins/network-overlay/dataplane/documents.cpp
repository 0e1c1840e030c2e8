#include "dataplane/documents.hpp"

#include <shoal/plugin.h>
#include <shoal/plugin.hpp>

#include <Poco/Dynamic/Var.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <cstdio>
#include <set>
#include <typeinfo>
#include <utility>

namespace shoal::overlay::dataplane {
namespace {

using Poco::JSON::Array;
using Poco::JSON::Object;

constexpr uint32_t kMaxVni = 16777215;  // 24 bits

[[noreturn]] void invalid(std::string_view what, const std::string& message) {
  throw sdk::Error(SHOAL_EINVAL, std::string(what) + ": " + message);
}

int hexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += '?';
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// Typed access to one JSON object's members, naming `path` ("endpoints[0]") in errors.
class Fields {
 public:
  Fields(std::string_view what, std::string path, Object::Ptr obj)
      : what_(what), path_(std::move(path)), obj_(std::move(obj)) {}

  std::string field(const std::string& key) const {
    return path_.empty() ? key : path_ + "." + key;
  }
  bool has(const std::string& key) const { return obj_->has(key) && !obj_->get(key).isEmpty(); }

  std::string string(const std::string& key, bool required = true) const {
    if (!has(key)) {
      if (required) invalid(what_, field(key) + " is required");
      return {};
    }
    const Poco::Dynamic::Var& v = obj_->get(key);
    if (!v.isString()) invalid(what_, field(key) + " must be a string");
    return v.extract<std::string>();
  }

  int64_t integer(const std::string& key) const {
    if (!has(key)) invalid(what_, field(key) + " is required");
    const Poco::Dynamic::Var& v = obj_->get(key);
    // Poco counts booleans as integers; these fields are numbers.
    if (!v.isInteger() || v.isBoolean()) invalid(what_, field(key) + " must be an integer");
    try {
      return v.convert<Poco::Int64>();
    } catch (const Poco::Exception&) {
      invalid(what_, field(key) + " is out of range");
    }
  }

  Array::Ptr array(const std::string& key, bool required = true) const {
    if (!has(key)) {
      if (required) invalid(what_, field(key) + " is required");
      return new Array;
    }
    const Poco::Dynamic::Var& v = obj_->get(key);
    if (v.type() != typeid(Array::Ptr)) invalid(what_, field(key) + " must be an array");
    return v.extract<Array::Ptr>();
  }

  Object::Ptr object(const std::string& key, bool required = true) const {
    if (!has(key)) {
      if (required) invalid(what_, field(key) + " is required");
      return new Object;
    }
    const Poco::Dynamic::Var& v = obj_->get(key);
    if (v.type() != typeid(Object::Ptr)) invalid(what_, field(key) + " must be an object");
    return v.extract<Object::Ptr>();
  }

  uint32_t ipv4(const std::string& key) const {
    const std::string text = string(key);
    uint32_t a = 0;
    if (!parseIpv4(text, &a))
      invalid(what_, field(key) + " " + quoted(text) + " is not an IPv4 address");
    return a;
  }

  Cidr cidr(const std::string& key) const {
    const std::string text = string(key);
    Cidr c;
    if (!parseCidr(text, &c)) {
      invalid(what_, field(key) + " " + quoted(text) + " is not an IPv4 CIDR (a.b.c.d/n)");
    }
    return c;
  }

  MacAddress mac(const std::string& key) const {
    const std::string text = string(key);
    MacAddress m;
    if (!parseMac(text, &m))
      invalid(what_, field(key) + " " + quoted(text) + " is not a MAC address");
    // The kernel refuses multicast addresses on an interface; all zeros is no address at all.
    if ((m.bytes[0] & 1) != 0 || m == MacAddress{}) {
      invalid(what_, field(key) + " " + quoted(text) + " is not a unicast MAC address");
    }
    return m;
  }

  Fields element(const Array& a, std::size_t i, const std::string& key) const {
    const Poco::Dynamic::Var v = a.get(static_cast<unsigned>(i));
    const std::string path = field(key) + "[" + std::to_string(i) + "]";
    if (v.type() != typeid(Object::Ptr)) invalid(what_, path + " must be an object");
    return Fields(what_, path, v.extract<Object::Ptr>());
  }

 private:
  std::string_view what_;
  std::string path_;
  Object::Ptr obj_;
};

Object::Ptr parseObject(std::string_view what, std::string_view json) {
  Poco::Dynamic::Var parsed;
  try {
    Poco::JSON::Parser parser;
    parsed = parser.parse(std::string(json));
  } catch (const Poco::Exception& e) {
    invalid(what, "the document is not valid JSON: " + e.displayText());
  }
  if (parsed.type() != typeid(Object::Ptr)) invalid(what, "the document must be a JSON object");
  return parsed.extract<Object::Ptr>();
}

void checkSchema(std::string_view what, const Fields& doc, const std::string& schema) {
  const std::string s = doc.string("schema");
  if (s != schema) invalid(what, "schema " + quoted(s) + " is not \"" + schema + "\"");
}

}  // namespace

std::string MacAddress::str() const {
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", bytes[0], bytes[1], bytes[2],
                bytes[3], bytes[4], bytes[5]);
  return buf;
}

std::string Cidr::str() const { return formatIpv4(address) + "/" + std::to_string(prefix); }

bool parseMac(std::string_view text, MacAddress* out) {
  if (text.size() != 17) return false;
  MacAddress m;
  for (std::size_t i = 0; i < 6; ++i) {
    const int hi = hexDigit(text[i * 3]);
    const int lo = hexDigit(text[i * 3 + 1]);
    if (hi < 0 || lo < 0) return false;
    if (i < 5 && text[i * 3 + 2] != ':') return false;
    m.bytes[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  *out = m;
  return true;
}

bool parseIpv4(std::string_view text, uint32_t* out) {
  uint32_t result = 0;
  std::size_t pos = 0;
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (pos >= text.size() || text[pos] != '.') return false;
      ++pos;
    }
    const std::size_t start = pos;
    unsigned value = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9' && pos - start < 3) {
      value = value * 10 + static_cast<unsigned>(text[pos] - '0');
      ++pos;
    }
    const std::size_t digits = pos - start;
    if (digits == 0 || value > 255 || (digits > 1 && text[start] == '0')) return false;
    result = (result << 8) | value;
  }
  if (pos != text.size()) return false;
  *out = result;
  return true;
}

bool parseCidr(std::string_view text, Cidr* out) {
  const std::size_t slash = text.find('/');
  if (slash == std::string_view::npos) return false;
  uint32_t address = 0;
  if (!parseIpv4(text.substr(0, slash), &address)) return false;
  const std::string_view len = text.substr(slash + 1);
  if (len.empty() || len.size() > 2 || (len.size() == 2 && len[0] == '0')) return false;
  int prefix = 0;
  for (char c : len) {
    if (c < '0' || c > '9') return false;
    prefix = prefix * 10 + (c - '0');
  }
  if (prefix > 32) return false;
  out->address = address;
  out->prefix = prefix;
  return true;
}

std::string formatIpv4(uint32_t a) {
  return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." +
         std::to_string((a >> 8) & 255) + "." + std::to_string(a & 255);
}

void checkId(std::string_view what, std::string_view field, std::string_view id) {
  const std::string name = std::string(field) + " " + quoted(id);
  if (id.empty()) invalid(what, std::string(field) + " must not be empty");
  if (id.size() > 128) invalid(what, std::string(field) + " is longer than 128 characters");
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) invalid(what, name + " may hold only letters, digits, '_', '.' and '-' (no '/')");
  }
  const char first = id[0];
  if (first == '.' || first == '-' || first == '_') {
    invalid(what, name + " must start with a letter or a digit");
  }
  if (id.find("..") != std::string_view::npos) invalid(what, name + " must not contain \"..\"");
  auto endsWith = [&](std::string_view suffix) {
    return id.size() >= suffix.size() && id.substr(id.size() - suffix.size()) == suffix;
  };
  if (id.substr(0, 3) == "sb-" || endsWith(".json") || endsWith(".tmp")) {
    invalid(what, name + " collides with the plugin's own file names (sb-*, *.json, *.tmp)");
  }
}

AttachRequest parseAttach(std::string_view taskId, std::string_view json) {
  constexpr std::string_view kWhat = "attach";
  checkId(kWhat, "task_id", taskId);
  const Fields doc(kWhat, "", parseObject(kWhat, json));
  checkSchema(kWhat, doc, "shoal.attach/v1");
  AttachRequest req;
  req.taskId = doc.string("task_id");
  if (req.taskId != taskId) {
    invalid(kWhat, "task_id " + quoted(req.taskId) + " is not the task being attached (" +
                       quoted(taskId) + ")");
  }
  req.nodeAddr = doc.ipv4("node_addr");
  if (req.nodeAddr == 0) invalid(kWhat, "node_addr must not be 0.0.0.0");

  std::vector<NetworkSpec> networks;
  const Array::Ptr nets = doc.array("networks");
  for (std::size_t i = 0; i < nets->size(); ++i) {
    const Fields n = doc.element(*nets, i, "networks");
    NetworkSpec spec;
    spec.id = n.string("id");
    checkId(kWhat, n.field("id"), spec.id);
    spec.name = n.string("name", false);
    spec.subnet = n.cidr("subnet");
    if (spec.subnet.address != spec.subnet.network()) {
      invalid(kWhat, n.field("subnet") + " " + quoted(spec.subnet.str()) + " has host bits set");
    }
    if (spec.subnet.prefix < 8 || spec.subnet.prefix > 30) {
      invalid(kWhat, n.field("subnet") + " must have a prefix from /8 to /30");
    }
    spec.gateway = n.ipv4("gateway");
    if (!spec.subnet.contains(spec.gateway) || spec.gateway == spec.subnet.network() ||
        spec.gateway == (spec.subnet.network() | ~spec.subnet.mask())) {
      invalid(kWhat, n.field("gateway") + " " + quoted(formatIpv4(spec.gateway)) +
                         " is not a host address of subnet " + spec.subnet.str());
    }
    const int64_t vni = n.integer("vni");
    if (vni < 1 || vni > kMaxVni) {
      invalid(kWhat, n.field("vni") + " must be from 1 to " + std::to_string(kMaxVni));
    }
    spec.vni = static_cast<uint32_t>(vni);
    const Object::Ptr options = n.object("options", false);
    // Docker's `--opt encrypted` (any value): the dataplane carries it through the tunnel.
    spec.encrypted = options->has("encrypted");
    for (const NetworkSpec& other : networks) {
      if (other.id == spec.id)
        invalid(kWhat, n.field("id") + " " + quoted(spec.id) + " is listed twice");
    }
    networks.push_back(spec);
  }

  const Array::Ptr eps = doc.array("endpoints");
  std::set<std::string> seen;
  for (std::size_t i = 0; i < eps->size(); ++i) {
    const Fields e = doc.element(*eps, i, "endpoints");
    EndpointSpec ep;
    ep.networkId = e.string("network_id");
    ep.address = e.cidr("address");
    ep.mac = e.mac("mac");
    if (e.has("aliases")) {
      const Array::Ptr aliases = e.array("aliases");
      for (std::size_t j = 0; j < aliases->size(); ++j) {
        if (!aliases->get(static_cast<unsigned>(j)).isString()) {
          invalid(kWhat, e.field("aliases") + "[" + std::to_string(j) + "] must be a string");
        }
      }
    }
    const NetworkSpec* net = nullptr;
    for (const NetworkSpec& n : networks) {
      if (n.id == ep.networkId) net = &n;
    }
    if (net == nullptr) {
      invalid(kWhat,
              e.field("network_id") + " " + quoted(ep.networkId) + " is not one of \"networks\"");
    }
    if (!seen.insert(ep.networkId).second) {
      invalid(kWhat, e.field("network_id") + " " + quoted(ep.networkId) +
                         ": a task has at most one endpoint per network");
    }
    if (ep.address.prefix != net->subnet.prefix || !net->subnet.contains(ep.address.address) ||
        ep.address.address == net->subnet.network() || ep.address.address == net->gateway ||
        ep.address.address == (net->subnet.network() | ~net->subnet.mask())) {
      invalid(kWhat, e.field("address") + " " + quoted(ep.address.str()) +
                         " is not a host address of subnet " + net->subnet.str() +
                         " (other than the gateway) with its prefix");
    }
    for (const EndpointSpec& other : req.endpoints) {
      if (other.mac == ep.mac) invalid(kWhat, e.field("mac") + " is used by two endpoints");
    }
    req.endpoints.push_back(ep);
    req.networks.push_back(*net);
  }

  const Array::Ptr ports = doc.array("host_ports", false);
  for (std::size_t i = 0; i < ports->size(); ++i) {
    const Fields p = doc.element(*ports, i, "host_ports");
    HostPort port;
    port.protocol = p.string("protocol", false);
    if (port.protocol.empty()) port.protocol = "tcp";
    if (port.protocol != "tcp" && port.protocol != "udp" && port.protocol != "sctp") {
      invalid(kWhat, p.field("protocol") + " " + quoted(port.protocol) +
                         R"( is not "tcp", "udp" or "sctp")");
    }
    for (const char* key : {"published", "target"}) {
      const int64_t n = p.integer(key);
      if (n < 1 || n > 65535) invalid(kWhat, p.field(key) + " must be from 1 to 65535");
      (std::string(key) == "published" ? port.published : port.target) = static_cast<uint16_t>(n);
    }
    for (const HostPort& other : req.hostPorts) {
      if (other.protocol == port.protocol && other.published == port.published) {
        invalid(kWhat, p.field("published") + " " + std::to_string(port.published) + "/" +
                           port.protocol + " is listed twice");
      }
    }
    req.hostPorts.push_back(port);
  }
  return req;
}

PeerSet parsePeers(std::string_view json) {
  constexpr std::string_view kWhat = "update_peers";
  const Fields doc(kWhat, "", parseObject(kWhat, json));
  checkSchema(kWhat, doc, "shoal.peers/v1");
  PeerSet set;
  set.networkId = doc.string("network_id");
  checkId(kWhat, "network_id", set.networkId);
  const Array::Ptr peers = doc.array("peers");
  std::set<uint32_t> addresses;
  std::set<MacAddress> macs;
  for (std::size_t i = 0; i < peers->size(); ++i) {
    const Fields p = doc.element(*peers, i, "peers");
    Peer peer;
    peer.address = p.ipv4("address");
    peer.mac = p.mac("mac");
    peer.nodeAddr = p.ipv4("node_addr");
    if (peer.nodeAddr == 0) invalid(kWhat, p.field("node_addr") + " must not be 0.0.0.0");
    if (!addresses.insert(peer.address).second) {
      invalid(kWhat,
              p.field("address") + " " + quoted(formatIpv4(peer.address)) + " is listed twice");
    }
    if (!macs.insert(peer.mac).second) {
      invalid(kWhat, p.field("mac") + " " + quoted(peer.mac.str()) + " is listed twice");
    }
    set.peers.push_back(peer);
  }
  if (doc.has("tunnel")) {
    const Fields t(kWhat, "tunnel", doc.object("tunnel"));
    TunnelSpec tunnel;
    const auto key = [&](const Fields& f, const std::string& name, WireguardKey* out) {
      const std::string text = f.string(name);
      if (!parseWireguardKey(text, out)) {
        invalid(kWhat, f.field(name) + " is not a WireGuard key (base64 of 32 bytes)");
      }
    };
    key(t, "private_key", &tunnel.privateKey);
    const Cidr self = t.cidr("address");
    if (self.prefix < 8 || self.prefix > 30) {
      invalid(kWhat, t.field("address") + " must have a prefix from /8 to /30");
    }
    tunnel.address = self.address;
    tunnel.prefix = self.prefix;
    const Array::Ptr nodes = t.array("nodes");
    std::set<uint32_t> tunnelAddresses{tunnel.address};
    for (std::size_t i = 0; i < nodes->size(); ++i) {
      const Fields n = t.element(*nodes, i, "nodes");
      TunnelSpec::Node node;
      key(n, "public_key", &node.publicKey);
      node.address = n.ipv4("address");
      const uint32_t nodeAddr = n.ipv4("node_addr");
      if (!self.contains(node.address)) {
        invalid(kWhat, n.field("address") + " " + quoted(formatIpv4(node.address)) +
                           " is not in the tunnel subnet " +
                           Cidr{self.network(), self.prefix}.str());
      }
      if (!tunnelAddresses.insert(node.address).second) {
        invalid(kWhat,
                n.field("address") + " " + quoted(formatIpv4(node.address)) + " is listed twice");
      }
      if (!tunnel.nodes.emplace(nodeAddr, node).second) {
        invalid(kWhat,
                n.field("node_addr") + " " + quoted(formatIpv4(nodeAddr)) + " is listed twice");
      }
    }
    set.tunnel = std::move(tunnel);
  }
  return set;
}

}  // namespace shoal::overlay::dataplane
