// raft_bench: figures for issue #3's targets, on this machine, printed as text.
//
//  1. Committed writes per second on a 3-member cluster (one process, in-process transport,
//     real LevelDB storage with synced writes), for commands of 1 and of 100 objects, with
//     many concurrent proposers (so commands batch into shared Readys and fsyncs).
//     Baseline in the same run: synced LevelDB writes per second, one per sync — what a
//     member could commit if it persisted every command on its own.
//  2. Failover: after the leader stops, the time until a new leader accepts a write, with the
//     default timing (tick 100 ms, election timeout 10–20 ticks).
//  3. Catch-up: the time a member that was down needs to reach a leader holding 100,000
//     objects, through InstallSnapshot.
//
// Usage: raft_bench [--seconds S] [--quick]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "kernel/common/log.h"
#include "kernel/raft/raft_node.h"
#include "tests/bench/leveldb_baseline.h"
#include "tests/fakes/local_transport.h"
#include "tests/support/temp_dir.h"

using namespace std::chrono_literals;
using shoal::Status;
using shoal::raft::Index;
using shoal::raft::NodeId;
using shoal::raft::RaftNode;
using Clock = std::chrono::steady_clock;

namespace {

// Objects as key -> value; a command holds one or more "key=value" lines.
class ObjectMachine : public shoal::raft::StateMachine {
 public:
  Status apply(Index, std::string_view command) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::size_t pos = 0;
    while (pos < command.size()) {
      auto nl = command.find('\n', pos);
      if (nl == std::string_view::npos) nl = command.size();
      auto line = command.substr(pos, nl - pos);
      auto eq = line.find('=');
      objects_[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
      pos = nl + 1;
    }
    return Status::ok();
  }
  shoal::Result<std::string> snapshot() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    for (const auto& [k, v] : objects_) out += k + "=" + v + "\n";
    return out;
  }
  Status restore(Index, std::string_view data) override {
    std::lock_guard<std::mutex> lock(mu_);
    objects_.clear();
    std::size_t pos = 0;
    while (pos < data.size()) {
      auto nl = data.find('\n', pos);
      auto line = data.substr(pos, nl - pos);
      auto eq = line.find('=');
      objects_[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
      pos = nl + 1;
    }
    return Status::ok();
  }
  void reset() {
    std::lock_guard<std::mutex> lock(mu_);
    objects_.clear();
  }
  std::size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return objects_.size();
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::string> objects_;
};

struct Member {
  std::unique_ptr<shoal::test::LocalTransport> transport;
  ObjectMachine machine;
  std::unique_ptr<RaftNode> node;
};

class Cluster {
 public:
  Cluster(std::chrono::milliseconds tick, Index snapshotEvery)
      : tick_(tick), every_(snapshotEvery) {
    for (NodeId id : {1, 2, 3}) start(id);
  }
  ~Cluster() {
    for (auto& [id, m] : members_) {
      if (m->node) m->node->stop();
    }
  }
  void start(NodeId id) {
    auto& m = members_[id];
    if (!m) m = std::make_unique<Member>();
    auto storage = shoal::raft::RaftStorage::open(dir_.file("m" + std::to_string(id)));
    if (!storage) {
      std::fprintf(stderr, "%s\n", storage.status().toString().c_str());
      std::exit(1);
    }
    shoal::raft::RaftNodeOptions o;
    o.raft.id = id;
    o.raft.voters = {1, 2, 3};
    o.tick = tick_;
    o.snapshotEvery = every_;
    m->transport = std::make_unique<shoal::test::LocalTransport>(hub_, id);
    m->machine.reset();
    m->node = std::make_unique<RaftNode>(o, std::move(storage.value()), *m->transport, m->machine,
                                         random_);
    if (Status s = m->node->start(); !s) {
      std::fprintf(stderr, "%s\n", s.toString().c_str());
      std::exit(1);
    }
  }
  void stop(NodeId id) {
    members_[id]->node->stop();
    members_[id]->node.reset();
  }
  NodeId leader() {
    for (auto& [id, m] : members_) {
      if (m->node && m->node->isLeader()) return id;
    }
    return 0;
  }
  NodeId waitLeader() {
    auto deadline = Clock::now() + 30s;
    while (Clock::now() < deadline) {
      if (NodeId l = leader()) return l;
      std::this_thread::sleep_for(1ms);
    }
    return 0;
  }
  RaftNode& node(NodeId id) { return *members_.at(id)->node; }
  ObjectMachine& machine(NodeId id) { return members_.at(id)->machine; }

