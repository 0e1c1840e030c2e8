// scheduler-spread: the Lua placement policies of one task group, run by the kernel through the
// host table's policy_* slots (ABI 1.1, sdk/include/shoal/plugin.h).
//
// A PolicySet owns the group's open policy handles: the placement's Lua constraint expressions
// (filters) and its named policy (a filter and/or a score), in the order they filter. It is a
// thin, checked wrapper: every slot that fails throws PolicyFailure, whose message the kernel
// has already attached to the call in progress (it names the policy, the line and the
// problem), so the op returns its code as is. The destructor closes every handle.
// THREAD: only during an op of the instance (the host serialises them, plugin.h).
#pragma once

#include <shoal/plugin.h>

#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::plugins::spread {

// A policy slot failed. The kernel attached its message through host->fail already: return
// code() from the op without calling fail again (which would replace the message).
class PolicyFailure : public std::exception {
 public:
  explicit PolicyFailure(shoal_status code) : code_(code) {}
  shoal_status code() const noexcept { return code_; }
  const char* what() const noexcept override { return "a Lua placement policy call failed"; }

 private:
  shoal_status code_;
};

class PolicySet {
 public:
  // True when `host` has every policy_* slot (a 1.0 host has none).
  static bool hostSupports(const shoal_host* host);

  PolicySet(const shoal_host* host, shoal_instance* inst) : host_(host), inst_(inst) {}
  ~PolicySet();
  PolicySet(const PolicySet&) = delete;
  PolicySet& operator=(const PolicySet&) = delete;

  // Opens one more policy (SHOAL_POLICY_NAMED with a policy object's name, or
  // SHOAL_POLICY_EXPRESSION with a Lua expression) and returns its index.
  size_t open(int32_t kind, const std::string& text);
  size_t size() const { return handles_.size(); }
  int32_t kind(size_t h) const { return handles_[h].kind; }

  // The slots, on handle h. Each throws PolicyFailure when the kernel refuses.
  void bind(size_t h, std::string_view nodesJson, std::string_view groupJson);
  void update(size_t h, const shoal_policy_usage& usage);
  void filter(size_t h, uint8_t* fit, uint32_t nodes);
  void score(size_t h, const uint8_t* fit, int64_t* out, uint32_t nodes);
  // The last filter's rejections as the kernel words them ("" when it rejected none).
  std::string explain(size_t h);

  // The snapshot's usage version (Snapshot::usageVersion) handle h was last told about, so a
  // group knows when it must send the placements other groups made meanwhile.
  uint64_t syncedVersion(size_t h) const { return handles_[h].synced; }
  void setSyncedVersion(size_t h, uint64_t v) { handles_[h].synced = v; }

 private:
  struct Handle {
    int32_t kind = 0;
    shoal_policy* policy = nullptr;
    uint64_t synced = UINT64_MAX;  // none yet
  };

  void check(shoal_status s, const char* slot) const;

  const shoal_host* host_;
  shoal_instance* inst_;
  std::vector<Handle> handles_;
};

}  // namespace shoal::plugins::spread
