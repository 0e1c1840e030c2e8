#include "kernel/manager/allocator.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <sstream>
#include <vector>

#include "kernel/common/log.h"
#include "kernel/manager/service_spec.h"
#include "kernel/manager/tunnel_keys.h"
#include "kernel/store/tx.h"

namespace shoal::manager {
namespace {

using namespace std::chrono_literals;
using store::Kind;
using store::KindSet;
using store::ObjectPtr;
using store::TaskState;
using JObject = Poco::JSON::Object;
using JArray = Poco::JSON::Array;

constexpr std::size_t kTxBudget = 500;  // tasks per transaction

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

std::string stringify(const JArray& a) {
  std::ostringstream out;
  a.stringify(out);
  return out.str();
}

JObject::Ptr child(const JObject::Ptr& o, const std::string& key) {
  return o ? o->getObject(key) : nullptr;
}

// A network's allocation (its status's Allocation), or null while it has none.
JObject::Ptr allocationOf(const store::Object& net) {
  auto status = parse(net.status);
  if (!status || status->optValue<std::string>("State", "") != "allocated") return nullptr;
  return status->getObject("Allocation");
}

bool networkSettled(const store::Object& net) {
  auto status = parse(net.status);
  const std::string state = status ? status->optValue<std::string>("State", "") : "";
  return state == "allocated" || state == "failed";
}

// The network document the plugin allocates from (network.h, shoal.network/v1).
std::string networkDocument(const store::Object& net) {
  auto spec = parse(net.spec);
  JObject doc(Poco::JSON_PRESERVE_KEY_ORDER);
  doc.set("schema", std::string("shoal.network/v1"));
  doc.set("id", net.id);
  doc.set("name", net.name);
  doc.set("driver", spec ? spec->optValue<std::string>("Driver", "overlay") : "overlay");
  auto options = child(spec, "Options");
  doc.set("options", options ? options : JObject::Ptr(new JObject));
  JObject::Ptr ipam = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
  if (auto configs =
          spec && child(spec, "IPAM") ? child(spec, "IPAM")->getArray("Configs") : nullptr) {
    if (configs->size() > 0) {
      auto c = configs->getObject(0);
      if (c && c->has("Subnet")) ipam->set("subnet", c->getValue<std::string>("Subnet"));
      if (c && c->has("Gateway")) ipam->set("gateway", c->getValue<std::string>("Gateway"));
    }
  }
  doc.set("ipam", ipam);
  JObject::Ptr labels = new JObject;
  for (const auto& [k, v] : net.labels) labels->set(k, v);
  doc.set("labels", labels);
  doc.set("attachable", spec ? spec->optValue<bool>("Attachable", false) : false);
  doc.set("ingress", spec ? spec->optValue<bool>("Ingress", false) : false);
  return stringify(doc);
}

std::string ingressNetworkId(const store::ReadView& v) {
  for (const auto& n : v.list(Kind::kNetwork)) {
    auto spec = parse(n->spec);
    if (spec && spec->optValue<bool>("Ingress", false)) return n->id;
  }
  return "";
}

std::string endpointDocument(const std::string& owner, const std::string& networkId,
                             const std::string& address) {
  JObject doc(Poco::JSON_PRESERVE_KEY_ORDER);
  doc.set("schema", std::string("shoal.endpoint/v1"));
  doc.set("owner", owner);
  doc.set("network_id", networkId);
  doc.set("address", address);
  return stringify(doc);
}

std::string endpointRequest(const std::string& kind, const std::string& owner,
                            const std::string& networkId) {
  JObject doc(Poco::JSON_PRESERVE_KEY_ORDER);
  doc.set("schema", std::string("shoal.endpoint-req/v1"));
  doc.set("kind", kind);
  doc.set("owner", owner);
  doc.set("network_id", networkId);
  doc.set("address", std::string());
  return stringify(doc);
}

bool wantsAllocation(const store::Object& t) {
  return t.desiredState <= TaskState::kRunning && observedState(t) == TaskState::kNew;
}

// The endpoints a live task holds, from its spec.
std::vector<std::string> taskEndpoints(const store::Object& t) {
  std::vector<std::string> out;
  auto spec = parse(t.spec);
  auto attachments = spec ? spec->getArray("NetworksAttachments") : nullptr;
  if (!attachments) return out;
  for (std::size_t i = 0; i < attachments->size(); ++i) {
    auto a = attachments->getObject(static_cast<unsigned>(i));
    if (!a) continue;
    out.push_back(endpointDocument(t.id, a->optValue<std::string>("NetworkID", ""),
                                   a->optValue<std::string>("Address", "")));
  }
  return out;
}

std::vector<std::string> serviceVips(const store::Object& svc) {
  std::vector<std::string> out;
  auto status = parse(svc.status);
  auto vips =
      child(status, "Endpoint") ? child(status, "Endpoint")->getArray("VirtualIPs") : nullptr;
  if (!vips) return out;
  for (std::size_t i = 0; i < vips->size(); ++i) {
    auto v = vips->getObject(static_cast<unsigned>(i));
    if (!v) continue;
    out.push_back(endpointDocument("vip:" + svc.id, v->optValue<std::string>("NetworkID", ""),
                                   v->optValue<std::string>("Addr", "")));
  }
  return out;
}

// The ingress network (null when there is none).
ObjectPtr ingressNetwork(const store::ReadView& v) {
  for (const auto& n : v.list(Kind::kNetwork)) {
    auto spec = parse(n->spec);
    if (spec && spec->optValue<bool>("Ingress", false)) return n;
  }
  return nullptr;
}

// Every node's endpoint on the ingress network (its status's Nodes{id: {Address, MAC}}), as
// endpoint documents by node id.
std::map<std::string, std::string> ingressEndpoints(const store::ReadView& v) {
  std::map<std::string, std::string> out;
  auto ingress = ingressNetwork(v);
  auto status = ingress ? parse(ingress->status) : nullptr;
  auto nodes = status ? status->getObject("Nodes") : nullptr;
  if (!nodes) return out;
  for (const auto& id : nodes->getNames()) {
    auto e = nodes->getObject(id);
    if (!e) continue;
    out[id] = endpointDocument("node:" + id, ingress->id, e->optValue<std::string>("Address", ""));
  }
  return out;
}

}  // namespace

std::vector<ServiceNetwork> serviceNetworks(const std::string& serviceSpecJson,
                                            const std::string& ingressId) {
  std::vector<ServiceNetwork> out;
  auto spec = parse(serviceSpecJson);
  if (!spec) return out;
  // A task spec is the TaskTemplate itself; a service spec holds one.
  auto tmpl = spec->has("TaskTemplate") ? spec->getObject("TaskTemplate") : spec;
  bool ingress = false;
  if (auto ep = spec->getObject("EndpointSpec")) {
    if (auto ports = ep->getArray("Ports")) {
      for (std::size_t i = 0; i < ports->size(); ++i) {
        auto p = ports->getObject(static_cast<unsigned>(i));
        if (p && p->optValue<std::string>("PublishMode", "ingress") == "ingress") ingress = true;
      }
    }
  }
  if (ingress && !ingressId.empty()) out.push_back({ingressId, {}});
  auto networks = tmpl ? tmpl->getArray("Networks") : nullptr;
  if (!networks) return out;
  for (std::size_t i = 0; i < networks->size(); ++i) {
    auto n = networks->getObject(static_cast<unsigned>(i));
    if (!n) continue;
    ServiceNetwork sn;
    sn.target = n->optValue<std::string>("Target", "");
    if (auto aliases = n->getArray("Aliases")) {
      for (std::size_t j = 0; j < aliases->size(); ++j) {
        sn.aliases.push_back(aliases->getElement<std::string>(static_cast<unsigned>(j)));
      }
    }
    bool dup = false;
    for (const auto& o : out) dup = dup || o.target == sn.target;
    if (!sn.target.empty() && !dup) out.push_back(std::move(sn));
  }
  return out;
}

Allocator::Allocator(ReplicatedStore& store, agent::PluginNetwork* network, const Clock& clock)
    : store_(store), network_(network), clock_(clock) {}

Allocator::~Allocator() { stop(); }

void Allocator::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { run(); });
}

