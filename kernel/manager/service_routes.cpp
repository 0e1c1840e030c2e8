#include "kernel/manager/service_routes.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/URI.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <set>
#include <sstream>

#include <future>

#include "kernel/agent/runtime.h"
#include "kernel/common/random.h"
#include "kernel/manager/dispatcher.h"
#include "kernel/manager/network_routes.h"
#include "kernel/manager/route_util.h"
#include "kernel/manager/service_spec.h"
#include "kernel/policy/policy.h"
#include "kernel/store/tx.h"

namespace shoal::manager {
namespace {

using namespace std::chrono_literals;
using api::Request;
using api::Response;
using store::Kind;
using store::ObjectPtr;
using store::TaskState;
using JObject = Poco::JSON::Object;

Result<JObject::Ptr> parseBody(const std::string& body, const std::string& what) {
  try {
    auto o = Poco::JSON::Parser().parse(body.empty() ? "{}" : body).extract<JObject::Ptr>();
    if (o) return o;
  } catch (const std::exception& e) {
    return Status::invalidArgument("the " + what +
                                   " request body is not a JSON object: " + e.what());
  }
  return Status::invalidArgument("the " + what + " request body is not a JSON object");
}

// Splits a client's ServiceSpec into the object's name and labels and the stored spec.
struct SplitSpec {
  std::string policy;  // the placement policy it names, if any
  std::string name;
  std::map<std::string, std::string> labels;
  std::string spec;
};

Result<SplitSpec> splitSpec(const JObject::Ptr& in) {
  SplitSpec out;
  JObject::Ptr spec = new JObject(*in);
  out.name = spec->optValue<std::string>("Name", "");
  if (Status s = validateServiceName(out.name); !s) return s;
  if (spec->has("Labels")) {
    auto labels = spec->getObject("Labels");
    if (!labels)
      return Status::invalidArgument("invalid service spec: Labels must be an object of strings");
    for (const auto& k : labels->getNames()) {
      if (!labels->get(k).isString()) {
        return Status::invalidArgument("invalid service spec: Labels." + k + " must be a string");
      }
      out.labels[k] = labels->getValue<std::string>(k);
    }
  }
  spec->remove("Name");
  spec->remove("Labels");
  if (Status s = validateServiceSpec(*spec); !s) return s;
  auto parsed = parseServiceSpec(stringify(*spec));
  if (!parsed) return parsed.status();
  if (!parsed->luaConstraint.empty()) {
    if (Status s = policy::Policy::validateExpression(parsed->luaConstraint); !s) {
      return Status::invalidArgument(
          "invalid service spec: TaskTemplate.Placement.LuaConstraint: " + s.message());
    }
  }
  out.policy = parsed->policy;
  // Stored with the defaults a reader needs made explicit.
  if (!spec->has("Mode")) {
    JObject::Ptr mode = new JObject;
    JObject::Ptr replicated = new JObject;
    replicated->set("Replicas", 1);
    mode->set("Replicated", replicated);
    spec->set("Mode", mode);
  }
  out.spec = stringify(*spec);
  return out;
}

// Pins the spec's image tag to the digest its registry serves now, as Swarm does, so every
// replica runs the same bytes: "busybox:v1" becomes "busybox:v1@sha256:...". This node's
// runtime asks the registry. An image that already names a digest, `resolve-image=never`
// (the CLI's --no-resolve-image), or a runtime that keeps no images (runtime-sim) leaves it
// as it is; a registry that cannot be asked leaves it too, with Docker's warning.
void pinImage(Swarm& swarm, const Request& r, const JObject::Ptr& spec,
              std::vector<std::string>& warnings) {
  if (param(r, "resolve-image") == "never") return;
  auto tmpl = spec->getObject("TaskTemplate");
  auto c = tmpl ? tmpl->getObject("ContainerSpec") : nullptr;
  if (!c || !c->has("Image") || !c->get("Image").isString()) return;
  const std::string image = c->getValue<std::string>("Image");
  if (image.empty() || image.find('@') != std::string::npos) return;
  agent::PluginRuntime* rt = swarm.runtime();
  if (!rt || !rt->hasImages()) return;
  auto promise = std::make_shared<std::promise<std::pair<Status, std::string>>>();
  auto future = promise->get_future();
  Status s = rt->imageResolve(image, [promise](Status st, const std::string& json) {
    promise->set_value({std::move(st), json});
  });
  std::string pinned;
  if (s) {
    if (future.wait_for(30s) != std::future_status::ready) {
      s = Status::timeout("the registry did not answer in 30 s");
    } else {
      auto [st, json] = future.get();
      s = st;
      if (s) {
        try {
          auto o = Poco::JSON::Parser().parse(json).extract<JObject::Ptr>();
          if (o) pinned = o->optValue<std::string>("pinned", "");
        } catch (const std::exception&) {
        }
      }
    }
  }
  if (!s || pinned.empty()) {
    warnings.push_back("image " + image +
                       " could not be accessed on a registry to record\nits digest. Each node "
                       "will access " +
                       image +
                       " independently,\npossibly leading to different nodes running\n"
                       "different versions of the image." +
                       (s ? "" : " (" + s.message() + ")"));
    return;
  }
  c->set("Image", pinned);
}

// The image a stored or client spec names ("" when none).
std::string imageOf(const std::string& specJson) {
  try {
    auto o = Poco::JSON::Parser().parse(specJson).extract<JObject::Ptr>();
    auto t = o ? o->getObject("TaskTemplate") : nullptr;
    auto c = t ? t->getObject("ContainerSpec") : nullptr;
    return c ? c->optValue<std::string>("Image", "") : "";
  } catch (const std::exception&) {
    return "";
  }
}

Poco::JSON::Array::Ptr warningArray(const std::vector<std::string>& warnings) {
  Poco::JSON::Array::Ptr a = new Poco::JSON::Array;
  for (const auto& w : warnings) a->add(w);
  return a;
}

// A spec's placement policy must exist when the service is created or updated.
Status requirePolicy(const store::ReadView& v, const std::string& name) {
  if (name.empty() || v.findByName(Kind::kPolicy, name)) return Status::ok();
  return Status::notFound("placement policy " + name +
                          " not found (create it with \"shoal policy create\")");
}

Response create(Swarm& swarm, const Request& r) {
  auto body = parseBody(r.body, "service create");
  if (!body) return Response::error(body.status());
  std::vector<std::string> warnings;
  if (auto v = splitSpec(*body); !v) return Response::error(v.status());  // refused before asking
  pinImage(swarm, r, *body, warnings);
  auto split = splitSpec(*body);
  if (!split) return Response::error(split.status());
  const std::string id = newId(SystemRandom::instance());
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
    return store.update(
        [&](store::Tx& tx) {
          if (tx.findByName(Kind::kService, split->name)) {
            return Status::alreadyExists("name conflicts with an existing object: service " +
                                         split->name + " already exists");
          }
          if (Status s = requirePolicy(tx, split->policy); !s) return s;
          std::string spec = split->spec;
          if (Status s = resolveServiceNetworks(tx, spec); !s) return s;
          if (Status s = publishPorts(tx, spec, "", ""); !s) return s;
          store::Object o;
          o.kind = Kind::kService;
          o.id = id;
          o.name = split->name;
          o.labels = split->labels;
          o.spec = spec;
          return tx.create(std::move(o));
        },
        10s);
  });
  if (!s) return Response::error(s);
  JObject out;
  out.set("ID", id);
  if (!warnings.empty()) out.set("Warnings", warningArray(warnings));
  return Response::json(stringify(out));
}

