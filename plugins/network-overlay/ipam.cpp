#include "ipam.hpp"

#include <shoal/plugin.hpp>
#include <shoal_plugins/json.hpp>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <cstdio>
#include <exception>

namespace shoal::overlay {
namespace {

using shoal::sdk::Error;
using JObject = Poco::JSON::Object;

constexpr char kName[] = "network-overlay";
// Docker's default address pool: 10.0.0.0/8 carved into /24s.
constexpr uint32_t kPoolBase = 10u << 24;
constexpr int kPoolPrefix = 8;
constexpr int kPoolSubnetPrefix = 24;
// Docker's overlay driver hands out VXLAN ids from 4096 (below are left to other uses).
constexpr uint32_t kFirstVni = 4096;
constexpr uint32_t kMaxVni = (1u << 24) - 1;

[[noreturn]] void fail(shoal_status code, const std::string& message) {
  throw Error(code, std::string(kName) + ": " + message);
}

JObject::Ptr parseObject(const std::string& json, const char* what) {
  try {
    auto v = Poco::JSON::Parser().parse(json);
    if (auto o = v.extract<JObject::Ptr>()) return o;
  } catch (const std::exception& e) {
    fail(SHOAL_EINVAL, std::string(what) + " is not a JSON object: " + e.what());
  }
  fail(SHOAL_EINVAL, std::string(what) + " is not a JSON object");
}

std::string stringField(const JObject::Ptr& o, const std::string& key, const char* what,
                        bool required) {
  if (!o->has(key)) {
    if (required) fail(SHOAL_EINVAL, std::string(what) + " has no \"" + key + "\"");
    return "";
  }
  const auto& v = o->get(key);
  if (!v.isString()) fail(SHOAL_EINVAL, std::string(what) + ": \"" + key + "\" must be a string");
  return v.convert<std::string>();
}

// "10.0.1.5/24" or "10.0.1.5" → the address.
uint32_t addressOf(const std::string& text, const char* what) {
  const std::string bare = text.substr(0, text.find('/'));
  uint32_t a = 0;
  if (!parseAddress(bare, &a)) {
    fail(SHOAL_EINVAL, std::string(what) + ": \"" + text + "\" is not an IPv4 address");
  }
  return a;
}

}  // namespace

bool parseAddress(const std::string& text, uint32_t* out) {
  uint32_t value = 0;
  int parts = 0;
  std::size_t i = 0;
  while (parts < 4) {
    if (i >= text.size() || text[i] < '0' || text[i] > '9') return false;
    uint32_t part = 0;
    std::size_t digits = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      part = part * 10 + static_cast<uint32_t>(text[i] - '0');
      if (++digits > 3 || part > 255) return false;
      ++i;
    }
    if (digits > 1 && text[i - digits] == '0') return false;  // no octal-looking parts
    value = (value << 8) | part;
    ++parts;
    if (parts < 4) {
      if (i >= text.size() || text[i] != '.') return false;
      ++i;
    }
  }
  if (i != text.size()) return false;
  *out = value;
  return true;
}

bool parseSubnet(const std::string& text, Subnet* out, std::string* error) {
  const auto slash = text.find('/');
  uint32_t base = 0;
  if (slash == std::string::npos || !parseAddress(text.substr(0, slash), &base)) {
    *error = "\"" + text + "\" is not an IPv4 subnet in CIDR form (like 10.0.9.0/24)";
    return false;
  }
  const std::string bits = text.substr(slash + 1);
  if (bits.empty() || bits.size() > 2 ||
      bits.find_first_not_of("0123456789") != std::string::npos) {
    *error = "\"" + text + "\" has no prefix length from 0 to 32";
    return false;
  }
  const int prefix = std::stoi(bits);
  if (prefix > 32) {
    *error = "\"" + text + "\" has no prefix length from 0 to 32";
    return false;
  }
  Subnet s{base, prefix};
  if ((base & (s.size() - 1)) != 0 && prefix != 0) {
    *error = "\"" + text + "\" has host bits set (the subnet is " +
             formatSubnet(Subnet{base & ~(s.size() - 1), prefix}) + ")";
    return false;
  }
  if (prefix > 30) {
    *error = "subnet " + text + " is too small: an overlay needs at least a /30";
    return false;
  }
  *out = s;
  return true;
}

std::string formatAddress(uint32_t a) {
  return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." +
         std::to_string((a >> 8) & 255) + "." + std::to_string(a & 255);
}

std::string formatSubnet(const Subnet& s) {
  return formatAddress(s.base) + "/" + std::to_string(s.prefix);
}

std::string macFor(uint32_t a) {
  char text[18];
  std::snprintf(text, sizeof text, "02:42:%02x:%02x:%02x:%02x", a >> 24, (a >> 16) & 255,
                (a >> 8) & 255, a & 255);
  return text;
}

