#include "placement.h"

#include <algorithm>
#include <unordered_map>
#include <utility>

namespace shoal::plugins::spread {
namespace {

bool platformMatches(const std::vector<Platform>& platforms, const Node& node) {
  if (platforms.empty()) return true;
  const std::string arch = normaliseArch(node.arch);
  for (const Platform& p : platforms) {
    if ((p.os.empty() || p.os == node.os) && (p.arch.empty() || p.arch == arch)) {
      return true;
    }
  }
  return false;
}

// "1 node had insufficient memory" / "2 nodes had insufficient memory".
std::string reasonText(Reason r, uint32_t n) {
  const std::string count = std::to_string(n);
  const std::string nodes = n == 1 ? count + " node" : count + " nodes";
  switch (r) {
    case kUnavailable:
      return nodes + " not available for new tasks";
    case kPlatform:
      return "unsupported platform on " + nodes;
    case kConstraints:
      return "scheduling constraints not satisfied on " + nodes;
    case kMemory:
      return nodes + " had insufficient memory";
    case kCpu:
      return nodes + " had insufficient CPU";
    case kHostPort:
      return "host-mode port already in use on " + nodes;
    case kMaxReplicas:
      return "max replicas per node limit exceed on " + nodes;
    case kPolicy:
      return nodes + " rejected by a Lua placement policy";
    case kFits:
    case kReasonCount:
      break;
  }
  return {};
}

}  // namespace

Group::Group(Snapshot& snap, GroupSpec spec)
    : snap_(snap), spec_(std::move(spec)), counts_(snap.countsFor(spec_.serviceId)) {
  const size_t n = snap_.nodes.size();
  static_.resize(n);
  failRank_.resize(n);
  leafOf_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const Node& node = snap_.nodes[i];
    Reason r = kFits;
    if (!node.available()) {
      r = kUnavailable;
    } else if (!platformMatches(spec_.platforms, node)) {
      r = kPlatform;
    } else {
      for (const Constraint& c : spec_.constraints) {
        if (!c.matches(node)) {
          r = kConstraints;
          break;
        }
      }
    }
    static_[i] = r;
    failRank_[i] = counts_.failures[i] >= kMaxFailures ? counts_.failures[i] : 0;
  }

  // The preference tree. Branch ids follow the first node (by index) with each value, so ties
  // between branches go to the one whose first node comes first.
  branches_.emplace_back();
  std::vector<std::unordered_map<std::string, uint32_t>> childByValue(1);
  for (size_t i = 0; i < n; ++i) {
    uint32_t b = 0;
    for (const Preference& p : spec_.preferences) {
      const std::string& value = p.valueOf(snap_.nodes[i]);
      const auto child = static_cast<uint32_t>(branches_.size());
      const auto [it, added] = childByValue[b].try_emplace(value, child);
      const uint32_t next = it->second;  // read before childByValue grows
      if (added) {
        branches_[b].leaf = false;
        branches_[b].members.push_back(child);
        branches_.emplace_back();
        branches_.back().parent = b;
        childByValue.emplace_back();
      }
      b = next;
    }
    branches_[b].members.push_back(static_cast<uint32_t>(i));
    leafOf_[i] = b;
  }
  nodePos_.assign(n, IndexedHeap<NodeLess>::kAbsent);
  branchPos_.assign(branches_.size(), IndexedHeap<BranchLess>::kAbsent);
  nodeHeaps_.reserve(branches_.size());
  branchHeaps_.reserve(branches_.size());
  for (size_t b = 0; b < branches_.size(); ++b) {
    nodeHeaps_.emplace_back(&nodePos_, NodeLess{this});
    branchHeaps_.emplace_back(&branchPos_, BranchLess{this});
  }
}

