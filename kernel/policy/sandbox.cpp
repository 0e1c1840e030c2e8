#include "kernel/policy/sandbox.h"

#include <lua.hpp>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "kernel/common/log.h"

// Lua-facing C functions in this file run where Lua may longjmp (lua_error is a longjmp in
// Debian's C build of Lua): they create no C++ object with a destructor, and throw nothing.

namespace shoal::policy {
namespace {

// The count hook runs every kHookEvery instructions: often enough for a deadline in the
// millisecond range, rarely enough to cost nothing measurable.
constexpr int kHookEvery = 1000;
constexpr char kErrorPrefix[] = "policy:";  // what Lua puts before lines of kChunkName

constexpr std::size_t kClockEveryBytes = 256 * 1024;

void countHook(lua_State* L, lua_Debug* ar);

void* budgetAlloc(void* ud, void* ptr, size_t osize, size_t nsize) {
  auto* g = static_cast<Guard*>(ud);
  if (ptr == nullptr) osize = 0;  // then osize names the kind of object, not a size
  if (nsize == 0) {
    std::free(ptr);
    g->used -= osize;
    return nullptr;
  }
  if (nsize > osize) {
    if (nsize - osize > g->limit - std::min(g->used, g->limit)) {
      g->refused = true;
      return nullptr;  // Lua collects garbage and retries once before it raises LUA_ERRMEM
    }
    if (g->inCall) {
      g->grown += nsize - osize;
      if (g->grown >= kClockEveryBytes) {
        g->grown = 0;
        if (g->trip == Trip::kNone && g->clock->monotonicNanos() > g->deadlineNs) {
          // No stack walk here (the allocator runs in the middle of VM operations): the
          // line stays unknown. lua_sethook is safe to call at any point.
          g->trip = Trip::kDeadline;
          lua_sethook(g->L, countHook, LUA_MASKCOUNT, 1);
        }
      }
      if (g->trip != Trip::kNone) return nullptr;  // stopped: no more growth in this call
    }
  }
  void* p = std::realloc(ptr, nsize);
  if (p == nullptr) return nsize <= osize ? ptr : nullptr;  // Lua assumes shrinking never fails
  g->used = g->used - osize + nsize;
  return p;
}

// The innermost line of the policy's own chunk on the call stack, or 0.
int policyLine(lua_State* L) {
  lua_Debug ar;
  for (int level = 0; lua_getstack(L, level, &ar) != 0; ++level) {
    if (lua_getinfo(L, "Sl", &ar) != 0 && ar.currentline > 0 &&
        std::strcmp(ar.source, Sandbox::kChunkName) == 0) {
      return ar.currentline;
    }
  }
  return 0;
}

void stop(lua_State* L, Guard* g, Trip why) {
  g->trip = why;
  g->tripLine = policyLine(L);
  // From now on fire before every instruction: a policy that catches the error with pcall
  // gets it again at its next instruction, until the call has unwound to the kernel.
  lua_sethook(L, countHook, LUA_MASKCOUNT, 1);
}

int raiseStopped(lua_State* L) {
  lua_pushliteral(L, "stopped by the policy's limits");
  return lua_error(L);
}

void countHook(lua_State* L, lua_Debug*) {
  Guard* g = guardOf(L);
  if (g->trip == Trip::kNone) {
    g->counted += kHookEvery;
    if (g->counted > g->instructionLimit) {
      stop(L, g, Trip::kInstructions);
    } else if (g->clock->monotonicNanos() > g->deadlineNs) {
      stop(L, g, Trip::kDeadline);
    } else {
      return;
    }
  }
  raiseStopped(L);
}

int panic(lua_State* L) {
  const char* msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(not a string)";
  log::error("policy", "unprotected Lua error (a bug in kernel/policy)", {{"error", msg}});
  std::abort();
}

// ---- the pattern functions of the string library -----------------------------------------
// Lua's matcher backtracks in C, where the count hook cannot stop it: ("a"):rep(4000) against
// ".-.-.-.-b" runs for years. So each call is charged, before it runs, an upper bound of its
// matcher steps: every start position (unless anchored) times the pattern length, times the
// subject length for each *, +, - quantifier, %b and back reference, times two for each ?.

enum PatternFn { kFind, kMatch, kGmatch, kGsub };

uint64_t patternCost(const char* p, size_t lp, size_t ls, bool anchorable) {
  const double n = static_cast<double>(ls) + 1;
  double cost = static_cast<double>(std::max<size_t>(lp, 1));
  size_t i = 0;
  if (anchorable && lp > 0 && p[0] == '^') {
    i = 1;
  } else {
    cost *= n;
  }
  while (i < lp) {
    bool quantifiable = true;
    const char c = p[i];
    if (c == '%' && i + 1 < lp) {
      const char d = p[i + 1];
      if (d == 'b') {
        cost *= n;
        i += 4;
        quantifiable = false;
      } else if (d >= '0' && d <= '9') {
        cost *= n;
        i += 2;
        quantifiable = false;
      } else {
        i += 2;
        quantifiable = d != 'f';
      }
    } else if (c == '[') {
      ++i;
      if (i < lp && p[i] == '^') ++i;
      do {
        if (i < lp && p[i++] == '%' && i < lp) ++i;
      } while (i < lp && p[i] != ']');
      ++i;
    } else {
      quantifiable = c != '(' && c != ')';
      ++i;
    }
    if (quantifiable && i < lp) {
      if (p[i] == '*' || p[i] == '+' || p[i] == '-') {
        cost *= n;
        ++i;
      } else if (p[i] == '?') {
        cost *= 2;
        ++i;
      }
    }
    if (cost > 1e18) return std::numeric_limits<uint64_t>::max();
  }
  return static_cast<uint64_t>(cost);
}

// Calls the function a wrapper wraps (its upvalue 1) with the wrapper's arguments from index
// `first` on, and returns its results. An error it raises without a position (a C function's
// luaL_error names the wrapper's level, which is C) gets the policy's line.
int callWrapped(lua_State* L, int first) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, first);
  const int rc = lua_pcall(L, lua_gettop(L) - first, LUA_MULTRET, 0);
  if (rc == LUA_OK) return lua_gettop(L) - first + 1;
  if (rc != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING &&
      std::strncmp(lua_tostring(L, -1), kErrorPrefix, sizeof kErrorPrefix - 1) != 0) {
    luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
  }
  return lua_error(L);
}

