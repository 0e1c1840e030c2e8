#include "documents.h"

#include <algorithm>
#include <array>
#include <utility>

#include "json_reader.h"

namespace shoal::plugins::spread {
namespace {

using Kind = JsonReader::Kind;

constexpr char kNodesSchema[] = "shoal.nodes/v1";
constexpr char kGroupSchema[] = "shoal.task-group/v1";

// Where a member sits, for messages; formatted only when something is wrong, so the happy
// path builds no path strings: "snapshot: nodes[3].resources.memory_bytes".
class Where {
 public:
  explicit Where(const char* doc) : doc_(doc) {}
  // The member `name` below this one (a string literal).
  Where with(const char* name) const {
    Where w = *this;
    if (w.n_ < w.parts_.size()) w.parts_[w.n_++] = Part{name, -1, {}, false};
    return w;
  }
  // Element `index` of this array.
  Where at(size_t index) const {
    Where w = *this;
    if (w.n_ > 0) w.parts_[w.n_ - 1].index = static_cast<int64_t>(index);
    return w;
  }
  // Key `key` of this object (a label name, a service id); must outlive the Where's use.
  Where withKey(std::string_view key) const {
    Where w = *this;
    if (w.n_ > 0) {
      w.parts_[w.n_ - 1].key = key;
      w.parts_[w.n_ - 1].hasKey = true;
    }
    return w;
  }
  std::string str() const {
    std::string s = std::string(doc_) + ":";
    for (size_t i = 0; i < n_; ++i) {
      s += i == 0 ? " " : ".";
      s += parts_[i].name;
      if (parts_[i].index >= 0) s += "[" + std::to_string(parts_[i].index) + "]";
      if (parts_[i].hasKey) s += "[\"" + std::string(parts_[i].key) + "\"]";
    }
    return s;
  }

