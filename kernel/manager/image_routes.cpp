#include "kernel/manager/image_routes.h"

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <chrono>
#include <future>
#include <memory>

#include "kernel/agent/runtime.h"

namespace shoal::manager {
namespace {

using api::Request;
using api::Response;
using JObject = Poco::JSON::Object;

// A pull of a big image over a slow link takes minutes; the client waits as long.
constexpr auto kImageOpLimit = std::chrono::minutes(30);

struct Outcome {
  Status status;
  std::string json;
};

// Runs one asynchronous image op to its completion.
Outcome runOp(const std::function<Status(agent::Runtime::Done)>& start) {
  auto promise = std::make_shared<std::promise<Outcome>>();
  std::future<Outcome> result = promise->get_future();
  Status s = start([promise](Status status, const std::string& json) {
    promise->set_value(Outcome{std::move(status), json});
  });
  if (!s) return Outcome{s, ""};
  if (result.wait_for(kImageOpLimit) != std::future_status::ready) {
    return Outcome{Status::timeout("the runtime did not finish the image operation in 30 min"), ""};
  }
  return result.get();
}

// The request body's object with only `allowed` keys, or the error naming what is wrong.
Result<JObject::Ptr> body(const Request& r, const char* what,
                          std::initializer_list<const char*> allowed) {
  JObject::Ptr o;
  try {
    o = Poco::JSON::Parser().parse(r.body.empty() ? "{}" : r.body).extract<JObject::Ptr>();
  } catch (const std::exception&) {
  }
  if (!o) {
    return Status::invalidArgument(std::string("the ") + what +
                                   " request body is not a JSON object");
  }
  for (const auto& k : o->getNames()) {
    bool known = false;
    for (const char* a : allowed) known = known || k == a;
    if (!known) {
      return Status::invalidArgument("unknown field \"" + k + "\" in the " + what + " request");
    }
  }
  return o;
}

Result<std::string> stringField(const JObject& o, const char* key, const char* what) {
  if (!o.has(key) || !o.get(key).isString() || o.getValue<std::string>(key).empty()) {
    return Status::invalidArgument(std::string("the ") + what + " request needs \"" + key +
                                   "\" (a non-empty string)");
  }
  return o.getValue<std::string>(key);
}

Result<agent::PluginRuntime*> runtimeOf(Swarm& swarm) {
  agent::PluginRuntime* rt = swarm.runtime();
  if (!rt) return Status::unavailable("this node has no runtime plugin, so it keeps no images");
  if (!rt->hasImages())
    return Status::notSupported("the runtime " + rt->pluginName() + " keeps no images");
  return rt;
}

Response reply(const Outcome& o) {
  if (!o.status) return Response::error(o.status);
  return Response::json(o.json.empty() ? "{}" : o.json);
}

// The handler for a POST whose body names one reference (or path) under `key`.
Response withRef(Swarm& swarm, const Request& r, const char* what, const char* key,
                 std::initializer_list<const char*> allowed,
                 const std::function<Status(agent::PluginRuntime&, const std::string&,
                                            const JObject&, agent::Runtime::Done)>& op) {
  auto rt = runtimeOf(swarm);
  if (!rt) return Response::error(rt.status());
  auto b = body(r, what, allowed);
  if (!b) return Response::error(b.status());
  auto ref = stringField(**b, key, what);
  if (!ref) return Response::error(ref.status());
  return reply(runOp([&](agent::Runtime::Done done) { return op(**rt, *ref, **b, done); }));
}

}  // namespace

void addImageRoutes(api::Router& router, Swarm& swarm) {
  router.add("GET", "/images", [&swarm](const Request&) {
    auto rt = runtimeOf(swarm);
    if (!rt) return Response::error(rt.status());
    auto list = (*rt)->imageList();
    if (!list) return Response::error(list.status());
    return Response::json("{\"images\":" + *list + "}");
  });
  router.add("POST", "/images/pull", [&swarm](const Request& r) {
    return withRef(swarm, r, "image pull", "Ref", {"Ref"},
                   [](agent::PluginRuntime& rt, const std::string& ref, const JObject&,
                      agent::Runtime::Done done) { return rt.imagePull(ref, done); });
  });
  router.add("POST", "/images/resolve", [&swarm](const Request& r) {
    return withRef(swarm, r, "image resolve", "Ref", {"Ref"},
                   [](agent::PluginRuntime& rt, const std::string& ref, const JObject&,
                      agent::Runtime::Done done) { return rt.imageResolve(ref, done); });
  });
  router.add("POST", "/images/load", [&swarm](const Request& r) {
    return withRef(swarm, r, "image load", "Path", {"Path"},
                   [](agent::PluginRuntime& rt, const std::string& path, const JObject&,
                      agent::Runtime::Done done) {
                     if (path[0] != '/') {
                       return Status::invalidArgument("image load needs an absolute path, not \"" +
                                                      path + "\"");
                     }
                     return rt.imageLoad(path, done);
                   });
  });
  router.add("POST", "/images/remove", [&swarm](const Request& r) {
    return withRef(swarm, r, "image remove", "Ref", {"Ref", "Force"},
                   [](agent::PluginRuntime& rt, const std::string& ref, const JObject& b,
                      agent::Runtime::Done done) {
                     bool force = false;
                     if (b.has("Force")) {
                       if (!b.get("Force").isBoolean()) {
                         return Status::invalidArgument(
                             "\"Force\" in the image remove request must be true or false");
                       }
                       force = b.getValue<bool>("Force");
                     }
                     return rt.imageRemove(ref, force, done);
                   });
  });
}

}  // namespace shoal::manager
