// kernel/policy: the declaration, the sandbox, read-only snapshot tables, filter/score/reasons,
// Lua constraint expressions, the limits (instructions, deadline, memory) and recovery after
// a failure, and the policies shipped in conf/policies.
#include <cppunit/extensions/HelperMacros.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "kernel/policy/policy.h"

using shoal::Status;
using shoal::policy::Limits;
using shoal::policy::NodeSnapshot;
using shoal::policy::Policy;
using shoal::policy::UsageUpdate;

namespace {

// A clock that does not move, as under the deterministic simulator.
class FrozenClock : public shoal::Clock {
 public:
  WallTime now() const override { return WallTime(); }
  MonoTime monotonic() const override { return MonoTime(); }
};

// The tests' limits: the defaults, with a clock that does not move, so only the instruction and
// memory budgets apply and no result depends on how loaded the machine is. The deadline tests
// use the real clock.
const FrozenClock kFrozen;
Limits testLimits() {
  Limits limits;
  limits.clock = &kFrozen;
  return limits;
}

// Four nodes. memory_free: n1 6e9, n2 1e9, n3 16e9, n4 4e9.
const char kNodes[] = R"({"schema": "shoal.nodes/v1", "nodes": [
  {"id": "n1", "hostname": "alpha", "role": "manager", "availability": "active", "state": "ready",
   "platform": {"os": "linux", "arch": "amd64"},
   "labels": {"zone": "east", "maintenance": "true"}, "engine_labels": {"gpu": "yes"},
   "resources": {"nano_cpus": 4000000000, "memory_bytes": 8000000000},
   "reserved": {"nano_cpus": 1000000000, "memory_bytes": 2000000000},
   "tasks": 3, "service_tasks": {"svc-web": 2, "svc-db": 1}},
  {"id": "n2", "hostname": "beta", "role": "worker", "availability": "active", "state": "ready",
   "platform": {"os": "linux", "arch": "arm64"}, "labels": {"zone": "west"},
   "resources": {"nano_cpus": 4000000000, "memory_bytes": 8000000000},
   "reserved": {"nano_cpus": 3000000000, "memory_bytes": 7000000000},
   "tasks": 5, "service_tasks": {"svc-web": 1}},
  {"id": "n3", "hostname": "gamma", "role": "worker", "availability": "active", "state": "ready",
   "labels": {"zone": "east"},
   "resources": {"nano_cpus": 8000000000, "memory_bytes": 16000000000}},
  {"id": "n4", "hostname": "delta", "role": "worker", "availability": "active", "state": "down",
   "resources": {"nano_cpus": 2000000000, "memory_bytes": 4000000000},
   "failures": {"svc-web": 2}}
]})";

std::string group(const std::string& service, const std::string& name, int64_t memory = 500000000) {
  return R"({"schema": "shoal.task-group/v1", "service_id": ")" + service +
         R"(", "service_name": ")" + name +
         R"(", "spec": {"placement": {"constraints": ["node.role==worker"]},
         "resources": {"nano_cpus": 500000000, "memory_bytes": )" +
         std::to_string(memory) + R"(}}, "tasks": ["t1", "t2"]})";
}

const std::string kWeb = group("svc-web", "web");

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::unique_ptr<Policy> mustCompile(const std::string& name, const std::string& source,
                                    const Limits& limits = testLimits()) {
  auto p = Policy::compile(name, source, limits);
  CPPUNIT_ASSERT_MESSAGE(p.status().toString(), p.isOk());
  return std::move(p).value();
}

// A policy bound to kNodes and a group.
std::unique_ptr<Policy> bound(const std::string& name, const std::string& source,
                              const std::string& groupJson = kWeb,
                              const Limits& limits = testLimits()) {
  auto p = mustCompile(name, source, limits);
  Status s = p->bindNodes(kNodes);
  CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
  s = p->setGroup(groupJson);
  CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
  return p;
}

std::string filterOnly(const std::string& body) {
  return "return shoal.policy{\n  filter = function(task, node)\n    " + body +
         "\n    return true\n  end,\n}\n";
}

std::vector<uint8_t> allFit() { return std::vector<uint8_t>(4, 1); }

Status runFilter(Policy& p, std::vector<uint8_t>* fit = nullptr) {
  std::vector<uint8_t> local = allFit();
  return p.filter(fit != nullptr ? fit->data() : local.data(), 4);
}

std::string fitString(const std::vector<uint8_t>& fit) {
  std::string s;
  for (uint8_t f : fit) s += f != 0 ? '1' : '0';
  return s;
}

double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string shipped(const std::string& file) {
  return readFile(std::string(SHOAL_SOURCE_DIR) + "/conf/policies/" + file);
}

}  // namespace

class PolicyTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(PolicyTest);
  CPPUNIT_TEST(testValidDeclarationIsRead);
  CPPUNIT_TEST(testDeclarationErrorsNameTheLine);
  CPPUNIT_TEST(testShoalPolicyOnlyOnceAndOnlyWhileLoading);
  CPPUNIT_TEST(testSandboxHidesUnsafeFunctions);
  CPPUNIT_TEST(testGlobalsAreReadOnlyAtEvaluation);
  CPPUNIT_TEST(testSnapshotTablesAreReadOnly);
  CPPUNIT_TEST(testSnapshotTablesCanBeRead);
  CPPUNIT_TEST(testFilterScoreAndReasons);
  CPPUNIT_TEST(testOnlyFittingNodesAreEvaluated);
  CPPUNIT_TEST(testScoreMustBeANumber);
  CPPUNIT_TEST(testExpressionFilters);
  CPPUNIT_TEST(testExpressionErrors);
  CPPUNIT_TEST(testRunawayLoopStoppedByInstructionLimit);
  CPPUNIT_TEST(testPcallCannotEscapeTheLimit);
  CPPUNIT_TEST(testRunawayLoopStoppedByDeadline);
  CPPUNIT_TEST(testPatternBacktrackingIsCharged);
  CPPUNIT_TEST(testStringRepIsCharged);
  CPPUNIT_TEST(testAllocatorEnforcesTheDeadline);
  CPPUNIT_TEST(testSizedLibraryCallsAreCharged);
  CPPUNIT_TEST(testAllocationBombStoppedByMemoryLimit);
  CPPUNIT_TEST(testPolicyUsableAfterFailures);
  CPPUNIT_TEST(testTopLevelLimits);
  CPPUNIT_TEST(testUsageUpdatesAndRebind);
  CPPUNIT_TEST(testGroupSetsServiceCounts);
  CPPUNIT_TEST(testBadDocumentsAreRefused);
  CPPUNIT_TEST(testShippedBinpack);
  CPPUNIT_TEST(testShippedZoneSpread);
  CPPUNIT_TEST(testShippedKeepOffMaintenance);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testValidDeclarationIsRead() {
    const std::string src = R"(
      return shoal.policy{
        name = "declared",
        description = "keeps workers",
        filter = function(task, node) return node.role == "worker", "not a worker" end,
      })";
    CPPUNIT_ASSERT(Policy::validate("workers", src, testLimits()).isOk());
    auto p = mustCompile("workers", src);
    CPPUNIT_ASSERT_EQUAL(std::string("keeps workers"), p->description());
    CPPUNIT_ASSERT_EQUAL(std::string("declared"), p->declaredName());
    // The object's name is the one messages use.
    CPPUNIT_ASSERT_EQUAL(std::string("policy \"workers\""), p->label());
    CPPUNIT_ASSERT(p->hasFilter());
    CPPUNIT_ASSERT(!p->hasScore());
  }

  void testDeclarationErrorsNameTheLine() {
    struct Case {
      std::string source;
      std::string message;
    };
    const std::vector<Case> cases = {
        {"return shoal.policy{\n  filter = function(t, n)\n    return true end end,\n}\n",
         "policy \"bad\" line 3: "},
        {"return shoal.policy{\n  name = \"x\",\n  fitler = function(t, n)\n    return true\n"
         "  end,\n}\n",
         "policy \"bad\" line 3: shoal.policy: unknown field 'fitler' (known fields: name, "
         "description, filter, score, prepare)"},
        {"\nreturn shoal.policy{\n  score = 5,\n}\n",
         "policy \"bad\" line 2: shoal.policy: field 'score' must be a function, not a number"},
        {"return shoal.policy{ name = \"x\" }\n",
         "policy \"bad\" line 1: shoal.policy: a policy needs a filter or a score function"},
        {"return shoal.policy{ [1] = function() end }\n",
         "policy \"bad\" line 1: shoal.policy: field names must be strings"},
        {"local x = 1\n",
         "policy \"bad\": a policy file must return shoal.policy{...} (it "
         "returned nil)"},
        {"local d = shoal.policy{ filter = function() return true end }\nreturn {}\n",
         "policy \"bad\": a policy file must return the declaration shoal.policy{...} made"},
        {"local cfg = nil\nlocal zone = cfg.zone\nreturn shoal.policy{ filter = function() end }",
         "policy \"bad\" line 2: attempt to index a nil value (local 'cfg')"},
        {"return shoal.policy{ name = \"\", filter = function() end }",
         "policy \"bad\" line 1: shoal.policy: name must not be empty"},
    };
    for (const auto& c : cases) {
      Status s = Policy::validate("bad", c.source, testLimits());
      CPPUNIT_ASSERT_MESSAGE(c.source, !s.isOk());
      CPPUNIT_ASSERT_MESSAGE(s.message(), s.code() == Status::Code::kInvalidArgument);
      CPPUNIT_ASSERT_MESSAGE(s.message() + "\nwant: " + c.message,
                             contains(s.message(), c.message));
    }
    auto p = Policy::compile("bad", cases[1].source, testLimits());
    CPPUNIT_ASSERT(!p.isOk());
    CPPUNIT_ASSERT(
        !Policy::compile("", "return shoal.policy{ filter = print }", testLimits()).isOk());
  }

  void testShoalPolicyOnlyOnceAndOnlyWhileLoading() {
    Status s = Policy::validate("twice",
                                "local a = shoal.policy{ filter = function() return true end }\n"
                                "return shoal.policy{ filter = function() return true end }\n",
                                testLimits());
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "line 2: shoal.policy may be called "
                                                 "only once"));
    auto p = bound("late", filterOnly("shoal.policy{ filter = function() end }"));
    s = runFilter(*p);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "policy \"late\" line 3: shoal.policy "
                                                 "may be called only while the "
                                                 "policy file loads"));
  }

  void testSandboxHidesUnsafeFunctions() {
    const std::string src = R"(
      for _, name in ipairs{"io", "os", "require", "dofile", "loadfile", "print", "debug",
                            "collectgarbage", "package", "coroutine", "warn", "rawset"} do
        if _G[name] ~= nil then error(name .. " is available") end
      end
      if string.dump ~= nil then error("string.dump is available") end
      local f, err = load("\27LuaT\0\25\147\r\n\26\n")
      if f ~= nil or not tostring(err):find("binary chunk", 1, true) then
        error("a binary chunk loaded: " .. tostring(err))
      end
      if pcall(load, function() return nil end) then error("load took a reader function") end
      if pcall(setmetatable, {}, {__gc = function() end}) then error("__gc was allowed") end
      local two = load("return 1 + 1")
      if two == nil or two() ~= 2 then error("text chunks do not load") end
      -- A loaded chunk sees the policy's own globals, and nothing else.
      if load("return io")() ~= nil or load("return string")() ~= string then
        error("load has another environment")
      end
      return shoal.policy{ filter = function() return true end }
    )";
    Status s = Policy::validate("sandbox", src, testLimits());
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());

    s = Policy::validate("exit", "os.exit(1)\n", testLimits());
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "policy \"exit\" line 1: attempt to index a nil "
                                                 "value (global 'os')"));
    s = Policy::validate("io", "\nlocal f = io.open('/etc/passwd')\n", testLimits());
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "line 2: attempt to index a nil "
                                                 "value (global 'io')"));
    s = Policy::validate("req", "require('os')\n", testLimits());
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "attempt to call a nil value (global "
                                                 "'require')"));
    s = Policy::validate("dofile", "dofile('/etc/passwd')\n", testLimits());
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "global 'dofile'"));
    s = Policy::validate("gc", "collectgarbage()\n", testLimits());
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "global 'collectgarbage'"));
    s = Policy::validate("gc2", "setmetatable({}, {__gc = function() end})\n", testLimits());
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "__gc metamethods are not allowed"));
    s = Policy::validate("bin", "local f = assert(load(string.char(27) .. 'Lua'))\n", testLimits());
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "attempt to load a binary chunk"));
  }

  void testGlobalsAreReadOnlyAtEvaluation() {
    auto p = bound("leak", filterOnly("counter = (counter or 0) + 1"));
    Status s = runFilter(*p);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "policy \"leak\" line 3: attempt to "
                                                 "set global 'counter' at evaluation "
                                                 "time"));
    // Globals set by the top level stay readable; upvalues stay writable.
    p = bound("ok",
              "limit = 3\nlocal seen = 0\nreturn shoal.policy{ filter = function(t, n)\n"
              "  seen = seen + 1\n  return seen <= limit\nend }\n");
    std::vector<uint8_t> fit = allFit();
    s = p->filter(fit.data(), 4);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("1110"), fitString(fit));
  }

  void testSnapshotTablesAreReadOnly() {
    const std::vector<std::pair<std::string, std::string>> writes = {
        {"node.memory_free = 0", "attempt to modify read-only table node (field 'memory_free')"},
        {"node.extra = 1", "attempt to modify read-only table node (field 'extra')"},
        {"node.labels.zone = 'x'", "attempt to modify read-only table node.labels (field 'zone')"},
        {"node.engine_labels.x = 'y'", "attempt to modify read-only table"},
        {"node.platform.os = 'plan9'",
         "attempt to modify read-only table node.platform (field 'os')"},
        {"task.service_id = 'x'", "attempt to modify read-only table task (field 'service_id')"},
        {"task.reservations.memory_bytes = 0",
         "attempt to modify read-only table task.reservations"},
        {"task.spec.placement.constraints[1] = 'x'",
         "attempt to modify read-only table task.spec.placement.constraints (field '1')"},
        {"table.insert(task.spec.placement.constraints, 'x')",
         "attempt to modify read-only table task.spec.placement.constraints (field '2')"},
        {"setmetatable(node, nil)", "cannot change a protected metatable"},
    };
    for (const auto& [code, message] : writes) {
      auto p = bound("ro", filterOnly(code));
      Status s = runFilter(*p);
      CPPUNIT_ASSERT_MESSAGE(code, !s.isOk());
      CPPUNIT_ASSERT_MESSAGE(code + ": " + s.message(),
                             contains(s.message(), "policy \"ro\" line 3: " + message));
    }
    // pairs() never hands out the backing table.
    auto p = bound("ro", filterOnly("local _, state = pairs(node)\n    state.memory_free = 0"));
    Status s = runFilter(*p);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "read-only table node"));
  }

  void testSnapshotTablesCanBeRead() {
    const std::string src = R"(
      local function check(cond, what) if not cond then error(what, 2) end end
      return shoal.policy{
        filter = function(task, node)
          if node.id ~= "n1" then return true end
          check(node.hostname == "alpha" and node.role == "manager", "strings")
          check(node.availability == "active" and node.state == "ready", "state")
          check(node.platform.os == "linux" and node.platform.arch == "amd64", "platform")
          check(node.labels.zone == "east" and node.engine_labels.gpu == "yes", "labels")
          local n = 0
          for k, v in pairs(node.labels) do n = n + 1 end
          check(n == 2, "pairs over labels")
          check(node.nano_cpus == 4000000000 and node.memory_bytes == 8000000000, "resources")
          check(node.nano_cpus_free == 3000000000 and node.memory_free == 6000000000, "free")
          check(math.type(node.memory_free) == "integer", "integers")
          check(node.tasks == 3 and node.service_tasks == 2 and node.failures == 0, "counts")
          check(task.service_id == "svc-web" and task.service_name == "web", "task")
          check(task.reservations.nano_cpus == 500000000, "reservations")
          check(task.reservations.memory_bytes == 500000000, "reservations")
          local c = task.spec.placement.constraints
          check(#c == 1 and c[1] == "node.role==worker", "spec")
          for i, v in ipairs(c) do check(v == c[i], "ipairs") end
          check(task.spec.resources.nano_cpus == 500000000, "spec.resources")
          check(getmetatable(node) == "node", "metatable hidden")
          return false, "checked"
        end,
      })";
    auto p = bound("reader", src);
    std::vector<uint8_t> fit = allFit();
    std::map<std::string, int> reasons;
    Status s = p->filter(fit.data(), 4, &reasons);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("0111"), fitString(fit));
    CPPUNIT_ASSERT_EQUAL(1, reasons["checked"]);
  }

  void testFilterScoreAndReasons() {
    const std::string src = R"(
      return shoal.policy{
        filter = function(task, node)
          if node.state ~= "ready" then return false, "node is " .. node.state end
          if node.memory_free < 2e9 then return false, "low memory" end
          if node.role ~= "worker" then return false end
          return true
        end,
        score = function(task, node)
          return node.memory_free / 1e9 + 0.0006
        end,
      })";
    auto p = bound("pick", src);
    std::vector<uint8_t> fit = allFit();
    std::map<std::string, int> reasons;
    Status s = p->filter(fit.data(), 4, &reasons);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("0010"), fitString(fit));
    CPPUNIT_ASSERT_EQUAL(std::size_t(3), reasons.size());
    CPPUNIT_ASSERT_EQUAL(1, reasons["node is down"]);
    CPPUNIT_ASSERT_EQUAL(1, reasons["low memory"]);
    CPPUNIT_ASSERT_EQUAL(1, reasons[""]);
    CPPUNIT_ASSERT_EQUAL(std::string("1 node rejected by policy \"pick\"; "
                                     "1 node rejected by policy \"pick\": low memory; "
                                     "1 node rejected by policy \"pick\": node is down"),
                         p->explain());

    std::vector<uint8_t> all = allFit();
    std::vector<int64_t> score(4, -1);
    s = p->score(all.data(), score.data(), 4);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    CPPUNIT_ASSERT_EQUAL(int64_t(6001), score[0]);  // x1000, rounded
    CPPUNIT_ASSERT_EQUAL(int64_t(1001), score[1]);
    CPPUNIT_ASSERT_EQUAL(int64_t(16001), score[2]);
    CPPUNIT_ASSERT_EQUAL(int64_t(4001), score[3]);
    s = p->score(fit.data(), score.data(), 4);
    CPPUNIT_ASSERT(s.isOk());
    CPPUNIT_ASSERT_EQUAL(int64_t(0), score[0]);  // does not fit
    CPPUNIT_ASSERT_EQUAL(int64_t(16001), score[2]);

    // Huge scores are clamped; a filter-only policy scores zero; a score-only one keeps all.
    auto big = bound("big", "return shoal.policy{ score = function() return 1e300 end }");
    s = big->score(all.data(), score.data(), 4);
    CPPUNIT_ASSERT(s.isOk());
    CPPUNIT_ASSERT_EQUAL(int64_t(1000000000000000000), score[0]);
    big->filter(fit.data(), 4);
    CPPUNIT_ASSERT_EQUAL(std::string("0010"), fitString(fit));
    auto noScore = bound("f", filterOnly(""));
    s = noScore->score(all.data(), score.data(), 4);
    CPPUNIT_ASSERT(s.isOk());
    CPPUNIT_ASSERT_EQUAL(int64_t(0), score[2]);
    // The node count must be the snapshot's.
    s = p->filter(fit.data(), 3);
    CPPUNIT_ASSERT(s.code() == Status::Code::kInvalidArgument);
  }

  void testOnlyFittingNodesAreEvaluated() {
    auto p = bound("picky", filterOnly("if node.id == 'n4' then error('n4 was evaluated') end"));
    std::vector<uint8_t> fit = {1, 0, 1, 0};
    Status s = p->filter(fit.data(), 4);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("1010"), fitString(fit));
    fit = allFit();
    s = p->filter(fit.data(), 4);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "policy \"picky\" line 3: n4 was "
                                                 "evaluated"));
    CPPUNIT_ASSERT_EQUAL(std::string("1111"), fitString(fit));  // unchanged on failure
    CPPUNIT_ASSERT_EQUAL(3, p->lastError().line);
    CPPUNIT_ASSERT_EQUAL(std::string("n4 was evaluated"), p->lastError().problem);
  }

  void testScoreMustBeANumber() {
    auto p = bound("words",
                   "return shoal.policy{\n  filter = function() return true end,\n"
                   "  score = function(task, node)\n    return 'high'\n  end,\n}\n");
    std::vector<uint8_t> fit = allFit();
    std::vector<int64_t> score(4, 7);
    Status s = p->score(fit.data(), score.data(), 4);
    CPPUNIT_ASSERT_EQUAL(std::string("policy \"words\" line 3: score must return a number, but "
                                     "returned string for node n1"),
                         s.message());
    CPPUNIT_ASSERT_EQUAL(int64_t(7), score[0]);
    p = bound("nan", "return shoal.policy{ score = function() return 0/0 end }");
    s = p->score(fit.data(), score.data(), 4);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "score returned NaN for node n1"));
  }

  void testExpressionFilters() {
    auto e = Policy::expression(R"(node.labels.zone ~= "east" and node.memory_free > 5e8)",
                                testLimits());
    CPPUNIT_ASSERT_MESSAGE(e.status().toString(), e.isOk());
    Policy& p = **e;
    CPPUNIT_ASSERT(p.kind() == Policy::Kind::kExpression);
    CPPUNIT_ASSERT(p.bindNodes(kNodes).isOk());
    CPPUNIT_ASSERT(p.setGroup(kWeb).isOk());
    std::vector<uint8_t> fit = allFit();
    Status s = p.filter(fit.data(), 4);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("0101"), fitString(fit));
    CPPUNIT_ASSERT_EQUAL(std::string("2 nodes rejected by lua constraint `node.labels.zone ~= "
                                     "\"east\" and node.memory_free > 5e8`"),
                         p.explain());
    // The task is in scope too; a truthy non-boolean counts as true.
    auto t = Policy::expression("task.reservations.memory_bytes <= node.memory_free and node.id",
                                testLimits());
    CPPUNIT_ASSERT(t.isOk());
    CPPUNIT_ASSERT((*t)->bindNodes(kNodes).isOk());
    CPPUNIT_ASSERT((*t)->setGroup(group("svc-web", "web", 3000000000)).isOk());
    fit = allFit();
    CPPUNIT_ASSERT((*t)->filter(fit.data(), 4).isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("1011"), fitString(fit));
    CPPUNIT_ASSERT(
        Policy::validateExpression("node.role == 'worker' -- a comment", testLimits()).isOk());
  }

  void testExpressionErrors() {
    Status s = Policy::validateExpression("node.labels.zone ==", testLimits());
    CPPUNIT_ASSERT(s.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(s.message(),
                           contains(s.message(), "lua constraint `node.labels.zone ==` line 1: "));
    s = Policy::validateExpression("x = 1", testLimits());
    CPPUNIT_ASSERT_MESSAGE(s.message(), !s.isOk());
    s = Policy::validateExpression("true) end os.exit(1) (function() return true", testLimits());
    CPPUNIT_ASSERT_MESSAGE(s.message(), !s.isOk());
    s = Policy::validateExpression("  ", testLimits());
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "empty"));
    auto e = Policy::expression("node.labels.zone:upper() == 'EAST'", testLimits());
    CPPUNIT_ASSERT(e.isOk());
    CPPUNIT_ASSERT((*e)->bindNodes(kNodes).isOk());
    CPPUNIT_ASSERT((*e)->setGroup(kWeb).isOk());
    s = runFilter(**e);
    CPPUNIT_ASSERT_EQUAL(std::string("lua constraint `node.labels.zone:upper() == 'EAST'` line 1: "
                                     "attempt to index a nil value (field 'zone')"),
                         s.message());
    e = Policy::expression("(function() while true do end end)()", testLimits());
    CPPUNIT_ASSERT(e.isOk());
    CPPUNIT_ASSERT((*e)->bindNodes(kNodes).isOk());
    CPPUNIT_ASSERT((*e)->setGroup(kWeb).isOk());
    s = runFilter(**e);
    CPPUNIT_ASSERT(s.code() == Status::Code::kTimeout);
    CPPUNIT_ASSERT_MESSAGE(s.message(),
                           contains(s.message(), "line 1: instruction limit exceeded"));
  }

  void testRunawayLoopStoppedByInstructionLimit() {
    auto p = bound("spin",
                   "return shoal.policy{\n  filter = function(task, node)\n"
                   "    while true do end\n  end,\n}\n");
    std::vector<uint8_t> fit = {1, 0, 1, 1};
    auto t0 = std::chrono::steady_clock::now();
    Status s = p->filter(fit.data(), 4);
    const double took = secondsSince(t0);
    CPPUNIT_ASSERT(s.code() == Status::Code::kTimeout);
    CPPUNIT_ASSERT_EQUAL(
        std::string("policy \"spin\" line 3: instruction limit exceeded (10000000 instructions)"),
        s.message());
    CPPUNIT_ASSERT_MESSAGE(std::to_string(took), took < 10.0);
    CPPUNIT_ASSERT_EQUAL(std::string("1011"), fitString(fit));
  }

  void testPcallCannotEscapeTheLimit() {
    const std::string src = R"(
      return shoal.policy{
        filter = function(task, node)
          while true do
            pcall(function() while true do end end)
            xpcall(function() while true do end end, function(e) return e end)
          end
        end,
      })";
    Limits limits = testLimits();
    limits.instructions = 1'000'000;
    auto p = bound("sly", src, kWeb, limits);
    auto t0 = std::chrono::steady_clock::now();
    Status s = runFilter(*p);
    CPPUNIT_ASSERT(s.code() == Status::Code::kTimeout);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "instruction limit exceeded (1000000 "
                                                 "instructions)"));
    CPPUNIT_ASSERT(secondsSince(t0) < 10.0);
    // A policy that swallows the error and returns normally still fails the call.
    p = bound("swallow",
              "return shoal.policy{ filter = function()\n"
              "  pcall(function() while true do end end)\n  return true\nend }",
              kWeb, limits);
    s = runFilter(*p);
    CPPUNIT_ASSERT_MESSAGE(s.message(), s.code() == Status::Code::kTimeout);
  }

  void testRunawayLoopStoppedByDeadline() {
    Limits limits;
    limits.instructions = std::numeric_limits<uint64_t>::max() / 2;
    limits.deadline = std::chrono::milliseconds(100);
    auto p = bound("slow",
                   "return shoal.policy{\n  score = function(task, node)\n"
                   "    local x = 0\n    while true do x = x + 1 end\n  end,\n}\n",
                   kWeb, limits);
    std::vector<uint8_t> fit = allFit();
    std::vector<int64_t> score(4, 0);
    auto t0 = std::chrono::steady_clock::now();
    Status s = p->score(fit.data(), score.data(), 4);
    const double took = secondsSince(t0);
    CPPUNIT_ASSERT(s.code() == Status::Code::kTimeout);
    CPPUNIT_ASSERT_EQUAL(std::string("policy \"slow\" line 4: deadline exceeded (100 ms)"),
                         s.message());
    CPPUNIT_ASSERT_MESSAGE(std::to_string(took), took >= 0.09 && took < 10.0);
  }

  void testPatternBacktrackingIsCharged() {
    // Exponential work inside the C matcher, where the count hook cannot stop it.
    auto p = bound("regex", filterOnly("local s = string.rep('a', 5000)\n"
                                       "    local x = s:find('.-.-.-.-.-b')"));
    auto t0 = std::chrono::steady_clock::now();
    Status s = runFilter(*p);
    CPPUNIT_ASSERT(s.code() == Status::Code::kTimeout);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "policy \"regex\" line 4: "
                                                 "instruction limit exceeded"));
    CPPUNIT_ASSERT(secondsSince(t0) < 10.0);
    // Ordinary patterns on labels cost next to nothing.
    p = bound("labels", filterOnly("local a, b = (node.hostname .. '-12'):match('^(%a+)-(%d+)$')\n"
                                   "    assert(b == '12')\n"
                                   "    for w in ('a,b,c'):gmatch('[^,]+') do end\n"
                                   "    local t = ('x y'):gsub('%s+', '_')\n"
                                   "    assert(('abc'):find('b', 1, true) == 2)"));
    s = runFilter(*p);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
  }

  void testStringRepIsCharged() {
    // With a clock that never moves (the simulator's), only the instruction budget bounds a
    // loop whose work is in C: string.rep is charged per repetition.
    Limits limits = testLimits();
    auto p = bound("reps", filterOnly("while true do local s = string.rep('x', 1000000) end"), kWeb,
                   limits);
    auto t0 = std::chrono::steady_clock::now();
    Status s = runFilter(*p);
    CPPUNIT_ASSERT_EQUAL(
        std::string("policy \"reps\" line 3: instruction limit exceeded (10000000 instructions)"),
        s.message());
    CPPUNIT_ASSERT(secondsSince(t0) < 10.0);
    // Empty results come back at once, however many repetitions.
    p = bound("empty",
              filterOnly("assert(string.rep('', 1 << 60) == '')\n"
                         "    assert(('ab'):rep(3, ',') == 'ab,ab,ab')"),
              kWeb, limits);
    s = runFilter(*p);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
  }

  void testAllocatorEnforcesTheDeadline() {
    // One long C call (gsub over 8 MiB) that the count hook cannot interrupt: the allocator
    // sees the deadline pass while the result grows, and refuses.
    Limits limits;
    limits.instructions = std::numeric_limits<uint64_t>::max() / 2;
    limits.deadline = std::chrono::milliseconds(20);
    auto p = bound("gsub",
                   "return shoal.policy{ filter = function(task, node)\n"
                   "  local big = string.rep(string.rep('a', 1024), 8192)\n"
                   "  for i = 1, 100 do local t = big:gsub('.', 'b') end\n"
                   "  return true\nend }\n",
                   kWeb, limits);
    auto t0 = std::chrono::steady_clock::now();
    Status s = runFilter(*p);
    CPPUNIT_ASSERT(s.code() == Status::Code::kTimeout);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "deadline exceeded (20 ms)"));
    CPPUNIT_ASSERT_MESSAGE(std::to_string(secondsSince(t0)), secondsSince(t0) < 10.0);
    // The loop runs too few instructions for the count hook to fire even once: the allocator
    // stopped it (which is why the line is unknown).
    CPPUNIT_ASSERT_EQUAL(0, p->lastError().line);
  }

  void testSizedLibraryCallsAreCharged() {
    // Each of these is one instruction calling C work on a million elements (or bytes); the
    // count hook would only see them every thousand instructions.
    const std::string setup =
        "local t, big = {}, string.rep('ab', 4000000)\n"
        "for i = 1, 1000000 do t[i] = i end\n";
    for (const std::string loop :
         {"while true do table.sort(t) end", "while true do table.insert(t, 1, 0) end",
          "while true do table.remove(t, 1) end", "while true do table.move(t, 1, #t, 2) end",
          "while true do local n = utf8.len(big) end", "while true do local u = big:upper() end"}) {
      auto p = bound("sized", setup + "return shoal.policy{ filter = function(task, node)\n  " +
                                  loop + "\nend }\n");
      auto t0 = std::chrono::steady_clock::now();
      Status s = runFilter(*p);
      CPPUNIT_ASSERT_MESSAGE(loop + ": " + s.message(),
                             contains(s.message(),
                                      "policy \"sized\" line 4: instruction limit "
                                      "exceeded"));
      CPPUNIT_ASSERT_MESSAGE(loop, secondsSince(t0) < 10.0);
    }
    // Ordinary sizes cost next to nothing.
    auto p = bound("small",
                   filterOnly("local t = {3, 1, 2}\n    table.sort(t)\n"
                              "    table.insert(t, 4)\n    table.insert(t, 1, 0)\n"
                              "    assert(table.concat(t, ',') == '0,1,2,3,4')\n"
                              "    assert(select('#', table.unpack(t)) == 5)\n"
                              "    assert(table.remove(t, 1) == 0 and utf8.len('h\\u{e9}') == 2)"));
    Status s = runFilter(*p);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
  }

  void testAllocationBombStoppedByMemoryLimit() {
    const std::string src =
        "local hoard, chunk = {}, string.rep('x', 4096)\n"
        "return shoal.policy{\n"
        "  filter = function(task, node)\n"
        "    while true do hoard[#hoard + 1] = chunk .. #hoard end\n"
        "  end,\n}\n";
    auto p = bound("hog", src);
    auto t0 = std::chrono::steady_clock::now();
    Status s = runFilter(*p);
    CPPUNIT_ASSERT(s.code() == Status::Code::kResourceExhausted);
    CPPUNIT_ASSERT_EQUAL(std::string("policy \"hog\": memory limit exceeded (33554432 bytes)"),
                         s.message());
    CPPUNIT_ASSERT(secondsSince(t0) < 10.0);
    CPPUNIT_ASSERT(p->memoryUsed() <= 33554432u);
    // One huge allocation.
    p = bound("big", filterOnly("local s = string.rep('x', 1 << 30)"));
    s = runFilter(*p);
    CPPUNIT_ASSERT_EQUAL(std::string("policy \"big\": memory limit exceeded (33554432 bytes)"),
                         s.message());
  }

  void testPolicyUsableAfterFailures() {
    // Loops, hoards or errors only for the services named so.
    const std::string src = R"(
      local hoard, chunk = {}, string.rep("y", 8192)
      return shoal.policy{
        filter = function(task, node)
          if task.service_name == "spin" then while true do end end
          if task.service_name == "hog" then
            while true do hoard[#hoard + 1] = chunk .. #hoard end
          end
          if task.service_name == "oops" then error("oops") end
          return node.role == "worker"
        end,
      })";
    auto p = bound("moody", src);
    const std::size_t baseline = p->memoryUsed();
    for (const char* bad : {"spin", "hog", "oops", "hog"}) {
      CPPUNIT_ASSERT(p->setGroup(group("svc-" + std::string(bad), bad)).isOk());
      Status s = runFilter(*p);
      CPPUNIT_ASSERT_MESSAGE(bad, !s.isOk());
      CPPUNIT_ASSERT(p->setGroup(kWeb).isOk());
      std::vector<uint8_t> fit = allFit();
      s = p->filter(fit.data(), 4);
      CPPUNIT_ASSERT_MESSAGE(std::string(bad) + ": " + s.toString(), s.isOk());
      CPPUNIT_ASSERT_EQUAL(std::string("0111"), fitString(fit));
      // What the hog hoarded is gone (the state was rebuilt).
      CPPUNIT_ASSERT_MESSAGE(std::to_string(p->memoryUsed()), p->memoryUsed() < baseline * 2);
    }
  }

  void testTopLevelLimits() {
    Limits limits = testLimits();
    limits.instructions = 100'000;
    Status s = Policy::validate("loop", "\nwhile true do end\n", limits);
    CPPUNIT_ASSERT_EQUAL(
        std::string("policy \"loop\" line 2: instruction limit exceeded (100000 instructions)"),
        s.message());
    s = Policy::validate("fat", "local t = {}\nfor i = 1, 1e9 do t[i] = i end\n", testLimits());
    CPPUNIT_ASSERT_EQUAL(std::string("policy \"fat\": memory limit exceeded (33554432 bytes)"),
                         s.message());
  }

  void testUsageUpdatesAndRebind() {
    auto snap = NodeSnapshot::parse(kNodes);
    CPPUNIT_ASSERT(snap.isOk());
    auto p = mustCompile("usage",
                         "return shoal.policy{ score = function(task, node)\n"
                         "  return node.memory_free / 1e9 + node.tasks * 100 + "
                         "node.service_tasks * 10000 + node.nano_cpus_free / 1e12\n"
                         "end }");
    CPPUNIT_ASSERT(p->bindNodes(*snap).isOk());
    CPPUNIT_ASSERT(p->setGroup(kWeb).isOk());
    std::vector<uint8_t> fit = allFit();
    std::vector<int64_t> score(4, 0);
    CPPUNIT_ASSERT(p->score(fit.data(), score.data(), 4).isOk());
    CPPUNIT_ASSERT_EQUAL(int64_t(20306003), score[0]);  // 2 svc, 3 tasks, 6e9 free, 3e9 cpu
    // A placement on n3: 1 GB and 1 CPU more reserved, one more task of the service.
    const uint32_t nodes[] = {2};
    const int64_t cpu[] = {1000000000};
    const int64_t mem[] = {1000000000};
    const int64_t tasks[] = {1};
    const int64_t service[] = {1};
    UsageUpdate u;
    u.nodes = nodes;
    u.count = 1;
    u.reservedNanoCpus = cpu;
    u.reservedMemoryBytes = mem;
    u.tasks = tasks;
    u.serviceTasks = service;
    CPPUNIT_ASSERT(p->updateUsage(u).isOk());
    CPPUNIT_ASSERT(p->score(fit.data(), score.data(), 4).isOk());
    CPPUNIT_ASSERT_EQUAL(int64_t(10115007), score[2]);  // 1 svc, 1 task, 15e9 free, 7e9 cpu
    // Rebinding the same snapshot undoes the updates without rebuilding the tables.
    CPPUNIT_ASSERT(p->bindNodes(*snap).isOk());
    CPPUNIT_ASSERT(p->score(fit.data(), score.data(), 4).isOk());
    CPPUNIT_ASSERT_EQUAL(int64_t(16008), score[2]);
    const uint32_t bad[] = {9};
    u.nodes = bad;
    Status s = p->updateUsage(u);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "names node 9, but the snapshot has "
                                                 "4 nodes"));
  }

  void testGroupSetsServiceCounts() {
    auto p = bound("counts",
                   "return shoal.policy{ score = function(task, node)\n"
                   "  return node.service_tasks * 10 + node.failures end }");
    std::vector<uint8_t> fit = allFit();
    std::vector<int64_t> score(4, 0);
    CPPUNIT_ASSERT(p->score(fit.data(), score.data(), 4).isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("20000,10000,0,2000"),
                         std::to_string(score[0]) + "," + std::to_string(score[1]) + "," +
                             std::to_string(score[2]) + "," + std::to_string(score[3]));
    CPPUNIT_ASSERT(p->setGroup(group("svc-db", "db")).isOk());
    CPPUNIT_ASSERT(p->score(fit.data(), score.data(), 4).isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("10000,0,0,0"),
                         std::to_string(score[0]) + "," + std::to_string(score[1]) + "," +
                             std::to_string(score[2]) + "," + std::to_string(score[3]));
    // Without a group, or without a snapshot, nothing is evaluated.
    auto q = mustCompile("q", "return shoal.policy{ filter = function() return true end }");
    CPPUNIT_ASSERT(q->filter(fit.data(), 4).code() == Status::Code::kFailedPrecondition);
    CPPUNIT_ASSERT(q->bindNodes(kNodes).isOk());
    CPPUNIT_ASSERT(q->filter(fit.data(), 4).code() == Status::Code::kFailedPrecondition);
  }

  void testBadDocumentsAreRefused() {
    auto p = mustCompile("docs", "return shoal.policy{ filter = function() return true end }");
    Status s = p->bindNodes("{\"nodes\": []}");
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "nodes document: schema must be "
                                                 "\"shoal.nodes/v1\""));
    s = p->bindNodes("not json");
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "nodes document is not valid JSON"));
    s = p->bindNodes(R"({"schema": "shoal.nodes/v1", "nodes": [{"id": "a"},
                         {"id": "b", "resources": {"memory_bytes": -1}}]})");
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "nodes document: nodes[1].resources."
                                                 "memory_bytes must be a "
                                                 "non-negative integer"));
    s = p->bindNodes(R"({"schema": "shoal.nodes/v1", "nodes": [{"id": ""}]})");
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "nodes[0].id must be a non-empty"));
    s = p->bindNodes(R"({"schema": "shoal.nodes/v1", "nodes": [{"id": "a", "labels": {"x": 1}}]})");
    CPPUNIT_ASSERT_MESSAGE(s.message(),
                           contains(s.message(), "nodes[0].labels.x must be a string"));
    s = p->setGroup(R"({"schema": "shoal.task-group/v1"})");
    CPPUNIT_ASSERT_MESSAGE(s.message(),
                           contains(s.message(), "group document: service_id must be"));
    s = p->bindNodes(R"({"schema": "shoal.nodes/v1", "nodes": []})");
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    CPPUNIT_ASSERT(p->setGroup(kWeb).isOk());
    CPPUNIT_ASSERT(p->filter(nullptr, 0).isOk());
  }

  void testShippedBinpack() {
    auto p = bound("binpack", shipped("binpack.lua"));
    CPPUNIT_ASSERT_EQUAL(std::string("binpack"), p->declaredName());
    CPPUNIT_ASSERT(!p->description().empty());
    std::vector<uint8_t> fit = allFit();
    CPPUNIT_ASSERT(p->filter(fit.data(), 4).isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("1111"), fitString(fit));
    std::vector<int64_t> score(4, 0);
    CPPUNIT_ASSERT(p->score(fit.data(), score.data(), 4).isOk());
    // Used after placement, memory and CPU averaged: n2 90.625%, n1 34.375%, n4 18.75%,
    // n3 4.6875%.
    CPPUNIT_ASSERT_EQUAL(int64_t(90625), score[1]);
    CPPUNIT_ASSERT_EQUAL(int64_t(34375), score[0]);
    CPPUNIT_ASSERT_EQUAL(int64_t(18750), score[3]);
    CPPUNIT_ASSERT_EQUAL(int64_t(4688), score[2]);
    // A 2 GB task no longer fits n2.
    CPPUNIT_ASSERT(p->setGroup(group("svc-big", "big", 2000000000)).isOk());
    fit = allFit();
    CPPUNIT_ASSERT(p->filter(fit.data(), 4).isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("1011"), fitString(fit));
    CPPUNIT_ASSERT_EQUAL(std::string("1 node rejected by policy \"binpack\": not enough free "
                                     "memory"),
                         p->explain());
    CPPUNIT_ASSERT(p->score(fit.data(), score.data(), 4).isOk());
    CPPUNIT_ASSERT(score[0] > score[3] && score[3] > score[2]);
  }

  void testShippedZoneSpread() {
    auto p = bound("zone-spread", shipped("zone-spread.lua"));
    std::vector<uint8_t> fit = allFit();
    CPPUNIT_ASSERT(p->filter(fit.data(), 4).isOk());  // score only: every node stays
    CPPUNIT_ASSERT_EQUAL(std::string("1111"), fitString(fit));
    std::vector<int64_t> score(4, 0);
    CPPUNIT_ASSERT(p->score(fit.data(), score.data(), 4).isOk());
    // svc-web: east has 2 (n1: 2, n3: 0), west 1 (n2), no zone 0 (n4).
    CPPUNIT_ASSERT_EQUAL(int64_t(-2002000), score[0]);
    CPPUNIT_ASSERT_EQUAL(int64_t(-1001000), score[1]);
    CPPUNIT_ASSERT_EQUAL(int64_t(-2000000), score[2]);
    CPPUNIT_ASSERT_EQUAL(int64_t(0), score[3]);
    // Two more tasks land on n2: west has 3 now, east 2, so among the zoned nodes the east
    // node without any (n3) is best.
    const uint32_t nodes[] = {1};
    const int64_t service[] = {3};
    UsageUpdate u;
    u.nodes = nodes;
    u.count = 1;
    u.serviceTasks = service;
    CPPUNIT_ASSERT(p->updateUsage(u).isOk());
    std::vector<uint8_t> zoned = {1, 1, 1, 0};
    CPPUNIT_ASSERT(p->score(zoned.data(), score.data(), 4).isOk());
    CPPUNIT_ASSERT(score[2] > score[0]);
    CPPUNIT_ASSERT(score[2] > score[1]);
  }

  void testShippedKeepOffMaintenance() {
    auto p = bound("keep-off-maintenance", shipped("keep-off-maintenance.lua"));
    std::vector<uint8_t> fit = allFit();
    std::map<std::string, int> reasons;
    CPPUNIT_ASSERT(p->filter(fit.data(), 4, &reasons).isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("0111"), fitString(fit));
    CPPUNIT_ASSERT_EQUAL(1, reasons["node is in maintenance"]);
    CPPUNIT_ASSERT_EQUAL(std::string("1 node rejected by policy \"keep-off-maintenance\": node is "
                                     "in maintenance"),
                         p->explain());
    for (const char* file : {"binpack.lua", "zone-spread.lua", "keep-off-maintenance.lua"}) {
      Status s = Policy::validate(file, shipped(file), testLimits());
      CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    }
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(PolicyTest);
