#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kernel/common/status.h"
#include "kernel/policy/limits.h"
#include "kernel/policy/node_snapshot.h"
#include "kernel/policy/task_group.h"

namespace shoal::policy {

class Sandbox;

// What went wrong in a policy's last failed call, beside the Status message.
struct Diagnostic {
  int line = 0;         // the policy's line, 0 when unknown
  std::string problem;  // the message without the policy's name and line
};

// The current resource use of some nodes of the bound snapshot, as parallel arrays of `count`
// entries (placements made since the snapshot was taken). A null array leaves that value as
// it is. Values are absolute, not deltas.
struct UsageUpdate {
  const uint32_t* nodes = nullptr;  // node indexes (positions in the snapshot's "nodes")
  uint32_t count = 0;
  const int64_t* reservedNanoCpus = nullptr;     // reserved on the node, all tasks
  const int64_t* reservedMemoryBytes = nullptr;  // reserved on the node, all tasks
  const int64_t* tasks = nullptr;                // active tasks on the node, all services
  const int64_t* serviceTasks = nullptr;         // active tasks of the group's service
};

// A compiled Lua placement policy (a policy object's file) or Lua constraint expression, with
// its own sandboxed Lua state (kernel/policy/README.md).
//
// Use per scheduling pass: bindNodes() once, then per task group setGroup(), and filter() /
// score() as often as needed (each is one batch over every node, and only a Lua function call
// per node: the node tables are built by bindNodes() and reused). updateUsage() tells the
// policy about placements made since the snapshot was taken.
//
// ERRORS: every call returns a Status naming the policy, the line and the problem
// (`policy "spin" line 3: instruction limit exceeded (10000000 instructions)`): invalid
// argument for a bad declaration, a bad document or a Lua error; timeout for the instruction
// budget and the deadline; resource exhausted for the memory budget. A failed call changes
// none of its outputs, and the policy stays usable: after running out of memory its Lua state
// is rebuilt (from the source, snapshot and group it had) at the next call.
// THREAD: not thread-safe; one caller at a time.
class Policy {
 public:
  enum class Kind { kNamed, kExpression };

  // Compiles a policy file: runs its top level once (under the limits) and checks the
  // declaration it must return, `return shoal.policy{ name=..., description=..., filter=...,
  // score=..., prepare=... }`. `name` is the policy object's name, which is authoritative: a
  // declared name may be omitted or differ (a file may be installed under another name).
  static Result<std::unique_ptr<Policy>> compile(std::string name, std::string_view source,
                                                 const Limits& limits = {});
  // Compiles a Lua constraint expression (`node.labels.zone ~= "east" and node.memory_free >
  // 2e9`): a filter that keeps the nodes for which it is truthy, with `node` and `task` in
  // scope.
  static Result<std::unique_ptr<Policy>> expression(std::string_view text,
                                                    const Limits& limits = {});
  // For `shoal policy create` and service create: compiles and checks the declaration without
  // evaluating it. The error names the line: `policy "x" line 4: shoal.policy: unknown field
  // 'fitler' (known fields: ...)`.
  static Status validate(std::string_view name, std::string_view source, const Limits& limits = {});
  static Status validateExpression(std::string_view text, const Limits& limits = {});

  ~Policy();
  Policy(const Policy&) = delete;
  Policy& operator=(const Policy&) = delete;

  Kind kind() const { return kind_; }
  // The object's name, or the expression's text.
  const std::string& name() const { return name_; }
  // How messages name it: `policy "binpack"`, or "lua constraint `node.role == "worker"`".
  const std::string& label() const { return label_; }
  const std::string& description() const { return description_; }
  const std::string& declaredName() const { return declaredName_; }
  bool hasFilter() const { return hasFilter_; }
  bool hasScore() const { return hasScore_; }

  // Binds the pass's node snapshot: builds the read-only node tables. Binding the snapshot
  // that is bound already (the same object) only resets the usage updates.
  Status bindNodes(std::string_view nodesJson);
  Status bindNodes(std::shared_ptr<const NodeSnapshot> nodes);
  // Sets the task group the next evaluations are for: builds the task table and sets every
  // node's service_tasks and failures to the group's service (usage updates of
  // service_tasks end here).
  Status setGroup(std::string_view groupJson);
  Status setGroup(std::shared_ptr<const TaskGroup> group);
  // Placements made since the snapshot was taken; they last until the next bindNodes().
  Status updateUsage(const UsageUpdate& update);
  uint32_t nodeCount() const;
  // The snapshot bound last (null before the first bindNodes).
  const std::shared_ptr<const NodeSnapshot>& boundNodes() const { return nodes_; }

  // Evaluates the filter on every node with fit[i] != 0; sets fit[i] = 0 for those it
  // rejects. `n` must be the snapshot's node count. *reasons (when given) is replaced by the
  // count of rejections per reason (the filter's second result; "" when it gave none). A
  // policy without a filter keeps every node.
  Status filter(uint8_t* fit, uint32_t n, std::map<std::string, int>* reasons = nullptr);
  // Scores every node with fit[i] != 0: out[i] = the score function's number x 1000, rounded
  // and clamped to +-1e18; out[i] = 0 for the others, and for every node when the policy has
  // no score function.
  Status score(const uint8_t* fit, int64_t* out, uint32_t n);
  // The last filter's rejections, Swarm style: `3 nodes rejected by policy
  // "keep-off-maintenance": node is in maintenance; 1 node rejected by ...`. Empty when it
  // rejected none.
  std::string explain() const;
  const std::map<std::string, int>& lastReasons() const { return lastReasons_; }

  // Bytes the Lua state holds (within Limits::memoryBytes).
  std::size_t memoryUsed() const;
  const Diagnostic& lastError() const { return lastError_; }

 private:
  Policy(Kind kind, std::string name, std::string label, std::string chunk, const Limits& limits);
  Status load();
  Status recover();
  Status failed(Status s);
  Status buildNodeTables();
  Status buildTaskTable();
  Status apply(const uint32_t* index, uint32_t count);
  void resetDynamic(uint32_t i);
  void loadGroupCounts();
  Status requireBound(uint32_t n) const;

  Kind kind_;
  std::string name_;
  std::string label_;
  std::string chunk_;  // what is compiled: the file, or the wrapped expression
  Limits limits_;
  std::string description_;
  std::string declaredName_;
  bool hasFilter_ = false;
  bool hasScore_ = false;

  std::unique_ptr<Sandbox> sandbox_;
  bool broken_ = false;  // the last call ran out of memory: rebuild the state first

  std::shared_ptr<const NodeSnapshot> nodes_;
  std::shared_ptr<const TaskGroup> group_;
  bool nodesBuilt_ = false;  // the state holds nodes_'s tables
  bool taskBuilt_ = false;   // the state holds group_'s task table
  // Per node: the values placements change, as the state's node tables hold them, and the
  // group's service counts from the document.
  std::vector<int64_t> nanoCpusFree_, memoryFree_, tasks_, serviceTasks_, failures_;
  std::vector<int64_t> docServiceTasks_, docFailures_;
  std::vector<uint32_t> dirty_;  // nodes changed by updateUsage() since bindNodes()
  std::vector<uint8_t> isDirty_;
  std::vector<uint8_t> fitScratch_;
  std::vector<int64_t> scoreScratch_;

  std::map<std::string, int> lastReasons_;
  Diagnostic lastError_;
};

}  // namespace shoal::policy
