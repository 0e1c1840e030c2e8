#include "kernel/manager/network_routes.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <thread>
#include <utility>

#include "kernel/common/random.h"
#include "kernel/manager/allocator.h"
#include "kernel/manager/route_util.h"
#include "kernel/manager/service_spec.h"
#include "kernel/store/tx.h"

namespace shoal::manager {
namespace {

using namespace std::chrono_literals;
using api::Request;
using api::Response;
using store::Kind;
using store::ObjectPtr;
using JObject = Poco::JSON::Object;
using JArray = Poco::JSON::Array;

JObject::Ptr parseOrNull(const std::string& text) {
  if (text.empty()) return nullptr;
  try {
    return Poco::JSON::Parser().parse(text).extract<JObject::Ptr>();
  } catch (const std::exception&) {
    return nullptr;
  }
}

Status invalid(const std::string& message) {
  return Status::invalidArgument("invalid network spec: " + message);
}

// Docker's rule for network names (as for services): [a-zA-Z0-9][a-zA-Z0-9_.-]*.
Status validateNetworkName(const std::string& name) {
  if (name.empty()) return invalid("Name is required");
  if (name.size() > 63) return invalid("Name must be at most 63 characters");
  auto ok = [](char c, bool first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (!first && (c == '_' || c == '.' || c == '-'));
  };
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (!ok(name[i], i == 0)) {
      return invalid("Name \"" + name + "\" must match [a-zA-Z0-9][a-zA-Z0-9_.-]*");
    }
  }
  return Status::ok();
}

// The client's document → the stored spec (Driver, IPAM.Configs, Attachable, Internal,
// Options), its name and labels. Unknown fields are refused.
struct NetworkRequest {
  std::string name;
  std::map<std::string, std::string> labels;
  std::string spec;
};

Result<NetworkRequest> parseRequest(const std::string& body) {
  JObject::Ptr in;
  try {
    in = Poco::JSON::Parser().parse(body.empty() ? "{}" : body).extract<JObject::Ptr>();
  } catch (const std::exception& e) {
    return Status::invalidArgument(std::string("the network create request body is not a JSON "
                                               "object: ") +
                                   e.what());
  }
  if (!in) return Status::invalidArgument("the network create request body is not a JSON object");
  NetworkRequest out;
  JObject spec(Poco::JSON_PRESERVE_KEY_ORDER);
  for (const auto& key : in->getNames()) {
    const auto& v = in->get(key);
    if (key == "Name") {
      if (!v.isString()) return invalid("Name must be a string");
      out.name = v.convert<std::string>();
    } else if (key == "Labels") {
      auto labels = in->getObject(key);
      if (!labels) return invalid("Labels must be an object of strings");
      for (const auto& k : labels->getNames()) {
        if (!labels->get(k).isString()) return invalid("Labels." + k + " must be a string");
        out.labels[k] = labels->getValue<std::string>(k);
      }
    } else if (key == "Driver") {
      if (!v.isString()) return invalid("Driver must be a string");
      const std::string driver = v.convert<std::string>();
      if (driver != "overlay") {
        return invalid("Driver \"" + driver + "\" is not available in swarm scope (overlay is)");
      }
      spec.set("Driver", driver);
    } else if (key == "Attachable" || key == "Internal") {
      if (!v.isBoolean()) return invalid(key + " must be true or false");
      spec.set(key, v);
    } else if (key == "Options") {
      auto options = in->getObject(key);
      if (!options) return invalid("Options must be an object of strings");
      for (const auto& k : options->getNames()) {
        if (!options->get(k).isString()) return invalid("Options." + k + " must be a string");
        // "encrypted": the leader's network plugin decides whether it can be carried (it
        // refuses, and the network is not created, rather than leave it in plaintext).
      }
      spec.set("Options", options);
    } else if (key == "IPAM") {
      auto ipam = in->getObject(key);
      if (!ipam) return invalid("IPAM must be an object");
      JArray::Ptr configs = new JArray;
      for (const auto& k : ipam->getNames()) {
        if (k != "Configs" && k != "Config") return invalid("IPAM." + k + " is not a field");
        auto list = ipam->getArray(k);
        if (!list) return invalid("IPAM." + k + " must be an array");
        if (list->size() > 1) return invalid("IPAM." + k + ": one subnet per network is supported");
        for (std::size_t i = 0; i < list->size(); ++i) {
          auto c = list->getObject(static_cast<unsigned>(i));
          const std::string where = "IPAM." + k + "[" + std::to_string(i) + "]";
          if (!c) return invalid(where + " must be an object");
          JObject::Ptr config = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
          for (const auto& f : c->getNames()) {
            if (f != "Subnet" && f != "Gateway")
              return invalid(where + "." + f + " is not a field");
            if (!c->get(f).isString()) return invalid(where + "." + f + " must be a string");
            if (!c->getValue<std::string>(f).empty()) config->set(f, c->get(f));
          }
          if (config->has("Gateway") && !config->has("Subnet")) {
            return invalid(where + ".Gateway needs a Subnet (--gateway needs --subnet)");
          }
          configs->add(config);
        }
      }
      JObject::Ptr stored = new JObject;
      stored->set("Configs", configs);
      spec.set("IPAM", stored);
    } else if (key == "Scope" || key == "CheckDuplicate") {
      // Docker clients send these; swarm networks are always swarm-scoped and unique.
    } else {
      return invalid(key + " is not a field");
    }
  }
  if (Status s = validateNetworkName(out.name); !s) return s;
  if (!spec.has("Driver")) spec.set("Driver", std::string("overlay"));
  out.spec = stringify(spec);
  return out;
}

// Who uses network `id`: the first service naming it (or, for ingress, publishing an ingress
// port), or a task still holding an address on it. "" when nobody does.
std::string usedBy(const store::ReadView& v, const store::Object& net) {
  auto spec = parseOrNull(net.spec);
  const bool ingress = spec && spec->optValue<bool>("Ingress", false);
  for (const auto& s : v.list(Kind::kService)) {
    for (const auto& sn : serviceNetworks(s->spec, ingress ? net.id : "")) {
      if (sn.target == net.id) return "service " + s->name;
    }
  }
  for (const auto& t : v.list(Kind::kTask)) {
    if (isTerminal(observedState(*t))) continue;
    if (t->spec.find(net.id) == std::string::npos) continue;
    auto ts = parseOrNull(t->spec);
    auto a = ts ? ts->getArray("NetworksAttachments") : nullptr;
    for (std::size_t i = 0; a && i < a->size(); ++i) {
      auto o = a->getObject(static_cast<unsigned>(i));
      if (o && o->optValue<std::string>("NetworkID", "") == net.id) return "task " + t->id;
    }
  }
  return "";
}

bool isIngress(const store::Object& net) {
  auto spec = parseOrNull(net.spec);
  return spec && spec->optValue<bool>("Ingress", false);
}

// Waits until the allocator has settled network `id`; its status then.
Result<JObject::Ptr> awaitAllocation(Swarm& swarm, const std::string& id) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  for (;;) {
    JObject::Ptr status;
    bool gone = false;
    Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
      store.view([&](const store::ReadView& v) {
        auto n = v.get(Kind::kNetwork, id);
        if (!n) {
          gone = true;
          return;
        }
        status = parseOrNull(n->status);
      });
      return Status::ok();
    });
    if (!s) return s;
    if (gone) return Status::notFound("network " + id + " was removed while being created");
    const std::string state = status ? status->optValue<std::string>("State", "") : "";
    if (state == "allocated" || state == "failed") return status;
    if (std::chrono::steady_clock::now() > deadline) {
      return Status::timeout("network " + id +
                             " was not allocated within 10 s (is there a leader with the "
                             "network plugin?)");
    }
    std::this_thread::sleep_for(20ms);
  }
}

