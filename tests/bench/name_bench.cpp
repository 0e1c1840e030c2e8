// name_bench: how soon a new task can be reached by its service's name, on a two-node
// scripts/lab with real containers (runtime-runc), issue #7's "time from a task becoming
// RUNNING to being reachable by its service name":
//   - a client service on node1, on an overlay network;
//   - per round, a new one-replica httpd service on node2, on the same network; from inside
//     the client's container (`runc exec`, so its resolv.conf points at the embedded DNS)
//     `wget http://NAME/` is tried every 10 ms until it answers (no -T: busybox 1.35's wget
//     crashes with it; a VIP without a task refuses at once);
//   - the figure is the moment of the first answer minus the task's RUNNING timestamp (the
//     agent's, from `service ps`), and create-to-answer for reference; median of N rounds.
// Both clocks are this machine's wall clock. Needs root. Usage: name_bench [--rounds N]
#include <unistd.h>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/bench_swarm.h"
#include "tests/support/lab.h"
#include "tests/support/process.h"

namespace {

using shoal::test::benchMust;
using shoal::test::Lab;
using shoal::test::median;
using shoal::test::runCommand;
using shoal::test::RunResult;
using Wall = std::chrono::system_clock;

int64_t nowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Wall::now().time_since_epoch())
      .count();
}

// The RUNNING timestamp (ns) of the running task of `service`, 0 while there is none.
int64_t runningSince(const Lab& lab, const std::string& service) {
  RunResult r = lab.on(
      "node1", {"service", "ps", service, "--filter", "desired-state=running", "--format", "json"});
  try {
    auto list = Poco::JSON::Parser().parse(r.out).extract<Poco::JSON::Array::Ptr>();
    for (std::size_t i = 0; list && i < list->size(); ++i) {
      auto st = list->getObject(static_cast<unsigned>(i))->getObject("Status");
      if (st && st->optValue<std::string>("State", "") == "running") {
        return st->optValue<int64_t>("Timestamp", 0);
      }
    }
  } catch (const std::exception&) {
  }
  return 0;
}

// The id of the one container running on `node` (runc's list), "" if none.
std::string containerId(const Lab& lab, const std::string& node) {
  RunResult r = runCommand({"runc", "--root", lab.dir(node) + "/runc", "list", "-f", "json"});
  try {
    auto list = Poco::JSON::Parser().parse(r.out).extract<Poco::JSON::Array::Ptr>();
    for (std::size_t i = 0; list && i < list->size(); ++i) {
      auto c = list->getObject(static_cast<unsigned>(i));
      if (c->optValue<std::string>("status", "") == "running") {
        return c->optValue<std::string>("id", "");
      }
    }
  } catch (const std::exception&) {
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 5;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--rounds") rounds = std::max(1, std::atoi(argv[i + 1]));
  }
  if (getuid() != 0) {
    std::cerr << "name_bench needs root (namespaces, runc)\n";
    return 2;
  }
  shoal::test::BenchSwarm swarm;
  Lab& lab = swarm.lab();
  const std::string image = shoal::test::BenchSwarm::kImage;
  benchMust(lab.on("node1", {"service", "create", "--name", "client", "--network", "benchnet",
                             "--constraint", "node.hostname==node1", "--no-resolve-image",
                             "--stop-grace-period", "1s", image, "sleep", "100000"}),
            "create client");
  std::string client;
  for (int i = 0; i < 600 && client.empty(); ++i) {
    client = containerId(lab, "node1");
    if (client.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (client.empty()) {
    std::cerr << "name_bench: the client never ran\n" << lab.log("node1");
    return 1;
  }
  // Every try is a `runc exec` in the client: what one costs with nothing to do is the
  // resolution of the figures below (measured here, median of 9).
  auto inClient = [&](std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"runc", "--root", lab.dir("node1") + "/runc", "exec", client});
    return runCommand(argv, std::chrono::seconds(5));
  };
  std::vector<double> execs;
  for (int i = 0; i < 9; ++i) {
    const int64_t t0 = nowNs();
    benchMust(inClient({"true"}), "runc exec true");
    execs.push_back(static_cast<double>(nowNs() - t0) / 1e6);
  }

  std::vector<double> afterRunning, afterCreate;
  for (int round = 1; round <= rounds; ++round) {
    const std::string name = "target" + std::to_string(round);
    const int64_t created = nowNs();
    benchMust(lab.on("node1", {"service", "create", "--detach", "--name", name, "--network",
                               "benchnet", "--constraint", "node.hostname==node2",
                               "--no-resolve-image", "--stop-grace-period", "1s", image, "sh", "-c",
                               "echo ok > /var/www/index.html; exec httpd -f -p 80 -h /var/www"}),
              "create " + name);
    int64_t answered = 0;
    std::string last;
    while (answered == 0) {
      RunResult r = inClient({"wget", "-q", "-O", "-", "http://" + name + "/"});
      if (r.exitCode == 0 && shoal::test::trim(r.out) == "ok") {
        answered = nowNs();
        break;
      }
      last = r.out + r.err;
      if (nowNs() - created > int64_t{60} * 1000 * 1000 * 1000) {
        std::cerr << "name_bench: " << name << " never answered by name (last try: " << last
                  << ")\n";
        return 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const int64_t running = runningSince(lab, name);
    if (running == 0) {
      std::cerr << "name_bench: " << name << " answered but shows no RUNNING task\n";
      return 1;
    }
    afterRunning.push_back(static_cast<double>(answered - running) / 1e6);
    afterCreate.push_back(static_cast<double>(answered - created) / 1e6);
    std::fprintf(stderr, "name_bench: round %d: %.0f ms after RUNNING, %.0f ms after create\n",
                 round, afterRunning.back(), afterCreate.back());
    benchMust(lab.on("node1", {"service", "rm", name}), "rm " + name);
  }
  std::printf("name_bench (two lab nodes, runtime-runc, client on node1, target on node2)\n");
  std::printf("%-52s %9.0f ms (min %.0f, max %.0f; target < 1000)\n",
              "RUNNING -> reachable by service name (median)", median(afterRunning),
              *std::min_element(afterRunning.begin(), afterRunning.end()),
              *std::max_element(afterRunning.begin(), afterRunning.end()));
  std::printf("%-52s %9.0f ms\n", "service create -> reachable by name (median)",
              median(afterCreate));
  std::printf("%-52s %9.0f ms (each try costs one; included above)\n",
              "runc exec of a no-op in the client (median)", median(execs));
  return 0;
}
