#include "kernel/policy/bindings.h"

#include <lua.hpp>

#include <cmath>
#include <cstring>

#include "kernel/policy/json_value.h"
#include "kernel/policy/node_snapshot.h"
#include "kernel/policy/sandbox.h"
#include "kernel/policy/task_group.h"

// Everything here runs under lua_pcall and may longjmp: no C++ object with a destructor is
// created in these functions, nothing throws. They read the documents through const
// references and pointers only.

namespace shoal::policy::detail {
namespace {

// Registry keys (their addresses).
char kSlotsKey;  // the table of the policy's slots (below)
char kDeclKey;   // the table shoal.policy{} returned

enum Slot : int {
  kSlotDecl = 1,
  kSlotFilter,
  kSlotScore,
  kSlotPrepare,
  kSlotEmpty,    // a read-only empty table, shared by every empty map
  kSlotTask,     // the task proxy
  kSlotReals,    // node i+1 -> its backing table (dynamic fields are written here)
  kSlotProxies,  // node i+1 -> its read-only proxy
  kSlotNodes,    // the read-only array of every node proxy (prepare's second argument)
  kSlotCount = kSlotNodes
};

void pushSlots(lua_State* L) { lua_rawgetp(L, LUA_REGISTRYINDEX, &kSlotsKey); }

// ---- read-only tables ---------------------------------------------------------------------
// A read-only table is an empty proxy whose metatable has __index = the backing table, so
// reads stay in the VM's fast path, and __newindex raising. __metatable hides the metatable
// (and so the backing table) and holds the table's name for messages. pairs() and # go
// through __pairs and __len; the iterator's state is the proxy, never the backing table.

int roNewIndex(lua_State* L) {
  lua_getmetatable(L, 1);
  lua_getfield(L, -1, "__metatable");
  const char* name = lua_tostring(L, -1);
  const char* key = luaL_tolstring(L, 2, nullptr);
  return policyError(L, "attempt to modify read-only table %s (field '%s')",
                     name != nullptr ? name : "?", key);
}

void pushBacking(lua_State* L, int proxy) {
  if (!lua_getmetatable(L, proxy)) luaL_error(L, "not a read-only table");
  lua_getfield(L, -1, "__index");
  lua_remove(L, -2);
}

int roNext(lua_State* L) {
  lua_settop(L, 2);
  pushBacking(L, 1);
  lua_insert(L, 2);  // proxy, backing, key
  if (lua_next(L, 2) != 0) return 2;
  lua_pushnil(L);
  return 1;
}

int roPairs(lua_State* L) {
  lua_pushcfunction(L, roNext);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

int roLen(lua_State* L) {
  pushBacking(L, 1);
  lua_pushinteger(L, static_cast<lua_Integer>(lua_rawlen(L, -1)));
  return 1;
}

// Pushes a read-only proxy of the table at `backing` (an absolute index).
void pushReadOnly(lua_State* L, int backing, const char* name, bool array) {
  lua_createtable(L, 0, 0);
  lua_createtable(L, 0, array ? 5 : 4);
  lua_pushvalue(L, backing);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, roNewIndex);
  lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, roPairs);
  lua_setfield(L, -2, "__pairs");
  if (array) {
    lua_pushcfunction(L, roLen);
    lua_setfield(L, -2, "__len");
  }
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
}

void setString(lua_State* L, int table, const char* key, const std::string& value) {
  lua_pushlstring(L, value.data(), value.size());
  lua_setfield(L, table, key);
}

void setInteger(lua_State* L, int table, const char* key, int64_t value) {
  lua_pushinteger(L, static_cast<lua_Integer>(value));
  lua_setfield(L, table, key);
}

// Pushes a read-only map of string pairs (the shared empty table when there are none).
void pushLabels(lua_State* L, int slots,
                const std::vector<std::pair<std::string, std::string>>& labels, const char* name) {
  if (labels.empty()) {
    lua_rawgeti(L, slots, kSlotEmpty);
    return;
  }
  lua_createtable(L, 0, static_cast<int>(labels.size()));
  const int t = lua_gettop(L);
  for (const auto& [key, value] : labels) {
    lua_pushlstring(L, key.data(), key.size());
    lua_pushlstring(L, value.data(), value.size());
    lua_rawset(L, t);
  }
  pushReadOnly(L, t, name, false);
  lua_remove(L, t);
}

// Pushes a JSON value as Lua: objects and arrays as read-only tables named by their path,
// null as nil.
void pushJson(lua_State* L, const JsonValue& v, const char* path) {
  luaL_checkstack(L, 6, "document nested too deeply");
  switch (v.type) {
    case JsonValue::Type::kNull:
      lua_pushnil(L);
      return;
    case JsonValue::Type::kBool:
      lua_pushboolean(L, v.boolean ? 1 : 0);
      return;
    case JsonValue::Type::kInt:
      lua_pushinteger(L, static_cast<lua_Integer>(v.integer));
      return;
    case JsonValue::Type::kDouble:
      lua_pushnumber(L, v.number);
      return;
    case JsonValue::Type::kString:
      lua_pushlstring(L, v.string.data(), v.string.size());
      return;
    case JsonValue::Type::kArray: {
      lua_createtable(L, static_cast<int>(v.items.size()), 0);
      const int t = lua_gettop(L);
      lua_pushfstring(L, "%s[]", path);
      const char* inner = lua_tostring(L, -1);
      lua_Integer i = 0;
      for (const JsonValue& item : v.items) {
        ++i;
        if (item.type == JsonValue::Type::kNull) continue;
        pushJson(L, item, inner);
        lua_rawseti(L, t, i);
      }
      lua_pop(L, 1);
      pushReadOnly(L, t, path, true);
      lua_remove(L, t);
      return;
    }
    case JsonValue::Type::kObject: {
      lua_createtable(L, 0, static_cast<int>(v.members.size()));
      const int t = lua_gettop(L);
      for (const auto& [key, value] : v.members) {
        if (value.type == JsonValue::Type::kNull) continue;
        lua_pushfstring(L, "%s.%s", path, key.c_str());
        const char* inner = lua_tostring(L, -1);
        lua_pushlstring(L, key.data(), key.size());
        pushJson(L, value, inner);
        lua_rawset(L, t);
        lua_pop(L, 1);
      }
      pushReadOnly(L, t, path, false);
      lua_remove(L, t);
      return;
    }
  }
  lua_pushnil(L);
}

// ---- shoal.policy{...} ----------------------------------------------------------------------

struct Field {
  const char* name;
  int type;
};
constexpr Field kFields[] = {{"name", LUA_TSTRING},
                             {"description", LUA_TSTRING},
                             {"filter", LUA_TFUNCTION},
                             {"score", LUA_TFUNCTION},
                             {"prepare", LUA_TFUNCTION}};
constexpr char kFieldList[] = "name, description, filter, score, prepare";

// Raises `message` at the line where the value at `idx` was defined when it is a function of
// the policy (a misspelt `fitler = function` points at that function), else at the line of
// the shoal.policy call.
int declarationError(lua_State* L, int idx, const char* message) {
  if (lua_type(L, idx) == LUA_TFUNCTION) {
    lua_Debug ar;
    lua_pushvalue(L, idx);
    if (lua_getinfo(L, ">S", &ar) != 0 && ar.linedefined > 0 &&
        std::strcmp(ar.source, Sandbox::kChunkName) == 0) {
      lua_pushfstring(L, "policy:%d: %s", ar.linedefined, message);
      return lua_error(L);
    }
  }
  return luaL_error(L, "%s", message);
}

int shoalPolicy(lua_State* L) {
  Guard* g = guardOf(L);
  if (!g->loading) {
    return luaL_error(L, "shoal.policy may be called only while the policy file loads");
  }
  if (g->declared) return luaL_error(L, "shoal.policy may be called only once per policy file");
  if (lua_type(L, 1) != LUA_TTABLE) {
    return luaL_error(L,
                      "shoal.policy takes a table: return shoal.policy{ filter = ..., "
                      "score = ... }");
  }
  lua_settop(L, 1);
  lua_createtable(L, 0, 5);  // 2: the declaration
  lua_pushnil(L);
  while (lua_next(L, 1) != 0) {  // key at 3, value at 4
    if (lua_type(L, 3) != LUA_TSTRING) {
      lua_pushfstring(L, "shoal.policy: field names must be strings (found a %s key)",
                      luaL_typename(L, 3));
      return declarationError(L, 4, lua_tostring(L, -1));
    }
    const char* key = lua_tostring(L, 3);
    const Field* field = nullptr;
    for (const Field& f : kFields) {
      if (std::strcmp(f.name, key) == 0) field = &f;
    }
    if (field == nullptr) {
      lua_pushfstring(L, "shoal.policy: unknown field '%s' (known fields: %s)", key, kFieldList);
      return declarationError(L, 4, lua_tostring(L, -1));
    }
    if (lua_type(L, 4) != field->type) {
      lua_pushfstring(L, "shoal.policy: field '%s' must be a %s, not a %s", key,
                      lua_typename(L, field->type), luaL_typename(L, 4));
      return declarationError(L, 4, lua_tostring(L, -1));
    }
    lua_pushvalue(L, 3);
    lua_insert(L, 3);
    lua_rawset(L, 2);  // declaration[key] = value; the key stays for lua_next
  }
  const bool filter = lua_getfield(L, 2, "filter") == LUA_TFUNCTION;
  const bool score = lua_getfield(L, 2, "score") == LUA_TFUNCTION;
  lua_pop(L, 2);
  if (!filter && !score) {
    return luaL_error(L, "shoal.policy: a policy needs a filter or a score function (or both)");
  }
  if (lua_getfield(L, 2, "name") == LUA_TSTRING && lua_rawlen(L, -1) == 0) {
    return luaL_error(L, "shoal.policy: name must not be empty (or leave it out)");
  }
  lua_pop(L, 1);
  lua_pushvalue(L, 2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kDeclKey);
  g->declared = true;
  return 1;
}

// Once loaded, a policy's globals are read-only: nothing registers at evaluation time, and an
// assignment to a misspelt local fails loudly instead of leaking state between evaluations.
int globalWrite(lua_State* L) {
  const char* key = luaL_tolstring(L, 2, nullptr);
  return policyError(L,
                     "attempt to set global '%s' at evaluation time (globals are read-only "
                     "once the policy has loaded; use a local)",
                     key);
}

void freezeGlobals(lua_State* L) {
  lua_pushglobaltable(L);
  const int g = lua_gettop(L);
  lua_createtable(L, 0, 32);
  const int backing = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, g) != 0) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, backing);
  }
  lua_pushnil(L);
  while (lua_next(L, g) != 0) {  // clearing fields during a traversal is allowed
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_pushnil(L);
    lua_rawset(L, g);
  }
  lua_createtable(L, 0, 3);
  lua_pushvalue(L, backing);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, globalWrite);
  lua_setfield(L, -2, "__newindex");
  lua_pushliteral(L, "globals");
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, g);
  lua_settop(L, g - 1);
}

