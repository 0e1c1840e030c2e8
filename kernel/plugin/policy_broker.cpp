#include "kernel/plugin/policy_broker.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "kernel/common/log.h"
#include "kernel/plugin/plugin_instance.h"
#include "kernel/policy/node_snapshot.h"
#include "kernel/policy/policy.h"
#include "kernel/policy/task_group.h"

// What a plugin holds: one open Policy, lent to the instance that opened it.
struct shoal_policy {
  shoal::plugin::PluginInstance* owner = nullptr;
  std::string key;  // the cache key of its Policy
  std::unique_ptr<shoal::policy::Policy> policy;
};

namespace shoal::plugin {
namespace {

std::string cacheKey(int32_t kind, std::string_view name, std::string_view source) {
  std::string key = kind == SHOAL_POLICY_NAMED ? "N" : "E";
  key.append(name);
  key += '\0';
  key.append(source);
  return key;
}

}  // namespace

PolicyBroker::PolicyBroker() = default;

PolicyBroker::~PolicyBroker() {
  for (shoal_policy* p : open_) delete p;
}

void PolicyBroker::setSource(PolicySource source) {
  std::lock_guard<std::mutex> lock(mu_);
  source_ = std::move(source);
}

void PolicyBroker::setLimits(const policy::Limits& limits) {
  std::list<Idle> dropped;
  std::lock_guard<std::mutex> lock(mu_);
  limits_ = limits;
  dropped.swap(idle_);
}

void PolicyBroker::setCacheCapacity(std::size_t capacity) {
  std::list<Idle> dropped;
  std::lock_guard<std::mutex> lock(mu_);
  capacity_ = capacity;
  while (idle_.size() > capacity_) {
    dropped.splice(dropped.end(), idle_, std::prev(idle_.end()));
  }
}

Result<shoal_policy*> PolicyBroker::open(PluginInstance* owner, int32_t kind,
                                         std::string_view text) {
  PolicySource source;
  policy::Limits limits;
  {
    std::lock_guard<std::mutex> lock(mu_);
    source = source_;
    limits = limits_;
  }
  std::string name(text);
  std::string code;
  if (kind == SHOAL_POLICY_NAMED) {
    if (name.empty()) return Status::invalidArgument("policy_open: the policy name is empty");
    if (!source) {
      return Status::notFound("no policy named \"" + name +
                              "\" (this shoald has no policy store to look it up in)");
    }
    Result<std::string> found = source(name);
    if (!found) {
      if (found.status().code() == Status::Code::kNotFound) {
        return Status::notFound("no policy named \"" + name + "\"");
      }
      return Status(found.status().code(), "policy \"" + name + "\": " + found.status().message());
    }
    code = std::move(found).value();
  } else if (kind != SHOAL_POLICY_EXPRESSION) {
    return Status::invalidArgument("policy_open: unknown kind " + std::to_string(kind) +
                                   " (want SHOAL_POLICY_NAMED 1 or SHOAL_POLICY_EXPRESSION 2)");
  }
  std::string key = cacheKey(kind, name, code);

  std::unique_ptr<policy::Policy> compiled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it =
        std::find_if(idle_.begin(), idle_.end(), [&](const Idle& idle) { return idle.key == key; });
    if (it != idle_.end()) {
      compiled = std::move(it->policy);
      idle_.erase(it);
      ++stats_.cacheHits;
    }
  }
  if (!compiled) {
    auto made = kind == SHOAL_POLICY_NAMED ? policy::Policy::compile(name, code, limits)
                                           : policy::Policy::expression(text, limits);
    if (!made) return made.status();
    compiled = std::move(made).value();
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.compiles;
  }
  auto handle = std::make_unique<shoal_policy>();
  handle->owner = owner;
  handle->key = std::move(key);
  handle->policy = std::move(compiled);
  std::lock_guard<std::mutex> lock(mu_);
  open_.insert(handle.get());
  return handle.release();
}

void PolicyBroker::close(PluginInstance* owner, shoal_policy* p) {
  if (p == nullptr) return;
  std::unique_ptr<shoal_policy> handle;
  std::list<Idle> evicted;  // destroyed after the lock is released
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = open_.find(p);
    if (it == open_.end() || p->owner != owner) {
      log::warn("plugin", "policy_close of a handle this plugin does not hold",
                {{"plugin", owner != nullptr ? owner->info().name : "?"}});
      return;
    }
    open_.erase(it);
    handle.reset(p);
    if (capacity_ > 0) {
      idle_.push_front({std::move(handle->key), std::move(handle->policy)});
      while (idle_.size() > capacity_) {
        evicted.splice(evicted.end(), idle_, std::prev(idle_.end()));
      }
    }
  }
}