template <PatternFn kFn>
int guardedPattern(lua_State* L) {
  size_t ls = 0;
  size_t lp = 0;
  luaL_checklstring(L, 1, &ls);
  const char* p = luaL_checklstring(L, 2, &lp);
  uint64_t cost = kFn == kFind && lua_toboolean(L, 4) ? (ls + 1) * std::max<size_t>(lp, 1)
                                                      : patternCost(p, lp, ls, kFn != kGmatch);
  chargeInstructions(L, cost);
  return callWrapped(L, 1);
}

// string.rep copies its string once per repetition, in C: charge the repetitions when the
// result fits the memory budget (when it does not, the allocation fails at once), and answer
// empty results without n empty copies.
int guardedRep(lua_State* L) {
  size_t l = 0;
  size_t lsep = 0;
  luaL_checklstring(L, 1, &l);
  const lua_Integer n = luaL_checkinteger(L, 2);
  luaL_optlstring(L, 3, "", &lsep);
  if (n > 0) {
    const size_t each = l + lsep;
    if (each == 0) {
      lua_pushliteral(L, "");
      return 1;
    }
    if (static_cast<uint64_t>(n) <= guardOf(L)->limit / each) {
      chargeInstructions(L, static_cast<uint64_t>(n));
    }
  }
  return callWrapped(L, 1);
}

