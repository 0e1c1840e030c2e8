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
  return static_[i] != kFits ? static_[i] : dynamicVerdict(i);
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
    keys_[i] = NodeKey{failRank_[i], counts_.tasks[i], snap_.nodes[i].tasks};
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
}

void Group::assign(uint32_t count, int32_t* out) {
  if (count == 0) return;
  rebuild();
  uint32_t k = 0;
  for (; k < count && branches_[0].fit > 0; ++k) {
    uint32_t b = 0;
    while (!branches_[b].leaf) b = branchHeaps_[b].top();
    const uint32_t node = nodeHeaps_[b].top();
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
  }
  for (; k < count; ++k) out[k] = -1;
}

void Group::score(const uint8_t* fit, int64_t* out) {
  const auto n = static_cast<uint32_t>(snap_.nodes.size());
  std::vector<uint8_t> fits(fit, fit + n);
  countBranches(fits);
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

std::string Group::explain() const {
  uint32_t counts[kReasonCount] = {};
  for (uint32_t i = 0; i < snap_.nodes.size(); ++i) ++counts[verdict(i)];
  if (counts[kFits] > 0) return {};
  std::string reasons;
  for (int r = kFits + 1; r < kReasonCount; ++r) {
    if (counts[r] == 0) continue;
    if (!reasons.empty()) reasons += "; ";
    reasons += reasonText(static_cast<Reason>(r), counts[r]);
  }
  // SwarmKit says just "no suitable node" when it has no reason to give (no nodes at all).
  return reasons.empty() ? "no suitable node" : "no suitable node (" + reasons + ")";
}

}  // namespace shoal::plugins::spread
