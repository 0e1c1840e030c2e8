// scheduler-spread as the kernel's scheduler host drives it, through the plugin ABI: Swarm's
// filters and their "no suitable node (...)" explanations, Docker's constraint syntax, spread
// over nodes and over placement preferences, accounting across the groups of one pass,
// refusal of malformed documents, and Lua placement policies run by the kernel through the
// host table (filters with their reasons, scores ranked before the spread, failures that fail
// only their group, handles closed with their group, and refusal on a host without them).
#include <cppunit/extensions/HelperMacros.h>
#include <dlfcn.h>

#include <shoal/scheduler.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernel/common/clock.h"
#include "kernel/plugin/plugin_host.h"

using shoal::Result;
using shoal::Status;
using shoal::plugin::Kind;
using shoal::plugin::PluginHost;
using shoal::plugin::PluginInstance;

namespace {

constexpr int64_t kGiB = int64_t(1) << 30;
constexpr int64_t kCpu = 1'000'000'000;  // one CPU in nano_cpus

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A JSON string literal.
std::string q(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

template <class Map, class F>
std::string jsonObject(const Map& m, F value) {
  std::string out = "{";
  for (const auto& [k, v] : m) {
    if (out.size() > 1) out += ",";
    out += q(k) + ":" + value(v);
  }
  return out + "}";
}

std::string strings(const std::map<std::string, std::string>& m) {
  return jsonObject(m, [](const std::string& v) { return q(v); });
}
std::string ints(const std::map<std::string, int64_t>& m) {
  return jsonObject(m, [](int64_t v) { return std::to_string(v); });
}
std::string list(const std::vector<std::string>& v) {
  std::string out = "[";
  for (const std::string& s : v) out += (out.size() > 1 ? "," : "") + q(s);
  return out + "]";
}

struct NodeDoc {
  std::string id;
  std::string hostname;
  std::string role = "worker";
  std::string availability = "active";
  std::string state = "ready";
  std::string os = "linux";
  std::string arch = "amd64";
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> engineLabels;
  int64_t nanoCpus = 4 * kCpu;
  int64_t memoryBytes = 8 * kGiB;
  int64_t reservedNanoCpus = 0;
  int64_t reservedMemoryBytes = 0;
  int64_t tasks = 0;
  std::map<std::string, int64_t> serviceTasks;
  std::map<std::string, int64_t> failures;
  std::vector<std::string> hostPorts;

  std::string json() const {
    return "{\"id\":" + q(id) + ",\"hostname\":" + q(hostname) + ",\"role\":" + q(role) +
           ",\"availability\":" + q(availability) + ",\"state\":" + q(state) +
           ",\"platform\":{\"os\":" + q(os) + ",\"arch\":" + q(arch) +
           "},\"labels\":" + strings(labels) + ",\"engine_labels\":" + strings(engineLabels) +
           ",\"resources\":{\"nano_cpus\":" + std::to_string(nanoCpus) +
           ",\"memory_bytes\":" + std::to_string(memoryBytes) +
           "},\"reserved\":{\"nano_cpus\":" + std::to_string(reservedNanoCpus) +
           ",\"memory_bytes\":" + std::to_string(reservedMemoryBytes) +
           "},\"tasks\":" + std::to_string(tasks) + ",\"service_tasks\":" + ints(serviceTasks) +
           ",\"host_ports\":" + list(hostPorts) + ",\"failures\":" + ints(failures) + "}";
  }
};

NodeDoc node(const std::string& id) {
  NodeDoc n;
  n.id = id;
  n.hostname = id + "-host";
  return n;
}

std::string snapshotJson(const std::vector<NodeDoc>& nodes) {
  std::string out = "{\"schema\":\"shoal.nodes/v1\",\"nodes\":[";
  for (size_t i = 0; i < nodes.size(); ++i) out += (i > 0 ? "," : "") + nodes[i].json();
  return out + "]}";
}

struct GroupDoc {
  std::string service = "svc-1";
  std::vector<std::string> constraints;
  std::vector<std::string> preferences;
  int64_t maxReplicas = 0;
  std::vector<std::pair<std::string, std::string>> platforms;  // os, arch
  int64_t nanoCpus = 0;
  int64_t memoryBytes = 0;
  std::vector<std::pair<std::string, int64_t>> ports;  // protocol, published
  std::string extraPlacement;                          // raw members, e.g. "\"policy\":\"x\""

  std::string json() const {
    std::string platformList = "[";
    for (const auto& [os, arch] : platforms) {
      platformList += (platformList.size() > 1 ? "," : "") + std::string("{\"os\":") + q(os) +
                      ",\"arch\":" + q(arch) + "}";
    }
    platformList += "]";
    std::string portList = "[";
    for (const auto& [protocol, published] : ports) {
      portList += (portList.size() > 1 ? "," : "") + std::string("{\"protocol\":") + q(protocol) +
                  ",\"published\":" + std::to_string(published) + "}";
    }
    portList += "]";
    return "{\"schema\":\"shoal.task-group/v1\",\"service_id\":" + q(service) +
           ",\"service_name\":\"web\",\"spec\":{\"placement\":{\"constraints\":" +
           list(constraints) + ",\"preferences\":" + list(preferences) +
           ",\"max_replicas\":" + std::to_string(maxReplicas) + ",\"platforms\":" + platformList +
           (extraPlacement.empty() ? "" : "," + extraPlacement) +
           "},\"resources\":{\"nano_cpus\":" + std::to_string(nanoCpus) +
           ",\"memory_bytes\":" + std::to_string(memoryBytes) + "},\"ports\":" + portList +
           "},\"tasks\":[\"t1\",\"t2\"]}";
  }
};

GroupDoc groupWith(std::vector<std::string> constraints) {
  GroupDoc g;
  g.constraints = std::move(constraints);
  return g;
}

// How many of `placed` went to each of `nodes` nodes.
std::vector<int> histogram(const std::vector<int32_t>& placed, size_t nodes) {
  std::vector<int> h(nodes, 0);
  for (int32_t n : placed) {
    if (n >= 0) ++h.at(static_cast<size_t>(n));
  }
  return h;
}

std::string show(const std::vector<int>& v) {
  std::string s;
  for (int x : v) s += std::to_string(x) + " ";
  return s;
}

// A shipped policy file (conf/policies).
std::string shipped(const std::string& file) {
  std::ifstream in(std::string(SHOAL_SOURCE_DIR) + "/conf/policies/" + file);
  std::stringstream ss;
  ss << in.rdbuf();
  CPPUNIT_ASSERT_MESSAGE("conf/policies/" + file, !ss.str().empty());
  return ss.str();
}

// The placement members naming a policy object and/or a Lua constraint expression.
std::string policyMember(const std::string& name) { return "\"policy\":" + q(name); }
std::string luaMember(const std::string& expression) {
  return "\"lua_constraints\":" + q(expression);
}

// A clock that does not move: only the instruction and memory budgets apply, so no result
// depends on how loaded the machine (or the sanitizer build) is.
class FrozenClock : public shoal::Clock {
 public:
  WallTime now() const override { return WallTime(); }
  MonoTime monotonic() const override { return MonoTime(); }
};
const FrozenClock kFrozen;

}  // namespace

class SchedulerSpreadTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(SchedulerSpreadTest);
  CPPUNIT_TEST(testSpreadEvensOutServiceTasksIncludingExistingOnes);
  CPPUNIT_TEST(testTiesGoToFewestTotalTasksThenLowestIndex);
  CPPUNIT_TEST(testUnavailableNodesAreFilteredAndExplained);
  CPPUNIT_TEST(testPlatformFilterNormalisesArchitectures);
  CPPUNIT_TEST(testEveryConstraintKeyWithBothOperators);
  CPPUNIT_TEST(testAbsentLabelsFailEqualsAndMatchNotEquals);
  CPPUNIT_TEST(testInvalidConstraintsAreRefusedQuotingThem);
  CPPUNIT_TEST(testResourceFiltersExplainMemoryAndCpuSeparately);
  CPPUNIT_TEST(testEachNodeIsCountedUnderTheFirstFilterItFails);
  CPPUNIT_TEST(testReservationsAccumulateAcrossGroupsOfOnePass);
  CPPUNIT_TEST(testHostPortsConflictBetweenTasksOfOneGroup);
  CPPUNIT_TEST(testMaxReplicasPerNode);
  CPPUNIT_TEST(testNestedPreferencesSpreadEvenlyAtEveryLevel);
  CPPUNIT_TEST(testPreferencesCountExistingTasksAndSkipFullBranches);
  CPPUNIT_TEST(testEngineLabelPreference);
  CPPUNIT_TEST(testRepeatedlyFailedNodesRankLast);
  CPPUNIT_TEST(testFilterAndScoreAgreeWithAssign);
  CPPUNIT_TEST(testAssignMatchesABruteForceReferenceOnRandomClusters);
  CPPUNIT_TEST(testExplainWithNoNodesAndWhenSomethingFits);
  CPPUNIT_TEST(testMalformedSnapshotsAreRefusedNamingTheMember);
  CPPUNIT_TEST(testMalformedGroupsAreRefusedNamingTheMember);
  CPPUNIT_TEST(testJsonIsReadStrictly);
  CPPUNIT_TEST(testNamedFilterPolicyKeepsNodesOffAndExplainsWhy);
  CPPUNIT_TEST(testLuaConstraintExpressionFilters);
  CPPUNIT_TEST(testExpressionAndPolicyTogetherCountEachNodeOnce);
  CPPUNIT_TEST(testBinpackFillsTheFullestNodeThatFitsAndStopsAtCapacity);
  CPPUNIT_TEST(testZoneSpreadSpreadsAcrossZones);
  CPPUNIT_TEST(testPolicyScoresRankNodesWithinPreferenceBranches);
  CPPUNIT_TEST(testOneAssignCallMatchesTaskByTaskCallsUnderScoringPolicies);
  CPPUNIT_TEST(testPoliciesSeeEarlierPlacementsOfThePassAndShareOneParse);
  CPPUNIT_TEST(testRunawayPolicyFailsOnlyItsGroupAndQuickly);
  CPPUNIT_TEST(testPolicyErrorInAssignTakesBackItsPlacements);
  CPPUNIT_TEST(testUnknownPolicyNameIsNotFound);
  CPPUNIT_TEST(testBadPolicyMembersAndExpressionsAreRefused);
  CPPUNIT_TEST(testHostWithoutPolicySlotsRefusesLuaGroups);
  CPPUNIT_TEST(testPolicyHandlesAreClosedWithTheirGroup);
  CPPUNIT_TEST(testHandlesAreCheckedAndASnapshotClosedFirstIsSafe);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    host_ = std::make_unique<PluginHost>();
    shoal::policy::Limits limits;
    limits.clock = &kFrozen;
    host_->setPolicyLimits(limits);
    policies_ = std::make_shared<std::map<std::string, std::string>>();
    for (const char* name : {"keep-off-maintenance", "binpack", "zone-spread"}) {
      (*policies_)[name] = shipped(std::string(name) + ".lua");
    }
    auto sources = policies_;
    host_->setPolicySource([sources](const std::string& name) -> Result<std::string> {
      auto it = sources->find(name);
      if (it == sources->end()) return Status::notFound("no such object");
      return it->second;
    });
    Status s = host_->loadFile(std::string(SHOAL_PLUGIN_BUILD_DIR) + "/scheduler-spread.so");
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    sched_ = host_->find(Kind::kScheduler, "scheduler-spread");
    CPPUNIT_ASSERT(sched_ != nullptr);
  }

  void tearDown() override {
    for (auto it = groups_.rbegin(); it != groups_.rend(); ++it) closeGroup(*it, false);
    groups_.clear();
    for (shoal_sched_snapshot* s : snapshots_) closeSnapshot(s, false);
    snapshots_.clear();
    host_.reset();
  }

  // ---- spread ----

  void testSpreadEvensOutServiceTasksIncludingExistingOnes() {
    std::vector<NodeDoc> nodes = {node("a"), node("b"), node("c")};
    nodes[0].serviceTasks = {{"svc-1", 2}, {"other", 7}};
    nodes[0].tasks = 9;
    nodes[2].serviceTasks = {{"svc-1", 1}};
    nodes[2].tasks = 1;
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    auto* g = openGroupOk(snap, GroupDoc().json());
    const std::vector<int32_t> placed = assign(g, 6);
    // 2+1, 0+3, 1+2: three each, the empty node first.
    CPPUNIT_ASSERT_EQUAL(int32_t(1), placed[0]);
    CPPUNIT_ASSERT_EQUAL(std::string("1 3 2 "), show(histogram(placed, 3)));
    // The next group of the same service sees these placements: 3 more go one per node.
    auto* g2 = openGroupOk(snap, GroupDoc().json());
    CPPUNIT_ASSERT_EQUAL(std::string("1 1 1 "), show(histogram(assign(g2, 3), 3)));
  }

  void testTiesGoToFewestTotalTasksThenLowestIndex() {
    std::vector<NodeDoc> nodes = {node("a"), node("b"), node("c"), node("d")};
    nodes[0].tasks = 5;
    nodes[1].tasks = 2;
    nodes[2].tasks = 2;
    nodes[3].tasks = 3;
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    auto* g = openGroupOk(snap, GroupDoc().json());
    // Same service count everywhere: fewest tasks first (b and c tie, b has the lower index);
    // then every node has one, and the totals (6 3 3 4) decide again.
    const std::vector<int32_t> placed = assign(g, 8);
    const std::vector<int32_t> expected = {1, 2, 3, 0, 1, 2, 3, 0};
    CPPUNIT_ASSERT(expected == placed);
  }

  // ---- filters and explain ----

  void testUnavailableNodesAreFilteredAndExplained() {
    std::vector<NodeDoc> nodes = {node("drain"), node("pause"), node("down"), node("ok"),
                                  node("unknown")};
    nodes[0].availability = "drain";
    nodes[1].availability = "pause";
    nodes[2].state = "down";
    nodes[4].state = "unknown";
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    auto* g = openGroupOk(snap, GroupDoc().json());
    CPPUNIT_ASSERT(std::vector<int32_t>({3, 3}) == assign(g, 2));

    nodes[3].state = "disconnected";
    auto* none = openSnapshotOk(snapshotJson(nodes));
    auto* g2 = openGroupOk(none, GroupDoc().json());
    CPPUNIT_ASSERT(std::vector<int32_t>({-1, -1}) == assign(g2, 2));
    CPPUNIT_ASSERT_EQUAL(std::string("no suitable node (5 nodes not available for new tasks)"),
                         explain(g2));

    auto* one = openSnapshotOk(snapshotJson({nodes[0]}));
    auto* g3 = openGroupOk(one, GroupDoc().json());
    CPPUNIT_ASSERT_EQUAL(std::string("no suitable node (1 node not available for new tasks)"),
                         explain(g3));
  }

  void testPlatformFilterNormalisesArchitectures() {
    std::vector<NodeDoc> nodes = {node("amd"), node("arm"), node("win"), node("x86")};
    nodes[1].arch = "aarch64";
    nodes[2].os = "windows";
    nodes[3].arch = "x86_64";
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc doc;
    doc.platforms = {{"linux", "x86_64"}};
    auto* g = openGroupOk(snap, doc.json());
    CPPUNIT_ASSERT(std::vector<uint8_t>({1, 0, 0, 1}) == filter(g, 4));
    doc.platforms = {{"linux", "arm64"}, {"windows", ""}};
    auto* g2 = openGroupOk(snap, doc.json());
    CPPUNIT_ASSERT(std::vector<uint8_t>({0, 1, 1, 0}) == filter(g2, 4));
    doc.platforms = {{"darwin", ""}};
    auto* g3 = openGroupOk(snap, doc.json());
    CPPUNIT_ASSERT(std::vector<int32_t>({-1}) == assign(g3, 1));
    CPPUNIT_ASSERT_EQUAL(std::string("no suitable node (unsupported platform on 4 nodes)"),
                         explain(g3));
  }

  void testEveryConstraintKeyWithBothOperators() {
    std::vector<NodeDoc> nodes = {node("node-a"), node("node-b"), node("node-c")};
    nodes[0].hostname = "alpha";
    nodes[0].role = "manager";
    nodes[0].labels = {{"zone", "east"}, {"Disk", "ssd"}};
    nodes[0].engineLabels = {{"storage", "zfs"}};
    nodes[1].hostname = "beta";
    nodes[1].os = "windows";
    nodes[1].arch = "arm64";
    nodes[1].labels = {{"zone", "west"}};
    nodes[2].hostname = "gamma";
    nodes[2].arch = "x86_64";
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    const std::vector<std::pair<std::vector<std::string>, std::vector<uint8_t>>> cases = {
        {{"node.id==node-a"}, {1, 0, 0}},
        {{"node.id!=node-a"}, {0, 1, 1}},
        {{"node.hostname==BETA"}, {0, 1, 0}},  // values compare case-insensitively
        {{"node.hostname!=beta"}, {1, 0, 1}},
        {{"node.role==manager"}, {1, 0, 0}},
        {{"node.role!=manager"}, {0, 1, 1}},
        {{"node.role==Worker"}, {0, 1, 1}},
        {{"node.platform.os==linux"}, {1, 0, 1}},
        {{"node.platform.os!=linux"}, {0, 1, 0}},
        {{"node.platform.arch==x86_64"}, {0, 0, 1}},  // as reported, not normalised
        {{"node.platform.arch!=amd64"}, {0, 1, 1}},
        {{"node.labels.zone==east"}, {1, 0, 0}},
        {{"node.labels.zone==EAST"}, {1, 0, 0}},
        {{"node.labels.zone!=east"}, {0, 1, 1}},
        {{"node.labels.Disk==ssd"}, {1, 0, 0}},
        {{"node.labels.disk==ssd"}, {0, 0, 0}},   // label names are case-sensitive
        {{"NODE.LABELS.zone==west"}, {0, 1, 0}},  // keys are not
        {{"engine.labels.storage==zfs"}, {1, 0, 0}},
        {{"engine.labels.storage!=zfs"}, {0, 1, 1}},
        {{"node.labels.zone == east"}, {1, 0, 0}},  // spaces around the operator
        {{"  node.role  !=  manager "}, {0, 1, 1}},
        {{"node.role==worker", "node.platform.os==linux"}, {0, 0, 1}},  // all must hold
        {{}, {1, 1, 1}},
    };
    for (const auto& [constraints, expected] : cases) {
      auto* g = openGroupOk(snap, groupWith(constraints).json());
      std::string label;
      for (const std::string& c : constraints) label += c + " ";
      CPPUNIT_ASSERT_MESSAGE(label, expected == filter(g, 3));
      closeGroup(g);
    }
    auto* g = openGroupOk(snap, groupWith({"node.labels.zone==north"}).json());
    CPPUNIT_ASSERT(std::vector<int32_t>({-1}) == assign(g, 1));
    CPPUNIT_ASSERT_EQUAL(
        std::string("no suitable node (scheduling constraints not satisfied on 3 nodes)"),
        explain(g));
  }

  void testAbsentLabelsFailEqualsAndMatchNotEquals() {
    std::vector<NodeDoc> nodes = {node("labelled"), node("bare")};
    nodes[0].labels = {{"gpu", "yes"}};
    nodes[0].engineLabels = {{"gpu", "yes"}};
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    auto* eq = openGroupOk(snap, groupWith({"node.labels.gpu==yes"}).json());
    CPPUNIT_ASSERT(std::vector<uint8_t>({1, 0}) == filter(eq, 2));
    auto* ne = openGroupOk(snap, groupWith({"node.labels.gpu!=yes"}).json());
    CPPUNIT_ASSERT(std::vector<uint8_t>({0, 1}) == filter(ne, 2));
    auto* other = openGroupOk(snap, groupWith({"node.labels.ssd!=yes"}).json());
    CPPUNIT_ASSERT(std::vector<uint8_t>({1, 1}) == filter(other, 2));
    auto* engine = openGroupOk(snap, groupWith({"engine.labels.gpu==yes"}).json());
    CPPUNIT_ASSERT(std::vector<uint8_t>({1, 0}) == filter(engine, 2));
    auto* engineNe = openGroupOk(snap, groupWith({"engine.labels.tpu!=yes"}).json());
    CPPUNIT_ASSERT(std::vector<uint8_t>({1, 1}) == filter(engineNe, 2));
  }

  void testInvalidConstraintsAreRefusedQuotingThem() {
    auto* snap = openSnapshotOk(snapshotJson({node("a")}));
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"node.foo==1", "invalid constraint \"node.foo==1\": unknown key node.foo"},
        {"node.labels.zone", "invalid constraint \"node.labels.zone\": expected an operator"},
        {"node.labels.zone=east", "invalid constraint \"node.labels.zone=east\": expected"},
        {"==east", "invalid constraint \"==east\": empty key"},
        {" != east", "invalid constraint \" != east\": empty key"},
        {"node.labels.zone==", "invalid constraint \"node.labels.zone==\": empty value"},
        {"node.labels.zone==a<b", "invalid constraint \"node.labels.zone==a<b\": invalid value"},
        {"node.labels.==x", "invalid constraint \"node.labels.==x\": unknown key node.labels."},
        {"no de==x", "invalid constraint \"no de==x\": invalid key no de"},
        {"node.ip==10.0.0.1", "unknown key node.ip"},
    };
    for (const auto& [constraint, message] : cases) {
      shoal_sched_group* g = nullptr;
      Status s = openGroup(snap, groupWith({"node.role==worker", constraint}).json(), &g);
      CPPUNIT_ASSERT_MESSAGE(constraint + ": " + s.toString(),
                             s.code() == Status::Code::kInvalidArgument);
      CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), message));
      CPPUNIT_ASSERT(g == nullptr);
    }
  }

  void testResourceFiltersExplainMemoryAndCpuSeparately() {
    std::vector<NodeDoc> nodes = {node("drained"), node("small-1"), node("small-2"), node("slow"),
                                  node("busy")};
    nodes[0].availability = "drain";
    nodes[1].memoryBytes = 1 * kGiB;
    nodes[2].memoryBytes = 2 * kGiB;
    nodes[2].reservedMemoryBytes = 1 * kGiB;  // 1 GiB left
    nodes[3].nanoCpus = 1 * kCpu;
    nodes[4].reservedNanoCpus = 3 * kCpu;  // 1 CPU left of 4
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc doc;
    doc.memoryBytes = 2 * kGiB;
    doc.nanoCpus = 2 * kCpu;
    auto* g = openGroupOk(snap, doc.json());
    CPPUNIT_ASSERT(std::vector<int32_t>({-1}) == assign(g, 1));
    CPPUNIT_ASSERT_EQUAL(std::string("no suitable node (1 node not available for new tasks; "
                                     "2 nodes had insufficient memory; "
                                     "2 nodes had insufficient CPU)"),
                         explain(g));
    // A reservation that fits exactly is accepted; a zero reservation is never checked.
    doc.memoryBytes = 1 * kGiB;
    doc.nanoCpus = 1 * kCpu;
    auto* exact = openGroupOk(snap, doc.json());
    CPPUNIT_ASSERT(std::vector<uint8_t>({0, 1, 1, 1, 1}) == filter(exact, 5));
    nodes[1].reservedMemoryBytes = 2 * kGiB;  // overcommitted
    auto* over = openSnapshotOk(snapshotJson(nodes));
    auto* free = openGroupOk(over, GroupDoc().json());
    CPPUNIT_ASSERT(std::vector<uint8_t>({0, 1, 1, 1, 1}) == filter(free, 5));
    // Placements count within the group too: 7 GiB fits once on each of two nodes.
    doc.nanoCpus = 0;
    doc.memoryBytes = 7 * kGiB;
    auto* big = openGroupOk(over, doc.json());
    CPPUNIT_ASSERT(std::vector<uint8_t>({0, 0, 0, 1, 1}) == filter(big, 5));
    CPPUNIT_ASSERT(std::vector<int32_t>({3, 4, -1}) == assign(big, 3));
    CPPUNIT_ASSERT_EQUAL(std::string("no suitable node (1 node not available for new tasks; "
                                     "4 nodes had insufficient memory)"),
                         explain(big));
  }

  void testEachNodeIsCountedUnderTheFirstFilterItFails() {
    std::vector<NodeDoc> nodes = {node("a"), node("b"), node("c"), node("d")};
    nodes[0].availability = "drain";  // also too small and the wrong zone
    nodes[0].memoryBytes = 0;
    nodes[1].labels = {{"zone", "west"}};  // wrong zone, and too small
    nodes[1].memoryBytes = 0;
    nodes[2].labels = {{"zone", "east"}};  // too little memory and CPU: memory comes first
    nodes[2].memoryBytes = 0;
    nodes[2].nanoCpus = 0;
    nodes[3].labels = {{"zone", "east"}};  // port taken and too little CPU: CPU comes first
    nodes[3].nanoCpus = 0;
    nodes[3].hostPorts = {"tcp/443"};
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc doc = groupWith({"node.labels.zone==east"});
    doc.memoryBytes = 1;
    doc.nanoCpus = 1;
    doc.ports = {{"tcp", 443}};
    auto* g = openGroupOk(snap, doc.json());
    CPPUNIT_ASSERT_EQUAL(std::string("no suitable node (1 node not available for new tasks; "
                                     "scheduling constraints not satisfied on 1 node; "
                                     "1 node had insufficient memory; "
                                     "1 node had insufficient CPU)"),
                         explain(g));
  }

  void testReservationsAccumulateAcrossGroupsOfOnePass() {
    std::vector<NodeDoc> nodes = {node("only")};
    nodes[0].nanoCpus = 4 * kCpu;
    nodes[0].reservedNanoCpus = 1 * kCpu;
    nodes[0].memoryBytes = 4 * kGiB;
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc a;
    a.service = "svc-a";
    a.nanoCpus = 1 * kCpu;
    a.memoryBytes = 1 * kGiB;
    GroupDoc b = a;
    b.service = "svc-b";
    // Both open before either assigns: the second still sees the first one's placements.
    auto* ga = openGroupOk(snap, a.json());
    auto* gb = openGroupOk(snap, b.json());
    CPPUNIT_ASSERT(std::vector<int32_t>({0, 0}) == assign(ga, 2));
    CPPUNIT_ASSERT(std::vector<int32_t>({0, -1, -1}) == assign(gb, 3));
    CPPUNIT_ASSERT_EQUAL(std::string("no suitable node (1 node had insufficient CPU)"),
                         explain(gb));
    // Memory: 3 GiB are reserved now, so a 2 GiB task does not fit.
    GroupDoc c;
    c.service = "svc-c";
    c.memoryBytes = 2 * kGiB;
    auto* gc = openGroupOk(snap, c.json());
    CPPUNIT_ASSERT(std::vector<int32_t>({-1}) == assign(gc, 1));
    CPPUNIT_ASSERT_EQUAL(std::string("no suitable node (1 node had insufficient memory)"),
                         explain(gc));
    // And a task that reserves nothing still goes.
    GroupDoc d;
    d.service = "svc-d";
    CPPUNIT_ASSERT(std::vector<int32_t>({0}) == assign(openGroupOk(snap, d.json()), 1));
  }

  void testHostPortsConflictBetweenTasksOfOneGroup() {
    std::vector<NodeDoc> nodes = {node("taken"), node("free"), node("udp")};
    nodes[0].hostPorts = {"tcp/80"};
    nodes[2].hostPorts = {"udp/80", "tcp/8080"};
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc doc;
    doc.ports = {{"tcp", 80}, {"tcp", 0}};  // a dynamic port (0) is not checked
    auto* g = openGroupOk(snap, doc.json());
    // One task per node that has tcp/80 free, then nothing (the rest get -1 too).
    CPPUNIT_ASSERT(std::vector<int32_t>({1, 2, -1, -1}) == assign(g, 4));
    CPPUNIT_ASSERT_EQUAL(std::string("no suitable node (host-mode port already in use on 3 nodes)"),
                         explain(g));
    // Another group of the pass sees the ports taken too; udp/80 is still free on node 1.
    GroupDoc other;
    other.service = "svc-2";
    other.ports = {{"udp", 80}};
    CPPUNIT_ASSERT(std::vector<int32_t>({0, 1, -1}) == assign(openGroupOk(snap, other.json()), 3));
    auto* one = openSnapshotOk(snapshotJson({nodes[0]}));
    CPPUNIT_ASSERT_EQUAL(std::string("no suitable node (host-mode port already in use on 1 node)"),
                         explain(openGroupOk(one, doc.json())));
  }

  void testMaxReplicasPerNode() {
    std::vector<NodeDoc> nodes = {node("a"), node("b"), node("c")};
    nodes[0].serviceTasks = {{"svc-1", 1}};
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc doc;
    doc.maxReplicas = 2;
    auto* g = openGroupOk(snap, doc.json());
    const std::vector<int32_t> placed = assign(g, 8);
    CPPUNIT_ASSERT_EQUAL(std::string("1 2 2 "), show(histogram(placed, 3)));
    CPPUNIT_ASSERT(std::count(placed.begin(), placed.end(), -1) == 3);
    CPPUNIT_ASSERT(std::all_of(placed.begin() + 5, placed.end(), [](int32_t n) { return n < 0; }));
    CPPUNIT_ASSERT_EQUAL(
        std::string("no suitable node (max replicas per node limit exceed on 3 nodes)"),
        explain(g));
    // Another service is not limited by this one's replicas.
    GroupDoc other;
    other.service = "svc-2";
    other.maxReplicas = 1;
    CPPUNIT_ASSERT(std::vector<int32_t>({0, 1, 2, -1}) ==
                   assign(openGroupOk(snap, other.json()), 4));
    auto* one = openSnapshotOk(snapshotJson({nodes[0]}));
    doc.maxReplicas = 1;
    CPPUNIT_ASSERT_EQUAL(
        std::string("no suitable node (max replicas per node limit exceed on 1 node)"),
        explain(openGroupOk(one, doc.json())));
  }

  // ---- placement preferences ----

  void testNestedPreferencesSpreadEvenlyAtEveryLevel() {
    // east: rack r1 has three nodes, r2 one; west: three racks of one node; x has no zone.
    std::vector<NodeDoc> nodes;
    for (const char* id : {"e1", "e2", "e3"}) {
      nodes.push_back(node(id));
      nodes.back().labels = {{"zone", "east"}, {"rack", "r1"}};
    }
    nodes.push_back(node("e4"));
    nodes.back().labels = {{"zone", "east"}, {"rack", "r2"}};
    for (const char* rack : {"r1", "r2", "r3"}) {
      nodes.push_back(node(std::string("w-") + rack));
      nodes.back().labels = {{"zone", "west"}, {"rack", rack}};
    }
    nodes.push_back(node("x"));
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc doc;
    doc.preferences = {"node.labels.zone", "node.labels.rack"};
    auto* g = openGroupOk(snap, doc.json());
    const std::vector<int32_t> placed = assign(g, 18);
    // 6 per zone value (east, west, none); in east 3 per rack; in west 2 per rack.
    CPPUNIT_ASSERT_EQUAL(std::string("1 1 1 3 2 2 2 6 "), show(histogram(placed, nodes.size())));
    // Evenness holds after every task, not just at the end: after 3k tasks, k per zone.
    std::vector<int> zone(3, 0);
    for (size_t k = 0; k < placed.size(); ++k) {
      const int32_t n = placed[k];
      ++zone[n < 4 ? 0 : n < 7 ? 1 : 2];
      const auto [lo, hi] = std::minmax_element(zone.begin(), zone.end());
      CPPUNIT_ASSERT_MESSAGE(std::to_string(k), *hi - *lo <= 1);
    }
  }

  void testPreferencesCountExistingTasksAndSkipFullBranches() {
    std::vector<NodeDoc> nodes;
    for (const char* id : {"e1", "e2"}) {
      nodes.push_back(node(id));
      nodes.back().labels = {{"zone", "east"}};
      nodes.back().serviceTasks = {{"svc-1", 2}};
    }
    for (const char* id : {"w1", "w2"}) {
      nodes.push_back(node(id));
      nodes.back().labels = {{"zone", "west"}};
    }
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc doc;
    doc.preferences = {"node.labels.zone"};
    // east holds 4 already: west catches up (4), then one each.
    CPPUNIT_ASSERT_EQUAL(std::string("1 0 3 2 "),
                         show(histogram(assign(openGroupOk(snap, doc.json()), 6), 4)));
    // A zone with no node that fits gets nothing; the others take everything.
    nodes[2].availability = "drain";
    nodes[3].availability = "drain";
    auto* drained = openSnapshotOk(snapshotJson(nodes));
    CPPUNIT_ASSERT_EQUAL(std::string("2 2 0 0 "),
                         show(histogram(assign(openGroupOk(drained, doc.json()), 4), 4)));
    // max_replicas fills a zone: the rest go to the other zone.
    nodes[2].availability = "active";
    nodes[3].availability = "active";
    auto* limited = openSnapshotOk(snapshotJson(nodes));
    doc.maxReplicas = 3;
    CPPUNIT_ASSERT_EQUAL(std::string("1 1 3 3 "),
                         show(histogram(assign(openGroupOk(limited, doc.json()), 10), 4)));
  }

  void testEngineLabelPreference() {
    std::vector<NodeDoc> nodes = {node("a"), node("b"), node("c")};
    nodes[0].engineLabels = {{"dc", "1"}};
    nodes[1].engineLabels = {{"dc", "1"}};
    nodes[2].engineLabels = {{"dc", "2"}};
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc doc;
    doc.preferences = {"engine.labels.dc"};
    CPPUNIT_ASSERT_EQUAL(std::string("1 1 2 "),
                         show(histogram(assign(openGroupOk(snap, doc.json()), 4), 3)));
  }

  // ---- failures, filter and score ----

  void testRepeatedlyFailedNodesRankLast() {
    std::vector<NodeDoc> nodes = {node("flaky"), node("b"), node("c")};
    nodes[0].failures = {{"svc-1", 5}};
    nodes[1].serviceTasks = {{"svc-1", 3}};
    nodes[2].serviceTasks = {{"svc-1", 3}};
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc doc;
    doc.maxReplicas = 5;
    const std::vector<int32_t> placed = assign(openGroupOk(snap, doc.json()), 5);
    // b and c fill up to the limit first; the flaky node only takes what nothing else can.
    CPPUNIT_ASSERT(std::vector<int32_t>({1, 2, 1, 2, 0}) == placed);
    // Failures of another service, or fewer than five, do not count.
    nodes[0].failures = {{"svc-1", 4}, {"svc-2", 9}};
    auto* snap2 = openSnapshotOk(snapshotJson(nodes));
    CPPUNIT_ASSERT(std::vector<int32_t>({0}) == assign(openGroupOk(snap2, GroupDoc().json()), 1));
    // With preferences too: the flaky node's zone is skipped while the other has room.
    nodes[0].failures = {{"svc-1", 7}};
    nodes[0].labels = {{"zone", "a"}};
    nodes[1].labels = {{"zone", "b"}};
    nodes[2].labels = {{"zone", "b"}};
    auto* snap3 = openSnapshotOk(snapshotJson(nodes));
    doc.preferences = {"node.labels.zone"};
    CPPUNIT_ASSERT(std::vector<int32_t>({1, 2, 1, 2, 0}) ==
                   assign(openGroupOk(snap3, doc.json()), 5));
  }

  void testFilterAndScoreAgreeWithAssign() {
    std::vector<NodeDoc> nodes = {node("a"), node("b"), node("c"), node("drained")};
    nodes[0].serviceTasks = {{"svc-1", 2}};
    nodes[2].serviceTasks = {{"svc-1", 1}};
    nodes[3].availability = "drain";
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    auto* g = openGroupOk(snap, GroupDoc().json());
    const std::vector<uint8_t> fit = filter(g, 4);
    CPPUNIT_ASSERT(std::vector<uint8_t>({1, 1, 1, 0}) == fit);
    std::vector<int64_t> scores = score(g, fit);
    CPPUNIT_ASSERT(std::vector<int64_t>({1, 3, 2, 0}) == scores);
    for (int round = 0; round < 5; ++round) {
      const std::vector<uint8_t> f = filter(g, 4);
      const std::vector<int64_t> s = score(g, f);
      const auto best = static_cast<int32_t>(std::max_element(s.begin(), s.end()) - s.begin());
      CPPUNIT_ASSERT_EQUAL(best, assign(g, 1).at(0));
    }
    // Score only ranks the nodes the caller says fit.
    scores = score(g, {1, 0, 0, 0});
    CPPUNIT_ASSERT(std::vector<int64_t>({1, 0, 0, 0}) == scores);
    // With preferences, the branch decides before the node.
    std::vector<NodeDoc> zoned = {node("e1"), node("e2"), node("w1")};
    zoned[0].labels = {{"zone", "east"}};
    zoned[1].labels = {{"zone", "east"}};
    zoned[2].labels = {{"zone", "west"}};
    zoned[2].serviceTasks = {{"svc-1", 1}};
    auto* zsnap = openSnapshotOk(snapshotJson(zoned));
    GroupDoc doc;
    doc.preferences = {"node.labels.zone"};
    auto* zg = openGroupOk(zsnap, doc.json());
    for (int round = 0; round < 6; ++round) {
      const std::vector<int64_t> s = score(zg, filter(zg, 3));
      const auto best = static_cast<int32_t>(std::max_element(s.begin(), s.end()) - s.begin());
      CPPUNIT_ASSERT_EQUAL(best, assign(zg, 1).at(0));
    }
  }

  // The heaps and the preference tree against the rules applied naively, task by task, over
  // every node: random clusters (labels, drained nodes, resources, ports, failures, existing
  // tasks), random specs, two groups of the service one after the other.
  void testAssignMatchesABruteForceReferenceOnRandomClusters() {
    std::mt19937 rng(20240601);
    auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
    for (int round = 0; round < 60; ++round) {
      const int n = 1 + pick(40);
      std::vector<NodeDoc> nodes;
      for (int i = 0; i < n; ++i) {
        NodeDoc d = node("n" + std::to_string(i));
        if (pick(4) > 0) d.labels["zone"] = "z" + std::to_string(pick(3));
        d.labels["rack"] = "r" + std::to_string(pick(3));
        if (pick(5) == 0) d.labels["disk"] = "hdd";
        if (pick(10) == 0) d.availability = "drain";
        d.nanoCpus = pick(6) * kCpu;
        d.reservedNanoCpus = pick(2) * kCpu;
        d.memoryBytes = pick(8) * kGiB;
        d.tasks = pick(6);
        if (pick(2) == 0) d.serviceTasks["svc-1"] = pick(4);
        if (pick(6) == 0) d.failures["svc-1"] = 4 + pick(4);
        if (pick(5) == 0) d.hostPorts = {"tcp/80"};
        nodes.push_back(d);
      }
      GroupDoc doc;
      doc.constraints = {"node.labels.disk!=hdd"};
      const int depth = pick(3);
      if (depth >= 1) doc.preferences.push_back("node.labels.zone");
      if (depth >= 2) doc.preferences.push_back("node.labels.rack");
      doc.maxReplicas = pick(5);
      doc.nanoCpus = pick(2) * kCpu / 2;
      doc.memoryBytes = pick(3) * kGiB / 2;
      if (pick(4) == 0) doc.ports = {{"tcp", 80}};

      // The reference's state.
      std::vector<int64_t> svc(n), tasks(n), rcpu(n), rmem(n);
      std::vector<bool> port(n), staticOk(n);
      for (int i = 0; i < n; ++i) {
        const NodeDoc& d = nodes[i];
        svc[i] = d.serviceTasks.count("svc-1") ? d.serviceTasks.at("svc-1") : 0;
        tasks[i] = d.tasks;
        rcpu[i] = d.reservedNanoCpus;
        rmem[i] = d.reservedMemoryBytes;
        port[i] = !d.hostPorts.empty();
        staticOk[i] = d.availability == "active" && !d.labels.count("disk");
      }
      auto failRank = [&](int i) -> int64_t {
        auto it = nodes[i].failures.find("svc-1");
        return it != nodes[i].failures.end() && it->second >= 5 ? it->second : 0;
      };
      auto fits = [&](int i) {
        const NodeDoc& d = nodes[i];
        if (!staticOk[i]) return false;
        if (doc.memoryBytes > 0 && doc.memoryBytes > d.memoryBytes - rmem[i]) return false;
        if (doc.nanoCpus > 0 && doc.nanoCpus > d.nanoCpus - rcpu[i]) return false;
        if (!doc.ports.empty() && port[i]) return false;
        return doc.maxReplicas == 0 || svc[i] < doc.maxReplicas;
      };
      auto value = [&](int i, int level) {
        const char* label = level == 0 ? "zone" : "rack";
        auto it = nodes[i].labels.find(label);
        return it == nodes[i].labels.end() ? std::string() : it->second;
      };
      auto reference = [&]() -> int32_t {
        std::vector<int> candidates;
        for (int i = 0; i < n; ++i) {
          if (fits(i)) candidates.push_back(i);
        }
        if (candidates.empty()) return -1;
        std::vector<int> branch(n);  // the nodes sharing the path chosen so far
        for (int i = 0; i < n; ++i) branch[i] = i;
        for (int level = 0; level < depth; ++level) {
          std::map<std::string, std::tuple<bool, int64_t, int>> keys;  // !healthy, tasks, first
          for (int i : branch) {
            auto [it, added] = keys.try_emplace(value(i, level), true, 0, i);
            std::get<1>(it->second) += svc[i];
          }
          for (int i : candidates) {
            if (failRank(i) == 0) std::get<0>(keys[value(i, level)]) = false;
          }
          std::string best;
          bool found = false;
          for (int i : candidates) {
            const std::string v = value(i, level);
            if (!found || keys[v] < keys[best]) best = v;
            found = true;
          }
          std::vector<int> narrowed, nextBranch;
          for (int i : candidates) {
            if (value(i, level) == best) narrowed.push_back(i);
          }
          for (int i : branch) {
            if (value(i, level) == best) nextBranch.push_back(i);
          }
          candidates = narrowed;
          branch = nextBranch;
        }
        int best = candidates[0];
        for (int i : candidates) {
          if (std::make_tuple(failRank(i), svc[i], tasks[i], i) <
              std::make_tuple(failRank(best), svc[best], tasks[best], best)) {
            best = i;
          }
        }
        return best;
      };
      auto place = [&](int i) {
        ++svc[i];
        ++tasks[i];
        rcpu[i] += doc.nanoCpus;
        rmem[i] += doc.memoryBytes;
        if (!doc.ports.empty()) port[i] = true;
      };

      auto* snap = openSnapshotOk(snapshotJson(nodes));
      for (int groupNo = 0; groupNo < 2; ++groupNo) {
        auto* g = openGroupOk(snap, doc.json());
        std::vector<uint8_t> expectedFit(n);
        for (int i = 0; i < n; ++i) expectedFit[i] = fits(i) ? 1 : 0;
        CPPUNIT_ASSERT(expectedFit == filter(g, static_cast<uint32_t>(n)));
        const uint32_t count = 1 + static_cast<uint32_t>(pick(3 * n));
        std::vector<int32_t> expected;
        for (uint32_t k = 0; k < count; ++k) {
          const int32_t chosen = reference();
          expected.push_back(chosen);
          if (chosen >= 0) place(chosen);
        }
        const std::vector<int32_t> placed = assign(g, count);
        std::string text =
            "round " + std::to_string(round) + " group " + std::to_string(groupNo) + ":";
        for (size_t k = 0; k < count; ++k) {
          text += " " + std::to_string(placed[k]) + "/" + std::to_string(expected[k]);
        }
        CPPUNIT_ASSERT_MESSAGE(text + "\n" + doc.json(), expected == placed);
        closeGroup(g);
      }
      closeSnapshot(snap);
    }
  }

  void testExplainWithNoNodesAndWhenSomethingFits() {
    auto* empty = openSnapshotOk("{\"schema\":\"shoal.nodes/v1\",\"nodes\":[]}");
    auto* g = openGroupOk(empty, GroupDoc().json());
    CPPUNIT_ASSERT(std::vector<int32_t>({-1, -1}) == assign(g, 2));
    CPPUNIT_ASSERT_EQUAL(std::string("no suitable node"), explain(g));
    CPPUNIT_ASSERT(filter(g, 0).empty());
    auto* snap = openSnapshotOk(snapshotJson({node("a")}));
    CPPUNIT_ASSERT_EQUAL(std::string(), explain(openGroupOk(snap, GroupDoc().json())));
    CPPUNIT_ASSERT(assign(openGroupOk(snap, GroupDoc().json()), 0).empty());
  }

  // ---- malformed documents ----

  void testMalformedSnapshotsAreRefusedNamingTheMember() {
    const std::string head = "{\"schema\":\"shoal.nodes/v1\",\"nodes\":[";
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"{not json", "snapshot is not valid JSON"},
        {"[]", "snapshot must be a JSON object"},
        {"{\"schema\":\"shoal.nodes/v2\",\"nodes\":[]}",
         "snapshot: \"schema\" must be \"shoal.nodes/v1\""},
        {"{\"nodes\":[]}", "snapshot: \"schema\" must be \"shoal.nodes/v1\""},
        {"{\"schema\":\"shoal.nodes/v1\"}", "snapshot: nodes is missing"},
        {"{\"schema\":\"shoal.nodes/v1\",\"nodes\":{}}", "snapshot: nodes must be an array"},
        {head + "{\"id\":\"a\"},5]}", "snapshot: nodes[1] must be an object"},
        {head + "{\"hostname\":\"x\"}]}", "snapshot: nodes[0].id is missing"},
        {head + "{\"id\":\"\"}]}", "snapshot: nodes[0].id must not be empty"},
        {head + "{\"id\":7}]}", "snapshot: nodes[0].id must be a string"},
        {head + "{\"id\":\"a\",\"labels\":{\"zone\":1}}]}",
         "snapshot: nodes[0].labels[\"zone\"] must be a string"},
        {head + "{\"id\":\"a\"},{\"id\":\"b\",\"engine_labels\":[]}]}",
         "snapshot: nodes[1].engine_labels must be an object"},
        {head + "{\"id\":\"a\",\"resources\":{\"memory_bytes\":\"8G\"}}]}",
         "snapshot: nodes[0].resources.memory_bytes must be a non-negative integer"},
        {head + "{\"id\":\"a\",\"reserved\":{\"nano_cpus\":-1}}]}",
         "snapshot: nodes[0].reserved.nano_cpus must be a non-negative integer"},
        {head + "{\"id\":\"a\",\"tasks\":true}]}",
         "snapshot: nodes[0].tasks must be a non-negative integer"},
        {head + "{\"id\":\"a\",\"tasks\":1.5}]}",
         "snapshot: nodes[0].tasks must be a non-negative integer"},
        {head + "{\"id\":\"a\",\"tasks\":18446744073709551615}]}",
         "snapshot: nodes[0].tasks is out of range"},
        {head + "{\"id\":\"a\",\"state\":\"sleeping\"}]}", "snapshot: nodes[0].state must be"},
        {head + "{\"id\":\"a\",\"role\":\"boss\"}]}", "snapshot: nodes[0].role must be"},
        {head + "{\"id\":\"a\",\"availability\":1}]}",
         "snapshot: nodes[0].availability must be a string"},
        {head + "{\"id\":\"a\",\"platform\":\"linux\"}]}",
         "snapshot: nodes[0].platform must be an object"},
        {head + "{\"id\":\"a\",\"platform\":{\"os\":1}}]}",
         "snapshot: nodes[0].platform.os must be a string"},
        {head + "{\"id\":\"a\",\"service_tasks\":{\"s\":\"x\"}}]}",
         "snapshot: nodes[0].service_tasks[\"s\"] must be a non-negative integer"},
        {head + "{\"id\":\"a\",\"failures\":[]}]}",
         "snapshot: nodes[0].failures must be an object"},
        {head + "{\"id\":\"a\",\"host_ports\":[\"tcp/80\",\"80\"]}]}",
         "snapshot: nodes[0].host_ports[1] is \"80\", expected"},
        {head + "{\"id\":\"a\",\"host_ports\":[\"tcp/0\"]}]}",
         "snapshot: nodes[0].host_ports[0] is \"tcp/0\""},
        {head + "{\"id\":\"a\",\"host_ports\":[\"icmp/1\"]}]}",
         "snapshot: nodes[0].host_ports[0] is \"icmp/1\""},
        {head + "{\"id\":\"a\",\"host_ports\":[80]}]}",
         "snapshot: nodes[0].host_ports[0] must be a string"},
        {head + "{\"id\":\"a\",\"host_ports\":\"tcp/80\"}]}",
         "snapshot: nodes[0].host_ports must be an array"},
    };
    for (const auto& [json, message] : cases) {
      shoal_sched_snapshot* snap = reinterpret_cast<shoal_sched_snapshot*>(this);
      uint32_t nodes = 99;
      Status s = openSnapshot(json, &snap, &nodes);
      CPPUNIT_ASSERT_MESSAGE(json + ": " + s.toString(),
                             s.code() == Status::Code::kInvalidArgument);
      CPPUNIT_ASSERT_MESSAGE(json + " -> " + s.message(), contains(s.message(), message));
      CPPUNIT_ASSERT(snap == nullptr);
      CPPUNIT_ASSERT_EQUAL(uint32_t(0), nodes);
    }
    // Absent and null optional members are defaults; unknown members are ignored.
    auto* ok =
        openSnapshotOk(head + "{\"id\":\"a\",\"labels\":null,\"future\":{}}]," + "\"cluster\":{}}");
    auto* g = openGroupOk(ok, GroupDoc().json());
    CPPUNIT_ASSERT_EQUAL(std::string("no suitable node (1 node not available for new tasks)"),
                         explain(g));
  }

  void testMalformedGroupsAreRefusedNamingTheMember() {
    auto* snap = openSnapshotOk(snapshotJson({node("a")}));
    const std::string head = "{\"schema\":\"shoal.task-group/v1\",\"service_id\":\"s\",";
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"nope", "group is not valid JSON"},
        {"{\"schema\":\"shoal.nodes/v1\",\"service_id\":\"s\"}",
         "group: \"schema\" must be \"shoal.task-group/v1\""},
        {"{\"schema\":\"shoal.task-group/v1\"}", "group: service_id is missing"},
        {"{\"schema\":\"shoal.task-group/v1\",\"service_id\":\"\"}",
         "group: service_id must not be empty"},
        {head + "\"spec\":[]}", "group: spec must be an object"},
        {head + "\"spec\":{\"placement\":{\"constraints\":\"node.role==worker\"}}}",
         "group: spec.placement.constraints must be an array"},
        {head + "\"spec\":{\"placement\":{\"constraints\":[1]}}}",
         "group: spec.placement.constraints[0] must be a string"},
        {head + "\"spec\":{\"placement\":{\"preferences\":[\"zone\"]}}}",
         "invalid placement preference \"zone\""},
        {head + "\"spec\":{\"placement\":{\"max_replicas\":-1}}}",
         "group: spec.placement.max_replicas must be a non-negative integer"},
        {head + "\"spec\":{\"placement\":{\"platforms\":[{\"os\":1}]}}}",
         "group: spec.placement.platforms[0].os must be a string"},
        {head + "\"spec\":{\"placement\":{\"platforms\":[\"linux\"]}}}",
         "group: spec.placement.platforms[0] must be an object"},
        {head + "\"spec\":{\"resources\":{\"nano_cpus\":\"1\"}}}",
         "group: spec.resources.nano_cpus must be a non-negative integer"},
        {head + "\"spec\":{\"ports\":[{\"published\":70000}]}}",
         "group: spec.ports[0].published must be a port number"},
        {head + "\"spec\":{\"ports\":[{\"protocol\":\"tcp\",\"published\":80},{}]}}",
         "group: spec.ports[1].published is missing"},
        {head + "\"spec\":{\"ports\":[{\"protocol\":\"icmp\",\"published\":1}]}}",
         "group: spec.ports[0].protocol must be"},
        {head + "\"tasks\":[1]}", "group: tasks[0] must be a string"},
    };
    for (const auto& [json, message] : cases) {
      shoal_sched_group* g = reinterpret_cast<shoal_sched_group*>(this);
      Status s = openGroup(snap, json, &g);
      CPPUNIT_ASSERT_MESSAGE(json + ": " + s.toString(),
                             s.code() == Status::Code::kInvalidArgument);
      CPPUNIT_ASSERT_MESSAGE(json + " -> " + s.message(), contains(s.message(), message));
      CPPUNIT_ASSERT(g == nullptr);
    }
    // The smallest group: everything but the schema and the service is optional.
    auto* g = openGroupOk(snap, "{\"schema\":\"shoal.task-group/v1\",\"service_id\":\"s\"}");
    CPPUNIT_ASSERT(std::vector<int32_t>({0}) == assign(g, 1));
  }

  void testJsonIsReadStrictly() {
    const std::string head = "{\"schema\":\"shoal.nodes/v1\",\"nodes\":[";
    std::string deep = head + "],\"x\":";
    for (int i = 0; i < 70; ++i) deep += "[";
    for (int i = 0; i < 70; ++i) deep += "]";
    deep += "}";
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"", "snapshot is not valid JSON: unexpected end of input at line 1, column 1"},
        {head + "],}", "snapshot is not valid JSON: expected a member name"},
        {head + "{\"id\":\"a\"},]}", "snapshot is not valid JSON: expected a value"},
        {head + "]} x", "snapshot is not valid JSON: unexpected data after the document"},
        {"{\n  \"schema\": shoal}", "not valid JSON: expected a value at line 2, column 13"},
        {head + "{\"id\":\"a\",\"tasks\":NaN}]}", "not valid JSON: expected a value"},
        {head + "{\"id\":\"a\",\"tasks\":01}]}", "not valid JSON: expected ',' or '}'"},
        {head + "{\"id\":\"a\",\"tasks\":1.}]}", "not valid JSON: invalid number"},
        {head + "{\"id\":\"a\xff\"}]}", "not valid JSON: invalid UTF-8 in a string"},
        {head + "{\"id\":\"\xed\xa0\x80\"}]}", "not valid JSON: invalid UTF-8"},  // a surrogate
        {head + "{\"id\":\"a\nb\"}]}", "not valid JSON: control character in a string"},
        {head + "{\"id\":\"\\ud800\"}]}", "not valid JSON: unpaired surrogate"},
        {head + "{\"id\":\"\\x41\"}]}", "not valid JSON: invalid escape in a string"},
        {head + "{\"id\":\"a\"", "not valid JSON: unexpected end of input"},
        {deep, "not valid JSON: nested too deeply"},
        {"\"text\"", "snapshot must be a JSON object"},
        {"{} {}", "not valid JSON: unexpected data after the document"},
        {head + "{\"id\":\"a\",\"id\":\"b\"}]}", "snapshot: nodes[0].id appears twice"},
        {head + "{\"id\":\"a\",\"labels\":{\"zone\":\"x\",\"zone\":\"y\"}}]}",
         "snapshot: nodes[0].labels[\"zone\"] appears twice"},
        {head + "{\"id\":\"a\",\"service_tasks\":{\"s\":1,\"s\":2}}]}",
         "snapshot: nodes[0].service_tasks[\"s\"] appears twice"},
        {head + "{\"id\":\"a\",\"tasks\":1e3}]}",
         "snapshot: nodes[0].tasks must be a non-negative integer"},
    };
    for (const auto& [json, message] : cases) {
      shoal_sched_snapshot* snap = nullptr;
      uint32_t nodes = 0;
      Status s = openSnapshot(json, &snap, &nodes);
      CPPUNIT_ASSERT_MESSAGE(json + ": " + s.toString(),
                             s.code() == Status::Code::kInvalidArgument);
      CPPUNIT_ASSERT_MESSAGE(json + " -> " + s.message(), contains(s.message(), message));
    }
    // Escapes are decoded (a label name and value written with \u escapes match plain text),
    // non-ASCII UTF-8 is kept, and -0 is zero.
    auto* snap = openSnapshotOk(
        head +
        "{\"id\":\"a\",\"hostname\":\"caf\xc3\xa9 \\ud83d\\ude00\",\"state\":\"ready\","
        "\"availability\":\"active\",\"labels\":{\"z\\u006fne\":\"e\\u0061st\\/1\"},"
        "\"tasks\":-0}\n]\t}\r\n");
    auto* g = openGroupOk(snap, groupWith({"node.labels.zone==east/1"}).json());
    CPPUNIT_ASSERT(std::vector<int32_t>({0}) == assign(g, 1));
  }

  // ---- Lua placement policies (run by the kernel through the host table) ----

  void testNamedFilterPolicyKeepsNodesOffAndExplainsWhy() {
    std::vector<NodeDoc> nodes = {node("a"), node("b"), node("c"), node("d")};
    nodes[0].labels = {{"maintenance", "true"}};
    nodes[1].availability = "drain";
    nodes[2].labels = {{"maintenance", "TRUE"}};
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc doc;
    doc.extraPlacement = policyMember("keep-off-maintenance");
    auto* g = openGroupOk(snap, doc.json());
    CPPUNIT_ASSERT(std::vector<uint8_t>({0, 0, 0, 1}) == filter(g, 4));
    CPPUNIT_ASSERT_EQUAL(std::string("3 3 3 "), show(assign(g, 3)));
    CPPUNIT_ASSERT_EQUAL(std::string(), explain(g));

    // Without d nothing fits. A node that also fails a Swarm filter is counted under that one
    // (e is in maintenance and full), and the policy's reason is its own.
    nodes.pop_back();
    NodeDoc full = node("e");
    full.labels = {{"maintenance", "true"}};
    full.reservedMemoryBytes = 8 * kGiB;
    nodes.push_back(full);
    auto* snap2 = openSnapshotOk(snapshotJson(nodes));
    doc.memoryBytes = kGiB;
    auto* g2 = openGroupOk(snap2, doc.json());
    CPPUNIT_ASSERT_EQUAL(std::string("-1 -1 "), show(assign(g2, 2)));
    CPPUNIT_ASSERT_EQUAL(std::string("no suitable node (1 node not available for new tasks; 1 node "
                                     "had insufficient memory; 2 nodes rejected by policy "
                                     "\"keep-off-maintenance\": node is in maintenance)"),
                         explain(g2));
    CPPUNIT_ASSERT(std::vector<uint8_t>({0, 0, 0, 0}) == filter(g2, 4));
  }

  void testLuaConstraintExpressionFilters() {
    std::vector<NodeDoc> nodes = {node("e1"), node("w1"), node("none"), node("e2")};
    nodes[0].labels = {{"zone", "east"}};
    nodes[1].labels = {{"zone", "west"}};
    nodes[3].labels = {{"zone", "east"}};
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc doc;
    doc.extraPlacement = luaMember("node.labels.zone ~= \"east\"");
    auto* g = openGroupOk(snap, doc.json());
    CPPUNIT_ASSERT(std::vector<uint8_t>({0, 1, 1, 0}) == filter(g, 4));
    CPPUNIT_ASSERT_EQUAL(std::string("0 2 2 0 "), show(histogram(assign(g, 4), 4)));

    // Only east nodes: the expression names itself in the explanation. An array of
    // expressions must all hold.
    auto* east = openSnapshotOk(snapshotJson({nodes[0], nodes[3]}));
    auto* ge = openGroupOk(east, doc.json());
    CPPUNIT_ASSERT_EQUAL(std::string("-1 "), show(assign(ge, 1)));
    CPPUNIT_ASSERT_EQUAL(
        std::string("no suitable node (2 nodes rejected by lua constraint `node.labels.zone ~= "
                    "\"east\"`)"),
        explain(ge));
    GroupDoc both;
    both.extraPlacement =
        "\"lua_constraints\":[\"node.labels.zone ~= 'east'\",\"node.hostname ~= 'w1-host'\"]";
    auto* gb = openGroupOk(snap, both.json());
    CPPUNIT_ASSERT(std::vector<uint8_t>({0, 0, 1, 0}) == filter(gb, 4));
  }

  void testExpressionAndPolicyTogetherCountEachNodeOnce() {
    std::vector<NodeDoc> nodes = {node("e1"), node("w1"), node("w2"), node("w3")};
    nodes[0].labels = {{"zone", "east"}, {"maintenance", "true"}};  // the expression's
    nodes[1].labels = {{"zone", "west"}, {"maintenance", "true"}};  // the policy's
    nodes[2].labels = {{"zone", "west"}};
    nodes[3].labels = {{"zone", "east"}};  // the expression's
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc doc;
    doc.extraPlacement =
        policyMember("keep-off-maintenance") + "," + luaMember("node.labels.zone == 'west'");
    auto* g = openGroupOk(snap, doc.json());
    CPPUNIT_ASSERT(std::vector<uint8_t>({0, 0, 1, 0}) == filter(g, 4));
    CPPUNIT_ASSERT_EQUAL(std::string("2 2 "), show(assign(g, 2)));
    // w2 is full for a group with max replicas 1: counted as such, and each other node once, under
    // the first Lua filter that rejected it (the expression before the policy).
    GroupDoc capped = doc;
    capped.maxReplicas = 1;
    auto* gc = openGroupOk(snap, capped.json());
    CPPUNIT_ASSERT_EQUAL(std::string("-1 "), show(assign(gc, 1)));
    CPPUNIT_ASSERT_EQUAL(std::string("no suitable node (max replicas per node limit exceed on 1 "
                                     "node; 2 nodes rejected by lua constraint "
                                     "`node.labels.zone == 'west'`; 1 node rejected by policy "
                                     "\"keep-off-maintenance\": node is in maintenance)"),
                         explain(gc));
  }

  void testBinpackFillsTheFullestNodeThatFitsAndStopsAtCapacity() {
    std::vector<NodeDoc> nodes = {node("a"), node("b"), node("c"), node("d"), node("e")};
    nodes[0].reservedMemoryBytes = 2 * kGiB;  // takes 6 tasks of 1 GiB
    nodes[1].reservedMemoryBytes = 5 * kGiB;  // 3
    nodes[2].reservedMemoryBytes = 0;         // 8
    nodes[3].reservedMemoryBytes = 7 * kGiB;  // 1
    nodes[4].reservedMemoryBytes = 6 * kGiB;
    nodes[4].availability = "drain";
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc doc;
    doc.memoryBytes = kGiB;
    doc.extraPlacement = policyMember("binpack");
    auto* g = openGroupOk(snap, doc.json());
    // The fullest node first, until it is full, then the next fullest; the spread alone would
    // have started on the empty c.
    std::vector<int32_t> expected = {3, 1, 1, 1};
    expected.insert(expected.end(), 6, 0);
    expected.insert(expected.end(), 8, 2);
    expected.insert(expected.end(), 2, -1);
    CPPUNIT_ASSERT_EQUAL(show(expected), show(assign(g, 20)));
    CPPUNIT_ASSERT_EQUAL(
        std::string("no suitable node (1 node not available for new tasks; 4 nodes had "
                    "insufficient memory)"),
        explain(g));

    // Within one call and across calls alike: the same order, task by task.
    auto* snap2 = openSnapshotOk(snapshotJson(nodes));
    auto* g2 = openGroupOk(snap2, doc.json());
    std::vector<int32_t> oneByOne;
    for (int k = 0; k < 20; ++k) oneByOne.push_back(assign(g2, 1).at(0));
    CPPUNIT_ASSERT_EQUAL(show(expected), show(oneByOne));

    // The score op ranks by the policy's score too: d (the fullest) first, c last.
    auto* snap3 = openSnapshotOk(snapshotJson(nodes));
    auto* g3 = openGroupOk(snap3, doc.json());
    CPPUNIT_ASSERT(std::vector<int64_t>({2, 3, 1, 4, 0}) == score(g3, filter(g3, 5)));
  }

  void testZoneSpreadSpreadsAcrossZones() {
    std::vector<NodeDoc> nodes = {node("e1"), node("e2"), node("e3"), node("w1"), node("n1")};
    for (int i = 0; i < 3; ++i) nodes[static_cast<size_t>(i)].labels = {{"zone", "east"}};
    nodes[3].labels = {{"zone", "west"}};
    nodes[4].labels = {{"zone", "north"}};
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc doc;
    doc.extraPlacement = policyMember("zone-spread");
    auto* g = openGroupOk(snap, doc.json());
    // Two tasks per zone, where spreading over nodes alone would put four in the east. Each
    // placement lowers the score of every node of its zone, not just its own.
    const std::vector<int32_t> placed = assign(g, 6);
    CPPUNIT_ASSERT_EQUAL(std::string("0 3 4 1 3 4 "), show(placed));
    // Existing tasks count: east already has 3 of the service, so the next 4 go west and north.
    nodes[0].serviceTasks = {{"svc-1", 2}};
    nodes[1].serviceTasks = {{"svc-1", 1}};
    auto* g2 = openGroupOk(openSnapshotOk(snapshotJson(nodes)), doc.json());
    CPPUNIT_ASSERT_EQUAL(std::string("3 4 3 4 "), show(assign(g2, 4)));
  }

  void testPolicyScoresRankNodesWithinPreferenceBranches() {
    // Preferences keep their meaning (the zones even out), binpack fills nodes within a zone.
    std::vector<NodeDoc> nodes = {node("e1"), node("e2"), node("w1"), node("w2")};
    nodes[0].labels = {{"zone", "east"}};
    nodes[1].labels = {{"zone", "east"}};
    nodes[1].reservedMemoryBytes = 4 * kGiB;
    nodes[2].labels = {{"zone", "west"}};
    nodes[2].reservedMemoryBytes = 2 * kGiB;
    nodes[3].labels = {{"zone", "west"}};
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc doc;
    doc.memoryBytes = kGiB;
    doc.preferences = {"node.labels.zone"};
    doc.extraPlacement = policyMember("binpack");
    auto* g = openGroupOk(snap, doc.json());
    const std::vector<int32_t> placed = assign(g, 8);
    CPPUNIT_ASSERT_EQUAL(std::string("1 2 1 2 1 2 1 2 "), show(placed));
    // A node where the service keeps failing still ranks last, however full it is.
    std::vector<NodeDoc> failing = {node("a"), node("b")};
    failing[0].reservedMemoryBytes = 6 * kGiB;
    failing[0].failures = {{"svc-1", 5}};
    auto* fsnap = openSnapshotOk(snapshotJson(failing));
    GroupDoc plain;
    plain.memoryBytes = kGiB;
    plain.extraPlacement = policyMember("binpack");
    auto* fg = openGroupOk(fsnap, plain.json());
    CPPUNIT_ASSERT_EQUAL(std::string("1 1 "), show(assign(fg, 2)));
  }

  // One assign() call re-scores only the node it placed on and the candidates whose scores
  // went stale; placing task by task (each call scores every node afresh) must agree, on
  // random clusters, with binpack (a node's score is its own), zone-spread (a placement
  // changes every node of its zone) and a score of the node alone that goes up and down, with
  // and without preferences. The score op agrees too.
  void testOneAssignCallMatchesTaskByTaskCallsUnderScoringPolicies() {
    (*policies_)["wobble"] =
        "return shoal.policy{ score = function(task, node)\n"
        "  return (node.tasks * 7) % 5 - node.memory_free / 2^30 + node.service_tasks % 2\n"
        "end }\n";
    const char* const scoring[] = {"binpack", "zone-spread", "wobble"};
    std::mt19937 rng(20261201);
    auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
    for (int round = 0; round < 60; ++round) {
      const int n = 1 + pick(30);
      std::vector<NodeDoc> nodes;
      for (int i = 0; i < n; ++i) {
        NodeDoc d = node("n" + std::to_string(i));
        if (pick(5) > 0) d.labels["zone"] = "z" + std::to_string(pick(3));
        d.labels["rack"] = "r" + std::to_string(pick(2));
        if (pick(8) == 0) d.availability = "drain";
        d.memoryBytes = (4 + pick(8)) * kGiB;
        d.reservedMemoryBytes = pick(4) * kGiB;
        d.nanoCpus = (2 + pick(6)) * kCpu;
        d.reservedNanoCpus = pick(2) * kCpu;
        d.tasks = pick(6);
        if (pick(3) == 0) d.serviceTasks["svc-1"] = pick(4);
        if (pick(10) == 0) d.failures["svc-1"] = 5 + pick(3);
        nodes.push_back(d);
      }
      GroupDoc doc;
      doc.memoryBytes = pick(3) * kGiB / 2;
      doc.nanoCpus = pick(3) * kCpu / 2;
      if (pick(3) == 0) doc.preferences = {"node.labels.zone"};
      if (pick(4) == 0) doc.preferences.push_back("node.labels.rack");
      doc.extraPlacement = policyMember(scoring[pick(3)]);
      const std::string snapshot = snapshotJson(nodes);
      const auto count = static_cast<uint32_t>(1 + pick(60));
      const std::string context = "round " + std::to_string(round) + ": " + doc.json();

      auto* a = openGroupOk(openSnapshotOk(snapshot), doc.json());
      const std::vector<int32_t> together = assign(a, count);
      auto* b = openGroupOk(openSnapshotOk(snapshot), doc.json());
      std::vector<int32_t> oneByOne;
      for (uint32_t k = 0; k < count; ++k) {
        const std::vector<uint8_t> fit = filter(b, static_cast<uint32_t>(n));
        const std::vector<int64_t> s = score(b, fit);
        const int32_t placed = assign(b, 1).at(0);
        if (placed >= 0) {
          const auto best = static_cast<int32_t>(std::max_element(s.begin(), s.end()) - s.begin());
          CPPUNIT_ASSERT_EQUAL_MESSAGE(context, best, placed);
        }
        oneByOne.push_back(placed);
      }
      CPPUNIT_ASSERT_EQUAL_MESSAGE(context, show(oneByOne), show(together));
      closeGroup(a);
      closeGroup(b);
    }
  }

  void testPoliciesSeeEarlierPlacementsOfThePassAndShareOneParse() {
    std::vector<NodeDoc> nodes = {node("a"), node("b"), node("c")};
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    // Another service fills a with 5 GiB: the next group's expression sees memory_free drop.
    GroupDoc big;
    big.service = "svc-big";
    big.memoryBytes = 5 * kGiB;
    big.constraints = {"node.id==a"};
    auto* g1 = openGroupOk(snap, big.json());
    CPPUNIT_ASSERT_EQUAL(std::string("0 "), show(assign(g1, 1)));
    GroupDoc roomy;
    roomy.extraPlacement = luaMember("node.memory_free > 4 * 1024^3 and node.tasks < 2");
    auto* g2 = openGroupOk(snap, roomy.json());
    CPPUNIT_ASSERT(std::vector<uint8_t>({0, 1, 1}) == filter(g2, 3));
    // Binpack of a third group counts both earlier groups' placements (b took 2 tasks of 1 GiB).
    GroupDoc small;
    small.memoryBytes = kGiB;
    small.constraints = {"node.id==b"};
    small.service = "svc-small";
    CPPUNIT_ASSERT_EQUAL(std::string("1 1 "), show(assign(openGroupOk(snap, small.json()), 2)));
    GroupDoc packed;
    packed.service = "svc-packed";
    packed.memoryBytes = kGiB;
    packed.extraPlacement = policyMember("binpack");
    auto* g3 = openGroupOk(snap, packed.json());
    // a (5 GiB used) first, until full, then b (2 GiB used).
    CPPUNIT_ASSERT_EQUAL(std::string("0 0 0 1 "), show(assign(g3, 4)));
    // Every policy of the pass was bound to the same text: the kernel parsed it once.
    CPPUNIT_ASSERT_EQUAL(uint64_t(1), host_->policies().stats().snapshotParses);
  }

  void testRunawayPolicyFailsOnlyItsGroupAndQuickly() {
    (*policies_)["spin"] =
        "return shoal.policy{\n  filter = function(task, node)\n    while true do end\n  end,\n}\n";
    (*policies_)["spin-score"] =
        "return shoal.policy{\n  score = function(task, node)\n    while true do end\n  end,\n}\n";
    shoal::policy::Limits limits;
    limits.clock = &kFrozen;
    limits.instructions = 2'000'000;
    host_->setPolicyLimits(limits);
    auto* snap = openSnapshotOk(snapshotJson({node("a"), node("b"), node("c")}));
    GroupDoc doc;
    doc.extraPlacement = policyMember("spin");
    const auto start = std::chrono::steady_clock::now();
    shoal_sched_group* g = nullptr;
    Status s = openGroup(snap, doc.json(), &g);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.code() == Status::Code::kTimeout);
    CPPUNIT_ASSERT_MESSAGE(s.message(),
                           contains(s.message(),
                                    "plugin scheduler-spread: group_open: policy \"spin\" "
                                    "line 3: instruction limit exceeded (2000000 "
                                    "instructions)"));
    CPPUNIT_ASSERT(g == nullptr);

    // A score that runs away fails assign instead (the filter passed at group_open).
    GroupDoc scored;
    scored.extraPlacement = policyMember("spin-score");
    auto* gs = openGroupOk(snap, scored.json());
    std::vector<int32_t> out(2, -2);
    s = failing("assign", [&](void* st) { return ops().assign(st, gs, 2, out.data()); });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.code() == Status::Code::kTimeout);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                 "policy \"spin-score\" line 3: instruction limit "
                                                 "exceeded"));
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    CPPUNIT_ASSERT_MESSAGE(std::to_string(seconds) + " s", seconds < 10.0);

    // The snapshot and a group without a policy are unaffected.
    auto* plain = openGroupOk(snap, GroupDoc().json());
    CPPUNIT_ASSERT_EQUAL(std::string("0 1 2 0 "), show(assign(plain, 4)));
    closeGroup(gs);
    CPPUNIT_ASSERT_EQUAL(size_t(0), host_->policies().stats().open);
  }

  void testPolicyErrorInAssignTakesBackItsPlacements() {
    // Raises as soon as the service has a task anywhere: at the second task's re-scoring.
    (*policies_)["boom"] =
        "return shoal.policy{\n  prepare = function(task, nodes)\n"
        "    for _, n in ipairs(nodes) do\n"
        "      if n.service_tasks > 0 then error('boom after ' .. n.id) end\n"
        "    end\n  end,\n  score = function(task, node) return 0 end,\n}\n";
    std::vector<NodeDoc> nodes = {node("a"), node("b"), node("c")};
    auto* snap = openSnapshotOk(snapshotJson(nodes));
    GroupDoc doc;
    doc.memoryBytes = kGiB;
    doc.ports = {{"tcp", 8080}};
    doc.extraPlacement = policyMember("boom");
    auto* g = openGroupOk(snap, doc.json());
    // The first task lands on a; re-scoring for the second raises.
    std::vector<int32_t> out(3, -2);
    Status s = failing("assign", [&](void* st) { return ops().assign(st, g, 3, out.data()); });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(s.message(),
                           contains(s.message(), "policy \"boom\" line 4: boom after a"));
    CPPUNIT_ASSERT_EQUAL(std::string("-1 -1 -1 "), show(out));
    // Nothing of that call stayed in the snapshot: not the task, its memory, nor its port.
    GroupDoc plain;
    plain.memoryBytes = 8 * kGiB;
    plain.ports = {{"tcp", 8080}};
    auto* p = openGroupOk(snap, plain.json());
    CPPUNIT_ASSERT_EQUAL(std::string("0 1 2 "), show(assign(p, 3)));
    // The failed group itself stays usable: explain and filter still answer.
    CPPUNIT_ASSERT(std::vector<uint8_t>({0, 0, 0}) == filter(g, 3));
    CPPUNIT_ASSERT(contains(explain(g), "had insufficient memory"));
  }

  void testUnknownPolicyNameIsNotFound() {
    auto* snap = openSnapshotOk(snapshotJson({node("a")}));
    GroupDoc doc;
    doc.extraPlacement = policyMember("nope");
    shoal_sched_group* g = nullptr;
    Status s = openGroup(snap, doc.json(), &g);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.code() == Status::Code::kNotFound);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "no policy named \"nope\""));
    CPPUNIT_ASSERT(g == nullptr);
    // The expression opened before it is closed again.
    doc.extraPlacement = luaMember("true") + "," + policyMember("nope");
    s = openGroup(snap, doc.json(), &g);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.code() == Status::Code::kNotFound);
    CPPUNIT_ASSERT_EQUAL(size_t(0), host_->policies().stats().open);
    CPPUNIT_ASSERT(std::vector<int32_t>({0}) == assign(openGroupOk(snap, GroupDoc().json()), 1));
  }

  void testBadPolicyMembersAndExpressionsAreRefused() {
    auto* snap = openSnapshotOk(snapshotJson({node("a")}));
    const std::vector<std::tuple<std::string, Status::Code, std::string>> cases = {
        {"\"policy\":\"\"", Status::Code::kInvalidArgument,
         "group: spec.placement.policy must not be empty"},
        {"\"policy\":3", Status::Code::kInvalidArgument,
         "group: spec.placement.policy must be a string"},
        {"\"lua_constraints\":5", Status::Code::kInvalidArgument,
         "group: spec.placement.lua_constraints must be a string or an array of strings"},
        {"\"lua_constraints\":[\"true\",\"\"]", Status::Code::kInvalidArgument,
         "group: spec.placement.lua_constraints must not hold an empty expression"},
        {"\"policy\":\"binpack\",\"policy\":\"binpack\"", Status::Code::kInvalidArgument,
         "group: spec.placement.policy appears twice"},
        {luaMember("node.labels.zone ~="), Status::Code::kInvalidArgument,
         "lua constraint `node.labels.zone ~=`"},
        {luaMember("node.nope.x == 1"), Status::Code::kInvalidArgument,
         "lua constraint `node.nope.x == 1`"},
    };
    for (const auto& [member, code, message] : cases) {
      GroupDoc doc;
      doc.extraPlacement = member;
      shoal_sched_group* g = nullptr;
      Status s = openGroup(snap, doc.json(), &g);
      CPPUNIT_ASSERT_MESSAGE(member + ": " + s.toString(), s.code() == code);
      CPPUNIT_ASSERT_MESSAGE(member + ": " + s.message(), contains(s.message(), message));
      CPPUNIT_ASSERT(g == nullptr);
    }
    // null is absent, and a constraint the plugin refuses is still refused next to a policy.
    GroupDoc doc;
    doc.extraPlacement = "\"policy\":null,\"lua_constraints\":null";
    CPPUNIT_ASSERT(std::vector<int32_t>({0}) == assign(openGroupOk(snap, doc.json()), 1));
    doc.extraPlacement = policyMember("binpack");
    doc.constraints = {"node.foo==1"};
    shoal_sched_group* g = nullptr;
    Status s = openGroup(snap, doc.json(), &g);
    CPPUNIT_ASSERT_MESSAGE(s.message(),
                           contains(s.message(), "invalid constraint \"node.foo==1\""));
    CPPUNIT_ASSERT_EQUAL(size_t(0), host_->policies().stats().open);
  }

  // A 1.0 host table (no policy_* slots): the plugin, initialised with it, refuses a group with
  // a Lua policy, before anything else in its placement, and still places the others.
  void testHostWithoutPolicySlotsRefusesLuaGroups() {
    const std::string path = std::string(SHOAL_PLUGIN_BUILD_DIR) + "/scheduler-spread.so";
    void* so = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    CPPUNIT_ASSERT_MESSAGE(path, so != nullptr);
    auto describe = reinterpret_cast<shoal_plugin_describe_fn>(dlsym(so, SHOAL_PLUGIN_ENTRY));
    CPPUNIT_ASSERT(describe != nullptr);
    const shoal_plugin_desc* desc = describe();
    shoal_host old = *PluginHost::hostTable();
    old.struct_size = static_cast<uint32_t>(offsetof(shoal_host, policy_open));
    old.abi_minor = 0;
    void* state = nullptr;
    const std::string config = "{}";
    Status s = sched_->invoke("init", [&](void*) {
      return desc->init(&old, sched_->handle(), {config.data(), config.size()}, &state);
    });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    const auto& o = *static_cast<const shoal_scheduler_ops*>(desc->ops);
    const std::string nodes = snapshotJson({node("a")});
    shoal_sched_snapshot* snap = nullptr;
    uint32_t count = 0;
    s = sched_->invoke("snapshot_open", [&](void*) {
      return o.snapshot_open(state, {nodes.data(), nodes.size()}, &snap, &count);
    });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    for (const std::string& member : {policyMember("binpack"), luaMember("true")}) {
      GroupDoc doc;
      doc.extraPlacement = member;
      doc.constraints = {"node.foo==1"};  // refused too, but the policy is reported first
      const std::string json = doc.json();
      shoal_sched_group* g = nullptr;
      s = sched_->invoke("group_open", [&](void*) {
        return o.group_open(state, snap, {json.data(), json.size()}, &g);
      });
      CPPUNIT_ASSERT_MESSAGE(s.toString(), s.code() == Status::Code::kNotSupported);
      CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(),
                                                   "cannot run them: its plugin host table has "
                                                   "no policy_* slots (they came with plugin ABI "
                                                   "1.1)"));
      CPPUNIT_ASSERT(g == nullptr);
    }
    const std::string plain = GroupDoc().json();
    shoal_sched_group* g = nullptr;
    s = sched_->invoke("group_open", [&](void*) {
      return o.group_open(state, snap, {plain.data(), plain.size()}, &g);
    });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    int32_t placed = -2;
    s = sched_->invoke("assign", [&](void*) { return o.assign(state, g, 1, &placed); });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    CPPUNIT_ASSERT_EQUAL(int32_t(0), placed);
    sched_->invoke("close", [&](void*) {
      o.group_close(state, g);
      o.snapshot_close(state, snap);
      return SHOAL_OK;
    });
    desc->fini(state);
    dlclose(so);
  }

  void testPolicyHandlesAreClosedWithTheirGroup() {
    auto* snap = openSnapshotOk(snapshotJson({node("a"), node("b")}));
    GroupDoc doc;
    doc.extraPlacement = policyMember("binpack") + "," + luaMember("node.id ~= 'b'");
    auto* g = openGroupOk(snap, doc.json());
    CPPUNIT_ASSERT_EQUAL(size_t(2), host_->policies().stats().open);
    CPPUNIT_ASSERT_EQUAL(std::string("0 "), show(assign(g, 1)));
    closeGroup(g);
    CPPUNIT_ASSERT_EQUAL(size_t(0), host_->policies().stats().open);
    // The snapshot closed first: its groups refuse ops, and closing them closes their handles.
    auto* g2 = openGroupOk(snap, doc.json());
    auto* g3 = openGroupOk(snap, doc.json());
    CPPUNIT_ASSERT_EQUAL(size_t(4), host_->policies().stats().open);
    closeSnapshot(snap);
    int32_t out = 0;
    Status s = failing("assign", [&](void* st) { return ops().assign(st, g2, 1, &out); });
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "snapshot was closed"));
    closeGroup(g2);
    CPPUNIT_ASSERT_EQUAL(size_t(2), host_->policies().stats().open);
    closeGroup(g3);
    CPPUNIT_ASSERT_EQUAL(size_t(0), host_->policies().stats().open);
    // Compiled policies were kept by the host: opening them again compiles nothing.
    const uint64_t compiles = host_->policies().stats().compiles;
    auto* snap2 = openSnapshotOk(snapshotJson({node("a"), node("b")}));
    openGroupOk(snap2, doc.json());
    CPPUNIT_ASSERT_EQUAL(compiles, host_->policies().stats().compiles);
    // That group is left open when the plugin is unloaded: fini closes its handles (tearDown
    // does not close it; ASan would report a leak).
    groups_.clear();
    snapshots_.clear();
  }

  void testHandlesAreCheckedAndASnapshotClosedFirstIsSafe() {
    auto* snap = openSnapshotOk(snapshotJson({node("a"), node("b")}));
    auto* g = openGroupOk(snap, GroupDoc().json());
    std::vector<uint8_t> fit(3);
    Status s =
        sched_->invoke("filter", [&](void* st) { return ops().filter(st, g, fit.data(), 3); });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "nodes is 3 but the snapshot has 2"));
    auto* bogus = reinterpret_cast<shoal_sched_group*>(&fit);
    int32_t out = 0;
    s = sched_->invoke("assign", [&](void* st) { return ops().assign(st, bogus, 1, &out); });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "unknown group handle"));
    shoal_sched_group* g2 = nullptr;
    s = openGroup(reinterpret_cast<shoal_sched_snapshot*>(&fit), GroupDoc().json(), &g2);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "unknown snapshot handle"));

    // The snapshot closed while its group is open: the group refuses ops and closing it
    // frees both (ASan would report a leak or a use after free).
    closeSnapshot(snap);
    s = sched_->invoke("assign", [&](void* st) { return ops().assign(st, g, 1, &out); });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.code() == Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "snapshot was closed"));
    s = openGroup(snap, GroupDoc().json(), &g2);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.code() == Status::Code::kInvalidArgument);
    closeGroup(g);
    closeGroup(g);        // a second close is ignored
    closeSnapshot(snap);  // so is this one: the snapshot went with its last group
    sched_->invoke("snapshot_close", [&](void* st) {
      ops().snapshot_close(st, nullptr);
      ops().group_close(st, nullptr);
      return SHOAL_OK;
    });
    // Handles still open when the plugin is unloaded are freed by fini (tearDown does not
    // close this one).
    auto* left = openSnapshotOk(snapshotJson({node("a")}));
    openGroupOk(left, GroupDoc().json());
    groups_.clear();
    snapshots_.clear();
  }

 private:
  const shoal_scheduler_ops& ops() const { return sched_->ops<shoal_scheduler_ops>(); }

  Status openSnapshot(const std::string& json, shoal_sched_snapshot** snap, uint32_t* nodes) {
    Status s = sched_->invoke("snapshot_open", [&](void* st) {
      return ops().snapshot_open(st, {json.data(), json.size()}, snap, nodes);
    });
    if (s.isOk()) snapshots_.push_back(*snap);
    return s;
  }

  shoal_sched_snapshot* openSnapshotOk(const std::string& json) {
    shoal_sched_snapshot* snap = nullptr;
    uint32_t nodes = 0;
    Status s = openSnapshot(json, &snap, &nodes);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    CPPUNIT_ASSERT(snap != nullptr);
    return snap;
  }

  Status openGroup(shoal_sched_snapshot* snap, const std::string& json, shoal_sched_group** g) {
    Status s = sched_->invoke("group_open", [&](void* st) {
      return ops().group_open(st, snap, {json.data(), json.size()}, g);
    });
    if (s.isOk()) groups_.push_back(*g);
    return s;
  }

  shoal_sched_group* openGroupOk(shoal_sched_snapshot* snap, const std::string& json) {
    shoal_sched_group* g = nullptr;
    Status s = openGroup(snap, json, &g);
    CPPUNIT_ASSERT_MESSAGE(s.toString() + "\n" + json, s.isOk());
    return g;
  }

  void closeGroup(shoal_sched_group* g, bool forget = true) {
    sched_->invoke("group_close", [&](void* st) {
      ops().group_close(st, g);
      return SHOAL_OK;
    });
    if (forget) groups_.erase(std::remove(groups_.begin(), groups_.end(), g), groups_.end());
  }

  void closeSnapshot(shoal_sched_snapshot* snap, bool forget = true) {
    sched_->invoke("snapshot_close", [&](void* st) {
      ops().snapshot_close(st, snap);
      return SHOAL_OK;
    });
    if (forget) {
      snapshots_.erase(std::remove(snapshots_.begin(), snapshots_.end(), snap), snapshots_.end());
    }
  }

  std::vector<int32_t> assign(shoal_sched_group* g, uint32_t count) {
    std::vector<int32_t> out(count, -2);
    Status s =
        sched_->invoke("assign", [&](void* st) { return ops().assign(st, g, count, out.data()); });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    return out;
  }

  std::string explain(shoal_sched_group* g) {
    shoal_buf out{};
    Status s = sched_->invoke("explain", [&](void* st) { return ops().explain(st, g, &out); });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    std::string text(out.ptr, out.len);
    std::free(out.ptr);
    return text;
  }

  std::vector<uint8_t> filter(shoal_sched_group* g, uint32_t nodes) {
    std::vector<uint8_t> out(nodes, 7);
    Status s =
        sched_->invoke("filter", [&](void* st) { return ops().filter(st, g, out.data(), nodes); });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    return out;
  }

  std::vector<int64_t> score(shoal_sched_group* g, const std::vector<uint8_t>& fit) {
    std::vector<int64_t> out(fit.size(), -7);
    Status s = sched_->invoke("score", [&](void* st) {
      return ops().score(st, g, fit.data(), out.data(), static_cast<uint32_t>(fit.size()));
    });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    return out;
  }

  // The failure of one op, which must fail.
  template <class F>
  Status failing(const char* op, F&& fn) {
    Status s = sched_->invoke(op, [&](void* st) { return fn(st); });
    CPPUNIT_ASSERT_MESSAGE(std::string(op) + " should have failed", !s.isOk());
    return s;
  }

  std::shared_ptr<std::map<std::string, std::string>> policies_;  // the policy objects
  std::unique_ptr<PluginHost> host_;
  PluginInstance* sched_ = nullptr;
  std::vector<shoal_sched_snapshot*> snapshots_;  // opened and not closed yet
  std::vector<shoal_sched_group*> groups_;
};

CPPUNIT_TEST_SUITE_REGISTRATION(SchedulerSpreadTest);