Response update(Swarm& swarm, const Request& r) {
  auto body = parseBody(r.body, "service update");
  if (!body) return Response::error(body.status());
  const bool rollback = (*body)->optValue<bool>("rollback", false);
  std::vector<std::string> warnings;
  std::optional<SplitSpec> split;
  if (!rollback) {
    auto spec = (*body)->getObject("spec");
    if (!spec)
      return Response::error(
          Status::invalidArgument("the service update request needs a \"spec\""));
    if (auto v = splitSpec(spec); !v) return Response::error(v.status());
    // Docker's --resolve-image=changed for updates: only an image that differs from the
    // service's is pinned again (a scale or an --env-add keeps the digest it runs).
    std::string current;
    swarm.withStore([&](ReplicatedStore& store, const std::string&) {
      store.view([&](const store::ReadView& v) {
        auto svc = resolveObject(v, Kind::kService, param(r, "id"));
        if (!svc) return;
        current = imageOf((*svc)->spec);
      });
      return Status::ok();
    });
    if (imageOf(stringify(*spec)) != current) pinImage(swarm, r, spec, warnings);
    auto sp = splitSpec(spec);
    if (!sp) return Response::error(sp.status());
    split = std::move(*sp);
  }
  const int64_t version = (*body)->optValue<int64_t>("version", 0);
  std::string id;
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
    return store.update(
        [&](store::Tx& tx) {
          auto svc = resolveObject(tx, Kind::kService, param(r, "id"));
          if (!svc) return svc.status();
          id = (*svc)->id;
          if (version > 0 && static_cast<uint64_t>(version) != (*svc)->version) {
            return Status::conflict("update out of sequence: service " + (*svc)->name +
                                    " is at version " + std::to_string((*svc)->version) +
                                    ", the update was based on version " + std::to_string(version));
          }
          store::Object copy = **svc;
          JObject::Ptr status;
          try {
            status = copy.status.empty()
                         ? JObject::Ptr(new JObject)
                         : Poco::JSON::Parser().parse(copy.status).extract<JObject::Ptr>();
          } catch (const std::exception&) {
            status = new JObject;
          }
          JObject::Ptr us = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
          const auto now = std::chrono::system_clock::now().time_since_epoch();
          const int64_t nowNs = std::chrono::duration_cast<std::chrono::nanoseconds>(now).count();
          if (rollback) {
            if (!status->has("PreviousSpec")) {
              return Status::failedPrecondition("service " + copy.name +
                                                " does not have a previous spec");
            }
            auto previous = status->getObject("PreviousSpec");
            status->set("PreviousSpec", Poco::JSON::Parser().parse(copy.spec));
            copy.spec = stringify(*previous);
            us->set("State", std::string("rollback_started"));
            us->set("StartedAtNs", nowNs);
            us->set("Message", std::string("manually requested rollback"));
            status->set("UpdateStatus", us);
          } else {
            if (split->name != copy.name) {
              return Status::invalidArgument("renaming services is not supported");
            }
            if (Status s = requirePolicy(tx, split->policy); !s) return s;
            std::string spec = split->spec;
            if (Status s = resolveServiceNetworks(tx, spec); !s) return s;
            if (Status s = publishPorts(tx, spec, copy.id, copy.spec); !s) return s;
            auto oldSpec = parseServiceSpec(copy.spec);
            auto newSpec = parseServiceSpec(spec);
            if (!newSpec) return newSpec.status();
            status->set("PreviousSpec", Poco::JSON::Parser().parse(copy.spec));
            if (!oldSpec || oldSpec->taskTemplate != newSpec->taskTemplate) {
              us->set("State", std::string("updating"));
              us->set("StartedAtNs", nowNs);
              us->set("Message", std::string("update in progress"));
              status->set("UpdateStatus", us);
            }
            copy.spec = spec;
            copy.labels = split->labels;
          }
          copy.status = stringify(*status);
          return tx.update(std::move(copy));
        },
        10s);
  });
  if (!s) return Response::error(s);
  JObject out;
  out.set("ID", id);
  if (!warnings.empty()) out.set("Warnings", warningArray(warnings));
  return Response::json(stringify(out));
}

