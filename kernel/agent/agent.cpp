#include "kernel/agent/agent.h"

#include <Poco/File.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "kernel/common/log.h"

namespace shoal::agent {
namespace {

using namespace std::chrono_literals;
using Poco::JSON::Array;
using store::TaskState;
using JObject = Poco::JSON::Object;

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

TaskState stateNamed(const std::string& name, TaskState fallback) {
  auto s = store::parseTaskState(name);
  return s ? *s : fallback;
}

Status writeFileAtomically(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::internal("cannot write " + tmp);
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n <= 0) {
      ::close(fd);
      return Status::internal("cannot write " + tmp);
    }
    done += static_cast<std::size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || std::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::internal("cannot replace " + path);
  }
  return Status::ok();
}

}  // namespace

Agent::Agent(std::string stateDir, Runtime& runtime, LeaderCall leader, const Clock& clock)
    : stateDir_(std::move(stateDir)),
      runtime_(runtime),
      leader_(std::move(leader)),
      clock_(clock) {}

Agent::~Agent() { stop(); }

Status Agent::start() {
  try {
    Poco::File(stateDir_).createDirectories();
  } catch (const std::exception& e) {
    return Status::internal("cannot create the agent's directory " + stateDir_ + ": " + e.what());
  }
  load();
  std::lock_guard<std::mutex> lock(mu_);
  stop_ = false;
  poller_ = std::thread([this] { pollLoop(); });
  worker_ = std::thread([this] { workLoop(); });
  return Status::ok();
}

void Agent::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (poller_.joinable()) poller_.join();
  if (worker_.joinable()) worker_.join();
  // Running tasks keep running (they survive the daemon); only the record is flushed.
  persist();
}

std::map<std::string, std::string> Agent::tasks() {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, std::string> out;
  for (const auto& [id, t] : tasks_) out[id] = std::string(store::taskStateName(t.state));
  return out;
}

void Agent::pollLoop() {
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    JObject req;
    req.set("session", session_);
    req.set("wait_ms", 2000);
    auto reply = leader_("/dispatcher/assignments", stringify(req));
    if (reply && reply->status == 200) {
      auto o = parse(reply->body);
      if (o) {
        const std::string session = o->optValue<std::string>("session", "");
        if (session != session_) session_ = session;
        std::lock_guard<std::mutex> lock(mu_);
        assignments_.push_back(reply->body);
        cv_.notify_all();
        continue;
      }
    }
    if (!reply) {
      log::debug("agent", "no dispatcher", {{"error", reply.status().message()}});
    } else {
      log::debug("agent", "assignments refused",
                 {{"status", std::to_string(reply->status)}, {"reply", reply->body}});
    }
    session_.clear();  // start over with the full set once a dispatcher answers
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, 1s, [this] { return stop_; });
  }
}

void Agent::workLoop() {
  for (;;) {
    std::vector<std::string> replies;
    std::deque<Completion> done;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, 500ms,
                   [this] { return stop_ || !assignments_.empty() || !completions_.empty(); });
      if (stop_) return;
      replies.swap(assignments_);
      done.swap(completions_);
      for (const auto& r : replies) applyAssignments(r);
      for (const auto& c : done) finish(c);
      for (auto it = tasks_.begin(); it != tasks_.end();) {
        Task& t = it->second;
        ++it;  // step may erase t (a removed task)
        step(t);
      }
    }
    sendReports();
    persist();
  }
}

