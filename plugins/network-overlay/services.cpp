#include "services.hpp"

#include <shoal/plugin.h>
#include <shoal/plugin.hpp>

#include <Poco/Dynamic/Var.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <set>
#include <typeinfo>
#include <utility>

#include "dataplane/documents.hpp"

namespace shoal::overlay {
namespace {

using Poco::JSON::Array;
using Poco::JSON::Object;

constexpr std::string_view kWhat = "update_services";

[[noreturn]] void invalid(const std::string& message) {
  throw sdk::Error(SHOAL_EINVAL, std::string(kWhat) + ": " + message);
}

std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += static_cast<unsigned char>(c) < 0x20 ? '?' : c;
  }
  return out + "\"";
}

// Typed access to one JSON object's members, naming `path` ("services[0]") in errors.
class Fields {
 public:
  Fields(std::string path, Object::Ptr obj) : path_(std::move(path)), obj_(std::move(obj)) {}

  std::string field(const std::string& key) const {
    return path_.empty() ? key : path_ + "." + key;
  }
  bool has(const std::string& key) const { return obj_->has(key) && !obj_->get(key).isEmpty(); }

  std::string string(const std::string& key, bool required = true) const {
    if (!has(key)) {
      if (required) invalid(field(key) + " is required");
      return {};
    }
    const Poco::Dynamic::Var& v = obj_->get(key);
    if (!v.isString()) invalid(field(key) + " must be a string");
    std::string s = v.extract<std::string>();
    if (s.find('\0') != std::string::npos) invalid(field(key) + " must not contain NUL");
    return s;
  }

  std::string nonEmpty(const std::string& key) const {
    std::string s = string(key);
    if (s.empty()) invalid(field(key) + " must not be empty");
    return s;
  }

  std::string id(const std::string& key) const {
    std::string s = string(key);
    dataplane::checkId(kWhat, field(key), s);
    return s;
  }

  uint32_t ipv4(const std::string& key) const {
    const std::string text = string(key);
    uint32_t a = 0;
    if (!dataplane::parseIpv4(text, &a) || a == 0) {
      invalid(field(key) + " " + quoted(text) + " is not an IPv4 address");
    }
    return a;
  }

  Array::Ptr array(const std::string& key, bool required = true) const {
    if (!has(key)) {
      if (required) invalid(field(key) + " is required");
      return new Array;
    }
    const Poco::Dynamic::Var& v = obj_->get(key);
    if (v.type() != typeid(Array::Ptr)) invalid(field(key) + " must be an array");
    return v.extract<Array::Ptr>();
  }

  int64_t integer(const std::string& key) const {
    if (!has(key)) invalid(field(key) + " is required");
    const Poco::Dynamic::Var& v = obj_->get(key);
    // Poco counts booleans as integers; these fields are numbers.
    if (!v.isInteger() || v.isBoolean()) invalid(field(key) + " must be an integer");
    try {
      return v.convert<Poco::Int64>();
    } catch (const Poco::Exception&) {
      invalid(field(key) + " is out of range");
    }
  }

  dataplane::Cidr cidr(const std::string& key) const {
    const std::string text = string(key);
    dataplane::Cidr c;
    if (!dataplane::parseCidr(text, &c)) {
      invalid(field(key) + " " + quoted(text) + " is not an IPv4 CIDR (a.b.c.d/n)");
    }
    return c;
  }

  dataplane::MacAddress mac(const std::string& key) const {
    const std::string text = string(key);
    dataplane::MacAddress m;
    if (!dataplane::parseMac(text, &m) || (m.bytes[0] & 1) != 0 || m == dataplane::MacAddress{}) {
      invalid(field(key) + " " + quoted(text) + " is not a unicast MAC address");
    }
    return m;
  }

  Fields child(const std::string& key) const {
    const Poco::Dynamic::Var& v = obj_->get(key);
    if (v.type() != typeid(Object::Ptr)) invalid(field(key) + " must be an object");
    return Fields(field(key), v.extract<Object::Ptr>());
  }

  std::string elementPath(const std::string& key, std::size_t i) const {
    return field(key) + "[" + std::to_string(i) + "]";
  }

  Fields element(const Array& a, std::size_t i, const std::string& key) const {
    const Poco::Dynamic::Var v = a.get(static_cast<unsigned>(i));
    if (v.type() != typeid(Object::Ptr)) invalid(elementPath(key, i) + " must be an object");
    return Fields(elementPath(key, i), v.extract<Object::Ptr>());
  }

  const Object& object() const { return *obj_; }

 private:
  std::string path_;
  Object::Ptr obj_;
};

Object::Ptr parseObject(std::string_view json) {
  Poco::Dynamic::Var parsed;
  try {
    Poco::JSON::Parser parser;
    parsed = parser.parse(std::string(json));
  } catch (const Poco::Exception& e) {
    invalid("the document is not valid JSON: " + e.displayText());
  }
  if (parsed.type() != typeid(Object::Ptr)) invalid("the document must be a JSON object");
  return parsed.extract<Object::Ptr>();
}

