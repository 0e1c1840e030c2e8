/*
 * hello-scheduler: the smallest honest scheduler plugin, written against the C ABI directly
 * (no plugin.hpp), as an example of building a plugin out of tree with the installed SDK.
 *
 * It places nothing. Reading the node snapshot would need a JSON parser, which this example
 * leaves out, so it knows of no nodes: snapshot_open reports 0 nodes, filter says no node fits,
 * assign answers -1 for every task, and explain says why. Every call still does what the ABI
 * asks of it: handles are real allocations, closed by the plugin's own close functions, errors
 * come with a message through host->fail, and explain's text comes from host->alloc.
 */
#include <shoal/plugin.h>
#include <shoal/scheduler.h>

#include <stdlib.h>
#include <string.h>

/* Per-instance state: what every op needs to talk back to the host. */
typedef struct hello_state {
  const shoal_host* host;
  shoal_instance* inst;
} hello_state;

/* The handles are opaque to the host; the plugin gives them their contents. */
struct shoal_sched_snapshot {
  uint32_t nodes; /* the nodes this plugin knows of: none, as it does not parse the snapshot */
};

struct shoal_sched_group {
  struct shoal_sched_snapshot* snap;
};

static const char hello_explanation[] = "hello-scheduler places nothing: it is an SDK example";

/* True when `s` is "{}", give or take whitespace: this plugin takes no configuration. */
static int is_empty_object(shoal_str s) {
  uint64_t i = 0;
  int seen_open = 0, seen_close = 0;
  for (i = 0; i < s.len; i++) {
    char c = s.ptr[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
    if (c == '{' && !seen_open) {
      seen_open = 1;
    } else if (c == '}' && seen_open && !seen_close) {
      seen_close = 1;
    } else {
      return 0;
    }
  }
  return seen_open && seen_close;
}

static shoal_status hello_init(const shoal_host* host, shoal_instance* inst, shoal_str config,
                               void** out_state) {
  static const char hello[] = "hello-scheduler loaded; it will place nothing";
  hello_state* state;
  if (!is_empty_object(config)) {
    return host->fail(inst, SHOAL_EINVAL, "hello-scheduler takes no configuration (config: %.*s)",
                      (int)config.len, config.ptr);
  }
  state = (hello_state*)calloc(1, sizeof *state);
  if (state == NULL) return host->fail(inst, SHOAL_ENOMEM, "hello-scheduler: out of memory");
  state->host = host;
  state->inst = inst;
  host->log(inst, SHOAL_LOG_INFO, shoal_str_from(hello, sizeof hello - 1));
  *out_state = state;
  return SHOAL_OK;
}

static void hello_fini(void* state) { free(state); }

static shoal_status hello_snapshot_open(void* state, shoal_str nodes_json,
                                        shoal_sched_snapshot** out_snap, uint32_t* out_nodes) {
  hello_state* self = (hello_state*)state;
  shoal_sched_snapshot* snap;
  if (nodes_json.len == 0) {
    return self->host->fail(self->inst, SHOAL_EINVAL, "hello-scheduler: empty snapshot");
  }
  snap = (shoal_sched_snapshot*)calloc(1, sizeof *snap);
  if (snap == NULL) {
    return self->host->fail(self->inst, SHOAL_ENOMEM, "hello-scheduler: out of memory");
  }
  snap->nodes = 0;
  *out_snap = snap;
  *out_nodes = snap->nodes;
  return SHOAL_OK;
}

static void hello_snapshot_close(void* state, shoal_sched_snapshot* snap) {
  (void)state;
  free(snap);
}

static shoal_status hello_group_open(void* state, shoal_sched_snapshot* snap, shoal_str group_json,
                                     shoal_sched_group** out_group) {
  hello_state* self = (hello_state*)state;
  shoal_sched_group* group;
  (void)group_json; /* every group is placed the same way: nowhere */
  if (snap == NULL) {
    return self->host->fail(self->inst, SHOAL_EINVAL, "hello-scheduler: no snapshot");
  }
  group = (shoal_sched_group*)calloc(1, sizeof *group);
  if (group == NULL) {
    return self->host->fail(self->inst, SHOAL_ENOMEM, "hello-scheduler: out of memory");
  }
  group->snap = snap;
  *out_group = group;
  return SHOAL_OK;
}

static void hello_group_close(void* state, shoal_sched_group* group) {
  (void)state;
  free(group);
}

static shoal_status hello_filter(void* state, shoal_sched_group* group, uint8_t* out_fit,
                                 uint32_t nodes) {
  (void)state;
  (void)group;
  if (nodes > 0) memset(out_fit, 0, nodes);
  return SHOAL_OK;
}

static shoal_status hello_score(void* state, shoal_sched_group* group, const uint8_t* fit,
                                int64_t* out_score, uint32_t nodes) {
  uint32_t i;
  (void)state;
  (void)group;
  (void)fit;
  for (i = 0; i < nodes; i++) out_score[i] = 0;
  return SHOAL_OK;
}

static shoal_status hello_assign(void* state, shoal_sched_group* group, uint32_t count,
                                 int32_t* out_node) {
  uint32_t k;
  (void)state;
  (void)group;
  for (k = 0; k < count; k++) out_node[k] = -1;
  return SHOAL_OK;
}

static shoal_status hello_explain(void* state, shoal_sched_group* group, shoal_buf* out) {
  hello_state* self = (hello_state*)state;
  const uint64_t len = sizeof hello_explanation - 1;
  char* text;
  (void)group;
  text = (char*)self->host->alloc(len + 1);
  if (text == NULL) {
    return self->host->fail(self->inst, SHOAL_ENOMEM, "hello-scheduler: out of memory");
  }
  memcpy(text, hello_explanation, len + 1);
  out->ptr = text;
  out->len = len;
  return SHOAL_OK;
}

static const shoal_scheduler_ops hello_ops = {
    .struct_size = sizeof(shoal_scheduler_ops),
    .reserved = 0,
    .snapshot_open = hello_snapshot_open,
    .snapshot_close = hello_snapshot_close,
    .group_open = hello_group_open,
    .group_close = hello_group_close,
    .filter = hello_filter,
    .score = hello_score,
    .assign = hello_assign,
    .explain = hello_explain,
};

static const shoal_plugin_desc hello_desc = {
    .struct_size = sizeof(shoal_plugin_desc),
    .abi_major = SHOAL_ABI_MAJOR,
    .abi_minor = SHOAL_ABI_MINOR,
    .kind = SHOAL_KIND_SCHEDULER,
    .name = "hello-scheduler",
    .version = "0.1.0",
    .init = hello_init,
    .fini = hello_fini,
    .ops = &hello_ops,
};

SHOAL_PLUGIN(hello_desc)
