// scheduler_bench: how fast scheduler-spread places tasks, loaded through the plugin ABI as
// shoald loads it, on a 1,000-node snapshot (zone/rack/disk/env labels, engine labels, mixed
// roles, existing tasks, host ports and failures). Scenarios, each with 5 constraints:
//   (a) 1 group x 100,000 tasks
//   (b) 100 groups (services) x 1,000 tasks, one snapshot for the whole pass
//   (c) as (a), plus the placement preferences zone then rack
// and with Lua placement policies (conf/policies, run by the kernel through the host table):
//   (d) as (a) with the policy binpack (a filter, and a score re-evaluated after every placement)
//   (e) as (a) with the Lua constraint expression `node.labels.zone ~= "z0"` (a filter only)
//   (f) as (a) with the policy keep-off-maintenance (a filter only; a policy object)
//   (g) as (b) with binpack
//   (h) 1 group x 1,000 tasks with zone-spread (a score whose prepare sums every node)
// For each: snapshot_open (parse), group_open (parse, static filters, Lua filters), assign, the
// whole pass, and tasks/s; the median of --runs runs (default 5). Then the process's peak RSS.
// Every run hands the kernel a snapshot text other than the last run's (trailing whitespace),
// so its parse of the snapshot for the policies (cached by identical text) is in every pass,
// in group_open, as in a real pass.
//
// Usage: scheduler_bench [--runs N] [--nodes N] [--policies DIR] [--only LETTERS]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <shoal/scheduler.h>

#include "kernel/common/log.h"
#include "kernel/plugin/plugin_host.h"

using shoal::Result;
using shoal::Status;
using shoal::plugin::Kind;
using shoal::plugin::PluginHost;
using shoal::plugin::PluginInstance;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int64_t kGiB = int64_t(1) << 30;
constexpr int64_t kCpu = 1'000'000'000;

double msSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "scheduler_bench: %s\n", what.c_str());
  std::exit(1);
}

void check(const Status& s, const char* what) {
  if (!s.isOk()) die(std::string(what) + ": " + s.toString());
}

// A deterministic snapshot of `n` nodes. Node i: zone z(i%3), rack r(i%20), disk ssd on 2 of
// 3 nodes, env prod on 4 of 5, 1 in 10 a manager, 1 in 50 drained, every node with some tasks
// of 20 existing services, 1 in 7 using tcp/8080, 1 in 100 with failures.
std::string snapshotJson(int n) {
  std::string out = "{\"schema\":\"shoal.nodes/v1\",\"nodes\":[";
  out.reserve(static_cast<size_t>(n) * 700);
  for (int i = 0; i < n; ++i) {
    const std::string id = "node-" + std::to_string(i);
    if (i > 0) out += ',';
    out += "{\"id\":\"" + id + "\",\"hostname\":\"" + id + ".example.com\",\"role\":\"" +
           (i % 10 == 0 ? "manager" : "worker") + "\",\"availability\":\"" +
           (i % 50 == 49 ? "drain" : "active") +
           "\",\"state\":\"ready\",\"platform\":{\"os\":\"linux\",\"arch\":\"" +
           (i % 4 == 3 ? "aarch64" : "x86_64") + "\"},\"labels\":{\"zone\":\"z" +
           std::to_string(i % 3) + "\",\"rack\":\"r" + std::to_string(i % 20) + "\",\"disk\":\"" +
           (i % 3 == 2 ? "hdd" : "ssd") + "\",\"env\":\"" + (i % 5 == 4 ? "staging" : "prod") +
           "\",\"team\":\"t" + std::to_string(i % 7) + "\"},\"engine_labels\":{\"storage\":\"" +
           (i % 2 == 0 ? "overlay2" : "zfs") +
           "\",\"kernel\":\"6.1\"},\"resources\":{\"nano_cpus\":" + std::to_string(32 * kCpu) +
           ",\"memory_bytes\":" + std::to_string(128 * kGiB) +
           "},\"reserved\":{\"nano_cpus\":" + std::to_string((i % 8) * kCpu) +
           ",\"memory_bytes\":" + std::to_string((i % 8) * 2 * kGiB) +
           "},\"tasks\":" + std::to_string(10 + i % 13) + ",\"service_tasks\":{";
    for (int s = 0; s < 5; ++s) {
      if (s > 0) out += ',';
      out += "\"old-" + std::to_string((i + s * 3) % 20) + "\":" + std::to_string(1 + s);
    }
    out += "},\"host_ports\":[";
    if (i % 7 == 0) out += "\"tcp/8080\"";
    out += "],\"failures\":{";
    if (i % 100 == 0) out += "\"svc-0\":6";
    out += "}}";
  }
  return out + "]}";
}

