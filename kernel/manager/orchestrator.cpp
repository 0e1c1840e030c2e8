#include "kernel/manager/orchestrator.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <sstream>

#include "kernel/agent/wire.h"
#include "kernel/common/log.h"

namespace shoal::manager {
namespace {

using namespace std::chrono_literals;
using store::Kind;
using store::KindSet;
using store::Object;
using store::ObjectPtr;
using store::TaskState;

constexpr uint64_t kDefaultHistory = 5;
// Changes per transaction: well inside the store's 10,000-object limit, and small enough that
// a big service's first tasks are scheduled while the rest are still being created.
constexpr std::size_t kTxBudget = 2000;

struct NodeInfo {
  std::string state;  // "ready", "down", ...
  store::NodeAvailability availability = store::NodeAvailability::kActive;
  ObjectPtr object;
};

Poco::JSON::Object::Ptr parse(const std::string& text) {
  if (text.empty()) return nullptr;
  try {
    return Poco::JSON::Parser().parse(text).extract<Poco::JSON::Object::Ptr>();
  } catch (const std::exception&) {
    return nullptr;
  }
}

std::string stringify(const Poco::JSON::Object& o) {
  std::ostringstream out;
  o.stringify(out);
  return out.str();
}

uint64_t historyLimit(const store::ReadView& view) {
  for (const auto& c : view.list(Kind::kCluster)) {
    auto spec = parse(c->spec);
    if (!spec) continue;
    if (auto o = spec->getObject("Orchestration")) {
      if (o->has("TaskHistoryRetentionLimit")) {
        return static_cast<uint64_t>(
            std::max<int64_t>(0, o->getValue<int64_t>("TaskHistoryRetentionLimit")));
      }
    }
  }
  return kDefaultHistory;
}

std::map<std::string, NodeInfo> nodeInfos(const store::ReadView& view) {
  std::map<std::string, NodeInfo> nodes;
  for (const auto& n : view.list(Kind::kNode)) {
    NodeInfo info;
    info.availability = n->availability;
    info.object = n;
    // Read in place: this runs for every node on every pass over a service.
    info.state = agent::wire::stringMember(n->status, "State");
    nodes.emplace(n->id, std::move(info));
  }
  return nodes;
}

// The classes of a task's observed state that a pass tells apart (reconcileService): not yet
// on a node, on its way (ASSIGNED .. STARTING), RUNNING, and each end state on its own.
int passClass(TaskState s) {
  if (s < TaskState::kAssigned) return 0;
  if (s < TaskState::kRunning) return 1;
  if (s == TaskState::kRunning) return 2;
  return 3 + static_cast<int>(s);
}

// What a task change means for its service's next pass: nothing (only its status moved within
// a class, e.g. an agent's PREPARING report), only something while the service rolls an update
// (a task reaching RUNNING: the update's progress), or a pass in any case.
// kIfNodeGone: the task got its node, which matters only if that node went down or was
// drained while the scheduler placed it (a pass before the commit saw the task unassigned).
enum class TaskChange { kNone, kIfUpdating, kIfNodeGone, kAlways };

TaskChange taskChange(const store::Event& e) {
  if (e.type != store::EventType::kUpdated || !e.previous) return TaskChange::kAlways;
  const Object& a = *e.previous;
  const Object& b = *e.object;
  // The scheduler's commit gives a task its node: a move off "" is not a move.
  const bool nodeMoved = a.nodeId != b.nodeId && !a.nodeId.empty();
  if (a.desiredState != b.desiredState || nodeMoved || a.serviceId != b.serviceId ||
      a.slot != b.slot || a.spec != b.spec || a.createdNs != b.createdNs) {
    return TaskChange::kAlways;
  }
  const int from = passClass(observedState(a)), to = passClass(observedState(b));
  if (from == to) return TaskChange::kNone;
  // Assigned (from pending or new): no pass decides differently for a task that waits for a
  // node and one that waits on it — and the scheduler's commits over a big service would
  // otherwise cost a read of all its tasks each.
  if (from == 0 && to == 1) return TaskChange::kIfNodeGone;
  if (from == 1 && to == 2) return TaskChange::kIfUpdating;
  return TaskChange::kAlways;
}

// A service rolling an update or a rollback forward (its UpdateStatus says so).
bool rollingUpdate(const Object& service) {
  auto update = agent::wire::member(service.status, "UpdateStatus");
  if (!update) return false;
  const std::string state = agent::wire::stringMember(*update, "State");
  return state == "updating" || state == "rollback_started";
}

bool nodeUp(const std::map<std::string, NodeInfo>& nodes, const std::string& id) {
  auto it = nodes.find(id);
  return it != nodes.end() && it->second.state != "down";
}

}  // namespace

Orchestrator::Orchestrator(ReplicatedStore& store, Random& random, const Clock& clock)
    : store_(store), random_(random), clock_(clock) {}

Orchestrator::~Orchestrator() { stop(); }

void Orchestrator::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { run(); });
}

