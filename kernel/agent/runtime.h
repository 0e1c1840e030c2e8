#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "kernel/common/status.h"
#include "kernel/plugin/event_queue.h"
#include "kernel/plugin/plugin_instance.h"

namespace shoal::agent {

// The runtime as the agent drives it: SwarmKit's controller ops (runtime.h), each finishing
// through a callback with the op's status and result document (a task status document).
// THREAD: the ops may be called from any thread; callbacks run on whichever thread delivers
// the completion and must not block.
class Runtime {
 public:
  using Done = std::function<void(Status status, const std::string& resultJson)>;
  virtual ~Runtime() = default;
  virtual Status prepare(const std::string& taskId, const std::string& taskJson, Done done) = 0;
  virtual Status start(const std::string& taskId, Done done) = 0;
  virtual Status wait(const std::string& taskId, Done done) = 0;
  virtual Status shutdown(const std::string& taskId, int64_t graceNs, Done done) = 0;
  virtual Status remove(const std::string& taskId, Done done) = 0;
  // Every task the runtime knows (a JSON array of status documents).
  virtual Result<std::string> list() = 0;
};

// A Runtime over a runtime plugin: async ops get an op id, and onEvent (fed by the plugin
// host's event handler) finishes them.
class PluginRuntime final : public Runtime {
 public:
  explicit PluginRuntime(plugin::PluginInstance& plugin) : plugin_(plugin) {}
  Status prepare(const std::string& taskId, const std::string& taskJson, Done done) override;
  Status start(const std::string& taskId, Done done) override;
  Status wait(const std::string& taskId, Done done) override;
  Status shutdown(const std::string& taskId, int64_t graceNs, Done done) override;
  Status remove(const std::string& taskId, Done done) override;
  Result<std::string> list() override;

  // A plugin event: completes the op it names, if it is one of ours.
  void onEvent(const plugin::PluginEvent& event);
  const std::string& pluginName() const { return plugin_.info().name; }

 private:
  template <class F>
  Status call(const char* op, Done done, F&& fn);

  plugin::PluginInstance& plugin_;
  std::mutex mu_;
  uint64_t nextOp_ = 1;               // guarded by mu_
  std::map<uint64_t, Done> pending_;  // guarded by mu_
};

}  // namespace shoal::agent