ServiceBackend parseBackend(const Fields& b) {
  ServiceBackend backend;
  backend.networkId = b.id("network_id");
  backend.address = b.ipv4("address");
  backend.taskId = b.id("task_id");
  backend.taskName = b.string("task_name", false);
  const Array::Ptr aliases = b.array("aliases", false);
  for (std::size_t i = 0; i < aliases->size(); ++i) {
    const Poco::Dynamic::Var& v = aliases->get(static_cast<unsigned>(i));
    const std::string path = b.elementPath("aliases", i);
    if (!v.isString()) invalid(path + " must be a string");
    std::string alias = v.extract<std::string>();
    if (alias.empty() || alias.find('\0') != std::string::npos) {
      invalid(path + " must be a non-empty name");
    }
    backend.aliases.push_back(std::move(alias));
  }
  return backend;
}

const char* protocolName(PortProtocol p) {
  return p == PortProtocol::kUdp ? "udp" : p == PortProtocol::kSctp ? "sctp" : "tcp";
}

uint16_t portNumber(const Fields& p, const std::string& key, bool zeroAllowed) {
  const int64_t n = p.integer(key);
  if (n < (zeroAllowed ? 0 : 1) || n > 65535) {
    invalid(p.field(key) + " must be from " + (zeroAllowed ? "0" : "1") + " to 65535");
  }
  return static_cast<uint16_t>(n);
}

ServicePort parsePort(const Fields& p) {
  ServicePort port;
  const std::string protocol = p.string("protocol", false);
  if (protocol.empty() || protocol == "tcp") {
    port.protocol = PortProtocol::kTcp;
  } else if (protocol == "udp") {
    port.protocol = PortProtocol::kUdp;
  } else if (protocol == "sctp") {
    port.protocol = PortProtocol::kSctp;
  } else {
    invalid(p.field("protocol") + " " + quoted(protocol) + R"( is not "tcp", "udp" or "sctp")");
  }
  const std::string mode = p.string("mode", false);
  if (mode.empty() || mode == "ingress") {
    port.mode = PublishMode::kIngress;
  } else if (mode == "host") {
    port.mode = PublishMode::kHost;
  } else {
    invalid(p.field("mode") + " " + quoted(mode) + " is not \"ingress\" or \"host\"");
  }
  port.target = portNumber(p, "target", false);
  // Host mode may leave the node's port to the runtime; the mesh needs a real one.
  if (port.mode == PublishMode::kHost && !p.has("published")) return port;
  port.published = portNumber(p, "published", port.mode == PublishMode::kHost);
  return port;
}

// The "ingress" member, checked as attach checks an endpoint and its network.
IngressEndpoint parseIngress(const Fields& in) {
  IngressEndpoint ing;
  if (!in.has("network")) invalid(in.field("network") + " is required");
  const Fields n = in.child("network");
  dataplane::NetworkSpec& net = ing.network;
  net.id = n.id("id");
  net.name = n.string("name", false);
  net.subnet = n.cidr("subnet");
  if (net.subnet.address != net.subnet.network()) {
    invalid(n.field("subnet") + " " + quoted(net.subnet.str()) + " has host bits set");
  }
  if (net.subnet.prefix < 8 || net.subnet.prefix > 30) {
    invalid(n.field("subnet") + " must have a prefix from /8 to /30");
  }
  const uint32_t broadcast = net.subnet.network() | ~net.subnet.mask();
  net.gateway = n.ipv4("gateway");
  if (!net.subnet.contains(net.gateway) || net.gateway == net.subnet.network() ||
      net.gateway == broadcast) {
    invalid(n.field("gateway") + " " + quoted(dataplane::formatIpv4(net.gateway)) +
            " is not a host address of subnet " + net.subnet.str());
  }
  const int64_t vni = n.integer("vni");
  if (vni < 1 || vni > 16777215) invalid(n.field("vni") + " must be from 1 to 16777215");
  net.vni = static_cast<uint32_t>(vni);
  if (n.has("options") && n.object().get("options").type() != typeid(Object::Ptr)) {
    invalid(n.field("options") + " must be an object");
  }
  ing.address = in.cidr("address");
  if (ing.address.prefix != net.subnet.prefix || !net.subnet.contains(ing.address.address) ||
      ing.address.address == net.subnet.network() || ing.address.address == net.gateway ||
      ing.address.address == broadcast) {
    invalid(in.field("address") + " " + quoted(ing.address.str()) +
            " is not a host address of subnet " + net.subnet.str() +
            " (other than the gateway) with its prefix");
  }
  ing.mac = in.mac("mac");
  ing.nodeAddr = in.ipv4("node_addr");
  return ing;
}

