#include "kernel/manager/scheduler_host.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <shoal/scheduler.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <sstream>
#include <vector>

#include "kernel/common/log.h"
#include "kernel/manager/service_spec.h"

namespace shoal::manager {
namespace {

using namespace std::chrono_literals;
using Poco::JSON::Array;
using store::Kind;
using store::ObjectPtr;
using store::TaskState;
using JObject = Poco::JSON::Object;

// How long a burst of pending tasks may keep arriving before the pass runs: long enough that a
// service's tasks, created over a few transactions, are placed together. A store that is never
// quiet (status reports streaming in) still gets a pass kMaxDelay after the first change.
constexpr auto kDebounce = 10ms;
constexpr auto kMaxDelay = 100ms;
// Failures of one service on one node within this window rank the node last for it.
constexpr int64_t kFailureWindowNs = 5LL * 60 * 1'000'000'000;
constexpr std::size_t kTxBudget = 2000;

JObject::Ptr parse(const std::string& text) {
  if (text.empty()) return nullptr;
  try {
    return Poco::JSON::Parser().parse(text).extract<JObject::Ptr>();
  } catch (const std::exception&) {
    return nullptr;
  }
}

std::string stringify(const JObject& o) {
  std::ostringstream out;
  o.stringify(out);
  return out.str();
}

bool pendingTask(const store::Object& t) {
  return t.desiredState <= TaskState::kRunning && observedState(t) == TaskState::kPending;
}

// What placement needs from a task's spec (its TaskTemplate), read once per distinct spec.
struct Placement {
  ServiceSpec spec;
  bool ok = false;
  std::string error;
};

struct Group {
  std::string serviceId;
  std::string serviceName;
  const Placement* placement = nullptr;
  // Host ports come from the service's endpoint, not the task template.
  std::vector<std::pair<std::string, int>> hostPorts;
  std::vector<ObjectPtr> tasks;
};

JObject::Ptr resourcesJson(int64_t cpus, int64_t memory) {
  JObject::Ptr r = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
  r->set("nano_cpus", cpus);
  r->set("memory_bytes", memory);
  return r;
}

}  // namespace

SchedulerHost::SchedulerHost(ReplicatedStore& store, plugin::PluginInstance& plugin,
                             const Clock& clock)
    : store_(store), plugin_(plugin), clock_(clock) {}

SchedulerHost::~SchedulerHost() { stop(); }

void SchedulerHost::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { run(); });
}

void SchedulerHost::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void SchedulerHost::run() {
  std::unique_ptr<store::Watch> watch;
  bool due = true;  // a pass at start-up picks up what a previous leader left pending
  auto dueSince = std::chrono::steady_clock::now();
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    if (!watch) {
      auto w = store_.store().watch(store::KindSet{Kind::kTask, Kind::kNode}, std::nullopt);
      if (!w) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, 1s, [this] { return stop_; });
        continue;
      }
      watch = std::move(*w);
      due = true;
      dueSince = std::chrono::steady_clock::now();
    }
    auto batch = watch->nextBatch(due ? kDebounce : 250ms);
    if (!batch) {
      if (batch.status().code() != Status::Code::kTimeout) {
        watch.reset();
        continue;
      }
      if (!due) continue;
    } else {
      for (const auto& e : batch->events) {
        // A new pending task, a task that freed its node, or a node that changed.
        if (e.object->kind == Kind::kNode || e.type == store::EventType::kDeleted ||
            pendingTask(*e.object) || isTerminal(observedState(*e.object))) {
          if (!due) dueSince = std::chrono::steady_clock::now();
          due = true;
        }
      }
      // Let the burst finish: the pass runs once the store is quiet for kDebounce, or once the
      // first change waited kMaxDelay.
      if (due && std::chrono::steady_clock::now() - dueSince < kMaxDelay) continue;
    }
    if (!due) continue;
    due = false;
    auto placed = schedulePass();
    if (!placed) {
      log::warn("scheduler", "scheduling pass failed", {{"error", placed.status().message()}});
    }
  }
}

namespace {
thread_local ReplicatedStore* tlsStore = nullptr;

// Marks this thread as running a pass over `store` (see currentStore).
class PassScope {
 public:
  explicit PassScope(ReplicatedStore* store) : previous_(tlsStore) { tlsStore = store; }
  ~PassScope() { tlsStore = previous_; }
  PassScope(const PassScope&) = delete;
  PassScope& operator=(const PassScope&) = delete;

 private:
  ReplicatedStore* previous_;
};
}  // namespace

ReplicatedStore* SchedulerHost::currentStore() { return tlsStore; }

Result<std::size_t> SchedulerHost::schedulePass() { return pass(nullptr, nullptr); }