void Orchestrator::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Orchestrator::reconcileAll() {
  creating_.clear();
  std::set<std::string> services;
  store_.view([&](const store::ReadView& v) {
    for (const auto& s : v.list(Kind::kService)) services.insert(s->id);
    for (const auto& t : v.list(Kind::kTask)) services.insert(t->serviceId);
  });
  reconcile(services);
}

void Orchestrator::run() {
  std::unique_ptr<store::Watch> watch;
  std::set<std::string> dirty;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    if (!watch) {
      auto w = store_.store().viewAndWatch(
          KindSet{Kind::kService, Kind::kTask, Kind::kNode, Kind::kCluster},
          [&](const store::ReadView& v) {
            for (const auto& s : v.list(Kind::kService)) dirty.insert(s->id);
            for (const auto& t : v.list(Kind::kTask)) dirty.insert(t->serviceId);
          });
      if (!w) {
        log::warn("orchestrator", "cannot watch the store", {{"error", w.status().message()}});
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, 1s, [this] { return stop_; });
        continue;
      }
      watch = std::move(*w);
      // Every service is looked at in full from this fresh view.
      creating_.clear();
      ownCreates_.clear();
    }
    // A change the loop must look at: a full pass over the service.
    auto changed = [&](const std::string& service) {
      dirty.insert(service);
      creating_.erase(service);
    };
    // Wait for a change, or for the earliest delayed restart or update batch.
    auto wait = std::chrono::milliseconds(250);
    const auto now = clock_.monotonic();
    for (const auto& [service, at] : wakeAt_) {
      if (at <= now) {
        dirty.insert(service);
      } else {
        wait =
            std::min(wait, std::chrono::duration_cast<std::chrono::milliseconds>(at - now) + 1ms);
      }
    }
    if (!dirty.empty()) wait = 0ms;
    bool lost = false;
    for (int round = 0; round < 64; ++round) {
      auto batch = watch->nextBatch(round == 0 ? wait : 0ms);
      if (!batch) {
        if (batch.status().code() != Status::Code::kTimeout) lost = true;
        break;
      }
      bool allServices = false;
      std::set<std::string> ifUpdating;
      std::map<std::string, std::set<std::string>> ifNodeGone;  // node -> services
      for (const auto& e : batch->events) {
        switch (e.object->kind) {
          case Kind::kService:
            changed(e.object->id);
            break;
          case Kind::kTask:
            if (e.type == store::EventType::kCreated && ownCreates_.erase(e.object->id) > 0) {
              break;  // the pass that made it knew all of this
            }
            // Most task changes are agents' reports on the way to RUNNING, which change
            // nothing a pass decides: a pass over a big service costs a read of all its tasks.
            switch (taskChange(e)) {
              case TaskChange::kNone:
                break;
              case TaskChange::kIfUpdating:
                if (!dirty.count(e.object->serviceId)) ifUpdating.insert(e.object->serviceId);
                break;
              case TaskChange::kIfNodeGone:
                if (!dirty.count(e.object->serviceId)) {
                  ifNodeGone[e.object->nodeId].insert(e.object->serviceId);
                }
                break;
              case TaskChange::kAlways:
                changed(e.object->serviceId);
                break;
            }
            break;
          case Kind::kNode:
          case Kind::kCluster:
            allServices = true;
            break;
          default:
            break;
        }
      }
      if (allServices) {
        creating_.clear();
        store_.view([&](const store::ReadView& v) {
          for (const auto& s : v.list(Kind::kService)) dirty.insert(s->id);
        });
      } else if (!ifUpdating.empty() || !ifNodeGone.empty()) {
        store_.view([&](const store::ReadView& v) {
          for (const auto& id : ifUpdating) {
            auto svc = v.get(Kind::kService, id);
            if (!svc || rollingUpdate(*svc)) changed(id);
          }
          for (const auto& [nodeId, services] : ifNodeGone) {
            auto node = v.get(Kind::kNode, nodeId);
            if (node && node->availability != store::NodeAvailability::kDrain &&
                agent::wire::stringMember(node->status, "State") != "down") {
              continue;
            }
            for (const auto& id : services) changed(id);
          }
        });
      }
    }
    if (lost) {
      // Fell behind or the store was replaced: start over from a fresh view.
      watch.reset();
      continue;
    }
    if (dirty.empty()) continue;
    std::set<std::string> todo;
    todo.swap(dirty);
    for (const auto& s : todo) wakeAt_.erase(s);
    reconcile(todo);
  }
}

