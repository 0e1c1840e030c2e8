#include "kernel/policy/policy.h"

#include <lua.hpp>

#include <algorithm>
#include <cstring>
#include <utility>

#include "kernel/policy/bindings.h"
#include "kernel/policy/sandbox.h"

namespace shoal::policy {
namespace {

// A reason longer than this is cut in explanations (a policy might return a whole document).
constexpr std::size_t kMaxReason = 200;
// Explanations list at most this many reasons, the most frequent first.
constexpr std::size_t kMaxExplained = 5;

std::string expressionLabel(std::string_view text) {
  constexpr std::size_t kMax = 60;
  std::string shown(text.substr(0, kMax));
  for (char& c : shown) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  if (text.size() > kMax) shown += "...";
  return "lua constraint `" + shown + "`";
}

bool blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; });
}

std::string nodesWord(int64_t n) { return std::to_string(n) + (n == 1 ? " node" : " nodes"); }

}  // namespace

Policy::Policy(Kind kind, std::string name, std::string label, std::string chunk,
               const Limits& limits)
    : kind_(kind),
      name_(std::move(name)),
      label_(std::move(label)),
      chunk_(std::move(chunk)),
      limits_(limits) {}

Policy::~Policy() = default;

Result<std::unique_ptr<Policy>> Policy::compile(std::string name, std::string_view source,
                                                const Limits& limits) {
  if (name.empty()) return Status::invalidArgument("a policy needs a name");
  std::string label = "policy \"" + name + "\"";
  std::unique_ptr<Policy> p(
      new Policy(Kind::kNamed, std::move(name), std::move(label), std::string(source), limits));
  if (Status s = p->load(); !s) return s;
  return p;
}

Result<std::unique_ptr<Policy>> Policy::expression(std::string_view text, const Limits& limits) {
  if (blank(text)) return Status::invalidArgument("lua constraint: the expression is empty");
  // A newline before the closing parenthesis, so a trailing comment cannot swallow it; the
  // parentheses make anything but one expression a syntax error.
  std::string chunk = "return function(node, task) return (";
  chunk.append(text);
  chunk += "\n) end";
  std::unique_ptr<Policy> p(new Policy(Kind::kExpression, std::string(text), expressionLabel(text),
                                       std::move(chunk), limits));
  if (Status s = p->load(); !s) return s;
  return p;
}

Status Policy::validate(std::string_view name, std::string_view source, const Limits& limits) {
  auto p = compile(std::string(name), source, limits);
  return p ? Status::ok() : p.status();
}

Status Policy::validateExpression(std::string_view text, const Limits& limits) {
  auto p = expression(text, limits);
  return p ? Status::ok() : p.status();
}

Status Policy::load() {
  auto sb = Sandbox::create(label_, limits_);
  if (!sb) return sb.status();
  if (kind_ == Kind::kExpression) {
    (*sb)->setLastLine(1 + static_cast<int>(std::count(name_.begin(), name_.end(), '\n')));
  }
  detail::CompileArgs args;
  args.source = chunk_.data();
  args.length = chunk_.size();
  args.expression = kind_ == Kind::kExpression;
  Status s = (*sb)->call(detail::compileChunk, &args);
  (*sb)->guard().loading = false;
  if (!s) {
    lastError_ = {(*sb)->lastLine(), (*sb)->lastProblem()};
    return s;
  }
  // The strings are anchored by the declaration inside the state, which is alive here.
  description_ = args.description != nullptr ? std::string(args.description, args.descriptionLength)
                                             : std::string();
  declaredName_ = args.name != nullptr ? std::string(args.name, args.nameLength) : std::string();
  hasFilter_ = args.hasFilter;
  hasScore_ = args.hasScore;
  sandbox_ = std::move(sb).value();
  broken_ = false;
  nodesBuilt_ = false;
  taskBuilt_ = false;
  return Status::ok();
}

// After a call ran out of memory the state may still hold what the policy hoarded (in an
// upvalue, say): start again from the source, and rebuild the tables of the bound snapshot
// and group, so the next pass finds the policy as it was after bindNodes/setGroup.
Status Policy::recover() {
  if (!broken_) return Status::ok();
  if (Status s = load(); !s) return s;
  if (nodes_) {
    if (Status s = buildNodeTables(); !s) return s;
  }
  if (group_) {
    if (Status s = buildTaskTable(); !s) return s;
  }
  return Status::ok();
}

Status Policy::failed(Status s) {
  lastError_ = {sandbox_->lastLine(), sandbox_->lastProblem()};
  if (sandbox_->lastFailedOnMemory()) broken_ = true;
  return s;
}

uint32_t Policy::nodeCount() const { return nodes_ ? nodes_->size() : 0; }

std::size_t Policy::memoryUsed() const { return sandbox_ ? sandbox_->memoryUsed() : 0; }

