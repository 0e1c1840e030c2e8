#include "kernel/agent/agent.h"

#include <Poco/File.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>

#include "kernel/agent/wire.h"
#include "kernel/common/json_escape.h"
#include "kernel/common/log.h"

namespace shoal::agent {
namespace {

using namespace std::chrono_literals;
using store::TaskState;

// The task records are written at most this often (and at stop): every node rewrites its whole
// record with an fsync, and a burst of transitions would otherwise write it once per step.
constexpr auto kPersistEvery = 1s;
constexpr auto kLogsRetryAfter = 500ms;  // a log publish that found no leader

void appendMember(std::string& out, std::string_view key, std::string_view value) {
  out += ",\"";
  out += key;
  out += "\":";
  appendJsonString(out, value);
}

void appendMember(std::string& out, std::string_view key, int64_t value) {
  out += ",\"";
  out += key;
  out += "\":";
  out += std::to_string(value);
}

// A raw JSON value copied as it is, or `fallback` when absent.
void appendRaw(std::string& out, std::string_view key, std::optional<std::string_view> raw,
               std::string_view fallback) {
  out += ",\"";
  out += key;
  out += "\":";
  out += raw ? *raw : fallback;
}

// A string member copied as it is when it is a string, else "".
void appendStringRaw(std::string& out, std::string_view key, std::optional<std::string_view> raw) {
  appendRaw(out, key, raw && !raw->empty() && raw->front() == '"' ? raw : std::nullopt, "\"\"");
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
      clock_(clock),
      life_(std::make_shared<Life>()) {
  life_->agent = this;
}

void Agent::setNetwork(PluginNetwork* network, std::string nodeAddr) {
  network_ = network;
  nodeAddr_ = std::move(nodeAddr);
}

Agent::~Agent() {
  stop();
  // Completions the runtime still holds (a wait, a following logs op) find no agent.
  std::lock_guard<std::mutex> lock(life_->mu);
  life_->agent = nullptr;
}

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
    // Followed logs would stream on for nobody.
    for (auto& [sub, job] : logJobs_) {
      for (const auto& [task, op] : job.ops) runtime_.cancel(op);
    }
    logJobs_.clear();
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
    std::string req = "{\"session\":";
    appendJsonString(req, session_);
    req += ",\"wait_ms\":2000}";
    auto reply = leader_("/dispatcher/assignments", req);
    if (reply && reply->status == 200) {
      auto session = wire::member(reply->body, "session");
      if (session) {
        if (auto id = wire::stringOf(*session)) session_ = *id;
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
      cv_.wait_for(lock, 500ms, [this] {
        if (stop_ || !assignments_.empty() || !completions_.empty()) return true;
        if (clock_.monotonic() < logsRetryAt_) return false;
        for (const auto& [sub, job] : logJobs_) {
          if (!job.records.empty() || job.ops.empty()) return true;
        }
        return false;
      });
      if (stop_) return;
      replies.swap(assignments_);
      done.swap(completions_);
      for (const auto& r : replies) applyAssignments(r);
      for (const auto& c : done) finish(c);
    }
    // Peers and service endpoints go to the network plugin outside mu_: rewriting nftables
    // and FDB entries must not hold up completions and reports. Before the attaches below, so
    // an encrypted network's sandbox finds this node's tunnel key (network.h).
    for (const auto& r : replies) applyPeers(r);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = tasks_.begin(); it != tasks_.end();) {
        Task& t = it->second;
        ++it;  // step may erase t (a removed task)
        step(t);
      }
    }
    sendReports();
    sendLogs();
    if (clock_.monotonic() - lastPersist_ >= kPersistEvery) {
      persist();
      lastPersist_ = clock_.monotonic();
    }
  }
}

