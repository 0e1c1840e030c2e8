// scheduler-spread: one task group placed on a snapshot, Swarm style.
//
// Filters, in order (a node is counted under the first one it fails):
//   static, evaluated once when the group is opened: availability (ready and active),
//   platform, constraints;
//   dynamic, O(1) per node and re-checked after each placement: memory, CPU, host-mode ports,
//   max replicas per node.
// Ranking: placement preferences form a tree (one level per spread descriptor, one branch per
// label value, nodes without the label in a branch of their own, ""); at each level the task
// goes to the branch holding the fewest tasks of the service (every node of the branch counts,
// as in SwarmKit), and within the last level to the node with the fewest tasks of the service,
// then the fewest tasks in total, then the lowest index. A node where the service failed
// kMaxFailures times or more ranks after every other node (among such nodes, fewer failures
// first), and a branch with no such healthier node after every branch that has one.
// Each level keeps its candidates in an indexed binary heap, so one placement costs
// O(depth * log nodes); assign() rebuilds the heaps in O(nodes) when it starts, since other
// groups may have placed tasks on the snapshot since the last call.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "documents.h"
#include "model.h"

namespace shoal::plugins::spread {

// Why a node cannot take the group's next task; in filter order.
enum Reason : uint8_t {
  kFits = 0,
  kUnavailable,  // not ready, or availability not active
  kPlatform,
  kConstraints,
  kMemory,
  kCpu,
  kHostPort,
  kMaxReplicas,
  kReasonCount,
};

// A binary min-heap of ids (node indexes or branch ids) that can update or remove any id in
// O(log n). `pos` maps each id to its slot and is shared by every heap holding ids of the same
// kind (an id is in at most one heap); kAbsent marks ids in none.
template <class Less>
class IndexedHeap {
 public:
  static constexpr uint32_t kAbsent = UINT32_MAX;

  IndexedHeap(std::vector<uint32_t>* pos, Less less) : pos_(pos), less_(less) {}

  bool empty() const { return items_.empty(); }
  uint32_t top() const { return items_.front(); }

  // Replace the contents with `ids` (O(n) heapify).
  void assign(const std::vector<uint32_t>& ids) {
    for (uint32_t id : items_) (*pos_)[id] = kAbsent;
    items_ = ids;
    for (size_t i = 0; i < items_.size(); ++i) (*pos_)[items_[i]] = static_cast<uint32_t>(i);
    for (size_t i = items_.size() / 2; i-- > 0;) siftDown(i);
  }
  // The key of `id` changed.
  void update(uint32_t id) {
    const size_t i = (*pos_)[id];
    if (!siftUp(i)) siftDown(i);
  }
  void remove(uint32_t id) {
    const size_t i = (*pos_)[id];
    (*pos_)[id] = kAbsent;
    const uint32_t last = items_.back();
    items_.pop_back();
    if (i == items_.size()) return;
    put(i, last);
    if (!siftUp(i)) siftDown(i);
  }

 private:
  void put(size_t i, uint32_t id) {
    items_[i] = id;
    (*pos_)[id] = static_cast<uint32_t>(i);
  }
  bool siftUp(size_t i) {
    const uint32_t id = items_[i];
    const size_t start = i;
    while (i > 0) {
      const size_t parent = (i - 1) / 2;
      if (!less_(id, items_[parent])) break;
      put(i, items_[parent]);
      i = parent;
    }
    put(i, id);
    return i != start;
  }
  void siftDown(size_t i) {
    const uint32_t id = items_[i];
    const size_t n = items_.size();
    for (;;) {
      size_t child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && less_(items_[child + 1], items_[child])) ++child;
      if (!less_(items_[child], id)) break;
      put(i, items_[child]);
      i = child;
    }
    put(i, id);
  }

  std::vector<uint32_t>* pos_;
  Less less_;
  std::vector<uint32_t> items_;
};

