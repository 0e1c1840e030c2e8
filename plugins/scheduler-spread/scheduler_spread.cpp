// scheduler-spread: the default scheduler. It will place a service's tasks with Swarm's filters
// (availability, resources, constraints, platforms, host ports, max replicas), spread them over
// nodes (fewest tasks of the service first), honour placement preferences and Lua policies.
//
// This is the plugin's shell: it loads and checks its configuration (it takes no keys yet).
// Every scheduling operation answers SHOAL_ENOTSUP until the orchestration work lands (issue #5).
#include <shoal/scheduler.h>
#include <shoal/plugin.hpp>
#include <shoal_plugins/config.hpp>

#include <cstdint>
#include <string_view>

namespace {

using shoal::plugins::parseConfig;

constexpr char kName[] = "scheduler-spread";
constexpr char kVersion[] = "0.1.0";

class SpreadScheduler : public shoal::sdk::Instance {
 public:
  SpreadScheduler(const shoal_host* host, shoal_instance* inst, std::string_view config_json)
      : Instance(host, inst) {
    parseConfig(kName, config_json, {});  // no keys yet: anything but an empty object is refused
  }

  shoal_status snapshotOpen(shoal_str, shoal_sched_snapshot** out_snap, uint32_t* out_nodes) {
    if (out_snap != nullptr) *out_snap = nullptr;
    if (out_nodes != nullptr) *out_nodes = 0;
    return notYet("snapshot_open");
  }
  // Nothing can have been opened (snapshot_open and group_open always fail), so closing is
  // a no-op that is safe for any pointer, including NULL.
  void snapshotClose(shoal_sched_snapshot*) {}

  shoal_status groupOpen(shoal_sched_snapshot*, shoal_str, shoal_sched_group** out_group) {
    if (out_group != nullptr) *out_group = nullptr;
    return notYet("group_open");
  }
  void groupClose(shoal_sched_group*) {}

  shoal_status filter(shoal_sched_group*, uint8_t*, uint32_t) { return notYet("filter"); }
  shoal_status score(shoal_sched_group*, const uint8_t*, int64_t*, uint32_t) {
    return notYet("score");
  }
  shoal_status assign(shoal_sched_group*, uint32_t, int32_t*) { return notYet("assign"); }
  shoal_status explain(shoal_sched_group*, shoal_buf*) { return notYet("explain"); }

 private:
  shoal_status notYet(const char* op) const {
    return host()->fail(instance(), SHOAL_ENOTSUP, "%s: %s is not supported yet", kName, op);
  }
};

const shoal_scheduler_ops kOps = [] {
  using shoal::sdk::op;
  shoal_scheduler_ops o{};
  o.struct_size = sizeof o;
  o.snapshot_open = op<&SpreadScheduler::snapshotOpen>;
  o.snapshot_close = op<&SpreadScheduler::snapshotClose>;
  o.group_open = op<&SpreadScheduler::groupOpen>;
  o.group_close = op<&SpreadScheduler::groupClose>;
  o.filter = op<&SpreadScheduler::filter>;
  o.score = op<&SpreadScheduler::score>;
  o.assign = op<&SpreadScheduler::assign>;
  o.explain = op<&SpreadScheduler::explain>;
  return o;
}();

const shoal_plugin_desc kDesc =
    shoal::sdk::describe<SpreadScheduler>(SHOAL_KIND_SCHEDULER, kName, kVersion, &kOps);

}  // namespace

SHOAL_PLUGIN(kDesc)