void Allocator::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Allocator::stopping() {
  std::lock_guard<std::mutex> lock(mu_);
  return stop_;
}

Status Allocator::restoreAll() {
  tasks_.clear();
  services_.clear();
  JArray all;
  store_.view([&](const store::ReadView& v) {
    for (const auto& n : v.list(Kind::kNetwork)) {
      if (auto a = allocationOf(*n)) all.add(a);
    }
    for (const auto& s : v.list(Kind::kService)) {
      auto vips = serviceVips(*s);
      for (const auto& e : vips) all.add(Poco::JSON::Parser().parse(e));
      if (!vips.empty()) services_[s->id].endpoints = std::move(vips);
    }
    for (const auto& entry : ingressEndpoints(v)) all.add(Poco::JSON::Parser().parse(entry.second));
    for (const auto& t : v.list(Kind::kTask)) {
      if (isTerminal(observedState(*t))) continue;
      auto eps = taskEndpoints(*t);
      for (const auto& e : eps) all.add(Poco::JSON::Parser().parse(e));
      if (!eps.empty()) tasks_[t->id].endpoints = std::move(eps);
    }
  });
  if (!network_) return Status::ok();
  return network_->restore(stringify(all));
}

void Allocator::release(std::map<std::string, Held>& held, const std::string& owner) {
  auto it = held.find(owner);
  if (it == held.end()) return;
  if (network_) {
    for (const auto& e : it->second.endpoints) {
      if (Status s = network_->releaseEndpoint(e); !s) {
        log::warn("allocator", "cannot release an address", {{"error", s.message()}});
      }
    }
  }
  held.erase(it);
}

