#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernel/common/status.h"

namespace shoal::policy {

// One node of a "shoal.nodes/v1" document (sdk/include/shoal/scheduler.h), as policies see it.
struct SnapshotNode {
  std::string id;
  std::string hostname;
  std::string role;
  std::string availability;
  std::string state;
  std::string os;
  std::string arch;
  std::vector<std::pair<std::string, std::string>> labels;
  std::vector<std::pair<std::string, std::string>> engineLabels;
  int64_t nanoCpus = 0;  // resources
  int64_t memoryBytes = 0;
  int64_t reservedNanoCpus = 0;  // reserved by the tasks already on the node
  int64_t reservedMemoryBytes = 0;
  int64_t tasks = 0;  // active tasks, all services
};

// A parsed node snapshot ("shoal.nodes/v1"), immutable once parsed, so several policies can
// share one parse per scheduling pass. Members of the document a policy does not see
// (host_ports) are checked for shape only by the scheduler plugin, not here.
// THREAD: immutable; safe to share between threads.
class NodeSnapshot {
 public:
  // (node index, count) pairs, in node order.
  using Sparse = std::vector<std::pair<uint32_t, int64_t>>;

  // Parses and checks the document; errors name the member ("nodes document:
  // nodes[3].resources.memory_bytes must be a non-negative integer").
  static Result<std::shared_ptr<const NodeSnapshot>> parse(std::string_view json);

  const std::vector<SnapshotNode>& nodes() const { return nodes_; }
  uint32_t size() const { return static_cast<uint32_t>(nodes_.size()); }
  // The nodes that have tasks (recent failures) of the service; empty when none.
  const Sparse& serviceTasks(const std::string& serviceId) const;
  const Sparse& failures(const std::string& serviceId) const;

 private:
  std::vector<SnapshotNode> nodes_;
  std::unordered_map<std::string, Sparse> serviceTasks_;
  std::unordered_map<std::string, Sparse> failures_;
};

}  // namespace shoal::policy
