/*
 * Secrets plugins (SHOAL_KIND_SECRETS): hand secrets and configs to exactly the tasks that
 * reference them.
 *
 * The dispatcher sends a node only the secrets and configs its assigned tasks reference; the
 * agent asks this plugin to materialise them for one task before the task starts, and to
 * release them when the task is removed. Secret bytes must never reach persistent storage on
 * the node.
 *
 * Documents (JSON):
 *  - items, schema "shoal.secret-items/v1": {"schema", "task_id", "items": [{"kind": "secret" |
 *    "config", "id", "name", "data_b64", "target", "uid", "gid", "mode"}]}
 *  - mounts (result), schema "shoal.mounts/v1": {"schema", "mounts": [{"source", "target",
 *    "type": "bind", "options": ["ro", ...]}]} for the runtime to add to the container.
 *
 * THREAD: calls are serialised per instance (plugin.h).
 */
#ifndef SHOAL_SECRETS_H
#define SHOAL_SECRETS_H

#include "shoal/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct shoal_secrets_ops {
  uint32_t struct_size;
  uint32_t reserved; /* zero */

  /* {"backing": "tmpfs", ...}. *out: host->alloc, freed by the host. */
  shoal_status (*describe)(void* state, shoal_buf* out);

  /* Materialise the task's secrets and configs; *out: mounts document. Calling it again for
   * the same task replaces the previous set. */
  shoal_status (*materialize)(void* state, shoal_str task_id, shoal_str items_json, shoal_buf* out);

  /* Remove everything materialised for the task (unmount, wipe). Idempotent. */
  shoal_status (*release)(void* state, shoal_str task_id);
} shoal_secrets_ops;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHOAL_SECRETS_H */