bool networkEncrypted(const std::string& networkSpecJson) {
  if (networkSpecJson.find("\"encrypted\"") == std::string::npos) return false;
  auto options = child(parse(networkSpecJson), "Options");
  return options && options->has("encrypted");
}

void Allocator::run() {
  std::unique_ptr<store::Watch> watch;
  std::set<std::string> networks, services, tasks;
  bool nodesDirty = true;    // nodes' ingress endpoints to look at
  bool tunnelsDirty = true;  // nodes' tunnel keys to look at
  for (;;) {
    if (stopping()) return;
    if (!watch) {
      if (Status s = restoreAll(); !s) {
        log::warn("allocator", "cannot replay the allocations into the network plugin",
                  {{"error", s.message()}});
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, 1s, [this] { return stop_; });
        continue;
      }
      nodesDirty = true;
      tunnelsDirty = true;
      auto w = store_.store().viewAndWatch(
          KindSet{Kind::kNetwork, Kind::kService, Kind::kTask, Kind::kNode, Kind::kCluster},
          [&](const store::ReadView& v) {
            for (const auto& n : v.list(Kind::kNetwork)) networks.insert(n->id);
            for (const auto& s : v.list(Kind::kService)) services.insert(s->id);
            for (const auto& t : v.list(Kind::kTask)) {
              if (wantsAllocation(*t)) tasks.insert(t->id);
            }
          });
      if (!w) {
        log::warn("allocator", "cannot watch the store", {{"error", w.status().message()}});
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, 1s, [this] { return stop_; });
        continue;
      }
      watch = std::move(*w);
    }
    const bool busy = !networks.empty() || !services.empty() || !tasks.empty();
    const bool retrying = !retryTasks_.empty() || !retryServices_.empty();
    bool lost = false, networkReady = false;
    for (int round = 0; round < 64; ++round) {
      auto batch = watch->nextBatch(round > 0 || busy ? 0ms : retrying ? 50ms : 250ms);
      if (!batch) {
        if (batch.status().code() != Status::Code::kTimeout) lost = true;
        break;
      }
      for (const auto& e : batch->events) {
        const store::Object& o = *e.object;
        const bool deleted = e.type == store::EventType::kDeleted;
        switch (o.kind) {
          case Kind::kCluster:
            tunnelsDirty = tunnelsDirty || !e.previous || e.previous->spec != o.spec;
            break;
          case Kind::kNetwork:
            if (deleted || !e.previous) tunnelsDirty = true;
            if (deleted) {
              networks.erase(o.id);
              if (network_ && allocationOf(o)) (void)network_->releaseNetwork(o.id);
            } else {
              networks.insert(o.id);
              if (allocationOf(o) && !(e.previous && allocationOf(*e.previous))) {
                networkReady = true;
              }
            }
            break;
          case Kind::kService:
            nodesDirty = true;  // it may start or stop publishing a port
            if (deleted) {
              services.erase(o.id);
              release(services_, o.id);
            } else {
              services.insert(o.id);
            }
            break;
          case Kind::kNode:
            if (deleted || !e.previous) nodesDirty = tunnelsDirty = true;
            break;
          case Kind::kTask:
            if (deleted || isTerminal(observedState(o))) {
              tasks.erase(o.id);
              release(tasks_, o.id);
            } else if (wantsAllocation(o)) {
              tasks.insert(o.id);
            }
            break;
          default:
            break;
        }
      }
    }
    if (lost) {
      watch.reset();
      retryTasks_.clear();
      retryServices_.clear();
      networks.clear();
      services.clear();
      tasks.clear();
      nodesDirty = true;
      tunnelsDirty = true;
      continue;
    }
    if (networkReady) {
      nodesDirty = true;
      // Waiting services and tasks may go on now.
      store_.view([&](const store::ReadView& v) {
        for (const auto& s : v.list(Kind::kService)) services.insert(s->id);
        for (const auto& t : v.list(Kind::kTask)) {
          if (wantsAllocation(*t)) tasks.insert(t->id);
        }
      });
    }
    // What a conflict sent back is tried again after a pause (or at once with news).
    tasks.insert(retryTasks_.begin(), retryTasks_.end());
    services.insert(retryServices_.begin(), retryServices_.end());
    retryTasks_.clear();
    retryServices_.clear();
    if (nodesDirty) nodesDirty = !allocateIngressNodes();
    // Before the tasks: a task on an encrypted network finds its node's key there.
    if (tunnelsDirty || clock_.now() >= nextRotation_) tunnelsDirty = !allocateTunnels();
    if (networks.empty() && services.empty() && tasks.empty()) continue;
    std::set<std::string> n, s, t;
    n.swap(networks);
    s.swap(services);
    t.swap(tasks);
    allocateNetworks(n);
    allocateServices(s);
    allocateTasks(t);
  }
}

