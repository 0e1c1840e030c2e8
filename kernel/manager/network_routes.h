#pragma once

#include <cstdint>
#include <string>

#include "kernel/api/router.h"
#include "kernel/manager/swarm.h"
#include "kernel/store/read_view.h"

namespace shoal::manager {

// The networks control API (managers only; writes go through Raft, addresses come from the
// leader's allocator):
//   POST /networks/create {"Name", "Driver": "overlay", "IPAM": {"Configs": [{"Subnet",
//        "Gateway"}]}, "Attachable", "Internal", "Options": {...}, "Labels": {...}}
//        -> {"ID"} once the allocator has given it a subnet (waits up to 10 s); an
//        allocation the plugin refuses (an overlapping subnet, an exhausted pool) removes the
//        network again and is the error.
//   GET  /networks                      -> {"networks": [Network objects]}
//   GET  /networks/inspect?id=REF       -> the Network object, with "Services": {id: name}
//   POST /networks/remove?id=REF        -> {} (refused while a service or task uses it)
//   POST /networks/prune                -> {"NetworksDeleted": [names]}
void addNetworkRoutes(api::Router& router, Swarm& swarm);

// The ingress network's spec, as `swarm init` creates it (Docker's 10.0.0.0/24).
std::string ingressNetworkSpec();

// Rewrites a service spec's TaskTemplate.Networks targets from names (or id prefixes) to
// network ids, refusing unknown networks, the ingress network and duplicates.
Status resolveServiceNetworks(const store::ReadView& v, std::string& specJson);

// Docker's range for ports the routing mesh picks itself.
inline constexpr int64_t kAutoPortFirst = 30000;
inline constexpr int64_t kAutoPortLast = 32767;

// The ingress-mode ports of a service spec being created or updated (`serviceId`; "" for a new
// one). A port the routing mesh routes answers on every node, so one service at most may
// publish it: a published port another service has is refused (ALREADY_EXISTS, naming that
// service). A port that names no published number gets one of its own: the port the previous
// spec (an update's; "" for a new service) published for the same target and protocol if that
// is still free, else the lowest free one in kAutoPortFirst..kAutoPortLast (free: published by
// no other service, nor by another port of this one); RESOURCE_EXHAUSTED when none is. The
// chosen ports are written into the spec, so `service inspect` and `service ls` show them.
// Host-mode ports must name their published number (INVALID_ARGUMENT otherwise), and a port
// may not be both another service's ingress port and this one's host-mode port, or the other
// way round (ALREADY_EXISTS); host-mode ports of different services may share a number (the
// scheduler keeps their tasks on different nodes).
Status publishPorts(const store::ReadView& v, std::string& specJson, const std::string& serviceId,
                    const std::string& previousSpecJson);

}  // namespace shoal::manager