Response create(Swarm& swarm, const Request& r) {
  auto req = parseRequest(r.body);
  if (!req) return Response::error(req.status());
  const std::string id = newId(SystemRandom::instance());
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
    return store.update(
        [&](store::Tx& tx) {
          if (tx.findByName(Kind::kNetwork, req->name)) {
            return Status::alreadyExists("network with name " + req->name + " already exists");
          }
          store::Object o;
          o.kind = Kind::kNetwork;
          o.id = id;
          o.name = req->name;
          o.labels = req->labels;
          o.spec = req->spec;
          o.status = "{\"State\":\"pending\"}";
          return tx.create(std::move(o));
        },
        10s);
  });
  if (!s) return Response::error(s);
  auto status = awaitAllocation(swarm, id);
  if (!status) return Response::error(status.status());
  if ((*status)->optValue<std::string>("State", "") == "failed") {
    const std::string err = (*status)->optValue<std::string>("Err", "allocation failed");
    swarm.withStore([&](ReplicatedStore& store, const std::string&) {
      return store.update(
          [&](store::Tx& tx) {
            auto n = tx.get(Kind::kNetwork, id);
            return n ? tx.remove(Kind::kNetwork, id, n->version) : Status::ok();
          },
          10s);
    });
    const bool exists =
        err.find("overlaps") != std::string::npos || err.find("in use") != std::string::npos;
    return Response::error(exists ? Status::alreadyExists(err) : Status::failedPrecondition(err));
  }
  JObject out;
  out.set("ID", id);
  return Response::json(stringify(out));
}

