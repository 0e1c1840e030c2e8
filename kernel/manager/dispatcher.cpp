#include "kernel/manager/dispatcher.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

#include "kernel/agent/wire.h"
#include "kernel/common/json_escape.h"
#include "kernel/common/log.h"
#include "kernel/manager/allocator.h"
#include "kernel/manager/service_spec.h"

namespace shoal::manager {
namespace {

using namespace std::chrono_literals;
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

// Whether `now` differs from `before` (the same task) in anything but its status: what an
// agent acts on and has not told the leader itself.
bool differsForAgent(const store::Object& before, const store::Object& now) {
  return before.desiredState != now.desiredState || before.nodeId != now.nodeId ||
         before.spec != now.spec || before.name != now.name || before.labels != now.labels ||
         before.serviceId != now.serviceId || before.slot != now.slot ||
         before.createdNs != now.createdNs;
}

// Whether a committed change to a task is one a session of its node would send.
bool sendable(const store::Event& e) {
  if (e.type != store::EventType::kUpdated || !e.previous) return true;
  const bool was = assigned(*e.previous), is = assigned(*e.object);
  if (was != is) return true;
  return is && differsForAgent(*e.previous, *e.object);
}

// A task other nodes' overlays must reach: on a node, on networks, and neither ended nor told
// to stop.
bool isPeer(const store::Object& t) {
  if (t.nodeId.empty() || t.desiredState > TaskState::kRunning) return false;
  if (t.spec.find("\"NetworksAttachments\"") == std::string::npos) return false;
  const TaskState obs = observedState(t);
  return obs >= TaskState::kAssigned && !isTerminal(obs);
}

// A task a service's name resolves to and its VIP balances over: on networks and RUNNING.
bool isBackend(const store::Object& t) {
  return isPeer(t) && observedState(t) == TaskState::kRunning;
}

// A task that has run: RUNNING, or ended after starting. A status flush keeps only a task's last
// state, so one that ran and failed at once may never show RUNNING (shut down or rejected, it
// may never have run at all).
bool hasRun(const store::Object& t) {
  const TaskState st = observedState(t);
  return st == TaskState::kRunning || st == TaskState::kComplete || st == TaskState::kFailed;
}

// The "services" member of a node's reply: network.h's shoal.services/v1 for the services on
// `networks` (their VIPs there and their running tasks' addresses there, with aliases and
// task names for the embedded DNS).
// The ingress network as the routing mesh needs it on a node.
struct Mesh {
  std::string networkId;   // "" without an ingress network
  bool published = false;  // some service publishes a port in ingress mode
  std::string network;     // the network member of "ingress": {id, name, subnet, ...}
  std::map<std::string, std::pair<std::string, std::string>> nodes;  // id -> (address, MAC)
  std::string self;  // this node's "ingress" member ("" until it has an address)
};

Mesh meshFor(const store::ReadView& v, const std::string& nodeId) {
  Mesh m;
  // Asked on every poll of every node: the cheap question first.
  for (const auto& svc : v.list(Kind::kService)) {
    if (svc->spec.find("\"PublishedPort\"") == std::string::npos) continue;
    auto ep = agent::wire::member(svc->spec, "EndpointSpec");
    auto ports = ep ? agent::wire::member(*ep, "Ports") : std::nullopt;
    if (!ports) continue;
    agent::wire::forEach(*ports, [&](std::string_view p) {
      if (agent::wire::stringMember(p, "PublishMode", "ingress") == "ingress" &&
          agent::wire::intMember(p, "PublishedPort", 0) > 0) {
        m.published = true;
      }
      return !m.published;
    });
    if (m.published) break;
  }
  if (!m.published) return m;
  for (const auto& n : v.list(Kind::kNetwork)) {
    if (!agent::wire::boolMember(n->spec, "Ingress", false)) continue;
    auto alloc = agent::wire::member(n->status, "Allocation");
    if (!alloc) return m;
    m.networkId = n->id;
    m.network = "{\"id\":";
    appendJsonString(m.network, n->id);
    m.network += ",\"name\":";
    appendJsonString(m.network, n->name);
    m.network += ",\"subnet\":";
    appendJsonString(m.network, agent::wire::stringMember(*alloc, "subnet"));
    m.network += ",\"gateway\":";
    appendJsonString(m.network, agent::wire::stringMember(*alloc, "gateway"));
    m.network += ",\"vni\":" + std::to_string(agent::wire::intMember(*alloc, "vni", 0));
    auto options = agent::wire::member(*alloc, "options");
    m.network += ",\"options\":" + (options ? std::string(*options) : std::string("{}")) + "}";
    // Parsed once (a member lookup per node would read the object once per node).
    try {
      auto status = Poco::JSON::Parser().parse(n->status).extract<JObject::Ptr>();
      auto nodes = status ? status->getObject("Nodes") : nullptr;
      for (const auto& id : nodes ? nodes->getNames() : std::vector<std::string>{}) {
        auto e = nodes->getObject(id);
        if (!e) continue;
        m.nodes[id] = {e->optValue<std::string>("Address", ""),
                       e->optValue<std::string>("MAC", "")};
      }
    } catch (const std::exception&) {
    }
    break;
  }
  if (m.networkId.empty()) return m;
  auto self = m.nodes.find(nodeId);
  auto node = v.get(Kind::kNode, nodeId);
  if (self != m.nodes.end() && node) {
    m.self = ",\"ingress\":{\"network\":" + m.network + ",\"address\":";
    appendJsonString(m.self, self->second.first);
    m.self += ",\"mac\":";
    appendJsonString(m.self, self->second.second);
    m.self += ",\"node_addr\":";
    appendJsonString(m.self, agent::wire::stringMember(node->status, "Addr"));
    m.self += '}';
  }
  return m;
}

// A service's published ports as network.h's services document lists them.
std::string portsOf(const store::Object& svc) {
  std::string out;
  auto ep = agent::wire::member(svc.spec, "EndpointSpec");
  auto ports = ep ? agent::wire::member(*ep, "Ports") : std::nullopt;
  if (!ports) return out;
  agent::wire::forEach(*ports, [&](std::string_view p) {
    const int64_t published = agent::wire::intMember(p, "PublishedPort", 0);
    if (published <= 0) return true;
    out += out.empty() ? "{\"protocol\":" : ",{\"protocol\":";
    appendJsonString(out, agent::wire::stringMember(p, "Protocol", "tcp"));
    out += ",\"published\":" + std::to_string(published);
    out += ",\"target\":" + std::to_string(agent::wire::intMember(p, "TargetPort", 0));
    out += ",\"mode\":";
    appendJsonString(out, agent::wire::stringMember(p, "PublishMode", "ingress"));
    out += '}';
    return true;
  });
  return out;
}

std::string servicesFor(const store::ReadView& v, const std::set<std::string>& networks,
                        const Mesh& mesh) {
  struct Svc {
    std::string backends;  // ",{...}"
  };
  std::map<std::string, Svc> found;
  for (const auto& t : v.list(Kind::kTask)) {
    if (!isBackend(*t)) continue;
    auto list = agent::wire::member(t->spec, "NetworksAttachments");
    if (!list) continue;
    agent::wire::forEach(*list, [&](std::string_view a) {
      const std::string net = agent::wire::stringMember(a, "NetworkID");
      if (!networks.count(net)) return true;
      std::string address = agent::wire::stringMember(a, "Address");
      address = address.substr(0, address.find('/'));
      auto aliases = agent::wire::member(a, "Aliases");
      std::string& b = found[t->serviceId].backends;
      b += ",{\"network_id\":\"" + net + "\",\"address\":\"" + address + "\",\"task_id\":\"" +
           t->id + "\",\"task_name\":";
      appendJsonString(b, t->name + "." + t->id);
      b += ",\"aliases\":" + (aliases ? std::string(*aliases) : std::string("[]")) + "}";
      return true;
    });
  }
  std::string out = ",\"services\":{\"schema\":\"shoal.services/v1\",\"services\":[";
  bool first = true;
  for (const auto& svc : v.list(Kind::kService)) {
    std::string vips;
    if (auto ep = agent::wire::member(svc->status, "Endpoint")) {
      if (auto list = agent::wire::member(*ep, "VirtualIPs")) {
        agent::wire::forEach(*list, [&](std::string_view vip) {
          const std::string net = agent::wire::stringMember(vip, "NetworkID");
          if (!networks.count(net)) return true;
          std::string address = agent::wire::stringMember(vip, "Addr");
          address = address.substr(0, address.find('/'));
          vips += ",{\"network_id\":\"" + net + "\",\"address\":\"" + address + "\"}";
          return true;
        });
      }
    }
    auto it = found.find(svc->id);
    if (vips.empty() && it == found.end()) continue;
    std::string mode = "vip";
    if (auto ep = agent::wire::member(svc->spec, "EndpointSpec")) {
      mode = agent::wire::stringMember(*ep, "Mode", "vip");
    }
    out += first ? "{\"id\":" : ",{\"id\":";
    first = false;
    appendJsonString(out, svc->id);
    out += ",\"name\":";
    appendJsonString(out, svc->name);
    out += ",\"endpoint_mode\":";
    appendJsonString(out, mode);
    out += ",\"vips\":[" + (vips.empty() ? std::string() : vips.substr(1)) + "]";
    out += ",\"ports\":[" + portsOf(*svc) + "]";
    const std::string backends = it == found.end() ? std::string() : it->second.backends;
    out += ",\"backends\":[" + (backends.empty() ? std::string() : backends.substr(1)) + "]}";
  }
  out += "]";
  if (mesh.published) out += mesh.self;
  out += "}";
  return out;
}

// The "tunnel" of an encrypted network's peer set for `nodeId` (network.h): its key pair's
// private half and tunnel address, and every other node's public key, tunnel address and
// underlay address, from the allocator's cluster status Tunnels. "" while it has no key.
std::string tunnelFor(const store::ReadView& v, const std::string& nodeId) {
  auto clusters = v.list(Kind::kCluster);
  if (clusters.empty()) return "";
  JObject::Ptr tunnels, nodes, self;
  try {
    auto status = Poco::JSON::Parser().parse(clusters.front()->status).extract<JObject::Ptr>();
    tunnels = status ? status->getObject("Tunnels") : nullptr;
    nodes = tunnels ? tunnels->getObject("Nodes") : nullptr;
    self = nodes ? nodes->getObject(nodeId) : nullptr;
  } catch (const std::exception&) {
    return "";
  }
  if (!self) return "";
  const std::string subnet = tunnels->optValue<std::string>("Subnet", "");
  const std::string prefix =
      subnet.substr(subnet.find('/') == std::string::npos ? subnet.size() : subnet.find('/'));
  const auto addrOf = [&](const std::string& id) {
    auto n = v.get(Kind::kNode, id);
    return n ? agent::wire::stringMember(n->status, "Addr") : std::string();
  };
  const std::string selfAddr = addrOf(nodeId);
  std::string out = "{\"private_key\":";
  appendJsonString(out, self->optValue<std::string>("PrivateKey", ""));
  out += ",\"address\":";
  appendJsonString(out, self->optValue<std::string>("Address", "") + prefix);
  out += ",\"nodes\":[";
  bool first = true;
  for (const auto& id : nodes->getNames()) {
    auto e = nodes->getObject(id);
    const std::string addr = id == nodeId || !e ? std::string() : addrOf(id);
    if (addr.empty() || addr == selfAddr) continue;
    out += first ? "{\"node_addr\":" : ",{\"node_addr\":";
    first = false;
    appendJsonString(out, addr);
    out += ",\"public_key\":";
    appendJsonString(out, e->optValue<std::string>("PublicKey", ""));
    out += ",\"address\":";
    appendJsonString(out, e->optValue<std::string>("Address", ""));
    out += "}";
  }
  return out + "]}";
}

// The "peers" member of a node's reply (network.h shoal.peers/v1 without the schema): for
// each network its assigned tasks use, every peer task's address, MAC and node address. ""
// when its tasks use no network. Built from one view.
std::string peersFor(const store::ReadView& v, const std::vector<ObjectPtr>& mine,
                     const std::string& nodeId) {
  std::set<std::string> networks;
  // The routing mesh puts every node on the ingress network while a service publishes a port
  // there, whether or not the node runs one of its tasks.
  const Mesh mesh = meshFor(v, nodeId);
  if (!mesh.networkId.empty() && mesh.published) networks.insert(mesh.networkId);
  for (const auto& t : mine) {
    if (t->spec.find("\"NetworksAttachments\"") == std::string::npos) continue;
    auto spec = agent::wire::member(t->spec, "NetworksAttachments");
    if (!spec) continue;
    agent::wire::forEach(*spec, [&](std::string_view a) {
      networks.insert(agent::wire::stringMember(a, "NetworkID"));
      return true;
    });
  }
  if (networks.empty()) return "";
  std::map<std::string, std::string> entries;  // network id -> ",{peer}..."
  std::map<std::string, std::string> nodeAddrs;
  for (const auto& t : v.list(Kind::kTask)) {
    if (!isPeer(*t)) continue;
    auto list = agent::wire::member(t->spec, "NetworksAttachments");
    if (!list) continue;
    auto addr = nodeAddrs.find(t->nodeId);
    if (addr == nodeAddrs.end()) {
      auto n = v.get(Kind::kNode, t->nodeId);
      addr =
          nodeAddrs.emplace(t->nodeId, n ? agent::wire::stringMember(n->status, "Addr") : "").first;
    }
    if (addr->second.empty()) continue;
    agent::wire::forEach(*list, [&](std::string_view a) {
      const std::string net = agent::wire::stringMember(a, "NetworkID");
      if (!networks.count(net)) return true;
      std::string address = agent::wire::stringMember(a, "Address");
      address = address.substr(0, address.find('/'));
      std::string& e = entries[net];
      e += ",{\"address\":\"" + address + "\",\"mac\":\"" + agent::wire::stringMember(a, "MAC") +
           "\",\"node_addr\":\"" + addr->second + "\",\"task_id\":\"" + t->id + "\"}";
      return true;
    });
  }
  std::string out = ",\"peers\":[";
  bool first = true;
  const std::string services = servicesFor(v, networks, mesh);
  // The other nodes' mesh sandboxes are peers on the ingress network too.
  if (networks.count(mesh.networkId)) {
    for (const auto& [node, endpoint] : mesh.nodes) {
      auto n = v.get(Kind::kNode, node);
      const std::string addr = n ? agent::wire::stringMember(n->status, "Addr") : "";
      if (addr.empty()) continue;
      std::string address = endpoint.first.substr(0, endpoint.first.find('/'));
      entries[mesh.networkId] += ",{\"address\":\"" + address + "\",\"mac\":\"" + endpoint.second +
                                 "\",\"node_addr\":\"" + addr + "\",\"task_id\":\"ingress-sbox\"}";
    }
  }
  std::optional<std::string> tunnel;  // made once, for the first encrypted network
  for (const auto& net : networks) {
    out += first ? "{" : ",{";
    first = false;
    out += "\"network_id\":\"" + net + "\",\"peers\":[";
    const std::string& e = entries[net];
    if (!e.empty()) out.append(e, 1, std::string::npos);
    out += "]";
    auto n = v.get(Kind::kNetwork, net);
    if (n && networkEncrypted(n->spec)) {
      if (!tunnel) tunnel = tunnelFor(v, nodeId);
      if (!tunnel->empty()) out += ",\"tunnel\":" + *tunnel;
    }
    out += "}";
  }
  out += ']';
  out += services;
  return out;
}

api::Response badRequest(const std::string& message) {
  return api::Response::error(Status::invalidArgument(message));
}

}  // namespace

Dispatcher::Dispatcher(ReplicatedStore& store, Random& random, const Clock& clock)
    : store_(store), random_(random), clock_(clock), logs_(random, [this](const std::string& node) {
        std::lock_guard<std::mutex> lock(mu_);
        bump(node);
      }) {}

Dispatcher::~Dispatcher() { stop(); }

void Dispatcher::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (watcher_.joinable()) return;
  stop_ = false;
  watcher_ = std::thread([this] { watchLoop(); });
  flusher_ = std::thread([this] { flushLoop(); });
}

