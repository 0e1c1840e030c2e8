// cluster_bench: issue #3's figures for the real thing — the object store replicated by Raft
// over TCP with mutual TLS (TLS 1.3, a test CA), LevelDB with synced writes, on loopback.
//
//  1. Committed object writes per second on 3 managers (one process, three TcpTransports on
//     127.0.0.1), for transactions of 1 and of 100 objects, 64 concurrent writers on the
//     leader (so transactions batch into shared appends and fsyncs). Baseline in the same run:
//     synced LevelDB writes per second, one per fsync.
//  2. Failover: three raft_member processes; kill -9 the leader; the time until a survivor
//     commits a write (each try waits at most 100 ms). Default timing: tick 100 ms, election
//     timeout 10-20 ticks.
//  3. Catch-up: a manager that was down while the others took 100,000 objects (and compacted
//     their logs) starts empty; the time until it holds the same state (through
//     InstallSnapshot).
//
// Usage: cluster_bench [--seconds S] [--quick] [--writes-only] [--writers N (64)]
//                      [--objects N (1 and 100)]
//   --quick: shorter runs, 20,000 objects; --writes-only: figure 1 only (for profiling)
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "kernel/api/api_client.h"
#include "kernel/common/log.h"
#include "kernel/manager/replicated_store.h"
#include "kernel/raft/tcp_transport.h"
#include "tests/bench/leveldb_baseline.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_ca.h"

using namespace std::chrono_literals;
using shoal::Status;
using shoal::manager::ReplicatedStore;
using shoal::raft::NodeId;
using shoal::store::Kind;
using shoal::store::Object;
using shoal::store::Tx;
using Clock = std::chrono::steady_clock;

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "cluster_bench: %s\n", what.c_str());
  std::exit(1);
}

// A loopback port free right now (bound to 0 and released).
int freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    die("cannot find a free loopback port");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

// Certificates for members 1..3 (CN shoal-raft-<id>) and the CA, as files in `dir`.
void writeCredentials(const shoal::test::TempDir& dir) {
  shoal::test::TestCa ca("shoal-bench-cluster");
  dir.write("ca.pem", ca.certPem());
  for (int i = 1; i <= 3; ++i) {
    auto c = ca.issue("shoal-raft-" + std::to_string(i));
    dir.write("m" + std::to_string(i) + ".crt", c.certPem);
    dir.write("m" + std::to_string(i) + ".key", c.keyPem);
  }
}

Object config(const std::string& id) {
  Object o;
  o.kind = Kind::kConfig;
  o.id = id;
  o.name = id;
  o.labels = {{"com.example.tier", "web"}};
  o.spec = "{\"Data\":\"" + std::string(120, 'x') + "\"}";
  return o;
}

// Three ReplicatedStores in this process, over TLS on loopback.
class InProcessCluster {
 public:
  explicit InProcessCluster(shoal::raft::Index snapshotEvery) : every_(snapshotEvery) {
    writeCredentials(dir_);
    for (NodeId id : {1, 2, 3}) ports_[id] = freePort();
    for (NodeId id : {1, 2, 3}) start(id);
  }
  ~InProcessCluster() {
    for (auto& [id, m] : members_) stop(id);
  }
  void start(NodeId id) {
    auto& m = members_[id];
    const std::string n = "m" + std::to_string(id);
    auto storage = shoal::raft::RaftStorage::open(dir_.file(n + "-data"));
    if (!storage) die(storage.status().toString());
    shoal::raft::TcpTransport::Options to;
    to.self = id;
    to.listenAddress = "127.0.0.1:" + std::to_string(ports_[id]);
    to.caFile = dir_.file("ca.pem");
    to.certFile = dir_.file(n + ".crt");
    to.keyFile = dir_.file(n + ".key");
    to.requirePeerIdInCN = true;
    m.transport = std::make_unique<shoal::raft::TcpTransport>(to);
    for (NodeId p : {1, 2, 3}) {
      if (p != id) m.transport->addPeer(p, "127.0.0.1:" + std::to_string(ports_[p]));
    }
    shoal::manager::ReplicatedStoreOptions o;
    o.raft.raft.id = id;
    o.raft.raft.voters = {1, 2, 3};
    o.raft.snapshotEvery = every_;
    m.store = std::make_unique<ReplicatedStore>(o, std::move(storage.value()), *m.transport,
                                                random_, shoal::SystemClock::instance());
    if (Status s = m.store->start(); !s) die(s.toString());
  }
  void stop(NodeId id) {
    auto& m = members_[id];
    if (m.store) m.store->stop();
    m.store.reset();
    if (m.transport) m.transport->stop();
    m.transport.reset();
  }
  NodeId waitLeader() {
    auto deadline = Clock::now() + 30s;
    while (Clock::now() < deadline) {
      for (auto& [id, m] : members_) {
        if (m.store && m.store->raft().isLeader()) return id;
      }
      std::this_thread::sleep_for(5ms);
    }
    die("no leader within 30 s");
  }
  ReplicatedStore& at(NodeId id) { return *members_.at(id).store; }