void Allocator::allocateNetworks(const std::set<std::string>& ids) {
  // The ingress network first: `swarm init` asks for its subnet (10.0.0.0/24, Docker's), and a
  // network created in the same moment, taking the pool's first free /24, must not get it.
  std::vector<std::string> order(ids.begin(), ids.end());
  std::string ingress;
  store_.view([&](const store::ReadView& v) { ingress = ingressNetworkId(v); });
  std::stable_partition(order.begin(), order.end(),
                        [&](const std::string& id) { return id == ingress; });
  for (const auto& id : order) {
    if (stopping()) return;
    ObjectPtr net;
    store_.view([&](const store::ReadView& v) { net = v.get(Kind::kNetwork, id); });
    if (!net || networkSettled(*net)) continue;
    JObject::Ptr status = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
    bool allocated = false;
    if (!network_) {
      status->set("State", std::string("failed"));
      status->set("Err", std::string("no network plugin is loaded on the leader (network-overlay "
                                     "provides the overlay driver)"));
    } else {
      auto alloc = network_->allocateNetwork(networkDocument(*net));
      if (!alloc) {
        status->set("State", std::string("failed"));
        status->set("Err", alloc.status().message());
      } else {
        status->set("State", std::string("allocated"));
        status->set("Allocation", Poco::JSON::Parser().parse(*alloc));
        allocated = true;
      }
    }
    const std::string text = stringify(*status);
    Status s = store_.update(
        [&](store::Tx& tx) {
          auto cur = tx.get(Kind::kNetwork, id);
          if (!cur || networkSettled(*cur)) return Status::conflict("settled meanwhile");
          store::Object copy = *cur;
          copy.status = text;
          return tx.update(std::move(copy));
        },
        5s);
    if (!s && allocated) (void)network_->releaseNetwork(id);
    if (!s && s.code() != Status::Code::kConflict) {
      log::warn("allocator", "cannot record a network's allocation",
                {{"network", net->name}, {"error", s.message()}});
    }
  }
}

