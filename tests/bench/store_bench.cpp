// store_bench: writes/s through the store's replicated write path, for 1- and 100-object
// transactions. Each write goes the whole way a committed Raft entry does on the leader:
// prepare (a Tx over a read view) -> encodeChangeSet -> decodeChangeSet -> apply; the
// "follower" figure is decode + apply alone. Also: the JSON checker against Poco's parser,
// and snapshot / restore / digest of the resulting store.
//
// Usage: store_bench [writes per scenario, default 200000]
#include <Poco/JSON/Handler.h>
#include <Poco/JSON/Parser.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "kernel/common/random.h"
#include "kernel/store/json_text.h"
#include "kernel/store/memory_store.h"

using namespace shoal::store;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kTaskSpec =
    R"({"ContainerSpec":{"Image":"registry.local/web:1.2.3@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","Command":["/bin/server","--port","8080"],"Env":["A=1","B=two"]},"RestartPolicy":{"Condition":"any","Delay":5000000000},"Resources":{"Limits":{"NanoCPUs":500000000,"MemoryBytes":268435456}},"Networks":[{"Target":"net1"}]})";
const std::string kTaskStatus =
    R"({"State":"running","Message":"started","Timestamp":1700000000000000000,"ContainerStatus":{"ContainerID":"c0ffee","PID":4242}})";

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// CPU seconds used so far by this thread or the whole process. Throughput per CPU-second is
// what a loaded 2-core machine cannot distort (the figures also give wall-clock rates).
double cpuSeconds(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Random 25-character ids, like Swarm's (and like the ids the manager will make).
const std::string& taskId(uint64_t n) {
  static std::vector<std::string> ids;
  static shoal::SeededRandom random(42);
  while (ids.size() <= n) ids.push_back(shoal::newId(random));
  return ids[n];
}

Object makeTask(uint64_t n) {
  Object t;
  t.kind = Kind::kTask;
  t.id = taskId(n);
  t.name = "web." + std::to_string(n % 1000 + 1);
  t.labels = {{"com.example.team", "frontend"}, {"shoal.stack", "shop"}};
  t.spec = kTaskSpec;
  t.status = kTaskStatus;
  t.serviceId = "service" + std::to_string(n % 50);
  t.nodeId = "node" + std::to_string(n % 20);
  t.slot = n % 1000 + 1;
  t.desiredState = TaskState::kRunning;
  return t;
}

struct Figures {
  double leader = 0;    // writes per CPU-second: prepare + encode + decode + apply
  double follower = 0;  // writes per CPU-second: decode + apply
  double process = 0;   // writes per CPU-second of the whole process (watcher threads too)
  double wall = 0;      // writes per wall-clock second, leader and follower together
  double bytesPerWrite = 0;
};

// Creates `total` tasks in transactions of `perTx`, then updates each once the same way.
void runScenario(std::size_t total, std::size_t perTx, Figures& create, Figures& update,
                 int watchers) {
  MemoryStore leader;
  MemoryStore follower;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> seen{0};
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<Watch>> watches;
  for (int i = 0; i < watchers; ++i) {
    auto w = leader.watch(KindSet{Kind::kTask});
    if (!w) {
      std::fprintf(stderr, "watch: %s\n", w.status().toString().c_str());
      std::exit(1);
    }
    watches.push_back(std::move(*w));
  }
  for (auto& w : watches) {
    threads.emplace_back([&, wp = w.get()] {
      while (!stop) {
        auto b = wp->nextBatch(std::chrono::milliseconds(50));
        if (b) {
          seen += b->events.size();
        } else if (b.status().code() != shoal::Status::Code::kTimeout) {
          std::fprintf(stderr, "watch ended: %s\n", b.status().toString().c_str());
          return;
        }
      }
    });
  }

  uint64_t index = 0;
  std::string buf;
  auto pass = [&](bool updating, Figures& f) {
    double followerSecs = 0;
    std::size_t bytes = 0;
    auto t0 = Clock::now();
    double thread0 = cpuSeconds(CLOCK_THREAD_CPUTIME_ID);
    double process0 = cpuSeconds(CLOCK_PROCESS_CPUTIME_ID);
    for (std::size_t done = 0; done < total; done += perTx) {
      auto cs = leader.prepare([&](Tx& tx) {
        for (std::size_t i = done; i < done + perTx && i < total; ++i) {
          if (!updating) {
            if (auto s = tx.create(makeTask(i)); !s) return s;
          } else {
            ObjectPtr cur = tx.get(Kind::kTask, taskId(i));
            Object next = *cur;
            next.desiredState = TaskState::kShutdown;
            next.status = kTaskStatus;
            if (auto s = tx.update(std::move(next)); !s) return s;
          }
        }
        return shoal::Status::ok();
      });
      if (!cs) {
        std::fprintf(stderr, "prepare: %s\n", cs.status().toString().c_str());
        std::exit(1);
      }
      buf.clear();
      encodeChangeSet(*cs, buf);
      bytes += buf.size();
      ++index;
      double f0 = cpuSeconds(CLOCK_THREAD_CPUTIME_ID);
      shoal::Status fs = follower.applyEncoded(index, 1700000000000000000 + index, buf);
      followerSecs += cpuSeconds(CLOCK_THREAD_CPUTIME_ID) - f0;
      shoal::Status ls = leader.applyEncoded(index, 1700000000000000000 + index, buf);
      if (!ls || !fs) {
        std::fprintf(stderr, "apply: %s / %s\n", ls.toString().c_str(), fs.toString().c_str());
        std::exit(1);
      }
    }
    const double n = static_cast<double>(total);
    double thread = cpuSeconds(CLOCK_THREAD_CPUTIME_ID) - thread0;
    // The leader's figure excludes the follower's work done in the same loop.
    f.leader = n / (thread - followerSecs);
    f.follower = n / followerSecs;
    f.process = n / (cpuSeconds(CLOCK_PROCESS_CPUTIME_ID) - process0);
    f.wall = n / seconds(t0, Clock::now());
    f.bytesPerWrite = static_cast<double>(bytes) / static_cast<double>(total);
  };
  pass(false, create);
  pass(true, update);
  // Let the watchers drain what is left before stopping them.
  const uint64_t expected = 2 * total * static_cast<uint64_t>(watchers);
  auto deadline = Clock::now() + std::chrono::seconds(30);
  while (seen.load() < expected && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop = true;
  for (auto& t : threads) t.join();
  if (leader.digest() != follower.digest()) {
    std::fprintf(stderr, "leader and follower differ!\n");
    std::exit(1);
  }
  if (seen.load() != expected) {
    std::fprintf(stderr, "watchers saw %llu events, expected %llu\n",
                 static_cast<unsigned long long>(seen.load()),
                 static_cast<unsigned long long>(expected));
    std::exit(1);
  }
}

struct NullHandler : Poco::JSON::Handler {
  void reset() override {}
  void startObject() override {}
  void endObject() override {}
  void startArray() override {}
  void endArray() override {}
  void key(const std::string&) override {}
  void null() override {}
  void value(int) override {}
  void value(unsigned) override {}
  void value(Poco::Int64) override {}
  void value(Poco::UInt64) override {}
  void value(const std::string&) override {}
  void value(double) override {}
  void value(bool) override {}
};

void jsonComparison() {
  const int n = 100000;
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    if (!checkJsonObject(kTaskSpec)) std::exit(1);
  }
  auto t1 = Clock::now();
  Poco::JSON::Handler::Ptr handler = new NullHandler;
  Poco::JSON::Parser parser(handler);
  for (int i = 0; i < n; ++i) {
    parser.reset();
    parser.parse(kTaskSpec);
  }
  auto t2 = Clock::now();
  Poco::JSON::Parser dom;
  for (int i = 0; i < n; ++i) {
    dom.reset();
    dom.parse(kTaskSpec);
  }
  auto t3 = Clock::now();
  std::printf(
      "json check of a %zu-byte spec: store scanner %.2f us, Poco parser (no-op handler) "
      "%.2f us, Poco parser (DOM) %.2f us\n",
      kTaskSpec.size(), seconds(t0, t1) * 1e6 / n, seconds(t1, t2) * 1e6 / n,
      seconds(t2, t3) * 1e6 / n);
}

void snapshotFigures(std::size_t total) {
  MemoryStore store;
  uint64_t index = 0;
  for (std::size_t done = 0; done < total; done += 1000) {
    ChangeSet cs;
    for (std::size_t i = done; i < done + 1000 && i < total; ++i) {
      cs.ops.push_back(Op{OpType::kCreate, 0, makeTask(i)});
    }
    if (auto s = store.apply(++index, 1, std::move(cs)); !s) std::exit(1);
  }
  auto t0 = Clock::now();
  std::string snap = store.snapshot();
  auto t1 = Clock::now();
  MemoryStore other;
  if (auto s = other.restore(snap); !s) std::exit(1);
  auto t2 = Clock::now();
  std::string d = store.digest();
  auto t3 = Clock::now();
  std::printf("%zu tasks: snapshot %.1f MiB in %.0f ms, restore %.0f ms, digest %.0f ms\n", total,
              static_cast<double>(snap.size()) / (1 << 20), seconds(t0, t1) * 1e3,
              seconds(t1, t2) * 1e3, seconds(t2, t3) * 1e3);
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t total = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 200000;
  std::printf("store_bench: %zu task writes per figure (task spec %zu B, status %zu B)\n", total,
              kTaskSpec.size(), kTaskStatus.size());
  for (int watchers : {0, 2}) {
    for (std::size_t perTx : {std::size_t(1), std::size_t(100)}) {
      Figures create, update;
      runScenario(total, perTx, create, update, watchers);
      for (const auto& [what, f] : {std::pair<const char*, Figures&>{"create", create},
                                    std::pair<const char*, Figures&>{"update", update}}) {
        std::printf(
            "%3zu-object tx, %d watchers, %s: leader %7.0f, follower %7.0f writes/CPU-s; "
            "whole process %7.0f writes/CPU-s; wall %7.0f writes/s; %.0f B/write\n",
            perTx, watchers, what, f.leader, f.follower, f.process, f.wall, f.bytesPerWrite);
      }
    }
  }
  jsonComparison();
  snapshotFigures(total);
  return 0;
}