void Agent::applyAssignments(const std::string& body) {
  auto o = parse(body);
  if (!o) return;
  if (o->optValue<bool>("full", false)) {
    for (auto& [id, t] : tasks_) t.assigned = false;
  }
  if (auto list = o->getArray("tasks")) {
    for (std::size_t i = 0; i < list->size(); ++i) {
      auto obj = list->getObject(static_cast<unsigned>(i));
      if (!obj) continue;
      const std::string id = obj->optValue<std::string>("ID", "");
      if (id.empty()) continue;
      auto [it, fresh] = tasks_.try_emplace(id);
      Task& t = it->second;
      t.id = id;
      t.json = stringify(*obj);
      t.assigned = true;
      t.desired = stateNamed(obj->optValue<std::string>("DesiredState", "running"), t.desired);
      if (auto st = obj->getObject("Status")) {
        t.storeState =
            stateNamed(st->optValue<std::string>("State", "assigned"), TaskState::kAssigned);
      }
      if (auto spec = obj->getObject("Spec")) {
        if (auto c = spec->getObject("ContainerSpec")) {
          t.graceNs = c->optValue<int64_t>("StopGracePeriod", t.graceNs);
        }
      }
      if (fresh) {
        // A task this node never saw; if the leader shows it further on (this node ran it
        // before losing its records), trust the leader.
        t.state = std::max(TaskState::kAssigned, t.storeState);
        t.reported = t.state;
      } else if (t.storeState < t.state) {
        // The leader missed a report (a lost flush or a new leader): say it again.
        transition(t, t.state, t.message);
      }
      dirty_ = true;
    }
  }
  if (auto removed = o->getArray("removed")) {
    for (std::size_t i = 0; i < removed->size(); ++i) {
      auto it = tasks_.find(removed->getElement<std::string>(static_cast<unsigned>(i)));
      if (it != tasks_.end()) it->second.assigned = false;
    }
  }
}

Runtime::Done Agent::completion(const std::string& taskId, const std::string& op) {
  return [this, taskId, op](Status s, const std::string& result) {
    std::lock_guard<std::mutex> lock(mu_);
    completions_.push_back({taskId, op, std::move(s), result});
    cv_.notify_all();
  };
}

void Agent::transition(Task& t, TaskState state, const std::string& message) {
  if (state < t.state) return;
  t.state = state;
  t.message = message;
  t.reported = state;
  JObject u(Poco::JSON_PRESERVE_KEY_ORDER);
  u.set("ID", t.id);
  u.set("State", std::string(store::taskStateName(state)));
  u.set("Message", message);
  if (!t.err.empty()) u.set("Err", t.err);
  if (t.exitCode >= 0) u.set("ExitCode", t.exitCode);
  if (t.pid > 0) u.set("PID", t.pid);
  u.set("Timestamp", clock_.nowNanos());
  reports_.push_back(stringify(u));
  dirty_ = true;
}

std::string Agent::runtimeDocument(const Task& t) const {
  // The runtime's task document (runtime.h) from the assigned task object.
  auto task = parse(t.json);
  JObject doc(Poco::JSON_PRESERVE_KEY_ORDER);
  doc.set("schema", std::string("shoal.task/v1"));
  doc.set("id", t.id);
  JObject::Ptr spec = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
  if (task) {
    doc.set("service_id", task->optValue<std::string>("ServiceID", ""));
    doc.set("slot", task->optValue<int64_t>("Slot", 0));
    doc.set("node_id", task->optValue<std::string>("NodeID", ""));
    doc.set("name", task->optValue<std::string>("Name", ""));
    auto tmpl = task->getObject("Spec");
    auto c = tmpl ? tmpl->getObject("ContainerSpec") : nullptr;
    if (c) {
      spec->set("image", c->optValue<std::string>("Image", ""));
      spec->set("command",
                c->has("Command") ? c->get("Command") : Poco::Dynamic::Var(Array::Ptr(new Array)));
      spec->set("args",
                c->has("Args") ? c->get("Args") : Poco::Dynamic::Var(Array::Ptr(new Array)));
      spec->set("env", c->has("Env") ? c->get("Env") : Poco::Dynamic::Var(Array::Ptr(new Array)));
      spec->set("workdir", c->optValue<std::string>("Dir", ""));
      spec->set("user", c->optValue<std::string>("User", ""));
      spec->set("hostname", c->optValue<std::string>("Hostname", ""));
      spec->set("stop_signal", c->optValue<std::string>("StopSignal", ""));
      spec->set("stop_grace_ns", t.graceNs);
      if (c->has("Healthcheck")) spec->set("healthcheck", c->get("Healthcheck"));
      if (c->has("Mounts")) spec->set("mounts", c->get("Mounts"));
    }
    if (tmpl && tmpl->has("Resources")) spec->set("resources", tmpl->get("Resources"));
  }
  doc.set("spec", spec);
  doc.set("networks", Array());
  return stringify(doc);
}

