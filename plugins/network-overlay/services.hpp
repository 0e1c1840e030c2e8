// The service endpoints of this node (network.h's "shoal.services/v1", sent by update_services):
// each service's VIPs and running tasks on the networks this node's tasks use. Parsed and
// checked here, then turned into the embedded DNS's name table (dns/); the nftables VIP load
// balancer will read the same structure.
//
// ERRORS: parseServices throws shoal::sdk::Error(SHOAL_EINVAL) naming the offending field
// ("update_services: services[0].backends[1].address \"x\" is not an IPv4 address").
// THREAD: pure functions; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/documents.hpp"
#include "dns/names.hpp"

namespace shoal::overlay {

enum class EndpointMode {
  kVip,    // the name resolves to the service's VIP on each network
  kDnsrr,  // the name resolves to the tasks' addresses (DNS round robin)
};

// The service's virtual IP on one network.
struct ServiceVip {
  std::string networkId;
  uint32_t address = 0;  // IPv4, host byte order
};

// One running task of the service on one network (a task on two networks is two backends).
struct ServiceBackend {
  std::string networkId;
  uint32_t address = 0;  // IPv4, host byte order
  std::string taskId;
  std::string taskName;              // "web.1.<task id>"; "" when not given
  std::vector<std::string> aliases;  // the task's network aliases on that network
};

enum class PortProtocol { kTcp, kUdp, kSctp };
enum class PublishMode {
  kIngress,  // every node answers on the port (the routing mesh, mesh/)
  kHost,     // only nodes running a task: mapped at attach (dataplane/host_ports.hpp), not here
};

// One published port: {"protocol": "tcp"|"udp"|"sctp" (default "tcp"), "published": 1..65535
// (0 or absent allowed in host mode only), "target": 1..65535, "mode": "ingress"|"host"
// (default "ingress")}.
struct ServicePort {
  PortProtocol protocol = PortProtocol::kTcp;
  uint16_t published = 0;
  uint16_t target = 0;
  PublishMode mode = PublishMode::kIngress;
};

struct Service {
  std::string id;
  std::string name;
  EndpointMode mode = EndpointMode::kVip;
  std::vector<ServiceVip> vips;    // at most one per network
  std::vector<ServicePort> ports;  // in document order
  std::vector<ServiceBackend> backends;
};

// This node's own endpoint on the ingress network (the top-level "ingress" member): what the
// routing mesh's sandbox ("ingress-sbox") is attached with.
struct IngressEndpoint {
  dataplane::NetworkSpec network;
  dataplane::Cidr address;  // in network.subnet, with its prefix
  dataplane::MacAddress mac;
  uint32_t nodeAddr = 0;  // this node's underlay address
  bool operator==(const IngressEndpoint& o) const {
    return network.id == o.network.id && network.subnet.address == o.network.subnet.address &&
           network.subnet.prefix == o.network.subnet.prefix &&
           network.gateway == o.network.gateway && network.vni == o.network.vni &&
           address.address == o.address.address && address.prefix == o.address.prefix &&
           mac == o.mac && nodeAddr == o.nodeAddr;
  }
};

// The full set of services for this node; each update replaces the previous one.
struct ServiceSet {
  std::vector<Service> services;           // in document order, ids unique
  std::optional<IngressEndpoint> ingress;  // absent: the cluster has no ingress network
};

// `json` must be a "shoal.services/v1" document: {"schema", "services": [{"id", "name",
// "endpoint_mode": "vip"|"dnsrr" (default "vip"), "vips": [{"network_id", "address"}],
// "ports": [ServicePort], "backends": [{"network_id", "address", "task_id", "task_name",
// "aliases"}]}], "ingress": {"network": {"id", "name", "subnet", "gateway", "vni", "options"},
// "address": "10.0.0.5/24", "mac", "node_addr"} (optional)}.
// Ids are checked as attach checks them (dataplane::checkId), addresses are IPv4 dotted quads
// without a prefix, names and aliases non-empty strings; service ids are unique, and a service
// has at most one VIP per network; no two ingress-mode ports of the set share a protocol and
// published port; the ingress endpoint is checked as attach checks an endpoint and its network.
ServiceSet parseServices(std::string_view json);

// The embedded DNS's records, per network of each service: in vip mode the name and each alias
// -> the VIP on that network (or, without a VIP there, the addresses of the backends there; for
// an alias, of the backends that carry it); in dnsrr mode the name -> the backends' addresses
// and an alias -> those of the backends carrying it; always "tasks.<name>" -> the backends'
// addresses there; and each task name -> its address. Addresses keep document order, without
// repeats. A name may come out of several records of one network (the table merges them).
std::vector<dns::Record> dnsRecords(const ServiceSet& set);

}  // namespace shoal::overlay