Response list(Swarm& swarm) {
  std::string body = "{\"networks\":[";
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
    store.view([&](const store::ReadView& v) {
      bool first = true;
      for (const auto& n : v.list(Kind::kNetwork)) {
        if (!first) body += ',';
        first = false;
        body += store::toJson(*n);
      }
    });
    return Status::ok();
  });
  if (!s) return Response::error(s);
  body += "]}";
  return Response::json(body);
}

Response inspect(Swarm& swarm, const Request& r) {
  std::string body;
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
    Status found = Status::ok();
    store.view([&](const store::ReadView& v) {
      auto n = resolveObject(v, Kind::kNetwork, param(r, "id"));
      if (!n) {
        found = n.status();
        return;
      }
      auto o = Poco::JSON::Parser().parse(store::toJson(**n)).extract<JObject::Ptr>();
      JObject::Ptr services = new JObject;
      for (const auto& svc : v.list(Kind::kService)) {
        for (const auto& sn : serviceNetworks(svc->spec, isIngress(**n) ? (*n)->id : "")) {
          if (sn.target == (*n)->id) services->set(svc->id, svc->name);
        }
      }
      o->set("Services", services);
      body = stringify(*o);
    });
    return found;
  });
  return s ? Response::json(body) : Response::error(s);
}

Status removeOne(store::Tx& tx, const store::Object& net) {
  const std::string user = usedBy(tx, net);
  if (!user.empty()) {
    return Status::failedPrecondition("network " + net.name + " is in use by " + user);
  }
  return tx.remove(Kind::kNetwork, net.id, net.version);
}

Response remove(Swarm& swarm, const Request& r) {
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
    return store.update(
        [&](store::Tx& tx) {
          auto n = resolveObject(tx, Kind::kNetwork, param(r, "id"));
          if (!n) return n.status();
          return removeOne(tx, **n);
        },
        10s);
  });
  return s ? Response::json("{}") : Response::error(s);
}

Response prune(Swarm& swarm) {
  JArray::Ptr deleted = new JArray;
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
    return store.update(
        [&](store::Tx& tx) {
          deleted->clear();
          for (const auto& n : tx.list(Kind::kNetwork)) {
            // Docker's prune leaves the ingress network alone.
            if (isIngress(*n) || !usedBy(tx, *n).empty()) continue;
            if (Status w = tx.remove(Kind::kNetwork, n->id, n->version); !w) return w;
            deleted->add(n->name);
          }
          return Status::ok();
        },
        10s);
  });
  if (!s) return Response::error(s);
  JObject out;
  out.set("NetworksDeleted", deleted);
  return Response::json(stringify(out));
}

}  // namespace