void Policy::resetDynamic(uint32_t i) {
  const SnapshotNode& node = nodes_->nodes()[i];
  nanoCpusFree_[i] = node.nanoCpus - node.reservedNanoCpus;
  memoryFree_[i] = node.memoryBytes - node.reservedMemoryBytes;
  tasks_[i] = node.tasks;
  serviceTasks_[i] = docServiceTasks_[i];
  failures_[i] = docFailures_[i];
}

void Policy::loadGroupCounts() {
  const uint32_t n = nodeCount();
  docServiceTasks_.assign(n, 0);
  docFailures_.assign(n, 0);
  if (!nodes_ || !group_) return;
  for (const auto& [i, count] : nodes_->serviceTasks(group_->serviceId())) {
    docServiceTasks_[i] = count;
  }
  for (const auto& [i, count] : nodes_->failures(group_->serviceId())) docFailures_[i] = count;
}

Status Policy::buildNodeTables() {
  detail::NodesArgs args;
  args.snapshot = nodes_.get();
  args.dynamic = {nanoCpusFree_.data(), memoryFree_.data(), tasks_.data(), serviceTasks_.data(),
                  failures_.data()};
  nodesBuilt_ = false;
  if (Status s = sandbox_->call(detail::buildNodes, &args); !s) return failed(s);
  nodesBuilt_ = true;
  return Status::ok();
}

Status Policy::buildTaskTable() {
  detail::TaskArgs args;
  args.group = group_.get();
  taskBuilt_ = false;
  if (Status s = sandbox_->call(detail::buildTask, &args); !s) return failed(s);
  taskBuilt_ = true;
  return Status::ok();
}

Status Policy::apply(const uint32_t* index, uint32_t count) {
  if (count == 0) return Status::ok();
  detail::ApplyArgs args;
  args.index = index;
  args.count = count;
  args.dynamic = {nanoCpusFree_.data(), memoryFree_.data(), tasks_.data(), serviceTasks_.data(),
                  failures_.data()};
  if (Status s = sandbox_->call(detail::applyNodes, &args); !s) {
    nodesBuilt_ = false;  // some tables may be half-updated: rebuild them at the next bind
    return failed(s);
  }
  return Status::ok();
}

Status Policy::bindNodes(std::string_view nodesJson) {
  auto snap = NodeSnapshot::parse(nodesJson);
  if (!snap) return snap.status().withContext(label_);
  return bindNodes(std::move(snap).value());
}

Status Policy::bindNodes(std::shared_ptr<const NodeSnapshot> nodes) {
  if (!nodes) return Status::invalidArgument(label_ + ": no node snapshot");
  if (Status s = recover(); !s) return s;
  if (nodes == nodes_ && nodesBuilt_) {
    // The same pass: only undo the usage updates.
    for (uint32_t i : dirty_) {
      resetDynamic(i);
      isDirty_[i] = 0;
    }
    Status s = apply(dirty_.data(), static_cast<uint32_t>(dirty_.size()));
    dirty_.clear();
    return s;
  }
  nodes_ = std::move(nodes);
  const uint32_t n = nodes_->size();
  for (auto* v : {&nanoCpusFree_, &memoryFree_, &tasks_, &serviceTasks_, &failures_}) {
    v->assign(n, 0);
  }
  loadGroupCounts();
  for (uint32_t i = 0; i < n; ++i) resetDynamic(i);
  dirty_.clear();
  isDirty_.assign(n, 0);
  return buildNodeTables();
}

Status Policy::setGroup(std::string_view groupJson) {
  auto group = TaskGroup::parse(groupJson);
  if (!group) return group.status().withContext(label_);
  return setGroup(std::move(group).value());
}

Status Policy::setGroup(std::shared_ptr<const TaskGroup> group) {
  if (!group) return Status::invalidArgument(label_ + ": no task group");
  if (Status s = recover(); !s) return s;
  group_ = std::move(group);
  if (nodes_) {
    loadGroupCounts();
    std::vector<uint32_t> changed;
    for (uint32_t i = 0; i < nodes_->size(); ++i) {
      if (serviceTasks_[i] != docServiceTasks_[i] || failures_[i] != docFailures_[i]) {
        serviceTasks_[i] = docServiceTasks_[i];
        failures_[i] = docFailures_[i];
        changed.push_back(i);
      }
    }
    if (nodesBuilt_) {
      if (Status s = apply(changed.data(), static_cast<uint32_t>(changed.size())); !s) return s;
    }
  }
  return buildTaskTable();
}