void Agent::step(Task& t) {
  if (t.busy) return;
  const bool stopWanted = !t.assigned || t.desired >= TaskState::kShutdown;
  if (stopWanted) {
    if (t.state == TaskState::kStarting || t.state == TaskState::kRunning) {
      t.busy = true;
      Status s = runtime_.shutdown(t.id, t.graceNs, completion(t.id, "shutdown"));
      if (!s) {
        t.busy = false;
        t.err = s.message();
        transition(t, TaskState::kShutdown, "shutdown failed: " + s.message());
      }
      return;
    }
    if (!store::isKnownTaskState(static_cast<int32_t>(t.state)) || t.state < TaskState::kComplete) {
      // Never started (or only prepared): nothing runs, so it is simply shut down.
      transition(t, TaskState::kShutdown, "shutdown");
    }
    if (!t.assigned && !t.removing && t.reported == t.state) {
      t.removing = true;
      t.busy = true;
      Status s = runtime_.remove(t.id, completion(t.id, "remove"));
      if (!s) {
        // Nothing to remove (the runtime never had it, or already forgot it).
        tasks_.erase(t.id);
        dirty_ = true;
      }
    }
    return;
  }
  switch (t.state) {
    case TaskState::kAssigned:
      transition(t, TaskState::kAccepted, "accepted");
      [[fallthrough]];
    case TaskState::kAccepted:
    case TaskState::kPreparing: {
      transition(t, TaskState::kPreparing, "preparing");
      t.busy = true;
      Status s = runtime_.prepare(t.id, runtimeDocument(t), completion(t.id, "prepare"));
      if (!s) {
        t.busy = false;
        t.err = s.message();
        transition(t, TaskState::kRejected, s.message());
      }
      return;
    }
    case TaskState::kReady: {
      if (t.desired < TaskState::kRunning) return;  // prepared, and held until wanted
      transition(t, TaskState::kStarting, "starting");
      t.busy = true;
      Status s = runtime_.start(t.id, completion(t.id, "start"));
      if (!s) {
        t.busy = false;
        t.err = s.message();
        transition(t, TaskState::kFailed, "starting failed: " + s.message());
      }
      return;
    }
    case TaskState::kStarting:
    case TaskState::kRunning:
      if (!t.waiting) {
        // After a restart the agent re-attaches by waiting again (runtime.h: wait).
        t.waiting = true;
        Status s = runtime_.wait(t.id, completion(t.id, "wait"));
        if (!s) {
          t.waiting = false;
          t.err = s.message();
          transition(t, TaskState::kFailed, "the runtime lost the task: " + s.message());
        }
      }
      return;
    default:
      return;
  }
}

void Agent::finish(const Completion& c) {
  auto it = tasks_.find(c.taskId);
  if (it == tasks_.end()) return;
  Task& t = it->second;
  auto doc = parse(c.result);
  if (doc) {
    t.pid = doc->optValue<int64_t>("pid", t.pid);
    if (doc->has("exit_code") && !doc->get("exit_code").isEmpty()) {
      t.exitCode = doc->optValue<int64_t>("exit_code", t.exitCode);
    }
  }
  if (c.op == "wait") {
    t.waiting = false;
    if (t.state >= TaskState::kComplete) return;
    if (!c.status) {
      if (c.status.code() == Status::Code::kCancelled) return;
      t.err = c.status.message();
      transition(t, TaskState::kFailed, c.status.message());
      return;
    }
    const std::string state = doc ? doc->optValue<std::string>("state", "") : "";
    if (t.desired >= TaskState::kShutdown || state == "shutdown") {
      transition(t, TaskState::kShutdown, "shutdown");
    } else if (t.exitCode == 0) {
      transition(t, TaskState::kComplete, "finished");
    } else {
      t.err = "task: non-zero exit (" + std::to_string(t.exitCode) + ")";
      transition(t, TaskState::kFailed, "started");
    }
    return;
  }
  t.busy = false;
  if (c.op == "prepare") {
    if (c.status) {
      transition(t, TaskState::kReady, "prepared");
    } else {
      t.err = c.status.message();
      transition(t, TaskState::kRejected, c.status.message());
    }
  } else if (c.op == "start") {
    if (c.status) {
      transition(t, TaskState::kRunning, "started");
    } else {
      t.err = c.status.message();
      transition(t, TaskState::kFailed, "starting failed: " + c.status.message());
    }
  } else if (c.op == "shutdown") {
    if (!c.status) t.err = c.status.message();
    transition(t, TaskState::kShutdown, "shutdown");
  } else if (c.op == "remove") {
    tasks_.erase(it);
    dirty_ = true;
  }
}

