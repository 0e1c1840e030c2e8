#include "kernel/manager/swarm_routes.h"

#include "kernel/manager/route_util.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <initializer_list>
#include <sstream>
#include <string_view>

namespace shoal::manager {
namespace {

using api::Request;
using api::Response;

// The body of `r` as a JSON object (an empty body is {}) whose fields are all in `allowed`;
// otherwise an invalid-argument error naming the request (`what`) and the problem.
Result<Poco::JSON::Object::Ptr> readBody(const Request& r,
                                         std::initializer_list<std::string_view> allowed,
                                         const std::string& what) {
  Poco::JSON::Object::Ptr body;
  try {
    body = Poco::JSON::Parser()
               .parse(r.body.empty() ? "{}" : r.body)
               .extract<Poco::JSON::Object::Ptr>();
  } catch (const std::exception& e) {
    return Status::invalidArgument("the " + what +
                                   " request body is not a JSON object: " + e.what());
  }
  if (!body) return Status::invalidArgument("the " + what + " request body is not a JSON object");
  for (const auto& key : body->getNames()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      return Status::invalidArgument("unknown field \"" + key + "\" in the " + what + " request");
    }
  }
  return body;
}

Response init(Swarm& swarm, const Request& r) {
  SwarmInitOptions o;
  auto body = readBody(r,
                       {"listen_addr", "advertise_addr", "cert_expiry_seconds",
                        "heartbeat_period_seconds", "autolock"},
                       "swarm init");
  if (!body) return Response::error(body.status());
  try {
    o.listenAddr = (*body)->optValue<std::string>("listen_addr", o.listenAddr);
    o.advertiseAddr = (*body)->optValue<std::string>("advertise_addr", "");
    if ((*body)->has("heartbeat_period_seconds")) {
      o.heartbeatPeriod =
          std::chrono::seconds((*body)->getValue<int64_t>("heartbeat_period_seconds"));
    }
    if ((*body)->has("cert_expiry_seconds")) {
      o.certExpiry = std::chrono::seconds((*body)->getValue<int64_t>("cert_expiry_seconds"));
    }
    o.autolock = (*body)->optValue<bool>("autolock", false);
  } catch (const std::exception& e) {
    return Response::error(400, std::string("bad swarm init request: ") + e.what());
  }
  auto id = swarm.init(o);
  if (!id) return Response::error(id.status());
  Poco::JSON::Object out;
  out.set("node_id", *id);
  out.set("addr", swarm.status().advertiseAddr);
  if (o.autolock) {
    auto key = swarm.unlockKey(false);
    if (!key) return Response::error(key.status());
    out.set("unlock_key", *key);
  }
  return Response::json(stringify(out));
}

Response join(Swarm& swarm, const Request& r) {
  SwarmJoinOptions o;
  auto body = readBody(r, {"token", "remote_addr", "advertise_addr", "listen_addr"}, "swarm join");
  if (!body) return Response::error(body.status());
  try {
    o.token = (*body)->getValue<std::string>("token");
    o.remoteAddr = (*body)->getValue<std::string>("remote_addr");
    o.advertiseAddr = (*body)->optValue<std::string>("advertise_addr", "");
    o.listenAddr = (*body)->optValue<std::string>("listen_addr", o.listenAddr);
  } catch (const std::exception& e) {
    return Response::error(400, std::string("bad swarm join request: ") + e.what());
  }
  auto id = swarm.join(o);
  if (!id) return Response::error(id.status());
  Poco::JSON::Object out;
  out.set("node_id", *id);
  out.set("role", swarm.status().role);
  return Response::json(stringify(out));
}

Response update(Swarm& swarm, const Request& r) {
  SwarmUpdate u;
  auto body = readBody(r,
                       {"cert_expiry_seconds", "heartbeat_period_seconds", "task_history_limit",
                        "autolock", "overlay_key_rotation_seconds"},
                       "swarm update");
  if (!body) return Response::error(body.status());
  try {
    const auto& b = *body;
    if (b->has("cert_expiry_seconds")) {
      u.certExpiry = std::chrono::seconds(b->getValue<int64_t>("cert_expiry_seconds"));
    }
    if (b->has("heartbeat_period_seconds")) {
      u.heartbeatPeriod = std::chrono::seconds(b->getValue<int64_t>("heartbeat_period_seconds"));
    }
    if (b->has("task_history_limit"))
      u.taskHistoryLimit = b->getValue<int64_t>("task_history_limit");
    if (b->has("autolock")) u.autolock = b->getValue<bool>("autolock");
    if (b->has("overlay_key_rotation_seconds")) {
      u.overlayKeyRotation =
          std::chrono::seconds(b->getValue<int64_t>("overlay_key_rotation_seconds"));
    }
  } catch (const std::exception& e) {
    return Response::error(400, std::string("bad swarm update request: ") + e.what());
  }
  auto key = swarm.update(u);
  if (!key) return Response::error(key.status());
  Poco::JSON::Object out;
  if (!key->empty()) out.set("unlock_key", *key);
  return Response::json(stringify(out));
}

Response joinToken(Swarm& swarm, const Request& r, bool rotate) {
  auto token = swarm.joinToken(param(r, "role"), rotate);
  if (!token) return Response::error(token.status());
  Poco::JSON::Object out;
  out.set("token", *token);
  out.set("addr", swarm.status().advertiseAddr);
  return Response::json(stringify(out));
}

Response nodes(Swarm& swarm) {
  auto list = swarm.nodes();
  if (!list) return Response::error(list.status());
  Poco::JSON::Array arr;
  for (const auto& n : *list) {
    Poco::JSON::Object o;
    o.set("id", n.id);
    o.set("hostname", n.hostname);
    o.set("status", n.status);
    o.set("availability", n.availability);
    o.set("manager_status", n.managerStatus);
    o.set("engine_version", n.engineVersion);
    o.set("self", n.self);
    o.set("object", Poco::JSON::Parser().parse(n.json));
    arr.add(o);
  }
  Poco::JSON::Object out;
  out.set("nodes", arr);
  return Response::json(stringify(out));
}

Response inspectNode(Swarm& swarm, const Request& r) {
  auto json = swarm.inspectNode(param(r, "id"));
  if (!json) return Response::error(json.status());
  return Response::json(*json);
}

Response updateNode(Swarm& swarm, const Request& r) {
  Swarm::NodeUpdate u;
  auto parsed = readBody(r, {"availability", "label_add", "label_rm", "role"}, "node update");
  if (!parsed) return Response::error(parsed.status());
  try {
    const auto& body = *parsed;
    u.availability = body->optValue<std::string>("availability", "");
    u.role = body->optValue<std::string>("role", "");
    if (auto add = body->getObject("label_add")) {
      for (const auto& key : add->getNames()) u.labelAdd[key] = add->getValue<std::string>(key);
    }
    if (auto rm = body->getArray("label_rm")) {
      for (std::size_t i = 0; i < rm->size(); ++i) {
        u.labelRm.push_back(rm->getElement<std::string>(static_cast<unsigned>(i)));
      }
    }
  } catch (const std::exception& e) {
    return Response::error(400, std::string("bad node update request: ") + e.what());
  }
  if (Status s = swarm.updateNode(param(r, "id"), u); !s) return Response::error(s);
  return Response::json("{}");
}

}  // namespace