std::size_t Agent::removeAllTasks() {
  int64_t graceNs = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    leaving_ = true;
    for (auto& [id, t] : tasks_) {
      t.assigned = false;
      graceNs = std::max(graceNs, t.graceNs);
    }
  }
  cv_.notify_all();
  // Each task's grace period runs at once, beside the others'; removal takes a little more.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::nanoseconds(graceNs) + kRemoveAllSlack;
  std::unique_lock<std::mutex> lock(mu_);
  while (!tasks_.empty() && !stop_ && std::chrono::steady_clock::now() < deadline) {
    cv_.wait_for(lock, 50ms);
  }
  if (!tasks_.empty()) {
    log::warn("agent", "tasks still there after leaving",
              {{"count", std::to_string(tasks_.size())}});
  }
  return tasks_.size();
}

void Agent::applyAssignments(const std::string& body) {
  const std::string_view reply(body);
  if (!wire::member(reply, "session")) return;  // not a reply at all
  if (leaving_) return;                         // this node is leaving: nothing more to run
  if (wire::boolMember(reply, "full", false)) {
    for (auto& [id, t] : tasks_) t.assigned = false;
  }
  if (auto list = wire::member(reply, "tasks")) {
    wire::forEach(*list, [&](std::string_view obj) {
      const std::string id = wire::stringMember(obj, "ID");
      if (id.empty()) return true;
      auto [it, fresh] = tasks_.try_emplace(id);
      Task& t = it->second;
      t.id = id;
      t.json = std::string(obj);
      t.assigned = true;
      t.desired = stateNamed(wire::stringMember(obj, "DesiredState", "running"), t.desired);
      if (auto st = wire::member(obj, "Status"); st && st->front() == '{') {
        t.storeState =
            stateNamed(wire::stringMember(*st, "State", "assigned"), TaskState::kAssigned);
      }
      if (auto spec = wire::member(obj, "Spec")) {
        if (auto c = wire::member(*spec, "ContainerSpec")) {
          t.graceNs = wire::intMember(*c, "StopGracePeriod", t.graceNs);
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
      return true;
    });
  }
  if (auto removed = wire::member(reply, "removed")) {
    wire::forEach(*removed, [&](std::string_view raw) {
      if (auto id = wire::stringOf(raw)) {
        auto it = tasks_.find(*id);
        if (it != tasks_.end()) it->second.assigned = false;
      }
      return true;
    });
  }
  applyLogRequests(reply);
}

// The dispatcher's "peers": [{"network_id", "peers": [...]}] — the full set of remote
// endpoints of each network this node's tasks use — handed to the network plugin when it
// changed.
void Agent::applyPeers(std::string_view reply) {
  if (!network_) return;
  if (auto services = wire::member(reply, "services")) {
    std::string doc(*services);
    if (doc != servicesSent_) {
      if (Status s = network_->updateServices(doc); !s) {
        log::warn("agent", "the network plugin refused a service update", {{"error", s.message()}});
      } else {
        servicesSent_ = std::move(doc);
      }
    }
  }
  auto peers = wire::member(reply, "peers");
  if (!peers) return;
  wire::forEach(*peers, [&](std::string_view entry) {
    const std::string id = wire::stringMember(entry, "network_id");
    if (id.empty()) return true;
    std::string doc(entry);
    if (peersSent_[id] == doc) return true;
    std::string withSchema = "{\"schema\":\"shoal.peers/v1\",";
    withSchema.append(doc, 1, std::string::npos);
    if (Status s = network_->updatePeers(withSchema); !s) {
      log::warn("agent", "the network plugin refused a peer update",
                {{"network", id}, {"error", s.message()}});
      return true;
    }
    peersSent_[id] = std::move(doc);
    return true;
  });
}

void Agent::applyLogRequests(std::string_view reply) {
  if (auto ended = wire::member(reply, "logs_cancelled")) {
    wire::forEach(*ended, [&](std::string_view raw) {
      auto id = wire::stringOf(raw);
      auto it = id ? logJobs_.find(*id) : logJobs_.end();
      if (it == logJobs_.end()) return true;
      it->second.cancelled = true;
      for (const auto& [task, op] : it->second.ops) runtime_.cancel(op);
      return true;
    });
  }
  auto requests = wire::member(reply, "logs");
  if (!requests) return;
  wire::forEach(*requests, [&](std::string_view req) {
    const std::string sub = wire::stringMember(req, "sub");
    if (sub.empty()) return true;
    // A request for a job already streaming brings more tasks (a followed service's new ones).
    LogJob& job = logJobs_[sub];
    if (job.cancelled) return true;
    job.seq = std::max(job.seq, wire::intMember(req, "seq", 0));
    auto opts = wire::member(req, "options");
    const std::string options = opts ? std::string(*opts) : "{}";
    auto tasks = wire::member(req, "tasks");
    if (!tasks) return true;
    wire::forEach(*tasks, [&](std::string_view raw) {
      auto task = wire::stringOf(raw);
      if (!task || !tasks_.count(*task)) return true;  // not here (any more): nothing to read
      if (job.ops.count(*task)) return true;           // streaming already
      const std::string taskId = *task;
      uint64_t op = 0;
      // Each chunk becomes publish records; the op's end finishes this task's share.
      auto chunk = [life = life_, sub, taskId](const std::string& chunkJson) {
        std::string out;
        if (auto records = wire::member(chunkJson, "records")) {
          wire::forEach(*records, [&](std::string_view r) {
            out += ",{\"task\":";
            appendJsonString(out, taskId);
            appendMember(out, "stream", wire::stringMember(r, "stream", "stdout"));
            appendMember(out, "ts", wire::intMember(r, "timestamp_ns", 0));
            appendMember(out, "line", wire::stringMember(r, "line"));
            out += '}';
            return true;
          });
        }
        if (out.empty()) return;
        std::lock_guard<std::mutex> alive(life->mu);
        Agent* self = life->agent;
        if (!self) return;
        std::lock_guard<std::mutex> lock(self->mu_);
        auto it = self->logJobs_.find(sub);
        if (it == self->logJobs_.end()) return;
        it->second.records += out;
        self->cv_.notify_all();
      };
      auto done = [life = life_, sub, taskId](Status st, const std::string&) {
        std::lock_guard<std::mutex> alive(life->mu);
        Agent* self = life->agent;
        if (!self) return;
        std::lock_guard<std::mutex> lock(self->mu_);
        auto it = self->logJobs_.find(sub);
        if (it == self->logJobs_.end()) return;
        it->second.ops.erase(taskId);
        if (!st && st.code() != Status::Code::kCancelled && it->second.error.empty()) {
          it->second.error = "task " + taskId + ": " + st.message();
        }
        self->cv_.notify_all();
      };
      Status s = runtime_.logs(taskId, options, chunk, done, &op);
      if (s) {
        job.ops[taskId] = op;
      } else if (job.error.empty()) {
        job.error = "task " + taskId + ": " + s.message();
      }
      return true;
    });
    return true;
  });
}

void Agent::sendLogs() {
  struct Out {
    std::string sub, body, records, error;
    bool done;
    int64_t seq;
  };
  std::vector<Out> outs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (clock_.monotonic() < logsRetryAt_) return;
    for (auto it = logJobs_.begin(); it != logJobs_.end();) {
      LogJob& job = it->second;
      const bool done = job.ops.empty();
      if (job.records.empty() && !done) {
        ++it;
        continue;
      }
      std::string body = "{\"sub\":";
      appendJsonString(body, it->first);
      body += ",\"records\":[";
      if (!job.records.empty()) body.append(job.records, 1, std::string::npos);
      body += ']';
      appendMember(body, "seq", job.seq);
      appendMember(body, "error", job.error);
      body += done ? ",\"done\":true}" : ",\"done\":false}";
      outs.push_back(
          {it->first, std::move(body), std::move(job.records), job.error, done, job.seq});
      job.records.clear();
      it = done ? logJobs_.erase(it) : std::next(it);
    }
  }
  for (const auto& o : outs) {
    auto reply = leader_("/dispatcher/logs", o.body);
    if (!reply || reply->status >= 500) {
      // Not delivered (no leader just now): sent again next round, ahead of newer records.
      std::lock_guard<std::mutex> lock(mu_);
      LogJob& job = logJobs_[o.sub];
      job.records.insert(0, o.records);
      job.seq = std::max(job.seq, o.seq);
      logsRetryAt_ = clock_.monotonic() + kLogsRetryAfter;
      if (o.done && job.ops.empty() && job.error.empty()) job.error = o.error;
      continue;
    }
    const bool stopSending = reply->status == 200
                                 ? wire::boolMember(reply->body, "cancelled", false)
                                 : reply->status >= 400;
    if (stopSending && !o.done) {
      // The subscription ended (the reader went away): stop streaming.
      std::lock_guard<std::mutex> lock(mu_);
      auto it = logJobs_.find(o.sub);
      if (it != logJobs_.end() && !it->second.cancelled) {
        it->second.cancelled = true;
        for (const auto& [task, op] : it->second.ops) runtime_.cancel(op);
      }
    }
  }
}

Runtime::Done Agent::completion(const std::string& taskId, const std::string& op) {
  return [life = life_, taskId, op](Status s, const std::string& result) {
    std::lock_guard<std::mutex> alive(life->mu);
    Agent* self = life->agent;
    if (!self) return;
    std::lock_guard<std::mutex> lock(self->mu_);
    self->completions_.push_back({taskId, op, std::move(s), result});
    self->cv_.notify_all();
  };
}

void Agent::transition(Task& t, TaskState state, const std::string& message) {
  if (state < t.state) return;
  t.state = state;
  t.message = message;
  t.reported = state;
  std::string u = "{\"ID\":";
  appendJsonString(u, t.id);
  appendMember(u, "State", store::taskStateName(state));
  appendMember(u, "Message", message);
  if (!t.err.empty()) appendMember(u, "Err", t.err);
  if (t.exitCode >= 0) appendMember(u, "ExitCode", t.exitCode);
  if (t.pid > 0) appendMember(u, "PID", t.pid);
  appendMember(u, "Timestamp", clock_.nowNanos());
  u += '}';
  reports_.push_back(std::move(u));
  dirty_ = true;
}

namespace {

// Docker's service templates ({{.Service.Name}}, {{.Task.Slot}}, {{.Node.Hostname}}, ...) in
// the hostname, environment and mounts, expanded as this node sees them. Works on the raw
// JSON text: every value put in is made of [A-Za-z0-9_.-] (ids, names, numbers, hostnames),
// so no escaping is needed, and an unknown placeholder stays as it was.
std::string expandTemplates(std::string_view raw,
                            const std::map<std::string, std::string>& values) {
  std::string out;
  out.reserve(raw.size());
  std::size_t i = 0;
  while (i < raw.size()) {
    const std::size_t open = raw.find("{{", i);
    if (open == std::string_view::npos) break;
    const std::size_t close = raw.find("}}", open + 2);
    if (close == std::string_view::npos) break;
    std::string_view inner = raw.substr(open + 2, close - open - 2);
    while (!inner.empty() && inner.front() == ' ') inner.remove_prefix(1);
    while (!inner.empty() && inner.back() == ' ') inner.remove_suffix(1);
    out.append(raw.substr(i, open - i));
    auto it = values.find(std::string(inner));
    if (it != values.end()) {
      out += it->second;
    } else {
      out.append(raw.substr(open, close + 2 - open));
    }
    i = close + 2;
  }
  out.append(raw.substr(std::min(i, raw.size())));
  return out;
}

std::string thisHostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "";
  return name;
}

}  // namespace

