#pragma once

// The Lua-facing C functions of kernel/policy. Each runs under Sandbox::call (lua_pcall) and
// may raise, which is a longjmp: they read the plain-data argument structs below and the
// immutable documents they point to, and create no C++ object with a destructor. Results go
// back through the same structs (plain values, or pointers to strings the Lua state anchors).
// Internal to kernel/policy.

#include <cstddef>
#include <cstdint>

struct lua_State;

namespace shoal::policy {

class NodeSnapshot;
class TaskGroup;
struct SnapshotNode;

namespace detail {

// Loads a policy (or expression) chunk: runs a policy file's top level once, checks the
// declaration it returns, keeps its functions and freezes the globals.
struct CompileArgs {
  const char* source = nullptr;
  std::size_t length = 0;
  bool expression = false;  // source is "return function(node, task) return (...) end"
  // Out:
  bool hasFilter = false;
  bool hasScore = false;
  bool hasPrepare = false;
  const char* name = nullptr;  // the declared name, anchored in the state (nullptr: none)
  std::size_t nameLength = 0;
  const char* description = nullptr;
  std::size_t descriptionLength = 0;
};
int compileChunk(lua_State* L);

// The values of node tables that placements change, one entry per node of the snapshot.
struct Dynamic {
  const int64_t* nanoCpusFree = nullptr;
  const int64_t* memoryFree = nullptr;
  const int64_t* tasks = nullptr;
  const int64_t* serviceTasks = nullptr;  // of the bound group's service
  const int64_t* failures = nullptr;      // of the bound group's service
};

// Builds the read-only node tables of a snapshot (replacing any earlier ones).
struct NodesArgs {
  const NodeSnapshot* snapshot = nullptr;
  Dynamic dynamic;
};
int buildNodes(lua_State* L);

// Writes the dynamic values of some nodes (all when index is nullptr) into their tables.
struct ApplyArgs {
  const uint32_t* index = nullptr;
  uint32_t count = 0;
  Dynamic dynamic;
};
int applyNodes(lua_State* L);

// Builds the read-only task table of a group (replacing any earlier one).
struct TaskArgs {
  const TaskGroup* group = nullptr;
};
int buildTask(lua_State* L);

// One filter or score batch over the snapshot's nodes: nodes with in[i] == 0 are skipped.
struct EvalArgs {
  const uint8_t* in = nullptr;
  uint8_t* fit = nullptr;    // filter: 1 when the policy keeps the node
  int64_t* score = nullptr;  // score: the policy's number x kScoreScale, clamped
  uint32_t n = 0;
  bool expression = false;
  const SnapshotNode* nodes = nullptr;  // for messages
};
// Leaves one result: a table {reason = count} of the nodes it rejected ("" = no reason).
int filterNodes(lua_State* L);
int scoreNodes(lua_State* L);

inline constexpr double kScoreScale = 1000;
inline constexpr double kMaxScore = 1e18;  // |scaled score| is clamped to this

}  // namespace detail
}  // namespace shoal::policy