// Other library functions whose C work grows with a table's or a string's size, charged
// before they run: sorting (n log n), shifting insert/remove, ranges of move/concat/unpack,
// and byte-wise string and utf8 functions. Estimates only; the function itself still checks
// its arguments and raises its own errors.
enum SizedFn { kSort, kInsert, kRemove, kMove, kConcat, kUnpack, kStringBytes };

double tableLength(lua_State* L, int idx) {
  return lua_type(L, idx) == LUA_TTABLE ? static_cast<double>(luaL_len(L, idx)) : 0;
}

double rangeLength(lua_State* L, int list, int from, int to) {
  if (lua_type(L, list) != LUA_TTABLE) return 1;
  const double i = lua_isnoneornil(L, from) ? 1 : static_cast<double>(lua_tointeger(L, from));
  const double j =
      lua_isnoneornil(L, to) ? tableLength(L, list) : static_cast<double>(lua_tointeger(L, to));
  return j - i + 1;
}

template <SizedFn kFn>
int guardedSized(lua_State* L) {
  double cost = 1;
  switch (kFn) {
    case kSort: {
      const double n = tableLength(L, 1);
      cost = n > 1 ? n * (1 + std::log2(n)) : 1;
      break;
    }
    case kInsert:  // table.insert(t, pos, v) shifts t[pos..]; an append is O(1)
      if (lua_gettop(L) >= 3) cost = tableLength(L, 1) - static_cast<double>(lua_tointeger(L, 2));
      break;
    case kRemove:
      if (lua_gettop(L) >= 2) cost = tableLength(L, 1) - static_cast<double>(lua_tointeger(L, 2));
      break;
    case kMove:
      cost = static_cast<double>(lua_tointeger(L, 3)) - static_cast<double>(lua_tointeger(L, 2));
      break;
    case kConcat:
      cost = rangeLength(L, 1, 3, 4);
      break;
    case kUnpack:
      cost = rangeLength(L, 1, 2, 3);
      break;
    case kStringBytes:
      if (lua_type(L, 1) == LUA_TSTRING) cost = static_cast<double>(lua_rawlen(L, 1));
      break;
  }
  cost = std::clamp(cost, 1.0, 1e18);
  chargeInstructions(L, static_cast<uint64_t>(cost));
  return callWrapped(L, 1);
}

// load(chunk [, chunkname [, mode [, env]]]): text only, and only from a string (whose size
// is charged: the parser is C code too). env defaults to the policy's own globals.
int sandboxLoad(lua_State* L) {
  if (lua_type(L, 1) != LUA_TSTRING) {
    return luaL_error(L, "load: a policy may load only a text chunk given as a string");
  }
  size_t len = 0;
  lua_tolstring(L, 1, &len);
  chargeInstructions(L, len);
  const int n = lua_gettop(L);
  lua_pushvalue(L, 1);
  if (n >= 2) {
    lua_pushvalue(L, 2);
  } else {
    lua_pushnil(L);
  }
  lua_pushliteral(L, "t");
  if (n >= 4) lua_pushvalue(L, 4);
  return callWrapped(L, n + 1);
}

// Finalizers would run at any allocation (or when the state closes), outside the limits of
// the call that made them: a policy may not have any.
int sandboxSetmetatable(lua_State* L) {
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, 2) != LUA_TNIL) {
      return luaL_error(L, "setmetatable: __gc metamethods are not allowed in policies");
    }
    lua_pop(L, 1);
  }
  lua_settop(L, 2);
  return callWrapped(L, 1);
}

void wrap(lua_State* L, int table, const char* name, lua_CFunction wrapper) {
  lua_getfield(L, table, name);
  lua_pushcclosure(L, wrapper, 1);
  lua_setfield(L, table, name);
}

