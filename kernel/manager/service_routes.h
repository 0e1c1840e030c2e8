#pragma once

#include "kernel/api/router.h"
#include "kernel/manager/swarm.h"

namespace shoal::manager {

// The services and tasks control API (managers only; writes go through Raft):
//   POST /services/create  ServiceSpec (Docker's: Name, Labels, Mode, TaskTemplate,
//                          UpdateConfig, RollbackConfig, EndpointSpec) -> {"ID"}
//   GET  /services                       -> {"services":[{Service object + "Replicas":
//                                           {"Running","Desired","Completed"}}]}
//   GET  /services/inspect?id=REF        -> the Service object
//   POST /services/update?id=REF  {"spec": ServiceSpec, "version": N (optional: refuse if the
//                          service moved on)} or {"rollback": true}  -> {"ID"}
//   POST /services/remove?id=REF
//   GET  /tasks?service=REF&node=REF|self&desired-state=running|shutdown|accepted&id=&name=
//        -> {"tasks":[Task objects], "services":{id:name}, "nodes":{id:hostname}}
//   POST /services/logs {"service"|"task": REF, "follow", "tail", "since_ns", "timestamps"}
//        -> {"Sub": id, "Tasks": {task id: {"Name", "Node"}}}   (the leader only)
//   GET  /logs/read?sub=ID&after=N&wait_ms=M
//        -> {"Records": [{"Task", "Stream", "Timestamp", "Line"}], "Next", "Dropped", "Done",
//            "Errors": [...]}   (long-polls up to M ms, at most 5 s, for new records)
//   POST /logs/cancel?sub=ID
// REF is an id, a name, or a unique id prefix. Bad specs get 400 naming the field.
void addServiceRoutes(api::Router& router, Swarm& swarm);

}  // namespace shoal::manager