// `lua`: extra placement members, e.g. "\"policy\":\"binpack\"".
std::string groupJson(const std::string& service, int variant, bool preferences,
                      const std::string& lua) {
  // Five constraints; about 1/3 of the nodes pass them (workers, ready, ssd, prod, not t6).
  const std::string constraints =
      "[\"node.role==worker\",\"node.platform.os==linux\",\"node.labels.disk==ssd\","
      "\"node.labels.env!=staging\",\"node.labels.team!=t" +
      std::to_string(6 - variant % 7) + "\"]";
  return "{\"schema\":\"shoal.task-group/v1\",\"service_id\":\"" + service +
         "\",\"service_name\":\"" + service +
         "\",\"spec\":{\"placement\":{\"constraints\":" + constraints + ",\"preferences\":" +
         (preferences ? "[\"node.labels.zone\",\"node.labels.rack\"]" : "[]") +
         ",\"max_replicas\":0,\"platforms\":[{\"os\":\"linux\",\"arch\":\"amd64\"},"
         "{\"os\":\"linux\",\"arch\":\"arm64\"}]" +
         (lua.empty() ? "" : "," + lua) +
         "},\"resources\":{\"nano_cpus\":10000000,"
         "\"memory_bytes\":16777216},\"ports\":[]},\"tasks\":[]}";
}

struct Figures {
  double snapshotMs = 0;
  double groupMs = 0;
  double assignMs = 0;
  double totalMs = 0;
  int64_t placed = 0;
  // Over the nodes that fit the first group before it is placed: its tasks per node.
  int64_t fitting = 0;
  int64_t minPerNode = 0;
  int64_t maxPerNode = 0;
};

class Bench {
 public:
  explicit Bench(PluginInstance* p) : p_(p), ops_(p->ops<shoal_scheduler_ops>()) {}

  Figures run(const std::string& snapshot, int groups, uint32_t tasksPerGroup, bool preferences,
              const std::string& lua) {
    Figures f;
    const auto start = Clock::now();
    shoal_sched_snapshot* snap = nullptr;
    uint32_t nodes = 0;
    check(p_->invoke(
              "snapshot_open",
              [&](void* st) {
                return ops_.snapshot_open(st, {snapshot.data(), snapshot.size()}, &snap, &nodes);
              }),
          "snapshot_open");
    f.snapshotMs = msSince(start);
    std::vector<int32_t> out(tasksPerGroup);
    // The documents are built before the clock runs for each group: the kernel has them ready.
    std::vector<std::string> docs;
    for (int g = 0; g < groups; ++g) {
      docs.push_back(groupJson("svc-" + std::to_string(g), g, preferences, lua));
    }
    for (int g = 0; g < groups; ++g) {
      const std::string& doc = docs[static_cast<size_t>(g)];
      shoal_sched_group* group = nullptr;
      auto t = Clock::now();
      check(p_->invoke("group_open",
                       [&](void* st) {
                         return ops_.group_open(st, snap, {doc.data(), doc.size()}, &group);
                       }),
            "group_open");
      f.groupMs += msSince(t);
      std::vector<uint8_t> fit;
      if (g == 0) {  // not timed: what the spread should even out over
        fit.resize(nodes);
        check(p_->invoke("filter",
                         [&](void* st) { return ops_.filter(st, group, fit.data(), nodes); }),
              "filter");
      }
      t = Clock::now();
      check(p_->invoke("assign",
                       [&](void* st) { return ops_.assign(st, group, tasksPerGroup, out.data()); }),
            "assign");
      f.assignMs += msSince(t);
      for (int32_t n : out) f.placed += n >= 0 ? 1 : 0;
      if (g == 0) spread(fit, out, f);
      p_->invoke("group_close", [&](void* st) {
        ops_.group_close(st, group);
        return SHOAL_OK;
      });
    }
    p_->invoke("snapshot_close", [&](void* st) {
      ops_.snapshot_close(st, snap);
      return SHOAL_OK;
    });
    f.totalMs = msSince(start);
    return f;
  }

 private:
  static void spread(const std::vector<uint8_t>& fit, const std::vector<int32_t>& out, Figures& f) {
    std::vector<int64_t> perNode(fit.size(), 0);
    for (int32_t n : out) {
      if (n >= 0) ++perNode[static_cast<size_t>(n)];
    }
    f.minPerNode = INT64_MAX;
    for (size_t i = 0; i < fit.size(); ++i) {
      if (fit[i] == 0) continue;
      ++f.fitting;
      f.minPerNode = std::min(f.minPerNode, perNode[i]);
      f.maxPerNode = std::max(f.maxPerNode, perNode[i]);
    }
  }

