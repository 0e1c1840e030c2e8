// scheduler-spread: the default scheduler. It places a service's tasks as Docker Swarm does:
// filters (availability, platform, constraints, resources, host-mode ports, max replicas per
// node), spread over nodes (fewest tasks of the service first) nested under placement
// preferences, and Swarm-style "no suitable node (...)" explanations. See README.md.
//
// This file is the ABI glue: handles, their lifetimes and argument checks. The documents are
// read in documents.cpp, constraints in constraint.cpp, placement in placement.cpp, and the
// Lua placement policies the kernel runs are reached through policy_set.cpp.
#include <shoal/scheduler.h>
#include <shoal/plugin.hpp>
#include <shoal_plugins/config.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "documents.h"
#include "model.h"
#include "placement.h"
#include "policy_set.h"

namespace {

using shoal::plugins::parseConfig;
using shoal::plugins::spread::Group;
using shoal::plugins::spread::invalid;
using shoal::plugins::spread::kName;
using shoal::plugins::spread::parseGroup;
using shoal::plugins::spread::parseSnapshot;
using shoal::plugins::spread::PolicyFailure;
using shoal::plugins::spread::PolicySet;
using shoal::plugins::spread::Snapshot;
using shoal::sdk::view;

constexpr char kVersion[] = "0.1.0";

// Runs an op that may call a Lua policy. A policy slot that fails has attached the kernel's
// message (naming the policy, its line and the problem) to the call already: return its code
// as is, since plugin.hpp's guard would replace that message with its own.
template <class F>
shoal_status withPolicies(F&& body) {
  try {
    return body();
  } catch (const PolicyFailure& e) {
    return e.code();
  }
}

// Handles are the plugin's objects; every op checks that it knows the handle, so a stale or
// foreign pointer is refused (SHOAL_EINVAL) instead of being dereferenced.
class SpreadScheduler : public shoal::sdk::Instance {
 public:
  SpreadScheduler(const shoal_host* host, shoal_instance* inst, std::string_view config_json)
      : Instance(host, inst), lua_(PolicySet::hostSupports(host)) {
    parseConfig(kName, config_json, {});  // no keys: anything but an empty object is refused
  }

  shoal_status snapshotOpen(shoal_str nodes_json, shoal_sched_snapshot** out_snap,
                            uint32_t* out_nodes) {
    if (out_snap == nullptr || out_nodes == nullptr) invalid("snapshot_open: null out-parameter");
    *out_snap = nullptr;
    *out_nodes = 0;
    std::unique_ptr<Snapshot> snap = parseSnapshot(view(nodes_json));
    // Kept for policy_bind: the kernel parses the snapshot once per pass for every policy bound
    // to byte-identical text.
    if (lua_) snap->trackUsage(view(nodes_json));
    auto* handle = reinterpret_cast<shoal_sched_snapshot*>(snap.get());
    const auto nodes = static_cast<uint32_t>(snap->nodes.size());
    snapshots_.emplace(handle, std::move(snap));
    *out_snap = handle;
    *out_nodes = nodes;
    return SHOAL_OK;
  }

  // Closing a snapshot that still has open groups (the kernel should close those first) only
  // marks it: it is freed with its last group, and those groups refuse further ops.
  void snapshotClose(shoal_sched_snapshot* handle) {
    if (handle == nullptr) return;
    auto it = snapshots_.find(handle);
    if (it == snapshots_.end() || it->second->closed) {
      log(SHOAL_LOG_WARN, std::string(kName) + ": snapshot_close of an unknown snapshot ignored");
      return;
    }
    if (it->second->openGroups > 0) {
      it->second->closed = true;
      log(SHOAL_LOG_WARN, std::string(kName) + ": snapshot closed before its " +
                              std::to_string(it->second->openGroups) +
                              " open group(s); it is freed with the last of them");
      return;
    }
    snapshots_.erase(it);
  }

  shoal_status groupOpen(shoal_sched_snapshot* snap_handle, shoal_str group_json,
                         shoal_sched_group** out_group) {
    if (out_group == nullptr) invalid("group_open: null out-parameter");
    *out_group = nullptr;
    Snapshot& snap = snapshotOf(snap_handle, "group_open");
    auto group = std::make_unique<Group>(snap, parseGroup(view(group_json), lua_));
    const auto& spec = group->spec();
    if (spec.usesLua()) {
      // Constraint expressions filter first, the named policy (filter and score) last. A
      // failure closes what was opened (the PolicySet, or the group that owns it).
      auto policies = std::make_unique<PolicySet>(host(), instance());
      for (const std::string& e : spec.luaConstraints) policies->open(SHOAL_POLICY_EXPRESSION, e);
      if (!spec.policy.empty()) policies->open(SHOAL_POLICY_NAMED, spec.policy);
      group->attachPolicies(std::move(policies), view(group_json));
    }
    auto* handle = reinterpret_cast<shoal_sched_group*>(group.get());
    groups_.emplace(handle, std::move(group));
    ++snap.openGroups;
    *out_group = handle;
    return SHOAL_OK;
  }

