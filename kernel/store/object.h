#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "kernel/common/status.h"
#include "kernel/store/kind.h"

namespace shoal::store {

// A task's state, with SwarmKit's values and order: a task only moves forward through them.
// The values are part of the encoded format.
enum class TaskState : int32_t {
  kNew = 0,
  kPending = 64,
  kAssigned = 192,
  kAccepted = 256,
  kPreparing = 320,
  kReady = 384,
  kStarting = 448,
  kRunning = 512,
  kComplete = 576,
  kShutdown = 640,
  kFailed = 704,
  kRejected = 768,
  kRemove = 800,
  kOrphaned = 832,
};
bool isKnownTaskState(int32_t raw);
std::string_view taskStateName(TaskState state);  // "new", "pending", ... "orphaned"
Result<TaskState> parseTaskState(std::string_view name);

// A node's role and availability, with SwarmKit's values (part of the encoded format).
enum class NodeRole : uint8_t { kWorker = 0, kManager = 1 };
enum class NodeAvailability : uint8_t { kActive = 0, kPause = 1, kDrain = 2 };
std::string_view nodeRoleName(NodeRole role);               // "worker", "manager"
std::string_view availabilityName(NodeAvailability value);  // "active", "pause", "drain"
Result<NodeRole> parseNodeRole(std::string_view name);
Result<NodeAvailability> parseAvailability(std::string_view name);

// Limits every object must respect (checked by validateObject).
inline constexpr std::size_t kMaxIdBytes = 64;
inline constexpr std::size_t kMaxNameBytes = 256;
inline constexpr std::size_t kMaxLabelKeyBytes = 256;

// One cluster object, of any kind. The envelope (id, version, times, name, labels) and the few
// fields the indexes need are typed members; the kind's own document is JSON text in `spec`
// (what the user asked for) and `status` (what the cluster observed), with the per-kind
// schemas documented in kernel/store/README.md. The typed members are the only home of what
// they hold: a spec never repeats them.
//
// Objects in the store are immutable and shared (ObjectPtr); to change one, copy it, modify
// the copy and hand it to Tx::update. THREAD: a plain value; an ObjectPtr from the store may be
// read from any thread, for as long as it is held.
struct Object {
  Kind kind = Kind::kCluster;
  std::string id;         // [A-Za-z0-9_.-], 1..kMaxIdBytes; unique per kind
  uint64_t version = 0;   // Raft index of the last change (0: not committed yet)
  int64_t createdNs = 0;  // Unix nanoseconds, from the committing Raft entry
  int64_t updatedNs = 0;
  std::string name;  // unique per kind except tasks; required except for nodes and tasks
  std::map<std::string, std::string> labels;
  std::string spec = "{}";  // a JSON object
  std::string status;       // a JSON object, or empty

  // Tasks only (empty / zero for every other kind).
  std::string serviceId;
  std::string nodeId;  // empty until the task is assigned
  uint64_t slot = 0;   // replicated services: 1..replicas; global services: 0
  TaskState desiredState = TaskState::kNew;

  // Nodes only (these defaults for every other kind).
  NodeRole role = NodeRole::kWorker;
  NodeAvailability availability = NodeAvailability::kActive;

  bool operator==(const Object&) const = default;
};

using ObjectPtr = std::shared_ptr<const Object>;

// "service abc123" — how messages name an object.
std::string describe(Kind kind, std::string_view id);
inline std::string describe(const Object& o) { return describe(o.kind, o.id); }

// Checks everything about an object that does not depend on other objects: a known kind, the
// id's and name's form, labels, spec and status being JSON objects, the typed fields being
// valid and used only by their kind. The error names the object and the problem.
Status validateObject(const Object& object);
// The id rules alone (for delete and check operations, which carry only kind and id).
Status validateId(Kind kind, std::string_view id);

// The object as the API shows it: a JSON object with the envelope fields (ID, Kind, Version,
// CreatedAt, UpdatedAt, Name, Labels), the typed fields of its kind, and Spec / Status
// embedded verbatim. Times are RFC 3339 UTC with nanoseconds.
std::string toJson(const Object& object);
// Unix nanoseconds as the API shows times: RFC 3339 UTC with nanoseconds, unquoted.
std::string formatTime(int64_t ns);

}  // namespace shoal::store
