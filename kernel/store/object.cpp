#include "kernel/store/object.h"

#include <cstdio>
#include <ctime>

#include "kernel/store/json_text.h"

namespace shoal::store {

namespace {

struct TaskStateName {
  TaskState state;
  std::string_view name;
};
constexpr TaskStateName kTaskStates[] = {
    {TaskState::kNew, "new"},
    {TaskState::kPending, "pending"},
    {TaskState::kAssigned, "assigned"},
    {TaskState::kAccepted, "accepted"},
    {TaskState::kPreparing, "preparing"},
    {TaskState::kReady, "ready"},
    {TaskState::kStarting, "starting"},
    {TaskState::kRunning, "running"},
    {TaskState::kComplete, "complete"},
    {TaskState::kShutdown, "shutdown"},
    {TaskState::kFailed, "failed"},
    {TaskState::kRejected, "rejected"},
    {TaskState::kRemove, "remove"},
    {TaskState::kOrphaned, "orphaned"},
};

bool isIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

void appendTime(std::string& out, int64_t ns) {
  // Floor division, so times before 1970 still print correctly.
  int64_t secs = ns / 1000000000;
  int64_t frac = ns % 1000000000;
  if (frac < 0) {
    frac += 1000000000;
    secs -= 1;
  }
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "\"%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ\"", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(frac));
  out += buf;
}

}  // namespace

std::string formatTime(int64_t ns) {
  std::string quoted;
  appendTime(quoted, ns);
  return quoted.substr(1, quoted.size() - 2);
}

bool isKnownTaskState(int32_t raw) {
  for (const auto& s : kTaskStates) {
    if (static_cast<int32_t>(s.state) == raw) return true;
  }
  return false;
}

std::string_view taskStateName(TaskState state) {
  for (const auto& s : kTaskStates) {
    if (s.state == state) return s.name;
  }
  return "unknown-state";
}

Result<TaskState> parseTaskState(std::string_view name) {
  for (const auto& s : kTaskStates) {
    if (s.name == name) return s.state;
  }
  return Status::invalidArgument("unknown task state \"" + std::string(name) + "\"");
}

std::string_view nodeRoleName(NodeRole role) {
  switch (role) {
    case NodeRole::kWorker:
      return "worker";
    case NodeRole::kManager:
      return "manager";
  }
  return "unknown-role";
}

std::string_view availabilityName(NodeAvailability value) {
  switch (value) {
    case NodeAvailability::kActive:
      return "active";
    case NodeAvailability::kPause:
      return "pause";
    case NodeAvailability::kDrain:
      return "drain";
  }
  return "unknown-availability";
}

Result<NodeRole> parseNodeRole(std::string_view name) {
  if (name == "worker") return NodeRole::kWorker;
  if (name == "manager") return NodeRole::kManager;
  return Status::invalidArgument("unknown node role \"" + std::string(name) +
                                 "\" (expected worker or manager)");
}

Result<NodeAvailability> parseAvailability(std::string_view name) {
  if (name == "active") return NodeAvailability::kActive;
  if (name == "pause") return NodeAvailability::kPause;
  if (name == "drain") return NodeAvailability::kDrain;
  return Status::invalidArgument("unknown node availability \"" + std::string(name) +
                                 "\" (expected active, pause or drain)");
}

std::string describe(Kind kind, std::string_view id) {
  std::string s;
  if (isKnownKind(kind)) {
    s = kindName(kind);
  } else {
    s = "object of unknown kind " + std::to_string(static_cast<int>(kind));
  }
  s += ' ';
  if (id.empty()) {
    s += "(no id)";
  } else {
    s += id;
  }
  return s;
}

Status validateId(Kind kind, std::string_view id) {
  if (!isKnownKind(kind)) {
    return Status::invalidArgument(describe(kind, id) + ": unknown object kind " +
                                   std::to_string(static_cast<int>(kind)));
  }
  if (id.empty()) return Status::invalidArgument(std::string(kindName(kind)) + " without an id");
  if (id.size() > kMaxIdBytes) {
    return Status::invalidArgument(std::string(kindName(kind)) + " id is " +
                                   std::to_string(id.size()) + " bytes long (limit " +
                                   std::to_string(kMaxIdBytes) + ")");
  }
  for (char c : id) {
    if (!isIdChar(c)) {
      return Status::invalidArgument(std::string(kindName(kind)) +
                                     " id has a character other than [A-Za-z0-9_.-]");
    }
  }
  return Status::ok();
}