std::string ingressNetworkSpec() {
  return "{\"Driver\":\"overlay\",\"Ingress\":true,\"IPAM\":{\"Configs\":[{\"Subnet\":\"10.0.0.0/"
         "24\",\"Gateway\":\"10.0.0.1\"}]}}";
}

Status resolveServiceNetworks(const store::ReadView& v, std::string& specJson) {
  auto spec = parseOrNull(specJson);
  auto tmpl = spec ? spec->getObject("TaskTemplate") : nullptr;
  auto networks = tmpl ? tmpl->getArray("Networks") : nullptr;
  if (!networks || networks->size() == 0) return Status::ok();
  std::set<std::string> seen;
  for (std::size_t i = 0; i < networks->size(); ++i) {
    auto n = networks->getObject(static_cast<unsigned>(i));
    const std::string target = n ? n->optValue<std::string>("Target", "") : "";
    const std::string where = "TaskTemplate.Networks[" + std::to_string(i) + "].Target";
    if (target.empty())
      return Status::invalidArgument("invalid service spec: " + where + " is empty");
    auto net = resolveObject(v, Kind::kNetwork, target);
    if (!net) return Status::notFound("network " + target + " not found");
    if (isIngress(**net)) {
      return Status::invalidArgument(
          "invalid service spec: " + where +
          ": services cannot be attached to the ingress network directly (publish a port "
          "instead)");
    }
    if (!seen.insert((*net)->id).second) {
      return Status::invalidArgument("invalid service spec: " + where + ": network " + target +
                                     " is listed twice");
    }
    n->set("Target", (*net)->id);
  }
  specJson = stringify(*spec);
  return Status::ok();
}