bool keepFunction(lua_State* L, int decl, int slots, const char* field, int slot) {
  if (lua_getfield(L, decl, field) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    return false;
  }
  lua_rawseti(L, slots, slot);
  return true;
}

const char* keepString(lua_State* L, int decl, const char* field, std::size_t* length) {
  const char* s = nullptr;
  if (lua_getfield(L, decl, field) == LUA_TSTRING) s = lua_tolstring(L, -1, length);
  lua_pop(L, 1);  // still anchored by the declaration
  return s;
}

// The line where the function at `idx` starts, for messages about what it returned.
int lineDefined(lua_State* L, int idx) {
  lua_Debug ar;
  lua_pushvalue(L, idx);
  if (lua_getinfo(L, ">S", &ar) != 0 && std::strcmp(ar.source, Sandbox::kChunkName) == 0) {
    return ar.linedefined;
  }
  return 0;
}

}  // namespace

int compileChunk(lua_State* L) {
  auto* args = static_cast<CompileArgs*>(lua_touserdata(L, 1));
  lua_settop(L, 0);
  lua_createtable(L, kSlotCount, 0);  // 1: slots
  lua_pushvalue(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kSlotsKey);
  lua_createtable(L, 0, 0);
  pushReadOnly(L, 2, "(empty)", true);
  lua_rawseti(L, 1, kSlotEmpty);
  lua_settop(L, 1);

  if (!args->expression) {
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, shoalPolicy);
    lua_setfield(L, -2, "policy");
    pushReadOnly(L, lua_gettop(L), "shoal", false);
    lua_setglobal(L, "shoal");
    lua_settop(L, 1);
  }
  if (luaL_loadbufferx(L, args->source, args->length, Sandbox::kChunkName, "t") != LUA_OK) {
    return lua_error(L);
  }
  Guard* g = guardOf(L);
  g->loading = !args->expression;
  g->declared = false;
  lua_call(L, 0, 1);  // 2: what the chunk returned
  g->loading = false;

  if (args->expression) {
    lua_rawseti(L, 1, kSlotFilter);
    args->hasFilter = true;
  } else {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &kDeclKey);  // 3
    if (lua_isnil(L, 3)) {
      return luaL_error(L, "a policy file must return shoal.policy{...} (it returned %s)",
                        luaL_typename(L, 2));
    }
    if (!lua_rawequal(L, 2, 3)) {
      return luaL_error(L,
                        "a policy file must return the declaration shoal.policy{...} made "
                        "(it returned %s)",
                        luaL_typename(L, 2));
    }
    lua_pushvalue(L, 3);
    lua_rawseti(L, 1, kSlotDecl);
    args->hasFilter = keepFunction(L, 3, 1, "filter", kSlotFilter);
    args->hasScore = keepFunction(L, 3, 1, "score", kSlotScore);
    args->hasPrepare = keepFunction(L, 3, 1, "prepare", kSlotPrepare);
    args->name = keepString(L, 3, "name", &args->nameLength);
    args->description = keepString(L, 3, "description", &args->descriptionLength);
  }
  lua_settop(L, 0);
  freezeGlobals(L);
  return 0;
}

