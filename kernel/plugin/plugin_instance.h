#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <string_view>

#include <shoal/plugin.h>

#include "kernel/common/status.h"
#include "kernel/plugin/plugin_kind.h"

namespace shoal::plugin {
class PluginInstance;
}  // namespace shoal::plugin

// The opaque handle a plugin holds (plugin.h); it names its PluginInstance.
struct shoal_instance {
  shoal::plugin::PluginInstance* owner;
};

namespace shoal::plugin {

class EventQueue;
class PolicyBroker;

// What the loader learned about a plugin, for listings.
struct PluginInfo {
  std::string path;
  std::string name;
  std::string version;
  Kind kind = Kind::kScheduler;
  uint16_t abiMajor = 0;
  uint16_t abiMinor = 0;
};

// One loaded and initialised plugin. Calls into it are serialised: invoke() holds callMu_ for
// the whole call, so no two ops of one instance ever overlap (the ABI's THREAD rule).
class PluginInstance {
 public:
  PluginInstance(PluginInfo info, void* dlHandle, const shoal_plugin_desc* desc,
                 EventQueue* events);
  ~PluginInstance();  // runs fini (if init succeeded) and dlclose
  PluginInstance(const PluginInstance&) = delete;
  PluginInstance& operator=(const PluginInstance&) = delete;

  const PluginInfo& info() const { return info_; }

  // The ops table, cast to the kind's type (e.g. ops<shoal_runtime_ops>()). The loader checked
  // its size and that no v1 op is null.
  template <class Ops>
  const Ops& ops() const {
    return *static_cast<const Ops*>(desc_->ops);
  }

  // Call init with the plugin's configuration (JSON object text). Done once, by the loader.
  Status init(const shoal_host* host, std::string_view configJson);

  // Make one call into the plugin: `fn(state)` must call exactly one op and return its status.
  // Serialised with every other call into this instance. Exceptions that escape the plugin are
  // caught here (a second line of defence behind plugin.hpp). For `async` ops SHOAL_EAGAIN is
  // success; for synchronous ones it is a contract violation.
  template <class F>
  Status invoke(std::string_view op, F&& fn, bool async = false) {
    std::lock_guard<std::mutex> lock(callMu_);
    CallScope scope(this);
    shoal_status code;
    try {
      code = fn(state_);
    } catch (const std::exception& e) {
      return escapedException(op, e.what());
    } catch (...) {
      return escapedException(op, "an exception of unknown type");
    }
    return toStatus(op, code, async, scope.message());
  }

  // Begin shutting down: post() refuses further events. Called before the destructor.
  void close();
  bool closing() const { return closing_.load(); }

  // Host-table plumbing (plugin_host.cpp, host_policy.cpp).
  shoal_instance* handle() { return &handle_; }
  EventQueue* events() const { return events_; }
  // The broker behind the host table's policy_* slots; set by the PluginHost before init.
  // The instance closes the policy handles its plugin left open once fini has run.
  void setPolicyBroker(PolicyBroker* broker) { policies_ = broker; }
  PolicyBroker* policyBroker() const { return policies_; }
  // Attach a host->fail message to the call running on this thread, if it is one of ours.
  // Returns false when the calling thread is not inside a call of this instance.
  bool recordFailure(std::string message);

 private:
  // Marks the calling thread as "inside a call of this instance", so host->fail attaches its
  // message to this call and only to it. Nests (a call may lead into another plugin).
  class CallScope {
   public:
    explicit CallScope(PluginInstance* self);
    ~CallScope();
    CallScope(const CallScope&) = delete;
    CallScope& operator=(const CallScope&) = delete;
    const std::string& message() const { return message_; }

    PluginInstance* self_;
    CallScope* previous_;
    std::string message_;
  };

  Status toStatus(std::string_view op, shoal_status code, bool async,
                  const std::string& message) const;
  Status escapedException(std::string_view op, const char* what) const;

  PluginInfo info_;
  void* dlHandle_;
  const shoal_plugin_desc* desc_;
  EventQueue* events_;
  PolicyBroker* policies_ = nullptr;  // set before init, then read-only
  shoal_instance handle_;
  std::mutex callMu_;         // serialises every call into the plugin, init and fini included
  void* state_ = nullptr;     // guarded by callMu_ (the plugin's own state)
  bool initialised_ = false;  // guarded by callMu_
  std::atomic<bool> closing_{false};
};

// Map a plugin status to the kernel's Status codes, and back (for the host's own errors).
Status::Code statusCodeFor(shoal_status code);
shoal_status shoalStatusFor(Status::Code code);
std::string_view shoalStatusName(shoal_status code);

}  // namespace shoal::plugin
