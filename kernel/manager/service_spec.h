#pragma once

#include <Poco/JSON/Object.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kernel/common/status.h"
#include "kernel/store/object.h"

namespace shoal::manager {

// A service's mode: how many tasks it wants and whether they run to completion.
enum class ServiceMode { kReplicated, kGlobal, kReplicatedJob, kGlobalJob };

struct RestartPolicy {
  enum class Condition { kNone, kOnFailure, kAny };
  Condition condition = Condition::kAny;
  int64_t delayNs = 5'000'000'000;  // Swarm's default: 5 s
  uint64_t maxAttempts = 0;         // 0: unlimited
  int64_t windowNs = 0;             // 0: attempts are counted over the whole history
};

struct UpdatePolicy {
  enum class FailureAction { kPause, kContinue, kRollback };
  uint64_t parallelism = 1;  // 0: all at once
  int64_t delayNs = 0;
  FailureAction failureAction = FailureAction::kPause;
  int64_t monitorNs = 5'000'000'000;
  double maxFailureRatio = 0;
  bool startFirst = false;
};

// The parts of a service spec the manager acts on, read from its JSON (Docker's field names;
// kernel/store/README.md). Built by parseServiceSpec from a spec validateServiceSpec passed.
struct ServiceSpec {
  ServiceMode mode = ServiceMode::kReplicated;
  uint64_t replicas = 1;          // replicated services
  uint64_t maxConcurrent = 1;     // replicated jobs
  uint64_t totalCompletions = 1;  // replicated jobs
  RestartPolicy restart;
  UpdatePolicy update;
  UpdatePolicy rollback;
  std::vector<std::string> constraints;  // "node.labels.zone==east"
  std::vector<std::string> preferences;  // spread descriptors, outermost first
  uint64_t maxReplicas = 0;              // per node; 0: unlimited
  std::vector<std::pair<std::string, std::string>> platforms;  // (os, arch)
  std::string policy;                                          // Lua placement policy name
  std::string luaConstraint;
  int64_t reserveNanoCpus = 0;
  int64_t reserveMemory = 0;
  int64_t stopGraceNs = 10'000'000'000;                   // Docker's default: 10 s
  std::vector<std::pair<std::string, int>> hostPorts;     // (protocol, published) in host mode
  std::vector<std::pair<std::string, int>> ingressPorts;  // (protocol, published) via the mesh
  std::string taskTemplate;                               // the TaskTemplate as JSON text
  // Its tasks attach to networks (TaskTemplate.Networks, or ingress-published ports), so they
  // start NEW and wait for the allocator's addresses.
  bool attachesNetworks = false;
};

bool isJob(ServiceMode mode);
bool isGlobal(ServiceMode mode);
std::string_view modeName(ServiceMode mode);  // "replicated", "global", "replicated job", ...

// Checks a service spec as a client sends it (Docker's ServiceSpec JSON without Name and
// Labels, which are the object's own fields). Every error names the field:
// `invalid service spec: TaskTemplate.RestartPolicy.Condition must be one of none, on-failure,
// any (got "sometimes")`. Unknown fields are refused, so a typo never passes silently.
Status validateServiceSpec(const Poco::JSON::Object& spec);
// A service name as Docker accepts it: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 63 characters.
Status validateServiceName(const std::string& name);

// The spec's fields the manager acts on (the spec must have passed validateServiceSpec).
Result<ServiceSpec> parseServiceSpec(const std::string& specJson);

// A placement constraint split into its parts, or an error quoting it.
struct Constraint {
  std::string key;    // "node.labels.zone"
  bool equal = true;  // == (true) or != (false)
  std::string value;
};
Result<Constraint> parseConstraint(const std::string& text);

// The node facts a constraint is matched against (for global services, which the
// orchestrator places itself).
struct NodeFacts {
  std::string id, hostname, role, os, arch;
  std::map<std::string, std::string> labels, engineLabels;
};
NodeFacts nodeFacts(const store::Object& node);
bool matches(const Constraint& c, const NodeFacts& node);
bool matchesAll(const std::vector<std::string>& constraints, const NodeFacts& node);

// Whether a task's spec is `taskTemplate` (the service's TaskTemplate text): equal, or equal
// but for the NetworksAttachments the allocator appended (withAttachments).
bool runsTemplate(const std::string& taskSpec, const std::string& taskTemplate);
// `taskSpec` (a JSON object's text) with "NetworksAttachments": `attachmentsJson` appended as
// its last member, so runsTemplate still recognises the template it came from.
std::string withAttachments(const std::string& taskSpec, const std::string& attachmentsJson);
// The TaskTemplate text a task spec was made from: the spec without what withAttachments
// appended (tasks of one template differ only there, so this is what groups them).
std::string templateOf(const std::string& taskSpec);

// A task's observed state (its status's "State"); kNew when it has none.
store::TaskState observedState(const store::Object& task);
bool failedState(store::TaskState s);  // failed, rejected, orphaned
bool isTerminal(store::TaskState s);   // complete, shutdown, failed, rejected, orphaned, remove

// A task's status document (kernel/store/README.md), "State" first so observedState can find
// it without a parse.
struct TaskStatus {
  store::TaskState state = store::TaskState::kNew;
  int64_t timestampNs = 0;
  std::string message;
  std::string err;
  int64_t exitCode = -1;  // -1: none
  int64_t pid = 0;
};
std::string taskStatusJson(const TaskStatus& status);
Result<TaskStatus> parseTaskStatus(const std::string& json);

}  // namespace shoal::manager
