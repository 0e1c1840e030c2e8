/*
 * Storage plugins (SHOAL_KIND_STORAGE): named volumes and the mounts tasks ask for.
 *
 * Documents (JSON):
 *  - volume, schema "shoal.volume/v1": {"schema", "name", "driver", "options": {...},
 *    "labels": {...}, "mountpoint", "created_ns", "in_use": int}
 *  - mount request, schema "shoal.mount-req/v1": {"schema", "task_id", "type": "volume" |
 *    "bind" | "tmpfs", "source", "target", "read_only": bool, "volume_options": {...},
 *    "tmpfs_options": {"size_bytes", "mode"}}
 *  - mount (result), schema "shoal.mount/v1": {"schema", "id", "source" (a host path),
 *    "target", "type", "options": [...]}
 *
 * THREAD: calls are serialised per instance (plugin.h).
 */
#ifndef SHOAL_STORAGE_H
#define SHOAL_STORAGE_H

#include "shoal/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct shoal_storage_ops {
  uint32_t struct_size;
  uint32_t reserved; /* zero */

  /* {"drivers": [...], "root": "..."}. *out: host->alloc, freed by the host. */
  shoal_status (*describe)(void* state, shoal_buf* out);

  /* Create a named volume (idempotent when the options match; SHOAL_EEXIST when they do not).
   * options_json: {"driver_opts": {...}, "labels": {...}}. *out: volume document. */
  shoal_status (*volume_create)(void* state, shoal_str name, shoal_str options_json,
                                shoal_buf* out);
  /* Remove a volume. SHOAL_EBUSY while mounted unless force != 0. */
  shoal_status (*volume_remove)(void* state, shoal_str name, int32_t force);
  /* One volume document, or SHOAL_ENOENT. */
  shoal_status (*volume_inspect)(void* state, shoal_str name, shoal_buf* out);
  /* JSON array of volume documents. */
  shoal_status (*volume_list)(void* state, shoal_buf* out);

  /* Prepare one mount for a task (creating a named volume on first use, as Docker does).
   * *out: mount document. */
  shoal_status (*mount)(void* state, shoal_str request_json, shoal_buf* out);
  /* Undo a mount by the id from its mount document. Idempotent. */
  shoal_status (*unmount)(void* state, shoal_str task_id, shoal_str mount_id);
} shoal_storage_ops;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* SHOAL_STORAGE_H */
