#pragma once

#include "kernel/api/router.h"
#include "kernel/manager/swarm.h"

namespace Poco::JSON {
class Object;
}

namespace shoal::manager {

// The swarm's control API:
//   POST /swarm/init   {"listen_addr","advertise_addr","cert_expiry_seconds",
//                       "heartbeat_period_seconds"} -> {"node_id","addr"}
//   POST /swarm/join   {"token","remote_addr","advertise_addr"} -> {"node_id"}
//   GET  /swarm/join-token?role=worker|manager   -> {"token","addr"}
//   POST /swarm/join-token/rotate?role=...       -> {"token","addr"}
//   GET  /nodes                                   -> {"nodes":[{summary..., "object":{...}}]}
//   GET  /nodes/inspect?id=REF                    -> the Node object
//   POST /nodes/update?id=REF  {"availability","role","label_add":{k:v},"label_rm":[k]}
//   POST /swarm/leave[?force=1]
// Manager-only routes answer 503 with Docker's "This node is not a swarm manager ..." message.
void addSwarmRoutes(api::Router& router, Swarm& swarm);

// The "swarm" section of GET /info.
void describeSwarm(const Swarm& swarm, Poco::JSON::Object& out);

}  // namespace shoal::manager