void Allocator::allocateServices(const std::set<std::string>& ids) {
  for (const auto& id : ids) {
    if (stopping()) return;
    ObjectPtr svc;
    std::string ingress;
    std::map<std::string, ObjectPtr> nets;
    store_.view([&](const store::ReadView& v) {
      svc = v.get(Kind::kService, id);
      ingress = ingressNetworkId(v);
      for (const auto& n : v.list(Kind::kNetwork)) nets[n->id] = n;
    });
    if (!svc) continue;
    auto spec = parse(svc->spec);
    const std::string mode = child(spec, "EndpointSpec")
                                 ? child(spec, "EndpointSpec")->optValue<std::string>("Mode", "vip")
                                 : "vip";
    // The networks that should carry a VIP (only allocated ones: the others come later).
    std::vector<std::string> want;
    if (mode == "vip") {
      for (const auto& sn : serviceNetworks(svc->spec, ingress)) {
        auto it = nets.find(sn.target);
        if (it != nets.end() && allocationOf(*it->second)) want.push_back(sn.target);
      }
    }
    auto status = parse(svc->status);
    if (!status) status = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
    std::map<std::string, std::string> have;  // network id -> address
    if (auto vips = child(status, "Endpoint") ? child(status, "Endpoint")->getArray("VirtualIPs")
                                              : nullptr) {
      for (std::size_t i = 0; i < vips->size(); ++i) {
        auto v = vips->getObject(static_cast<unsigned>(i));
        if (v)
          have[v->optValue<std::string>("NetworkID", "")] = v->optValue<std::string>("Addr", "");
      }
    }
    bool same = have.size() == want.size();
    for (const auto& w : want) same = same && have.count(w);
    // A service with no VIP to hold and none written needs no Endpoint at all (most services
    // on a cluster without overlays): nothing is written for it.
    if (same && (status->has("Endpoint") || want.empty())) continue;
    if (!network_ && !want.empty()) continue;
    std::vector<std::string> fresh;  // endpoints allocated in this pass
    JArray::Ptr vips = new JArray;
    bool failed = false;
    for (const auto& w : want) {
      std::string addr;
      if (auto it = have.find(w); it != have.end()) {
        addr = it->second;
      } else {
        auto ep = network_->allocateEndpoint(endpointRequest("vip", "vip:" + id, w));
        if (!ep) {
          log::warn("allocator", "cannot give a service a VIP",
                    {{"service", svc->name}, {"error", ep.status().message()}});
          failed = true;
          break;
        }
        auto doc = parse(*ep);
        addr = doc ? doc->optValue<std::string>("address", "") : "";
        fresh.push_back(endpointDocument("vip:" + id, w, addr));
      }
      JObject::Ptr vip = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
      vip->set("NetworkID", w);
      vip->set("Addr", addr);
      vips->add(vip);
    }
    auto undo = [&] {
      for (const auto& e : fresh) (void)network_->releaseEndpoint(e);
    };
    if (failed) {
      undo();
      continue;
    }
    JObject::Ptr endpoint = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
    endpoint->set("Mode", mode);
    endpoint->set("VirtualIPs", vips);
    const uint64_t version = svc->version;
    Status s = store_.update(
        [&](store::Tx& tx) {
          auto cur = tx.get(Kind::kService, id);
          if (!cur || cur->version != version) return Status::conflict("the service moved on");
          store::Object copy = *cur;
          auto st = parse(copy.status);
          if (!st) st = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
          st->set("Endpoint", endpoint);
          copy.status = stringify(*st);
          return tx.update(std::move(copy));
        },
        5s);
    if (!s) {
      undo();
      retryServices_.insert(id);
      continue;
    }
    // Released only once the store no longer names them.
    std::vector<std::string> held;
    for (const auto& [net, addr] : have) {
      bool kept = false;
      for (const auto& w : want) kept = kept || w == net;
      if (!kept && network_)
        (void)network_->releaseEndpoint(endpointDocument("vip:" + id, net, addr));
    }
    for (const auto& w : want) {
      for (std::size_t i = 0; i < vips->size(); ++i) {
        auto v = vips->getObject(static_cast<unsigned>(i));
        if (v->getValue<std::string>("NetworkID") == w) {
          held.push_back(endpointDocument("vip:" + id, w, v->getValue<std::string>("Addr")));
        }
      }
    }
    if (held.empty()) {
      services_.erase(id);
    } else {
      services_[id].endpoints = std::move(held);
    }
  }
}

