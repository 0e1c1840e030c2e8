// runtime-sim: a simulated runtime with no containers, for scale benchmarks and manager tests.
// Tasks will "run" as timers on this node, with a configurable start delay and failure rate.
//
// This is the plugin's shell: it loads, checks its configuration and describes the node
// truthfully. Every task operation answers SHOAL_ENOTSUP until the simulation lands (issue #5).
#include <shoal/runtime.h>
#include <shoal/plugin.hpp>
#include <shoal_plugins/config.hpp>
#include <shoal_plugins/json.hpp>
#include <shoal_plugins/node_info.hpp>

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Object.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace {

using shoal::plugins::addNodeFacts;
using shoal::plugins::configError;
using shoal::plugins::parseConfig;
using shoal::plugins::toJson;

constexpr char kName[] = "runtime-sim";
constexpr char kVersion[] = "0.1.0";

// A JSON integer (booleans excluded: Poco counts them as integers).
int64_t integerValue(const Poco::JSON::Object& config, const std::string& key) {
  const Poco::Dynamic::Var& value = config.get(key);
  if (!value.isInteger() || value.isBoolean()) {
    configError(kName, "config key \"" + key + "\" must be an integer");
  }
  if (!value.isSigned()) {
    // Poco keeps integers above INT64_MAX unsigned; none of those is a sensible setting.
    const auto big = value.convert<Poco::UInt64>();
    if (big > static_cast<Poco::UInt64>(INT64_MAX)) {
      configError(kName, "config key \"" + key + "\" is out of range");
    }
    return static_cast<int64_t>(big);
  }
  return value.convert<Poco::Int64>();
}

// A JSON number, integer or not (booleans excluded).
double numberValue(const Poco::JSON::Object& config, const std::string& key) {
  const Poco::Dynamic::Var& value = config.get(key);
  if (!value.isNumeric() || value.isBoolean()) {
    configError(kName, "config key \"" + key + "\" must be a number");
  }
  return value.convert<double>();
}

class SimRuntime : public shoal::sdk::Instance {
 public:
  // A day: long enough for any test, and far from overflowing when turned into nanoseconds.
  static constexpr int64_t kMaxStartDelayMs = 24 * 60 * 60 * 1000;

  SimRuntime(const shoal_host* host, shoal_instance* inst, std::string_view config_json)
      : Instance(host, inst) {
    Poco::JSON::Object::Ptr config =
        parseConfig(kName, config_json, {"start_delay_ms", "failure_rate"});
    if (config->has("start_delay_ms")) {
      start_delay_ms_ = integerValue(*config, "start_delay_ms");
      if (start_delay_ms_ < 0 || start_delay_ms_ > kMaxStartDelayMs) {
        configError(kName, "config key \"start_delay_ms\" must be between 0 and " +
                               std::to_string(kMaxStartDelayMs));
      }
    }
    if (config->has("failure_rate")) {
      failure_rate_ = numberValue(*config, "failure_rate");
      if (!(failure_rate_ >= 0.0 && failure_rate_ <= 1.0)) {
        configError(kName, "config key \"failure_rate\" must be between 0 and 1");
      }
    }
    log(SHOAL_LOG_DEBUG, std::string(kName) +
                             ": start_delay_ms=" + std::to_string(start_delay_ms_) +
                             " failure_rate=" + std::to_string(failure_rate_));
  }

  // The simulated runtime still runs on a real node, so it reports that node's real facts.
  shoal_status describe(shoal_buf* out) {
    Poco::JSON::Object doc(Poco::JSON_PRESERVE_KEY_ORDER);
    doc.set("schema", std::string("shoal.node-runtime/v1"));
    doc.set("runtime", std::string("sim"));
    addNodeFacts(kName, doc);
    return reply(out, toJson(doc));
  }

  shoal_status prepare(uint64_t, shoal_str, shoal_str) { return notYet("prepare"); }
  shoal_status start(uint64_t, shoal_str) { return notYet("start"); }
  shoal_status wait(uint64_t, shoal_str) { return notYet("wait"); }
  shoal_status shutdown(uint64_t, shoal_str, int64_t) { return notYet("shutdown"); }
  shoal_status terminate(uint64_t, shoal_str) { return notYet("terminate"); }
  shoal_status remove(uint64_t, shoal_str) { return notYet("remove"); }
  shoal_status inspect(shoal_str, shoal_buf*) { return notYet("inspect"); }
  shoal_status list(shoal_buf*) { return notYet("list"); }
  shoal_status logs(uint64_t, shoal_str, shoal_str) { return notYet("logs"); }
  shoal_status cancel(uint64_t) { return notYet("cancel"); }

 private:
  shoal_status notYet(const char* op) const {
    return host()->fail(instance(), SHOAL_ENOTSUP, "%s: %s is not supported yet", kName, op);
  }

  // Validated now, used by the simulation (issue #5).
  int64_t start_delay_ms_ = 0;  // how long a simulated task takes to reach "running"
  double failure_rate_ = 0.0;   // the probability that a simulated task fails
};

const shoal_runtime_ops kOps = [] {
  using shoal::sdk::op;
  shoal_runtime_ops o{};
  o.struct_size = sizeof o;
  o.describe = op<&SimRuntime::describe>;
  o.prepare = op<&SimRuntime::prepare>;
  o.start = op<&SimRuntime::start>;
  o.wait = op<&SimRuntime::wait>;
  o.shutdown = op<&SimRuntime::shutdown>;
  o.terminate = op<&SimRuntime::terminate>;
  o.remove = op<&SimRuntime::remove>;
  o.inspect = op<&SimRuntime::inspect>;
  o.list = op<&SimRuntime::list>;
  o.logs = op<&SimRuntime::logs>;
  o.cancel = op<&SimRuntime::cancel>;
  return o;
}();

const shoal_plugin_desc kDesc =
    shoal::sdk::describe<SimRuntime>(SHOAL_KIND_RUNTIME, kName, kVersion, &kOps);

}  // namespace

SHOAL_PLUGIN(kDesc)
