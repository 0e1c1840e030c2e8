// runtime_bench: real containers on one node (runtime-runc: runc through shoal-shim), the
// figures issue #6 asks for, printed with Docker 20.10 Swarm's on a machine like this one:
//   - `service create` to all RUNNING, 20 and 100 replicas of the busybox test image;
//   - a killed task running again with --restart-delay 0s;
//   - a rolling update of 20 replicas, --update-parallelism 5 --update-delay 0s, to all-new;
//   - shoald's resident memory idle (a one-node swarm, no tasks), and a shim's;
//   - runc alone creating and starting a container, to scale the figures to the machine
//     Docker's were measured on (runcBaseline).
// The node is a scripts/lab node (its own network namespace, data and runc root); the image is
// loaded from scripts/test-images' tarball. Needs root. Usage: runtime_bench [--replicas N]
// (the larger create; default 100) [--oci-runtime crun] (what runtime-runc drives; default
// runc; the runc baseline below is runc's either way).
#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kernel/api/api_client.h"
#include "tests/support/lab.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace {

using Clock = std::chrono::steady_clock;
using shoal::test::Lab;
using shoal::test::runCommand;
using shoal::test::RunResult;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void must(const RunResult& r, const std::string& what) {
  if (r.exitCode != 0) {
    std::cerr << "runtime_bench: " << what << " failed: " << r.out << r.err << '\n';
    std::exit(1);
  }
}

// The OCI runtime the node's runtime-runc drives (--oci-runtime).
std::string& ociRuntime() {
  static std::string name = "runc";
  return name;
}

// Running containers of the node (the OCI runtime's list), by id, with their pids.
std::vector<std::pair<std::string, int>> containers(const Lab& lab) {
  RunResult r =
      runCommand({ociRuntime(), "--root", lab.dir("node1") + "/runc", "list", "-f", "json"});
  std::vector<std::pair<std::string, int>> out;
  try {
    auto list = Poco::JSON::Parser().parse(r.out).extract<Poco::JSON::Array::Ptr>();
    for (std::size_t i = 0; list && i < list->size(); ++i) {
      auto c = list->getObject(static_cast<unsigned>(i));
      if (c->optValue<std::string>("status", "") == "running") {
        out.emplace_back(c->getValue<std::string>("id"), c->optValue<int>("pid", 0));
      }
    }
  } catch (const std::exception&) {
  }
  return out;
}

// `shoal ARGS` on the node's socket, straight (no lab script, no shell: the polls below must
// cost the machine as little as they can, or they slow what they measure).
RunResult cli(const Lab& lab, std::vector<std::string> args) {
  args.insert(args.begin(), {std::string(SHOAL_BIN_DIR) + "/shoal", "-H",
                             "unix://" + lab.dir("node1") + "/shoald.sock"});
  return runCommand(args, std::chrono::seconds(60));
}

// Tasks of `service` meant to run that are RUNNING, with the image they run: one request on
// the node's API socket from this process (a `shoal service ps` every poll would spawn a
// process each time, and take the CPU from what is measured).
std::vector<std::string> runningImages(const Lab& lab, const std::string& service) {
  std::vector<std::string> out;
  auto client = shoal::api::ApiClient::create("unix://" + lab.dir("node1") + "/shoald.sock");
  if (!client) return out;
  auto body = client->call("GET", "/tasks?service=" + service);
  if (!body) return out;
  try {
    auto doc = Poco::JSON::Parser().parse(*body).extract<Poco::JSON::Object::Ptr>();
    auto list = doc->getArray("tasks");
    for (std::size_t i = 0; list && i < list->size(); ++i) {
      auto t = list->getObject(static_cast<unsigned>(i));
      if (t->optValue<std::string>("DesiredState", "") != "running") continue;
      auto st = t->getObject("Status");
      if (!st || st->optValue<std::string>("State", "") != "running") continue;
      auto spec = t->getObject("Spec");
      auto c = spec ? spec->getObject("ContainerSpec") : nullptr;
      out.push_back(c ? c->optValue<std::string>("Image", "") : "");
    }
  } catch (const std::exception&) {
  }
  return out;
}