Ipam::Network& Ipam::adopt(const std::string& id, const Subnet& subnet, uint32_t gateway,
                           uint32_t vni) {
  Network& n = networks_[id];
  n.id = id;
  n.subnet = subnet;
  n.gateway = gateway;
  n.vni = vni;
  n.next = subnet.base + 1;
  vnis_.insert(vni);
  if (auto it = orphans_.find(id); it != orphans_.end()) {
    n.used.insert(it->second.begin(), it->second.end());
    orphans_.erase(it);
  }
  return n;
}

bool Ipam::subnetFree(const Subnet& s, const std::string& except) const {
  for (const auto& [id, n] : networks_) {
    if (id != except && n.subnet.overlaps(s)) return false;
  }
  return true;
}

void Ipam::restore(const std::string& json) {
  Poco::JSON::Array::Ptr items;
  try {
    items = Poco::JSON::Parser().parse(json).extract<Poco::JSON::Array::Ptr>();
  } catch (const std::exception& e) {
    fail(SHOAL_EINVAL, std::string("restore: the allocations are not a JSON array: ") + e.what());
  }
  if (!items) fail(SHOAL_EINVAL, "restore: the allocations are not a JSON array");
  networks_.clear();
  vnis_.clear();
  orphans_.clear();
  for (std::size_t i = 0; i < items->size(); ++i) {
    auto o = items->getObject(static_cast<unsigned>(i));
    const std::string what = "restore: item " + std::to_string(i);
    if (!o) fail(SHOAL_EINVAL, what + " is not an object");
    const std::string schema = stringField(o, "schema", what.c_str(), true);
    if (schema == "shoal.network-alloc/v1") {
      const std::string id = stringField(o, "id", what.c_str(), true);
      Subnet s;
      std::string error;
      if (!parseSubnet(stringField(o, "subnet", what.c_str(), true), &s, &error)) {
        fail(SHOAL_EINVAL, what + ": " + error);
      }
      const uint32_t gw = addressOf(stringField(o, "gateway", what.c_str(), true), what.c_str());
      const auto vni = o->optValue<Poco::Int64>("vni", 0);
      if (vni < 1 || vni > kMaxVni) fail(SHOAL_EINVAL, what + ": \"vni\" out of range");
      adopt(id, s, gw, static_cast<uint32_t>(vni));
    } else if (schema == "shoal.endpoint/v1") {
      const std::string network = stringField(o, "network_id", what.c_str(), true);
      const uint32_t a = addressOf(stringField(o, "address", what.c_str(), true), what.c_str());
      const std::string owner = stringField(o, "owner", what.c_str(), false);
      if (auto it = networks_.find(network); it != networks_.end()) {
        it->second.used[a] = owner;
      } else {
        orphans_[network][a] = owner;
      }
    } else {
      fail(SHOAL_EINVAL, what + ": unknown schema \"" + schema + "\"");
    }
  }
}

std::string Ipam::allocateNetwork(const std::string& json) {
  auto doc = parseObject(json, "the network document");
  const std::string id = stringField(doc, "id", "the network document", true);
  const std::string name = stringField(doc, "name", "the network document", false);
  const std::string driver = stringField(doc, "driver", "the network document", false);
  if (!driver.empty() && driver != "overlay") {
    fail(SHOAL_EINVAL, "network " + name + ": driver \"" + driver +
                           "\" is not one this plugin provides (overlay)");
  }
  auto options = doc->getObject("options");
  JObject::Ptr result = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
  auto answer = [&](const Network& n) {
    result->set("schema", std::string("shoal.network-alloc/v1"));
    result->set("id", n.id);
    result->set("subnet", formatSubnet(n.subnet));
    result->set("gateway", formatAddress(n.gateway));
    result->set("vni", static_cast<Poco::Int64>(n.vni));
    result->set("options", options ? options : JObject::Ptr(new JObject));
    return shoal::plugins::toJson(*result);
  };
  if (auto it = networks_.find(id); it != networks_.end()) return answer(it->second);

  auto ipam = doc->getObject("ipam");
  const std::string wantSubnet = ipam ? stringField(ipam, "subnet", "ipam", false) : "";
  const std::string wantGateway = ipam ? stringField(ipam, "gateway", "ipam", false) : "";
  Subnet subnet;
  if (!wantSubnet.empty()) {
    std::string error;
    if (!parseSubnet(wantSubnet, &subnet, &error))
      fail(SHOAL_EINVAL, "network " + name + ": " + error);
    for (const auto& [other, n] : networks_) {
      if (n.subnet.overlaps(subnet)) {
        fail(SHOAL_EEXIST, "network " + name + ": subnet " + wantSubnet + " overlaps the subnet " +
                               formatSubnet(n.subnet) + " of network " + other);
      }
    }
  } else {
    if (!wantGateway.empty()) {
      fail(SHOAL_EINVAL, "network " + name + ": a gateway needs a subnet (--subnet)");
    }
    const Subnet pool{kPoolBase, kPoolPrefix};
    const uint32_t step = 1u << (32 - kPoolSubnetPrefix);
    bool found = false;
    for (uint64_t b = pool.base; b + step - 1 <= pool.last(); b += step) {
      const Subnet candidate{static_cast<uint32_t>(b), kPoolSubnetPrefix};
      if (subnetFree(candidate, "")) {
        subnet = candidate;
        found = true;
        break;
      }
    }
    if (!found) {
      fail(SHOAL_ENOSPC,
           "network " + name + ": the default address pool 10.0.0.0/8 has no free /24 left");
    }
  }
  uint32_t gateway = subnet.base + 1;
  if (!wantGateway.empty()) {
    if (!parseAddress(wantGateway, &gateway)) {
      fail(SHOAL_EINVAL,
           "network " + name + ": gateway \"" + wantGateway + "\" is not an IPv4 address");
    }
    if (!subnet.contains(gateway) || gateway == subnet.base || gateway == subnet.last()) {
      fail(SHOAL_EINVAL, "network " + name + ": gateway " + wantGateway +
                             " is not a host address of subnet " + formatSubnet(subnet));
    }
  }
  uint32_t vni = kFirstVni;
  while (vnis_.count(vni) != 0 && vni < kMaxVni) ++vni;
  if (vnis_.count(vni) != 0) fail(SHOAL_ENOSPC, "no VXLAN network id is left");
  Network& n = adopt(id, subnet, gateway, vni);
  return answer(n);
}

