#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include <shoal/plugin.h>

#include "kernel/plugin/plugin_kind.h"

namespace shoal::plugin {

// An event a plugin posted (a deep copy of shoal_event), tagged with its plugin.
struct PluginEvent {
  std::string plugin;
  Kind kind = Kind::kScheduler;
  int32_t type = 0;
  uint64_t op = 0;
  shoal_status status = SHOAL_OK;
  std::string subject;
  std::string json;
};

// The bounded queue behind host->post, drained by one dispatcher thread that hands events to
// the kernel's handler. push() never blocks and never calls into a plugin, so a plugin may
// post from inside an op, from its own threads, or while another op of it runs.
class EventQueue {
 public:
  using Handler = std::function<void(const PluginEvent&)>;

  explicit EventQueue(std::size_t capacity = 65536);
  ~EventQueue();

  void setHandler(Handler handler);  // before start()
  void start();                      // starts the dispatcher thread
  void stop();                       // delivers what is queued, then stops the thread

  // SHOAL_OK, or SHOAL_ENOMEM when full. THREAD: any.
  shoal_status push(PluginEvent event);

  std::size_t dropped() const;

 private:
  void run();

  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<PluginEvent> queue_;  // guarded by mu_
  bool stopping_ = false;          // guarded by mu_
  std::size_t dropped_ = 0;        // guarded by mu_
  Handler handler_;                // set before start
  std::thread thread_;
};

}  // namespace shoal::plugin