Result<PlacementPreview> SchedulerHost::preview(const PreviewRequest& request) {
  PlacementPreview out;
  auto done = pass(&request, &out);
  if (!done) return done.status();
  return out;
}

Result<std::size_t> SchedulerHost::pass(const PreviewRequest* preview, PlacementPreview* out) {
  PassScope scope(&store_);
  const auto& ops = plugin_.ops<shoal_scheduler_ops>();
  const int64_t nowNs = clock_.nowNanos();
  // Read everything the pass needs in one view.
  std::vector<ObjectPtr> nodes;
  std::vector<Group> groups;
  std::map<std::string, Placement> placements;  // by task template text (templateOf)
  std::string snapshotJson;
  std::map<std::string, std::size_t> nodeIndex;
  store_.view([&](const store::ReadView& v) {
    nodes = v.list(Kind::kNode);
    struct Load {
      int64_t cpus = 0, memory = 0, tasks = 0;
      std::map<std::string, int64_t> services, failures;
      std::vector<std::string> ports;
    };
    std::map<std::string, Load> loads;
    std::map<std::pair<std::string, std::string>, std::size_t> groupOf;
    // By template: tasks on networks differ only in their addresses.
    auto placementFor = [&](const store::Object& t) -> const Placement* {
      const std::string tmpl = templateOf(t.spec);
      auto it = placements.find(tmpl);
      if (it != placements.end()) return &it->second;
      Placement p;
      // The task spec is a TaskTemplate; placement reads it as a service spec would.
      auto parsed = parseServiceSpec("{\"TaskTemplate\":" + tmpl + "}");
      if (parsed) {
        p.spec = *parsed;
        p.ok = true;
      } else {
        p.error = parsed.status().message();
      }
      return &placements.emplace(tmpl, std::move(p)).first->second;
    };
    std::map<std::string, ObjectPtr> services;
    std::map<std::string, std::vector<std::string>> servicePorts;  // host-mode "tcp/80"
    std::map<std::string, std::vector<std::pair<std::string, int>>> serviceHostPorts;
    for (const auto& s : v.list(Kind::kService)) {
      services.emplace(s->id, s);
      if (auto ss = parseServiceSpec(s->spec)) {
        serviceHostPorts[s->id] = ss->hostPorts;
        for (const auto& [proto, port] : ss->hostPorts) {
          servicePorts[s->id].push_back(proto + "/" + std::to_string(port));
        }
      }
    }
    for (const auto& t : v.list(Kind::kTask)) {
      const TaskState obs = observedState(*t);
      if (pendingTask(*t) && preview) continue;  // a preview places only its own tasks
      if (pendingTask(*t)) {
        auto svc = services.find(t->serviceId);
        if (svc == services.end()) continue;
        auto key = std::make_pair(t->serviceId, templateOf(t->spec));
        auto it = groupOf.find(key);
        if (it == groupOf.end()) {
          Group g;
          g.serviceId = t->serviceId;
          g.serviceName = svc->second->name;
          g.placement = placementFor(*t);
          g.hostPorts = serviceHostPorts[t->serviceId];
          groups.push_back(std::move(g));
          it = groupOf.emplace(key, groups.size() - 1).first;
        }
        groups[it->second].tasks.push_back(t);
        continue;
      }
      if (t->nodeId.empty()) continue;
      auto& load = loads[t->nodeId];
      if (failedState(obs) && nowNs - t->updatedNs < kFailureWindowNs) {
        ++load.failures[t->serviceId];
      }
      if (t->desiredState > TaskState::kRunning || isTerminal(obs)) continue;
      const Placement* p = placementFor(*t);
      ++load.tasks;
      ++load.services[t->serviceId];
      if (p->ok) {
        load.cpus += p->spec.reserveNanoCpus;
        load.memory += p->spec.reserveMemory;
      }
      for (const auto& p : servicePorts[t->serviceId]) load.ports.push_back(p);
    }
    if (preview) {
      // The tasks the service would have, as the orchestrator would create them.
      auto spec = parseServiceSpec(preview->serviceSpec);
      if (!spec) {
        out->error = spec.status().message();
        return;
      }
      Group g;
      g.serviceId = preview->serviceId.empty() ? "preview" : preview->serviceId;
      g.serviceName = preview->serviceName;
      g.hostPorts = spec->hostPorts;
      for (std::size_t k = 0; k < preview->count; ++k) {
        auto t = std::make_shared<store::Object>();
        t->kind = Kind::kTask;
        t->id = "preview-" + std::to_string(k + 1);
        t->serviceId = g.serviceId;
        t->slot = k + 1;
        t->spec = spec->taskTemplate;
        if (k == 0) g.placement = placementFor(*t);
        g.tasks.push_back(t);
      }
      if (!g.tasks.empty()) groups.push_back(std::move(g));
    }
    if (groups.empty()) return;
    JObject snap(Poco::JSON_PRESERVE_KEY_ORDER);
    snap.set("schema", std::string("shoal.nodes/v1"));
    Array::Ptr list = new Array;
    for (const auto& n : nodes) {
      nodeIndex[n->id] = nodeIndex.size();
      const NodeFacts facts = nodeFacts(*n);
      JObject::Ptr o = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
      o->set("id", n->id);
      o->set("hostname", facts.hostname);
      o->set("role", facts.role);
      o->set("availability", std::string(store::availabilityName(n->availability)));
      auto status = parse(n->status);
      o->set("state", status ? status->optValue<std::string>("State", "unknown") : "unknown");
      JObject::Ptr platform = new JObject;
      platform->set("os", facts.os);
      platform->set("arch", facts.arch);
      o->set("platform", platform);
      JObject::Ptr labels = new JObject;
      for (const auto& [k, val] : facts.labels) labels->set(k, val);
      o->set("labels", labels);
      JObject::Ptr engine = new JObject;
      for (const auto& [k, val] : facts.engineLabels) engine->set(k, val);
      o->set("engine_labels", engine);
      int64_t cpus = 0, memory = 0;
      if (status) {
        if (auto d = status->getObject("Description")) {
          if (auto r = d->getObject("Resources")) {
            cpus = r->optValue<int64_t>("NanoCPUs", 0);
            memory = r->optValue<int64_t>("MemoryBytes", 0);
          }
        }
      }
      o->set("resources", resourcesJson(cpus, memory));
      const Load& load = loads[n->id];
      o->set("reserved", resourcesJson(load.cpus, load.memory));
      o->set("tasks", load.tasks);
      JObject::Ptr perService = new JObject;
      for (const auto& [s, c] : load.services) perService->set(s, c);
      o->set("service_tasks", perService);
      Array::Ptr ports = new Array;
      for (const auto& p : load.ports) ports->add(p);
      o->set("host_ports", ports);
      JObject::Ptr failures = new JObject;
      for (const auto& [s, c] : load.failures) failures->set(s, c);
      o->set("failures", failures);
      list->add(o);
    }
    snap.set("nodes", list);
    snapshotJson = stringify(snap);
  });
  if (preview && !out->error.empty()) return Status::invalidArgument(out->error);
  if (groups.empty()) return std::size_t{0};

  shoal_sched_snapshot* snap = nullptr;
  uint32_t count = 0;
  if (Status s = plugin_.invoke("snapshot_open",
                                [&](void* st) {
                                  return ops.snapshot_open(
                                      st, shoal_str{snapshotJson.data(), snapshotJson.size()},
                                      &snap, &count);
                                });
      !s) {
    return s;
  }
  struct Decision {
    ObjectPtr task;
    std::string nodeId;   // empty: not placed
    std::string message;  // why not
  };
  std::vector<Decision> decisions;
  for (const auto& g : groups) {
    if (!g.placement->ok) {
      for (const auto& t : g.tasks) decisions.push_back({t, "", g.placement->error});
      continue;
    }
    const ServiceSpec& spec = g.placement->spec;
    JObject doc(Poco::JSON_PRESERVE_KEY_ORDER);
    doc.set("schema", std::string("shoal.task-group/v1"));
    doc.set("service_id", g.serviceId);
    doc.set("service_name", g.serviceName);
    JObject::Ptr gs = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
    JObject::Ptr placement = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
    Array::Ptr constraints = new Array;
    for (const auto& c : spec.constraints) constraints->add(c);
    placement->set("constraints", constraints);
    Array::Ptr prefs = new Array;
    for (const auto& p : spec.preferences) prefs->add(p);
    placement->set("preferences", prefs);
    placement->set("max_replicas", static_cast<int64_t>(spec.maxReplicas));
    Array::Ptr platforms = new Array;
    for (const auto& [os, arch] : spec.platforms) {
      JObject::Ptr p = new JObject;
      p->set("os", os);
      p->set("arch", arch);
      platforms->add(p);
    }
    placement->set("platforms", platforms);
    if (!spec.policy.empty()) placement->set("policy", spec.policy);
    if (!spec.luaConstraint.empty()) placement->set("lua_constraints", spec.luaConstraint);
    gs->set("placement", placement);
    gs->set("resources", resourcesJson(spec.reserveNanoCpus, spec.reserveMemory));
    Array::Ptr ports = new Array;
    for (const auto& [proto, port] : g.hostPorts) {
      JObject::Ptr p = new JObject;
      p->set("protocol", proto);
      p->set("published", port);
      ports->add(p);
    }
    gs->set("ports", ports);
    doc.set("spec", gs);
    Array::Ptr ids = new Array;
    for (const auto& t : g.tasks) ids->add(t->id);
    doc.set("tasks", ids);
    const std::string groupJson = stringify(doc);
    shoal_sched_group* group = nullptr;
    Status s = plugin_.invoke("group_open", [&](void* st) {
      return ops.group_open(st, snap, shoal_str{groupJson.data(), groupJson.size()}, &group);
    });
    if (!s) {
      for (const auto& t : g.tasks) decisions.push_back({t, "", s.message()});
      continue;
    }
    // Tasks already bound to a node (global services) only need that node to fit.
    std::vector<ObjectPtr> free, bound;
    for (const auto& t : g.tasks) (t->nodeId.empty() ? free : bound).push_back(t);
    std::vector<int32_t> out(free.size(), -1);
    if (!free.empty()) {
      s = plugin_.invoke("assign", [&](void* st) {
        return ops.assign(st, group, static_cast<uint32_t>(free.size()), out.data());
      });
    }
    std::string why;
    auto explain = [&]() -> std::string {
      if (!why.empty()) return why;
      shoal_buf buf{};
      Status e = plugin_.invoke("explain", [&](void* st) { return ops.explain(st, group, &buf); });
      why = e ? std::string(buf.ptr ? buf.ptr : "", buf.len) : e.message();
      std::free(buf.ptr);
      return why;
    };
    for (std::size_t k = 0; k < free.size(); ++k) {
      if (!s) {
        decisions.push_back({free[k], "", s.message()});
      } else if (out[k] >= 0 && static_cast<std::size_t>(out[k]) < nodes.size()) {
        decisions.push_back({free[k], nodes[static_cast<std::size_t>(out[k])]->id, ""});
      } else {
        decisions.push_back({free[k], "", explain()});
      }
    }
    if (!bound.empty()) {
      std::vector<uint8_t> fit(nodes.size(), 0);
      Status f = plugin_.invoke("filter", [&](void* st) {
        return ops.filter(st, group, fit.data(), static_cast<uint32_t>(fit.size()));
      });
      for (const auto& t : bound) {
        auto at = nodeIndex.find(t->nodeId);
        if (f && at != nodeIndex.end() && fit[at->second]) {
          decisions.push_back({t, t->nodeId, ""});
        } else {
          decisions.push_back({t, "", f ? explain() : f.message()});
        }
      }
    }
    plugin_.invoke("group_close", [&](void* st) {
      ops.group_close(st, group);
      return SHOAL_OK;
    });
  }
  plugin_.invoke("snapshot_close", [&](void* st) {
    ops.snapshot_close(st, snap);
    return SHOAL_OK;
  });

  if (preview) {
    for (const auto& d : decisions) {
      std::string hostname;
      for (const auto& n : nodes) {
        if (n->id == d.nodeId) hostname = nodeFacts(*n).hostname;
      }
      out->nodes.push_back({d.nodeId, hostname});
      if (d.nodeId.empty() && out->explanation.empty()) out->explanation = d.message;
    }
    return out->nodes.size();
  }
  // Commit in transactions of bounded size; a task that changed meanwhile is skipped (the
  // next pass sees it as it is now).
  std::size_t placed = 0;
  for (std::size_t begin = 0; begin < decisions.size(); begin += kTxBudget) {
    const std::size_t end = std::min(decisions.size(), begin + kTxBudget);
    std::size_t batchPlaced = 0;
    Status s = store_.update(
        [&](store::Tx& tx) {
          batchPlaced = 0;
          for (std::size_t i = begin; i < end; ++i) {
            const Decision& d = decisions[i];
            auto current = tx.get(Kind::kTask, d.task->id);
            if (!current || current->version != d.task->version) continue;
            TaskStatus st;
            st.timestampNs = nowNs;
            if (d.nodeId.empty()) {
              st.state = TaskState::kPending;
              st.message = d.message;
              st.err = d.message;
              auto old = parseTaskStatus(current->status);
              if (old && old->err == d.message) continue;  // already says so
            } else {
              st.state = TaskState::kAssigned;
              st.message = "scheduler assigned task to node";
              ++batchPlaced;
            }
            store::Object copy = *current;
            copy.nodeId = d.nodeId.empty() ? current->nodeId : d.nodeId;
            copy.status = taskStatusJson(st);
            if (Status u = tx.update(std::move(copy)); !u) return u;
          }
          return Status::ok();
        },
        10s);
    if (!s) return s;
    placed += batchPlaced;
  }
  return placed;
}

}  // namespace shoal::manager
