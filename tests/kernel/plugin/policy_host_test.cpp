// The host table's Lua policy slots (ABI 1.1): named policies come from the source the kernel
// installs, expressions compile on open; bind, update, filter, score and explain work in
// batches over the snapshot; errors reach the plugin's call through host->fail with the
// policy's message; handles are checked, cached when closed and cleaned up with the instance.
#include <cppunit/extensions/HelperMacros.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <shoal/plugin.h>

#include "kernel/plugin/plugin_host.h"

using shoal::Result;
using shoal::Status;
using shoal::plugin::Kind;
using shoal::plugin::PluginHost;
using shoal::plugin::PluginInstance;

namespace {

std::string fixture(const std::string& dir) { return std::string(SHOAL_FIXTURE_DIR) + "/" + dir; }

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string shipped(const std::string& file) {
  std::ifstream in(std::string(SHOAL_SOURCE_DIR) + "/conf/policies/" + file);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

shoal_str str(const std::string& s) { return shoal_str{s.data(), s.size()}; }

// n1 is in maintenance; n2 is nearly full; n3 is empty.
const std::string kNodes = R"({"schema": "shoal.nodes/v1", "nodes": [
  {"id": "n1", "state": "ready", "availability": "active", "labels": {"maintenance": "true"},
   "resources": {"nano_cpus": 4000000000, "memory_bytes": 8000000000},
   "reserved": {"nano_cpus": 1000000000, "memory_bytes": 2000000000}},
  {"id": "n2", "state": "ready", "availability": "active", "labels": {"zone": "west"},
   "resources": {"nano_cpus": 4000000000, "memory_bytes": 8000000000},
   "reserved": {"nano_cpus": 3000000000, "memory_bytes": 7000000000}},
  {"id": "n3", "state": "ready", "availability": "active", "labels": {"zone": "east"},
   "resources": {"nano_cpus": 8000000000, "memory_bytes": 16000000000}}]})";

const std::string kGroup = R"({"schema": "shoal.task-group/v1", "service_id": "svc-1",
  "service_name": "web", "spec": {"resources": {"nano_cpus": 500000000,
  "memory_bytes": 500000000}}})";

const std::string kSpin =
    "return shoal.policy{\n  filter = function(task, node)\n"
    "    if task.service_name == 'spin' then while true do end end\n    return true\n"
    "  end,\n}\n";

// A clock that does not move: only the instruction and memory budgets apply, so no result
// depends on how loaded the machine is.
class FrozenClock : public shoal::Clock {
 public:
  WallTime now() const override { return WallTime(); }
  MonoTime monotonic() const override { return MonoTime(); }
};
const FrozenClock kFrozen;

}  // namespace

class PolicyHostTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(PolicyHostTest);
  CPPUNIT_TEST(testHostTableHasThePolicySlots);
  CPPUNIT_TEST(testNamedPolicyOpenBindFilterExplainClose);
  CPPUNIT_TEST(testScoreAndUsageUpdates);
  CPPUNIT_TEST(testExpressionPolicy);
  CPPUNIT_TEST(testUnknownNameIsNotFound);
  CPPUNIT_TEST(testSourceErrorsAndMissingSource);
  CPPUNIT_TEST(testPolicyFailuresComeBackThroughFail);
  CPPUNIT_TEST(testBadHandlesAndArgumentsAreRefused);
  CPPUNIT_TEST(testCompiledPoliciesAndSnapshotsAreCached);
  CPPUNIT_TEST(testHandlesLeftOpenAreClosedWithTheInstance);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    host_ = std::make_unique<PluginHost>();
    shoal::policy::Limits limits;
    limits.clock = &kFrozen;
    host_->setPolicyLimits(limits);
    sources_ = std::make_shared<std::map<std::string, std::string>>();
    (*sources_)["keep-off-maintenance"] = shipped("keep-off-maintenance.lua");
    (*sources_)["binpack"] = shipped("binpack.lua");
    (*sources_)["spin"] = kSpin;
    auto sources = sources_;
    host_->setPolicySource([sources](const std::string& name) -> Result<std::string> {
      if (name == "broken-store") return Status::unavailable("the store is not ready");
      auto it = sources->find(name);
      if (it == sources->end()) return Status::notFound("no such object");
      return it->second;
    });
    host_->loadDirectories({fixture("good"), fixture("throws")});
    good_ = host_->find(Kind::kRuntime, "fixture-good");
    other_ = host_->find(Kind::kSecrets, "fixture-throws");
    CPPUNIT_ASSERT(good_ != nullptr && other_ != nullptr);
    table_ = PluginHost::hostTable();
  }

  void tearDown() override { host_.reset(); }

  // One call "into the plugin" that makes host-table calls, as a scheduler op would.
  template <class F>
  Status call(PluginInstance* inst, F&& body) {
    return inst->invoke("policy", [&](void*) -> shoal_status { return body(inst->handle()); });
  }

  shoal_policy* open(int32_t kind, const std::string& text, Status* status = nullptr) {
    shoal_policy* p = nullptr;
    Status s =
        call(good_, [&](shoal_instance* i) { return table_->policy_open(i, kind, str(text), &p); });
    if (status != nullptr) *status = s;
    if (status == nullptr) CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    return p;
  }

  Status bind(shoal_policy* p, const std::string& nodes = kNodes,
              const std::string& group = kGroup) {
    return call(good_, [&](shoal_instance* i) {
      return table_->policy_bind(i, p, str(nodes), str(group));
    });
  }

  Status filter(shoal_policy* p, std::vector<uint8_t>* fit) {
    return call(good_, [&](shoal_instance* i) {
      return table_->policy_filter(i, p, fit->data(), static_cast<uint32_t>(fit->size()));
    });
  }

  std::string explain(shoal_policy* p) {
    shoal_buf out{};
    Status s = call(good_, [&](shoal_instance* i) { return table_->policy_explain(i, p, &out); });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    std::string text = out.ptr != nullptr ? std::string(out.ptr, out.len) : std::string();
    table_->free(out.ptr);
    return text;
  }

  void close(shoal_policy* p) {
    call(good_, [&](shoal_instance* i) {
      table_->policy_close(i, p);
      return SHOAL_OK;
    });
  }

  void testHostTableHasThePolicySlots() {
    CPPUNIT_ASSERT_EQUAL(uint32_t(sizeof(shoal_host)), table_->struct_size);
    CPPUNIT_ASSERT_EQUAL(uint16_t(SHOAL_ABI_MINOR), table_->abi_minor);
    CPPUNIT_ASSERT(SHOAL_HAS_FIELD(table_, shoal_host, policy_open));
    CPPUNIT_ASSERT(SHOAL_HAS_FIELD(table_, shoal_host, policy_explain));
    CPPUNIT_ASSERT(table_->policy_open && table_->policy_close && table_->policy_bind &&
                   table_->policy_update && table_->policy_filter && table_->policy_score &&
                   table_->policy_explain);
  }

  void testNamedPolicyOpenBindFilterExplainClose() {
    shoal_policy* p = open(SHOAL_POLICY_NAMED, "keep-off-maintenance");
    CPPUNIT_ASSERT(p != nullptr);
    Status s = bind(p);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    std::vector<uint8_t> fit = {1, 1, 1};
    s = filter(p, &fit);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    CPPUNIT_ASSERT_EQUAL(uint8_t(0), fit[0]);
    CPPUNIT_ASSERT_EQUAL(uint8_t(1), fit[1]);
    CPPUNIT_ASSERT_EQUAL(uint8_t(1), fit[2]);
    CPPUNIT_ASSERT_EQUAL(std::string("1 node rejected by policy \"keep-off-maintenance\": node is "
                                     "in maintenance"),
                         explain(p));
    // Nothing rejected: an empty explanation.
    fit = {0, 1, 1};
    CPPUNIT_ASSERT(filter(p, &fit).isOk());
    CPPUNIT_ASSERT_EQUAL(std::string(), explain(p));
    close(p);
    CPPUNIT_ASSERT_EQUAL(std::size_t(0), host_->policies().stats().open);
    close(nullptr);  // a no-op
  }

  void testScoreAndUsageUpdates() {
    shoal_policy* p = open(SHOAL_POLICY_NAMED, "binpack");
    CPPUNIT_ASSERT(bind(p).isOk());
    std::vector<uint8_t> fit = {1, 1, 1};
    std::vector<int64_t> score(3, -1);
    auto scoreAll = [&] {
      return call(good_, [&](shoal_instance* i) {
        return table_->policy_score(i, p, fit.data(), score.data(), 3);
      });
    };
    Status s = scoreAll();
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    // Used after placement: n2 90.625%, n1 34.375%, n3 4.6875%.
    CPPUNIT_ASSERT_EQUAL(int64_t(34375), score[0]);
    CPPUNIT_ASSERT_EQUAL(int64_t(90625), score[1]);
    CPPUNIT_ASSERT_EQUAL(int64_t(4688), score[2]);
    // The plugin placed tasks on n3: 8 CPUs and 15.5 GB are reserved there now.
    const uint32_t nodes[] = {2};
    const int64_t cpu[] = {8000000000};
    const int64_t mem[] = {15500000000};
    shoal_policy_usage usage{sizeof(shoal_policy_usage), 1, nodes, cpu, mem, nullptr, nullptr};
    s = call(good_, [&](shoal_instance* i) { return table_->policy_update(i, p, &usage); });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    fit = {1, 1, 1};
    CPPUNIT_ASSERT(filter(p, &fit).isOk());
    CPPUNIT_ASSERT_EQUAL(uint8_t(0), fit[2]);  // no CPU left for another task
    CPPUNIT_ASSERT_EQUAL(std::string("1 node rejected by policy \"binpack\": not enough free CPU"),
                         explain(p));
    // A usage struct from before ABI 1.1's layout is refused.
    usage.struct_size = 8;
    s = call(good_, [&](shoal_instance* i) { return table_->policy_update(i, p, &usage); });
    CPPUNIT_ASSERT(s.code() == Status::Code::kInvalidArgument);
    // Binding again (same snapshot text, or none) forgets the updates.
    CPPUNIT_ASSERT(call(good_, [&](shoal_instance* i) {
                     return table_->policy_bind(i, p, shoal_str{nullptr, 0}, str(kGroup));
                   }).isOk());
    fit = {1, 1, 1};
    CPPUNIT_ASSERT(filter(p, &fit).isOk());
    CPPUNIT_ASSERT_EQUAL(uint8_t(1), fit[2]);
    close(p);
  }

  void testExpressionPolicy() {
    shoal_policy* p = open(SHOAL_POLICY_EXPRESSION, R"(node.labels.zone ~= "east")");
    CPPUNIT_ASSERT(bind(p).isOk());
    std::vector<uint8_t> fit = {1, 1, 1};
    CPPUNIT_ASSERT(filter(p, &fit).isOk());
    CPPUNIT_ASSERT_EQUAL(uint8_t(1), fit[0]);
    CPPUNIT_ASSERT_EQUAL(uint8_t(1), fit[1]);
    CPPUNIT_ASSERT_EQUAL(uint8_t(0), fit[2]);
    CPPUNIT_ASSERT_EQUAL(std::string("1 node rejected by lua constraint `node.labels.zone ~= "
                                     "\"east\"`"),
                         explain(p));
    close(p);
    Status s;
    p = open(SHOAL_POLICY_EXPRESSION, "node.labels.zone ==", &s);
    CPPUNIT_ASSERT(p == nullptr);
    CPPUNIT_ASSERT(s.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "plugin fixture-good: policy: lua constraint "
                                                 "`node.labels.zone ==` line 1: "));
  }

  void testUnknownNameIsNotFound() {
    Status s;
    shoal_policy* p = open(SHOAL_POLICY_NAMED, "nope", &s);
    CPPUNIT_ASSERT(p == nullptr);
    CPPUNIT_ASSERT(s.code() == Status::Code::kNotFound);
    CPPUNIT_ASSERT_EQUAL(std::string("plugin fixture-good: policy: no policy named \"nope\""),
                         s.message());
  }

  void testSourceErrorsAndMissingSource() {
    Status s;
    open(SHOAL_POLICY_NAMED, "broken-store", &s);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), !s.isOk());
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "policy \"broken-store\": the store "
                                                 "is not ready"));
    // A stored policy that does not compile (the store should have refused it) is EINVAL.
    (*sources_)["typo"] = "return shoal.policy{\n  fitler = function() end }";
    open(SHOAL_POLICY_NAMED, "typo", &s);
    CPPUNIT_ASSERT(s.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "policy \"typo\" line 2: "
                                                 "shoal.policy: unknown field"));
    PluginHost bare;
    bare.loadDirectories({fixture("good")});
    PluginInstance* inst = bare.find(Kind::kRuntime, "fixture-good");
    shoal_policy* p = nullptr;
    s = inst->invoke("policy", [&](void*) {
      return table_->policy_open(inst->handle(), SHOAL_POLICY_NAMED, str("binpack"), &p);
    });
    CPPUNIT_ASSERT(s.code() == Status::Code::kNotFound);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "no policy named \"binpack\""));
  }

  void testPolicyFailuresComeBackThroughFail() {
    shoal_policy* p = open(SHOAL_POLICY_NAMED, "spin");
    const std::string spinGroup = R"({"schema": "shoal.task-group/v1", "service_id": "svc-2",
                                      "service_name": "spin"})";
    CPPUNIT_ASSERT(bind(p, kNodes, spinGroup).isOk());
    std::vector<uint8_t> fit = {1, 1, 1};
    shoal_status code = SHOAL_OK;
    Status s = call(good_, [&](shoal_instance* i) {
      code = table_->policy_filter(i, p, fit.data(), 3);
      return code;
    });
    CPPUNIT_ASSERT_EQUAL(shoal_status(SHOAL_ETIMEDOUT), code);
    CPPUNIT_ASSERT_EQUAL(std::string("plugin fixture-good: policy: policy \"spin\" line 3: "
                                     "instruction limit exceeded (10000000 instructions)"),
                         s.message());
    CPPUNIT_ASSERT_EQUAL(uint8_t(1), fit[0]);  // unchanged
    // The handle still works for the next group.
    CPPUNIT_ASSERT(bind(p).isOk());
    CPPUNIT_ASSERT(filter(p, &fit).isOk());
    close(p);
    // Documents are checked: the message names the member.
    p = open(SHOAL_POLICY_NAMED, "binpack");
    s = bind(p, R"({"schema": "shoal.nodes/v1", "nodes": [{"id": "a", "tasks": -2}]})");
    CPPUNIT_ASSERT(s.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "policy \"binpack\": nodes document: "
                                                 "nodes[0].tasks must be a "
                                                 "non-negative integer"));
    close(p);
  }

  void testBadHandlesAndArgumentsAreRefused() {
    std::vector<uint8_t> fit = {1, 1, 1};
    Status s = filter(nullptr, &fit);
    CPPUNIT_ASSERT(s.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "not an open policy handle"));
    Status opened;
    CPPUNIT_ASSERT(open(7, "x", &opened) == nullptr);
    CPPUNIT_ASSERT_MESSAGE(opened.message(), contains(opened.message(), "unknown kind 7"));

    shoal_policy* p = open(SHOAL_POLICY_NAMED, "binpack");
    // Not bound yet: evaluation and an empty nodes document are refused.
    s = filter(p, &fit);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "no node snapshot bound"));
    s = call(good_, [&](shoal_instance* i) {
      return table_->policy_bind(i, p, shoal_str{nullptr, 0}, str(kGroup));
    });
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "no node snapshot bound yet"));
    s = call(good_, [&](shoal_instance* i) {
      return table_->policy_bind(i, p, str(kNodes), shoal_str{nullptr, 0});
    });
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "needs the group document"));
    CPPUNIT_ASSERT(bind(p).isOk());
    // The node count must be the snapshot's.
    std::vector<uint8_t> two = {1, 1};
    s = filter(p, &two);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "asked about 2 nodes, but the bound "
                                                 "snapshot has 3 nodes"));
    // Another instance may not use the handle.
    s = call(other_, [&](shoal_instance* i) { return table_->policy_filter(i, p, fit.data(), 3); });
    CPPUNIT_ASSERT(s.code() == Status::Code::kInvalidArgument);
    call(other_, [&](shoal_instance* i) {
      table_->policy_close(i, p);  // refused (logged), the handle stays open
      return SHOAL_OK;
    });
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), host_->policies().stats().open);
    CPPUNIT_ASSERT(filter(p, &fit).isOk());
    close(p);
  }

  void testCompiledPoliciesAndSnapshotsAreCached() {
    for (int pass = 0; pass < 3; ++pass) {
      shoal_policy* a = open(SHOAL_POLICY_NAMED, "binpack");
      shoal_policy* b = open(SHOAL_POLICY_NAMED, "keep-off-maintenance");
      CPPUNIT_ASSERT(bind(a).isOk());
      CPPUNIT_ASSERT(bind(b).isOk());
      close(a);
      close(b);
    }
    auto stats = host_->policies().stats();
    CPPUNIT_ASSERT_EQUAL(uint64_t(2), stats.compiles);
    CPPUNIT_ASSERT_EQUAL(uint64_t(4), stats.cacheHits);
    CPPUNIT_ASSERT_EQUAL(uint64_t(1), stats.snapshotParses);  // one parse for every handle
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), stats.idle);
    // A new snapshot text is parsed once more; a changed source compiles again.
    shoal_policy* a = open(SHOAL_POLICY_NAMED, "binpack");
    std::string nodes2 = kNodes;
    nodes2.replace(nodes2.find("\"n3\""), 4, "\"n9\"");
    CPPUNIT_ASSERT(bind(a, nodes2).isOk());
    close(a);
    (*sources_)["binpack"] += "\n-- edited\n";
    a = open(SHOAL_POLICY_NAMED, "binpack");
    close(a);
    stats = host_->policies().stats();
    CPPUNIT_ASSERT_EQUAL(uint64_t(2), stats.snapshotParses);
    CPPUNIT_ASSERT_EQUAL(uint64_t(3), stats.compiles);
  }

  void testHandlesLeftOpenAreClosedWithTheInstance() {
    shoal_policy* p = open(SHOAL_POLICY_NAMED, "binpack");
    CPPUNIT_ASSERT(bind(p).isOk());
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), host_->policies().stats().open);
    host_->shutdown();
    CPPUNIT_ASSERT_EQUAL(std::size_t(0), host_->policies().stats().open);
  }

 private:
  std::unique_ptr<PluginHost> host_;
  std::shared_ptr<std::map<std::string, std::string>> sources_;
  PluginInstance* good_ = nullptr;
  PluginInstance* other_ = nullptr;
  const shoal_host* table_ = nullptr;
};

CPPUNIT_TEST_SUITE_REGISTRATION(PolicyHostTest);
