/*
 * Scheduler plugins (SHOAL_KIND_SCHEDULER): choose nodes for pending tasks.
 *
 * The kernel's scheduler host batches the pending tasks of one service (a "group": tasks that
 * share one spec) and asks the plugin, once per batch, where they go. The shape is SwarmKit's
 * filters (filter + explain) plus Kubernetes-style scoring, and works on batches: one call
 * covers every node of the snapshot, never one call (and one parse) per node-task pair.
 *
 * Documents (JSON):
 *  - node snapshot, schema "shoal.nodes/v1": {"schema", "nodes": [{"id", "hostname", "role",
 *    "availability", "state", "platform": {"os", "arch"}, "labels": {...}, "engine_labels":
 *    {...}, "resources": {"nano_cpus", "memory_bytes"}, "reserved": {"nano_cpus",
 *    "memory_bytes"}, "tasks": int, "service_tasks": {"<service id>": int}, "host_ports":
 *    ["tcp/80", ...], "failures": {"<service id>": int}}], "cluster": {...}}
 *    Node indexes used below are positions in "nodes".
 *  - group, schema "shoal.task-group/v1": {"schema", "service_id", "service_name", "spec":
 *    {"placement": {"constraints": [...], "preferences": [...], "max_replicas": int,
 *    "platforms": [...], "policy": "name"}, "resources": {...}, "ports": [...]}, "tasks":
 *    ["<task id>", ...]}
 *
 * Handles (snapshot, group) are the plugin's; the kernel closes each one it opened.
 * THREAD: calls are serialised per instance (plugin.h).
 */
#ifndef SHOAL_SCHEDULER_H
#define SHOAL_SCHEDULER_H

#include "shoal/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct shoal_sched_snapshot shoal_sched_snapshot; /* opaque, the plugin's */
typedef struct shoal_sched_group shoal_sched_group;       /* opaque, the plugin's */

typedef struct shoal_scheduler_ops {
  uint32_t struct_size;
  uint32_t reserved; /* zero */

  /* Parse a node snapshot once per scheduling pass. On success *out_nodes is the node count
   * and *out_snap a handle for the calls below. */
  shoal_status (*snapshot_open)(void* state, shoal_str nodes_json, shoal_sched_snapshot** out_snap,
                                uint32_t* out_nodes);
  void (*snapshot_close)(void* state, shoal_sched_snapshot* snap);

  /* Parse one task group against a snapshot. */
  shoal_status (*group_open)(void* state, shoal_sched_snapshot* snap, shoal_str group_json,
                             shoal_sched_group** out_group);
  void (*group_close)(void* state, shoal_sched_group* group);

  /* Check every node for one more task of the group: out_fit[i] = 1 if node i can take it,
   * else 0. `nodes` is the snapshot's node count; out_fit has that many entries. */
  shoal_status (*filter)(void* state, shoal_sched_group* group, uint8_t* out_fit, uint32_t nodes);

  /* Score every node that fits (fit[i] != 0) for the group's next task; higher is better.
   * Scores of nodes that do not fit are ignored. */
  shoal_status (*score)(void* state, shoal_sched_group* group, const uint8_t* fit,
                        int64_t* out_score, uint32_t nodes);

  /* Place `count` tasks of the group, in order, updating the snapshot's accounting (spread
   * counts, reservations, host ports) after each: out_node[k] is the node index for task k, or
   * -1 when no node fits it. This is the hot path the scheduler host calls. */
  shoal_status (*assign)(void* state, shoal_sched_group* group, uint32_t count, int32_t* out_node);

  /* Explain, Swarm style, why no node fits the group's next task, e.g.
   * "no suitable node (1 node not available for new tasks; 2 nodes had insufficient memory)".
   * *out is allocated with host->alloc and freed by the host. */
  shoal_status (*explain)(void* state, shoal_sched_group* group, shoal_buf* out);
} shoal_scheduler_ops;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHOAL_SCHEDULER_H */
