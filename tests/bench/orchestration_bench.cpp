// orchestration_bench: the end-to-end figure — from `service create` to every task
// RUNNING — on one manager and many simulated nodes in one machine.
//
// Two processes, so the manager's memory and CPU can be told apart from the nodes':
//  - the manager (this process): manager::Swarm, `swarm init` on 127.0.0.1, scheduler-spread
//    loaded through PluginHost, its own node drained (it runs no tasks, as a dedicated manager);
//    services are created through the service API's own code (addServiceRoutes on a Router,
//    the same handlers the daemon serves), and a store watch stamps when every task was
//    created, ASSIGNED and RUNNING.
//  - the nodes (a child forked before any thread starts): N simulated workers, each joining
//    with the worker token through the node API exactly as `swarm join` does (a key and CSR of
//    its own, signed by the cluster CA), then an agent::Agent per node whose leader calls go
//    over mutual TLS on loopback with that node's certificate, and heartbeats at the period the
//    leader asks for. Every agent drives ONE shared runtime-sim instance (start_delay_ms 0)
//    loaded through PluginHost (agent::PluginRuntime); each has its own state directory.
//
// Scenarios: A = 1 service x R replicas (100,000), B = S services x P replicas (100 x 1,000).
// Between scenarios the services are removed and the time until no task is left is printed.
// Baselines from the same run: committed store writes of task-sized objects (2,000 per
// transaction, LevelDB-backed single-voter Raft, as the manager's) and keep-alive node API
// round trips over one mutual TLS connection.
//
// Usage: orchestration_bench [--nodes N (1000)] [--scenario a|b|both (both)]
//                            [--replicas R (100000)] [--services S (100)] [--per-service P (1000)]
//                            [--timeout SECONDS (600)] [--quick (100 nodes, 10,000 tasks)]
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "kernel/agent/agent.h"
#include "kernel/agent/runtime.h"
#include "kernel/api/router.h"
#include "kernel/ca/certificate_authority.h"
#include "kernel/common/log.h"
#include "kernel/common/random.h"
#include "kernel/manager/node_api_client.h"
#include "kernel/manager/replicated_store.h"
#include "kernel/manager/service_routes.h"
#include "kernel/manager/service_spec.h"
#include "kernel/manager/swarm.h"
#include "kernel/plugin/plugin_host.h"
#include "tests/fakes/local_transport.h"
#include "tests/support/temp_dir.h"

using namespace std::chrono_literals;
using shoal::Result;
using shoal::Status;
using shoal::manager::nodeApiRequest;
using shoal::manager::NodeApiTarget;
using shoal::manager::ReplicatedStore;
using shoal::store::Kind;
using shoal::store::TaskState;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  int nodes = 1000;
  std::string scenario = "both";
  uint64_t replicas = 100000;
  uint64_t services = 100;
  uint64_t perService = 1000;
  int timeoutS = 600;
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "orchestration_bench: %s\n", what.c_str());
  std::fflush(stderr);
  _exit(1);
}

void check(const Status& s, const std::string& what) {
  if (!s.isOk()) die(what + ": " + s.toString());
}

double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string stringify(const Poco::JSON::Object& o) {
  std::ostringstream out;
  o.stringify(out);
  return out.str();
}

// /proc/PID/status fields in kB (VmRSS, VmHWM), -1 when unreadable.
long procStatusKb(pid_t pid, const char* field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) return std::strtol(line.c_str() + key.size(), nullptr, 10);
  }
  return -1;
}

// Resets a process's peak RSS (VmHWM) to its current RSS (Linux: clear_refs "5").
void resetPeak(pid_t pid) {
  std::ofstream out("/proc/" + std::to_string(pid) + "/clear_refs");
  out << "5";
}