void Ipam::releaseNetwork(const std::string& id) {
  auto it = networks_.find(id);
  if (it == networks_.end()) return;
  vnis_.erase(it->second.vni);
  networks_.erase(it);
}

std::string Ipam::allocateEndpoint(const std::string& json) {
  auto req = parseObject(json, "the endpoint request");
  const std::string network = stringField(req, "network_id", "the endpoint request", true);
  const std::string owner = stringField(req, "owner", "the endpoint request", true);
  const std::string want = stringField(req, "address", "the endpoint request", false);
  auto it = networks_.find(network);
  if (it == networks_.end()) fail(SHOAL_ENOENT, "network " + network + " is not allocated");
  Network& n = it->second;
  const uint32_t first = n.subnet.base + 1;
  const uint32_t last = n.subnet.last() - 1;  // the broadcast address is never given
  auto usable = [&](uint32_t a) { return a >= first && a <= last && a != n.gateway; };
  uint32_t address = 0;
  for (const auto& [a, o] : n.used) {
    if (o == owner && !owner.empty()) address = a;
  }
  if (address == 0 && !want.empty()) {
    const uint32_t a = addressOf(want, "the endpoint request");
    if (!usable(a)) {
      fail(SHOAL_EINVAL,
           "address " + want + " is not a free host address of subnet " + formatSubnet(n.subnet));
    }
    if (auto u = n.used.find(a); u != n.used.end()) {
      fail(SHOAL_EEXIST, "address " + want + " is already in use");
    }
    address = a;
  }
  if (address == 0) {
    const uint64_t hosts = static_cast<uint64_t>(last) - first + 1;
    uint32_t a = usable(n.next) ? n.next : first;
    for (uint64_t tried = 0; tried < hosts; ++tried) {
      if (usable(a) && n.used.count(a) == 0) {
        address = a;
        break;
      }
      a = a >= last ? first : a + 1;
    }
    if (address == 0) {
      fail(SHOAL_ENOSPC, "network " + network + ": subnet " + formatSubnet(n.subnet) +
                             " has no free address left");
    }
    // The next search starts after this one, so a released address is not reused at once
    // (a stale ARP or conntrack entry elsewhere then meets nobody).
    n.next = address >= last ? first : address + 1;
  }
  n.used[address] = owner;
  JObject out(Poco::JSON_PRESERVE_KEY_ORDER);
  out.set("schema", std::string("shoal.endpoint/v1"));
  out.set("owner", owner);
  out.set("network_id", network);
  out.set("address", formatAddress(address) + "/" + std::to_string(n.subnet.prefix));
  out.set("mac", macFor(address));
  return shoal::plugins::toJson(out);
}

void Ipam::releaseEndpoint(const std::string& json) {
  auto doc = parseObject(json, "the endpoint");
  const std::string network = stringField(doc, "network_id", "the endpoint", true);
  const uint32_t a = addressOf(stringField(doc, "address", "the endpoint", true), "the endpoint");
  if (auto it = networks_.find(network); it != networks_.end()) it->second.used.erase(a);
}

}  // namespace shoal::overlay