void Allocator::allocateTasks(const std::set<std::string>& ids) {
  struct Planned {
    std::string id;
    uint64_t version = 0;
    std::string spec;     // with NetworksAttachments, or unchanged
    std::string message;  // why it still waits ("" when allocated)
    std::vector<std::string> endpoints;
  };
  std::vector<std::string> todo(ids.begin(), ids.end());
  for (std::size_t begin = 0; begin < todo.size(); begin += kTxBudget) {
    if (stopping()) return;
    const std::size_t end = std::min(todo.size(), begin + kTxBudget);
    std::vector<Planned> plan;
    std::map<std::string, ObjectPtr> nets;
    std::string ingress;
    std::map<std::string, std::string> serviceSpecs;
    std::vector<ObjectPtr> tasks;
    store_.view([&](const store::ReadView& v) {
      ingress = ingressNetworkId(v);
      for (const auto& n : v.list(Kind::kNetwork)) nets[n->id] = n;
      for (std::size_t i = begin; i < end; ++i) {
        auto t = v.get(Kind::kTask, todo[i]);
        if (!t || !wantsAllocation(*t)) continue;
        tasks.push_back(t);
        if (!serviceSpecs.count(t->serviceId)) {
          auto svc = v.get(Kind::kService, t->serviceId);
          serviceSpecs[t->serviceId] = svc ? svc->spec : "{}";
        }
      }
    });
    for (const auto& t : tasks) {
      Planned p;
      p.id = t->id;
      p.version = t->version;
      p.spec = t->spec;
      auto spec = parse(t->spec);
      if (!spec) continue;
      // The task's own template names its networks; its service says whether it publishes
      // ingress ports.
      std::vector<ServiceNetwork> wanted = serviceNetworks(t->spec, "");
      for (const auto& sn : serviceNetworks(serviceSpecs[t->serviceId], ingress)) {
        if (sn.target == ingress && !ingress.empty()) {
          wanted.insert(wanted.begin(), sn);
          break;
        }
      }
      JArray::Ptr attachments = new JArray;
      for (const auto& sn : wanted) {
        auto it = nets.find(sn.target);
        if (it == nets.end()) {
          p.message = "network " + sn.target + " not found";
          break;
        }
        auto alloc = allocationOf(*it->second);
        if (!alloc) {
          auto st = parse(it->second->status);
          const std::string err = st ? st->optValue<std::string>("Err", "") : "";
          p.message = err.empty() ? "waiting for network " + it->second->name + " to be allocated"
                                  : "network " + it->second->name + " has no allocation: " + err;
          break;
        }
        if (!network_) {
          p.message = "no network plugin is loaded on the leader";
          break;
        }
        auto ep = network_->allocateEndpoint(endpointRequest("task", t->id, sn.target));
        if (!ep) {
          p.message = "cannot give the task an address on network " + it->second->name + ": " +
                      ep.status().message();
          break;
        }
        auto doc = parse(*ep);
        const std::string address = doc ? doc->optValue<std::string>("address", "") : "";
        p.endpoints.push_back(endpointDocument(t->id, sn.target, address));
        JObject::Ptr a = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
        a->set("NetworkID", sn.target);
        a->set("Name", it->second->name);
        a->set("Subnet", alloc->optValue<std::string>("subnet", ""));
        a->set("Gateway", alloc->optValue<std::string>("gateway", ""));
        a->set("VNI", alloc->optValue<Poco::Int64>("vni", 0));
        if (auto o = alloc->getObject("options")) a->set("Options", o);
        a->set("Address", address);
        a->set("MAC", doc ? doc->optValue<std::string>("mac", "") : "");
        JArray::Ptr aliases = new JArray;
        for (const auto& al : sn.aliases) aliases->add(al);
        a->set("Aliases", aliases);
        attachments->add(a);
      }
      if (!p.message.empty()) {
        for (const auto& e : p.endpoints) (void)network_->releaseEndpoint(e);
        p.endpoints.clear();
        // Say so only once (every write would bring the task back here).
        if (t->status.find(p.message) != std::string::npos) continue;
      } else {
        // Appended as text: the template's text stays a prefix (runsTemplate).
        p.spec = withAttachments(t->spec, stringify(*attachments));
      }
      plan.push_back(std::move(p));
    }
    if (plan.empty()) continue;
    const int64_t nowNs = clock_.nowNanos();
    Status s = store_.update(
        [&](store::Tx& tx) {
          for (const auto& p : plan) {
            auto cur = tx.get(Kind::kTask, p.id);
            if (!cur || cur->version != p.version || !wantsAllocation(*cur)) {
              return Status::conflict("task " + p.id + " moved on");
            }
            store::Object copy = *cur;
            TaskStatus st;
            st.timestampNs = nowNs;
            if (p.message.empty()) {
              copy.spec = p.spec;
              st.state = TaskState::kPending;
              st.message = "pending task scheduling";
            } else {
              st.state = TaskState::kNew;
              st.message = p.message;
            }
            copy.status = taskStatusJson(st);
            if (Status w = tx.update(std::move(copy)); !w) return w;
          }
          return Status::ok();
        },
        10s);
    if (!s) {
      for (const auto& p : plan) {
        for (const auto& e : p.endpoints) (void)network_->releaseEndpoint(e);
      }
      // Looked at again on the next change of those tasks; a conflict means one changed.
      log::debug("allocator", "task allocations not committed", {{"error", s.message()}});
      for (const auto& p : plan) retryTasks_.insert(p.id);
      continue;
    }
    for (auto& p : plan) {
      if (!p.endpoints.empty()) tasks_[p.id].endpoints = std::move(p.endpoints);
    }
  }
}