  void groupClose(shoal_sched_group* handle) {
    if (handle == nullptr) return;
    auto it = groups_.find(handle);
    if (it == groups_.end()) {
      log(SHOAL_LOG_WARN, std::string(kName) + ": group_close of an unknown group ignored");
      return;
    }
    Snapshot& snap = it->second->snapshot();
    groups_.erase(it);
    if (--snap.openGroups == 0 && snap.closed) {
      snapshots_.erase(reinterpret_cast<shoal_sched_snapshot*>(&snap));
    }
  }

  shoal_status filter(shoal_sched_group* handle, uint8_t* out_fit, uint32_t nodes) {
    Group& g = groupOf(handle, "filter", nodes);
    if (out_fit == nullptr && nodes > 0) invalid("filter: out_fit is null");
    g.filter(out_fit);
    return SHOAL_OK;
  }

  shoal_status score(shoal_sched_group* handle, const uint8_t* fit, int64_t* out_score,
                     uint32_t nodes) {
    Group& g = groupOf(handle, "score", nodes);
    if ((fit == nullptr || out_score == nullptr) && nodes > 0) {
      invalid("score: fit or out_score is null");
    }
    g.score(fit, out_score);
    return SHOAL_OK;
  }

  shoal_status assign(shoal_sched_group* handle, uint32_t count, int32_t* out_node) {
    Group& g = groupOf(handle, "assign");
    if (out_node == nullptr && count > 0) invalid("assign: out_node is null");
    g.assign(count, out_node);
    return SHOAL_OK;
  }

  shoal_status explain(shoal_sched_group* handle, shoal_buf* out) {
    Group& g = groupOf(handle, "explain");
    if (out == nullptr) invalid("explain: out is null");
    return reply(out, g.explain());
  }

  // The ops that may run Lua policies.
  shoal_status groupOpenOp(shoal_sched_snapshot* snap, shoal_str group_json,
                           shoal_sched_group** out_group) {
    return withPolicies([&] { return groupOpen(snap, group_json, out_group); });
  }
  shoal_status scoreOp(shoal_sched_group* handle, const uint8_t* fit, int64_t* out_score,
                       uint32_t nodes) {
    return withPolicies([&] { return score(handle, fit, out_score, nodes); });
  }
  shoal_status assignOp(shoal_sched_group* handle, uint32_t count, int32_t* out_node) {
    return withPolicies([&] { return assign(handle, count, out_node); });
  }
  shoal_status explainOp(shoal_sched_group* handle, shoal_buf* out) {
    return withPolicies([&] { return explain(handle, out); });
  }

 private:
  Snapshot& snapshotOf(shoal_sched_snapshot* handle, const char* op) {
    auto it = snapshots_.find(handle);
    if (it == snapshots_.end()) invalid(std::string(op) + ": unknown snapshot handle");
    if (it->second->closed) invalid(std::string(op) + ": the snapshot was closed");
    return *it->second;
  }

  Group& groupOf(shoal_sched_group* handle, const char* op) {
    auto it = groups_.find(handle);
    if (it == groups_.end()) invalid(std::string(op) + ": unknown group handle");
    if (it->second->snapshot().closed) {
      invalid(std::string(op) + ": the group's snapshot was closed");
    }
    return *it->second;
  }

  Group& groupOf(shoal_sched_group* handle, const char* op, uint32_t nodes) {
    Group& g = groupOf(handle, op);
    if (nodes != g.snapshot().nodes.size()) {
      invalid(std::string(op) + ": nodes is " + std::to_string(nodes) + " but the snapshot has " +
              std::to_string(g.snapshot().nodes.size()));
    }
    return g;
  }

  // Declared before groups_, so groups (which point into their snapshot) go first when the
  // instance is destroyed with handles still open.
  std::unordered_map<const shoal_sched_snapshot*, std::unique_ptr<Snapshot>> snapshots_;
  std::unordered_map<const shoal_sched_group*, std::unique_ptr<Group>> groups_;
  const bool lua_;  // the host runs Lua placement policies (ABI 1.1 policy_* slots)
};

const shoal_scheduler_ops kOps = [] {
  using shoal::sdk::op;
  shoal_scheduler_ops o{};
  o.struct_size = sizeof o;
  o.snapshot_open = op<&SpreadScheduler::snapshotOpen>;
  o.snapshot_close = op<&SpreadScheduler::snapshotClose>;
  o.group_open = op<&SpreadScheduler::groupOpenOp>;
  o.group_close = op<&SpreadScheduler::groupClose>;
  o.filter = op<&SpreadScheduler::filter>;
  o.score = op<&SpreadScheduler::scoreOp>;
  o.assign = op<&SpreadScheduler::assignOp>;
  o.explain = op<&SpreadScheduler::explainOp>;
  return o;
}();

const shoal_plugin_desc kDesc =
    shoal::sdk::describe<SpreadScheduler>(SHOAL_KIND_SCHEDULER, kName, kVersion, &kOps);

}  // namespace

SHOAL_PLUGIN(kDesc)