int buildNodes(lua_State* L) {
  auto* args = static_cast<NodesArgs*>(lua_touserdata(L, 1));
  const std::vector<SnapshotNode>& nodes = args->snapshot->nodes();
  const int n = static_cast<int>(nodes.size());
  lua_settop(L, 0);
  pushSlots(L);              // 1
  lua_createtable(L, n, 0);  // 2: reals
  lua_createtable(L, n, 0);  // 3: proxies
  for (int i = 0; i < n; ++i) {
    const SnapshotNode& node = nodes[static_cast<std::size_t>(i)];
    lua_createtable(L, 0, 16);  // 4: the node's backing table
    setString(L, 4, "id", node.id);
    setString(L, 4, "hostname", node.hostname);
    setString(L, 4, "role", node.role);
    setString(L, 4, "availability", node.availability);
    setString(L, 4, "state", node.state);
    lua_createtable(L, 0, 2);
    setString(L, 5, "os", node.os);
    setString(L, 5, "arch", node.arch);
    pushReadOnly(L, 5, "node.platform", false);
    lua_setfield(L, 4, "platform");
    lua_settop(L, 4);
    pushLabels(L, 1, node.labels, "node.labels");
    lua_setfield(L, 4, "labels");
    pushLabels(L, 1, node.engineLabels, "node.engine_labels");
    lua_setfield(L, 4, "engine_labels");
    setInteger(L, 4, "nano_cpus", node.nanoCpus);
    setInteger(L, 4, "memory_bytes", node.memoryBytes);
    const Dynamic& d = args->dynamic;
    setInteger(L, 4, "nano_cpus_free", d.nanoCpusFree[i]);
    setInteger(L, 4, "memory_free", d.memoryFree[i]);
    setInteger(L, 4, "tasks", d.tasks[i]);
    setInteger(L, 4, "service_tasks", d.serviceTasks[i]);
    setInteger(L, 4, "failures", d.failures[i]);
    lua_pushvalue(L, 4);
    lua_rawseti(L, 2, i + 1);
    pushReadOnly(L, 4, "node", false);
    lua_rawseti(L, 3, i + 1);
    lua_settop(L, 3);
  }
  pushReadOnly(L, 3, "nodes", true);
  lua_rawseti(L, 1, kSlotNodes);
  lua_rawseti(L, 1, kSlotProxies);
  lua_rawseti(L, 1, kSlotReals);
  lua_settop(L, 0);
  return 0;
}

