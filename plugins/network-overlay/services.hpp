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
#include <string>
#include <string_view>
#include <vector>

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

struct Service {
  std::string id;
  std::string name;
  EndpointMode mode = EndpointMode::kVip;
  std::vector<ServiceVip> vips;  // at most one per network
  // The published ports, each entry's JSON text as sent: nothing reads them yet (the nftables
  // load balancer and the routing mesh will).
  std::vector<std::string> portsJson;
  std::vector<ServiceBackend> backends;
};

// The full set of services for this node; each update replaces the previous one.
struct ServiceSet {
  std::vector<Service> services;  // in document order, ids unique
};

// `json` must be a "shoal.services/v1" document: {"schema", "services": [{"id", "name",
// "endpoint_mode": "vip"|"dnsrr" (default "vip"), "vips": [{"network_id", "address"}],
// "ports": [{...}], "backends": [{"network_id", "address", "task_id", "task_name", "aliases"}]}]}.
// Ids are checked as attach checks them (dataplane::checkId), addresses are IPv4 dotted quads
// without a prefix, names and aliases non-empty strings; service ids are unique, and a service
// has at most one VIP per network.
ServiceSet parseServices(std::string_view json);

// The embedded DNS's records, per network of each service: in vip mode the name and each alias
// -> the VIP on that network (or, without a VIP there, the addresses of the backends there; for
// an alias, of the backends that carry it); in dnsrr mode the name -> the backends' addresses
// and an alias -> those of the backends carrying it; always "tasks.<name>" -> the backends'
// addresses there; and each task name -> its address. Addresses keep document order, without
// repeats. A name may come out of several records of one network (the table merges them).
std::vector<dns::Record> dnsRecords(const ServiceSet& set);

}  // namespace shoal::overlay