Response removeService(Swarm& swarm, const Request& r) {
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
    return store.update(
        [&](store::Tx& tx) {
          auto svc = resolveObject(tx, Kind::kService, param(r, "id"));
          if (!svc) return svc.status();
          return tx.remove(Kind::kService, (*svc)->id, (*svc)->version);
        },
        10s);
  });
  return s ? Response::json("{}") : Response::error(s);
}

// Running / desired counts as `service ls` shows them.
void addReplicas(const store::ReadView& v, const store::Object& svc, JObject& out) {
  auto spec = parseServiceSpec(svc.spec);
  uint64_t running = 0, completed = 0, active = 0;
  std::set<std::string> nodes;
  for (const auto& t : v.tasksByService(svc.id)) {
    const TaskState obs = observedState(*t);
    if (obs == TaskState::kComplete) ++completed;
    if (t->desiredState <= TaskState::kRunning && !isTerminal(obs)) ++active;
    if (t->desiredState <= TaskState::kRunning && obs == TaskState::kRunning) ++running;
  }
  uint64_t desired = 0;
  if (spec) {
    switch (spec->mode) {
      case ServiceMode::kReplicated:
        desired = spec->replicas;
        break;
      case ServiceMode::kReplicatedJob:
        desired = spec->totalCompletions;
        break;
      case ServiceMode::kGlobal:
      case ServiceMode::kGlobalJob:
        desired = active;
        break;
    }
  }
  // UpdateStatus times as Docker shows them.
  if (auto st = out.getObject("Status")) {
    if (auto us = st->getObject("UpdateStatus")) {
      if (us->has("StartedAtNs"))
        us->set("StartedAt", store::formatTime(us->getValue<int64_t>("StartedAtNs")));
      if (us->has("CompletedAtNs")) {
        us->set("CompletedAt", store::formatTime(us->getValue<int64_t>("CompletedAtNs")));
      }
    }
  }
  JObject::Ptr r = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
  r->set("Running", running);
  r->set("Desired", desired);
  r->set("Completed", completed);
  r->set("Mode", std::string(spec ? modeName(spec->mode) : "replicated"));
  out.set("Replicas", r);
}

