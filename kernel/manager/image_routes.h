// The node's images (runtime.h image_* slots) on the control API. Images are node-local, as
// Docker's are: these routes answer for the daemon they reach, swarm member or not.
#pragma once

#include "kernel/api/router.h"
#include "kernel/manager/swarm.h"

namespace shoal::manager {

//   GET  /images                                   -> {"images": [image documents]}
//   POST /images/pull    {"Ref"}                   -> image document
//   POST /images/load    {"Path"} (a file on this node)  -> [image documents]
//   POST /images/remove  {"Ref", "Force": bool}    -> {"untagged": [...], "deleted": [...]}
//   POST /images/resolve {"Ref"}                   -> {"ref", "pinned"}
// 501 when the node's runtime keeps no images (runtime-sim), 503 without a runtime.
void addImageRoutes(api::Router& router, Swarm& swarm);

}  // namespace shoal::manager