Status validateObject(const Object& o) {
  if (Status s = validateId(o.kind, o.id); !s) return s;
  auto bad = [&](const std::string& what) {
    return Status::invalidArgument(describe(o) + ": " + what);
  };
  if (o.name.empty() && nameRequired(o.kind)) return bad("a name is required");
  if (o.name.size() > kMaxNameBytes) {
    return bad("name is longer than " + std::to_string(kMaxNameBytes) + " bytes");
  }
  if (!isCleanText(o.name)) return bad("name is not UTF-8 text without control characters");
  for (const auto& [key, value] : o.labels) {
    if (key.empty()) return bad("a label has an empty key");
    if (key.size() > kMaxLabelKeyBytes) {
      return bad("label key is longer than " + std::to_string(kMaxLabelKeyBytes) + " bytes");
    }
    if (!isCleanText(key) || !isCleanText(value)) {
      return bad("label \"" + (isCleanText(key) ? key : std::string("?")) +
                 "\" is not UTF-8 text without control characters");
    }
  }
  if (Status s = checkJsonObject(o.spec); !s) return bad("spec is " + s.message());
  if (!o.status.empty()) {
    if (Status s = checkJsonObject(o.status); !s) return bad("status is " + s.message());
  }
  if (o.kind == Kind::kTask) {
    if (!isKnownTaskState(static_cast<int32_t>(o.desiredState))) {
      return bad("unknown desired state " + std::to_string(static_cast<int32_t>(o.desiredState)));
    }
    if (!o.serviceId.empty()) {
      if (Status s = validateId(Kind::kService, o.serviceId); !s) return bad(s.message());
    }
    if (!o.nodeId.empty()) {
      if (Status s = validateId(Kind::kNode, o.nodeId); !s) return bad(s.message());
    }
  } else if (!o.serviceId.empty() || !o.nodeId.empty() || o.slot != 0 ||
             o.desiredState != TaskState::kNew) {
    return bad("serviceId, nodeId, slot and desiredState are for tasks only");
  }
  if (o.kind == Kind::kNode) {
    if (o.role != NodeRole::kWorker && o.role != NodeRole::kManager) {
      return bad("unknown role " + std::to_string(static_cast<int>(o.role)));
    }
    if (o.availability != NodeAvailability::kActive && o.availability != NodeAvailability::kPause &&
        o.availability != NodeAvailability::kDrain) {
      return bad("unknown availability " + std::to_string(static_cast<int>(o.availability)));
    }
  } else if (o.role != NodeRole::kWorker || o.availability != NodeAvailability::kActive) {
    return bad("role and availability are for nodes only");
  }
  return Status::ok();
}

std::string toJson(const Object& o) {
  std::string out;
  out.reserve(256 + o.spec.size() + o.status.size());
  out += "{\"ID\":";
  appendJsonString(out, o.id);
  out += ",\"Kind\":";
  appendJsonString(out, kindName(o.kind));
  out += ",\"Version\":{\"Index\":";
  out += std::to_string(o.version);
  out += "},\"CreatedAt\":";
  appendTime(out, o.createdNs);
  out += ",\"UpdatedAt\":";
  appendTime(out, o.updatedNs);
  out += ",\"Name\":";
  appendJsonString(out, o.name);
  out += ",\"Labels\":{";
  bool first = true;
  for (const auto& [key, value] : o.labels) {
    if (!first) out += ',';
    first = false;
    appendJsonString(out, key);
    out += ':';
    appendJsonString(out, value);
  }
  out += '}';
  if (o.kind == Kind::kTask) {
    out += ",\"ServiceID\":";
    appendJsonString(out, o.serviceId);
    out += ",\"NodeID\":";
    appendJsonString(out, o.nodeId);
    out += ",\"Slot\":";
    out += std::to_string(o.slot);
    out += ",\"DesiredState\":";
    appendJsonString(out, taskStateName(o.desiredState));
  } else if (o.kind == Kind::kNode) {
    out += ",\"Role\":";
    appendJsonString(out, nodeRoleName(o.role));
    out += ",\"Availability\":";
    appendJsonString(out, availabilityName(o.availability));
  }
  out += ",\"Spec\":";
  out += o.spec.empty() ? "{}" : o.spec;
  out += ",\"Status\":";
  out += o.status.empty() ? "{}" : o.status;
  out += '}';
  return out;
}

}  // namespace shoal::store
