#include "kernel/manager/dispatcher.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <sstream>

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

constexpr auto kMaxWait = 3000ms;
constexpr auto kSessionIdle = 60s;
constexpr std::size_t kTxBudget = 2000;

bool assigned(const store::Object& t) {
  const TaskState obs = observedState(t);
  if (obs < TaskState::kAssigned) return false;
  return !(isTerminal(obs) && t.desiredState > TaskState::kRunning);
}

api::Response badRequest(const std::string& message) {
  return api::Response::error(Status::invalidArgument(message));
}

}  // namespace

Dispatcher::Dispatcher(ReplicatedStore& store, Random& random, const Clock& clock)
    : store_(store), random_(random), clock_(clock) {}

Dispatcher::~Dispatcher() { stop(); }

void Dispatcher::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (watcher_.joinable()) return;
  stop_ = false;
  watcher_ = std::thread([this] { watchLoop(); });
  flusher_ = std::thread([this] { flushLoop(); });
}

void Dispatcher::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  changed_.notify_all();
  if (watcher_.joinable()) watcher_.join();
  if (flusher_.joinable()) flusher_.join();
  flush();
}

void Dispatcher::watchLoop() {
  std::unique_ptr<store::Watch> watch;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    if (!watch) {
      auto w = store_.store().watch(store::KindSet{Kind::kTask}, std::nullopt);
      if (!w) {
        std::this_thread::sleep_for(200ms);
        continue;
      }
      watch = std::move(*w);
      // Anything may have changed while there was no watch: wake every session.
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [node, gen] : generation_) ++gen;
      changed_.notify_all();
    }
    auto batch = watch->nextBatch(200ms);
    if (!batch) {
      if (batch.status().code() != Status::Code::kTimeout) watch.reset();
      continue;
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& e : batch->events) {
      if (!e.object->nodeId.empty()) ++generation_[e.object->nodeId];
      if (e.previous && !e.previous->nodeId.empty() && e.previous->nodeId != e.object->nodeId) {
        ++generation_[e.previous->nodeId];
      }
    }
    changed_.notify_all();
  }
}

api::Response Dispatcher::assignments(const std::string& nodeId, const std::string& body) {
  std::string sessionId;
  auto wait = 0ms;
  try {
    auto o = Poco::JSON::Parser().parse(body.empty() ? "{}" : body).extract<JObject::Ptr>();
    if (!o) return badRequest("the assignments request body is not a JSON object");
    sessionId = o->optValue<std::string>("session", "");
    wait = std::min<std::chrono::milliseconds>(
        kMaxWait,
        std::chrono::milliseconds(std::max<int64_t>(0, o->optValue<int64_t>("wait_ms", 0))));
  } catch (const std::exception& e) {
    return badRequest(std::string("the assignments request body is not a JSON object: ") +
                      e.what());
  }
  const auto deadline = std::chrono::steady_clock::now() + wait;
  std::unique_lock<std::mutex> lock(mu_);
  // Forget sessions nobody polled for a while (their agents reconnect with a new one).
  const auto now = clock_.monotonic();
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    it = now - it->second.lastUsed > kSessionIdle ? sessions_.erase(it) : std::next(it);
  }
  bool full = false;
  auto it = sessions_.find(sessionId);
  if (it == sessions_.end() || it->second.nodeId != nodeId) {
    sessionId = newId(random_);
    it = sessions_.emplace(sessionId, Session{nodeId, {}, now}).first;
    full = true;
  }
  for (;;) {
    const uint64_t gen = generation_[nodeId];
    lock.unlock();
    std::vector<ObjectPtr> tasks;
    store_.view([&](const store::ReadView& v) {
      for (const auto& t : v.tasksByNode(nodeId)) {
        if (assigned(*t)) tasks.push_back(t);
      }
    });
    lock.lock();
    if (stop_) return api::Response::error(Status::unavailable("the dispatcher is stopping"));
    it = sessions_.find(sessionId);
    if (it == sessions_.end()) {
      return api::Response::error(Status::unavailable("the agent session expired"));
    }
    Session& session = it->second;
    session.lastUsed = clock_.monotonic();
    std::vector<ObjectPtr> changed;
    std::vector<std::string> removed;
    std::map<std::string, uint64_t> now_sent;
    for (const auto& t : tasks) {
      now_sent[t->id] = t->version;
      auto s = session.sent.find(t->id);
      if (s == session.sent.end() || s->second != t->version) changed.push_back(t);
    }
    for (const auto& [id, version] : session.sent) {
      if (!now_sent.count(id)) removed.push_back(id);
    }
    if (full || !changed.empty() || !removed.empty() ||
        std::chrono::steady_clock::now() >= deadline) {
      session.sent = std::move(now_sent);
      lock.unlock();
      std::ostringstream out;
      out << "{\"session\":\"" << sessionId << "\",\"full\":" << (full ? "true" : "false")
          << ",\"tasks\":[";
      for (std::size_t i = 0; i < changed.size(); ++i) {
        out << (i ? "," : "") << store::toJson(*changed[i]);
      }
      out << "],\"removed\":[";
      for (std::size_t i = 0; i < removed.size(); ++i) {
        out << (i ? "," : "") << "\"" << removed[i] << "\"";
      }
      out << "]}";
      return api::Response::json(out.str());
    }
    changed_.wait_until(lock, deadline, [&] { return stop_ || generation_[nodeId] != gen; });
  }
}