void addSwarmRoutes(api::Router& router, Swarm& swarm) {
  router.add("GET", "/nodes/inspect", [&swarm](const Request& r) { return inspectNode(swarm, r); });
  router.add("POST", "/nodes/update", [&swarm](const Request& r) { return updateNode(swarm, r); });
  router.add("POST", "/nodes/rm", [&swarm](const Request& r) {
    Status s = swarm.removeNode(param(r, "id"), param(r, "force") == "1");
    return s ? Response::json("{}") : Response::error(s);
  });
  router.add("POST", "/swarm/leave", [&swarm](const Request& r) {
    Status s = swarm.leave(param(r, "force") == "1");
    return s ? Response::json("{}") : Response::error(s);
  });
  router.add("POST", "/swarm/init", [&swarm](const Request& r) { return init(swarm, r); });
  router.add("POST", "/swarm/join", [&swarm](const Request& r) { return join(swarm, r); });
  router.add("POST", "/swarm/update", [&swarm](const Request& r) { return update(swarm, r); });
  router.add("GET", "/swarm/ca", [&swarm](const Request&) {
    auto ca = swarm.rootCaStatus();
    if (!ca) return Response::error(ca.status());
    Poco::JSON::Object out;
    out.set("cert", ca->certPem);
    out.set("digest", ca->digest);
    out.set("rotating", ca->rotating);
    out.set("next_digest", ca->nextDigest);
    out.set("nodes", ca->nodes);
    out.set("reissued", ca->reissued);
    return Response::json(stringify(out));
  });
  router.add("POST", "/swarm/ca/rotate", [&swarm](const Request&) {
    auto digest = swarm.rotateRootCa();
    if (!digest) return Response::error(digest.status());
    Poco::JSON::Object out;
    out.set("next_digest", *digest);
    return Response::json(stringify(out));
  });
  router.add("POST", "/swarm/unlock", [&swarm](const Request& r) {
    auto body = readBody(r, {"key"}, "swarm unlock");
    if (!body) return Response::error(body.status());
    const std::string key = (*body)->optValue<std::string>("key", "");
    if (key.empty()) return Response::error(400, "the swarm unlock request needs a \"key\"");
    Status s = swarm.unlock(key);
    return s ? Response::json("{}") : Response::error(s);
  });
  auto unlockKey = [&swarm](bool rotate) {
    auto key = swarm.unlockKey(rotate);
    if (!key) return Response::error(key.status());
    Poco::JSON::Object out;
    out.set("unlock_key", *key);
    return Response::json(stringify(out));
  };
  router.add("GET", "/swarm/unlock-key", [unlockKey](const Request&) { return unlockKey(false); });
  router.add("POST", "/swarm/unlock-key/rotate",
             [unlockKey](const Request&) { return unlockKey(true); });
  router.add("GET", "/swarm/join-token",
             [&swarm](const Request& r) { return joinToken(swarm, r, false); });
  router.add("POST", "/swarm/join-token/rotate",
             [&swarm](const Request& r) { return joinToken(swarm, r, true); });
  router.add("GET", "/nodes", [&swarm](const Request&) { return nodes(swarm); });
}

void describeSwarm(const Swarm& swarm, Poco::JSON::Object& out) {
  const SwarmStatus s = swarm.status();
  out.set("state", s.state);
  if (s.state != "active") return;
  out.set("node_id", s.nodeId);
  out.set("node_addr", s.advertiseAddr);
  out.set("is_manager", s.role == "manager");
  out.set("cluster_id", s.clusterId);
  out.set("ca_digest", s.caDigest);
  out.set("managers", s.managers);
  out.set("nodes", s.nodes);
  Poco::JSON::Object raft;
  raft.set("id", std::to_string(s.raftId));
  raft.set("leader", std::to_string(s.raftLeader));
  raft.set("term", s.raftTerm);
  raft.set("applied", s.raftApplied);
  out.set("raft", raft);
  Poco::JSON::Array managers;
  for (const auto& a : s.managerAddrs) managers.add(a);
  out.set("manager_addrs", managers);
}

}  // namespace shoal::manager