std::string Agent::runtimeDocument(const Task& t) const {
  // The runtime's task document (runtime.h) from the assigned task object, its values copied
  // as the task has them.
  const std::string_view task(t.json);
  const bool readable = wire::skipValue(task, 0) != std::string_view::npos &&
                        wire::skipSpace(task, 0) < task.size() &&
                        task[wire::skipSpace(task, 0)] == '{';
  std::string doc = "{\"schema\":\"shoal.task/v1\",\"id\":";
  appendJsonString(doc, t.id);
  std::string spec = "{";
  if (readable) {
    appendStringRaw(doc, "service_id", wire::member(task, "ServiceID"));
    appendMember(doc, "slot", wire::intMember(task, "Slot", 0));
    appendStringRaw(doc, "node_id", wire::member(task, "NodeID"));
    appendStringRaw(doc, "name", wire::member(task, "Name"));
    auto tmpl = wire::member(task, "Spec");
    auto c = tmpl ? wire::member(*tmpl, "ContainerSpec") : std::nullopt;
    auto text = [&](const char* key) {
      auto v = wire::member(task, key);
      return v && v->size() >= 2 && v->front() == '"' ? std::string(v->substr(1, v->size() - 2))
                                                      : std::string();
    };
    const std::string taskName = text("Name");
    const std::string slot = std::to_string(wire::intMember(task, "Slot", 0));
    const auto dot = taskName.rfind('.');
    const std::map<std::string, std::string> values = {
        {".Service.ID", text("ServiceID")},
        {".Service.Name", dot == std::string::npos ? taskName : taskName.substr(0, dot)},
        {".Task.ID", t.id},
        {".Task.Name", taskName + "." + t.id},
        {".Task.Slot", slot},
        {".Node.ID", text("NodeID")},
        {".Node.Hostname", thisHostname()},
    };
    std::string hostname, env, mounts;
    if (c && !c->empty() && c->front() == '{') {
      if (auto h = wire::member(*c, "Hostname")) hostname = expandTemplates(*h, values);
      if (auto e = wire::member(*c, "Env")) env = expandTemplates(*e, values);
      if (auto m = wire::member(*c, "Mounts")) mounts = expandTemplates(*m, values);
    }
    if (c && !c->empty() && c->front() == '{') {
      appendStringRaw(spec, "image", wire::member(*c, "Image"));
      appendRaw(spec, "command", wire::member(*c, "Command"), "[]");
      appendRaw(spec, "args", wire::member(*c, "Args"), "[]");
      appendRaw(spec, "env", env.empty() ? std::nullopt : std::optional<std::string_view>(env),
                "[]");
      appendStringRaw(spec, "workdir", wire::member(*c, "Dir"));
      appendStringRaw(spec, "user", wire::member(*c, "User"));
      appendStringRaw(spec, "hostname",
                      hostname.empty() ? std::nullopt : std::optional<std::string_view>(hostname));
      appendStringRaw(spec, "stop_signal", wire::member(*c, "StopSignal"));
      appendMember(spec, "stop_grace_ns", t.graceNs);
      if (auto h = wire::member(*c, "Healthcheck")) appendRaw(spec, "healthcheck", h, "");
      // Docker's names for what the runtime's document spells its own way.
      if (auto v = wire::member(*c, "ReadOnly")) appendRaw(spec, "read_only", v, "");
      if (auto v = wire::member(*c, "Init")) appendRaw(spec, "init", v, "");
      if (auto v = wire::member(*c, "TTY")) appendRaw(spec, "tty", v, "");
      if (auto v = wire::member(*c, "CapabilityAdd")) appendRaw(spec, "cap_add", v, "");
      if (auto v = wire::member(*c, "CapabilityDrop")) appendRaw(spec, "cap_drop", v, "");
      if (auto v = wire::member(*c, "Sysctls")) appendRaw(spec, "sysctls", v, "");
      if (auto v = wire::member(*c, "Ulimits")) {
        std::string ulimits = "[";
        wire::forEach(*v, [&](std::string_view u) {
          ulimits += ulimits.size() > 1 ? ",{\"name\":" : "{\"name\":";
          appendJsonString(ulimits, wire::stringMember(u, "Name"));
          appendMember(ulimits, "soft", wire::intMember(u, "Soft", 0));
          appendMember(ulimits, "hard", wire::intMember(u, "Hard", 0));
          ulimits += '}';
          return true;
        });
        ulimits += ']';
        appendRaw(spec, "ulimits", std::string_view(ulimits), "");
      }
      if (!mounts.empty()) appendRaw(spec, "mounts", std::string_view(mounts), "");
    }
    if (tmpl) {
      if (auto r = wire::member(*tmpl, "Resources")) appendRaw(spec, "resources", r, "");
    }
  }
  if (spec.size() > 1) spec.erase(1, 1);  // the first member's comma
  spec += '}';
  doc += ",\"spec\":";
  doc += spec;
  if (!t.netns.empty()) {
    doc += ",\"netns\":";
    appendJsonString(doc, t.netns);
    // Names resolve through the network plugin's embedded DNS in the task's namespace, as
    // Docker's 127.0.0.11; the task's own addresses go in its /etc/hosts.
    doc += ",\"dns\":{\"nameservers\":[\"127.0.0.11\"],\"search\":[],\"options\":[\"ndots:0\"]}";
    std::string addresses;
    if (auto spec = wire::member(t.json, "Spec")) {
      if (auto list = wire::member(*spec, "NetworksAttachments")) {
        wire::forEach(*list, [&](std::string_view a) {
          std::string address = wire::stringMember(a, "Address");
          address = address.substr(0, address.find('/'));
          if (address.empty()) return true;
          addresses += addresses.empty() ? "" : ",";
          appendJsonString(addresses, address);
          return true;
        });
      }
    }
    doc += ",\"addresses\":[" + addresses + "]";
  }
  doc += ",\"networks\":[]}";
  return doc;
}