int openSandbox(lua_State* L) {
  const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},
                           {LUA_STRLIBNAME, luaopen_string},
                           {LUA_TABLIBNAME, luaopen_table},
                           {LUA_MATHLIBNAME, luaopen_math},
                           {LUA_UTF8LIBNAME, luaopen_utf8}};
  for (const auto& lib : libs) {
    luaL_requiref(L, lib.name, lib.func, 1);
    lua_pop(L, 1);
  }
  lua_pushglobaltable(L);
  const int g = lua_gettop(L);
  for (const char* name :
       {"dofile", "loadfile", "print", "warn", "collectgarbage", "rawset", "require"}) {
    lua_pushnil(L);
    lua_setfield(L, g, name);
  }
  wrap(L, g, "load", sandboxLoad);
  wrap(L, g, "setmetatable", sandboxSetmetatable);

  lua_getfield(L, g, LUA_STRLIBNAME);
  const int str = lua_gettop(L);
  lua_pushnil(L);
  lua_setfield(L, str, "dump");
  wrap(L, str, "find", guardedPattern<kFind>);
  wrap(L, str, "match", guardedPattern<kMatch>);
  wrap(L, str, "gmatch", guardedPattern<kGmatch>);
  wrap(L, str, "gsub", guardedPattern<kGsub>);
  wrap(L, str, "rep", guardedRep);
  for (const char* name : {"upper", "lower", "reverse", "byte"}) {
    wrap(L, str, name, guardedSized<kStringBytes>);
  }
  lua_getfield(L, g, LUA_TABLIBNAME);
  const int tab = lua_gettop(L);
  wrap(L, tab, "sort", guardedSized<kSort>);
  wrap(L, tab, "insert", guardedSized<kInsert>);
  wrap(L, tab, "remove", guardedSized<kRemove>);
  wrap(L, tab, "move", guardedSized<kMove>);
  wrap(L, tab, "concat", guardedSized<kConcat>);
  wrap(L, tab, "unpack", guardedSized<kUnpack>);
  lua_getfield(L, g, LUA_UTF8LIBNAME);
  const int utf = lua_gettop(L);
  for (const char* name : {"len", "codepoint", "offset"}) {
    wrap(L, utf, name, guardedSized<kStringBytes>);
  }

  // A fixed seed: a policy evaluates the same way on every manager and in the simulator.
  lua_getfield(L, g, LUA_MATHLIBNAME);
  lua_getfield(L, -1, "randomseed");
  lua_pushinteger(L, 0);
  lua_call(L, 1, 0);
  lua_settop(L, 0);
  return 0;
}

}  // namespace

Guard* guardOf(lua_State* L) { return *static_cast<Guard**>(lua_getextraspace(L)); }

int policyError(lua_State* L, const char* fmt, ...) {
  const int line = policyLine(L);
  if (line > 0) {
    lua_pushfstring(L, "%s%d: ", kErrorPrefix, line);
  } else {
    lua_pushliteral(L, "");
  }
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  return lua_error(L);
}

void chargeInstructions(lua_State* L, uint64_t cost) {
  Guard* g = guardOf(L);
  g->counted = cost > std::numeric_limits<uint64_t>::max() - g->counted
                   ? std::numeric_limits<uint64_t>::max()
                   : g->counted + cost;
  if (g->trip == Trip::kNone && g->counted <= g->instructionLimit) return;
  if (g->trip == Trip::kNone) stop(L, g, Trip::kInstructions);
  raiseStopped(L);
}

Sandbox::Sandbox(std::string label, const Limits& limits)
    : label_(std::move(label)), limits_(limits) {
  guard_.limit = limits.memoryBytes;
  guard_.instructionLimit = limits.instructions;
  guard_.clock = limits.clock != nullptr ? limits.clock : &SystemClock::instance();
}

Sandbox::~Sandbox() {
  if (L_ != nullptr) lua_close(L_);
}

Result<std::unique_ptr<Sandbox>> Sandbox::create(std::string label, const Limits& limits) {
  std::unique_ptr<Sandbox> sb(new Sandbox(std::move(label), limits));
  sb->L_ = lua_newstate(budgetAlloc, &sb->guard_);
  if (sb->L_ == nullptr) {
    return Status::resourceExhausted(sb->label_ + ": memory limit exceeded (" +
                                     std::to_string(limits.memoryBytes) + " bytes)");
  }
  *static_cast<Guard**>(lua_getextraspace(sb->L_)) = &sb->guard_;
  sb->guard_.L = sb->L_;
  lua_atpanic(sb->L_, panic);
  if (Status s = sb->call(openSandbox, nullptr); !s) return s;
  return sb;
}