void Orchestrator::reconcile(const std::set<std::string>& services) {
  for (const auto& id : services) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    Clock::MonoTime wake = Clock::MonoTime::max();
    createdInPass_.clear();
    Status s = store_.update(
        [&](store::Tx& tx) {
          wake = reconcileService(tx, id);
          return Status::ok();
        },
        5s);
    if (s) {
      for (auto& created : createdInPass_) ownCreates_.insert(std::move(created));
    } else {
      // A conflict (an agent's status landed first) or a lost quorum: look again soon, in
      // full.
      log::debug("orchestrator", "reconcile failed", {{"service", id}, {"error", s.message()}});
      wake = std::min(wake, clock_.monotonic() + 100ms);
      creating_.erase(id);
    }
    if (wake != Clock::MonoTime::max()) wakeAt_[id] = wake;
  }
}

void Orchestrator::removeOrphans(store::Tx& tx, const std::string& serviceId) {
  // The service is gone: its tasks are told to go (REMOVE), and deleted once stopped (or when
  // their node cannot say so any more).
  const auto nodes = nodeInfos(tx);
  for (const auto& t : tx.tasksByService(serviceId)) {
    if (tx.size() >= kTxBudget) {
      wakeAt_[serviceId] = clock_.monotonic();
      return;
    }
    const TaskState obs = observedState(*t);
    if (isTerminal(obs) || t->nodeId.empty() || !nodeUp(nodes, t->nodeId) ||
        obs < TaskState::kAssigned) {
      (void)tx.remove(Kind::kTask, t->id, t->version);
    } else if (t->desiredState < TaskState::kRemove) {
      store::Object copy = *t;
      copy.desiredState = TaskState::kRemove;
      (void)tx.update(std::move(copy));
    }
  }
}

