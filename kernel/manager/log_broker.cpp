#include "kernel/manager/log_broker.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <sstream>

#include "kernel/common/random.h"

namespace shoal::manager {
namespace {

using JObject = Poco::JSON::Object;
using JArray = Poco::JSON::Array;

std::string str(const Poco::JSON::Object& o) {
  std::ostringstream out;
  o.stringify(out);
  return out.str();
}

}  // namespace

LogBroker::LogBroker(Random& random, Wake wake) : random_(random), wake_(std::move(wake)) {}

std::string LogBroker::subscribe(const std::map<std::string, std::vector<std::string>>& tasksByNode,
                                 const Options& options, const std::string& serviceId) {
  std::string id;
  std::vector<std::string> wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = Clock::now();
    expireLocked(now, wake);
    id = newId(random_);
    Sub& s = subs_[id];
    s.options = options;
    if (options.follow) s.serviceId = serviceId;
    s.created = s.lastRead = now;
    for (const auto& [node, tasks] : tasksByNode) {
      if (!tasks.empty()) s.nodes[node].tasks = tasks;
    }
  }
  for (const auto& [node, tasks] : tasksByNode) {
    if (!tasks.empty()) wake.push_back(node);
  }
  for (const auto& n : wake) wake_(n);  // not under mu_: the dispatcher's lock comes first
  return id;
}

void LogBroker::taskStarted(const std::string& serviceId, const std::string& nodeId,
                            const std::string& taskId) {
  if (serviceId.empty() || nodeId.empty() || taskId.empty()) return;
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, s] : subs_) {
      if (s.cancelled || s.serviceId != serviceId) continue;
      NodePart& part = s.nodes[nodeId];
      const bool known =
          std::find(part.tasks.begin(), part.tasks.end(), taskId) != part.tasks.end();
      if (!known) part.tasks.push_back(taskId);
      // Asked for again even when known: the node may have been asked before the task reached
      // it (the agent skips a task it streams already).
      if (part.delivered) {
        if (std::find(part.added.begin(), part.added.end(), taskId) != part.added.end()) continue;
        part.added.push_back(taskId);
      } else if (known) {
        continue;  // goes with the first request
      }
      part.done = false;  // it streams again
      wake = true;
    }
  }
  if (wake) wake_(nodeId);  // not under mu_: the dispatcher's lock comes first
}

bool LogBroker::doneLocked(Sub& s, Clock::time_point now) {
  if (s.cancelled) return true;
  if (s.options.follow) return false;
  bool all = true;
  for (auto& [node, part] : s.nodes) {
    if (part.done) continue;
    if (now - (part.delivered ? part.lastHeard : s.created) >= kNodeSilence) {
      part.done = true;
      part.error = "node " + node + " did not send its tasks' logs within " +
                   std::to_string(kNodeSilence.count()) + " s";
      continue;
    }
    all = false;
  }
  return all;
}

void LogBroker::expireLocked(Clock::time_point now, std::vector<std::string>& wake) {
  for (auto it = subs_.begin(); it != subs_.end();) {
    Sub& s = it->second;
    if (!s.cancelled && now - s.lastRead > kReaderIdle) {
      s.cancelled = true;  // nobody reads it: the nodes stop streaming
      for (auto& [node, part] : s.nodes) {
        if (part.delivered && !part.done) wake.push_back(node);
      }
    }
    // Forgotten once every node that had it was told, or long after.
    bool told = true;
    for (const auto& [node, part] : s.nodes) {
      told = told && (!part.delivered || part.done || part.cancelTold);
    }
    if (s.cancelled && (told || now - s.lastRead > 4 * kReaderIdle)) {
      it = subs_.erase(it);
    } else {
      ++it;
    }
  }
}

Result<LogBroker::Batch> LogBroker::read(const std::string& id, uint64_t after,
                                         std::chrono::milliseconds wait) {
  const auto deadline = Clock::now() + wait;
  {
    std::vector<std::string> wake;
    {
      std::lock_guard<std::mutex> lock(mu_);
      expireLocked(Clock::now(), wake);
    }
    for (const auto& n : wake) wake_(n);
  }
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    auto it = subs_.find(id);
    if (it == subs_.end() || (it->second.cancelled && it->second.records.empty())) {
      return Status::notFound("log subscription " + id + " not found (it ended or expired)");
    }
    Sub& s = it->second;
    const auto now = Clock::now();
    s.lastRead = now;
    const bool done = doneLocked(s, now);
    const uint64_t end = s.base + s.records.size();
    if (after < end || done || now >= deadline || shutdown_) {
      Batch b;
      if (after < s.base) {
        b.dropped = s.base - after;
        after = s.base;
      }
      for (uint64_t i = after; i < end; ++i) b.records.push_back(s.records[i - s.base]);
      b.next = end;
      b.done = done;
      for (const auto& [node, part] : s.nodes) {
        if (!part.error.empty()) b.errors.push_back(part.error);
      }
      // Records read are no longer needed (a reader reads each once).
      while (!s.records.empty() && s.base < after) {
        s.records.pop_front();
        ++s.base;
      }
      if (done && !s.options.follow) subs_.erase(it);
      return b;
    }
    auto until = deadline;
    if (!s.options.follow) until = std::min(until, now + std::chrono::seconds(1));  // silent ones
    cv_.wait_until(lock, until);
  }
}