 private:
  struct Part {
    const char* name = nullptr;
    int64_t index = -1;
    std::string_view key;
    bool hasKey = false;
  };
  const char* doc_;
  std::array<Part, 5> parts_{};
  size_t n_ = 0;
};

[[noreturn]] void wrong(const Where& where, const char* what) { invalid(where.str() + " " + what); }

// Null stands for "absent": the member keeps its default.
bool readNull(JsonReader& r) {
  if (r.peek() != Kind::kNull) return false;
  r.readNull();
  return true;
}

std::string_view readString(JsonReader& r, const Where& w) {
  if (r.peek() != Kind::kString) wrong(w, "must be a string");
  return r.readString();
}

int64_t readCount(JsonReader& r, const Where& w) {
  if (r.peek() != Kind::kNumber) wrong(w, "must be a non-negative integer");
  const JsonReader::Number n = r.readNumber();
  if (!n.integer || (n.negative && (n.magnitude != 0 || n.overflow))) {
    wrong(w, "must be a non-negative integer");
  }
  if (n.overflow || n.magnitude > static_cast<uint64_t>(INT64_MAX)) wrong(w, "is out of range");
  return static_cast<int64_t>(n.magnitude);
}

// Calls onMember(name) for each member of the object that comes next; onMember reads the value.
template <class F>
void readObject(JsonReader& r, const Where& w, F&& onMember) {
  if (r.peek() != Kind::kObject) wrong(w, "must be an object");
  r.beginObject();
  std::string_view name;
  while (r.nextMember(&name)) onMember(name);
}

// Calls onElement(index) for each element of the array that comes next.
template <class F>
void readArray(JsonReader& r, const Where& w, F&& onElement) {
  if (r.peek() != Kind::kArray) wrong(w, "must be an array");
  r.beginArray();
  size_t k = 0;
  while (r.nextElement()) onElement(k++);
}

// Refuses a second occurrence of a member the reader knows. `bit` is the member's own.
void once(uint32_t* seen, uint32_t bit, const Where& w) {
  if ((*seen & bit) != 0) wrong(w, "appears twice");
  *seen |= bit;
}

std::string optionalString(JsonReader& r, const Where& w) {
  return readNull(r) ? std::string() : std::string(readString(r, w));
}

int64_t optionalCount(JsonReader& r, const Where& w) { return readNull(r) ? 0 : readCount(r, w); }

// `value` when it is one of `allowed`.
std::string readEnum(JsonReader& r, const Where& w, std::initializer_list<std::string_view> allowed,
                     const char* what) {
  const std::string_view s = readString(r, w);
  for (std::string_view a : allowed) {
    if (s == a) return std::string(s);
  }
  wrong(w, what);
}

Labels readLabels(JsonReader& r, const Where& w) {
  Labels labels;
  readObject(r, w, [&](std::string_view name) {
    if (r.peek() != Kind::kString) wrong(w.withKey(name), "must be a string");
    std::string key(name);
    labels.emplace_back(std::move(key), std::string(r.readString()));
  });
  // Kernels write labels sorted; sort anyway, and refuse a name given twice.
  if (!std::is_sorted(labels.begin(), labels.end())) std::sort(labels.begin(), labels.end());
  for (size_t i = 1; i < labels.size(); ++i) {
    if (labels[i].first == labels[i - 1].first) wrong(w.withKey(labels[i].first), "appears twice");
  }
  return labels;
}

void readResources(JsonReader& r, const Where& w, int64_t* nanoCpus, int64_t* memoryBytes) {
  uint32_t seen = 0;
  readObject(r, w, [&](std::string_view name) {
    if (name == "nano_cpus") {
      once(&seen, 1, w.with("nano_cpus"));
      *nanoCpus = optionalCount(r, w.with("nano_cpus"));
    } else if (name == "memory_bytes") {
      once(&seen, 2, w.with("memory_bytes"));
      *memoryBytes = optionalCount(r, w.with("memory_bytes"));
    } else {
      r.skip();
    }
  });
}

// "tcp" -> 0, "udp" -> 1, "sctp" -> 2, else -1.
int protocolIndex(std::string_view p) {
  if (p == "tcp") return 0;
  if (p == "udp") return 1;
  if (p == "sctp") return 2;
  return -1;
}

PortKey portKey(int protocol, int64_t port) {
  return static_cast<PortKey>(protocol) << 16 | static_cast<PortKey>(port);
}

// "tcp/80" -> its key.
PortKey parseHostPort(std::string_view text, const Where& w) {
  const size_t slash = text.find('/');
  if (slash != std::string_view::npos) {
    const int protocol = protocolIndex(text.substr(0, slash));
    const size_t digits = text.size() - slash - 1;
    int64_t port = 0;
    bool ok = protocol >= 0 && digits >= 1 && digits <= 5;
    for (size_t i = slash + 1; ok && i < text.size(); ++i) {
      ok = text[i] >= '0' && text[i] <= '9';
      port = port * 10 + (text[i] - '0');
    }
    if (ok && port >= 1 && port <= 65535) return portKey(protocol, port);
  }
  invalid(w.str() + " is \"" + std::string(text) +
          "\", expected \"<tcp|udp|sctp>/<1-65535>\" (\"tcp/80\")");
}

// {"<service id>": int} into the snapshot's sparse per-service lists.
void readServiceCounts(JsonReader& r, const Where& w, Snapshot& snap, uint32_t node,
                       bool failures) {
  readObject(r, w, [&](std::string_view service) {
    std::string id(service);  // the name's view does not survive reading the count
    const int64_t n = readCount(r, w.withKey(id));
    Snapshot::Service& s = snap.services[id];
    auto& list = failures ? s.failures : s.tasks;
    // Entries of one node are pushed together, so a repeat is the list's last entry.
    if (!list.empty() && list.back().first == node) wrong(w.withKey(id), "appears twice");
    list.emplace_back(node, n);
  });
}

void readNode(JsonReader& r, const Where& at, uint32_t i, Snapshot& snap) {
  Node& n = snap.nodes[i];
  uint32_t seen = 0;
  // One pass over the members; unknown members are skipped (newer kernels may add some).
  readObject(r, at, [&](std::string_view key) {
    if (key == "id") {
      once(&seen, 1 << 0, at.with("id"));
      n.id = optionalString(r, at.with("id"));
    } else if (key == "hostname") {
      once(&seen, 1 << 1, at.with("hostname"));
      n.hostname = optionalString(r, at.with("hostname"));
    } else if (key == "role") {
      once(&seen, 1 << 2, at.with("role"));
      if (!readNull(r)) {
        n.role = readEnum(r, at.with("role"), {"worker", "manager"},
                          "must be \"worker\" or \"manager\"");
      }
    } else if (key == "availability") {
      once(&seen, 1 << 3, at.with("availability"));
      if (!readNull(r)) {
        n.availability = readEnum(r, at.with("availability"), {"active", "pause", "drain"},
                                  "must be \"active\", \"pause\" or \"drain\"");
      }
    } else if (key == "state") {
      once(&seen, 1 << 4, at.with("state"));
      if (!readNull(r)) {
        n.state = readEnum(r, at.with("state"), {"ready", "down", "unknown", "disconnected"},
                           "must be \"ready\", \"down\", \"unknown\" or \"disconnected\"");
      }
    } else if (key == "platform") {
      once(&seen, 1 << 5, at.with("platform"));
      if (readNull(r)) return;
      const Where w = at.with("platform");
      uint32_t sub = 0;
      readObject(r, w, [&](std::string_view name) {
        if (name == "os") {
          once(&sub, 1, w.with("os"));
          n.os = optionalString(r, w.with("os"));
        } else if (name == "arch") {
          once(&sub, 2, w.with("arch"));
          n.arch = optionalString(r, w.with("arch"));
        } else {
          r.skip();
        }
      });
    } else if (key == "labels") {
      once(&seen, 1 << 6, at.with("labels"));
      if (!readNull(r)) n.labels = readLabels(r, at.with("labels"));
    } else if (key == "engine_labels") {
      once(&seen, 1 << 7, at.with("engine_labels"));
      if (!readNull(r)) n.engineLabels = readLabels(r, at.with("engine_labels"));
    } else if (key == "resources") {
      once(&seen, 1 << 8, at.with("resources"));
      if (!readNull(r)) readResources(r, at.with("resources"), &n.nanoCpus, &n.memoryBytes);
    } else if (key == "reserved") {
      once(&seen, 1 << 9, at.with("reserved"));
      if (!readNull(r)) {
        readResources(r, at.with("reserved"), &n.reservedNanoCpus, &n.reservedMemoryBytes);
      }
    } else if (key == "tasks") {
      once(&seen, 1 << 10, at.with("tasks"));
      n.tasks = optionalCount(r, at.with("tasks"));
    } else if (key == "service_tasks") {
      once(&seen, 1 << 11, at.with("service_tasks"));
      if (!readNull(r)) readServiceCounts(r, at.with("service_tasks"), snap, i, false);
    } else if (key == "failures") {
      once(&seen, 1 << 12, at.with("failures"));
      if (!readNull(r)) readServiceCounts(r, at.with("failures"), snap, i, true);
    } else if (key == "host_ports") {
      once(&seen, 1 << 13, at.with("host_ports"));
      if (readNull(r)) return;
      const Where w = at.with("host_ports");
      readArray(r, w, [&](size_t k) {
        n.hostPorts.push_back(parseHostPort(readString(r, w.at(k)), w.at(k)));
      });
      std::sort(n.hostPorts.begin(), n.hostPorts.end());
      n.hostPorts.erase(std::unique(n.hostPorts.begin(), n.hostPorts.end()), n.hostPorts.end());
    } else {
      r.skip();
    }
  });
  if (n.id.empty()) wrong(at.with("id"), (seen & 1) != 0 ? "must not be empty" : "is missing");
}

std::vector<std::string> readStrings(JsonReader& r, const Where& w) {
  std::vector<std::string> out;
  readArray(r, w, [&](size_t k) { out.emplace_back(readString(r, w.at(k))); });
  return out;
}

// The schema member: refused at once when it names another schema.
void readSchema(JsonReader& r, const char* doc, const char* schema) {
  if (r.peek() != Kind::kString || r.readString() != schema) {
    invalid(std::string(doc) + ": \"schema\" must be \"" + schema + "\"");
  }
}

// The placement object. Constraints and preferences are only parsed once the whole object is
// read, so on a host without Lua policies a Lua policy anywhere in it is reported as such
// (SHOAL_ENOTSUP) first.
void readPlacement(JsonReader& r, const Where& at, GroupSpec& g, bool luaAvailable) {
  bool lua = false;
  std::vector<std::string> constraints;
  std::vector<std::string> preferences;
  uint32_t seen = 0;
  readObject(r, at, [&](std::string_view key) {
    if (key == "policy") {
      once(&seen, 16, at.with("policy"));
      if (readNull(r)) return;
      lua = true;
      if (!luaAvailable) {
        r.skip();
        return;
      }
      g.policy = std::string(readString(r, at.with("policy")));
      if (g.policy.empty()) wrong(at.with("policy"), "must not be empty");
    } else if (key == "lua_constraints") {
      // One expression (what the kernel sends), or an array of them that must all hold.
      once(&seen, 32, at.with("lua_constraints"));
      if (readNull(r)) return;
      lua = true;
      if (!luaAvailable) {
        r.skip();
        return;
      }
      const Where w = at.with("lua_constraints");
      if (r.peek() == Kind::kString) {
        g.luaConstraints.emplace_back(r.readString());
      } else if (r.peek() == Kind::kArray) {
        g.luaConstraints = readStrings(r, w);
      } else {
        wrong(w, "must be a string or an array of strings");
      }
      for (const std::string& e : g.luaConstraints) {
        if (e.empty()) wrong(w, "must not hold an empty expression");
      }
    } else if (key == "constraints") {
      once(&seen, 1, at.with("constraints"));
      if (!readNull(r)) constraints = readStrings(r, at.with("constraints"));
    } else if (key == "preferences") {
      once(&seen, 2, at.with("preferences"));
      if (!readNull(r)) preferences = readStrings(r, at.with("preferences"));
    } else if (key == "max_replicas") {
      once(&seen, 4, at.with("max_replicas"));
      g.maxReplicas = optionalCount(r, at.with("max_replicas"));
    } else if (key == "platforms") {
      once(&seen, 8, at.with("platforms"));
      if (readNull(r)) return;
      const Where pw = at.with("platforms");
      readArray(r, pw, [&](size_t k) {
        const Where ew = pw.at(k);
        Platform platform;
        uint32_t sub = 0;
        readObject(r, ew, [&](std::string_view name) {
          if (name == "os") {
            once(&sub, 1, ew.with("os"));
            platform.os = optionalString(r, ew.with("os"));
          } else if (name == "arch") {
            once(&sub, 2, ew.with("arch"));
            platform.arch = normaliseArch(optionalString(r, ew.with("arch")));
          } else {
            r.skip();
          }
        });
        g.platforms.push_back(std::move(platform));
      });
    } else {
      r.skip();
    }
  });
  if (lua && !luaAvailable) {
    throw sdk::Error(SHOAL_ENOTSUP,
                     std::string(kName) +
                         ": this group's placement has a Lua placement policy (\"policy\" or "
                         "\"lua_constraints\"), but this shoald cannot run them: its plugin host "
                         "table has no policy_* slots (they came with plugin ABI 1.1)");
  }
  for (const std::string& text : constraints) g.constraints.push_back(parseConstraint(text));
  for (const std::string& text : preferences) g.preferences.push_back(parsePreference(text));
}

void readPorts(JsonReader& r, const Where& at, GroupSpec& g) {
  readArray(r, at, [&](size_t k) {
    const Where ew = at.at(k);
    int protocol = 0;  // tcp
    int64_t port = -1;
    uint32_t seen = 0;
    readObject(r, ew, [&](std::string_view name) {
      if (name == "protocol") {
        once(&seen, 1, ew.with("protocol"));
        if (readNull(r)) return;
        protocol = protocolIndex(readString(r, ew.with("protocol")));
        if (protocol < 0) wrong(ew.with("protocol"), "must be \"tcp\", \"udp\" or \"sctp\"");
      } else if (name == "published") {
        once(&seen, 2, ew.with("published"));
        if (readNull(r)) return;
        port = readCount(r, ew.with("published"));
        if (port > 65535) wrong(ew.with("published"), "must be a port number (0 to 65535)");
      } else {
        r.skip();
      }
    });
    if (port < 0) wrong(ew.with("published"), "is missing");
    // Published port 0 asks for a dynamic port: nothing to check before placement.
    if (port != 0) g.ports.push_back(portKey(protocol, port));
  });
  std::sort(g.ports.begin(), g.ports.end());
  g.ports.erase(std::unique(g.ports.begin(), g.ports.end()), g.ports.end());
}

void readSpec(JsonReader& r, const Where& at, GroupSpec& g, bool luaAvailable) {
  uint32_t seen = 0;
  readObject(r, at, [&](std::string_view key) {
    if (key == "placement") {
      once(&seen, 1, at.with("placement"));
      if (!readNull(r)) readPlacement(r, at.with("placement"), g, luaAvailable);
    } else if (key == "resources") {
      once(&seen, 2, at.with("resources"));
      if (!readNull(r)) readResources(r, at.with("resources"), &g.nanoCpus, &g.memoryBytes);
    } else if (key == "ports") {
      once(&seen, 4, at.with("ports"));
      if (!readNull(r)) readPorts(r, at.with("ports"), g);
    } else {
      r.skip();
    }
  });
}

// The document must be an object. Anything else is read to the end first, so that text which
// is not JSON at all is reported as such.
void expectDocumentObject(JsonReader& r, const char* doc) {
  if (r.peek() == Kind::kObject) return;
  r.skip();
  r.finish();
  invalid(std::string(doc) + " must be a JSON object");
}

}  // namespace

std::string normaliseArch(std::string arch) {
  if (arch == "x86_64") return "amd64";
  if (arch == "aarch64") return "arm64";
  return arch;
}

std::unique_ptr<Snapshot> parseSnapshot(std::string_view json) {
  JsonReader r(json, "snapshot");
  auto snap = std::make_unique<Snapshot>();
  expectDocumentObject(r, "snapshot");
  const Where root("snapshot");
  uint32_t seen = 0;
  readObject(r, root, [&](std::string_view key) {
    if (key == "schema") {
      once(&seen, 1, root.with("schema"));
      readSchema(r, "snapshot", kNodesSchema);
    } else if (key == "nodes") {
      once(&seen, 2, root.with("nodes"));
      const Where at = root.with("nodes");
      readArray(r, at, [&](size_t i) {
        // Node indexes cross the ABI as int32 (assign's out_node).
        if (i >= static_cast<size_t>(INT32_MAX)) invalid("snapshot: too many nodes");
        snap->nodes.emplace_back();
        readNode(r, at.at(i), static_cast<uint32_t>(i), *snap);
      });
    } else {
      r.skip();
    }
  });
  r.finish();
  if ((seen & 1) == 0)
    invalid(std::string("snapshot: \"schema\" must be \"") + kNodesSchema + "\"");
  if ((seen & 2) == 0) invalid("snapshot: nodes is missing");
  return snap;
}

GroupSpec parseGroup(std::string_view json, bool luaAvailable) {
  JsonReader r(json, "group");
  GroupSpec g;
  expectDocumentObject(r, "group");
  const Where root("group");
  uint32_t seen = 0;
  readObject(r, root, [&](std::string_view key) {
    if (key == "schema") {
      once(&seen, 1, root.with("schema"));
      readSchema(r, "group", kGroupSchema);
    } else if (key == "service_id") {
      once(&seen, 2, root.with("service_id"));
      g.serviceId = optionalString(r, root.with("service_id"));
    } else if (key == "service_name") {
      once(&seen, 4, root.with("service_name"));
      g.serviceName = optionalString(r, root.with("service_name"));
    } else if (key == "spec") {
      once(&seen, 8, root.with("spec"));
      if (!readNull(r)) readSpec(r, root.with("spec"), g, luaAvailable);
    } else if (key == "tasks") {
      once(&seen, 16, root.with("tasks"));
      if (!readNull(r)) g.tasks = readStrings(r, root.with("tasks"));
    } else {
      r.skip();
    }
  });
  r.finish();
  if ((seen & 1) == 0) invalid(std::string("group: \"schema\" must be \"") + kGroupSchema + "\"");
  if (g.serviceId.empty()) {
    wrong(root.with("service_id"), (seen & 2) != 0 ? "must not be empty" : "is missing");
  }
  return g;
}

}  // namespace shoal::plugins::spread