// The network plugin's attach document for a task on networks or with host-mode ports
// (network.h, shoal.attach/v1), or "" for a task with neither.
std::string Agent::attachDocument(const Task& t) const {
  auto spec = wire::member(t.json, "Spec");
  auto attachments = spec ? wire::member(*spec, "NetworksAttachments") : std::nullopt;
  std::string hostPorts;
  if (auto list = spec ? wire::member(*spec, "HostPorts") : std::nullopt) {
    wire::forEach(*list, [&](std::string_view p) {
      hostPorts += hostPorts.empty() ? "{\"protocol\":" : ",{\"protocol\":";
      appendJsonString(hostPorts, wire::stringMember(p, "Protocol", "tcp"));
      hostPorts += ",\"published\":" + std::to_string(wire::intMember(p, "PublishedPort", 0)) +
                   ",\"target\":" + std::to_string(wire::intMember(p, "TargetPort", 0)) + "}";
      return true;
    });
  }
  std::string endpoints, networks;
  if (attachments) {
    wire::forEach(*attachments, [&](std::string_view a) {
      endpoints += endpoints.empty() ? "{" : ",{";
      endpoints += "\"network_id\":";
      appendJsonString(endpoints, wire::stringMember(a, "NetworkID"));
      endpoints += ",\"address\":";
      appendJsonString(endpoints, wire::stringMember(a, "Address"));
      endpoints += ",\"mac\":";
      appendJsonString(endpoints, wire::stringMember(a, "MAC"));
      auto aliases = wire::member(a, "Aliases");
      endpoints += ",\"aliases\":";
      endpoints += aliases ? std::string(*aliases) : std::string("[]");
      endpoints += '}';
      networks += networks.empty() ? "{" : ",{";
      networks += "\"id\":";
      appendJsonString(networks, wire::stringMember(a, "NetworkID"));
      networks += ",\"name\":";
      appendJsonString(networks, wire::stringMember(a, "Name"));
      networks += ",\"subnet\":";
      appendJsonString(networks, wire::stringMember(a, "Subnet"));
      networks += ",\"gateway\":";
      appendJsonString(networks, wire::stringMember(a, "Gateway"));
      networks += ",\"vni\":" + std::to_string(wire::intMember(a, "VNI", 0));
      auto options = wire::member(a, "Options");
      networks += ",\"options\":";
      networks += options ? std::string(*options) : std::string("{}");
      networks += '}';
      return true;
    });
  }
  if (endpoints.empty() && hostPorts.empty()) return "";
  std::string doc = "{\"schema\":\"shoal.attach/v1\",\"task_id\":";
  appendJsonString(doc, t.id);
  doc += ",\"node_addr\":";
  appendJsonString(doc, nodeAddr_);
  doc += ",\"endpoints\":[" + endpoints + "],\"networks\":[" + networks + "]";
  if (!hostPorts.empty()) doc += ",\"host_ports\":[" + hostPorts + "]";
  doc += "}";
  return doc;
}