void Dispatcher::stop() {
  logs_.shutdown();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    wakeAll();
  }
  if (watcher_.joinable()) watcher_.join();
  if (flusher_.joinable()) flusher_.join();
  flush();
}

Dispatcher::NodeWake& Dispatcher::wakeFor(const std::string& nodeId) {
  auto& w = nodes_[nodeId];
  if (!w) w = std::make_unique<NodeWake>();
  return *w;
}

void Dispatcher::bump(const std::string& nodeId) {
  NodeWake& w = wakeFor(nodeId);
  ++w.generation;
  w.cv.notify_all();
}

void Dispatcher::wakeAll() {
  for (auto& [node, w] : nodes_) {
    ++w->generation;
    w->cv.notify_all();
  }
  stopping_.notify_all();
}

void Dispatcher::watchLoop() {
  std::unique_ptr<store::Watch> watch;
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    if (!watch) {
      auto w = store_.store().watch(store::KindSet{Kind::kTask, Kind::kCluster}, std::nullopt);
      if (!w) {
        std::this_thread::sleep_for(200ms);
        continue;
      }
      watch = std::move(*w);
      // Anything may have changed while there was no watch: wake every session.
      std::lock_guard<std::mutex> lock(mu_);
      wakeAll();
    }
    auto batch = watch->nextBatch(200ms);
    if (!batch) {
      if (batch.status().code() != Status::Code::kTimeout) watch.reset();
      continue;
    }
    // Tasks that reached RUNNING: followed `service logs` take them in (after mu_ is let go:
    // the broker wakes sessions through it).
    std::vector<std::tuple<std::string, std::string, std::string>> started;
    std::unique_lock<std::mutex> lock(mu_);
    bool peersMoved = false;
    for (const auto& e : batch->events) {
      if (e.object->kind == Kind::kCluster) {
        // New tunnel keys (a node joined, or a rotation) go to every node at once.
        const auto tunnels = [](const store::Object& o) {
          return std::string(agent::wire::member(o.status, "Tunnels").value_or(""));
        };
        if (!e.previous || tunnels(*e.previous) != tunnels(*e.object)) peersMoved = true;
        continue;
      }
      // A task joining or leaving an overlay changes other nodes' peers (rare enough to wake
      // every session: only tasks on networks count).
      const bool was = e.previous && isPeer(*e.previous);
      const bool is = e.type != store::EventType::kDeleted && isPeer(*e.object);
      if (was != is || (is && was && e.previous->nodeId != e.object->nodeId)) peersMoved = true;
      if ((e.previous && isBackend(*e.previous)) !=
          (e.type != store::EventType::kDeleted && isBackend(*e.object))) {
        peersMoved = true;
      }
      if (e.type != store::EventType::kDeleted && hasRun(*e.object) &&
          (!e.previous || !hasRun(*e.previous))) {
        started.emplace_back(e.object->serviceId, e.object->nodeId, e.object->id);
      }
      if (!sendable(e)) continue;
      if (!e.object->nodeId.empty()) bump(e.object->nodeId);
      if (e.previous && !e.previous->nodeId.empty() && e.previous->nodeId != e.object->nodeId) {
        bump(e.previous->nodeId);
      }
    }
    if (peersMoved) wakeAll();
    lock.unlock();
    for (const auto& [service, node, task] : started) logs_.taskStarted(service, node, task);
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
  // Forget sessions nobody polled for a while (their agents reconnect with a new one); looked
  // for now and then, not on every poll of every agent.
  const auto now = clock_.monotonic();
  if (now >= nextExpiry_) {
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      it = now - it->second.lastUsed > kSessionIdle ? sessions_.erase(it) : std::next(it);
    }
    nextExpiry_ = now + kSessionIdle / 6;
  }
  bool full = false;
  auto it = sessions_.find(sessionId);
  if (it == sessions_.end() || it->second.nodeId != nodeId) {
    sessionId = newId(random_);
    it = sessions_.emplace(sessionId, Session{nodeId, {}, now, {}}).first;
    full = true;
  }
  NodeWake& wake = wakeFor(nodeId);  // stays: entries are never erased
  for (;;) {
    const uint64_t gen = wake.generation;
    lock.unlock();
    std::vector<ObjectPtr> tasks;
    std::string peers;
    store_.view([&](const store::ReadView& v) {
      for (const auto& t : v.tasksByNode(nodeId)) {
        if (assigned(*t)) tasks.push_back(t);
      }
      peers = peersFor(v, tasks, nodeId);
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
    std::map<std::string, ObjectPtr> now_sent;
    for (const auto& t : tasks) {
      auto s = session.sent.find(t->id);
      if (s == session.sent.end() || full) {
        changed.push_back(t);
        now_sent.emplace(t->id, t);
      } else if (s->second->version != t->version && differsForAgent(*s->second, *t)) {
        changed.push_back(t);
        now_sent.emplace(t->id, t);
      } else {
        // Only its status moved on (the agent's own reports): nothing to tell the agent. Its
        // other fields are what the agent holds, so the newer copy stands for what was sent.
        now_sent.emplace(t->id, t);
      }
    }
    for (const auto& [id, task] : session.sent) {
      if (!now_sent.count(id)) removed.push_back(id);
    }
    const bool peersChanged = peers != session.peers;
    if (full || !changed.empty() || !removed.empty() || peersChanged || logs_.hasNewFor(nodeId) ||
        std::chrono::steady_clock::now() >= deadline) {
      session.sent = std::move(now_sent);
      session.peers = peers;
      lock.unlock();
      const std::string logs = logs_.takeFor(nodeId);
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
      out << "]" << logs << ((full || peersChanged) ? peers : std::string()) << "}";
      return api::Response::json(out.str());
    }
    wake.cv.wait_until(lock, deadline, [&] { return stop_ || wake.generation != gen; });
  }
}

api::Response Dispatcher::status(const std::string& nodeId, const std::string& body) {
  // Every state of every task passes here (five per task on its way to RUNNING): the reports
  // are read in place (agent/wire.h) rather than through Poco's parser.
  std::vector<Update> updates;
  const std::string_view text = body.empty() ? std::string_view("{}") : std::string_view(body);
  const std::size_t end = agent::wire::skipValue(text, 0);
  const std::size_t start = agent::wire::skipSpace(text, 0);
  if (end == std::string_view::npos || agent::wire::skipSpace(text, end) != text.size() ||
      text[start] != '{') {
    return badRequest("the status request body is not a JSON object");
  }
  auto list = agent::wire::member(text, "updates");
  if (!list || list->front() != '[') {
    return badRequest("the status request has no \"updates\" array");
  }
  std::size_t i = 0;
  std::optional<api::Response> refused;
  const bool read = agent::wire::forEach(*list, [&](std::string_view u) {
    const std::string at = "status update " + std::to_string(i++);
    if (u.front() != '{') {
      refused = badRequest(at + " is not an object");
      return false;
    }
    const auto name = agent::wire::stringMember(u, "State");
    auto state = store::parseTaskState(name);
    if (!state) {
      refused = badRequest(at + ": " + state.status().message());
      return false;
    }
    if (*state < TaskState::kAccepted) {
      refused = badRequest(at + ": an agent cannot report state " + name);
      return false;
    }
    const auto id = agent::wire::stringMember(u, "ID");
    if (Status s = store::validateId(Kind::kTask, id); !s) {
      refused = badRequest(at + ": " + s.message());
      return false;
    }
    // taskStatusJson's document ("State" first), written here directly.
    std::string st = "{\"State\":";
    appendJsonString(st, store::taskStateName(*state));
    st += ",\"Timestamp\":";
    st += std::to_string(agent::wire::intMember(u, "Timestamp", clock_.nowNanos()));
    st += ",\"Message\":";
    appendJsonString(st, agent::wire::stringMember(u, "Message"));
    const auto err = agent::wire::stringMember(u, "Err");
    if (!err.empty()) {
      st += ",\"Err\":";
      appendJsonString(st, err);
    }
    const int64_t exitCode = agent::wire::intMember(u, "ExitCode", -1);
    const int64_t pid = agent::wire::intMember(u, "PID", 0);
    if (exitCode >= 0 || pid > 0) {
      st += ",\"ContainerStatus\":{";
      if (pid > 0) st += "\"PID\":" + std::to_string(pid);
      if (exitCode >= 0)
        st += std::string(pid > 0 ? "," : "") + "\"ExitCode\":" + std::to_string(exitCode);
      st += '}';
    }
    st += '}';
    updates.push_back({nodeId, id, std::move(st), static_cast<int32_t>(*state)});
    return true;
  });
  if (refused) return *refused;
  if (!read) return badRequest("the status request body cannot be read");
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return api::Response::error(Status::unavailable("the dispatcher is stopping"));
    for (auto& u : updates) queue_.push_back(std::move(u));
  }
  stopping_.notify_all();  // the flusher commits them now
  return api::Response::json("{\"accepted\":" + std::to_string(updates.size()) + "}");
}

