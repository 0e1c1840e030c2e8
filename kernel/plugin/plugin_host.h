#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <shoal/plugin.h>

#include "kernel/common/clock.h"
#include "kernel/common/status.h"
#include "kernel/plugin/event_queue.h"
#include "kernel/plugin/plugin_instance.h"
#include "kernel/plugin/policy_broker.h"

namespace shoal::plugin {

// A plugin file the loader would not register, and why.
struct Refusal {
  std::string path;
  std::string message;  // names the file; for version problems, both versions
};

// Loads plugins (dlopen, ABI checks, init) and keeps the registry of loaded instances.
//
// A bad plugin never stops the daemon by itself: it is refused with a message, logged, and
// listed in refusals(); only checkRequired() turns a missing kind into an error.
// THREAD: load*() and shutdown() from the start-up thread; the queries from any thread.
class PluginHost {
 public:
  explicit PluginHost(const Clock& clock = SystemClock::instance());
  ~PluginHost();
  PluginHost(const PluginHost&) = delete;
  PluginHost& operator=(const PluginHost&) = delete;

  // Configuration for the plugins loaded next: JSON object text by plugin name, and names
  // not to load.
  void setPluginConfig(std::map<std::string, std::string> config);
  void setDisabled(std::vector<std::string> names);

  // Load every *.so of each directory (in name order). A missing directory is logged.
  void loadDirectories(const std::vector<std::string>& dirs);
  // Load one file; a refusal is recorded and also returned.
  Status loadFile(const std::string& path);

  // An error naming every kind in `kinds` that has no loaded plugin.
  Status checkRequired(const std::vector<std::string>& kinds) const;

  std::vector<PluginInfo> list() const;
  std::vector<Refusal> refusals() const;
  std::vector<std::string> disabledSkipped() const;
  PluginInstance* find(Kind kind, std::string_view name) const;
  std::vector<PluginInstance*> ofKind(Kind kind) const;

  // Events posted by plugins go to `handler` on the dispatcher thread once start() ran.
  void setEventHandler(EventQueue::Handler handler);
  void start();
  // Unload every plugin (fini, dlclose) in reverse load order, then stop the dispatcher.
  void shutdown();

  // Lua placement policies for the host table's policy_* slots (ABI 1.1): where named
  // policies come from (the manager installs a reader of the replicated store; without one
  // every name is unknown), and the limits policies run under. THREAD: any.
  void setPolicySource(PolicySource source);
  void setPolicyLimits(const policy::Limits& limits);
  PolicyBroker& policies() { return policies_; }

  // The host table handed to every plugin's init.
  static const shoal_host* hostTable();

 private:
  Status refuse(const std::string& path, std::string message);
  Status checkEntryPoint(void* handle, const std::string& path, void* entry) const;

  mutable std::mutex mu_;
  // Declared before instances_, so it outlives them (instances close their handles in it).
  PolicyBroker policies_;
  std::map<std::string, std::string> config_;               // guarded by mu_
  std::vector<std::string> disabled_;                       // guarded by mu_
  std::vector<std::unique_ptr<PluginInstance>> instances_;  // guarded by mu_
  std::vector<Refusal> refusals_;                           // guarded by mu_
  std::vector<std::string> disabledSkipped_;                // guarded by mu_
  EventQueue events_;
};

}  // namespace shoal::plugin