Reason Group::dynamicVerdict(uint32_t i) const {
  const Node& node = snap_.nodes[i];
  // Swarm skips a resource whose reservation is zero, even on an overcommitted node.
  if (spec_.memoryBytes > 0 && spec_.memoryBytes > node.memoryBytes - node.reservedMemoryBytes) {
    return kMemory;
  }
  if (spec_.nanoCpus > 0 && spec_.nanoCpus > node.nanoCpus - node.reservedNanoCpus) return kCpu;
  for (PortKey p : spec_.ports) {
    if (node.portInUse(p)) return kHostPort;
  }
  if (spec_.maxReplicas > 0 && counts_.tasks[i] >= spec_.maxReplicas) return kMaxReplicas;
  return kFits;
}

Reason Group::verdict(uint32_t i) const {
  if (static_[i] != kFits) return static_[i];
  const Reason r = dynamicVerdict(i);
  if (r != kFits || policyReject_.empty()) return r;
  return policyReject_[i] == 0 ? kFits : kPolicy;
}

void Group::attachPolicies(std::unique_ptr<PolicySet> policies, std::string_view groupJson) {
  policies_ = std::move(policies);
  const auto n = static_cast<uint32_t>(snap_.nodes.size());
  policyReject_.assign(n, 0);
  std::vector<uint8_t> fit(n);
  for (uint32_t i = 0; i < n; ++i) fit[i] = verdict(i) == kFits ? 1 : 0;
  std::vector<uint8_t> before;
  for (size_t h = 0; h < policies_->size(); ++h) {
    policies_->bind(h, snap_.json, groupJson);
    syncPolicy(h);
    // Each filter sees only the nodes the filters before it kept, so a node is counted under
    // the first that rejects it.
    before = fit;
    policies_->filter(h, fit.data(), n);
    for (uint32_t i = 0; i < n; ++i) {
      if (before[i] != 0 && fit[i] == 0) policyReject_[i] = static_cast<uint32_t>(h + 1);
    }
    if (policies_->kind(h) == SHOAL_POLICY_NAMED) scoreHandle_ = h;
  }
  if (scoring()) {
    scoreVersion_.assign(n, 0);
    scoreMask_.assign(n, 0);
    scoreOut_.assign(n, 0);
  }
}

void Group::syncPolicy(size_t h) {
  if (policies_->syncedVersion(h) == snap_.usageVersion) return;
  const std::vector<uint32_t>& touched = snap_.touched;
  if (!touched.empty()) {
    usageNodes_.assign(touched.begin(), touched.end());
    usageCpus_.resize(touched.size());
    usageMemory_.resize(touched.size());
    usageTasks_.resize(touched.size());
    usageServiceTasks_.resize(touched.size());
    for (size_t k = 0; k < touched.size(); ++k) {
      const Node& node = snap_.nodes[touched[k]];
      usageCpus_[k] = node.reservedNanoCpus;
      usageMemory_[k] = node.reservedMemoryBytes;
      usageTasks_[k] = node.tasks;
      usageServiceTasks_[k] = counts_.tasks[touched[k]];
    }
    shoal_policy_usage u{};
    u.struct_size = sizeof u;
    u.count = static_cast<uint32_t>(touched.size());
    u.nodes = usageNodes_.data();
    u.reserved_nano_cpus = usageCpus_.data();
    u.reserved_memory_bytes = usageMemory_.data();
    u.tasks = usageTasks_.data();
    u.service_tasks = usageServiceTasks_.data();
    policies_->update(h, u);
  }
  policies_->setSyncedVersion(h, snap_.usageVersion);
}

void Group::notePlacement(uint32_t i) {
  const size_t h = scoreHandle_;
  if (policies_->syncedVersion(h) + 1 != snap_.usageVersion) {
    syncPolicy(h);
    return;
  }
  const Node& node = snap_.nodes[i];
  const int64_t cpus = node.reservedNanoCpus, memory = node.reservedMemoryBytes;
  const int64_t tasks = node.tasks, serviceTasks = counts_.tasks[i];
  shoal_policy_usage u{};
  u.struct_size = sizeof u;
  u.count = 1;
  u.nodes = &i;
  u.reserved_nano_cpus = &cpus;
  u.reserved_memory_bytes = &memory;
  u.tasks = &tasks;
  u.service_tasks = &serviceTasks;
  policies_->update(h, u);
  policies_->setSyncedVersion(h, snap_.usageVersion);
}

