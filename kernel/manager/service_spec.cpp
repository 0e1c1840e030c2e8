#include "kernel/manager/service_spec.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

#include "kernel/common/json_escape.h"

namespace shoal::manager {
namespace {

using Poco::Dynamic::Var;
using Poco::JSON::Array;
using Poco::JSON::Object;

Status bad(const std::string& path, const std::string& what) {
  return Status::invalidArgument("invalid service spec: " + path + " " + what);
}

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

// One field's check: the value and its full path ("TaskTemplate.RestartPolicy.Delay").
using FieldCheck = std::function<Status(const Var&, const std::string&)>;

Status checkFields(const Var& v, const std::string& path,
                   const std::map<std::string, FieldCheck>& fields) {
  if (v.type() != typeid(Object::Ptr) || !v.extract<Object::Ptr>()) {
    return bad(path, "must be an object");
  }
  const auto& o = *v.extract<Object::Ptr>();
  for (const auto& name : o.getNames()) {
    auto it = fields.find(name);
    const std::string sub = path.empty() ? name : path + "." + name;
    if (it == fields.end()) {
      return Status::invalidArgument("invalid service spec: unknown field " + sub);
    }
    if (Status s = it->second(o.get(name), sub); !s) return s;
  }
  return Status::ok();
}

bool isInt(const Var& v) { return v.isInteger() && !v.isBoolean(); }

FieldCheck integer(int64_t min, int64_t max) {
  return [=](const Var& v, const std::string& path) {
    if (!isInt(v)) return bad(path, "must be an integer");
    if (!v.isSigned() && v.convert<uint64_t>() > static_cast<uint64_t>(max)) {
      return bad(path, "is out of range");
    }
    const auto n = v.convert<int64_t>();
    if (n < min || n > max) {
      return bad(path, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                           " (got " + std::to_string(n) + ")");
    }
    return Status::ok();
  };
}

const FieldCheck kCount = integer(0, std::numeric_limits<int64_t>::max());
const FieldCheck kDuration = integer(0, std::numeric_limits<int64_t>::max());

Status isString(const Var& v, const std::string& path) {
  if (!v.isString()) return bad(path, "must be a string");
  return Status::ok();
}

FieldCheck oneOf(std::vector<std::string> allowed) {
  return [allowed](const Var& v, const std::string& path) {
    if (Status s = isString(v, path); !s) return s;
    const auto text = v.extract<std::string>();
    if (std::find(allowed.begin(), allowed.end(), text) != allowed.end()) return Status::ok();
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    return bad(path, "must be one of " + list + " (got " + quoted(text) + ")");
  };
}

FieldCheck arrayOf(FieldCheck item) {
  return [item](const Var& v, const std::string& path) {
    if (v.type() != typeid(Array::Ptr) || !v.extract<Array::Ptr>()) {
      return bad(path, "must be an array");
    }
    const auto& a = *v.extract<Array::Ptr>();
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (Status s = item(a.get(i), path + "[" + std::to_string(i) + "]"); !s) return s;
    }
    return Status::ok();
  };
}

Status stringMap(const Var& v, const std::string& path) {
  if (v.type() != typeid(Object::Ptr) || !v.extract<Object::Ptr>()) {
    return bad(path, "must be an object of strings");
  }
  const auto& o = *v.extract<Object::Ptr>();
  for (const auto& name : o.getNames()) {
    if (name.empty()) return bad(path, "has an empty key");
    if (!o.get(name).isString()) return bad(path + "." + name, "must be a string");
  }
  return Status::ok();
}

FieldCheck object(std::map<std::string, FieldCheck> fields) {
  return [fields](const Var& v, const std::string& path) { return checkFields(v, path, fields); };
}

Status envEntry(const Var& v, const std::string& path) {
  if (Status s = isString(v, path); !s) return s;
  const auto text = v.extract<std::string>();
  if (text.empty() || text[0] == '=')
    return bad(path, "must be KEY=VALUE (got " + quoted(text) + ")");
  return Status::ok();
}

Status constraintEntry(const Var& v, const std::string& path) {
  if (Status s = isString(v, path); !s) return s;
  auto c = parseConstraint(v.extract<std::string>());
  if (!c) return bad(path, c.status().message());
  return Status::ok();
}

Status imageRef(const Var& v, const std::string& path) {
  if (Status s = isString(v, path); !s) return s;
  const auto text = v.extract<std::string>();
  if (text.empty()) return bad(path, "must not be empty");
  for (unsigned char c : text) {
    if (std::isspace(c) || std::iscntrl(c)) {
      return bad(path, "is not an image reference (got " + quoted(text) + ")");
    }
  }
  return Status::ok();
}

Status absolutePath(const Var& v, const std::string& path) {
  if (Status s = isString(v, path); !s) return s;
  const auto text = v.extract<std::string>();
  if (text.empty() || text[0] != '/') return bad(path, "must be an absolute path");
  return Status::ok();
}

Status ratio(const Var& v, const std::string& path) {
  if (!v.isNumeric() || v.isBoolean()) return bad(path, "must be a number");
  const double r = v.convert<double>();
  if (!(r >= 0 && r <= 1)) return bad(path, "must be between 0 and 1");
  return Status::ok();
}

FieldCheck updateConfig(bool rollback) {
  std::vector<std::string> actions = {"pause", "continue"};
  if (!rollback) actions.push_back("rollback");
  return object({{"Parallelism", kCount},
                 {"Delay", kDuration},
                 {"FailureAction", oneOf(actions)},
                 {"Monitor", kDuration},
                 {"MaxFailureRatio", ratio},
                 {"Order", oneOf({"stop-first", "start-first"})}});
}

const std::map<std::string, FieldCheck>& specFields() {
  static const std::map<std::string, FieldCheck> fields = [] {
    const FieldCheck boolean = [](const Var& v, const std::string& p) {
      return v.isBoolean() ? Status::ok() : bad(p, "must be true or false");
    };
    const FieldCheck secretRef = object({{"SecretName", isString},
                                         {"SecretID", isString},
                                         {"File", object({{"Name", isString},
                                                          {"UID", isString},
                                                          {"GID", isString},
                                                          {"Mode", integer(0, 07777)}})}});
    const FieldCheck configRef = object({{"ConfigName", isString},
                                         {"ConfigID", isString},
                                         {"File", object({{"Name", isString},
                                                          {"UID", isString},
                                                          {"GID", isString},
                                                          {"Mode", integer(0, 07777)}})}});
    const FieldCheck mount =
        object({{"Type", oneOf({"bind", "volume", "tmpfs"})},
                {"Source", isString},
                {"Target", absolutePath},
                {"ReadOnly", [](const Var& v, const std::string& p) {
                   return v.isBoolean() ? Status::ok() : bad(p, "must be true or false");
                 }}});
    const FieldCheck health = object({{"Test", arrayOf(isString)},
                                      {"Interval", kDuration},
                                      {"Timeout", kDuration},
                                      {"Retries", kCount},
                                      {"StartPeriod", kDuration}});
    const FieldCheck container = object(
        {{"Image", imageRef},
         {"Command", arrayOf(isString)},
         {"Args", arrayOf(isString)},
         {"Env", arrayOf(envEntry)},
         {"Labels", stringMap},
         {"Hostname", isString},
         {"Dir", isString},
         {"User", isString},
         {"StopGracePeriod", kDuration},
         {"StopSignal", isString},
         {"Healthcheck", health},
         {"ReadOnly", boolean},
         {"Init", boolean},
         {"TTY", boolean},
         {"CapabilityAdd", arrayOf(isString)},
         {"CapabilityDrop", arrayOf(isString)},
         {"Sysctls", stringMap},
         {"Ulimits", arrayOf(object({{"Name", isString}, {"Soft", kCount}, {"Hard", kCount}}))},
         {"Mounts", arrayOf(mount)},
         {"Secrets", arrayOf(secretRef)},
         {"Configs", arrayOf(configRef)}});
    const FieldCheck resources = object({{"NanoCPUs", kCount}, {"MemoryBytes", kCount}});
    const FieldCheck limits =
        object({{"NanoCPUs", kCount}, {"MemoryBytes", kCount}, {"Pids", kCount}});
    const FieldCheck placement =
        object({{"Constraints", arrayOf(constraintEntry)},
                {"Preferences",
                 arrayOf(object({{"Spread", object({{"SpreadDescriptor",
                                                     [](const Var& v, const std::string& p) {
                                                       if (Status s = isString(v, p); !s) return s;
                                                       const auto d = v.extract<std::string>();
                                                       if (d.rfind("node.labels.", 0) != 0 &&
                                                           d.rfind("engine.labels.", 0) != 0) {
                                                         return bad(p,
                                                                    "must name a node.labels.* or "
                                                                    "engine.labels.* label (got " +
                                                                        quoted(d) + ")");
                                                       }
                                                       return Status::ok();
                                                     }}})}}))},
                {"MaxReplicas", kCount},
                {"Platforms", arrayOf(object({{"Architecture", isString}, {"OS", isString}}))},
                {"Policy", isString},
                {"LuaConstraint", isString}});
    const FieldCheck task = object(
        {{"ContainerSpec", container},
         {"Resources", object({{"Limits", limits}, {"Reservations", resources}})},
         {"RestartPolicy", object({{"Condition", oneOf({"none", "on-failure", "any"})},
                                   {"Delay", kDuration},
                                   {"MaxAttempts", kCount},
                                   {"Window", kDuration}})},
         {"Placement", placement},
         {"Networks", arrayOf(object({{"Target", isString}, {"Aliases", arrayOf(isString)}}))},
         {"ForceUpdate", kCount}});
    const FieldCheck port = object({{"Name", isString},
                                    {"Protocol", oneOf({"tcp", "udp", "sctp"})},
                                    {"TargetPort", integer(1, 65535)},
                                    {"PublishedPort", integer(0, 65535)},
                                    {"PublishMode", oneOf({"ingress", "host"})}});
    return std::map<std::string, FieldCheck>{
        {"Mode", object({{"Replicated", object({{"Replicas", kCount}})},
                         {"Global", object({})},
                         {"ReplicatedJob",
                          object({{"MaxConcurrent", kCount}, {"TotalCompletions", kCount}})},
                         {"GlobalJob", object({})}})},
        {"TaskTemplate", task},
        {"UpdateConfig", updateConfig(false)},
        {"RollbackConfig", updateConfig(true)},
        {"EndpointSpec", object({{"Mode", oneOf({"vip", "dnsrr"})}, {"Ports", arrayOf(port)}})}};
  }();
  return fields;
}

Object::Ptr child(const Object::Ptr& o, const std::string& name) {
  if (!o || !o->has(name)) return nullptr;
  return o->getObject(name);
}

int64_t intOr(const Object::Ptr& o, const std::string& name, int64_t fallback) {
  if (!o || !o->has(name)) return fallback;
  return o->getValue<int64_t>(name);
}

UpdatePolicy readUpdate(const Object::Ptr& o) {
  UpdatePolicy u;
  if (!o) return u;
  u.parallelism = static_cast<uint64_t>(intOr(o, "Parallelism", 1));
  u.delayNs = intOr(o, "Delay", 0);
  u.monitorNs = intOr(o, "Monitor", u.monitorNs);
  if (o->has("MaxFailureRatio")) u.maxFailureRatio = o->getValue<double>("MaxFailureRatio");
  const auto action = o->optValue<std::string>("FailureAction", "pause");
  u.failureAction = action == "continue"   ? UpdatePolicy::FailureAction::kContinue
                    : action == "rollback" ? UpdatePolicy::FailureAction::kRollback
                                           : UpdatePolicy::FailureAction::kPause;
  u.startFirst = o->optValue<std::string>("Order", "stop-first") == "start-first";
  return u;
}

std::string trim(std::string s) {
  auto notSpace = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), notSpace));
  s.erase(std::find_if(s.rbegin(), s.rend(), notSpace).base(), s.end());
  return s;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace

bool isJob(ServiceMode m) {
  return m == ServiceMode::kReplicatedJob || m == ServiceMode::kGlobalJob;
}
bool isGlobal(ServiceMode m) { return m == ServiceMode::kGlobal || m == ServiceMode::kGlobalJob; }

std::string_view modeName(ServiceMode m) {
  switch (m) {
    case ServiceMode::kReplicated:
      return "replicated";
    case ServiceMode::kGlobal:
      return "global";
    case ServiceMode::kReplicatedJob:
      return "replicated job";
    case ServiceMode::kGlobalJob:
      return "global job";
  }
  return "replicated";
}

Status validateServiceSpec(const Object& spec) {
  Object::Ptr copy = new Object(spec);
  if (Status s = checkFields(Var(copy), "", specFields()); !s) return s;
  if (auto mode = child(copy, "Mode"); mode && mode->size() > 1) {
    return bad("Mode", "must name exactly one of Replicated, Global, ReplicatedJob, GlobalJob");
  }
  auto task = child(copy, "TaskTemplate");
  auto container = child(task, "ContainerSpec");
  if (!container || !container->has("Image"))
    return bad("TaskTemplate.ContainerSpec.Image", "is required");
  if (auto job = child(child(copy, "Mode"), "ReplicatedJob")) {
    if (job->has("MaxConcurrent") && job->getValue<int64_t>("MaxConcurrent") == 0) {
      return bad("Mode.ReplicatedJob.MaxConcurrent", "must be at least 1");
    }
  }
  if (auto ep = child(copy, "EndpointSpec")) {
    std::set<std::pair<std::string, int64_t>> published;
    if (auto ports = ep->getArray("Ports")) {
      for (std::size_t i = 0; i < ports->size(); ++i) {
        auto p = ports->getObject(static_cast<unsigned>(i));
        const auto published_port = intOr(p, "PublishedPort", 0);
        if (published_port == 0) continue;
        const auto key =
            std::make_pair(p->optValue<std::string>("Protocol", "tcp"), published_port);
        if (!published.insert(key).second) {
          return bad(
              "EndpointSpec.Ports[" + std::to_string(i) + "].PublishedPort",
              "publishes port " + std::to_string(published_port) + "/" + key.first + " twice");
        }
      }
    }
  }
  return Status::ok();
}