Response listServices(Swarm& swarm) {
  std::string body;
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
    store.view([&](const store::ReadView& v) {
      std::ostringstream out;
      out << "{\"services\":[";
      bool first = true;
      for (const auto& svc : v.list(Kind::kService)) {
        auto o = Poco::JSON::Parser().parse(store::toJson(*svc)).extract<JObject::Ptr>();
        addReplicas(v, *svc, *o);
        out << (first ? "" : ",");
        o->stringify(out);
        first = false;
      }
      out << "]}";
      body = out.str();
    });
    return Status::ok();
  });
  return s ? Response::json(body) : Response::error(s);
}

Response inspectService(Swarm& swarm, const Request& r) {
  std::string body;
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
    Status found = Status::ok();
    store.view([&](const store::ReadView& v) {
      auto svc = resolveObject(v, Kind::kService, param(r, "id"));
      if (!svc) {
        found = svc.status();
        return;
      }
      auto o = Poco::JSON::Parser().parse(store::toJson(**svc)).extract<JObject::Ptr>();
      addReplicas(v, **svc, *o);
      body = stringify(*o);
    });
    return found;
  });
  return s ? Response::json(body) : Response::error(s);
}

Response listTasks(Swarm& swarm, const Request& r) {
  std::string body;
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string& self) {
    Status result = Status::ok();
    store.view([&](const store::ReadView& v) {
      std::vector<ObjectPtr> tasks;
      std::string serviceId, nodeId;
      if (!param(r, "service").empty()) {
        auto svc = resolveObject(v, Kind::kService, param(r, "service"));
        if (!svc) {
          result = svc.status();
          return;
        }
        serviceId = (*svc)->id;
      }
      if (!param(r, "node").empty()) {
        const std::string ref = param(r, "node") == "self" ? self : param(r, "node");
        auto node = resolveObject(v, Kind::kNode, ref);
        if (!node) {
          // Nodes are named by hostname too.
          for (const auto& n : v.list(Kind::kNode)) {
            if (nodeFacts(*n).hostname == ref) node = n;
          }
        }
        if (!node) {
          result = node.status();
          return;
        }
        nodeId = (*node)->id;
      }
      if (!serviceId.empty()) {
        tasks = v.tasksByService(serviceId);
      } else if (!nodeId.empty()) {
        tasks = v.tasksByNode(nodeId);
      } else {
        tasks = v.list(Kind::kTask);
      }
      const std::string desired = param(r, "desired-state");
      if (!desired.empty() && desired != "running" && desired != "shutdown" &&
          desired != "accepted") {
        result = Status::invalidArgument("invalid filter 'desired-state=" + desired +
                                         "': want running, shutdown or accepted");
        return;
      }
      std::ostringstream out;
      out << "{\"tasks\":[";
      bool first = true;
      std::set<std::string> serviceIds, nodeIds;
      for (const auto& t : tasks) {
        if (!nodeId.empty() && t->nodeId != nodeId) continue;
        if (!param(r, "id").empty() && t->id.rfind(param(r, "id"), 0) != 0) continue;
        if (!param(r, "name").empty() && t->name != param(r, "name")) continue;
        if (desired == "running" && t->desiredState > TaskState::kRunning) continue;
        if (desired == "shutdown" && t->desiredState < TaskState::kShutdown) continue;
        if (desired == "accepted" && t->desiredState != TaskState::kAccepted) continue;
        out << (first ? "" : ",") << store::toJson(*t);
        first = false;
        serviceIds.insert(t->serviceId);
        if (!t->nodeId.empty()) nodeIds.insert(t->nodeId);
      }
      out << "],\"services\":{";
      first = true;
      for (const auto& id : serviceIds) {
        auto svc = v.get(Kind::kService, id);
        out << (first ? "" : ",") << "\"" << id << "\":\"" << (svc ? svc->name : id) << "\"";
        first = false;
      }
      out << "},\"nodes\":{";
      first = true;
      for (const auto& id : nodeIds) {
        auto n = v.get(Kind::kNode, id);
        JObject name;
        name.set("n", n ? nodeFacts(*n).hostname : id);
        std::string text = stringify(name);  // {"n":"..."}: escaped for JSON
        out << (first ? "" : ",") << "\"" << id << "\":" << text.substr(5, text.size() - 6);
        first = false;
      }
      out << "}}";
      body = out.str();
    });
    return result;
  });
  return s ? Response::json(body) : Response::error(s);
}