void Agent::sendReports() {
  std::vector<std::string> reports;
  {
    std::lock_guard<std::mutex> lock(mu_);
    reports.swap(reports_);
  }
  if (reports.empty()) return;
  std::string body = "{\"updates\":[";
  for (std::size_t i = 0; i < reports.size(); ++i) body += (i ? "," : "") + reports[i];
  body += "]}";
  auto reply = leader_("/dispatcher/status", body);
  if (!reply || reply->status != 200) {
    // Kept for the next round, ahead of anything newer, so the order holds.
    std::lock_guard<std::mutex> lock(mu_);
    reports.insert(reports.end(), reports_.begin(), reports_.end());
    reports_.swap(reports);
  }
}

void Agent::persist() {
  Array list;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!dirty_) return;
    dirty_ = false;
    for (const auto& [id, t] : tasks_) {
      JObject::Ptr o = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
      o->set("id", id);
      o->set("task", t.json);
      o->set("state", std::string(store::taskStateName(t.state)));
      o->set("desired", std::string(store::taskStateName(t.desired)));
      o->set("message", t.message);
      o->set("err", t.err);
      o->set("exit_code", t.exitCode);
      o->set("pid", t.pid);
      o->set("grace_ns", t.graceNs);
      o->set("assigned", t.assigned);
      list.add(o);
    }
  }
  std::ostringstream out;
  list.stringify(out);
  if (Status s = writeFileAtomically(stateDir_ + "/tasks.json", out.str()); !s) {
    log::warn("agent", "cannot record the tasks", {{"error", s.message()}});
    std::lock_guard<std::mutex> lock(mu_);
    dirty_ = true;
  }
}

void Agent::load() {
  const std::string path = stateDir_ + "/tasks.json";
  std::ifstream in(path);
  if (!in) return;
  std::stringstream text;
  text << in.rdbuf();
  Array::Ptr list;
  try {
    list = Poco::JSON::Parser().parse(text.str()).extract<Array::Ptr>();
  } catch (const std::exception& e) {
    // A damaged record loses only this node's local view: the leader's full assignment set
    // rebuilds it, and the runtime still knows what runs.
    log::warn("agent", "task records do not read; starting from the leader's assignments",
              {{"file", path}, {"error", e.what()}});
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (std::size_t i = 0; list && i < list->size(); ++i) {
    auto o = list->getObject(static_cast<unsigned>(i));
    if (!o) continue;
    Task t;
    t.id = o->optValue<std::string>("id", "");
    if (t.id.empty()) continue;
    t.json = o->optValue<std::string>("task", "{}");
    t.state = stateNamed(o->optValue<std::string>("state", "assigned"), TaskState::kAssigned);
    t.reported = t.state;
    t.storeState = t.state;
    t.desired = stateNamed(o->optValue<std::string>("desired", "running"), TaskState::kRunning);
    t.message = o->optValue<std::string>("message", "");
    t.err = o->optValue<std::string>("err", "");
    t.exitCode = o->optValue<int64_t>("exit_code", -1);
    t.pid = o->optValue<int64_t>("pid", 0);
    t.graceNs = o->optValue<int64_t>("grace_ns", t.graceNs);
    t.assigned = o->optValue<bool>("assigned", true);
    // An op that was in flight when the daemon stopped is asked again (prepare is idempotent;
    // a task that was starting is waited on: it either runs or the runtime says it does not).
    if (t.state == TaskState::kStarting) t.state = TaskState::kRunning;
    tasks_.emplace(t.id, std::move(t));
  }
}

}  // namespace shoal::agent
