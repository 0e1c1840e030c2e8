/*
 * Shoal plugin C ABI, version 1 (minor 1).
 *
 * A Shoal plugin is a shared object that exports exactly one function, made by the SHOAL_PLUGIN
 * macro, which returns a static descriptor (shoal_plugin_desc). The daemon (shoald) loads it with
 * dlopen(RTLD_NOW | RTLD_LOCAL), checks the descriptor, calls init() once with the host table and
 * the plugin's configuration, then calls the kind's operations through desc->ops.
 *
 * Rules that hold for every header of this SDK:
 *
 * STRINGS   shoal_str is a borrowed {ptr, len} view. It is NOT NUL-terminated unless stated.
 *           Arguments are borrowed for the duration of the call only: copy what you keep.
 * OWNERSHIP Memory a plugin hands to the host (shoal_buf out-parameters) must come from
 *           host->alloc; the host frees it. Memory the host hands to a plugin as a shoal_buf is
 *           freed by the plugin with host->free. Objects a plugin creates (state, snapshots,
 *           handles) are destroyed only by the plugin's own destroy/close/fini function.
 * THREADS   The host serialises all calls into one plugin instance: no two ops of one instance
 *           ever run at the same time. A plugin's own threads may call only host->post() and
 *           host->log(); everything else is for the thread the host called in on.
 * ERRORS    Functions return shoal_status: SHOAL_OK (0), a negative SHOAL_E* code, or
 *           SHOAL_EAGAIN for an operation that finishes later (see "asynchronous operations").
 *           On failure, attach a message with host->fail(inst, code, fmt, ...) before returning.
 *           No C++ exception may cross this boundary (plugin.hpp wraps ops for C++ authors).
 * VERSIONS  Every struct starts with struct_size. Structs and tables only grow at the end; a
 *           reader probes a newer field with SHOAL_HAS_FIELD(). The host refuses a plugin built
 *           for another ABI major, or for a minor newer than its own.
 * DOCUMENTS Rich documents (task specs, node descriptions, ...) cross the ABI as UTF-8 JSON text
 *           with a "schema" member naming a versioned schema (for example "shoal.task/v1").
 *
 * Asynchronous operations: an op that takes a `uint64_t op` either fails at once (a negative
 * code, with host->fail) or returns SHOAL_EAGAIN and then posts exactly one SHOAL_EVENT_OP_DONE
 * event carrying the same op id, with the op's status and result document. The event may be
 * posted from any thread, and even before the op returns.
 */
#ifndef SHOAL_PLUGIN_H
#define SHOAL_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- ABI version ----------------------------------------------------------------------- */

#define SHOAL_ABI_MAJOR 1
#define SHOAL_ABI_MINOR                                          \
  2 /* 1.1: Lua placement policies in the host table (policy_*); \
     * 1.2: node images in the runtime ops (image_*) */

/* The single symbol every plugin exports (made by SHOAL_PLUGIN). */
#define SHOAL_PLUGIN_ENTRY "shoal_plugin_describe"

#if defined(__GNUC__)
#define SHOAL_EXPORT __attribute__((visibility("default")))
#define SHOAL_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define SHOAL_EXPORT
#define SHOAL_PRINTF(fmt, args)
#endif

/* True when a struct that starts with struct_size is large enough to hold `field`. */
#define SHOAL_HAS_FIELD(ptr, type, field) \
  ((ptr) != NULL && offsetof(type, field) + sizeof(((type*)0)->field) <= (ptr)->struct_size)

/* ---- Status codes ------------------------------------------------------------------------ */

typedef int32_t shoal_status;

#define SHOAL_OK 0
#define SHOAL_EAGAIN 1 /* not an error: the operation completes later (SHOAL_EVENT_OP_DONE) */
#define SHOAL_EPERM (-1)
#define SHOAL_ENOENT (-2)
#define SHOAL_EIO (-5)
#define SHOAL_ENOMEM (-12)
#define SHOAL_EBUSY (-16)
#define SHOAL_EEXIST (-17)
#define SHOAL_EINVAL (-22)
#define SHOAL_ENOSPC (-28)
#define SHOAL_ENOTSUP (-95) /* operation not supported (yet) by this plugin */
#define SHOAL_ETIMEDOUT (-110)
#define SHOAL_ECANCELED (-125)
#define SHOAL_EINTERNAL (-1000) /* a bug inside the plugin, e.g. an exception it caught */