// How `service logs` shows a task's lines: {"<task id>": {"Name", "Node" (its hostname)}}.
void nameTask(const store::ReadView& v, const store::Object& t, JObject& names) {
  auto n = v.get(Kind::kNode, t.nodeId);
  JObject::Ptr info = new JObject;
  info->set("Name", t.name);
  info->set("Node", n ? nodeFacts(*n).hostname : t.nodeId);
  names.set(t.id, info);
}

// `service logs`: a subscription to the logs of a service's tasks (or of one task) on the
// nodes that have them (LogBroker). Served by the leader, where the agents' sessions are.
Response subscribeLogs(Swarm& swarm, const Request& r) {
  auto body = parseBody(r.body, "logs");
  if (!body) return Response::error(body.status());
  for (const auto& k : (*body)->getNames()) {
    if (k != "service" && k != "task" && k != "follow" && k != "tail" && k != "since_ns" &&
        k != "timestamps") {
      return Response::error(
          Status::invalidArgument("unknown field \"" + k + "\" in the logs request"));
    }
  }
  LogBroker::Options options;
  try {
    options.follow = (*body)->optValue<bool>("follow", false);
    options.tail = (*body)->optValue<int64_t>("tail", -1);
    options.sinceNs = (*body)->optValue<int64_t>("since_ns", 0);
    options.timestamps = (*body)->optValue<bool>("timestamps", false);
  } catch (const std::exception&) {
    return Response::error(Status::invalidArgument(
        "the logs request has a field of the wrong type (follow and timestamps are booleans, "
        "tail and since_ns integers)"));
  }
  const std::string serviceRef = (*body)->optValue<std::string>("service", "");
  const std::string taskRef = (*body)->optValue<std::string>("task", "");
  if (serviceRef.empty() == taskRef.empty()) {
    return Response::error(
        Status::invalidArgument("the logs request names one \"service\" or one \"task\""));
  }
  std::map<std::string, std::vector<std::string>> byNode;
  std::string serviceId;  // a service's logs: followed, its later tasks join
  JObject::Ptr names = new JObject;
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
    Status result = Status::ok();
    store.view([&](const store::ReadView& v) {
      std::vector<ObjectPtr> tasks;
      std::string serviceName;
      if (!serviceRef.empty()) {
        auto svc = resolveObject(v, Kind::kService, serviceRef);
        if (!svc) {
          result = svc.status();
          return;
        }
        serviceName = (*svc)->name;
        serviceId = (*svc)->id;
        tasks = v.tasksByService((*svc)->id);
      } else {
        auto t = resolveObject(v, Kind::kTask, taskRef);
        if (!t) {
          result = t.status();
          return;
        }
        tasks.push_back(*t);
      }
      for (const auto& t : tasks) {
        if (t->nodeId.empty()) continue;  // never placed: no logs anywhere
        byNode[t->nodeId].push_back(t->id);
        nameTask(v, *t, *names);
      }
    });
    return result;
  });
  if (!s) return Response::error(s);
  auto d = swarm.dispatcher();
  if (!d) return Response::error(Status::unavailable("this manager is no longer the leader"));
  JObject out;
  out.set("Sub", d->logBroker().subscribe(byNode, options, serviceId));
  out.set("Tasks", names);
  return Response::json(stringify(out));
}

// A read waits for records up to its wait_ms, at most `maxWaitMs`: 5 s asked here, 3 s when a
// follower forwarded it (its call to the leader gives up after 5 s).
constexpr int64_t kMaxReadWaitMs = 5000;
constexpr int64_t kMaxForwardedReadWaitMs = 3000;

