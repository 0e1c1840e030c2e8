#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "kernel/common/clock.h"
#include "kernel/common/status.h"
#include "kernel/policy/limits.h"

struct lua_State;

namespace shoal::policy {

// Why the count hook stopped a call.
enum class Trip : int { kNone = 0, kInstructions, kDeadline };

// The plain data a Lua state reaches through its extra space: the allocator's budget, the
// count hook's budget and deadline, and the declaration flags of shoal.policy. It lives inside
// the Sandbox (never on a stack that Lua unwinds), so Lua-facing C code may update it freely.
struct Guard {
  lua_State* L = nullptr;
  bool inCall = false;    // Sandbox::call is running
  std::size_t used = 0;   // bytes the state holds
  std::size_t limit = 0;  // Limits::memoryBytes
  bool refused = false;   // the allocator refused a request during this call
  std::size_t grown = 0;  // bytes allocated since the allocator last read the clock
  uint64_t counted = 0;   // instructions charged during this call
  uint64_t instructionLimit = 0;
  int64_t deadlineNs = 0;  // on clock's monotonic scale
  const Clock* clock = nullptr;
  Trip trip = Trip::kNone;
  int tripLine = 0;       // the policy's line when the hook stopped it (0: unknown)
  bool loading = false;   // the policy file's top level is running
  bool declared = false;  // shoal.policy{} was called
};

// The Lua state of one policy, sandboxed and limited:
//  - libraries: base (without dofile, loadfile, print, warn, collectgarbage, rawset), string
//    (without dump), table, math (with a fixed seed), utf8; `load` takes text chunks given as
//    strings only, `setmetatable` refuses __gc; no io, os, package, debug, coroutine;
//  - a lua_Alloc that keeps the state within Limits::memoryBytes, and that also reads the
//    deadline every 256 KiB allocated (refusing past it): C library work whose time goes with
//    the bytes it produces (concatenation, string.rep, gsub, table.concat) cannot overrun
//    the deadline by much between two count hooks;
//  - a count hook that stops a call after Limits::instructions or past Limits::deadline, and
//    keeps stopping it (every instruction) so a policy cannot pcall its way past the limit;
//    since the hook cannot interrupt C code, library functions whose C work grows with their
//    input are charged it up front: the pattern functions their worst-case matcher steps,
//    string.rep its repetitions, table.sort n log n, the shifting/range table functions and
//    the byte-wise string/utf8 ones their sizes.
// Every Lua API call that may raise runs inside call(), under lua_pcall.
// THREAD: one thread at a time (the owner's).
class Sandbox {
 public:
  // `label` names the policy in messages: `policy "binpack"`.
  static Result<std::unique_ptr<Sandbox>> create(std::string label, const Limits& limits);
  ~Sandbox();
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  lua_State* state() const { return L_; }
  Guard& guard() { return guard_; }
  const std::string& label() const { return label_; }
  std::size_t memoryUsed() const { return guard_.used; }

  // Runs fn with `arg` (a light userdata) as its only argument under lua_pcall, with a fresh
  // instruction budget and deadline. On success fn's `nresults` results are left on the stack
  // for the caller, who must read them with non-raising API calls only and then clear the
  // stack. On failure the stack is empty and the Status names the policy, the line and the
  // problem: `policy "spin" line 3: instruction limit exceeded (10000000 instructions)`.
  Status call(int (*fn)(lua_State*), void* arg, int nresults = 0);

  // About the last failed call: whether it ran out of memory (the state may still hold what a
  // policy hoarded, so the owner should rebuild it), the policy's line (0 when unknown) and
  // the problem without the label.
  bool lastFailedOnMemory() const { return lastMemory_; }
  int lastLine() const { return lastLine_; }
  const std::string& lastProblem() const { return lastProblem_; }

  // Lines after `lines` are reported as `lines` (an expression is compiled inside a wrapper
  // whose last line is not the user's). 0: no clamping.
  void setLastLine(int lines) { maxLine_ = lines; }

  // The chunk name policies are loaded with, and the prefix Lua puts on their error messages.
  static constexpr const char* kChunkName = "=policy";

 private:
  Sandbox(std::string label, const Limits& limits);
  Status failure(int rc);

  std::string label_;
  Limits limits_;
  Guard guard_;
  lua_State* L_ = nullptr;
  bool lastMemory_ = false;
  int lastLine_ = 0;
  int maxLine_ = 0;
  std::string lastProblem_;
};

// The Guard of a state made by Sandbox.
Guard* guardOf(lua_State* L);

// Raises a formatted error (lua_pushfstring's formats) at the innermost line of the policy's
// own chunk on the call stack, even when a C function (table.insert, say) is what raises it.
// Does not return.
int policyError(lua_State* L, const char* fmt, ...);

// Charges `cost` instructions to the running call; raises the instruction-limit error (which
// does not return) when the budget is spent. For Lua-facing C functions whose work the count
// hook cannot see.
void chargeInstructions(lua_State* L, uint64_t cost);

}  // namespace shoal::policy
