// scheduler-spread: what the plugin keeps of a node snapshot ("shoal.nodes/v1", scheduler.h).
//
// A Snapshot is parsed once per scheduling pass and then mutated by assign(): every placement
// adds to the node's reservations, task counts and host ports, so the groups placed later in
// the same pass see the earlier placements. Nothing is ever freed within a pass (but an assign()
// that fails takes its own placements back).
// THREAD: the host serialises calls into the instance (plugin.h); nothing here locks.
#pragma once

#include <shoal/plugin.h>
#include <shoal/plugin.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace shoal::plugins::spread {

constexpr char kName[] = "scheduler-spread";

// Nodes where a service failed at least this often rank after every other node for it
// (SwarmKit's maxFailures).
constexpr int64_t kMaxFailures = 5;

// Refuses the caller's input: SHOAL_EINVAL with "scheduler-spread: <what>".
[[noreturn]] inline void invalid(const std::string& what) {
  throw sdk::Error(SHOAL_EINVAL, std::string(kName) + ": " + what);
}

// A host-mode published port as one integer: protocol (0 tcp, 1 udp, 2 sctp) << 16 | port.
using PortKey = uint32_t;

// Label name -> value, sorted by name (binary-searched by constraints and preferences).
using Labels = std::vector<std::pair<std::string, std::string>>;

// The label's value, or nullptr when the node has no such label.
inline const std::string* findLabel(const Labels& labels, std::string_view name) {
  auto it = std::lower_bound(
      labels.begin(), labels.end(), name,
      [](const std::pair<std::string, std::string>& l, std::string_view n) { return l.first < n; });
  return it != labels.end() && it->first == name ? &it->second : nullptr;
}

struct Node {
  std::string id;
  std::string hostname;
  std::string role;          // "worker" | "manager" | "" (absent)
  std::string availability;  // "active" | "pause" | "drain" | ""
  std::string state;         // "ready" | "down" | "unknown" | "disconnected" | ""
  std::string os;
  std::string arch;  // as reported; the platform filter normalises it, constraints do not
  Labels labels;
  Labels engineLabels;
  int64_t nanoCpus = 0;  // resources
  int64_t memoryBytes = 0;
  // Mutated by placements:
  int64_t reservedNanoCpus = 0;
  int64_t reservedMemoryBytes = 0;
  int64_t tasks = 0;               // active tasks of every service
  std::vector<PortKey> hostPorts;  // sorted, unique

  bool available() const { return state == "ready" && availability == "active"; }
  bool portInUse(PortKey p) const {
    return std::binary_search(hostPorts.begin(), hostPorts.end(), p);
  }
  void addPort(PortKey p) {
    auto it = std::lower_bound(hostPorts.begin(), hostPorts.end(), p);
    if (it == hostPorts.end() || *it != p) hostPorts.insert(it, p);
  }
  void removePort(PortKey p) {
    auto it = std::lower_bound(hostPorts.begin(), hostPorts.end(), p);
    if (it != hostPorts.end() && *it == p) hostPorts.erase(it);
  }
};

// One service's per-node counters, dense (index = node index), shared by every group of the
// service that is opened on the snapshot.
struct ServiceCounts {
  std::vector<int64_t> tasks;     // service_tasks[service] per node; mutated by placements
  std::vector<int64_t> failures;  // failures[service] per node
};

struct Snapshot {
  std::vector<Node> nodes;

  // What the document says per service, sparse: (node index, count). Turned into a dense
  // ServiceCounts the first time a group of the service is opened, so a snapshot that names
  // thousands of services costs memory only for those that are scheduled.
  struct Service {
    std::vector<std::pair<uint32_t, int64_t>> tasks;
    std::vector<std::pair<uint32_t, int64_t>> failures;
    std::unique_ptr<ServiceCounts> dense;
  };
  std::unordered_map<std::string, Service> services;

  uint32_t openGroups = 0;  // groups opened on this snapshot and not closed yet
  bool closed = false;      // snapshot_close came while groups were open

  // For Lua placement policies (policy_set.h): the snapshot_open text, kept for policy_bind
  // (the kernel parses it once per pass and reuses that for byte-identical text); the nodes
  // whose usage placements changed since the text was parsed, each once, which a policy bound
  // to the text must be told about (policy_update); and a version that every change of usage
  // (a placement, or one taken back) bumps. All empty when the host runs no policies.
  std::string json;
  std::vector<uint32_t> touched;   // capacity for every node, so touch() never allocates
  std::vector<uint8_t> isTouched;  // per node
  uint64_t usageVersion = 0;

  void trackUsage(std::string_view text) {
    json.assign(text);
    isTouched.assign(nodes.size(), 0);
    touched.reserve(nodes.size());
  }
  void touch(uint32_t node) noexcept {
    ++usageVersion;
    if (!isTouched.empty() && isTouched[node] == 0) {
      isTouched[node] = 1;
      touched.push_back(node);
    }
  }

  ServiceCounts& countsFor(const std::string& serviceId) {
    Service& s = services[serviceId];
    if (!s.dense) {
      s.dense = std::make_unique<ServiceCounts>();
      s.dense->tasks.assign(nodes.size(), 0);
      s.dense->failures.assign(nodes.size(), 0);
      for (const auto& [node, count] : s.tasks) s.dense->tasks[node] += count;
      for (const auto& [node, count] : s.failures) s.dense->failures[node] += count;
      s.tasks = {};
      s.failures = {};
    }
    return *s.dense;
  }
};

}  // namespace shoal::plugins::spread
