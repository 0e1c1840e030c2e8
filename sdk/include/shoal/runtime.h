/*
 * Runtime plugins (SHOAL_KIND_RUNTIME): run a task's container on this node.
 *
 * The shape is SwarmKit's task controller: describe the node, then per task
 * prepare -> start -> wait, and shutdown / terminate / remove to stop and clean up.
 * The agent drives these calls and moves the task through ACCEPTED, PREPARING, STARTING and
 * RUNNING from their results.
 *
 * Documents (JSON):
 *  - task document, schema "shoal.task/v1": {"schema", "id", "service_id", "slot", "node_id",
 *    "spec": {"image", "command", "args", "env", "workdir", "user", "hostname", "mounts",
 *    "resources", "stop_signal", "stop_grace_ns", "healthcheck", ...}, "networks": [...],
 *    "netns": "/run/...", "mounts": [...] (from the storage and secrets plugins)}
 *  - status document, schema "shoal.task-status/v1": {"schema", "task_id", "state"
 *    ("preparing"|"ready"|"starting"|"running"|"complete"|"failed"|"shutdown"), "pid",
 *    "exit_code", "oom_killed", "health" ("starting"|"healthy"|"unhealthy"|""), "message",
 *    "timestamp_ns"}
 *  - node description, schema "shoal.node-runtime/v1": {"schema", "runtime", "os", "arch",
 *    "cpus", "memory_bytes", "kernel", "engine_labels": {...}}
 *  - log records, schema "shoal.log-chunk/v1": {"schema", "task_id", "records": [{"stream":
 *    "stdout"|"stderr", "timestamp_ns", "line"}], "eof": bool}
 *  - image document (ABI 1.2), schema "shoal.image/v1": {"schema", "id" (config digest),
 *    "repo_tags": [...], "repo_digests": [...], "size", "created_ns", "os", "architecture",
 *    "layers": [diff ids], "config": {"env", "entrypoint", "cmd", "workdir", "user",
 *    "stop_signal", "healthcheck", "labels"}, "in_use": int}
 *
 * Task ids are the store's task ids; a runtime keys all its state by them. Ops that take `op`
 * are asynchronous (plugin.h): SHOAL_EAGAIN now, SHOAL_EVENT_OP_DONE for that op id later.
 * THREAD: calls are serialised per instance (plugin.h); completions may be posted from any
 * thread.
 */
#ifndef SHOAL_RUNTIME_H
#define SHOAL_RUNTIME_H

#include "shoal/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct shoal_runtime_ops {
  uint32_t struct_size;
  uint32_t reserved; /* zero */

  /* Describe this node's runtime (node description document). *out is allocated with
   * host->alloc and freed by the host. */
  shoal_status (*describe)(void* state, shoal_buf* out);

  /* Make everything ready to start the task: pull the image, build the rootfs, write the OCI
   * bundle. Idempotent for one task id. Completion result: status document (state "ready"). */
  shoal_status (*prepare)(void* state, uint64_t op, shoal_str task_id, shoal_str task_json);

  /* Start a prepared task. Completion result: status document (state "running"). */
  shoal_status (*start)(void* state, uint64_t op, shoal_str task_id);

  /* Complete when the task's process exits (or at once if it already has). Completion result:
   * status document with exit_code / oom_killed. Survives nothing: after a daemon restart the
   * agent calls wait again for every task it re-attaches to. */
  shoal_status (*wait)(void* state, uint64_t op, shoal_str task_id);

  /* Stop gracefully: stop signal, then SIGKILL after grace_ns. Completes when stopped. */
  shoal_status (*shutdown)(void* state, uint64_t op, shoal_str task_id, int64_t grace_ns);

  /* Kill at once (SIGKILL). Completes when the process is gone. */
  shoal_status (*terminate)(void* state, uint64_t op, shoal_str task_id);

  /* Remove every trace of a stopped task (bundle, rootfs mounts, cgroups, shim state). */
  shoal_status (*remove)(void* state, uint64_t op, shoal_str task_id);

  /* Current status document of one task, synchronously. SHOAL_ENOENT for an unknown task. */
  shoal_status (*inspect)(void* state, shoal_str task_id, shoal_buf* out);

  /* Every task this runtime knows on this node (JSON array of status documents); used after a
   * daemon restart to re-attach to running containers. */
  shoal_status (*list)(void* state, shoal_buf* out);

  /* Stream the task's logs as SHOAL_EVENT_LOG_CHUNK events for `op`, then SHOAL_EVENT_OP_DONE.
   * options_json: {"follow": bool, "tail": int (-1 = all), "since_ns": int, "timestamps": bool}.
   */
  shoal_status (*logs)(void* state, uint64_t op, shoal_str task_id, shoal_str options_json);

  /* Cancel an outstanding asynchronous op (a wait or a following logs stream). Its
   * SHOAL_EVENT_OP_DONE is still posted, with SHOAL_ECANCELED. SHOAL_ENOENT if not pending. */
  shoal_status (*cancel)(void* state, uint64_t op);

  /* ---- ABI 1.2: the node's images. A reader probes them with
   * SHOAL_HAS_FIELD(ops, shoal_runtime_ops, image_remove); a runtime without images (an older
   * struct_size) simply has none. References are Docker's ("busybox", "host:5000/app:v1",
   * "app@sha256:..."); the plugin normalises them. */

  /* Download `ref` and make it ready to run. Completion result: its image document. */
  shoal_status (*image_pull)(void* state, uint64_t op, shoal_str ref);

  /* The digest the registry serves for `ref` now, without downloading layers. Completion
   * result: {"schema": "shoal.image-resolve/v1", "ref", "pinned": "name:tag@sha256:..."}. */
  shoal_status (*image_resolve)(void* state, uint64_t op, shoal_str ref);

  /* Import every image of the tarball at `path` on this node (an OCI image layout or a
   * `docker save` archive). Completion result: JSON array of image documents. */
  shoal_status (*image_load)(void* state, uint64_t op, shoal_str path);

  /* Every image on this node (JSON array of image documents), synchronously. *out as in
   * describe. */
  shoal_status (*image_list)(void* state, shoal_buf* out);

  /* Untag `ref`, and delete the image when no tag is left. An image a task uses is refused
   * (SHOAL_EBUSY) unless force != 0. Completion result: {"untagged": [...], "deleted": [...]}.
   */
  shoal_status (*image_remove)(void* state, uint64_t op, shoal_str ref, int32_t force);
} shoal_runtime_ops;

/* The size of ABI 1.0's (and 1.1's) runtime ops table: the host accepts a table this big. */
#define SHOAL_RUNTIME_OPS_MIN_SIZE 96

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHOAL_RUNTIME_H */