class Group {
 public:
  // Evaluates the static filters for every node and builds the preference tree.
  Group(Snapshot& snap, GroupSpec spec);
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  Snapshot& snapshot() const { return snap_; }
  const GroupSpec& spec() const { return spec_; }

  // out[i] = 1 when node i can take the group's next task.
  void filter(uint8_t* out) const;
  // For the nodes with fit[i] != 0: their rank in the order assign() would try them for the
  // next task, as a score (the node assign would pick scores the number of fitting nodes, the
  // worst 1). Others score 0.
  void score(const uint8_t* fit, int64_t* out);
  // Places `count` tasks one after another; out[k] = node index or -1 (and -1 for every task
  // after the first that found no node, since nothing frees within a pass).
  void assign(uint32_t count, int32_t* out);
  // "no suitable node (...)" for the group's next task, or "" when some node fits it.
  std::string explain() const;

  Reason verdict(uint32_t node) const;

 private:
  static constexpr uint32_t kNoParent = UINT32_MAX;

  struct Branch {
    uint32_t parent = kNoParent;
    bool leaf = true;
    std::vector<uint32_t> members;  // leaf: node indexes; inner: child branch ids (ascending)
    // Recomputed by rebuild() and kept by assign():
    int64_t serviceTasks = 0;  // tasks of the service on every node below
    uint32_t fit = 0;          // nodes below that fit the next task
    uint32_t fitHealthy = 0;   // ... and are not ranked last for failures
  };

  // A node's ranking key, copied out of the snapshot (Node is large, and a heap step compares
  // many nodes) when the heaps are built and kept in step by place().
  struct NodeKey {
    int64_t failRank;      // failures when >= kMaxFailures, else 0
    int64_t serviceTasks;  // tasks of the service on the node
    int64_t tasks;         // tasks on the node
  };

  struct NodeLess {
    const Group* g;
    bool operator()(uint32_t a, uint32_t b) const { return g->nodeLess(a, b); }
  };
  struct BranchLess {
    const Group* g;
    bool operator()(uint32_t a, uint32_t b) const { return g->branchLess(a, b); }
  };

  bool nodeLess(uint32_t a, uint32_t b) const {
    const NodeKey& ka = keys_[a];
    const NodeKey& kb = keys_[b];
    if (ka.failRank != kb.failRank) return ka.failRank < kb.failRank;
    if (ka.serviceTasks != kb.serviceTasks) return ka.serviceTasks < kb.serviceTasks;
    if (ka.tasks != kb.tasks) return ka.tasks < kb.tasks;
    return a < b;
  }
  bool branchLess(uint32_t a, uint32_t b) const {
    const bool ha = branches_[a].fitHealthy > 0, hb = branches_[b].fitHealthy > 0;
    if (ha != hb) return ha;
    if (branches_[a].serviceTasks != branches_[b].serviceTasks) {
      return branches_[a].serviceTasks < branches_[b].serviceTasks;
    }
    return a < b;
  }

  Reason dynamicVerdict(uint32_t node) const;
  // Node keys from the snapshot, and branch counters from `fits` (one flag per node).
  void countBranches(const std::vector<uint8_t>& fits);
  void rebuild();
  void place(uint32_t node);

  Snapshot& snap_;
  GroupSpec spec_;
  ServiceCounts& counts_;
  std::vector<Reason> static_;     // per node: kFits or the first static filter it fails
  std::vector<int64_t> failRank_;  // per node: failures when >= kMaxFailures, else 0
  std::vector<NodeKey> keys_;      // per node
  std::vector<Branch> branches_;   // [0] is the root; children come after their parent
  std::vector<uint32_t> leafOf_;   // per node: its leaf branch
  // assign()'s heaps: leaves' heaps hold nodes, inner branches' heaps hold children.
  std::vector<uint32_t> nodePos_;
  std::vector<uint32_t> branchPos_;
  std::vector<IndexedHeap<NodeLess>> nodeHeaps_;
  std::vector<IndexedHeap<BranchLess>> branchHeaps_;
};

}  // namespace shoal::plugins::spread
