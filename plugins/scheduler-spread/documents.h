// scheduler-spread: reading the two documents of scheduler.h ("shoal.nodes/v1" and
// "shoal.task-group/v1") with Poco::JSON. Every refusal is an sdk::Error: SHOAL_EINVAL with a
// message naming the member (e.g. "snapshot: nodes[3].resources.memory_bytes must be a
// non-negative integer"), or SHOAL_ENOTSUP for Lua placement policies on a host that cannot
// run them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "constraint.h"
#include "model.h"

namespace shoal::plugins::spread {

struct Platform {
  std::string os;    // "" = any
  std::string arch;  // "" = any; normalised (x86_64 -> amd64, aarch64 -> arm64)
};

// SwarmKit's spelling of an architecture: x86_64 is amd64, aarch64 is arm64.
std::string normaliseArch(std::string arch);

// A parsed "shoal.task-group/v1" document.
struct GroupSpec {
  std::string serviceId;
  std::string serviceName;
  std::vector<Constraint> constraints;
  std::vector<Preference> preferences;  // outermost first
  int64_t maxReplicas = 0;              // 0 = unlimited
  std::vector<Platform> platforms;      // empty = any
  int64_t nanoCpus = 0;                 // reservation per task
  int64_t memoryBytes = 0;
  std::vector<PortKey> ports;  // host-mode published ports, sorted, unique, non-zero
  std::vector<std::string> tasks;
  // Lua placement policies (run by the kernel, policy_set.h):
  std::string policy;                       // spec.placement.policy: a policy object's name
  std::vector<std::string> luaConstraints;  // spec.placement.lua_constraints: Lua expressions

  bool usesLua() const { return !policy.empty() || !luaConstraints.empty(); }
};

std::unique_ptr<Snapshot> parseSnapshot(std::string_view json);
// `luaAvailable`: the host runs Lua placement policies. When it does not, a placement with a
// "policy" or "lua_constraints" member is refused with SHOAL_ENOTSUP (before anything else in
// the placement is checked).
GroupSpec parseGroup(std::string_view json, bool luaAvailable);

}  // namespace shoal::plugins::spread