Status PolicyBroker::check(PluginInstance* owner, shoal_policy* p) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (p == nullptr || open_.count(p) == 0 || p->owner != owner) {
    return Status::invalidArgument("not an open policy handle of this plugin");
  }
  return Status::ok();
}

Result<std::shared_ptr<const policy::NodeSnapshot>> PolicyBroker::snapshotFor(
    PluginInstance* owner, std::string_view text) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = snapshots_.find(owner);
    if (it != snapshots_.end() && it->second.text == text) return it->second.parsed;
  }
  auto parsed = policy::NodeSnapshot::parse(text);
  if (!parsed) return parsed.status();
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.snapshotParses;
  Snapshot& slot = snapshots_[owner];
  slot.text.assign(text);
  slot.parsed = *parsed;
  return slot.parsed;
}

Status PolicyBroker::bind(PluginInstance* owner, shoal_policy* p, std::string_view nodesJson,
                          std::string_view groupJson) {
  if (Status s = check(owner, p); !s) return s;
  policy::Policy& pol = *p->policy;
  if (groupJson.empty()) {
    return Status::invalidArgument(pol.label() + ": policy_bind needs the group document");
  }
  std::shared_ptr<const policy::NodeSnapshot> nodes;
  if (nodesJson.empty()) {
    nodes = pol.boundNodes();
    if (!nodes) {
      return Status::invalidArgument(pol.label() +
                                     ": policy_bind: no node snapshot bound yet (pass the "
                                     "nodes document)");
    }
  } else {
    auto snap = snapshotFor(owner, nodesJson);
    if (!snap) return snap.status().withContext(pol.label());
    nodes = std::move(snap).value();
  }
  auto group = policy::TaskGroup::parse(groupJson);
  if (!group) return group.status().withContext(pol.label());
  if (Status s = pol.bindNodes(std::move(nodes)); !s) return s;
  return pol.setGroup(std::move(group).value());
}

Status PolicyBroker::update(PluginInstance* owner, shoal_policy* p,
                            const shoal_policy_usage* usage) {
  if (Status s = check(owner, p); !s) return s;
  if (usage == nullptr || usage->struct_size < sizeof(shoal_policy_usage)) {
    return Status::invalidArgument(p->policy->label() +
                                   ": policy_update needs a shoal_policy_usage of at least " +
                                   std::to_string(sizeof(shoal_policy_usage)) + " bytes");
  }
  policy::UsageUpdate u;
  u.nodes = usage->nodes;
  u.count = usage->count;
  u.reservedNanoCpus = usage->reserved_nano_cpus;
  u.reservedMemoryBytes = usage->reserved_memory_bytes;
  u.tasks = usage->tasks;
  u.serviceTasks = usage->service_tasks;
  return p->policy->updateUsage(u);
}

Status PolicyBroker::filter(PluginInstance* owner, shoal_policy* p, uint8_t* fit, uint32_t nodes) {
  if (Status s = check(owner, p); !s) return s;
  return p->policy->filter(fit, nodes);
}

Status PolicyBroker::score(PluginInstance* owner, shoal_policy* p, const uint8_t* fit, int64_t* out,
                           uint32_t nodes) {
  if (Status s = check(owner, p); !s) return s;
  return p->policy->score(fit, out, nodes);
}

Result<std::string> PolicyBroker::explain(PluginInstance* owner, shoal_policy* p) {
  if (Status s = check(owner, p); !s) return s;
  return p->policy->explain();
}

void PolicyBroker::closeAllOf(PluginInstance* owner) {
  std::vector<std::unique_ptr<shoal_policy>> doomed;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = open_.begin(); it != open_.end();) {
    if ((*it)->owner == owner) {
      doomed.emplace_back(*it);
      it = open_.erase(it);
    } else {
      ++it;
    }
  }
  snapshots_.erase(owner);
  if (!doomed.empty()) {
    log::debug("plugin", "closed policy handles left open at fini",
               {{"count", std::to_string(doomed.size())}});
  }
}

PolicyBroker::Stats PolicyBroker::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s = stats_;
  s.open = open_.size();
  s.idle = idle_.size();
  return s;
}

}  // namespace shoal::plugin
