#pragma once

#include "kernel/api/router.h"
#include "kernel/manager/swarm.h"

namespace shoal::manager {

// Lua placement policies as cluster objects (managers only; kernel/policy/README.md):
//   POST /policies/create {"Name", "Source", "Description"} -> {"ID"}; the source is compiled
//        and its declaration checked first, and refused naming the line.
//   GET  /policies                    -> {"policies":[Policy objects]}
//   GET  /policies/inspect?id=REF     -> the Policy object (with its Source)
//   POST /policies/remove?id=REF      -> refused while a service uses the policy
// The policy's spec is {"Source","Description"}; its status {"Validated": true}.
void addPolicyRoutes(api::Router& router, Swarm& swarm);

// The Lua source of the policy named `name`, from `store` (for the plugin host's policy
// source); not found names the policy.
Result<std::string> policySource(ReplicatedStore& store, const std::string& name);

}  // namespace shoal::manager
