// vip_bench: the connection rate through a service VIP and through the routing mesh, against
// connections straight to the task's own overlay address, measured in one run with wrk on a
// two-node scripts/lab with real containers (runtime-runc):
//   - `web` (busybox httpd, one replica) on node2, on an overlay network, publishing 8080:80;
//   - a client task on node1 on the same network; wrk runs in its network namespace against
//       * the task's overlay address (direct: VXLAN only, the baseline),
//       * the service's VIP (plus nftables DNAT in the client's namespace);
//   - and wrk in node1's own namespace against node2's address on 8080 (the mesh: node DNAT,
//     the ingress sandbox's DNAT and masquerade, then VXLAN to the task);
// every request on a new connection ("Connection: close"), so requests/s is connections/s.
// The paths are measured in turn, N rounds of S seconds each, so load from elsewhere on the
// machine falls on all alike; the medians and their ratios to direct are printed.
// Needs root and wrk. Usage: vip_bench [--rounds N] [--seconds S]
#include <unistd.h>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
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

Poco::JSON::Array::Ptr jsonArray(const std::string& text) {
  try {
    return Poco::JSON::Parser().parse(text).extract<Poco::JSON::Array::Ptr>();
  } catch (const std::exception&) {
    return nullptr;
  }
}

// The running task of `service`: its id and its address on `network` ("" until it runs).
std::pair<std::string, std::string> runningTask(const Lab& lab, const std::string& service,
                                                const std::string& network) {
  auto list = jsonArray(lab.on("node1", {"service", "ps", service, "--format", "json", "--filter",
                                         "desired-state=running"})
                            .out);
  for (std::size_t i = 0; list && i < list->size(); ++i) {
    auto t = list->getObject(static_cast<unsigned>(i));
    auto st = t->getObject("Status");
    if (!st || st->optValue<std::string>("State", "") != "running") continue;
    auto spec = t->getObject("Spec");
    auto att = spec ? spec->getArray("NetworksAttachments") : nullptr;
    for (std::size_t j = 0; att && j < att->size(); ++j) {
      auto a = att->getObject(static_cast<unsigned>(j));
      if (a->optValue<std::string>("Name", "") != network) continue;
      const std::string addr = a->optValue<std::string>("Address", "");
      return {t->optValue<std::string>("ID", ""), addr.substr(0, addr.find('/'))};
    }
  }
  return {};
}

// The VIP of `service` on the network with id `networkId`.
std::string vipOf(const Lab& lab, const std::string& service, const std::string& networkId) {
  auto list = jsonArray(lab.on("node1", {"service", "inspect", service}).out);
  auto status = list && list->size() ? list->getObject(0)->getObject("Status") : nullptr;
  auto ep = status ? status->getObject("Endpoint") : nullptr;
  auto vips = ep ? ep->getArray("VirtualIPs") : nullptr;
  for (std::size_t i = 0; vips && i < vips->size(); ++i) {
    auto v = vips->getObject(static_cast<unsigned>(i));
    if (v->optValue<std::string>("NetworkID", "") != networkId) continue;
    const std::string addr = v->optValue<std::string>("Addr", "");
    return addr.substr(0, addr.find('/'));
  }
  return "";
}

