#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include <shoal/plugin.h>

#include "kernel/common/status.h"
#include "kernel/policy/limits.h"

namespace shoal::policy {
class NodeSnapshot;
class Policy;
}  // namespace shoal::policy

namespace shoal::plugin {

class PluginInstance;

// Where named policies come from: the Lua source of the policy object `name`, or kNotFound.
// The manager installs one that reads the replicated store. Called on the plugin's thread
// during its op, without the broker's lock held.
using PolicySource = std::function<Result<std::string>(const std::string& name)>;

// The kernel side of the host table's policy_* slots (ABI 1.1): opens kernel/policy Policies
// for plugin instances, hands out shoal_policy handles, and caches what is expensive to redo
// on every pass:
//  - compiled policies, by (kind, name, source): policy_close puts the Policy (with its Lua
//    state and node tables) into a small LRU of idle ones, and policy_open of the same policy
//    takes it back, so a pass neither recompiles nor, for an unchanged snapshot, rebuilds the
//    node tables; a policy object whose source changed gets a new key, so it recompiles;
//  - the parsed node snapshot, per instance: every handle an instance binds to the same
//    nodes_json text shares one parse.
// THREAD: open/close/bind/... come from plugin threads, each handle only from its instance
// (whose calls the host serialises); the broker's own state is guarded by mu_. Evaluation
// runs outside the lock.
class PolicyBroker {
 public:
  PolicyBroker();
  ~PolicyBroker();
  PolicyBroker(const PolicyBroker&) = delete;
  PolicyBroker& operator=(const PolicyBroker&) = delete;

  void setSource(PolicySource source);
  // Limits for policies compiled from now on (the idle cache is emptied).
  void setLimits(const policy::Limits& limits);
  // How many idle compiled policies to keep (default 8).
  void setCacheCapacity(std::size_t capacity);

  // The slots, in kernel terms. Errors are the Status the slot turns into host->fail.
  Result<shoal_policy*> open(PluginInstance* owner, int32_t kind, std::string_view text);
  void close(PluginInstance* owner, shoal_policy* p);
  Status bind(PluginInstance* owner, shoal_policy* p, std::string_view nodesJson,
              std::string_view groupJson);
  Status update(PluginInstance* owner, shoal_policy* p, const shoal_policy_usage* usage);
  Status filter(PluginInstance* owner, shoal_policy* p, uint8_t* fit, uint32_t nodes);
  Status score(PluginInstance* owner, shoal_policy* p, const uint8_t* fit, int64_t* out,
               uint32_t nodes);
  Result<std::string> explain(PluginInstance* owner, shoal_policy* p);

  // Closes the handles an instance left open and forgets its snapshot (the instance is going
  // away: after fini).
  void closeAllOf(PluginInstance* owner);

  struct Stats {
    uint64_t compiles = 0;        // policies compiled
    uint64_t cacheHits = 0;       // opens served from the idle cache
    uint64_t snapshotParses = 0;  // node snapshots parsed
    std::size_t open = 0;         // handles open now
    std::size_t idle = 0;         // compiled policies in the cache
  };
  Stats stats() const;

 private:
  struct Idle {
    std::string key;
    std::unique_ptr<policy::Policy> policy;
  };
  struct Snapshot {
    std::string text;
    std::shared_ptr<const policy::NodeSnapshot> parsed;
  };

  Status check(PluginInstance* owner, shoal_policy* p) const;
  Result<std::shared_ptr<const policy::NodeSnapshot>> snapshotFor(PluginInstance* owner,
                                                                  std::string_view text);

  mutable std::mutex mu_;
  PolicySource source_;                                      // guarded by mu_
  policy::Limits limits_;                                    // guarded by mu_
  std::size_t capacity_ = 8;                                 // guarded by mu_
  std::list<Idle> idle_;                                     // guarded by mu_; most recent first
  std::unordered_set<shoal_policy*> open_;                   // guarded by mu_
  std::unordered_map<PluginInstance*, Snapshot> snapshots_;  // guarded by mu_
  Stats stats_;                                              // guarded by mu_
};

}  // namespace shoal::plugin