Service parseService(const Fields& s) {
  Service svc;
  svc.id = s.nonEmpty("id");
  svc.name = s.nonEmpty("name");
  const std::string mode = s.string("endpoint_mode", false);
  if (mode.empty() || mode == "vip") {
    svc.mode = EndpointMode::kVip;
  } else if (mode == "dnsrr") {
    svc.mode = EndpointMode::kDnsrr;
  } else {
    invalid(s.field("endpoint_mode") + " " + quoted(mode) + " is not \"vip\" or \"dnsrr\"");
  }
  const Array::Ptr vips = s.array("vips", false);
  for (std::size_t i = 0; i < vips->size(); ++i) {
    const Fields v = s.element(*vips, i, "vips");
    ServiceVip vip{v.id("network_id"), v.ipv4("address")};
    for (const ServiceVip& other : svc.vips) {
      if (other.networkId == vip.networkId) {
        invalid(v.field("network_id") + " " + quoted(vip.networkId) +
                ": a service has at most one VIP per network");
      }
    }
    svc.vips.push_back(std::move(vip));
  }
  const Array::Ptr ports = s.array("ports", false);
  for (std::size_t i = 0; i < ports->size(); ++i) {
    svc.ports.push_back(parsePort(s.element(*ports, i, "ports")));
  }
  const Array::Ptr backends = s.array("backends", false);
  for (std::size_t i = 0; i < backends->size(); ++i) {
    svc.backends.push_back(parseBackend(s.element(*backends, i, "backends")));
  }
  return svc;
}

void addUnique(std::vector<uint32_t>& ips, uint32_t ip) {
  if (std::find(ips.begin(), ips.end(), ip) == ips.end()) ips.push_back(ip);
}

}  // namespace

ServiceSet parseServices(std::string_view json) {
  const Fields doc("", parseObject(json));
  const std::string schema = doc.string("schema");
  if (schema != "shoal.services/v1") {
    invalid("schema " + quoted(schema) + " is not \"shoal.services/v1\"");
  }
  ServiceSet set;
  std::set<std::string> ids;
  const Array::Ptr services = doc.array("services");
  for (std::size_t i = 0; i < services->size(); ++i) {
    const Fields s = doc.element(*services, i, "services");
    Service svc = parseService(s);
    if (!ids.insert(svc.id).second) {
      invalid(s.field("id") + " " + quoted(svc.id) + " is listed twice");
    }
    set.services.push_back(std::move(svc));
  }
  // One service per published ingress port: the mesh could not tell them apart.
  std::set<std::pair<int, int>> published;
  for (std::size_t i = 0; i < set.services.size(); ++i) {
    const std::vector<ServicePort>& ports = set.services[i].ports;
    for (std::size_t j = 0; j < ports.size(); ++j) {
      if (ports[j].mode != PublishMode::kIngress) continue;
      if (!published.insert({static_cast<int>(ports[j].protocol), ports[j].published}).second) {
        invalid("services[" + std::to_string(i) + "].ports[" + std::to_string(j) + "].published " +
                std::to_string(ports[j].published) + "/" + protocolName(ports[j].protocol) +
                " is published twice");
      }
    }
  }
  if (doc.has("ingress")) set.ingress = parseIngress(doc.child("ingress"));
  return set;
}

std::vector<dns::Record> dnsRecords(const ServiceSet& set) {
  std::vector<dns::Record> records;
  for (const Service& svc : set.services) {
    // The networks this service is on here, in the order the document first names them.
    std::vector<std::string> networks;
    auto note = [&](const std::string& id) {
      if (std::find(networks.begin(), networks.end(), id) == networks.end()) {
        networks.push_back(id);
      }
    };
    for (const ServiceVip& v : svc.vips) note(v.networkId);
    for (const ServiceBackend& b : svc.backends) note(b.networkId);

    for (const std::string& net : networks) {
      const ServiceVip* vip = nullptr;
      if (svc.mode == EndpointMode::kVip) {
        for (const ServiceVip& v : svc.vips) {
          if (v.networkId == net) vip = &v;
        }
      }
      std::vector<uint32_t> taskIps;
      std::vector<std::string> aliases;  // every alias of a backend here, first seen first
      for (const ServiceBackend& b : svc.backends) {
        if (b.networkId != net) continue;
        addUnique(taskIps, b.address);
        for (const std::string& a : b.aliases) {
          if (std::find(aliases.begin(), aliases.end(), a) == aliases.end()) aliases.push_back(a);
        }
        if (!b.taskName.empty()) records.push_back({b.taskName, net, {b.address}});
      }
      records.push_back({svc.name, net, vip ? std::vector<uint32_t>{vip->address} : taskIps});
      for (const std::string& alias : aliases) {
        std::vector<uint32_t> ips;
        if (vip != nullptr) {
          ips.push_back(vip->address);
        } else {
          for (const ServiceBackend& b : svc.backends) {
            if (b.networkId == net &&
                std::find(b.aliases.begin(), b.aliases.end(), alias) != b.aliases.end()) {
              addUnique(ips, b.address);
            }
          }
        }
        records.push_back({alias, net, std::move(ips)});
      }
      records.push_back({"tasks." + svc.name, net, std::move(taskIps)});
    }
  }
  return records;
}

}  // namespace shoal::overlay
