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

// A network plugin (network.h) as the kernel drives it: the manager half (allocation, used by
// the leader's allocator) as synchronous calls, the node half (attach/detach, used by the
// agent) as async ops finishing through a callback, and the peers/services updates.
// THREAD: any thread; callbacks run on whichever thread delivers the completion.
class PluginNetwork {
 public:
  using Done = std::function<void(Status status, const std::string& resultJson)>;

  explicit PluginNetwork(plugin::PluginInstance& plugin) : plugin_(plugin) {}

  Result<std::string> describe();
  Status restore(const std::string& allocationsJson);
  Result<std::string> allocateNetwork(const std::string& networkJson);
  Status releaseNetwork(const std::string& networkId);
  Result<std::string> allocateEndpoint(const std::string& requestJson);
  Status releaseEndpoint(const std::string& endpointJson);

  Status attach(const std::string& taskId, const std::string& attachJson, Done done);
  Status detach(const std::string& taskId, Done done);
  Status updatePeers(const std::string& peersJson);
  Status updateServices(const std::string& servicesJson);

  // A plugin event: completes the op it names, if it is one of ours.
  void onEvent(const plugin::PluginEvent& event);
  const std::string& pluginName() const { return plugin_.info().name; }

 private:
  template <class F>
  Result<std::string> callOut(const char* op, F&& fn);
  template <class F>
  Status callAsync(const char* op, Done done, F&& fn);

  plugin::PluginInstance& plugin_;
  std::mutex mu_;
  uint64_t nextOp_ = 1;               // guarded by mu_
  std::map<uint64_t, Done> pending_;  // guarded by mu_
};

}  // namespace shoal::agent