  PluginInstance* p_;
  const shoal_scheduler_ops& ops_;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string only;  // --only: the scenarios to run ("" = all)

void scenario(Bench& bench, const char* name, const std::string& snapshot, int groups,
              uint32_t tasks, bool preferences, int runs, const std::string& lua = {}) {
  if (!only.empty() && only.find(name[1]) == std::string::npos) return;
  std::vector<double> snap, group, assign, total;
  Figures f;
  static int pass = 0;
  for (int r = 0; r < runs; ++r) {
    // Not the text of the last pass: the kernel parses it again for the policies, as it would.
    f = bench.run(snapshot + std::string(static_cast<size_t>(++pass % 2), ' '), groups, tasks,
                  preferences, lua);
    snap.push_back(f.snapshotMs);
    group.push_back(f.groupMs);
    assign.push_back(f.assignMs);
    total.push_back(f.totalMs);
  }
  const double all = static_cast<double>(groups) * tasks;
  std::printf("%s\n", name);
  std::printf(
      "  placed            %lld of %.0f tasks; the first group's on its %lld fitting "
      "nodes: %lld to %lld per node\n",
      static_cast<long long>(f.placed), all, static_cast<long long>(f.fitting),
      static_cast<long long>(f.minPerNode), static_cast<long long>(f.maxPerNode));
  std::printf("  snapshot_open     %8.2f ms\n", median(snap));
  std::printf("  group_open        %8.2f ms (all %d groups)\n", median(group), groups);
  std::printf("  assign            %8.2f ms  %12.0f tasks/s\n", median(assign),
              all / (median(assign) / 1000.0));
  std::printf("  whole pass        %8.2f ms  %12.0f tasks/s\n", median(total),
              all / (median(total) / 1000.0));
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 5;
  int nodes = 1000;
  // conf/policies of the source tree this file is in.
  std::string policyDir = __FILE__;
  policyDir = policyDir.substr(0, policyDir.rfind("tests/bench/")) + "conf/policies";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      runs = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--nodes") == 0 && i + 1 < argc) {
      nodes = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--policies") == 0 && i + 1 < argc) {
      policyDir = argv[++i];
    } else if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
      only = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: scheduler_bench [--runs N] [--nodes N] [--policies DIR] "
                   "[--only LETTERS]\n");
      return 2;
    }
  }
  shoal::log::setLevel(shoal::log::Level::kWarn);
  std::map<std::string, std::string> policies;
  for (const char* name : {"binpack", "keep-off-maintenance", "zone-spread"}) {
    std::ifstream in(policyDir + "/" + name + ".lua");
    std::stringstream text;
    text << in.rdbuf();
    if (text.str().empty()) die(policyDir + "/" + name + ".lua: missing (use --policies DIR)");
    policies[name] = text.str();
  }
  PluginHost host;
  host.setPolicySource([&policies](const std::string& name) -> Result<std::string> {
    auto it = policies.find(name);
    if (it == policies.end()) return Status::notFound("no such object");
    return it->second;
  });
  check(host.loadFile(std::string(SHOAL_PLUGIN_BUILD_DIR) + "/scheduler-spread.so"), "load");
  PluginInstance* p = host.find(Kind::kScheduler, "scheduler-spread");
  if (p == nullptr) die("scheduler-spread did not load");
  Bench bench(p);

  const auto t = Clock::now();
  const std::string snapshot = snapshotJson(nodes);
  std::printf("snapshot: %d nodes, %.0f KiB of JSON (built in %.1f ms); median of %d runs\n", nodes,
              static_cast<double>(snapshot.size()) / 1024.0, msSince(t), runs);
  scenario(bench, "(a) 1 group x 100,000 tasks, 5 constraints", snapshot, 1, 100000, false, runs);
  scenario(bench, "(b) 100 groups x 1,000 tasks, 5 constraints each", snapshot, 100, 1000, false,
           runs);
  scenario(bench, "(c) 1 group x 100,000 tasks, 5 constraints, preferences zone then rack",
           snapshot, 1, 100000, true, runs);
  scenario(bench, "(d) as (a), policy binpack", snapshot, 1, 100000, false, runs,
           "\"policy\":\"binpack\"");
  scenario(bench, "(e) as (a), lua_constraints node.labels.zone ~= \"z0\"", snapshot, 1, 100000,
           false, runs, "\"lua_constraints\":\"node.labels.zone ~= \\\"z0\\\"\"");
  scenario(bench, "(f) as (a), policy keep-off-maintenance", snapshot, 1, 100000, false, runs,
           "\"policy\":\"keep-off-maintenance\"");
  scenario(bench, "(g) as (b), policy binpack", snapshot, 100, 1000, false, runs,
           "\"policy\":\"binpack\"");
  scenario(bench, "(h) 1 group x 1,000 tasks, 5 constraints, policy zone-spread", snapshot, 1, 1000,
           false, runs, "\"policy\":\"zone-spread\"");

  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("peak RSS: %.1f MiB\n", static_cast<double>(usage.ru_maxrss) / 1024.0);
  return 0;
}
