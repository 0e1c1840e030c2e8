// scheduler-spread: one task group placed on a snapshot, Swarm style, with the group's Lua
// placement policies (run by the kernel, policy_set.h).
//
// Filters, in order (a node is counted under the first one it fails):
//   static, evaluated once when the group is opened: availability (ready and active),
//   platform, constraints;
//   dynamic, O(1) per node and re-checked after each placement: memory, CPU, host-mode ports,
//   max replicas per node;
//   Lua, evaluated once per node when the group is opened, on the nodes that passed every
//   filter above: the placement's constraint expressions, then its named policy's filter.
//   Nothing frees within a pass, so a node that failed a Swarm filter then never fits later
//   and needs no Lua verdict.
// Ranking: placement preferences form a tree (one level per spread descriptor, one branch per
// label value, nodes without the label in a branch of their own, ""); at each level the task
// goes to the branch holding the fewest tasks of the service (every node of the branch counts,
// as in SwarmKit), and within the last level to the node with the highest policy score (when
// the group has a named policy), then the fewest tasks of the service, then the fewest tasks in
// total, then the lowest index. A node where the service failed kMaxFailures times or more
// ranks after every other node (among such nodes, fewer failures first), policy score or not,
// and a branch with no such healthier node after every branch that has one.
// Each level keeps its candidates in an indexed binary heap, so one placement costs
// O(depth * log nodes); assign() rebuilds the heaps in O(nodes) when it starts, since other
// groups may have placed tasks on the snapshot since the last call.
// Policy scores: assign() scores every fitting node once when it starts; after each placement
// it tells the policy the node's new usage and re-scores, in one batch, only the node it placed
// on and the leaf's best candidates whose scores are older than the last placement, until the
// best candidate's score is current (see README.md, "Lua placement policies").
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "documents.h"
#include "model.h"
#include "policy_set.h"

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
  kPolicy,  // rejected by a Lua constraint expression or the named policy's filter
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
  void push(uint32_t id) {
    items_.push_back(id);
    (*pos_)[id] = static_cast<uint32_t>(items_.size() - 1);
    siftUp(items_.size() - 1);
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

  // Gives the group its open Lua policies (expressions first, then the named policy), binds
  // each to the snapshot's text (Snapshot::json) and `groupJson`, tells them the placements
  // made since the snapshot was parsed, and runs their filters once over the nodes that pass
  // every Swarm filter. The named policy, if any, also scores. Throws PolicyFailure.
  void attachPolicies(std::unique_ptr<PolicySet> policies, std::string_view groupJson);

  // out[i] = 1 when node i can take the group's next task.
  void filter(uint8_t* out) const;
  // For the nodes with fit[i] != 0: their rank in the order assign() would try them for the
  // next task, as a score (the node assign would pick scores the number of fitting nodes, the
  // worst 1). Others score 0. Throws PolicyFailure when the policy's score fails.
  void score(const uint8_t* fit, int64_t* out);
  // Places `count` tasks one after another; out[k] = node index or -1 (and -1 for every task
  // after the first that found no node, since nothing frees within a pass). When a policy
  // call fails, the placements of this call are taken back out of the snapshot, every out[k]
  // is -1, and PolicyFailure (or whatever else failed) is rethrown.
  void assign(uint32_t count, int32_t* out);
  // "no suitable node (...)" for the group's next task, or "" when some node fits it. The Lua
  // policies' reasons are theirs (policy_explain), for the nodes they keep off that pass every
  // Swarm filter. Throws PolicyFailure.
  std::string explain();

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
    int64_t score;         // the named policy's score (higher first); 0 without one
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

  static bool keyLess(const NodeKey& ka, uint32_t a, const NodeKey& kb, uint32_t b) {
    if (ka.failRank != kb.failRank) return ka.failRank < kb.failRank;
    if (ka.score != kb.score) return ka.score > kb.score;
    if (ka.serviceTasks != kb.serviceTasks) return ka.serviceTasks < kb.serviceTasks;
    if (ka.tasks != kb.tasks) return ka.tasks < kb.tasks;
    return a < b;
  }
  bool nodeLess(uint32_t a, uint32_t b) const { return keyLess(keys_[a], a, keys_[b], b); }
  bool branchLess(uint32_t a, uint32_t b) const {
    const bool ha = branches_[a].fitHealthy > 0, hb = branches_[b].fitHealthy > 0;
    if (ha != hb) return ha;
    if (branches_[a].serviceTasks != branches_[b].serviceTasks) {
      return branches_[a].serviceTasks < branches_[b].serviceTasks;
    }
    return a < b;
  }

  static constexpr size_t kNoHandle = SIZE_MAX;
  static constexpr uint32_t kNoNode = UINT32_MAX;

  Reason dynamicVerdict(uint32_t node) const;
  // Node keys from the snapshot, and branch counters from `fits` (one flag per node).
  void countBranches(const std::vector<uint8_t>& fits);
  void rebuild();
  void assignTasks(uint32_t count, int32_t* out);
  void place(uint32_t node);
  void unplace(uint32_t node);

  bool scoring() const { return scoreHandle_ != kNoHandle; }
  // Tells policy h the usage of every node placements changed since it was bound (others'
  // placements included), unless it knows them already.
  void syncPolicy(size_t h);
  // The same after place(node): only that node changed since the last sync.
  void notePlacement(uint32_t node);
  // The policy scores of `nodes`, into keys_ (one policy_score batch).
  void rescore(const std::vector<uint32_t>& nodes);
  // The best node of leaf b with a current score (re-scoring stale candidates as needed).
  uint32_t pickScored(uint32_t b);

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
  std::vector<uint32_t> placed_;  // this assign() call's placements, to take back on failure

  // Lua placement policies (none when policies_ is null).
  std::unique_ptr<PolicySet> policies_;
  size_t scoreHandle_ = kNoHandle;      // the named policy's handle
  std::vector<uint32_t> policyReject_;  // per node: 0, or 1 + the handle that rejected it
  std::vector<uint64_t> scoreVersion_;  // per node: the usageVersion its score was made at
  std::vector<uint8_t> scoreMask_;      // all 0 between rescore() calls
  std::vector<int64_t> scoreOut_;       // policy_score's output, one entry per node
  // pickScored()'s scratch: the nodes of one policy_score batch, and every stale candidate a
  // pick took off the heap to re-score, with the key it had.
  std::vector<uint32_t> batch_, popped_;
  std::vector<NodeKey> poppedKeys_;
  uint32_t pending_ = kNoNode;  // placed on last and still fitting: score is stale
  size_t rescoreHint_ = 1;      // stale candidates the last pick had to re-score
  // policy_update's arrays, reused.
  std::vector<uint32_t> usageNodes_;
  std::vector<int64_t> usageCpus_, usageMemory_, usageTasks_, usageServiceTasks_;
};

}  // namespace shoal::plugins::spread