 private:
  struct Member {
    std::unique_ptr<shoal::raft::TcpTransport> transport;
    std::unique_ptr<ReplicatedStore> store;
  };
  shoal::test::TempDir dir_;
  shoal::SystemRandom random_;
  shoal::raft::Index every_;
  std::map<NodeId, int> ports_;
  std::map<NodeId, Member> members_;
};

double writesPerSecond(int objectsPerTx, int writers, double seconds) {
  InProcessCluster c(10000);
  NodeId l = c.waitLeader();
  std::atomic<long> committed{0}, failed{0};
  std::atomic<bool> go{true};
  std::vector<std::thread> threads;
  auto start = Clock::now();
  for (int t = 0; t < writers; ++t) {
    threads.emplace_back([&, t] {
      for (long seq = 0; go.load(); ++seq) {
        Status s = c.at(l).update(
            [&](Tx& tx) {
              for (int o = 0; o < objectsPerTx; ++o) {
                std::string id =
                    "c" + std::to_string(t) + "-" + std::to_string(seq) + "-" + std::to_string(o);
                if (Status e = tx.create(config(id)); !e) return e;
              }
              return Status::ok();
            },
            10s);
        (s ? committed : failed)++;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  go = false;
  for (auto& th : threads) th.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  if (failed.load() > 0) std::printf("  (%ld transactions failed)\n", failed.load());
  return committed.load() * objectsPerTx / elapsed;
}

double catchUpSeconds(int objects, std::size_t* size) {
  InProcessCluster c(/*snapshotEvery=*/200);
  NodeId l = c.waitLeader();
  NodeId lag = l == 3 ? 2 : 3;
  c.stop(lag);
  std::vector<std::thread> writers;
  std::atomic<int> next{0};
  for (int t = 0; t < 8; ++t) {
    writers.emplace_back([&] {
      for (int k; (k = next++) < objects / 100;) {
        Status s = c.at(l).update(
            [&](Tx& tx) {
              for (int o = 0; o < 100; ++o) {
                if (Status e = tx.create(config("o" + std::to_string(k * 100 + o))); !e) return e;
              }
              return Status::ok();
            },
            60s);
        if (!s) die(s.toString());
      }
    });
  }
  for (auto& w : writers) w.join();
  const std::string digest = c.at(l).store().digest();
  *size = c.at(l).store().size();
  auto t0 = Clock::now();
  c.start(lag);
  while (c.at(lag).store().digest() != digest) std::this_thread::sleep_for(10ms);
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (c.at(lag).snapshotsRestored() == 0) die("the lagging member caught up without a snapshot");
  return seconds;
}

// One round: three raft_member processes on loopback; kill -9 the leader.
double failoverSeconds() {
  shoal::test::TempDir dir;
  writeCredentials(dir);
  std::map<int, int> ports;
  for (int i = 1; i <= 3; ++i) ports[i] = freePort();
  std::map<int, std::unique_ptr<shoal::test::ChildProcess>> procs;
  auto sock = [&](int i) { return dir.file("m" + std::to_string(i) + ".sock"); };
  for (int i = 1; i <= 3; ++i) {
    const std::string n = "m" + std::to_string(i);
    std::vector<std::string> argv = {RAFT_MEMBER_PATH,
                                     "--id",
                                     std::to_string(i),
                                     "--data",
                                     dir.file(n + "-data"),
                                     "--listen",
                                     "127.0.0.1:" + std::to_string(ports[i]),
                                     "--ca",
                                     dir.file("ca.pem"),
                                     "--cert",
                                     dir.file(n + ".crt"),
                                     "--key",
                                     dir.file(n + ".key"),
                                     "--control",
                                     sock(i)};
    for (int j = 1; j <= 3; ++j) {
      if (j == i) continue;
      argv.push_back("--peer");
      argv.push_back(std::to_string(j) + "=127.0.0.1:" + std::to_string(ports[j]));
    }
    procs[i] = std::make_unique<shoal::test::ChildProcess>(argv, dir.file(n + ".log"));
  }
  auto call = [&](int i, const std::string& method, const std::string& path) {
    auto client = shoal::api::ApiClient::create("unix://" + sock(i));
    if (!client) return shoal::api::ApiClient::Reply{0, ""};
    auto r = client->request(method, path);
    return r ? *r : shoal::api::ApiClient::Reply{0, ""};
  };
  auto leaderOf = [&](int i) {
    auto r = call(i, "GET", "/status");
    auto at = r.body.find("\"leader\":");
    return r.status == 200 && at != std::string::npos ? std::atoi(r.body.c_str() + at + 9) : 0;
  };
  int leader = 0;
  if (!shoal::test::eventually(
          [&] {
            leader = leaderOf(1);
            return leader != 0 && call(leader, "POST", "/put?key=warm&value=1").status == 200;
          },
          30s)) {
    die("the process cluster did not elect a leader: " + procs[1]->log());
  }
  const int survivor = leader == 1 ? 2 : 1;
  procs[leader]->signal(SIGKILL);
  auto t0 = Clock::now();
  for (int n = 0;; ++n) {
    auto r =
        call(survivor, "POST", "/put?key=after" + std::to_string(n) + "&value=1&timeout_ms=100");
    if (r.status == 200) break;
    if (Clock::now() - t0 > 30s) die("no write accepted within 30 s of the kill");
  }
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 5;
  bool quick = false;
  bool writesOnly = false;  // only the throughput figures (for profiling)
  int writers = 64;
  std::vector<int> sizes = {1, 100};  // objects per transaction
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = std::atof(argv[++i]);
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    if (!std::strcmp(argv[i], "--writes-only")) writesOnly = true;
    if (!std::strcmp(argv[i], "--writers") && i + 1 < argc) writers = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--objects") && i + 1 < argc) sizes = {std::atoi(argv[++i])};
  }
  if (quick) seconds = std::min(seconds, 3.0);
  shoal::log::setLevel(shoal::log::Level::kError);
  std::printf(
      "cluster_bench: 3 managers, store over Raft, TCP + mutual TLS 1.3 on loopback, "
      "synced LevelDB, %d cores\n",
      static_cast<int>(std::thread::hardware_concurrency()));

  const double base = shoal::bench::syncedLevelDbWritesPerSecond(seconds / 2);
  std::printf("baseline: %.0f synced LevelDB writes/s (one write per fsync)\n", base);
  for (int objects : sizes) {
    const double w = writesPerSecond(objects, writers, seconds);
    std::printf(
        "committed object writes/s, %3d object(s) per transaction, %d writers: %.0f "
        "(%.1fx the baseline)\n",
        objects, writers, w, w / base);
  }

  if (writesOnly) return 0;
  std::vector<double> failovers;
  for (int round = 0; round < (quick ? 3 : 7); ++round) failovers.push_back(failoverSeconds());
  std::sort(failovers.begin(), failovers.end());
  std::printf(
      "failover (kill -9 of the leader process -> a survivor commits a write), tick "
      "100 ms: median %.2f s, min %.2f s, max %.2f s over %zu rounds\n",
      failovers[failovers.size() / 2], failovers.front(), failovers.back(), failovers.size());

  std::size_t size = 0;
  const double catchUp = catchUpSeconds(quick ? 20000 : 100000, &size);
  std::printf("catch-up of a member that was down to %zu objects (InstallSnapshot): %.2f s\n", size,
              catchUp);
  return 0;
}
