/*
 * Network plugins (SHOAL_KIND_NETWORK): networks, addresses, task attachments, load balancing.
 *
 * A network plugin has two halves, called in different places:
 *  - manager side (the allocator, on the leader): allocate networks (subnet, gateway, VNI),
 *    task addresses and service VIPs. Allocation state lives in the cluster store: the
 *    allocator replays every existing allocation with restore() at leader start-up, so no
 *    address is ever handed out twice across leader changes.
 *  - node side (the agent): build what a node's tasks need (sandboxes, bridges, tunnels),
 *    attach and detach task network namespaces, and follow cluster state: remote endpoints
 *    (peers) and service endpoints (VIPs, published ports).
 *
 * Documents (JSON):
 *  - network, schema "shoal.network/v1": {"schema", "id", "name", "driver", "options": {...},
 *    "ipam": {"subnet", "gateway"}, "labels", "attachable", "ingress": bool}
 *  - allocation result, schema "shoal.network-alloc/v1": {"schema", "id", "subnet", "gateway",
 *    "vni", "options": {...}}
 *  - endpoint request, schema "shoal.endpoint-req/v1": {"schema", "kind": "task"|"vip",
 *    "owner": "<task or service id>", "network_id", "address": "" (or a requested address)}
 *  - endpoint allocation, schema "shoal.endpoint/v1": {"schema", "owner", "network_id",
 *    "address": "10.0.1.5/24", "mac"}
 *  - attachment, schema "shoal.attach/v1": {"schema", "task_id", "endpoints": [endpoint...],
 *    "networks": [network...], "aliases": [...], "dns": {...}, "host_ports": [{"protocol",
 *    "published", "target"}] (optional: ports of this node published to this task in host
 *    mode; such a task may have no endpoint)}; result: {"netns": "/run/..."}
 *  - peers, schema "shoal.peers/v1": {"schema", "network_id", "peers": [{"address", "mac",
 *    "node_addr"}]} (the full set for that network on this node; replaces the previous set).
 *    For a network whose options hold "encrypted", also "tunnel": {"private_key" (this node's
 *    WireGuard key, base64), "address": "169.254.64.3/18" (this node's tunnel address),
 *    "nodes": [{"node_addr", "public_key", "address"}]} (every other node's end), keys
 *    replaced by the managers on a schedule; a plugin that cannot carry the network
 *    encrypted must refuse it (allocation and attach), never carry it in plaintext.
 *  - services, schema "shoal.services/v1": {"schema", "services": [{"id", "name", "vips":
 *    [...], "endpoint_mode", "ports": [...], "backends": [{"network_id", "address"}]}]}
 *    (the full set; the plugin applies the difference atomically)
 *
 * THREAD: calls are serialised per instance (plugin.h).
 */
#ifndef SHOAL_NETWORK_H
#define SHOAL_NETWORK_H

#include "shoal/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct shoal_network_ops {
  uint32_t struct_size;
  uint32_t reserved; /* zero */

  /* Capabilities of this node and plugin: {"drivers": [...], "encryption": [...],
   * "load_balancer": "nftables"|"ipvs", "mtu": int}. *out: host->alloc, freed by the host. */
  shoal_status (*describe)(void* state, shoal_buf* out);

  /* ---- manager side ---- */

  /* Replay existing allocations (a JSON array of allocation results and endpoint allocations)
   * before any allocate call; the plugin must then never hand those out again. */
  shoal_status (*restore)(void* state, shoal_str allocations_json);
  /* Allocate a network (subnet, gateway, VNI). *out: allocation result. */
  shoal_status (*network_allocate)(void* state, shoal_str network_json, shoal_buf* out);
  shoal_status (*network_release)(void* state, shoal_str network_id);
  /* Allocate one endpoint address (a task's address or a service VIP). *out: endpoint. */
  shoal_status (*endpoint_allocate)(void* state, shoal_str request_json, shoal_buf* out);
  shoal_status (*endpoint_release)(void* state, shoal_str endpoint_json);

  /* ---- node side ---- */

  /* Create the task's network namespace and connect it to its networks (building a network's
   * sandbox on first use). Asynchronous (plugin.h); completion result: attachment result. */
  shoal_status (*attach)(void* state, uint64_t op, shoal_str task_id, shoal_str attach_json);
  /* Disconnect and delete the task's namespace; tear a network's sandbox down when its last
   * task left. Idempotent. Asynchronous (plugin.h). */
  shoal_status (*detach)(void* state, uint64_t op, shoal_str task_id);
  /* Replace the set of remote endpoints of one network on this node. */
  shoal_status (*update_peers)(void* state, shoal_str peers_json);
  /* Replace the set of service endpoints (VIPs, backends, published ports) on this node. */
  shoal_status (*update_services)(void* state, shoal_str services_json);
} shoal_network_ops;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHOAL_NETWORK_H */