/* ---- Strings and buffers ------------------------------------------------------------------ */

/* A borrowed, not necessarily NUL-terminated, UTF-8 string view. */
typedef struct shoal_str {
  const char* ptr;
  uint64_t len;
} shoal_str;

/* An owned buffer. Who frees it is stated by the function that fills it (see OWNERSHIP). */
typedef struct shoal_buf {
  char* ptr;
  uint64_t len;
} shoal_buf;

/* ---- Plugin kinds ------------------------------------------------------------------------ */

#define SHOAL_KIND_SCHEDULER 1 /* ops: shoal_scheduler_ops (scheduler.h) */
#define SHOAL_KIND_RUNTIME 2   /* ops: shoal_runtime_ops   (runtime.h)   */
#define SHOAL_KIND_NETWORK 3   /* ops: shoal_network_ops   (network.h)   */
#define SHOAL_KIND_SECRETS 4   /* ops: shoal_secrets_ops   (secrets.h)   */
#define SHOAL_KIND_STORAGE 5   /* ops: shoal_storage_ops   (storage.h)   */

/* ---- Log levels ---------------------------------------------------------------------------- */

#define SHOAL_LOG_ERROR 0
#define SHOAL_LOG_WARN 1
#define SHOAL_LOG_INFO 2
#define SHOAL_LOG_DEBUG 3
#define SHOAL_LOG_TRACE 4

/* ---- Events a plugin posts to the host ------------------------------------------------------ */

#define SHOAL_EVENT_OP_DONE 1     /* op finished: status, json = result document (may be empty) */
#define SHOAL_EVENT_TASK_STATUS 2 /* subject = task id, json = status document (runtime.h)    */
#define SHOAL_EVENT_LOG_CHUNK 3   /* op = the logs() call, json = log records (runtime.h)      */
#define SHOAL_EVENT_NOTICE 4      /* json = free-form document for the kernel's log           */

typedef struct shoal_event {
  uint32_t struct_size;
  int32_t type;        /* SHOAL_EVENT_* */
  uint64_t op;         /* the async call this event belongs to, or 0 */
  shoal_status status; /* for SHOAL_EVENT_OP_DONE */
  uint32_t reserved;   /* zero */
  shoal_str subject;   /* e.g. a task id; may be empty */
  shoal_str json;      /* payload document; may be empty */
} shoal_event;

/* An opaque handle naming one loaded plugin instance to the host. Valid from init() until
 * fini() returns. */
typedef struct shoal_instance shoal_instance;

/* ---- Lua placement policies (ABI 1.1) ---------------------------------------------------------
 * The kernel runs Lua placement policies for scheduler plugins, sandboxed and limited (an
 * instruction budget, a deadline and a memory budget per policy): named policies, which are
 * cluster objects (`shoal policy create NAME file.lua`, a placement's "policy" member), and Lua
 * constraint expressions (`--constraint-lua 'node.labels.zone ~= "east"'`, a placement's
 * "lua_constraints" member). A plugin reaches them through the host table's policy_* slots:
 * open a handle, bind it to the pass's node snapshot and a task group, then filter and score
 * whole batches of nodes. What policies see is documented in kernel/policy/README.md. */

#define SHOAL_POLICY_NAMED 1      /* text is the name of a policy object */
#define SHOAL_POLICY_EXPRESSION 2 /* text is a Lua constraint expression */

/* An open policy: the host's, opaque to the plugin. */
typedef struct shoal_policy shoal_policy;

/* The current resource use of some nodes of the bound snapshot, for placements the plugin made
 * after the snapshot was taken (so policies see them, as assign() counts them into the
 * snapshot): `count` entries in each array. Values are absolute, not deltas. A NULL array
 * leaves that value as it is. */
typedef struct shoal_policy_usage {
  uint32_t struct_size;                 /* sizeof(shoal_policy_usage) */
  uint32_t count;                       /* entries in each array */
  const uint32_t* nodes;                /* node indexes (positions in the snapshot's "nodes") */
  const int64_t* reserved_nano_cpus;    /* reserved on the node by all its tasks */
  const int64_t* reserved_memory_bytes; /* reserved on the node by all its tasks */
  const int64_t* tasks;                 /* active tasks on the node, all services */
  const int64_t* service_tasks;         /* active tasks of the bound group's service */
} shoal_policy_usage;