Status Sandbox::call(int (*fn)(lua_State*), void* arg, int nresults) {
  guard_.counted = 0;
  guard_.trip = Trip::kNone;
  guard_.tripLine = 0;
  guard_.refused = false;
  guard_.grown = 0;
  guard_.deadlineNs =
      guard_.clock->monotonicNanos() +
      std::chrono::duration_cast<std::chrono::nanoseconds>(limits_.deadline).count();
  lua_sethook(L_, countHook, LUA_MASKCOUNT, kHookEvery);
  lua_settop(L_, 0);
  lua_pushcfunction(L_, fn);
  lua_pushlightuserdata(L_, arg);
  guard_.inCall = true;
  const int rc = lua_pcall(L_, 1, nresults, 0);
  guard_.inCall = false;
  if (rc == LUA_OK && guard_.trip == Trip::kNone) return Status::ok();
  return failure(rc);
}

Status Sandbox::failure(int rc) {
  // Refusals past a deadline are not the budget's: only a budget refusal rebuilds the state.
  lastMemory_ = guard_.refused || (rc == LUA_ERRMEM && guard_.trip == Trip::kNone);
  lastLine_ = 0;
  Status::Code code = Status::Code::kInvalidArgument;
  if (guard_.trip == Trip::kInstructions) {
    code = Status::Code::kTimeout;
    lastLine_ = guard_.tripLine;
    lastProblem_ =
        "instruction limit exceeded (" + std::to_string(limits_.instructions) + " instructions)";
  } else if (guard_.trip == Trip::kDeadline) {
    code = Status::Code::kTimeout;
    lastLine_ = guard_.tripLine;
    lastProblem_ = "deadline exceeded (" + std::to_string(limits_.deadline.count()) + " ms)";
  } else if (rc == LUA_ERRMEM) {
    code = Status::Code::kResourceExhausted;
    lastProblem_ = guard_.refused
                       ? "memory limit exceeded (" + std::to_string(limits_.memoryBytes) + " bytes)"
                       : "out of memory";
  } else {
    if (lua_type(L_, -1) == LUA_TSTRING) {
      size_t len = 0;
      const char* s = lua_tolstring(L_, -1, &len);
      lastProblem_.assign(s, len);
    } else {
      lastProblem_ = std::string("error object is a ") + luaL_typename(L_, -1) + " value";
    }
    // "policy:12: attempt to index a nil value" -> line 12, "attempt to index a nil value".
    const std::size_t prefix = sizeof kErrorPrefix - 1;
    if (lastProblem_.compare(0, prefix, kErrorPrefix) == 0) {
      std::size_t i = prefix;
      int line = 0;
      while (i < lastProblem_.size() && lastProblem_[i] >= '0' && lastProblem_[i] <= '9' &&
             line < 100'000'000) {
        line = line * 10 + (lastProblem_[i++] - '0');
      }
      if (i > prefix && i < lastProblem_.size() && lastProblem_[i] == ':') {
        lastLine_ = line;
        ++i;
        if (i < lastProblem_.size() && lastProblem_[i] == ' ') ++i;
        lastProblem_.erase(0, i);
      }
    }
    if (guard_.refused && lastProblem_ == "not enough memory") {
      code = Status::Code::kResourceExhausted;
      lastProblem_ = "memory limit exceeded (" + std::to_string(limits_.memoryBytes) + " bytes)";
    }
  }
  lua_settop(L_, 0);
  if (maxLine_ > 0 && lastLine_ > maxLine_) lastLine_ = maxLine_;
  std::string message = label_;
  if (lastLine_ > 0) message += " line " + std::to_string(lastLine_);
  message += ": " + lastProblem_;
  return Status(code, std::move(message));
}

}  // namespace shoal::policy