void Group::rescore(const std::vector<uint32_t>& nodes) {
  for (uint32_t i : nodes) scoreMask_[i] = 1;
  try {
    policies_->score(scoreHandle_, scoreMask_.data(), scoreOut_.data(),
                     static_cast<uint32_t>(scoreMask_.size()));
  } catch (...) {
    for (uint32_t i : nodes) scoreMask_[i] = 0;
    throw;
  }
  for (uint32_t i : nodes) {
    scoreMask_[i] = 0;
    keys_[i].score = scoreOut_[i];
    scoreVersion_[i] = snap_.usageVersion;
  }
}

// Scores depend on usage, and every placement may change some. The node placed on last is
// re-scored first (its own usage changed, so its score may have moved either way); any other
// node keeps the score it had, which is exact for a score of the node alone (binpack) and an
// upper bound for one that falls as tasks land elsewhere (zone-spread, through prepare). So the
// heap's top is the best node once its own score is current: stale tops are re-scored in
// batches (one policy_score call each, doubling) until the top is current. The first batch is
// sized by how many stale candidates recent picks really had to re-score (those that ranked
// before the winner), so a pick usually takes one call. The batch sizes change only the cost,
// not the node picked. Only a score that rises as tasks land on other nodes can be missed,
// until the next assign() call re-scores every node.
uint32_t Group::pickScored(uint32_t b) {
  IndexedHeap<NodeLess>& heap = nodeHeaps_[b];
  size_t want = std::max<size_t>(1, rescoreHint_);
  popped_.clear();
  poppedKeys_.clear();
  for (;;) {
    batch_.clear();
    const size_t first = popped_.size();
    bool pendingPopped = false;
    if (pending_ != kNoNode) batch_.push_back(pending_);
    while (popped_.size() - first < want && !heap.empty() &&
           scoreVersion_[heap.top()] != snap_.usageVersion) {
      const uint32_t id = heap.top();
      heap.remove(id);
      popped_.push_back(id);
      poppedKeys_.push_back(keys_[id]);
      if (id == pending_) {
        pendingPopped = true;
      } else {
        batch_.push_back(id);
      }
    }
    if (batch_.empty()) break;
    rescore(batch_);
    // The pending node first: until it moves, its heap is out of order at its slot alone, and
    // pushing into that heap would build on the disorder.
    if (pending_ != kNoNode && !pendingPopped) nodeHeaps_[leafOf_[pending_]].update(pending_);
    pending_ = kNoNode;
    for (size_t k = first; k < popped_.size(); ++k) heap.push(popped_[k]);
    want *= 2;
  }
  const uint32_t best = heap.top();
  size_t needed = 0;
  for (size_t k = 0; k < popped_.size(); ++k) {
    if (keyLess(poppedKeys_[k], popped_[k], keys_[best], best)) ++needed;
  }
  // Twice what was needed, shrinking slowly (by an eighth, at least 1, so a burst does not
  // stay): a policy_score call costs the kernel O(nodes) whatever its batch (and a prepare
  // function runs over every node in each), so a batch a bit too large is cheaper than a second
  // call.
  rescoreHint_ = std::max(2 * needed, rescoreHint_ - (rescoreHint_ + 7) / 8);
  return best;
}

void Group::filter(uint8_t* out) const {
  for (uint32_t i = 0; i < snap_.nodes.size(); ++i) out[i] = verdict(i) == kFits ? 1 : 0;
}

void Group::countBranches(const std::vector<uint8_t>& fits) {
  for (Branch& b : branches_) {
    b.serviceTasks = 0;
    b.fit = 0;
    b.fitHealthy = 0;
  }
  keys_.resize(fits.size());
  for (uint32_t i = 0; i < fits.size(); ++i) {
    keys_[i] = NodeKey{failRank_[i], 0, counts_.tasks[i], snap_.nodes[i].tasks};
    Branch& leaf = branches_[leafOf_[i]];
    leaf.serviceTasks += counts_.tasks[i];
    if (fits[i] != 0) {
      ++leaf.fit;
      if (failRank_[i] == 0) ++leaf.fitHealthy;
    }
  }
  // Children come after their parent, so one backward sweep sums every subtree.
  for (size_t b = branches_.size(); b-- > 1;) {
    Branch& parent = branches_[branches_[b].parent];
    parent.serviceTasks += branches_[b].serviceTasks;
    parent.fit += branches_[b].fit;
    parent.fitHealthy += branches_[b].fitHealthy;
  }
}