bool Allocator::allocateIngressNodes() {
  ObjectPtr ingress;
  std::vector<std::string> nodes;
  bool published = false;
  store_.view([&](const store::ReadView& v) {
    ingress = ingressNetwork(v);
    // Only while the mesh is in use: a cluster that publishes nothing keeps no node
    // addresses (and no per-node status to rewrite as nodes join).
    for (const auto& s : v.list(Kind::kService)) {
      if (s->spec.find("\"PublishedPort\"") == std::string::npos) continue;
      auto spec = parseServiceSpec(s->spec);
      published = published || (spec && !spec->ingressPorts.empty());
    }
    if (published) {
      for (const auto& n : v.list(Kind::kNode)) nodes.push_back(n->id);
    }
  });
  if (!published) return true;
  if (!ingress || !allocationOf(*ingress) || !network_) return true;  // nothing to do yet
  auto status = parse(ingress->status);
  if (!status) return true;
  JObject::Ptr have = status->getObject("Nodes");
  JObject::Ptr want = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
  std::vector<std::string> fresh, stale;
  bool changed = false;
  for (const auto& id : nodes) {
    if (have && have->getObject(id)) {
      want->set(id, have->getObject(id));
      continue;
    }
    auto ep = network_->allocateEndpoint(endpointRequest("node", "node:" + id, ingress->id));
    if (!ep) {
      log::warn("allocator", "cannot give a node its ingress address",
                {{"node", id}, {"error", ep.status().message()}});
      continue;
    }
    auto doc = parse(*ep);
    JObject::Ptr e = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
    e->set("Address", doc ? doc->optValue<std::string>("address", "") : "");
    e->set("MAC", doc ? doc->optValue<std::string>("mac", "") : "");
    want->set(id, e);
    fresh.push_back(
        endpointDocument("node:" + id, ingress->id, e->getValue<std::string>("Address")));
    changed = true;
  }
  if (have) {
    for (const auto& id : have->getNames()) {
      if (want->has(id)) continue;
      auto e = have->getObject(id);
      stale.push_back(endpointDocument("node:" + id, ingress->id,
                                       e ? e->optValue<std::string>("Address", "") : ""));
      changed = true;
    }
  }
  if (!changed) return true;
  status->set("Nodes", want);
  const std::string text = stringify(*status);
  const uint64_t version = ingress->version;
  const std::string id = ingress->id;
  Status s = store_.update(
      [&](store::Tx& tx) {
        auto cur = tx.get(Kind::kNetwork, id);
        if (!cur || cur->version != version)
          return Status::conflict("the ingress network moved on");
        store::Object copy = *cur;
        copy.status = text;
        return tx.update(std::move(copy));
      },
      5s);
  if (!s) {
    for (const auto& e : fresh) (void)network_->releaseEndpoint(e);
    return false;  // looked at again on the next pass
  }
  for (const auto& e : stale) (void)network_->releaseEndpoint(e);
  return true;
}