api::Response Dispatcher::status(const std::string& nodeId, const std::string& body) {
  std::vector<Update> updates;
  try {
    auto o = Poco::JSON::Parser().parse(body.empty() ? "{}" : body).extract<JObject::Ptr>();
    if (!o) return badRequest("the status request body is not a JSON object");
    auto list = o->getArray("updates");
    if (!list) return badRequest("the status request has no \"updates\" array");
    for (std::size_t i = 0; i < list->size(); ++i) {
      auto u = list->getObject(static_cast<unsigned>(i));
      if (!u) return badRequest("status update " + std::to_string(i) + " is not an object");
      TaskStatus st;
      const auto name = u->optValue<std::string>("State", "");
      auto state = store::parseTaskState(name);
      if (!state)
        return badRequest("status update " + std::to_string(i) + ": " + state.status().message());
      if (*state < TaskState::kAccepted) {
        return badRequest("status update " + std::to_string(i) + ": an agent cannot report state " +
                          name);
      }
      st.state = *state;
      st.timestampNs = u->optValue<int64_t>("Timestamp", clock_.nowNanos());
      st.message = u->optValue<std::string>("Message", "");
      st.err = u->optValue<std::string>("Err", "");
      st.exitCode = u->optValue<int64_t>("ExitCode", -1);
      st.pid = u->optValue<int64_t>("PID", 0);
      const auto id = u->optValue<std::string>("ID", "");
      if (Status s = store::validateId(Kind::kTask, id); !s) {
        return badRequest("status update " + std::to_string(i) + ": " + s.message());
      }
      updates.push_back({nodeId, id, taskStatusJson(st), static_cast<int32_t>(st.state)});
    }
  } catch (const std::exception& e) {
    return badRequest(std::string("the status request body cannot be read: ") + e.what());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return api::Response::error(Status::unavailable("the dispatcher is stopping"));
    for (auto& u : updates) queue_.push_back(std::move(u));
  }
  return api::Response::json("{\"accepted\":" + std::to_string(updates.size()) + "}");
}

void Dispatcher::flushLoop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (changed_.wait_for(lock, 50ms, [this] { return stop_; })) return;
    }
    flush();
  }
}

void Dispatcher::flush() {
  std::lock_guard<std::mutex> one(flushMu_);
  std::vector<Update> updates;
  {
    std::lock_guard<std::mutex> lock(mu_);
    updates.swap(queue_);
  }
  if (updates.empty()) return;
  // The last word per task wins within a flush (states only move forward anyway).
  std::map<std::string, Update> latest;
  for (auto& u : updates) {
    auto it = latest.find(u.taskId);
    if (it == latest.end() || u.state >= it->second.state) latest[u.taskId] = std::move(u);
  }
  std::vector<Update> todo;
  for (auto& [id, u] : latest) todo.push_back(std::move(u));
  for (std::size_t begin = 0; begin < todo.size(); begin += kTxBudget) {
    const std::size_t end = std::min(todo.size(), begin + kTxBudget);
    Status s = store_.update(
        [&](store::Tx& tx) {
          for (std::size_t i = begin; i < end; ++i) {
            const Update& u = todo[i];
            auto t = tx.get(Kind::kTask, u.taskId);
            if (!t || t->nodeId != u.nodeId) continue;
            if (static_cast<int32_t>(observedState(*t)) >= u.state) continue;
            store::Object copy = *t;
            copy.status = u.statusJson;
            if (Status w = tx.update(std::move(copy)); !w) return w;
          }
          return Status::ok();
        },
        10s);
    if (!s) {
      // The agent re-reports what the store does not show (it compares its assignments with
      // its own states), so a lost flush delays a state; it never loses one.
      log::warn("dispatcher", "status flush failed", {{"error", s.message()}});
    }
  }
}

}  // namespace shoal::manager