/* ---- The host table -------------------------------------------------------------------------
 * Handed to init(); valid until fini() returns. The kernel exports no symbols of its own: this
 * table is the only way into it (so a test can give a plugin a fake host). */
typedef struct shoal_host {
  uint32_t struct_size;
  uint16_t abi_major;
  uint16_t abi_minor;

  /* Allocate `size` bytes for a buffer handed to the host. Returns NULL when out of memory.
   * THREAD: any. */
  void* (*alloc)(uint64_t size);
  /* Free memory from alloc(), or a buffer the host handed to the plugin. NULL is a no-op.
   * THREAD: any. */
  void (*free)(void* ptr);

  /* Write a line to the daemon's log, attributed to this plugin. THREAD: any. */
  void (*log)(shoal_instance* inst, int32_t level, shoal_str message);

  /* Attach an error message to the call in progress and return `code`, so a plugin can write
   * `return host->fail(inst, SHOAL_EINVAL, "bad image %s", name);`. The message is copied.
   * THREAD: only the thread the host called in on, during an op. */
  shoal_status (*fail)(shoal_instance* inst, shoal_status code, const char* fmt, ...)
      SHOAL_PRINTF(3, 4);

  /* Queue an event for the kernel (completion of an async op, task status, log chunk). The
   * event and everything it points to is copied before post returns. Never blocks on plugin
   * calls; returns SHOAL_ENOMEM when the queue is full and SHOAL_ECANCELED after fini began.
   * THREAD: any, including the plugin's own threads. */
  shoal_status (*post)(shoal_instance* inst, const shoal_event* event);

  /* Wall-clock and monotonic time in nanoseconds, from the kernel's Clock (simulated under
   * test). THREAD: any. */
  int64_t (*now_ns)(void);
  int64_t (*monotonic_ns)(void);

  /* ---- ABI 1.1: Lua placement policies. Probe with SHOAL_HAS_FIELD(host, shoal_host,
   * policy_open) before use: a 1.0 host has none of them. ----
   * THREAD (every policy_* slot): only the thread the host called in on, during an op of
   * `inst`; a handle belongs to the instance that opened it and is never used by another.
   * ERRORS (every slot returning shoal_status): a negative code with the policy's message
   * attached to the call in progress, as host->fail would (`policy "spin" line 3: instruction
   * limit exceeded (10000000 instructions)`); the plugin may return the same code as is.
   * SHOAL_EINVAL: bad arguments, a bad document, a policy that fails to load or raises an
   * error; SHOAL_ETIMEDOUT: the instruction budget or the deadline ran out; SHOAL_ENOMEM: the
   * memory budget ran out. A failed call changes none of its outputs, and the handle stays
   * usable. */

  /* Open a policy: kind SHOAL_POLICY_NAMED with `text` a policy object's name (unknown name:
   * SHOAL_ENOENT "no policy named \"x\""), or SHOAL_POLICY_EXPRESSION with `text` a Lua
   * expression, truthy for the nodes that fit (a syntax error: SHOAL_EINVAL naming it).
   * Compiled policies are cached by the host, so opening one per group and pass is cheap.
   * OWNERSHIP: `text` is borrowed for the call; *out is the host's until policy_close. */
  shoal_status (*policy_open)(shoal_instance* inst, int32_t kind, shoal_str text,
                              shoal_policy** out);
  /* Close a handle from policy_open. NULL is a no-op. Handles still open at fini are closed by
   * the host. */
  void (*policy_close)(shoal_instance* inst, shoal_policy* p);
  /* Bind the handle to the pass's node snapshot ("shoal.nodes/v1", scheduler.h) and to a task
   * group ("shoal.task-group/v1"), for the filter/score calls that follow. The snapshot's
   * tables are built once per pass: binding a byte-identical nodes_json again (the text
   * snapshot_open got, kept by the plugin) reuses them, and an empty nodes_json keeps the
   * handle's current snapshot. Either way, usage updates (policy_update) are reset.
   * OWNERSHIP: both documents are borrowed for the call. */
  shoal_status (*policy_bind)(shoal_instance* inst, shoal_policy* p, shoal_str nodes_json,
                              shoal_str group_json);
  /* Tell the policy the current resource use of some nodes (placements made since the
   * snapshot was taken); it lasts until the next policy_bind. OWNERSHIP: borrowed. */
  shoal_status (*policy_update)(shoal_instance* inst, shoal_policy* p,
                                const shoal_policy_usage* usage);
  /* Run the policy's filter over the bound snapshot: for every node with fit[i] != 0, set
   * fit[i] = 0 if the policy rejects it. `nodes` must be the snapshot's node count. A policy
   * without a filter keeps every node. OWNERSHIP: fit is the caller's, `nodes` entries. */
  shoal_status (*policy_filter)(shoal_instance* inst, shoal_policy* p, uint8_t* fit,
                                uint32_t nodes);
  /* Run the policy's score over the nodes with fit[i] != 0: out_score[i] = its number x 1000,
   * rounded and clamped to +-1e18 (higher is better); 0 for the other nodes, and for every
   * node when the policy has no score function. OWNERSHIP: the arrays are the caller's. */
  shoal_status (*policy_score)(shoal_instance* inst, shoal_policy* p, const uint8_t* fit,
                               int64_t* out_score, uint32_t nodes);
  /* Explain the last policy_filter's rejections, for the plugin's explain(): "3 nodes rejected
   * by policy \"keep-off-maintenance\": node is in maintenance; 1 node rejected by ...";
   * empty ({NULL, 0}) when it rejected none. OWNERSHIP: *out is allocated by the host; the
   * plugin frees it with host->free (or hands it on as its own explain() result). */
  shoal_status (*policy_explain)(shoal_instance* inst, shoal_policy* p, shoal_buf* out);
} shoal_host;

