// The node side's documents (network.h): attachments ("shoal.attach/v1") and peer sets
// ("shoal.peers/v1"), parsed and checked before anything touches the node, plus the address
// types they carry.
//
// ERRORS: every parse function throws shoal::sdk::Error(SHOAL_EINVAL) with a message that names
// the offending field ("attach: endpoints[0].mac \"xx\" is not a MAC address"), or
// SHOAL_ENOTSUP for a network option this node cannot honour.
// THREAD: pure functions; any thread.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/tunnel.hpp"

namespace shoal::overlay::dataplane {

// An Ethernet address.
struct MacAddress {
  std::array<uint8_t, 6> bytes{};
  std::string str() const;  // "02:42:0a:00:01:05"
  bool operator==(const MacAddress& o) const { return bytes == o.bytes; }
  bool operator<(const MacAddress& o) const { return bytes < o.bytes; }
};

// An IPv4 address (host byte order) with a prefix length: "10.0.1.5/24". The address may have
// host bits (an interface address) or not (a subnet).
struct Cidr {
  uint32_t address = 0;
  int prefix = 0;
  uint32_t mask() const { return prefix == 0 ? 0 : ~uint32_t(0) << (32 - prefix); }
  uint32_t network() const { return address & mask(); }
  bool contains(uint32_t a) const { return (a & mask()) == network(); }
  std::string str() const;
};

// "aa:bb:cc:dd:ee:ff" (hex digits of either case, exactly six groups of two).
bool parseMac(std::string_view text, MacAddress* out);
// A dotted quad of four decimal numbers 0..255, no leading zeros beyond a single "0".
bool parseIpv4(std::string_view text, uint32_t* out);
// "a.b.c.d/n" with n in 0..32.
bool parseCidr(std::string_view text, Cidr* out);
std::string formatIpv4(uint32_t address);

// A task or network id usable as a file name under netns_dir: 1..128 characters of
// [A-Za-z0-9_.-], starting with a letter or digit, without "..", not starting with "sb-" (the
// sandboxes' files) and not ending in ".json" or ".tmp" (the state files). `field` names it in
// the error.
void checkId(std::string_view what, std::string_view field, std::string_view id);

struct NetworkSpec {
  std::string id;
  std::string name;
  Cidr subnet;  // network address and prefix
  uint32_t gateway = 0;
  uint32_t vni = 0;
  bool encrypted = false;  // options.encrypted: carried between nodes by the tunnel only
};

struct EndpointSpec {
  std::string networkId;
  Cidr address;  // the task's address and the subnet's prefix
  MacAddress mac;
};

// An attachment: the task's endpoints in order (eth0, eth1, ...) and the networks they are on
// (networks[i] is endpoints[i]'s network; networks without an endpoint are dropped).
// A port of this node published to the task in host mode (host_ports.hpp): {"protocol":
// "tcp"|"udp"|"sctp" (default tcp), "published": 1..65535, "target": 1..65535}.
struct HostPort {
  std::string protocol = "tcp";
  uint16_t published = 0;
  uint16_t target = 0;
  bool operator==(const HostPort& o) const {
    return protocol == o.protocol && published == o.published && target == o.target;
  }
};

struct AttachRequest {
  std::string taskId;
  uint32_t nodeAddr = 0;  // this node's underlay address: the VXLAN local address
  std::vector<EndpointSpec> endpoints;
  std::vector<NetworkSpec> networks;
  std::vector<HostPort> hostPorts;  // "host_ports", optional; no protocol/published twice
};

// `json` must be a "shoal.attach/v1" document whose "task_id" equals `taskId`. Each endpoint
// names a network of "networks" (at most one endpoint per network), its address lies in that
// subnet with the subnet's prefix, and its MAC is a unicast one; each network has a subnet
// without host bits, a gateway inside it, and a vni in 1..16777215. A task with host_ports may
// have no endpoint at all.
AttachRequest parseAttach(std::string_view taskId, std::string_view json);

struct Peer {
  uint32_t address = 0;  // the remote endpoint's overlay address
  MacAddress mac;
  uint32_t nodeAddr = 0;  // the underlay address of the node it runs on
};

struct PeerSet {
  std::string networkId;
  std::vector<Peer> peers;  // no two with the same address or the same MAC
  // For an encrypted network: this node's tunnel key and address and the other nodes' ends
  // (one tunnel serves every encrypted network; the latest set sent wins).
  std::optional<TunnelSpec> tunnel;
};

// `json` must be a "shoal.peers/v1" document. Its optional "tunnel" is {"private_key": base64
// key, "address": "169.254.64.3/18" (this node's), "nodes": [{"node_addr", "public_key",
// "address"}]}: node addresses and tunnel addresses unique, the latter inside the subnet.
PeerSet parsePeers(std::string_view json);

}  // namespace shoal::overlay::dataplane
