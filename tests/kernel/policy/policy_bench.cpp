// Not a test: prints what kernel/policy costs for one scheduling pass of N nodes and G task
// groups (defaults 1,000 and 100): parsing and binding the node snapshot, setting each group,
// and filter / score batches, as evaluations (one Lua call per node) per second.
//   policy_bench [nodes] [groups]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kernel/policy/policy.h"

using shoal::Status;
using shoal::policy::NodeSnapshot;
using shoal::policy::Policy;

namespace {

using Clock = std::chrono::steady_clock;

double msSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::string nodesJson(int n) {
  const char* zones[] = {"east", "west", "north", "south"};
  std::string s = R"({"schema": "shoal.nodes/v1", "nodes": [)";
  for (int i = 0; i < n; ++i) {
    if (i > 0) s += ",";
    s += R"({"id": "node-)" + std::to_string(i) + R"(", "hostname": "host-)" + std::to_string(i) +
         R"(", "role": "worker", "availability": "active", "state": "ready",
         "platform": {"os": "linux", "arch": "amd64"},
         "labels": {"zone": ")" +
         zones[i % 4] + R"(", "rack": "r)" + std::to_string(i % 40) + R"(", "maintenance": ")" +
         (i % 50 == 0 ? "true" : "false") +
         R"("}, "engine_labels": {"storage": "ssd"},
         "resources": {"nano_cpus": 16000000000, "memory_bytes": 68719476736},
         "reserved": {"nano_cpus": )" +
         std::to_string((i % 16) * 1000000000LL) + R"(, "memory_bytes": )" +
         std::to_string((i % 32) * 2000000000LL) + R"(},
         "tasks": )" +
         std::to_string(i % 20) + R"(, "service_tasks": {"svc-)" + std::to_string(i % 100) +
         R"(": 2}})";
  }
  return s + "]}";
}

std::string groupJson(int g) {
  return R"({"schema": "shoal.task-group/v1", "service_id": "svc-)" + std::to_string(g) +
         R"(", "service_name": "service-)" + std::to_string(g) +
         R"(", "spec": {"placement": {"constraints": ["node.role==worker"]},
         "resources": {"nano_cpus": 500000000, "memory_bytes": 1073741824}}})";
}

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void check(const Status& s, const char* what) {
  if (!s) {
    std::fprintf(stderr, "%s: %s\n", what, s.toString().c_str());
    std::exit(1);
  }
}

// One pass: bind once, then per group setGroup + one filter (or score) batch.
void pass(const char* title, Policy& p, const std::shared_ptr<const NodeSnapshot>& snap,
          const std::vector<std::string>& groups, bool score, int passes) {
  const uint32_t n = snap->size();
  std::vector<uint8_t> fit(n);
  std::vector<int64_t> out(n);
  check(p.bindNodes(snap), "bind");
  double setMs = 0;
  double evalMs = 0;
  for (int k = 0; k < passes; ++k) {
    check(p.bindNodes(snap), "rebind");
    for (const auto& g : groups) {
      auto t0 = Clock::now();
      check(p.setGroup(g), "group");
      setMs += msSince(t0);
      std::fill(fit.begin(), fit.end(), 1);
      t0 = Clock::now();
      check(score ? p.score(fit.data(), out.data(), n) : p.filter(fit.data(), n), "eval");
      evalMs += msSince(t0);
    }
  }
  const double evals = static_cast<double>(n) * groups.size() * passes;
  std::printf("%-34s %10.0f evaluations/s  (%.1f ms per pass of %zu x %u; setGroup %.3f ms)\n",
              title, evals / (evalMs / 1000), evalMs / passes, groups.size(), n,
              setMs / (passes * groups.size()));
}

}  // namespace

int main(int argc, char** argv) {
  const int nodes = argc > 1 ? std::atoi(argv[1]) : 1000;
  const int groupCount = argc > 2 ? std::atoi(argv[2]) : 100;
  const int passes = 5;
  const std::string text = nodesJson(nodes);
  std::vector<std::string> groups;
  for (int g = 0; g < groupCount; ++g) groups.push_back(groupJson(g));

  auto t0 = Clock::now();
  auto snap = NodeSnapshot::parse(text);
  check(snap.status(), "parse");
  std::printf("nodes document: %zu bytes, parsed in %.1f ms\n", text.size(), msSince(t0));

  auto simple = Policy::compile("simple", R"(return shoal.policy{
      filter = function(task, node)
        return node.labels.zone ~= "east", "in the east"
      end })");
  check(simple.status(), "compile");
  t0 = Clock::now();
  check((*simple)->bindNodes(*snap), "bind");
  const double bindMs = msSince(t0);
  check((*simple)->setGroup(groups[0]), "group");
  std::printf("bindNodes (tables for %d nodes): %.1f ms, Lua state %.1f MiB\n", nodes, bindMs,
              (*simple)->memoryUsed() / 1048576.0);

  pass("policy filter (zone ~= east)", **simple, *snap, groups, false, passes);
  auto expr = Policy::expression(R"(node.labels.zone ~= "east" and node.memory_free > 2e9)");
  check(expr.status(), "expression");
  pass("expression (zone, memory_free)", **expr, *snap, groups, false, passes);

  const std::string dir = std::string(SHOAL_SOURCE_DIR) + "/conf/policies/";
  for (const char* name : {"keep-off-maintenance", "binpack", "zone-spread"}) {
    auto p = Policy::compile(name, readFile(dir + name + ".lua"));
    check(p.status(), name);
    const bool score = std::string(name) != "keep-off-maintenance";
    pass((std::string(name) + (score ? " score" : " filter")).c_str(), **p, *snap, groups, score,
         passes);
  }
  return 0;
}