// User + system CPU seconds of a process so far (/proc/PID/stat, fields 14 and 15).
double cpuSeconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i >= 14) ticks += std::strtod(field.c_str(), nullptr);
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Line-based messages between the two processes.
class Pipe {
 public:
  Pipe(int readFd, int writeFd) : in_(readFd), out_(writeFd) {}
  void send(const std::string& line) {
    const std::string text = line + "\n";
    std::size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = ::write(out_, text.data() + done, text.size() - done);
      if (n <= 0) die("the other process went away");
      done += static_cast<std::size_t>(n);
    }
  }
  // The next line; empty at end of file.
  std::string receive() {
    for (;;) {
      const auto nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      char buf[4096];
      const ssize_t n = ::read(in_, buf, sizeof buf);
      if (n <= 0) return "";
      buffer_.append(buf, static_cast<std::size_t>(n));
    }
  }

 private:
  int in_, out_;
  std::string buffer_;
};

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// ---- the nodes' process ---------------------------------------------------------------------

struct SimNode {
  std::string dir, nodeId, certFile, keyFile;
  std::unique_ptr<shoal::agent::Agent> agent;
};

[[noreturn]] void nodesMain(Pipe pipe, const std::string& root, int count) {
  shoal::log::setLevel(shoal::log::Level::kError);
  const auto setup = words(pipe.receive());
  if (setup.size() != 5 || setup[0] != "setup") die("nodes: no setup from the manager");
  const std::string addr = setup[1], managerId = setup[2], caFile = setup[3], token = setup[4];

  shoal::plugin::PluginHost host;
  host.setPluginConfig(
      {{"runtime-sim", "{\"start_delay_ms\":0,\"root\":\"" + root + "/runtime-sim\"}"}});
  check(host.loadFile(std::string(SHOAL_PLUGIN_BUILD_DIR) + "/runtime-sim.so"), "runtime-sim");
  auto* sim = host.find(shoal::plugin::Kind::kRuntime, "runtime-sim");
  if (!sim) die("runtime-sim did not load");
  shoal::agent::PluginRuntime runtime(*sim);
  host.setEventHandler([&runtime](const shoal::plugin::PluginEvent& e) { runtime.onEvent(e); });
  host.start();

  // Join, as `swarm join` does: a key and CSR of each node's own, the token, a description.
  const auto joinStart = Clock::now();
  std::vector<SimNode> nodes(static_cast<std::size_t>(count));
  std::atomic<int> next{0};
  std::atomic<bool> failed{false};
  std::string failure;
  std::mutex failureMu;
  auto joinSome = [&] {
    for (int i; (i = next.fetch_add(1)) < count && !failed;) {
      SimNode& n = nodes[static_cast<std::size_t>(i)];
      n.dir = root + "/node-" + std::to_string(i);
      ::mkdir(n.dir.c_str(), 0700);
      auto key = shoal::ca::generateKeyPem();
      auto csr = key ? shoal::ca::makeCsrPem(*key) : Result<std::string>(key.status());
      Status s = csr.status();
      if (csr) {
        Poco::JSON::Object req;
        req.set("token", token);
        req.set("csr", *csr);
        req.set("listen_port", 2387);
        Poco::JSON::Object d, platform, resources, engine;
        d.set("Hostname", "sim-" + std::to_string(i));
        platform.set("OS", std::string("linux"));
        platform.set("Architecture", std::string("x86_64"));
        d.set("Platform", platform);
        resources.set("NanoCPUs", int64_t{4'000'000'000});
        resources.set("MemoryBytes", int64_t{16} << 30);
        d.set("Resources", resources);
        engine.set("EngineVersion", std::string("bench"));
        d.set("Engine", engine);
        req.set("description", d);
        NodeApiTarget t;
        t.address = addr;
        t.caFile = caFile;
        t.serverNodeId = managerId;
        t.timeout = 30s;
        auto reply = nodeApiRequest(t, "POST", "/join", stringify(req));
        if (!reply) {
          s = reply.status();
        } else if (reply->status != 200) {
          s = Status::internal("join refused: " + reply->body);
        } else {
          auto o = Poco::JSON::Parser().parse(reply->body).extract<Poco::JSON::Object::Ptr>();
          n.nodeId = o->getValue<std::string>("node_id");
          n.certFile = n.dir + "/node.crt";
          n.keyFile = n.dir + "/node.key";
          std::ofstream(n.certFile) << o->getValue<std::string>("certificate");
          std::ofstream(n.keyFile) << *key;
          ::chmod(n.keyFile.c_str(), 0600);
        }
      }
      if (!s) {
        std::lock_guard<std::mutex> lock(failureMu);
        failure = s.toString();
        failed = true;
      }
    }
  };
  {
    std::vector<std::thread> joiners;
    for (int k = 0; k < 8; ++k) joiners.emplace_back(joinSome);
    for (auto& j : joiners) j.join();
  }
  if (failed) die("nodes: join failed: " + failure);
  const double joinS = secondsSince(joinStart);

  // Heartbeats at the period the leader names, spread evenly over it. Each node of a real
  // cluster beats on its own: a thread here beats for 25 nodes, so a slow answer under load
  // delays a few others, not a quarter of the cluster past the 3 missed beats that mark a
  // node down.
  std::atomic<bool> stopping{false};
  std::atomic<int> periodS{5};
  std::atomic<uint64_t> hbFailures{0};
  std::vector<std::thread> beaters;
  const int kBeaters = std::max(1, count / 25);
  for (int b = 0; b < kBeaters; ++b) {
    beaters.emplace_back([&, b] {
      std::vector<SimNode*> mine;
      for (std::size_t i = static_cast<std::size_t>(b); i < nodes.size(); i += kBeaters) {
        mine.push_back(&nodes[i]);
      }
      while (!stopping) {
        const auto roundStart = Clock::now();
        const auto period = std::chrono::seconds(periodS.load());
        for (std::size_t k = 0; k < mine.size() && !stopping; ++k) {
          std::this_thread::sleep_until(roundStart + period * k / mine.size());
          NodeApiTarget t{addr, caFile, managerId, mine[k]->certFile, mine[k]->keyFile, 5000ms};
          auto reply = nodeApiRequest(t, "POST", "/heartbeat", "");
          if (!reply || reply->status != 200) {
            ++hbFailures;
            continue;
          }
          try {
            auto o = Poco::JSON::Parser().parse(reply->body).extract<Poco::JSON::Object::Ptr>();
            periodS = std::max<int>(1, o->optValue<int>("period_seconds", 5));
          } catch (const std::exception&) {
          }
        }
        std::this_thread::sleep_until(roundStart + period);
      }
    });
  }

  // The agents, each with its own certificate and state directory.
  const auto agentStart = Clock::now();
  for (auto& n : nodes) {
    NodeApiTarget t{addr, caFile, managerId, n.certFile, n.keyFile, 5000ms};
    auto call = [t](const std::string& path,
                    const std::string& body) -> Result<shoal::agent::LeaderReply> {
      auto reply = nodeApiRequest(t, "POST", path, body);
      if (!reply) return reply.status();
      return shoal::agent::LeaderReply{reply->status, reply->body};
    };
    n.agent = std::make_unique<shoal::agent::Agent>(n.dir + "/agent", runtime, call,
                                                    shoal::SystemClock::instance());
    check(n.agent->start(), "agent start");
  }
  const double agentS = secondsSince(agentStart);

  // Baseline: keep-alive round trips over one node's mutual TLS connection.
  NodeApiTarget probe{addr, caFile, managerId, nodes[0].certFile, nodes[0].keyFile, 5000ms};
  const int kProbe = 200;
  const auto probeStart = Clock::now();
  for (int i = 0; i < kProbe; ++i) {
    auto r = nodeApiRequest(probe, "GET", "/ca");
    if (!r || r->status != 200) die("nodes: GET /ca failed");
  }
  const double probeS = secondsSince(probeStart);

  char line[256];
  std::snprintf(line, sizeof line, "ready %.2f %.2f %.0f", joinS, agentS, kProbe / probeS);
  pipe.send(line);
  for (;;) {
    const auto w = words(pipe.receive());
    if (w.empty() || w[0] == "stop") break;
    if (w[0] == "stats") {
      pipe.send("stats " + std::to_string(hbFailures.load()));
    }
  }
  // No orderly shutdown: 1,000 agents would each finish their poll first. The figures are in.
  std::fflush(stdout);
  _exit(0);
}

// ---- the manager's process -------------------------------------------------------------------

// Follows every task through a store watch: how many exist, are ASSIGNED (or further), RUNNING.
class Tracker {
 public:
  explicit Tracker(ReplicatedStore& store) : store_(store) {
    thread_ = std::thread([this] { run(); });
  }
  ~Tracker() {
    stop_ = true;
    thread_.join();
  }

  struct Counts {
    uint64_t tasks = 0, assigned = 0, running = 0;
  };
  Counts counts() {
    std::lock_guard<std::mutex> lock(mu_);
    return counts_;
  }
  uint64_t resyncs() const { return resyncs_.load(); }

 private:
  void account(const shoal::store::Object& t, int sign) {
    const TaskState s = shoal::manager::observedState(t);
    counts_.tasks += static_cast<uint64_t>(sign);
    if (s >= TaskState::kAssigned) counts_.assigned += static_cast<uint64_t>(sign);
    if (s == TaskState::kRunning) counts_.running += static_cast<uint64_t>(sign);
  }

  void run() {
    while (!stop_) {
      std::unique_ptr<shoal::store::Watch> watch;
      auto w = store_.store().viewAndWatch(shoal::store::KindSet{Kind::kTask},
                                           [&](const shoal::store::ReadView& v) {
                                             std::lock_guard<std::mutex> lock(mu_);
                                             counts_ = Counts{};
                                             tasks_.clear();
                                             for (const auto& t : v.list(Kind::kTask)) {
                                               tasks_[t->id] = t;
                                               account(*t, 1);
                                             }
                                           });
      if (!w) die("watch: " + w.status().toString());
      watch = std::move(*w);
      while (!stop_) {
        auto batch = watch->nextBatch(100ms);
        if (!batch) {
          if (batch.status().code() == Status::Code::kTimeout) continue;
          ++resyncs_;  // fell behind: count again from a fresh view
          break;
        }
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto& e : batch->events) {
          auto it = tasks_.find(e.object->id);
          if (it != tasks_.end()) {
            account(*it->second, -1);
            tasks_.erase(it);
          }
          if (e.type != shoal::store::EventType::kDeleted) {
            tasks_[e.object->id] = e.object;
            account(*e.object, 1);
          }
        }
      }
    }
  }

  ReplicatedStore& store_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> resyncs_{0};
  std::mutex mu_;
  Counts counts_;                                                   // guarded by mu_
  std::unordered_map<std::string, shoal::store::ObjectPtr> tasks_;  // guarded by mu_
  std::thread thread_;
};

// Committed writes of task-sized objects, 2,000 per transaction, on a store like the manager's.
double storeBaseline(const std::string& dir, const std::string& taskJson) {
  auto storage = shoal::raft::RaftStorage::open(dir);
  if (!storage) die("baseline storage: " + storage.status().toString());
  shoal::test::LocalHub hub;
  shoal::test::LocalTransport transport(hub, 1);
  shoal::SeededRandom random(1);
  shoal::manager::ReplicatedStoreOptions o;
  o.raft.raft.id = 1;
  o.raft.raft.voters = {1};
  ReplicatedStore store(o, std::move(storage.value()), transport, random,
                        shoal::SystemClock::instance());
  check(store.start(), "baseline store");
  const auto deadline = Clock::now() + 15s;
  while (!store.raft().isLeader()) {
    if (Clock::now() > deadline) die("baseline store: no leader");
    std::this_thread::sleep_for(10ms);
  }
  const int kTx = 25, kPerTx = 2000;
  const auto start = Clock::now();
  for (int i = 0; i < kTx; ++i) {
    check(store.update(
              [&](shoal::store::Tx& tx) {
                for (int k = 0; k < kPerTx; ++k) {
                  shoal::store::Object t;
                  t.kind = Kind::kTask;
                  t.id = shoal::newId(random);
                  t.serviceId = "baseline";
                  t.slot = static_cast<uint64_t>(i * kPerTx + k + 1);
                  t.desiredState = TaskState::kRunning;
                  t.spec = taskJson;
                  t.status = "{\"State\":\"pending\",\"Message\":\"pending task scheduling\"}";
                  if (Status s = tx.create(std::move(t)); !s) return s;
                }
                return Status::ok();
              },
              30s),
          "baseline write");
  }
  const double s = secondsSince(start);
  store.stop();
  return kTx * kPerTx / s;
}

shoal::api::Response call(const shoal::api::Router& router, const std::string& method,
                          const std::string& path, const std::string& body,
                          const std::map<std::string, std::string>& query = {}) {
  shoal::api::Request r;
  r.method = method;
  r.path = path;
  r.body = body;
  r.query = query;
  return router.dispatch(r);
}

std::string serviceSpec(const std::string& name, uint64_t replicas) {
  return "{\"Name\":\"" + name +
         "\",\"Mode\":{\"Replicated\":{\"Replicas\":" + std::to_string(replicas) +
         "}},\"TaskTemplate\":{\"ContainerSpec\":{\"Image\":\"busybox:latest\","
         "\"Command\":[\"sleep\",\"infinity\"]}}}";
}

struct Stamp {
  double created = -1, assigned = -1, running = -1;
};

bool runScenario(const Options& opt, const shoal::api::Router& router, Tracker& tracker,
                 pid_t nodesPid, const std::string& label, uint64_t services, uint64_t each) {
  const uint64_t total = services * each;
  std::printf("\nscenario %s: %llu service(s) x %llu replicas = %llu tasks on %d nodes\n",
              label.c_str(), static_cast<unsigned long long>(services),
              static_cast<unsigned long long>(each), static_cast<unsigned long long>(total),
              opt.nodes);
  std::fflush(stdout);
  resetPeak(getpid());
  resetPeak(nodesPid);
  const double managerCpu0 = cpuSeconds(getpid()), nodesCpu0 = cpuSeconds(nodesPid);
  const auto t0 = Clock::now();
  for (uint64_t s = 0; s < services; ++s) {
    auto r = call(router, "POST", "/services/create",
                  serviceSpec(label + "-" + std::to_string(s), each));
    if (r.status != 200) die("service create: " + r.body);
  }
  const double createdCalls = secondsSince(t0);
  Stamp stamp;
  const auto deadline = t0 + std::chrono::seconds(opt.timeoutS);
  double lastPrint = 0;
  bool done = false;
  while (Clock::now() < deadline) {
    const auto c = tracker.counts();
    const double t = secondsSince(t0);
    if (stamp.created < 0 && c.tasks >= total) stamp.created = t;
    if (stamp.assigned < 0 && c.assigned >= total) stamp.assigned = t;
    if (stamp.running < 0 && c.running >= total) stamp.running = t;
    if (t - lastPrint >= 1.0) {
      std::fprintf(stderr, "  t=%5.1fs tasks=%llu assigned=%llu running=%llu\n", t,
                   static_cast<unsigned long long>(c.tasks),
                   static_cast<unsigned long long>(c.assigned),
                   static_cast<unsigned long long>(c.running));
      lastPrint = t;
    }
    if (stamp.running >= 0) {
      done = true;
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  const double managerCpu = cpuSeconds(getpid()) - managerCpu0;
  const double nodesCpu = cpuSeconds(nodesPid) - nodesCpu0;
  const auto c = tracker.counts();
  std::printf("  service create calls returned     %8.2f s\n", createdCalls);
  std::printf("  all %llu tasks created            %8.2f s\n",
              static_cast<unsigned long long>(total), stamp.created);
  std::printf("  all assigned                      %8.2f s\n", stamp.assigned);
  if (done) {
    std::printf("  all running                       %8.2f s   (%.0f tasks/s end to end)\n",
                stamp.running, static_cast<double>(total) / stamp.running);
  } else {
    std::printf("  NOT all running after %d s: %llu created, %llu assigned, %llu running\n",
                opt.timeoutS, static_cast<unsigned long long>(c.tasks),
                static_cast<unsigned long long>(c.assigned),
                static_cast<unsigned long long>(c.running));
  }
  std::printf("  CPU: manager %.2f s, nodes (agents + runtime-sim) %.2f s\n", managerCpu, nodesCpu);
  std::printf("  peak RSS: manager %.0f MiB, nodes %.0f MiB (now: %.0f / %.0f MiB)\n",
              static_cast<double>(procStatusKb(getpid(), "VmHWM")) / 1024,
              static_cast<double>(procStatusKb(nodesPid, "VmHWM")) / 1024,
              static_cast<double>(procStatusKb(getpid(), "VmRSS")) / 1024,
              static_cast<double>(procStatusKb(nodesPid, "VmRSS")) / 1024);
  std::fflush(stdout);
  return done;
}

void removeAll(const Options& opt, const shoal::api::Router& router, Tracker& tracker,
               const std::string& label, uint64_t services) {
  const auto t0 = Clock::now();
  for (uint64_t s = 0; s < services; ++s) {
    auto r =
        call(router, "POST", "/services/remove", "", {{"id", label + "-" + std::to_string(s)}});
    if (r.status != 200) die("service remove: " + r.body);
  }
  const auto deadline = t0 + std::chrono::seconds(opt.timeoutS);
  while (tracker.counts().tasks > 0 && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
  const auto left = tracker.counts().tasks;
  if (left == 0) {
    std::printf("  services removed, every task gone  %8.2f s\n", secondsSince(t0));
  } else {
    std::printf("  services removed, %llu tasks still there after %d s\n",
                static_cast<unsigned long long>(left), opt.timeoutS);
  }
  std::fflush(stdout);
}

int managerMain(const Options& opt, Pipe pipe, pid_t nodesPid, const std::string& root) {
  shoal::log::setLevel(shoal::log::Level::kError);
  std::printf("orchestration_bench: %d nodes, %ld CPUs\n", opt.nodes,
              sysconf(_SC_NPROCESSORS_ONLN));

  const std::string taskJson =
      "{\"ContainerSpec\":{\"Image\":\"busybox:latest\",\"Command\":[\"sleep\",\"infinity\"]}}";
  std::printf("baseline: store writes of task objects, 2,000 per transaction: %.0f objects/s\n",
              storeBaseline(root + "/baseline", taskJson));
  std::fflush(stdout);

  shoal::plugin::PluginHost host;
  check(host.loadFile(std::string(SHOAL_PLUGIN_BUILD_DIR) + "/scheduler-spread.so"),
        "scheduler-spread");
  shoal::SystemRandom random;
  shoal::manager::Swarm swarm(root + "/manager", "bench", random, shoal::SystemClock::instance());
  swarm.setPlugins(&host, "");
  shoal::manager::SwarmInitOptions init;
  init.listenAddr = "127.0.0.1:0";
  auto self = swarm.init(init);
  if (!self) die("swarm init: " + self.status().toString());
  shoal::manager::Swarm::NodeUpdate drain;
  drain.availability = "drain";
  check(swarm.updateNode("self", drain), "drain the manager");
  const auto status = swarm.status();
  auto token = swarm.joinToken("worker", false);
  if (!token) die("join token: " + token.status().toString());
  pipe.send("setup " + status.advertiseAddr + " " + *self + " " + root +
            "/manager/swarm/certificates/swarm-root-ca.crt " + *token);

  const auto joinStart = Clock::now();
  const auto ready = words(pipe.receive());
  if (ready.size() != 4 || ready[0] != "ready") die("the nodes did not start");
  std::printf("setup: %d nodes joined in %s s, agents started in %s s\n", opt.nodes,
              ready[1].c_str(), ready[2].c_str());
  std::printf("baseline: node API round trips over one keep-alive mutual TLS connection: %s/s\n",
              ready[3].c_str());
  ReplicatedStore* store = nullptr;
  check(swarm.withStore([&](ReplicatedStore& s, const std::string&) {
    store = &s;
    return Status::ok();
  }),
        "store");
  // Every node ready (joining marks it so; heartbeats keep it so).
  for (;;) {
    uint64_t up = 0;
    store->view([&](const shoal::store::ReadView& v) {
      for (const auto& n : v.list(Kind::kNode)) {
        if (n->id != *self && n->status.find("\"State\":\"ready\"") != std::string::npos) ++up;
      }
    });
    if (up >= static_cast<uint64_t>(opt.nodes)) break;
    if (secondsSince(joinStart) > 120) die("the nodes are not all ready");
    std::this_thread::sleep_for(100ms);
  }
  {
    // Past the first round of heartbeats (5 s), whose connections are all new, and the agents'
    // first sessions: what a settled cluster costs when nothing changes.
    std::this_thread::sleep_for(6s);
    const double m0 = cpuSeconds(getpid()), n0 = cpuSeconds(nodesPid);
    std::this_thread::sleep_for(2s);
    std::printf(
        "idle: manager RSS %.0f MiB, nodes RSS %.0f MiB; CPU over 2 s idle: manager "
        "%.2f s, nodes %.2f s\n",
        static_cast<double>(procStatusKb(getpid(), "VmRSS")) / 1024,
        static_cast<double>(procStatusKb(nodesPid, "VmRSS")) / 1024, cpuSeconds(getpid()) - m0,
        cpuSeconds(nodesPid) - n0);
    std::fflush(stdout);
  }

  shoal::api::Router router;
  shoal::manager::addServiceRoutes(router, swarm);
  Tracker tracker(*store);
  bool ok = true;
  const bool a = opt.scenario == "a" || opt.scenario == "both";
  const bool b = opt.scenario == "b" || opt.scenario == "both";
  if (a) {
    ok = runScenario(opt, router, tracker, nodesPid, "a", 1, opt.replicas) && ok;
    if (b) removeAll(opt, router, tracker, "a", 1);
  }
  if (b) ok = runScenario(opt, router, tracker, nodesPid, "b", opt.services, opt.perService) && ok;
  pipe.send("stats");
  const auto stats = words(pipe.receive());
  if (stats.size() == 2) std::printf("heartbeats that failed: %s\n", stats[1].c_str());
  if (tracker.resyncs() > 0) {
    std::printf("(the bench's own watch fell behind %llu time(s) and recounted)\n",
                static_cast<unsigned long long>(tracker.resyncs()));
  }
  pipe.send("stop");
  int wstatus = 0;
  ::waitpid(nodesPid, &wstatus, 0);
  std::fflush(stdout);
  return ok ? 0 : 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--nodes") {
      opt.nodes = std::atoi(value().c_str());
    } else if (a == "--scenario") {
      opt.scenario = value();
    } else if (a == "--replicas") {
      opt.replicas = std::strtoull(value().c_str(), nullptr, 10);
    } else if (a == "--services") {
      opt.services = std::strtoull(value().c_str(), nullptr, 10);
    } else if (a == "--per-service") {
      opt.perService = std::strtoull(value().c_str(), nullptr, 10);
    } else if (a == "--timeout") {
      opt.timeoutS = std::atoi(value().c_str());
    } else if (a == "--quick") {
      opt.nodes = 100;
      opt.replicas = 10000;
      opt.services = 10;
      opt.perService = 1000;
    } else {
      die("unknown argument " + a +
          " (usage: orchestration_bench [--nodes N] [--scenario a|b|both] [--replicas R] "
          "[--services S] [--per-service P] [--timeout S] [--quick])");
    }
  }
  if (opt.nodes < 1 || (opt.scenario != "a" && opt.scenario != "b" && opt.scenario != "both")) {
    die("bad --nodes or --scenario");
  }
  // Two processes: forked before either starts a thread.
  ::signal(SIGPIPE, SIG_IGN);
  shoal::test::TempDir root;
  int toNodes[2], toManager[2];
  if (::pipe(toNodes) != 0 || ::pipe(toManager) != 0) die("pipe");
  const pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    ::close(toNodes[1]);
    ::close(toManager[0]);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    nodesMain(Pipe(toNodes[0], toManager[1]), root.path(), opt.nodes);
  }
  ::close(toNodes[0]);
  ::close(toManager[1]);
  const int rc = managerMain(opt, Pipe(toManager[0], toNodes[1]), pid, root.path());
  return rc;
}