void Group::rebuild() {
  const auto n = static_cast<uint32_t>(snap_.nodes.size());
  std::vector<uint8_t> fits(n);
  for (uint32_t i = 0; i < n; ++i) fits[i] = verdict(i) == kFits ? 1 : 0;
  countBranches(fits);
  pending_ = kNoNode;
  if (scoring()) {
    // Every fitting node once per call: other groups may have placed tasks since the last.
    syncPolicy(scoreHandle_);
    policies_->score(scoreHandle_, fits.data(), scoreOut_.data(), n);
    for (uint32_t i = 0; i < n; ++i) {
      keys_[i].score = fits[i] != 0 ? scoreOut_[i] : 0;
      scoreVersion_[i] = snap_.usageVersion;
    }
  }
  std::vector<uint32_t> ids;
  for (size_t b = 0; b < branches_.size(); ++b) {
    ids.clear();
    const Branch& branch = branches_[b];
    for (uint32_t m : branch.members) {
      if (branch.leaf ? fits[m] != 0 : branches_[m].fit > 0) ids.push_back(m);
    }
    if (branch.leaf) {
      nodeHeaps_[b].assign(ids);
    } else {
      branchHeaps_[b].assign(ids);
    }
  }
}

void Group::place(uint32_t i) {
  Node& node = snap_.nodes[i];
  node.reservedNanoCpus += spec_.nanoCpus;
  node.reservedMemoryBytes += spec_.memoryBytes;
  ++node.tasks;
  ++counts_.tasks[i];
  for (PortKey p : spec_.ports) node.addPort(p);
  ++keys_[i].serviceTasks;
  ++keys_[i].tasks;
  snap_.touch(i);
}

// Only ever the last placement not taken back yet: every port of the group was free on the
// node before it (the host-port filter), so place() added all it got to (and removePort of one
// it did not get to is a no-op).
void Group::unplace(uint32_t i) {
  Node& node = snap_.nodes[i];
  node.reservedNanoCpus -= spec_.nanoCpus;
  node.reservedMemoryBytes -= spec_.memoryBytes;
  --node.tasks;
  --counts_.tasks[i];
  for (PortKey p : spec_.ports) node.removePort(p);
  snap_.touch(i);
}

void Group::assign(uint32_t count, int32_t* out) {
  if (count == 0) return;
  placed_.clear();
  try {
    assignTasks(count, out);
  } catch (...) {
    // A policy failed (or memory ran out): the call fails as a whole, so the snapshot must not
    // keep its placements. The heaps are rebuilt by the next call.
    for (auto it = placed_.rbegin(); it != placed_.rend(); ++it) unplace(*it);
    placed_.clear();
    pending_ = kNoNode;
    std::fill(out, out + count, -1);
    throw;
  }
  placed_.clear();
}

void Group::assignTasks(uint32_t count, int32_t* out) {
  rebuild();
  uint32_t k = 0;
  for (; k < count && branches_[0].fit > 0; ++k) {
    uint32_t b = 0;
    while (!branches_[b].leaf) b = branchHeaps_[b].top();
    const uint32_t node = scoring() ? pickScored(b) : nodeHeaps_[b].top();
    placed_.push_back(node);  // first: unplace() undoes even a place() that threw halfway
    place(node);
    out[k] = static_cast<int32_t>(node);
    // Only this node changed: its counts grew, and it may no longer fit.
    const bool stillFits = dynamicVerdict(node) == kFits;
    if (stillFits) {
      nodeHeaps_[b].update(node);
    } else {
      nodeHeaps_[b].remove(node);
    }
    const bool healthy = failRank_[node] == 0;
    for (uint32_t x = b;; x = branches_[x].parent) {
      Branch& br = branches_[x];
      ++br.serviceTasks;
      if (!stillFits) {
        --br.fit;
        if (healthy) --br.fitHealthy;
      }
      if (br.parent == kNoParent) break;
      if (br.fit == 0) {
        branchHeaps_[br.parent].remove(x);
      } else {
        branchHeaps_[br.parent].update(x);
      }
    }
    if (scoring()) {
      notePlacement(node);
      if (stillFits) pending_ = node;
    }
  }
  for (; k < count; ++k) out[k] = -1;
}

