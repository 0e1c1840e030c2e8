#include "kernel/manager/policy_routes.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <chrono>
#include <sstream>

#include "kernel/common/random.h"
#include "kernel/manager/route_util.h"
#include "kernel/manager/scheduler_host.h"
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
using JObject = Poco::JSON::Object;

Result<ObjectPtr> resolvePolicy(const store::ReadView& v, const std::string& ref) {
  return resolveObject(v, Kind::kPolicy, ref);
}

Response create(Swarm& swarm, const Request& r) {
  JObject::Ptr body;
  try {
    body = Poco::JSON::Parser().parse(r.body.empty() ? "{}" : r.body).extract<JObject::Ptr>();
  } catch (const std::exception& e) {
    return Response::error(Status::invalidArgument(
        std::string("the policy create request body is not a JSON object: ") + e.what()));
  }
  if (!body)
    return Response::error(
        Status::invalidArgument("the policy create request body is not a JSON object"));
  for (const auto& k : body->getNames()) {
    if (k != "Name" && k != "Source" && k != "Description") {
      return Response::error(
          Status::invalidArgument("unknown field \"" + k + "\" in the policy create request"));
    }
  }
  const std::string name = body->optValue<std::string>("Name", "");
  const std::string source = body->optValue<std::string>("Source", "");
  // Policy names follow the service name rules (they are referred to the same way).
  if (Status s = validateServiceName(name); !s) {
    return Response::error(Status::invalidArgument("invalid policy name \"" + name + "\""));
  }
  if (source.empty())
    return Response::error(Status::invalidArgument("policy " + name + " has no source"));
  if (Status s = policy::Policy::validate(name, source); !s) return Response::error(s);
  std::string description = body->optValue<std::string>("Description", "");
  if (description.empty()) {
    if (auto compiled = policy::Policy::compile(name, source))
      description = (*compiled)->description();
  }
  const std::string id = newId(SystemRandom::instance());
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
    return store.update(
        [&](store::Tx& tx) {
          if (tx.findByName(Kind::kPolicy, name)) {
            return Status::alreadyExists("policy " + name + " already exists");
          }
          store::Object o;
          o.kind = Kind::kPolicy;
          o.id = id;
          o.name = name;
          JObject spec(Poco::JSON_PRESERVE_KEY_ORDER);
          spec.set("Source", source);
          spec.set("Description", description);
          o.spec = stringify(spec);
          o.status = "{\"Validated\":true}";
          return tx.create(std::move(o));
        },
        10s);
  });
  if (!s) return Response::error(s);
  return Response::json("{\"ID\":\"" + id + "\"}");
}

Response list(Swarm& swarm) {
  std::string body;
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
    store.view([&](const store::ReadView& v) {
      std::string out = "{\"policies\":[";
      bool first = true;
      for (const auto& p : v.list(Kind::kPolicy)) {
        out += (first ? "" : ",") + store::toJson(*p);
        first = false;
      }
      body = out + "]}";
    });
    return Status::ok();
  });
  return s ? Response::json(body) : Response::error(s);
}

Response inspect(Swarm& swarm, const Request& r) {
  std::string body;
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
    Status found = Status::ok();
    store.view([&](const store::ReadView& v) {
      auto p = resolvePolicy(v, param(r, "id"));
      if (!p) {
        found = p.status();
        return;
      }
      body = store::toJson(**p);
    });
    return found;
  });
  return s ? Response::json(body) : Response::error(s);
}

Response remove(Swarm& swarm, const Request& r) {
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
    return store.update(
        [&](store::Tx& tx) {
          auto p = resolvePolicy(tx, param(r, "id"));
          if (!p) return p.status();
          for (const auto& svc : tx.list(Kind::kService)) {
            auto spec = parseServiceSpec(svc->spec);
            if (spec && spec->policy == (*p)->name) {
              return Status::failedPrecondition("policy " + (*p)->name + " is in use by service " +
                                                svc->name);
            }
          }
          return tx.remove(Kind::kPolicy, (*p)->id, (*p)->version);
        },
        10s);
  });
  return s ? Response::json("{}") : Response::error(s);
}