/* ---- The descriptor ------------------------------------------------------------------------- */

typedef struct shoal_plugin_desc {
  uint32_t struct_size; /* sizeof(shoal_plugin_desc) as the plugin was built */
  uint16_t abi_major;   /* SHOAL_ABI_MAJOR as the plugin was built */
  uint16_t abi_minor;   /* SHOAL_ABI_MINOR as the plugin was built */
  int32_t kind;         /* SHOAL_KIND_* */
  const char* name;     /* unique per kind, [a-z0-9-], static storage */
  const char* version;  /* the plugin's own version, static storage */

  /* Called once after loading. `config` is the JSON object from shoald.yaml's
   * plugins.config.<name> ("{}" when absent). Store per-instance state in *out_state; it is
   * passed back to every op and to fini. On failure return a negative code with host->fail():
   * the plugin is then reported and not registered (fini is not called). */
  shoal_status (*init)(const shoal_host* host, shoal_instance* inst, shoal_str config,
                       void** out_state);
  /* Called once before unloading, after the last op returned. Must stop the plugin's threads. */
  void (*fini)(void* state);
  /* The kind's operations table (shoal_runtime_ops, ...), static storage. */
  const void* ops;
} shoal_plugin_desc;

/* The smallest descriptor an ABI 1.x host accepts. */
#define SHOAL_PLUGIN_DESC_MIN_SIZE (offsetof(shoal_plugin_desc, ops) + sizeof(void*))

typedef const shoal_plugin_desc* (*shoal_plugin_describe_fn)(void);

#ifdef __cplusplus
#define SHOAL_EXTERN_C extern "C"
#else
#define SHOAL_EXTERN_C
#endif

/* Export the plugin's descriptor. Use exactly once per shared object, at file scope. */
#define SHOAL_PLUGIN(desc)                                                           \
  SHOAL_EXTERN_C SHOAL_EXPORT const shoal_plugin_desc* shoal_plugin_describe(void);  \
  SHOAL_EXTERN_C SHOAL_EXPORT const shoal_plugin_desc* shoal_plugin_describe(void) { \
    return &(desc);                                                                  \
  }

/* Helpers for C plugins. */
static inline shoal_str shoal_str_from(const char* s, uint64_t len) {
  shoal_str r;
  r.ptr = s;
  r.len = len;
  return r;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHOAL_PLUGIN_H */