int applyNodes(lua_State* L) {
  auto* args = static_cast<ApplyArgs*>(lua_touserdata(L, 1));
  lua_settop(L, 0);
  pushSlots(L);
  lua_rawgeti(L, 1, kSlotReals);  // 2
  const Dynamic& d = args->dynamic;
  for (uint32_t k = 0; k < args->count; ++k) {
    const uint32_t i = args->index != nullptr ? args->index[k] : k;
    lua_rawgeti(L, 2, static_cast<lua_Integer>(i) + 1);
    setInteger(L, 3, "nano_cpus_free", d.nanoCpusFree[i]);
    setInteger(L, 3, "memory_free", d.memoryFree[i]);
    setInteger(L, 3, "tasks", d.tasks[i]);
    setInteger(L, 3, "service_tasks", d.serviceTasks[i]);
    setInteger(L, 3, "failures", d.failures[i]);
    lua_settop(L, 2);
  }
  lua_settop(L, 0);
  return 0;
}

int buildTask(lua_State* L) {
  auto* args = static_cast<TaskArgs*>(lua_touserdata(L, 1));
  const TaskGroup& group = *args->group;
  lua_settop(L, 0);
  pushSlots(L);              // 1
  lua_createtable(L, 0, 4);  // 2
  setString(L, 2, "service_id", group.serviceId());
  setString(L, 2, "service_name", group.serviceName());
  if (group.spec().type == JsonValue::Type::kNull) {
    lua_rawgeti(L, 1, kSlotEmpty);  // so task.spec.placement is nil, not an error
  } else {
    pushJson(L, group.spec(), "task.spec");
  }
  lua_setfield(L, 2, "spec");
  lua_createtable(L, 0, 2);  // 3
  setInteger(L, 3, "nano_cpus", group.nanoCpus());
  setInteger(L, 3, "memory_bytes", group.memoryBytes());
  pushReadOnly(L, 3, "task.reservations", false);
  lua_setfield(L, 2, "reservations");
  lua_settop(L, 2);
  pushReadOnly(L, 2, "task", false);
  lua_rawseti(L, 1, kSlotTask);
  lua_settop(L, 0);
  return 0;
}