// Tears down a removed task's network namespace (idempotent in the plugin).
void Agent::detach(const Task& t) {
  if (!network_ || attachDocument(t).empty()) return;
  Status s = network_->detach(t.id, completion(t.id, "detach"));
  if (!s) {
    log::warn("agent", "network detach failed", {{"task", t.id}, {"error", s.message()}});
  }
}

void Agent::step(Task& t) {
  const bool stopWanted = !t.assigned || t.desired >= TaskState::kShutdown;
  // A start still in flight (one waiting for its health check) does not hold up a stop: the
  // runtime takes a shutdown during a start.
  const bool stopDuringStart = t.busy && t.starting && !t.stopSent && stopWanted;
  if (t.busy && !stopDuringStart) return;
  if (stopWanted) {
    if (t.state == TaskState::kStarting || t.state == TaskState::kRunning) {
      if (t.stopSent) return;  // its completion moves the task on
      t.stopSent = true;
      t.busy = true;
      Status s = runtime_.shutdown(t.id, t.graceNs, completion(t.id, "shutdown"));
      if (!s) {
        t.busy = t.starting;
        t.stopSent = false;
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
        detach(t);
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
      if (!t.attached) {
        const std::string doc = attachDocument(t);
        if (!doc.empty()) {
          if (!network_) {
            t.err = "this node has no network plugin for the task's networks";
            transition(t, TaskState::kRejected, t.err);
            return;
          }
          t.busy = true;
          Status s = network_->attach(t.id, doc, completion(t.id, "attach"));
          if (!s) {
            t.busy = false;
            t.err = "network attach failed: " + s.message();
            transition(t, TaskState::kRejected, t.err);
          }
          return;
        }
        t.attached = true;
      }
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
      t.starting = true;
      Status s = runtime_.start(t.id, completion(t.id, "start"));
      if (!s) {
        t.busy = false;
        t.starting = false;
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
  const std::string_view doc(c.result);
  t.pid = wire::intMember(doc, "pid", t.pid);
  t.exitCode = wire::intMember(doc, "exit_code", t.exitCode);
  if (c.op == "wait") {
    t.waiting = false;
    if (t.state >= TaskState::kComplete) return;
    if (!c.status) {
      if (c.status.code() == Status::Code::kCancelled) return;
      t.err = c.status.message();
      transition(t, TaskState::kFailed, c.status.message());
      return;
    }
    const std::string state = wire::stringMember(doc, "state");
    if (t.desired >= TaskState::kShutdown || state == "shutdown") {
      transition(t, TaskState::kShutdown, "shutdown");
    } else if (t.exitCode == 0 && state != "failed") {
      transition(t, TaskState::kComplete, "finished");
    } else {
      // Docker adds why the runtime ended it: an unhealthy container, an OOM kill. A task that
      // failed with exit 0 (an unhealthy one that stopped cleanly) is named by that reason.
      const std::string why = wire::stringMember(doc, "message");
      const bool ended = wire::stringMember(doc, "health") == "unhealthy" ||
                         wire::boolMember(doc, "oom_killed", false);
      if (t.exitCode == 0 && !why.empty()) {
        t.err = why;
      } else {
        t.err = "task: non-zero exit (" + std::to_string(t.exitCode) + ")";
        if (ended && !why.empty()) t.err += ": " + why;
      }
      transition(t, TaskState::kFailed, "started");
    }
    return;
  }
  t.busy = false;
  if (c.op == "attach") {
    if (c.status) {
      t.attached = true;
      t.netns = wire::stringMember(doc, "netns");
    } else {
      t.err = "network attach failed: " + c.status.message();
      transition(t, TaskState::kRejected, t.err);
    }
  } else if (c.op == "prepare") {
    if (c.status) {
      transition(t, TaskState::kReady, "prepared");
    } else {
      t.err = c.status.message();
      transition(t, TaskState::kRejected, c.status.message());
    }
  } else if (c.op == "start") {
    t.starting = false;
    if (t.stopSent) {
      // Told to stop while starting: the shutdown's completion says how it ended.
      if (c.status) transition(t, TaskState::kRunning, "started");
      t.busy = true;  // the shutdown is still in flight
    } else if (t.state >= TaskState::kComplete) {
      // Already ended (the shutdown it was interrupted by completed first).
    } else if (c.status) {
      transition(t, TaskState::kRunning, "started");
    } else {
      t.err = c.status.message();
      transition(t, TaskState::kFailed, "starting failed: " + c.status.message());
    }
  } else if (c.op == "shutdown") {
    t.stopSent = false;
    t.busy = t.starting;  // a start it interrupted has yet to complete
    if (!c.status) t.err = c.status.message();
    transition(t, TaskState::kShutdown, "shutdown");
  } else if (c.op == "remove") {
    detach(t);
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
  std::string out = "[";
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!dirty_) return;
    dirty_ = false;
    out.reserve(tasks_.size() * 1024);
    bool first = true;
    for (const auto& [id, t] : tasks_) {
      out += first ? "{\"id\":" : ",{\"id\":";
      first = false;
      appendJsonString(out, id);
      // The task as the dispatcher sent it (a JSON object), copied rather than escaped into a
      // string: this record is rewritten every second while tasks change.
      appendRaw(out, "task", std::string_view(t.json), "{}");
      appendMember(out, "state", store::taskStateName(t.state));
      appendMember(out, "desired", store::taskStateName(t.desired));
      appendMember(out, "message", t.message);
      appendMember(out, "err", t.err);
      appendMember(out, "exit_code", t.exitCode);
      appendMember(out, "pid", t.pid);
      appendMember(out, "grace_ns", t.graceNs);
      out += t.assigned ? ",\"assigned\":true}" : ",\"assigned\":false}";
    }
  }
  out += ']';
  if (Status s = writeFileAtomically(stateDir_ + "/tasks.json", out); !s) {
    log::warn("agent", "cannot record the tasks", {{"error", s.message()}});
    std::lock_guard<std::mutex> lock(mu_);
    dirty_ = true;
  }
}

void Agent::load() {
  const std::string path = stateDir_ + "/tasks.json";
  std::ifstream in(path);
  if (!in) return;
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  // Read in place (wire.h), like the assignments it was made from; all or nothing.
  std::vector<Task> loaded;
  auto readRecord = [&](std::string_view o) {
    if (o.front() != '{') return true;  // not a record: skipped
    Task t;
    t.id = wire::stringMember(o, "id");
    if (t.id.empty()) return true;
    // An object; records written before it was copied raw hold it as a string.
    auto task = wire::member(o, "task");
    if (task && task->front() == '{') {
      t.json = std::string(*task);
    } else {
      t.json = task ? wire::stringOf(*task).value_or("{}") : "{}";
    }
    t.state = stateNamed(wire::stringMember(o, "state", "assigned"), TaskState::kAssigned);
    t.reported = t.state;
    t.storeState = t.state;
    t.desired = stateNamed(wire::stringMember(o, "desired", "running"), TaskState::kRunning);
    t.message = wire::stringMember(o, "message");
    t.err = wire::stringMember(o, "err");
    t.exitCode = wire::intMember(o, "exit_code", -1);
    t.pid = wire::intMember(o, "pid", 0);
    t.graceNs = wire::intMember(o, "grace_ns", t.graceNs);
    t.assigned = wire::boolMember(o, "assigned", true);
    // An op that was in flight when the daemon stopped is asked again (prepare is idempotent;
    // a task that was starting is waited on: it either runs or the runtime says it does not).
    if (t.state == TaskState::kStarting) t.state = TaskState::kRunning;
    loaded.push_back(std::move(t));
    return true;
  };
  std::string problem;
  const std::size_t end = wire::skipValue(text, 0);
  if (end == std::string::npos || wire::skipSpace(text, end) != text.size()) {
    problem = "not one well-formed JSON value";
  } else if (!wire::forEach(text, readRecord)) {
    problem = "not a JSON array of records";
  }
  if (!problem.empty()) {
    // A damaged record loses only this node's local view: the leader's full assignment set
    // rebuilds it, and the runtime still knows what runs.
    log::warn("agent", "task records do not read; starting from the leader's assignments",
              {{"file", path}, {"error", problem}});
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& t : loaded) {
    std::string id = t.id;
    tasks_.emplace(std::move(id), std::move(t));
  }
}

}  // namespace shoal::agent
