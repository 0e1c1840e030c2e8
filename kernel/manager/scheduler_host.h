#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kernel/common/clock.h"
#include "kernel/manager/replicated_store.h"
#include "kernel/plugin/plugin_instance.h"

namespace shoal::manager {

// `shoal policy test`: the tasks a service would get, placed on the cluster as it is now.
struct PreviewRequest {
  std::string serviceId;  // empty for a spec that is not a service yet
  std::string serviceName;
  std::string serviceSpec;  // the service spec JSON (as stored), placement included
  std::size_t count = 1;    // how many tasks to place
};
struct PlacementPreview {
  std::vector<std::pair<std::string, std::string>> nodes;  // per task: (node id, hostname)
  std::string explanation;  // why the first task that fits nowhere does not fit
  std::string error;        // the spec does not read
};

// The kernel's side of scheduling (kernel/manager/README.md, "Scheduling"): on the leader, it
// watches for PENDING tasks, waits a moment so a service's tasks arrive together, builds one
// node snapshot per pass and one group per service spec, asks the scheduler plugin where they
// go (scheduler.h) and commits the answer (ASSIGNED, with the node). A task that fits nowhere
// stays PENDING with the plugin's explanation as its message, and is tried again when nodes or
// tasks change.
// THREAD: start() and stop() from one thread; passes run on the host's own thread.
class SchedulerHost {
 public:
  SchedulerHost(ReplicatedStore& store, plugin::PluginInstance& plugin, const Clock& clock);
  ~SchedulerHost();
  SchedulerHost(const SchedulerHost&) = delete;
  SchedulerHost& operator=(const SchedulerHost&) = delete;

  void start();
  void stop();

  // One scheduling pass over every pending task as the store has it now. Returns the number
  // of tasks assigned. Exposed for tests and benchmarks.
  Result<std::size_t> schedulePass();
  // Where `request`'s tasks would go now, asked of the plugin with the same snapshot a pass
  // builds; nothing is written. Usable on any manager (no thread needed).
  Result<PlacementPreview> preview(const PreviewRequest& request);
  // The store of the pass running on this thread (null outside one): the plugin's policy
  // lookups, made from inside the pass, read policies from it without any other lock.
  static ReplicatedStore* currentStore();

 private:
  void run();
  Result<std::size_t> pass(const PreviewRequest* preview, PlacementPreview* out);

  ReplicatedStore& store_;
  plugin::PluginInstance& plugin_;
  const Clock& clock_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace shoal::manager