// wrk's "Requests/sec:" figure for `seconds` against `url`, run in the network namespace at
// `netnsPath`; exits on a run that failed or saw errors.
double wrk(const std::string& netnsPath, const std::string& url, int seconds) {
  RunResult r = runCommand({"nsenter", "--net=" + netnsPath, "wrk", "-t", "1", "-c", "8", "-d",
                            std::to_string(seconds) + "s", "-H", "Connection: close", url},
                           std::chrono::seconds(seconds + 30));
  benchMust(r, "wrk " + url);
  std::istringstream in(r.out);
  double rate = -1;
  for (std::string line; std::getline(in, line);) {
    if (line.find("Non-2xx") != std::string::npos ||
        line.find("Socket errors") != std::string::npos) {
      std::cerr << "vip_bench: wrk " << url << " saw errors:\n" << r.out;
      std::exit(1);
    }
    if (auto at = line.find("Requests/sec:"); at != std::string::npos) {
      rate = std::strtod(line.c_str() + at + 13, nullptr);
    }
  }
  if (rate <= 0) {
    std::cerr << "vip_bench: no rate from wrk " << url << ":\n" << r.out;
    std::exit(1);
  }
  return rate;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 3, seconds = 3;
  for (int i = 1; i + 1 < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--rounds") rounds = std::max(1, std::atoi(argv[i + 1]));
    if (a == "--seconds") seconds = std::max(1, std::atoi(argv[i + 1]));
  }
  if (getuid() != 0) {
    std::cerr << "vip_bench needs root (namespaces, runc)\n";
    return 2;
  }
  if (runCommand({"wrk", "--version"}).out.find("wrk") == std::string::npos) {
    std::cerr << "vip_bench needs wrk (apt-get install wrk; scripts/setup-deps installs it)\n";
    return 2;
  }
  shoal::test::BenchSwarm swarm;
  Lab& lab = swarm.lab();
  auto nets = jsonArray(lab.on("node1", {"network", "inspect", "benchnet"}).out);
  const std::string netId =
      nets && nets->size() ? nets->getObject(0)->optValue<std::string>("ID", "") : "";
  const std::string image = shoal::test::BenchSwarm::kImage;
  // httpd closes each connection first, so its side keeps them in TIME_WAIT for 60 s; once the
  // client's ports wrap (a few seconds at thousands per second) its SYNs meet those and wait a
  // second to be retried, which would measure the collisions, not the paths. No TIME_WAIT
  // buckets in the server's namespace: every path is measured alike (the mesh's masquerade
  // picks ports around them, the direct and VIP paths cannot).
  benchMust(lab.on("node1", {"service", "create", "--name", "web", "--network", "benchnet",
                             "--publish", "8080:80", "--constraint", "node.hostname==node2",
                             "--sysctl", "net.ipv4.tcp_max_tw_buckets=0", "--no-resolve-image",
                             "--stop-grace-period", "1s", image, "sh", "-c",
                             "echo ok > /var/www/index.html; exec httpd -f -p 80 -h /var/www"}),
            "create web");
  benchMust(lab.on("node1", {"service", "create", "--name", "client", "--network", "benchnet",
                             "--constraint", "node.hostname==node1", "--no-resolve-image",
                             "--stop-grace-period", "1s", image, "sleep", "100000"}),
            "create client");
  std::pair<std::string, std::string> web, client;
  for (int i = 0; i < 600 && (web.second.empty() || client.second.empty()); ++i) {
    web = runningTask(lab, "web", "benchnet");
    client = runningTask(lab, "client", "benchnet");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const std::string vip = vipOf(lab, "web", netId);
  if (web.second.empty() || client.second.empty() || vip.empty()) {
    std::cerr << "vip_bench: web or client never ran, or web has no VIP\n" << lab.log("node1");
    return 1;
  }
  const std::string clientNs = lab.dir("node1") + "/netns/" + client.first;
  const std::string nodeNs = "/run/netns/" + lab.netns("node1");
  struct Path {
    const char* name;
    std::string ns, url;
    std::vector<double> rates;
  };
  std::vector<Path> paths = {
      {"direct to the task's overlay address", clientNs, "http://" + web.second + "/", {}},
      {"through the VIP", clientNs, "http://" + vip + "/", {}},
      {"through the routing mesh (node2:8080 from node1)",
       nodeNs,
       "http://" + lab.ip("node2") + ":8080/",
       {}},
  };
  // One short warm-up each (the mesh is set up lazily, the first connections pay for ARP).
  for (auto& p : paths) (void)wrk(p.ns, p.url, 1);
  for (int round = 0; round < rounds; ++round) {
    for (auto& p : paths) p.rates.push_back(wrk(p.ns, p.url, seconds));
  }
  const double direct = median(paths[0].rates);
  std::printf(
      "vip_bench (two lab nodes, busybox httpd, wrk -c8, a new connection per request, "
      "median of %d x %d s)\n",
      rounds, seconds);
  std::printf("%-50s %12s %8s\n", "path", "conn/s", "ratio");
  for (const auto& p : paths) {
    std::printf("%-50s %12.0f %7.2fx\n", p.name, median(p.rates), median(p.rates) / direct);
  }
  return 0;
}
