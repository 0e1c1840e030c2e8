/*
 * Scheduler plugins (SHOAL_KIND_SCHEDULER): choose nodes for pending tasks.
 *
 * The kernel's scheduler host batches the pending tasks of one service (a "group": tasks that
 * share one spec) and asks the plugin, once per batch, where they go. The shape is SwarmKit's
 * filters (filter + explain) plus Kubernetes-style scoring, and works on batches: one call
 * covers every node of the snapshot, never one call (and one parse) per node-task pair.
 *
 * A scheduling pass: snapshot_open once; then per service with pending tasks group_open,
 * assign(count), commit the answer, explain when some task got -1, group_close; finally
 * snapshot_close. Placements made by assign() are counted into the snapshot, so the groups of
 * the same pass that come later see them. filter, score and explain describe the group's next
 * task as things stand; explain's text is empty while some node fits it.
 *
 * Documents (UTF-8 JSON). Keys are snake_case. Members marked "optional" may be absent or
 * null and then default to empty / zero / false; members not listed here are ignored (newer
 * kernels may add some). A member of the wrong type or value, or given twice, is refused with
 * SHOAL_EINVAL and a message naming it ("snapshot: nodes[3].resources.memory_bytes must be a
 * non-negative integer"). Integers are JSON integers (no fraction, no exponent); counts and
 * resources are >= 0.
 *
 *  - Node snapshot, schema "shoal.nodes/v1":
 *      {"schema": "shoal.nodes/v1",                                  required
 *       "nodes": [                                                   required, may be empty
 *         {"id": str,                                                required, non-empty
 *          "hostname": str,                                          optional
 *          "role": "worker" | "manager",                             optional
 *          "availability": "active" | "pause" | "drain",             optional
 *          "state": "ready" | "down" | "unknown" | "disconnected",   optional
 *          "platform": {"os": str, "arch": str},                     optional ("linux", "amd64")
 *          "labels": {str: str},                                     optional, node labels
 *          "engine_labels": {str: str},                              optional, engine labels
 *          "resources": {"nano_cpus": int, "memory_bytes": int},     optional, the node's total
 *          "reserved": {"nano_cpus": int, "memory_bytes": int},      optional, already reserved
 *                                                                    by the tasks on the node
 *          "tasks": int,                                             optional, active tasks on
 *                                                                    the node (all services)
 *          "service_tasks": {"<service id>": int},                   optional, active tasks per
 *                                                                    service on the node
 *          "host_ports": ["tcp/80", "udp/53", ...],                  optional, host-mode
 *                                                                    published ports in use
 *                                                                    (tcp|udp|sctp / 1-65535)
 *          "failures": {"<service id>": int}}]}                      optional, recent failures
 *                                                                    of the service's tasks on
 *                                                                    this node
 *    A node takes new tasks only when its state is "ready" and its availability "active" (so a
 *    node without them takes none). Node indexes used below are positions in "nodes".
 *
 *  - Task group, schema "shoal.task-group/v1":
 *      {"schema": "shoal.task-group/v1",                             required
 *       "service_id": str,                                           required, non-empty; the
 *                                                                    key of service_tasks and
 *                                                                    failures
 *       "service_name": str,                                         optional
 *       "spec": {                                                    optional
 *         "placement": {                                             optional
 *           "constraints": ["node.labels.zone==east", ...],          optional, all must hold
 *           "preferences": ["node.labels.zone", ...],                optional, spread
 *                                                                    descriptors, outermost
 *                                                                    first
 *           "max_replicas": int,                                     optional, tasks of the
 *                                                                    service per node, 0 =
 *                                                                    unlimited
 *           "platforms": [{"os": str, "arch": str}]},                optional, empty = any; an
 *                                                                    empty os or arch = any
 *         "resources": {"nano_cpus": int, "memory_bytes": int},      optional, reservations
 *                                                                    per task
 *         "ports": [{"protocol": "tcp" | "udp" | "sctp",             optional, host-mode ports
 *                    "published": int}]},                            only; protocol defaults to
 *                                                                    "tcp"; published 0 (a
 *                                                                    dynamic port) is not
 *                                                                    checked
 *       "tasks": ["<task id>", ...]}                                 optional, the pending tasks
 *
 *    Constraints use Docker's syntax, `key==value` or `key!=value` (spaces around the operator
 *    allowed), with keys node.id, node.hostname, node.role, node.platform.os,
 *    node.platform.arch, node.labels.<label> and engine.labels.<label>. As in SwarmKit, keys
 *    and values compare case-insensitively (label names are case-sensitive), and an absent
 *    label or attribute fails `==` and matches `!=`. An unparseable constraint (no operator,
 *    empty or malformed key, unknown key, empty or malformed value) makes group_open fail with
 *    SHOAL_EINVAL and a message quoting it: `invalid constraint "node.foo==1": unknown key
 *    node.foo`. Preference descriptors are node.labels.<label> or engine.labels.<label>.
 *    A placement with a "policy" or "lua_constraints" member (Lua placement policies) may be
 *    refused with SHOAL_ENOTSUP by a plugin that cannot run them.
 *
 * Handles (snapshot, group) are the plugin's; the kernel closes each one it opened, every group
 * before the snapshot it was opened on. OWNERSHIP: documents and arrays are borrowed for the
 * call; out arrays are the caller's, with `nodes` (or `count`) entries.
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