Clock::MonoTime Orchestrator::reconcileService(store::Tx& tx, const std::string& serviceId) {
  auto svc = tx.get(Kind::kService, serviceId);
  if (!svc) {
    specs_.erase(serviceId);
    removeOrphans(tx, serviceId);
    for (auto it = restartAt_.begin(); it != restartAt_.end();) {
      it = it->first.service == serviceId ? restartAt_.erase(it) : std::next(it);
    }
    return Clock::MonoTime::max();
  }
  // Specs change rarely and a big service is passed over many times while its tasks are
  // made: each spec is read once.
  auto cached = specs_.find(serviceId);
  if (cached == specs_.end() || cached->second.first != svc->spec) {
    auto parsed = parseServiceSpec(svc->spec);
    if (!parsed) {
      log::warn("orchestrator", "service spec does not read",
                {{"service", serviceId}, {"error", parsed.status().message()}});
      specs_.erase(serviceId);
      return Clock::MonoTime::max();
    }
    cached =
        specs_.insert_or_assign(serviceId, std::make_pair(svc->spec, std::move(*parsed))).first;
  }
  const ServiceSpec& spec = cached->second.second;
  const auto now = clock_.monotonic();
  const int64_t nowNs = clock_.nowNanos();
  Clock::MonoTime wake = Clock::MonoTime::max();
  const auto nodes = nodeInfos(tx);
  const uint64_t history = historyLimit(tx);
  const bool global = isGlobal(spec.mode);

  auto statusObj = parse(svc->status);
  if (!statusObj) statusObj = new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER);
  Poco::JSON::Object::Ptr update =
      statusObj->has("UpdateStatus") ? statusObj->getObject("UpdateStatus") : nullptr;
  const std::string updateState = update ? update->optValue<std::string>("State", "") : "";
  const bool rollingBack = updateState.rfind("rollback", 0) == 0;
  const UpdatePolicy& policy = rollingBack ? spec.rollback : spec.update;
  const bool updatePaused = updateState == "paused" || updateState == "rollback_paused";
  const int64_t updateStarted = update ? update->optValue<int64_t>("StartedAtNs", 0) : 0;
  bool serviceChanged = false;

  auto setDesired = [&](const ObjectPtr& t, TaskState desired) {
    if (t->desiredState >= desired) return;
    store::Object copy = *t;
    copy.desiredState = desired;
    (void)tx.update(std::move(copy));
  };
  uint64_t created = 0;
  auto newTask = [&](uint64_t slot, const std::string& nodeId) {
    store::Object t;
    t.kind = Kind::kTask;
    t.id = newId(random_);
    t.name = svc->name + "." + (global ? nodeId : std::to_string(slot));
    t.serviceId = serviceId;
    t.slot = slot;
    t.nodeId = nodeId;
    t.desiredState = TaskState::kRunning;
    t.spec = spec.taskTemplate;
    TaskStatus st;
    // Tasks on networks wait NEW for their addresses (the allocator moves them on).
    st.state = spec.attachesNetworks ? TaskState::kNew : TaskState::kPending;
    st.timestampNs = nowNs;
    st.message = spec.attachesNetworks ? "allocating network addresses" : "pending task scheduling";
    t.status = taskStatusJson(st);
    t.labels = svc->labels;
    ++created;
    createdInPass_.push_back(t.id);
    (void)tx.create(std::move(t));
  };

  // Creating a big service's slots: the next ones, without a read of its tasks.
  if (auto more = creating_.find(serviceId); more != creating_.end()) {
    Creation& c = more->second;
    if (c.serviceVersion == svc->version) {
      while (c.remaining > 0 && tx.size() < kTxBudget) {
        while (c.held.count(c.next)) ++c.next;
        newTask(c.next++, "");
        --c.remaining;
      }
      // Done: a full pass follows (pruning and anything else it put off).
      if (c.remaining == 0) creating_.erase(more);
      return now;
    }
    creating_.erase(more);
  }

  // Tasks by slot (replicated services and jobs) or by node (global services).
  struct Slot {
    std::vector<ObjectPtr> tasks;  // every task of the slot, oldest first
  };
  std::map<SlotKey, Slot> slots;
  std::map<std::string, uint64_t> perNode;  // this service's active tasks per node
  for (const auto& t : tx.tasksByService(serviceId)) {
    SlotKey key{serviceId, global ? 0 : t->slot, global ? t->nodeId : ""};
    slots[key].tasks.push_back(t);
    if (t->desiredState <= TaskState::kRunning && !t->nodeId.empty()) ++perNode[t->nodeId];
  }
  for (auto& [key, slot] : slots) {
    std::sort(slot.tasks.begin(), slot.tasks.end(),
              [](const ObjectPtr& a, const ObjectPtr& b) { return a->createdNs < b->createdNs; });
  }

  // Restart supervision: a task that wants to run but ended is replaced as its restart policy
  // says (after its delay), or left ended when the policy says no more.
  auto mayRestart = [&](const SlotKey& key, TaskState obs) {
    switch (spec.restart.condition) {
      case RestartPolicy::Condition::kNone:
        return false;
      case RestartPolicy::Condition::kOnFailure:
        if (!failedState(obs)) return false;
        break;
      case RestartPolicy::Condition::kAny:
        break;
    }
    if (spec.restart.maxAttempts == 0) return true;
    auto& times = restarts_[key];
    if (spec.restart.windowNs > 0) {
      const auto window = std::chrono::nanoseconds(spec.restart.windowNs);
      times.erase(std::remove_if(times.begin(), times.end(),
                                 [&](Clock::MonoTime at) { return now - at > window; }),
                  times.end());
    }
    return times.size() < spec.restart.maxAttempts;
  };

  // Per slot: which task is its live one (desired running), and whether the slot is held
  // (live, waiting for a delayed restart, or still stopping its previous task).
  std::set<uint64_t> heldSlots;       // replicated: slot numbers in use (live or stopping)
  std::set<uint64_t> liveSlots;       // replicated: slots with a live task or a delayed restart
  std::vector<SlotKey> waitingSlots;  // slots waiting only for a delayed restart
  std::set<std::string> heldNodes;    // global: nodes with a live task
  std::vector<std::pair<SlotKey, ObjectPtr>> live;
  uint64_t completions = 0;
  std::vector<ObjectPtr> failedNew;  // tasks of the current spec that failed during an update
  bool anyStopping = false;          // some task was told to stop and has not yet
  uint64_t stoppingSlots = 0;
  for (auto& [key, slot] : slots) {
    ObjectPtr current;
    bool stopping = false;
    for (const auto& t : slot.tasks) {
      const TaskState obs = observedState(*t);
      if (obs == TaskState::kComplete) ++completions;
      if (t->desiredState <= TaskState::kRunning) {
        // Off a drained node, or a node that stopped answering: replace at once.
        const auto node = nodes.find(t->nodeId);
        const bool nodeGone = !t->nodeId.empty() && node == nodes.end();
        const bool drained =
            node != nodes.end() && node->second.availability == store::NodeAvailability::kDrain;
        const bool down = node != nodes.end() && node->second.state == "down";
        if (!isTerminal(obs) && (nodeGone || drained || (down && !global))) {
          setDesired(t, TaskState::kShutdown);
          continue;
        }
        if (isTerminal(obs)) {
          if (runsTemplate(t->spec, spec.taskTemplate) && updateStarted > 0 &&
              t->createdNs >= updateStarted && failedState(obs)) {
            failedNew.push_back(t);
          }
          const bool jobDone = isJob(spec.mode) && obs == TaskState::kComplete;
          if (!jobDone && mayRestart(key, obs)) {
            setDesired(t, TaskState::kShutdown);
            const auto delay = std::chrono::nanoseconds(spec.restart.delayNs);
            restartAt_[key] = now + std::chrono::duration_cast<Clock::MonoTime::duration>(delay);
            restarts_[key].push_back(now);
            continue;
          }
          // Not restarted: the slot keeps its ended task (a job's completion, or a policy that
          // gives up).
        }
        if (current) {
          // Two live tasks in one slot: a start-first update in progress (handled below).
          live.emplace_back(key, t);
        } else {
          current = t;
        }
        continue;
      }
      if (!isTerminal(obs) && nodeUp(nodes, t->nodeId) && !t->nodeId.empty() &&
          obs >= TaskState::kAssigned) {
        stopping = true;
      }
    }
    if (current) live.emplace_back(key, current);
    if (stopping) {
      anyStopping = true;
      ++stoppingSlots;
    }
    auto delayed = restartAt_.find(key);
    const bool waiting = delayed != restartAt_.end() && delayed->second > now;
    if (delayed != restartAt_.end() && !waiting) restartAt_.erase(delayed);
    if (waiting) wake = std::min(wake, delayed->second);
    const bool held = current || waiting || (stopping && !global);
    if (!held) continue;
    if (global) {
      heldNodes.insert(key.node);
    } else {
      heldSlots.insert(key.slot);
      if (current || waiting) liveSlots.insert(key.slot);
      if (!current && waiting) waitingSlots.push_back(key);
    }
    if (!current && waiting) continue;
  }

  // How many slots each mode wants, and what to create or stop.
  uint64_t moreToCreate = 0;  // replicated: slots the budget left for the next transaction
  uint64_t nextFree = 1;
  if (global) {
    for (const auto& [id, node] : nodes) {
      const bool eligible = node.availability == store::NodeAvailability::kActive &&
                            node.state != "down" &&
                            matchesAll(spec.constraints, nodeFacts(*node.object));
      if (eligible && !heldNodes.count(id)) {
        SlotKey key{serviceId, 0, id};
        const bool doneJob = spec.mode == ServiceMode::kGlobalJob && slots.count(key);
        if (!doneJob && tx.size() < kTxBudget) newTask(0, id);
      }
    }
    for (const auto& [key, t] : live) {
      auto node = nodes.find(key.node);
      const bool keep = node != nodes.end() &&
                        node->second.availability != store::NodeAvailability::kDrain &&
                        matchesAll(spec.constraints, nodeFacts(*node->second.object));
      if (!keep) setDesired(t, TaskState::kShutdown);
    }
  } else {
    uint64_t want = spec.replicas;
    if (spec.mode == ServiceMode::kReplicatedJob) {
      uint64_t running = 0;
      for (const auto& [key, t] : live) {
        if (!isTerminal(observedState(*t))) ++running;
      }
      const uint64_t remaining =
          spec.totalCompletions > completions ? spec.totalCompletions - completions : 0;
      // A job keeps its finished slots and adds new ones until enough have completed.
      want = heldSlots.size() - running + std::min(remaining, spec.maxConcurrent);
      want = std::min<uint64_t>(want, heldSlots.size() + remaining);
    }
    if (heldSlots.size() < want) {
      uint64_t& next = nextFree;
      for (uint64_t n = heldSlots.size(); n < want && tx.size() < kTxBudget; ++n) {
        while (heldSlots.count(next) ||
               (isJob(spec.mode) && slots.count(SlotKey{serviceId, next, ""})))
          ++next;
        heldSlots.insert(next);
        newTask(next, "");
      }
      if (heldSlots.size() < want) moreToCreate = want - heldSlots.size();
    } else if (liveSlots.size() > want && !isJob(spec.mode)) {
      // Scale down: tasks not running go first, then those on the most loaded nodes, then the
      // highest slots.
      std::vector<std::pair<SlotKey, ObjectPtr>> candidates = live;
      std::sort(candidates.begin(), candidates.end(), [&](const auto& a, const auto& b) {
        const bool ra = observedState(*a.second) == TaskState::kRunning;
        const bool rb = observedState(*b.second) == TaskState::kRunning;
        if (ra != rb) return !ra;
        const auto la = perNode[a.second->nodeId], lb = perNode[b.second->nodeId];
        if (la != lb) return la > lb;
        return a.first.slot > b.first.slot;
      });
      std::set<uint64_t> dropped;
      // Restarts not yet made go first: nothing runs there.
      for (const auto& key : waitingSlots) {
        if (liveSlots.size() - dropped.size() <= want) break;
        dropped.insert(key.slot);
        restartAt_.erase(key);
      }
      for (const auto& [key, t] : candidates) {
        if (liveSlots.size() - dropped.size() <= want) break;
        if (dropped.count(key.slot)) continue;
        dropped.insert(key.slot);
        for (const auto& [k2, t2] : live) {
          if (k2.slot == key.slot) {
            setDesired(t2, TaskState::kShutdown);
            if (!t2->nodeId.empty()) --perNode[t2->nodeId];
          }
        }
        restartAt_.erase(key);
      }
    }
  }

  // Rolling update: replace live tasks of an older spec, `parallelism` slots at a time.
  bool olderSpecs = false;  // some live task runs an older spec
  if (!isJob(spec.mode)) {
    std::map<SlotKey, std::vector<ObjectPtr>> liveBySlot;
    for (const auto& [key, t] : live) liveBySlot[key].push_back(t);
    // Slots being replaced: stopping (stop-first), refilled in this pass, or not running yet.
    uint64_t inFlight = stoppingSlots + created;
    std::vector<SlotKey> outdated;
    // Tasks created or still stopping in this pass: the update is not done with them yet.
    bool converged = created == 0 && !anyStopping;
    for (const auto& [key, ts] : liveBySlot) {
      ObjectPtr fresh, old;
      for (const auto& t : ts) (runsTemplate(t->spec, spec.taskTemplate) ? fresh : old) = t;
      if (old) olderSpecs = true;
      if (fresh && observedState(*fresh) < TaskState::kRunning) {
        ++inFlight;
        converged = false;
      } else if (fresh && update && updateStarted > 0 && fresh->createdNs >= updateStarted) {
        // Updated tasks are watched for the monitor period before the update counts as done.
        auto st = parseTaskStatus(fresh->status);
        const int64_t until = (st ? st->timestampNs : 0) + policy.monitorNs;
        if (until > nowNs) {
          converged = false;
          wake = std::min(wake, now + std::chrono::duration_cast<Clock::MonoTime::duration>(
                                          std::chrono::nanoseconds(until - nowNs)));
        }
      }
      if (old && fresh) {
        // start-first: the old task goes once its replacement runs.
        converged = false;
        if (observedState(*fresh) == TaskState::kRunning) setDesired(old, TaskState::kShutdown);
      } else if (old) {
        converged = false;
        outdated.push_back(key);
      }
    }
    const double failureLimit =
        policy.maxFailureRatio * static_cast<double>(std::max<std::size_t>(1, liveBySlot.size()));
    if (!failedNew.empty() && update && !updatePaused && updateState != "completed" &&
        updateState != "rollback_completed" &&
        static_cast<double>(failedNew.size()) > failureLimit) {
      const std::string culprit = failedNew.front()->id;
      if (policy.failureAction == UpdatePolicy::FailureAction::kRollback && !rollingBack &&
          statusObj->has("PreviousSpec")) {
        // Back to the previous spec, which then rolls out under the rollback config.
        auto previous = statusObj->getObject("PreviousSpec");
        store::Object copy = *svc;
        statusObj->set("PreviousSpec", parse(svc->spec));
        copy.spec = stringify(*previous);
        update->set("State", std::string("rollback_started"));
        update->set("StartedAtNs", nowNs);
        update->set("Message",
                    "update rolled back due to failure or early termination of task " + culprit);
        copy.status = stringify(*statusObj);
        (void)tx.update(std::move(copy));
        return now;
      }
      if (policy.failureAction != UpdatePolicy::FailureAction::kContinue) {
        update->set("State", std::string(rollingBack ? "rollback_paused" : "paused"));
        update->set("Message", std::string(rollingBack ? "rollback" : "update") +
                                   " paused due to failure or early termination of task " +
                                   culprit);
        serviceChanged = true;
      }
    }
    const bool paused =
        updatePaused ||
        (update && (update->optValue<std::string>("State", "") == "paused" ||
                    update->optValue<std::string>("State", "") == "rollback_paused"));
    if (!outdated.empty() && !paused) {
      const uint64_t budget = policy.parallelism == 0 ? outdated.size() : policy.parallelism;
      auto batchAt = nextBatchAt_.find(serviceId);
      const bool delayOver = batchAt == nextBatchAt_.end() || batchAt->second <= now;
      if (inFlight == 0 && !delayOver) wake = std::min(wake, batchAt->second);
      if (inFlight < budget && (inFlight > 0 || delayOver)) {
        uint64_t started = 0;
        for (const auto& key : outdated) {
          if (inFlight + started >= budget || tx.size() >= kTxBudget) break;
          const ObjectPtr old = liveBySlot[key].front();
          if (policy.startFirst) {
            newTask(key.slot, global ? key.node : "");
          } else {
            // stop-first: the slot is refilled (with the current spec) once the old task ended.
            setDesired(old, TaskState::kShutdown);
          }
          ++started;
        }
        nextBatchAt_[serviceId] = now + std::chrono::duration_cast<Clock::MonoTime::duration>(
                                            std::chrono::nanoseconds(policy.delayNs));
        if (policy.delayNs > 0) wake = std::min(wake, nextBatchAt_[serviceId]);
      }
    }
    if (update && converged && outdated.empty() && inFlight == 0 &&
        (updateState == "updating" || updateState == "rollback_started")) {
      update->set("State", std::string(rollingBack ? "rollback_completed" : "completed"));
      update->set("CompletedAtNs", nowNs);
      update->set("Message", std::string(rollingBack ? "rollback completed" : "update completed"));
      serviceChanged = true;
      nextBatchAt_.erase(serviceId);
    }
  }
  if (serviceChanged) {
    store::Object copy = *svc;
    copy.status = stringify(*statusObj);
    (void)tx.update(std::move(copy));
  }

  // Task history: keep the newest `history` ended tasks per slot.
  for (auto& [key, slot] : slots) {
    std::vector<ObjectPtr> ended;
    for (const auto& t : slot.tasks) {
      if (t->desiredState > TaskState::kRunning && isTerminal(observedState(*t)))
        ended.push_back(t);
    }
    if (ended.size() <= history) continue;
    for (std::size_t i = 0; i + history < ended.size() && tx.size() < kTxBudget; ++i) {
      (void)tx.remove(Kind::kTask, ended[i]->id, ended[i]->version);
    }
  }
  if (moreToCreate > 0) {
    // Nothing else waits on this service (no timer, no update to roll, no status to write):
    // the next passes only create, until a change makes the loop look again.
    if (wake == Clock::MonoTime::max() && !serviceChanged && !olderSpecs &&
        spec.mode == ServiceMode::kReplicated) {
      creating_[serviceId] = Creation{svc->version, std::move(heldSlots), nextFree, moreToCreate};
    }
    wake = now;
  }
  if (tx.size() >= kTxBudget) wake = now;
  return wake;
}

}  // namespace shoal::manager