void Group::score(const uint8_t* fit, int64_t* out) {
  const auto n = static_cast<uint32_t>(snap_.nodes.size());
  std::vector<uint8_t> fits(fit, fit + n);
  countBranches(fits);
  if (scoring()) {
    syncPolicy(scoreHandle_);
    policies_->score(scoreHandle_, fits.data(), scoreOut_.data(), n);
    for (uint32_t i = 0; i < n; ++i) keys_[i].score = fits[i] != 0 ? scoreOut_[i] : 0;
  }
  // Each fitting node's path of branches from the root, so two nodes compare at the first
  // level where they part, as assign's descent does.
  const size_t depth = spec_.preferences.size();
  std::vector<uint32_t> paths;
  std::vector<uint32_t> order;
  for (uint32_t i = 0; i < n; ++i) {
    out[i] = 0;
    if (fits[i] != 0) order.push_back(i);
  }
  std::vector<uint32_t> slot(n, 0);
  paths.resize(order.size() * depth);
  for (size_t r = 0; r < order.size(); ++r) {
    slot[order[r]] = static_cast<uint32_t>(r);
    uint32_t b = leafOf_[order[r]];
    for (size_t d = depth; d-- > 0;) {
      paths[r * depth + d] = b;
      b = branches_[b].parent;
    }
  }
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    const uint32_t* pa = paths.data() + slot[a] * depth;
    const uint32_t* pb = paths.data() + slot[b] * depth;
    for (size_t d = 0; d < depth; ++d) {
      if (pa[d] != pb[d]) return branchLess(pa[d], pb[d]);
    }
    return nodeLess(a, b);
  });
  for (size_t r = 0; r < order.size(); ++r) {
    out[order[r]] = static_cast<int64_t>(order.size() - r);
  }
}

std::string Group::explain() {
  const auto n = static_cast<uint32_t>(snap_.nodes.size());
  uint32_t counts[kReasonCount] = {};
  for (uint32_t i = 0; i < n; ++i) ++counts[verdict(i)];
  if (counts[kFits] > 0) return {};
  std::string reasons;
  auto add = [&](const std::string& text) {
    if (!reasons.empty()) reasons += "; ";
    reasons += text;
  };
  for (int r = kFits + 1; r < kPolicy; ++r) {
    if (counts[r] != 0) add(reasonText(static_cast<Reason>(r), counts[r]));
  }
  if (counts[kPolicy] > 0) {
    // The policies' own words for the nodes each keeps off that pass every Swarm filter: its
    // filter again over just those (they pass the Swarm filters, so they were evaluated when
    // the group was opened), then policy_explain.
    std::vector<uint8_t> mask(n);
    for (size_t h = 0; h < policies_->size(); ++h) {
      uint32_t rejected = 0;
      for (uint32_t i = 0; i < n; ++i) {
        mask[i] = policyReject_[i] == h + 1 && verdict(i) == kPolicy ? 1 : 0;
        rejected += mask[i];
      }
      if (rejected == 0) continue;
      syncPolicy(h);
      policies_->filter(h, mask.data(), n);
      const std::string text = policies_->explain(h);
      add(text.empty() ? reasonText(kPolicy, rejected) : text);
    }
  }
  // SwarmKit says just "no suitable node" when it has no reason to give (no nodes at all).
  return reasons.empty() ? "no suitable node" : "no suitable node (" + reasons + ")";
}

}  // namespace shoal::plugins::spread