Status validateServiceName(const std::string& name) {
  if (name.empty()) return Status::invalidArgument("invalid service name: it must not be empty");
  if (name.size() > 63) {
    return Status::invalidArgument("invalid service name \"" + name + "\": at most 63 characters");
  }
  const auto ok = [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_' || c == '.';
  };
  if (!std::isalnum(static_cast<unsigned char>(name[0])) ||
      !std::all_of(name.begin(), name.end(), ok)) {
    return Status::invalidArgument("invalid service name \"" + name +
                                   "\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
  }
  return Status::ok();
}

Result<ServiceSpec> parseServiceSpec(const std::string& specJson) {
  Object::Ptr o;
  try {
    o = Poco::JSON::Parser().parse(specJson).extract<Object::Ptr>();
  } catch (const std::exception& e) {
    return Status::invalidArgument(std::string("service spec is not a JSON object: ") + e.what());
  }
  if (!o) return Status::invalidArgument("service spec is not a JSON object");
  ServiceSpec s;
  try {
    if (auto mode = child(o, "Mode")) {
      if (auto r = child(mode, "Replicated")) {
        s.replicas = static_cast<uint64_t>(intOr(r, "Replicas", 1));
      } else if (mode->has("Global")) {
        s.mode = ServiceMode::kGlobal;
      } else if (auto j = child(mode, "ReplicatedJob")) {
        s.mode = ServiceMode::kReplicatedJob;
        s.maxConcurrent = static_cast<uint64_t>(intOr(j, "MaxConcurrent", 1));
        s.totalCompletions = static_cast<uint64_t>(intOr(j, "TotalCompletions", s.maxConcurrent));
      } else if (mode->has("GlobalJob")) {
        s.mode = ServiceMode::kGlobalJob;
      }
    }
    auto task = child(o, "TaskTemplate");
    if (task) {
      std::ostringstream text;
      task->stringify(text);
      s.taskTemplate = text.str();
    } else {
      s.taskTemplate = "{}";
    }
    if (isJob(s.mode)) s.restart.condition = RestartPolicy::Condition::kOnFailure;
    if (auto r = child(task, "RestartPolicy")) {
      const auto c = r->optValue<std::string>("Condition", isJob(s.mode) ? "on-failure" : "any");
      s.restart.condition = c == "none"         ? RestartPolicy::Condition::kNone
                            : c == "on-failure" ? RestartPolicy::Condition::kOnFailure
                                                : RestartPolicy::Condition::kAny;
      s.restart.delayNs = intOr(r, "Delay", s.restart.delayNs);
      s.restart.maxAttempts = static_cast<uint64_t>(intOr(r, "MaxAttempts", 0));
      s.restart.windowNs = intOr(r, "Window", 0);
    }
    s.update = readUpdate(child(o, "UpdateConfig"));
    s.rollback = readUpdate(child(o, "RollbackConfig"));
    if (auto p = child(task, "Placement")) {
      if (auto a = p->getArray("Constraints")) {
        for (std::size_t i = 0; i < a->size(); ++i)
          s.constraints.push_back(a->getElement<std::string>(i));
      }
      if (auto a = p->getArray("Preferences")) {
        for (std::size_t i = 0; i < a->size(); ++i) {
          auto spread = child(a->getObject(static_cast<unsigned>(i)), "Spread");
          if (spread) s.preferences.push_back(spread->getValue<std::string>("SpreadDescriptor"));
        }
      }
      s.maxReplicas = static_cast<uint64_t>(intOr(p, "MaxReplicas", 0));
      if (auto a = p->getArray("Platforms")) {
        for (std::size_t i = 0; i < a->size(); ++i) {
          auto pl = a->getObject(static_cast<unsigned>(i));
          s.platforms.emplace_back(pl->optValue<std::string>("OS", ""),
                                   pl->optValue<std::string>("Architecture", ""));
        }
      }
      s.policy = p->optValue<std::string>("Policy", "");
      s.luaConstraint = p->optValue<std::string>("LuaConstraint", "");
    }
    if (auto r = child(child(task, "Resources"), "Reservations")) {
      s.reserveNanoCpus = intOr(r, "NanoCPUs", 0);
      s.reserveMemory = intOr(r, "MemoryBytes", 0);
    }
    if (task && task->getArray("Networks") && task->getArray("Networks")->size() > 0) {
      s.attachesNetworks = true;
    }
    if (auto c = child(task, "ContainerSpec"))
      s.stopGraceNs = intOr(c, "StopGracePeriod", s.stopGraceNs);
    std::string hostPorts;  // the task's HostPorts, JSON array members
    if (auto ep = child(o, "EndpointSpec")) {
      if (auto ports = ep->getArray("Ports")) {
        for (std::size_t i = 0; i < ports->size(); ++i) {
          auto p = ports->getObject(static_cast<unsigned>(i));
          if (p->optValue<std::string>("PublishMode", "ingress") != "host") {
            s.attachesNetworks = true;
            if (const auto published = intOr(p, "PublishedPort", 0); published > 0) {
              s.ingressPorts.emplace_back(p->optValue<std::string>("Protocol", "tcp"),
                                          static_cast<int>(published));
            }
            continue;
          }
          const auto published = intOr(p, "PublishedPort", 0);
          if (published > 0) {
            s.hostPorts.emplace_back(p->optValue<std::string>("Protocol", "tcp"),
                                     static_cast<int>(published));
            hostPorts += hostPorts.empty() ? "{\"Protocol\":" : ",{\"Protocol\":";
            appendJsonString(hostPorts, p->optValue<std::string>("Protocol", "tcp"));
            hostPorts += ",\"PublishedPort\":" + std::to_string(published) +
                         ",\"TargetPort\":" + std::to_string(intOr(p, "TargetPort", 0)) + "}";
          }
        }
      }
    }
    // Host-mode ports are a property of each task (its node maps them to it), so they go in
    // the task's spec, last: changing them replaces the tasks, as Swarm does.
    if (!hostPorts.empty()) {
      s.taskTemplate.pop_back();
      if (s.taskTemplate.size() > 1) s.taskTemplate += ',';
      s.taskTemplate += "\"HostPorts\":[" + hostPorts + "]}";
    }
  } catch (const std::exception& e) {
    return Status::invalidArgument(std::string("service spec cannot be read: ") + e.what());
  }
  return s;
}

Result<Constraint> parseConstraint(const std::string& text) {
  Constraint c;
  std::size_t at = text.find("==");
  std::size_t len = 2;
  if (auto ne = text.find("!="); ne != std::string::npos && (at == std::string::npos || ne < at)) {
    at = ne;
    c.equal = false;
  }
  if (at == std::string::npos) {
    return Status::invalidArgument("constraint \"" + text + "\" has no == or != operator");
  }
  c.key = trim(text.substr(0, at));
  c.value = trim(text.substr(at + len));
  static const char* const kFixed[] = {"node.id", "node.hostname", "node.role", "node.platform.os",
                                       "node.platform.arch"};
  const bool fixed = std::find(std::begin(kFixed), std::end(kFixed), c.key) != std::end(kFixed);
  const bool label = (c.key.rfind("node.labels.", 0) == 0 && c.key.size() > 12) ||
                     (c.key.rfind("engine.labels.", 0) == 0 && c.key.size() > 14);
  if (!fixed && !label) {
    return Status::invalidArgument("constraint \"" + text + "\" has an unknown key \"" + c.key +
                                   "\" (node.id, node.hostname, node.role, node.platform.os, "
                                   "node.platform.arch, node.labels.*, engine.labels.*)");
  }
  if (c.value.empty()) return Status::invalidArgument("constraint \"" + text + "\" has no value");
  return c;
}

NodeFacts nodeFacts(const store::Object& node) {
  NodeFacts f;
  f.id = node.id;
  f.role = std::string(store::nodeRoleName(node.role));
  try {
    Poco::JSON::Parser parser;
    if (auto spec = parser.parse(node.spec).extract<Object::Ptr>()) {
      // The spec's role is the desired one; placement follows it, as Swarm's does.
      if (spec->has("Role")) f.role = spec->getValue<std::string>("Role");
      if (auto labels = child(spec, "Labels")) {
        for (const auto& k : labels->getNames()) f.labels[k] = labels->getValue<std::string>(k);
      }
    }
    if (!node.status.empty()) {
      parser.reset();
      auto status = parser.parse(node.status).extract<Object::Ptr>();
      auto d = child(status, "Description");
      f.hostname = d ? d->optValue<std::string>("Hostname", "") : "";
      if (auto p = child(d, "Platform")) {
        f.os = p->optValue<std::string>("OS", "");
        f.arch = p->optValue<std::string>("Architecture", "");
      }
      if (auto e = child(child(d, "Engine"), "Labels")) {
        for (const auto& k : e->getNames()) f.engineLabels[k] = e->getValue<std::string>(k);
      }
    }
  } catch (const std::exception&) {
    // A node whose documents do not read has no facts to match beyond its id and role.
  }
  for (const auto& [k, v] : node.labels) f.labels.emplace(k, v);
  return f;
}

bool matches(const Constraint& c, const NodeFacts& n) {
  std::optional<std::string> actual;
  bool caseless = false;
  if (c.key == "node.id") {
    actual = n.id;
  } else if (c.key == "node.hostname") {
    actual = n.hostname;
    caseless = true;
  } else if (c.key == "node.role") {
    actual = n.role;
    caseless = true;
  } else if (c.key == "node.platform.os") {
    actual = n.os;
    caseless = true;
  } else if (c.key == "node.platform.arch") {
    actual = n.arch;
    caseless = true;
  } else if (c.key.rfind("node.labels.", 0) == 0) {
    auto it = n.labels.find(c.key.substr(12));
    if (it != n.labels.end()) actual = it->second;
  } else if (c.key.rfind("engine.labels.", 0) == 0) {
    auto it = n.engineLabels.find(c.key.substr(14));
    if (it != n.engineLabels.end()) actual = it->second;
  }
  if (!actual) return !c.equal;
  const bool same = caseless ? lower(*actual) == lower(c.value) : *actual == c.value;
  return same == c.equal;
}

bool matchesAll(const std::vector<std::string>& constraints, const NodeFacts& node) {
  for (const auto& text : constraints) {
    auto c = parseConstraint(text);
    if (!c || !matches(*c, node)) return false;
  }
  return true;
}

namespace {
constexpr std::string_view kAttachments = "\"NetworksAttachments\":";
}  // namespace

bool runsTemplate(const std::string& taskSpec, const std::string& taskTemplate) {
  if (taskSpec == taskTemplate) return true;
  // taskTemplate is "{...}"; the task's is "{..." + [","] + "\"NetworksAttachments\":[...]}".
  if (taskTemplate.size() < 2 || taskSpec.size() <= taskTemplate.size()) return false;
  const std::size_t body = taskTemplate.size() - 1;  // without the closing brace
  if (taskSpec.compare(0, body, taskTemplate, 0, body) != 0) return false;
  std::size_t at = body;
  if (body > 1) {
    if (taskSpec[at] != ',') return false;
    ++at;
  }
  return taskSpec.compare(at, kAttachments.size(), kAttachments) == 0;
}

std::string templateOf(const std::string& taskSpec) {
  const std::size_t at = taskSpec.rfind(kAttachments);
  if (at == std::string::npos || at == 0) return taskSpec;
  // withAttachments leaves "{" or "{...," before the member; the template ends with '}'.
  if (taskSpec[at - 1] == ',') return taskSpec.substr(0, at - 1) + "}";
  if (taskSpec[at - 1] == '{') return taskSpec.substr(0, at) + "}";
  return taskSpec;
}

std::string withAttachments(const std::string& taskSpec, const std::string& attachmentsJson) {
  std::string out = taskSpec;
  while (!out.empty() && out.back() != '}') out.pop_back();
  if (out.empty()) out = "{}";
  out.pop_back();
  if (out.size() > 1) out += ',';
  out += kAttachments;
  out += attachmentsJson;
  out += '}';
  return out;
}

store::TaskState observedState(const store::Object& task) {
  // Task statuses are written by the manager with "State" first; a scan is far cheaper than a
  // parse, and the orchestrator reads every task of a service on each pass.
  static constexpr std::string_view kKey = "\"State\":\"";
  const auto at = task.status.find(kKey);
  if (at == std::string::npos) return store::TaskState::kNew;
  const auto start = at + kKey.size();
  const auto end = task.status.find('"', start);
  if (end == std::string::npos) return store::TaskState::kNew;
  auto s = store::parseTaskState(std::string_view(task.status).substr(start, end - start));
  return s ? *s : store::TaskState::kNew;
}

bool isTerminal(store::TaskState s) { return s >= store::TaskState::kComplete; }
bool failedState(store::TaskState s) {
  return s == store::TaskState::kFailed || s == store::TaskState::kRejected ||
         s == store::TaskState::kOrphaned;
}

std::string taskStatusJson(const TaskStatus& t) {
  Object o(Poco::JSON_PRESERVE_KEY_ORDER);
  o.set("State", std::string(store::taskStateName(t.state)));
  o.set("Timestamp", t.timestampNs);
  o.set("Message", t.message);
  if (!t.err.empty()) o.set("Err", t.err);
  if (t.exitCode >= 0 || t.pid > 0) {
    Object c(Poco::JSON_PRESERVE_KEY_ORDER);
    if (t.pid > 0) c.set("PID", t.pid);
    if (t.exitCode >= 0) c.set("ExitCode", t.exitCode);
    o.set("ContainerStatus", c);
  }
  std::ostringstream out;
  o.stringify(out);
  return out.str();
}

Result<TaskStatus> parseTaskStatus(const std::string& json) {
  TaskStatus t;
  if (json.empty()) return t;
  try {
    auto o = Poco::JSON::Parser().parse(json).extract<Object::Ptr>();
    if (!o) return Status::invalidArgument("task status is not a JSON object");
    auto state = store::parseTaskState(o->optValue<std::string>("State", "new"));
    if (!state) return state.status();
    t.state = *state;
    t.timestampNs = intOr(o, "Timestamp", 0);
    t.message = o->optValue<std::string>("Message", "");
    t.err = o->optValue<std::string>("Err", "");
    if (auto c = child(o, "ContainerStatus")) {
      t.exitCode = intOr(c, "ExitCode", -1);
      t.pid = intOr(c, "PID", 0);
    }
  } catch (const std::exception& e) {
    return Status::invalidArgument(std::string("task status cannot be read: ") + e.what());
  }
  return t;
}

}  // namespace shoal::manager