template <class F>
double timeUntil(F done, double limitSeconds, const std::string& what) {
  const auto t0 = Clock::now();
  while (!done()) {
    if (since(t0) > limitSeconds) {
      std::cerr << "runtime_bench: " << what << " did not happen in " << limitSeconds << " s\n";
      std::exit(1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return since(t0);
}

long rssKiB(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

// CPU time in seconds: the whole machine's busy time (/proc/stat: all but idle and iowait),
// or one process's own user + system time (/proc/PID/stat fields 14 and 15).
double machineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  double ticks[8] = {};
  in >> cpu;
  for (double& t : ticks) in >> t;
  const double busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7];
  return busy / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double processCpuSeconds(int pid) {
  const std::string stat = shoal::test::readFile("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream in(stat.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::atof(field.c_str());
    if (i == 15) stime = std::atof(field.c_str());
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

int shimPid(const Lab& lab) {
  DIR* proc = opendir("/proc");
  int found = 0;
  while (dirent* e = proc ? readdir(proc) : nullptr) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/cmdline");
    std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmd.find("shoal-shim") != std::string::npos &&
        cmd.find(lab.dir("node1")) != std::string::npos) {
      found = std::atoi(e->d_name);
      break;
    }
  }
  if (proc) closedir(proc);
  return found;
}

// create --detach, then the time until `n` tasks run.
double createAndWait(const Lab& lab, const std::string& name, int n) {
  const auto t0 = Clock::now();
  must(cli(lab, {"service", "create", "--detach", "--name", name, "--replicas", std::to_string(n),
                 "--no-resolve-image", "--stop-grace-period", "2s", "localhost/shoal-test:v1"}),
       "create " + name);
  timeUntil([&] { return runningImages(lab, name).size() == static_cast<std::size_t>(n); }, 300,
            name + " running");
  return since(t0);
}

// This machine's speed at what dominates a container's start, measured in the same run: runc
// alone creating and starting `n` containers one after the other (a bundle of the host's
// static busybox running `sleep`, runc's default spec: the same namespaces as Shoal's), the
// median in seconds. PLATFORM.md measured about 43 ms on the machine Docker's figures come
// from; the ratio says how much faster this machine is than that one.
double runcBaseline(const std::string& dir, int n) {
  const std::string bundle = dir + "/bundle", root = dir + "/root";
  must(runCommand({"sh", "-c",
                   "set -e; mkdir -p '" + bundle + "/rootfs/bin' '" + root +
                       "'; cp /bin/busybox '" + bundle + "/rootfs/bin/'; ln -sf busybox '" +
                       bundle + "/rootfs/bin/sleep'; cd '" + bundle +
                       "' && runc spec && sed -i -e 's/\"terminal\": true/\"terminal\": false/' "
                       "-e 's/\"sh\"/\"sleep\", \"600\"/' config.json"}),
       "runc baseline bundle");
  std::vector<double> times;
  for (int i = 0; i < n; ++i) {
    const std::string id = "shoal-rb-" + std::to_string(getpid()) + "-" + std::to_string(i);
    const auto t0 = Clock::now();
    // The container's stdio must not be ours: runc create hands it down to the container.
    must(runCommand({"sh", "-c",
                     "runc --root '" + root + "' create --bundle '" + bundle + "' " + id +
                         " </dev/null >/dev/null 2>&1 && runc --root '" + root + "' start " + id}),
         "runc baseline container " + id);
    times.push_back(since(t0));
  }
  for (int i = 0; i < n; ++i) {
    runCommand({"runc", "--root", root, "delete", "--force",
                "shoal-rb-" + std::to_string(getpid()) + "-" + std::to_string(i)});
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void removeAndWait(const Lab& lab, const std::string& name) {
  must(cli(lab, {"service", "rm", name}), "rm " + name);
  timeUntil([&] { return containers(lab).empty(); }, 300, name + " removed");
}

}  // namespace

int main(int argc, char** argv) {
  int big = 100;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--replicas") big = std::atoi(argv[i + 1]);
    if (std::string(argv[i]) == "--oci-runtime") ociRuntime() = argv[i + 1];
  }
  if (getuid() != 0) {
    std::cerr << "runtime_bench needs root (namespaces, runc)\n";
    return 2;
  }
  shoal::test::TempDir images;
  shoal::test::TempDir baselineDir;
  const double runcStart = runcBaseline(baselineDir.path(), 20);
  must(runCommand({std::string(SHOAL_SOURCE_DIR) + "/scripts/test-images", "build", images.path()},
                  std::chrono::seconds(120)),
       "test-images build");
  Lab lab(1, {"SHOAL_LAB_RUNTIME=runtime-runc", "SHOAL_LAB_OCI_RUNTIME=" + ociRuntime()});
  lab.downAtExit();  // must() exits on a failed step
  must(lab.on("node1", {"swarm", "init", "--advertise-addr", lab.ip("node1")}), "swarm init");
  must(lab.on("node1", {"image", "load", "-i", images.file("shoal-test-oci.tar")}), "image load");
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const int daemon = std::atoi(shoal::test::readFile(lab.dir("node1") + "/shoald.pid").c_str());
  const long idleKiB = rssKiB(daemon);

  const double c20 = createAndWait(lab, "b20", 20);
  const int shim = shimPid(lab);
  const long shimKiB = shim > 0 ? rssKiB(shim) : -1;
  removeAndWait(lab, "b20");
  const double machineBefore = machineBusySeconds();
  const double daemonBefore = processCpuSeconds(daemon);
  const double cBig = createAndWait(lab, "bbig", big);
  const double machineCpu = (machineBusySeconds() - machineBefore) / big;
  const double daemonCpu = (processCpuSeconds(daemon) - daemonBefore) / big;
  const long busyKiB = rssKiB(daemon);
  removeAndWait(lab, "bbig");

  // Kill -> replaced (restart delay 0).
  must(lab.on("node1", {"service", "create", "--name", "kill", "--restart-delay", "0s",
                        "--no-resolve-image", "localhost/shoal-test:v1"}),
       "create kill");
  std::vector<double> kills;
  for (int round = 0; round < 5; ++round) {
    auto before = containers(lab);
    if (before.size() != 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      --round;
      continue;
    }
    const auto t0 = Clock::now();
    ::kill(before[0].second, SIGKILL);
    timeUntil(
        [&] {
          auto now = containers(lab);
          return now.size() == 1 && now[0].first != before[0].first;
        },
        30, "the killed task replaced");
    kills.push_back(since(t0));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  removeAndWait(lab, "kill");
  std::sort(kills.begin(), kills.end());

  // Rolling update of 20 to an image that differs.
  createAndWait(lab, "roll", 20);
  const auto t0 = Clock::now();
  must(
      cli(lab, {"service", "update", "--detach", "--image", "localhost/shoal-test:v2",
                "--no-resolve-image", "--update-parallelism", "5", "--update-delay", "0s", "roll"}),
      "update roll");
  timeUntil(
      [&] {
        auto imgs = runningImages(lab, "roll");
        if (imgs.size() != 20) return false;
        for (const auto& i : imgs) {
          if (i.find(":v2") == std::string::npos) return false;
        }
        return true;
      },
      300, "the rolling update");
  const double roll = since(t0);
  removeAndWait(lab, "roll");

  auto ratio = [](double docker, double ours) { return docker / ours; };
  std::printf("runtime_bench (one node, %s via shoal-shim, busybox test image)\n",
              ociRuntime().c_str());
  std::printf("%-44s %10s %10s %8s\n", "figure", "shoal", "docker", "faster");
  std::printf("%-44s %9.2fs %9.2fs %7.1fx\n", "create -> all running, 20 replicas", c20, 3.2,
              ratio(3.2, c20));
  std::printf("%-44s %9.2fs %9.2fs %7.1fx\n",
              ("create -> all running, " + std::to_string(big) + " replicas").c_str(), cBig, 14.5,
              ratio(14.5, cBig));
  std::printf("%-44s %9.3fs %9.2fs %7.1fx\n", "killed task running again (median of 5)",
              kills[kills.size() / 2], 0.65, ratio(0.65, kills[kills.size() / 2]));
  std::printf("%-44s %9.2fs %9.2fs %7.1fx\n", "rolling update of 20, parallelism 5", roll, 10.6,
              ratio(10.6, roll));
  std::printf("%-44s %8.1fMiB %7.0fMiB\n", "shoald resident, idle", idleKiB / 1024.0, 184.0);
  std::printf("%-44s %8.1fMiB\n",
              ("shoald resident, " + std::to_string(big) + " tasks just removed").c_str(),
              busyKiB / 1024.0);
  std::printf("%-44s %8.1fMiB\n", "one shoal-shim resident", shimKiB / 1024.0);
  // Where the create's time goes, per container: the whole machine's CPU (runc, the shims,
  // the kernel, this program's polls) and shoald's own.
  std::printf("%-44s %8.1fms\n", ("CPU per container, create of " + std::to_string(big)).c_str(),
              machineCpu * 1000);
  std::printf("%-44s %8.1fms\n", "  of which shoald's", daemonCpu * 1000);
  // Docker's figures are from another machine: scaled by runc's own speed here, the ratios are
  // what this run would show on that machine.
  const double speed = 0.043 / runcStart;
  std::printf(
      "\nrunc create+start alone, median of 20: %.1f ms here, ~43 ms where Docker was "
      "measured (PLATFORM.md): this machine is %.2fx that one\n",
      runcStart * 1000, speed);
  std::printf("%-44s %10s %8s\n", "figure, scaled to that machine", "shoal", "faster");
  std::printf("%-44s %9.2fs %7.1fx\n", "create -> all running, 20 replicas", c20 * speed,
              ratio(3.2, c20 * speed));
  std::printf("%-44s %9.2fs %7.1fx\n",
              ("create -> all running, " + std::to_string(big) + " replicas").c_str(), cBig * speed,
              ratio(14.5, cBig * speed));
  std::printf("%-44s %9.3fs %7.1fx\n", "killed task running again (median of 5)",
              kills[kills.size() / 2] * speed, ratio(0.65, kills[kills.size() / 2] * speed));
  std::printf("%-44s %9.2fs %7.1fx\n", "rolling update of 20, parallelism 5", roll * speed,
              ratio(10.6, roll * speed));
  return 0;
}