// POST /policies/test?id=NAME {"service": REF} or {"spec": ServiceSpec}, optional "replicas":
// where the service's tasks would go with this policy, on the cluster as it is now.
Response test(Swarm& swarm, const Request& r) {
  JObject::Ptr body;
  try {
    body = Poco::JSON::Parser().parse(r.body.empty() ? "{}" : r.body).extract<JObject::Ptr>();
  } catch (const std::exception& e) {
    return Response::error(Status::invalidArgument(
        std::string("the policy test request body is not a JSON object: ") + e.what()));
  }
  if (!body || (!body->has("service") && !body->has("spec"))) {
    return Response::error(
        Status::invalidArgument("the policy test request needs a \"service\" or a \"spec\""));
  }
  plugin::PluginInstance* scheduler = swarm.schedulerPlugin();
  if (!scheduler) return Response::error(Status::unavailable("no scheduler plugin is loaded"));
  std::string out;
  Status s = swarm.withStore([&](ReplicatedStore& store, const std::string&) {
    PreviewRequest req;
    std::string policyName;
    JObject::Ptr spec;
    Status found = Status::ok();
    store.view([&](const store::ReadView& v) {
      auto p = resolvePolicy(v, param(r, "id"));
      if (!p) {
        found = p.status();
        return;
      }
      policyName = (*p)->name;
      if (body->has("service")) {
        auto svc = resolveObject(v, Kind::kService, body->getValue<std::string>("service"));
        if (!svc) {
          found = svc.status();
          return;
        }
        req.serviceId = (*svc)->id;
        req.serviceName = (*svc)->name;
        spec = Poco::JSON::Parser().parse((*svc)->spec).extract<JObject::Ptr>();
      } else {
        spec = body->getObject("spec");
      }
    });
    if (!found) return found;
    if (!spec) return Status::invalidArgument("the policy test \"spec\" is not an object");
    spec = new JObject(*spec);
    if (req.serviceName.empty()) req.serviceName = spec->optValue<std::string>("Name", "preview");
    spec->remove("Name");
    spec->remove("Labels");
    if (Status v = validateServiceSpec(*spec); !v) return v;
    // The spec as it would be with this policy.
    JObject::Ptr task = spec->getObject("TaskTemplate");
    JObject::Ptr placement = task->getObject("Placement");
    if (!placement) {
      placement = new JObject;
      task->set("Placement", placement);
    }
    placement->set("Policy", policyName);
    req.serviceSpec = stringify(*spec);
    auto parsed = parseServiceSpec(req.serviceSpec);
    if (!parsed) return parsed.status();
    std::size_t nodes = 0;
    store.view([&](const store::ReadView& v) { nodes = v.list(Kind::kNode).size(); });
    req.count = isGlobal(parsed->mode)                        ? nodes
                : parsed->mode == ServiceMode::kReplicatedJob ? parsed->maxConcurrent
                                                              : parsed->replicas;
    if (body->has("replicas")) req.count = body->getValue<std::size_t>("replicas");
    req.count = std::min<std::size_t>(req.count, 100000);
    SchedulerHost host(store, *scheduler, SystemClock::instance());
    auto preview = host.preview(req);
    if (!preview) return preview.status();
    JObject result(Poco::JSON_PRESERVE_KEY_ORDER);
    result.set("Policy", policyName);
    result.set("Service", req.serviceName);
    Poco::JSON::Array placements;
    for (std::size_t k = 0; k < preview->nodes.size(); ++k) {
      JObject::Ptr row = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
      row->set("Task", static_cast<uint64_t>(k + 1));
      row->set("NodeID", preview->nodes[k].first);
      row->set("Hostname", preview->nodes[k].second);
      placements.add(row);
    }
    result.set("Placements", placements);
    result.set("Explanation", preview->explanation);
    out = stringify(result);
    return Status::ok();
  });
  return s ? Response::json(out) : Response::error(s);
}

}  // namespace

Result<std::string> policySource(ReplicatedStore& store, const std::string& name) {
  std::string source;
  bool found = false;
  store.view([&](const store::ReadView& v) {
    auto p = v.findByName(Kind::kPolicy, name);
    if (!p) return;
    try {
      auto spec = Poco::JSON::Parser().parse(p->spec).extract<JObject::Ptr>();
      source = spec->optValue<std::string>("Source", "");
      found = true;
    } catch (const std::exception&) {
    }
  });
  if (!found) return Status::notFound("no policy named " + name);
  return source;
}

void addPolicyRoutes(api::Router& router, Swarm& swarm) {
  router.add("POST", "/policies/create", [&swarm](const Request& r) { return create(swarm, r); });
  router.add("GET", "/policies", [&swarm](const Request&) { return list(swarm); });
  router.add("GET", "/policies/inspect", [&swarm](const Request& r) { return inspect(swarm, r); });
  router.add("POST", "/policies/remove", [&swarm](const Request& r) { return remove(swarm, r); });
  router.add("POST", "/policies/test", [&swarm](const Request& r) { return test(swarm, r); });
}

}  // namespace shoal::manager