bool Allocator::allocateTunnels() {
  ObjectPtr cluster;
  bool encrypted = false;
  std::vector<std::string> nodes;
  store_.view([&](const store::ReadView& v) {
    auto clusters = v.list(Kind::kCluster);
    if (!clusters.empty()) cluster = clusters.front();
    for (const auto& n : v.list(Kind::kNetwork)) encrypted = encrypted || networkEncrypted(n->spec);
    if (encrypted) {
      for (const auto& n : v.list(Kind::kNode)) nodes.push_back(n->id);
    }
  });
  nextRotation_ = Clock::WallTime::max();
  if (!cluster) return true;
  auto status = parse(cluster->status);
  if (!status) return true;
  JObject::Ptr have =
      child(status, "Tunnels") ? child(status, "Tunnels")->getObject("Nodes") : nullptr;
  if (!encrypted && !status->has("Tunnels")) return true;
  int64_t period = kDefaultKeyRotationSeconds;
  if (auto enc = child(parse(cluster->spec), "EncryptionConfig")) {
    period = std::max<int64_t>(1, enc->optValue<int64_t>("OverlayKeyRotation", period));
  }
  const int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(clock_.now().time_since_epoch()).count();
  bool changed = false;
  if (!encrypted) {
    status->remove("Tunnels");  // the keys go with the last encrypted network
    changed = true;
  } else {
    // Addresses: 169.254.64.0/18 less its network and broadcast addresses, kept per node.
    constexpr uint32_t kBase = (169u << 24) | (254u << 16) | (64u << 8);
    constexpr uint32_t kSize = 1u << 14;
    std::set<uint32_t> used;
    const auto parseAddress = [](const std::string& a) -> uint32_t {
      unsigned b[4];
      char tail = 0;
      if (std::sscanf(a.c_str(), "%u.%u.%u.%u%c", &b[0], &b[1], &b[2], &b[3], &tail) != 4) return 0;
      return (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3];
    };
    if (have) {
      for (const auto& id : have->getNames()) {
        auto e = have->getObject(id);
        if (e) used.insert(parseAddress(e->optValue<std::string>("Address", "")));
      }
    }
    JObject::Ptr want = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
    uint32_t next = 1;
    int64_t oldest = std::numeric_limits<int64_t>::max();
    for (const auto& id : nodes) {
      JObject::Ptr e = have ? have->getObject(id) : nullptr;
      if (e && now - e->optValue<int64_t>("Created", 0) < period) {
        want->set(id, e);
        oldest = std::min(oldest, e->optValue<int64_t>("Created", 0));
        continue;
      }
      auto key = newTunnelKey();
      if (!key) {
        log::warn("allocator", "cannot make a tunnel key", {{"error", key.status().message()}});
        return false;
      }
      JObject::Ptr fresh = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
      fresh->set("PrivateKey", key->privateKey);
      fresh->set("PublicKey", key->publicKey);
      std::string address = e ? e->optValue<std::string>("Address", "") : "";
      if (address.empty()) {
        while (next < kSize - 1 && used.count(kBase + next)) ++next;
        if (next >= kSize - 1) {
          log::warn("allocator", "no tunnel address is left for a node", {{"node", id}});
          continue;
        }
        used.insert(kBase + next);
        const uint32_t a = kBase + next;
        address = std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." +
                  std::to_string((a >> 8) & 255) + "." + std::to_string(a & 255);
      }
      fresh->set("Address", address);
      fresh->set("Created", now);
      want->set(id, fresh);
      oldest = std::min(oldest, now);
      if (e) log::info("allocator", "replaced a node's tunnel key", {{"node", id}});
      changed = true;
    }
    if (have) {
      for (const auto& id : have->getNames()) changed = changed || !want->has(id);
    }
    if (oldest != std::numeric_limits<int64_t>::max()) {
      nextRotation_ = Clock::WallTime(std::chrono::seconds(oldest + period));
    }
    if (changed) {
      JObject::Ptr tunnels = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
      tunnels->set("Subnet", std::string(kTunnelSubnet));
      tunnels->set("Nodes", want);
      status->set("Tunnels", tunnels);
    }
  }
  if (!changed) return true;
  const std::string text = stringify(*status);
  const uint64_t version = cluster->version;
  const std::string id = cluster->id;
  Status s = store_.update(
      [&](store::Tx& tx) {
        auto cur = tx.get(Kind::kCluster, id);
        if (!cur || cur->version != version) return Status::conflict("the cluster moved on");
        store::Object copy = *cur;
        copy.status = text;
        return tx.update(std::move(copy));
      },
      5s);
  if (!s && s.code() != Status::Code::kConflict) {
    log::warn("allocator", "cannot record the tunnel keys", {{"error", s.message()}});
  }
  return static_cast<bool>(s);
}

}  // namespace shoal::manager