 private:
  shoal::test::TempDir dir_;
  shoal::test::LocalHub hub_;
  shoal::SeededRandom random_{42};
  std::chrono::milliseconds tick_;
  Index every_;
  std::map<NodeId, std::unique_ptr<Member>> members_;
};

std::string command(int client, long seq, int objects) {
  std::string out;
  for (int o = 0; o < objects; ++o) {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "service/c%d-%ld-%d={\"spec\":{\"image\":\"registry:5000/app:1\",\"replicas\":3},"
                  "\"version\":%ld}\n",
                  client, seq, o, seq);
    out += buf;
  }
  return out;
}

double writesPerSecond(int objectsPerCommand, int clients, double seconds) {
  Cluster c(100ms, 10000);
  NodeId l = c.waitLeader();
  std::atomic<long> committed{0};
  std::atomic<long> failed{0};
  std::atomic<bool> go{true};
  std::vector<std::thread> threads;
  auto start = Clock::now();
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      long seq = 0;
      while (go.load()) {
        Status s = c.node(l).propose(command(t, seq++, objectsPerCommand), 10s);
        (s.isOk() ? committed : failed)++;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  go = false;
  for (auto& th : threads) th.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  if (failed.load() > 0) std::printf("  (%ld proposals failed)\n", failed.load());
  return committed.load() * objectsPerCommand / elapsed;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 5;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = std::atof(argv[++i]);
    if (!std::strcmp(argv[i], "--quick")) quick = true;
  }
  shoal::log::setLevel(shoal::log::Level::kWarn);
  std::printf("raft_bench: 3 members in one process, LevelDB with synced writes, %d cores\n",
              static_cast<int>(std::thread::hardware_concurrency()));

  double base = shoal::bench::syncedLevelDbWritesPerSecond(seconds / 2);
  std::printf("baseline: %.0f synced LevelDB writes/s (one write per fsync)\n", base);
  for (int objects : {1, 100}) {
    double w = writesPerSecond(objects, 64, seconds);
    std::printf(
        "committed object writes/s, %3d object(s) per transaction, 64 proposers: %.0f "
        "(%.1fx the baseline)\n",
        objects, w, w / base);
  }

  // Failover with default timing.
  std::vector<double> failovers;
  for (int round = 0; round < (quick ? 2 : 5); ++round) {
    Cluster c(100ms, 10000);
    NodeId l = c.waitLeader();
    c.node(l).propose("warm=1", 5s);
    c.stop(l);
    auto t0 = Clock::now();
    for (;;) {
      NodeId l2 = c.waitLeader();
      if (l2 != 0 && c.node(l2).propose("after=1", 2s).isOk()) break;
    }
    failovers.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(failovers.begin(), failovers.end());
  std::printf(
      "failover (leader stopped -> new leader commits a write), tick 100 ms: median %.2f s, "
      "max %.2f s over %zu rounds\n",
      failovers[failovers.size() / 2], failovers.back(), failovers.size());

  // Catch-up from a 100,000-object state through InstallSnapshot.
  {
    const int objects = quick ? 20000 : 100000;
    Cluster c(100ms, 10000);
    NodeId l = c.waitLeader();
    NodeId lag = l == 3 ? 2 : 3;
    c.stop(lag);
    std::vector<std::thread> writers;
    for (int t = 0; t < 8; ++t) {
      writers.emplace_back([&, t] {
        for (int k = t; k < objects / 100; k += 8) c.node(l).propose(command(t, k, 100), 30s);
      });
    }
    for (auto& w : writers) w.join();
    auto t0 = Clock::now();
    c.start(lag);
    while (c.machine(lag).size() < c.machine(l).size()) std::this_thread::sleep_for(5ms);
    std::printf("catch-up of a restarted member to %zu objects (by snapshot): %.2f s\n",
                c.machine(l).size(), std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return 0;
}