void LogBroker::cancel(const std::string& id) {
  std::vector<std::string> wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = subs_.find(id);
    if (it == subs_.end()) return;
    it->second.cancelled = true;
    for (auto& [node, part] : it->second.nodes) {
      if (part.delivered && !part.done) wake.push_back(node);
    }
  }
  cv_.notify_all();
  for (const auto& n : wake) wake_(n);
}

bool LogBroker::hasNewFor(const std::string& nodeId) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, s] : subs_) {
    auto p = s.nodes.find(nodeId);
    if (p == s.nodes.end()) continue;
    if (!s.cancelled && (!p->second.delivered || !p->second.added.empty())) return true;
    if (s.cancelled && p->second.delivered && !p->second.done && !p->second.cancelTold) {
      return true;
    }
  }
  return false;
}

std::string LogBroker::takeFor(const std::string& nodeId) {
  std::lock_guard<std::mutex> lock(mu_);
  JArray requests, cancelled;
  auto request = [&](const std::string& id, const Sub& s, NodePart& part,
                     const std::vector<std::string>& tasks) {
    JObject::Ptr r = new JObject;
    r->set("sub", id);
    r->set("seq", ++part.handed);
    JArray::Ptr list = new JArray;
    for (const auto& t : tasks) list->add(t);
    r->set("tasks", list);
    JObject::Ptr o = new JObject;
    o->set("follow", s.options.follow);
    o->set("tail", s.options.tail);
    o->set("since_ns", s.options.sinceNs);
    o->set("timestamps", s.options.timestamps);
    r->set("options", o);
    requests.add(r);
  };
  for (auto& [id, s] : subs_) {
    auto p = s.nodes.find(nodeId);
    if (p == s.nodes.end()) continue;
    NodePart& part = p->second;
    if (!s.cancelled && !part.delivered) {
      part.delivered = true;
      part.added.clear();  // they are in part.tasks
      part.lastHeard = Clock::now();
      request(id, s, part, part.tasks);
    } else if (!s.cancelled && !part.added.empty()) {
      // More tasks for a subscription the node already streams: the same request again, for
      // them alone (the agent adds them to its job).
      part.lastHeard = Clock::now();
      request(id, s, part, part.added);
      part.added.clear();
    } else if (s.cancelled && part.delivered && !part.done && !part.cancelTold) {
      part.cancelTold = true;
      cancelled.add(id);
    }
  }
  if (requests.size() == 0 && cancelled.size() == 0) return "";
  std::ostringstream out;
  out << ",\"logs\":";
  requests.stringify(out);
  out << ",\"logs_cancelled\":";
  cancelled.stringify(out);
  return out.str();
}

Result<std::string> LogBroker::publish(const std::string& nodeId, const std::string& body) {
  JObject::Ptr o;
  try {
    o = Poco::JSON::Parser().parse(body).extract<JObject::Ptr>();
  } catch (const std::exception& e) {
    return Status::invalidArgument(std::string("the logs body is not a JSON object: ") + e.what());
  }
  if (!o) return Status::invalidArgument("the logs body is not a JSON object");
  const std::string id = o->optValue<std::string>("sub", "");
  JObject reply;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = subs_.find(id);
    auto part = it == subs_.end() ? nullptr : &it->second.nodes[nodeId];
    if (!part || it->second.cancelled || part->tasks.empty()) {
      // Ended, expired, or never this node's: it stops sending.
      if (it != subs_.end() && part && part->tasks.empty()) it->second.nodes.erase(nodeId);
      reply.set("cancelled", true);
      return str(reply);
    }
    Sub& s = it->second;
    part->lastHeard = Clock::now();
    const std::set<std::string> mine(part->tasks.begin(), part->tasks.end());
    if (auto records = o->getArray("records")) {
      for (std::size_t i = 0; i < records->size(); ++i) {
        auto r = records->getObject(static_cast<unsigned>(i));
        if (!r) continue;
        Record rec;
        rec.taskId = r->optValue<std::string>("task", "");
        if (!mine.count(rec.taskId)) continue;  // a node speaks only for its own tasks
        rec.stream = r->optValue<std::string>("stream", "stdout");
        rec.timestampNs = r->optValue<int64_t>("ts", 0);
        rec.line = r->optValue<std::string>("line", "");
        s.records.push_back(std::move(rec));
      }
      while (s.records.size() > kMaxBuffered) {
        s.records.pop_front();
        ++s.base;
      }
    }
    // Done only when that job had every request handed out, and no more wait to be (an agent
    // that sends no seq is taken at its word).
    const int64_t seq = o->optValue<int64_t>("seq", -1);
    if (o->optValue<bool>("done", false) && part->added.empty() &&
        (seq < 0 || static_cast<uint64_t>(seq) >= part->handed)) {
      part->done = true;
    }
    const std::string error = o->optValue<std::string>("error", "");
    if (!error.empty()) part->error = error;
    reply.set("cancelled", false);
  }
  cv_.notify_all();
  return str(reply);
}

void LogBroker::expire() {
  std::vector<std::string> wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    expireLocked(Clock::now(), wake);
  }
  for (const auto& n : wake) wake_(n);
}

void LogBroker::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_ = true;
  }
  cv_.notify_all();
}

}  // namespace shoal::manager