namespace {

// Leaves slots (1), proxies (2), task (3), prepare's context (4) and the function (5).
void pushEvaluation(lua_State* L, int fnSlot) {
  lua_settop(L, 0);
  pushSlots(L);
  lua_rawgeti(L, 1, kSlotProxies);
  lua_rawgeti(L, 1, kSlotTask);
  if (lua_rawgeti(L, 1, kSlotPrepare) == LUA_TFUNCTION) {
    lua_pushvalue(L, 3);
    lua_rawgeti(L, 1, kSlotNodes);
    lua_call(L, 2, 1);
  }
  lua_rawgeti(L, 1, fnSlot);
}

}  // namespace

int filterNodes(lua_State* L) {
  auto* e = static_cast<EvalArgs*>(lua_touserdata(L, 1));
  pushEvaluation(L, kSlotFilter);
  lua_createtable(L, 0, 4);  // 6: reasons
  for (uint32_t i = 0; i < e->n; ++i) {
    if (e->in[i] == 0) {
      e->fit[i] = 0;
      continue;
    }
    lua_pushvalue(L, 5);
    bool keep;
    if (e->expression) {
      lua_rawgeti(L, 2, static_cast<lua_Integer>(i) + 1);
      lua_pushvalue(L, 3);
      lua_call(L, 2, 1);
      keep = lua_toboolean(L, -1) != 0;
      if (!keep) lua_pushliteral(L, "");
    } else {
      lua_pushvalue(L, 3);
      lua_rawgeti(L, 2, static_cast<lua_Integer>(i) + 1);
      lua_pushvalue(L, 4);
      lua_call(L, 3, 2);
      keep = lua_toboolean(L, -2) != 0;
      if (!keep) {
        const int t = lua_type(L, -1);
        if (t == LUA_TNUMBER) {
          lua_tolstring(L, -1, nullptr);
        } else if (t != LUA_TSTRING) {
          lua_pushliteral(L, "");
        }
      }
    }
    e->fit[i] = keep ? 1 : 0;
    if (!keep) {  // reasons[reason] += 1
      lua_pushvalue(L, -1);
      lua_rawget(L, 6);
      const lua_Integer count = lua_tointeger(L, -1);
      lua_pop(L, 1);
      lua_pushinteger(L, count + 1);
      lua_rawset(L, 6);
    }
    lua_settop(L, 6);
  }
  return 1;
}

int scoreNodes(lua_State* L) {
  auto* e = static_cast<EvalArgs*>(lua_touserdata(L, 1));
  pushEvaluation(L, kSlotScore);
  for (uint32_t i = 0; i < e->n; ++i) {
    e->score[i] = 0;
    if (e->in[i] == 0) continue;
    lua_pushvalue(L, 5);
    lua_pushvalue(L, 3);
    lua_rawgeti(L, 2, static_cast<lua_Integer>(i) + 1);
    lua_pushvalue(L, 4);
    lua_call(L, 3, 1);
    if (lua_type(L, -1) != LUA_TNUMBER) {
      return luaL_error(L, "policy:%d: score must return a number, but returned %s for node %s",
                        lineDefined(L, 5), luaL_typename(L, -1), e->nodes[i].id.c_str());
    }
    double v =
        lua_isinteger(L, -1) ? static_cast<double>(lua_tointeger(L, -1)) : lua_tonumber(L, -1);
    if (std::isnan(v)) {
      return luaL_error(L, "policy:%d: score returned NaN for node %s", lineDefined(L, 5),
                        e->nodes[i].id.c_str());
    }
    v *= kScoreScale;
    if (v > kMaxScore) v = kMaxScore;
    if (v < -kMaxScore) v = -kMaxScore;
    e->score[i] = static_cast<int64_t>(std::llround(v));
    lua_settop(L, 5);
  }
  return 0;
}

}  // namespace shoal::policy::detail