api::Response Dispatcher::logs(const std::string& nodeId, const std::string& body) {
  auto reply = logs_.publish(nodeId, body);
  if (!reply) return api::Response::error(reply.status());
  return api::Response::json(*reply);
}

void Dispatcher::flushLoop() {
  // A flush starts as soon as a state is queued: an idle cluster reports with no delay, and a
  // busy one batches by itself (what arrives during a commit goes in the next one).
  auto lastExpiry = std::chrono::steady_clock::now();
  for (;;) {
    bool idle;
    {
      std::unique_lock<std::mutex> lock(mu_);
      stopping_.wait_for(lock, 1s, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      idle = queue_.empty();
    }
    if (std::chrono::steady_clock::now() - lastExpiry >= 1s) {
      logs_.expire();  // log readers that went away without cancelling
      lastExpiry = std::chrono::steady_clock::now();
    }
    if (idle) continue;
    if (!flush()) {
      // The store refused (no quorum, a timeout): try again a little later, not in a spin.
      std::unique_lock<std::mutex> lock(mu_);
      if (stopping_.wait_for(lock, 50ms, [this] { return stop_; })) return;
    }
  }
}

bool Dispatcher::flush() {
  std::lock_guard<std::mutex> one(flushMu_);
  std::vector<Update> updates;
  {
    std::lock_guard<std::mutex> lock(mu_);
    updates.swap(queue_);
  }
  if (updates.empty()) return true;
  bool committed = true;
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
      // Kept for the next flush (a state is applied only if it moves the task forward, so one
      // that did commit after all is not applied twice). The agent also re-reports what a
      // full assignment set shows the store lacks.
      log::warn("dispatcher", "status flush failed", {{"error", s.message()}});
      committed = false;
      std::lock_guard<std::mutex> lock(mu_);
      if (!stop_) {
        queue_.insert(queue_.begin(), std::make_move_iterator(todo.begin() + begin),
                      std::make_move_iterator(todo.begin() + end));
      }
    }
  }
  return committed;
}

}  // namespace shoal::manager