Response readLogs(Swarm& swarm, const Request& r, int64_t maxWaitMs) {
  auto d = swarm.dispatcher();
  if (!d) return Response::error(Status::unavailable("this manager is no longer the leader"));
  uint64_t after = 0;
  int64_t waitMs = 1000;
  try {
    if (!param(r, "after").empty()) after = std::stoull(param(r, "after"));
    if (!param(r, "wait_ms").empty()) waitMs = std::stoll(param(r, "wait_ms"));
  } catch (const std::exception&) {
    return Response::error(Status::invalidArgument("after and wait_ms must be integers"));
  }
  waitMs = std::clamp<int64_t>(waitMs, 0, maxWaitMs);
  auto batch = d->logBroker().read(param(r, "sub"), after, std::chrono::milliseconds(waitMs));
  if (!batch) return Response::error(batch.status());
  std::ostringstream out;
  out << "{\"Records\":[";
  for (std::size_t i = 0; i < batch->records.size(); ++i) {
    const auto& rec = batch->records[i];
    JObject o(Poco::JSON_PRESERVE_KEY_ORDER);
    o.set("Task", rec.taskId);
    o.set("Stream", rec.stream);
    o.set("Timestamp", rec.timestampNs);
    o.set("Line", rec.line);
    out << (i ? "," : "") << stringify(o);
  }
  Poco::JSON::Array errors;
  for (const auto& e : batch->errors) errors.add(e);
  std::ostringstream errs;
  errors.stringify(errs);
  // The names of the batch's tasks: a followed service's logs take in tasks that started
  // after the subscription, which the client has no name for yet.
  JObject names;
  std::set<std::string> ids;
  for (const auto& rec : batch->records) ids.insert(rec.taskId);
  if (!ids.empty()) {
    (void)swarm.withStore([&](ReplicatedStore& store, const std::string&) {
      store.view([&](const store::ReadView& v) {
        for (const auto& id : ids) {
          if (auto t = v.get(Kind::kTask, id)) nameTask(v, *t, names);
        }
      });
      return Status::ok();
    });
  }
  out << "],\"Next\":" << batch->next << ",\"Dropped\":" << batch->dropped
      << ",\"Done\":" << (batch->done ? "true" : "false") << ",\"Errors\":" << errs.str()
      << ",\"Tasks\":" << stringify(names) << "}";
  return Response::json(out.str());
}

}  // namespace

void addServiceRoutes(api::Router& router, Swarm& swarm) {
  // Logs gather at the leader's dispatcher (the agents send them there): the leader answers
  // these itself; another manager forwards them to it over the node API, as Docker's managers
  // proxy `service logs`.
  auto cancelLogs = [&swarm](const Request& r) {
    if (auto d = swarm.dispatcher()) d->logBroker().cancel(param(r, "sub"));
    return Response::json("{}");
  };
  auto viaLeader = [&swarm](const std::string& path, const Request& r,
                            const std::function<Response(const Request&)>& here) {
    if (swarm.dispatcher()) return here(r);
    std::string query;
    for (const auto& [k, v] : r.query) {
      std::string value;
      Poco::URI::encode(v, "&=?#+% ", value);
      query += (query.empty() ? "?" : "&") + k + "=" + value;
    }
    auto reply = swarm.askLeader(path + query, r.body);
    if (!reply) return Response::error(reply.status());
    return *reply;
  };
  router.add("POST", "/services/logs", [&swarm, viaLeader](const Request& r) {
    return viaLeader("/manager/services/logs", r,
                     [&swarm](const Request& q) { return subscribeLogs(swarm, q); });
  });
  router.add("GET", "/logs/read", [&swarm, viaLeader](const Request& r) {
    return viaLeader("/manager/logs/read", r,
                     [&swarm](const Request& q) { return readLogs(swarm, q, kMaxReadWaitMs); });
  });
  router.add("POST", "/logs/cancel", [viaLeader, cancelLogs](const Request& r) {
    return viaLeader("/manager/logs/cancel", r, cancelLogs);
  });
  swarm.addLeaderRoute("/manager/services/logs",
                       [&swarm](const Request& r) { return subscribeLogs(swarm, r); });
  swarm.addLeaderRoute("/manager/logs/read", [&swarm](const Request& r) {
    return readLogs(swarm, r, kMaxForwardedReadWaitMs);
  });
  swarm.addLeaderRoute("/manager/logs/cancel", cancelLogs);
  router.add("POST", "/services/create", [&swarm](const Request& r) { return create(swarm, r); });
  router.add("GET", "/services", [&swarm](const Request&) { return listServices(swarm); });
  router.add("GET", "/services/inspect",
             [&swarm](const Request& r) { return inspectService(swarm, r); });
  router.add("POST", "/services/update", [&swarm](const Request& r) { return update(swarm, r); });
  router.add("POST", "/services/remove",
             [&swarm](const Request& r) { return removeService(swarm, r); });
  router.add("GET", "/tasks", [&swarm](const Request& r) { return listTasks(swarm, r); });
}

}  // namespace shoal::manager