Status Policy::updateUsage(const UsageUpdate& u) {
  if (!nodes_) {
    return Status::failedPrecondition(label_ + ": usage update before a node snapshot was bound");
  }
  if (u.count > 0 && u.nodes == nullptr) {
    return Status::invalidArgument(label_ + ": usage update without node indexes");
  }
  const uint32_t n = nodes_->size();
  for (uint32_t k = 0; k < u.count; ++k) {
    if (u.nodes[k] >= n) {
      return Status::invalidArgument(label_ + ": usage update names node " +
                                     std::to_string(u.nodes[k]) + ", but the snapshot has " +
                                     nodesWord(n));
    }
  }
  if (Status s = recover(); !s) return s;
  for (uint32_t k = 0; k < u.count; ++k) {
    const uint32_t i = u.nodes[k];
    const SnapshotNode& node = nodes_->nodes()[i];
    if (u.reservedNanoCpus != nullptr) nanoCpusFree_[i] = node.nanoCpus - u.reservedNanoCpus[k];
    if (u.reservedMemoryBytes != nullptr) {
      memoryFree_[i] = node.memoryBytes - u.reservedMemoryBytes[k];
    }
    if (u.tasks != nullptr) tasks_[i] = u.tasks[k];
    if (u.serviceTasks != nullptr) serviceTasks_[i] = u.serviceTasks[k];
    if (isDirty_[i] == 0) {
      isDirty_[i] = 1;
      dirty_.push_back(i);
    }
  }
  if (!nodesBuilt_) return buildNodeTables();
  return apply(u.nodes, u.count);
}

Status Policy::requireBound(uint32_t n) const {
  if (!nodes_) return Status::failedPrecondition(label_ + ": no node snapshot bound");
  if (!group_) return Status::failedPrecondition(label_ + ": no task group set");
  if (n != nodes_->size()) {
    return Status::invalidArgument(label_ + ": asked about " + nodesWord(n) +
                                   ", but the bound snapshot has " + nodesWord(nodes_->size()));
  }
  return Status::ok();
}

Status Policy::filter(uint8_t* fit, uint32_t n, std::map<std::string, int>* reasons) {
  if (Status s = requireBound(n); !s) return s;
  if (n > 0 && fit == nullptr) return Status::invalidArgument(label_ + ": no fit array");
  if (Status s = recover(); !s) return s;
  if (!nodesBuilt_) {
    if (Status s = buildNodeTables(); !s) return s;
  }
  if (!taskBuilt_) {
    if (Status s = buildTaskTable(); !s) return s;
  }
  lastReasons_.clear();
  if (!hasFilter_) {
    if (reasons != nullptr) reasons->clear();
    return Status::ok();
  }

  fitScratch_.assign(n, 0);
  detail::EvalArgs e;
  e.in = fit;
  e.fit = fitScratch_.data();
  e.n = n;
  e.expression = kind_ == Kind::kExpression;
  e.nodes = nodes_->nodes().data();
  if (Status s = sandbox_->call(detail::filterNodes, &e, 1); !s) return failed(s);

  // The reasons table is on the stack; lua_next and lua_tolstring on its string keys do not
  // raise, and nothing here runs Lua code.
  lua_State* L = sandbox_->state();
  lua_pushnil(L);
  while (lua_next(L, 1) != 0) {
    std::size_t len = 0;
    const char* key = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &len) : "";
    std::string reason(key, std::min(len, kMaxReason));
    if (len > kMaxReason) reason += "...";
    lastReasons_[reason] += static_cast<int>(lua_tointeger(L, -1));
    lua_pop(L, 1);
  }
  lua_settop(L, 0);
  if (n > 0) std::memcpy(fit, fitScratch_.data(), n);
  if (reasons != nullptr) *reasons = lastReasons_;
  return Status::ok();
}

Status Policy::score(const uint8_t* fit, int64_t* out, uint32_t n) {
  if (Status s = requireBound(n); !s) return s;
  if (n > 0 && (fit == nullptr || out == nullptr)) {
    return Status::invalidArgument(label_ + ": no fit or score array");
  }
  if (!hasScore_) {
    std::fill(out, out + n, 0);
    return Status::ok();
  }
  if (Status s = recover(); !s) return s;
  if (!nodesBuilt_) {
    if (Status s = buildNodeTables(); !s) return s;
  }
  if (!taskBuilt_) {
    if (Status s = buildTaskTable(); !s) return s;
  }
  scoreScratch_.assign(n, 0);
  detail::EvalArgs e;
  e.in = fit;
  e.score = scoreScratch_.data();
  e.n = n;
  e.nodes = nodes_->nodes().data();
  if (Status s = sandbox_->call(detail::scoreNodes, &e); !s) return failed(s);
  std::copy(scoreScratch_.begin(), scoreScratch_.end(), out);
  return Status::ok();
}

std::string Policy::explain() const {
  std::vector<std::pair<std::string, int>> reasons(lastReasons_.begin(), lastReasons_.end());
  std::stable_sort(reasons.begin(), reasons.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string out;
  int64_t others = 0;
  for (std::size_t k = 0; k < reasons.size(); ++k) {
    const auto& [reason, count] = reasons[k];
    if (k >= kMaxExplained) {
      others += count;
      continue;
    }
    if (!out.empty()) out += "; ";
    out += nodesWord(count) + " rejected by " + label_;
    if (!reason.empty()) out += ": " + reason;
  }
  if (others > 0) out += "; " + nodesWord(others) + " rejected by " + label_ + " for other reasons";
  return out;
}

}  // namespace shoal::policy