Status publishPorts(const store::ReadView& v, std::string& specJson, const std::string& serviceId,
                    const std::string& previousSpecJson) {
  auto spec = parseOrNull(specJson);
  auto ep = spec ? spec->getObject("EndpointSpec") : nullptr;
  auto ports = ep ? ep->getArray("Ports") : nullptr;
  if (!ports) return Status::ok();
  auto ingress = [](const JObject::Ptr& p) {
    return p && p->optValue<std::string>("PublishMode", "ingress") != "host";
  };
  auto protocolOf = [](const JObject::Ptr& p) {
    return p->optValue<std::string>("Protocol", "tcp");
  };
  using Port = std::pair<std::string, int64_t>;  // (protocol, port)
  std::vector<Port> given, hostGiven;
  std::vector<unsigned> wanting;
  for (std::size_t i = 0; i < ports->size(); ++i) {
    auto p = ports->getObject(static_cast<unsigned>(i));
    if (!p) continue;
    const int64_t published = p->optValue<int64_t>("PublishedPort", 0);
    if (!ingress(p)) {
      if (published <= 0) {
        return Status::invalidArgument(
            "EndpointSpec.Ports[" + std::to_string(i) + "]: target port " +
            std::to_string(p->optValue<int64_t>("TargetPort", 0)) +
            " is published in host mode without a published port; Shoal maps host-mode ports "
            "to the number given (--publish mode=host,published=P,target=T)");
      }
      hostGiven.emplace_back(protocolOf(p), published);
    } else if (published > 0) {
      given.emplace_back(protocolOf(p), published);
    } else {
      wanting.push_back(static_cast<unsigned>(i));
    }
  }
  // A node's port is either the mesh's (on every node) or one task's there, never both.
  for (const auto& port : hostGiven) {
    if (std::find(given.begin(), given.end(), port) != given.end()) {
      return Status::invalidArgument("port '" + std::to_string(port.second) + "/" + port.first +
                                     "' is published both in ingress mode and in host mode");
    }
  }
  if (given.empty() && wanting.empty() && hostGiven.empty()) return Status::ok();
  // Every port the mesh routes for another service, read once for the jobs below, and the
  // ports other services publish in host mode (which the mesh may not take).
  std::map<Port, ObjectPtr> owners, hostOwners;
  for (const auto& other : v.list(Kind::kService)) {
    if (other->id == serviceId) continue;
    auto theirs = parseServiceSpec(other->spec);
    if (!theirs) continue;
    for (const auto& port : theirs->ingressPorts) owners.emplace(port, other);
    for (const auto& [protocol, number] : theirs->hostPorts) {
      hostOwners.emplace(Port{protocol, number}, other);
    }
  }
  for (const auto& port : hostGiven) {
    auto owner = owners.find(port);
    if (owner == owners.end()) continue;
    return Status::alreadyExists("port '" + std::to_string(port.second) + "/" + port.first +
                                 "' is already in use by service '" + owner->second->name + "' (" +
                                 owner->second->id +
                                 ") as an ingress port, which every node answers on");
  }
  for (const auto& port : given) {
    if (auto owner = owners.find(port); owner != owners.end()) {
      return Status::alreadyExists("port '" + std::to_string(port.second) + "/" + port.first +
                                   "' is already in use by service '" + owner->second->name +
                                   "' (" + owner->second->id + ") as an ingress port");
    }
    if (auto owner = hostOwners.find(port); owner != hostOwners.end()) {
      return Status::alreadyExists("port '" + std::to_string(port.second) + "/" + port.first +
                                   "' is already in use by service '" + owner->second->name +
                                   "' (" + owner->second->id + ") as a host-mode port");
    }
  }
  if (wanting.empty()) return Status::ok();
  std::set<Port> taken(given.begin(), given.end());
  taken.insert(hostGiven.begin(), hostGiven.end());
  for (const auto& [port, owner] : owners) taken.insert(port);
  for (const auto& [port, owner] : hostOwners) taken.insert(port);
  // What an update's previous spec published for a target keeps being published: a port
  // picked once does not move under its clients when the service changes.
  std::map<Port, int64_t> before;  // (protocol, target) -> published port
  if (auto prev = parseOrNull(previousSpecJson)) {
    auto pep = prev->getObject("EndpointSpec");
    auto pports = pep ? pep->getArray("Ports") : nullptr;
    for (std::size_t i = 0; pports && i < pports->size(); ++i) {
      auto p = pports->getObject(static_cast<unsigned>(i));
      if (!ingress(p) || p->optValue<int64_t>("PublishedPort", 0) <= 0) continue;
      before.emplace(Port{protocolOf(p), p->optValue<int64_t>("TargetPort", 0)},
                     p->optValue<int64_t>("PublishedPort", 0));
    }
  }
  int64_t next = kAutoPortFirst;
  for (unsigned i : wanting) {
    auto p = ports->getObject(i);
    const std::string protocol = protocolOf(p);
    const int64_t target = p->optValue<int64_t>("TargetPort", 0);
    auto kept = before.find({protocol, target});
    if (kept != before.end() && !taken.count({protocol, kept->second})) {
      p->set("PublishedPort", kept->second);
      taken.emplace(protocol, kept->second);
      continue;
    }
    while (next <= kAutoPortLast && taken.count({protocol, next})) ++next;
    if (next > kAutoPortLast) {
      return Status::resourceExhausted(
          "no free port is left in the range " + std::to_string(kAutoPortFirst) + "-" +
          std::to_string(kAutoPortLast) + " to publish target port " + std::to_string(target) +
          "/" + protocol +
          " on; give one with --publish published=P,target=" + std::to_string(target));
    }
    p->set("PublishedPort", next);
    taken.emplace(protocol, next);
  }
  specJson = stringify(*spec);
  return Status::ok();
}

void addNetworkRoutes(api::Router& router, Swarm& swarm) {
  router.add("POST", "/networks/create", [&swarm](const Request& r) { return create(swarm, r); });
  router.add("GET", "/networks", [&swarm](const Request&) { return list(swarm); });
  router.add("GET", "/networks/inspect", [&swarm](const Request& r) { return inspect(swarm, r); });
  router.add("POST", "/networks/remove", [&swarm](const Request& r) { return remove(swarm, r); });
  router.add("POST", "/networks/prune", [&swarm](const Request&) { return prune(swarm); });
}

}  // namespace shoal::manager
