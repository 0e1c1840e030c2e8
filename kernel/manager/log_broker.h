#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "kernel/common/random.h"
#include "kernel/common/status.h"

namespace shoal::manager {

// The leader's log broker (kernel/manager/README.md, "Logs"), as SwarmKit's: `service logs`
// subscribes to the tasks it names; the dispatcher hands each node the subscriptions that
// concern it in its agent's next assignments poll; agents read the logs from their runtime and
// publish the records back; the client reads them from the subscription as they arrive.
//
// A subscription without `follow` is done once every node it names has published its last
// record, or, for a node that goes quiet (down, partitioned), kNodeSilence after it was last
// heard from (or after the subscription began, if it never was). One with
// `follow` lasts until the client cancels it or stops reading for kReaderIdle; either way the
// nodes are told in their next poll and stop streaming. Records wait in memory, at most
// kMaxBuffered per subscription (the oldest go first: a reader that falls that far behind
// loses lines, and is told how many).
// THREAD: every method may be called from any thread.
class LogBroker {
 public:
  static constexpr std::chrono::seconds kNodeSilence{15};
  static constexpr std::chrono::seconds kReaderIdle{30};
  static constexpr std::size_t kMaxBuffered = 100'000;

  struct Options {
    bool follow = false;
    int64_t tail = -1;  // -1: all
    int64_t sinceNs = 0;
    bool timestamps = false;
  };
  struct Record {
    std::string taskId, stream, line;
    int64_t timestampNs = 0;
  };
  struct Batch {
    std::vector<Record> records;
    uint64_t next = 0;     // read from here next time
    uint64_t dropped = 0;  // records lost before `after` could see them
    bool done = false;
    std::vector<std::string> errors;  // nodes that failed or never answered
  };

  // Called with a node id when that node has something new to be told (its poll wakes).
  using Wake = std::function<void(const std::string& nodeId)>;
  LogBroker(Random& random, Wake wake);

  // A new subscription to the tasks each node runs; returns its id. A followed one of a
  // service (`serviceId` not "") also takes the service's tasks that start later (taskStarted),
  // as Docker's `service logs -f` follows replacements and scale-ups.
  std::string subscribe(const std::map<std::string, std::vector<std::string>>& tasksByNode,
                        const Options& options, const std::string& serviceId = "");
  // A task of `serviceId` started on `nodeId` (the dispatcher saw it reach RUNNING, or end
  // after running): every followed subscription of that service asks that node for its logs
  // (again, if the node had it asked already: it may not have had the task then).
  void taskStarted(const std::string& serviceId, const std::string& nodeId,
                   const std::string& taskId);
  // Records from `after` on, waiting up to `wait` for some; notFound for an unknown (or
  // expired) subscription.
  Result<Batch> read(const std::string& id, uint64_t after, std::chrono::milliseconds wait);
  void cancel(const std::string& id);

  // Agent side. The JSON members to add to a node's assignments reply (leading comma
  // included): `,"logs":[{"sub","seq","tasks","options"}],"logs_cancelled":[ids]`, or "" when
  // there is nothing new for it. Each request and cancellation is handed out once; `seq`
  // counts the requests of a subscription handed to the node (1, 2, ...).
  std::string takeFor(const std::string& nodeId);
  bool hasNewFor(const std::string& nodeId);
  // A node's publish: {"sub", "seq", "records": [{"task", "stream", "ts", "line"}], "done":
  // bool, "error": "..."}, `seq` the last request its job took in. A "done" from a job that had
  // not taken in the latest request (its tasks ended as a followed service's new one was
  // handed out: the node streams that one in a new job) does not finish the node's part.
  // Answers {"cancelled": bool} (true: stop sending for this subscription).
  Result<std::string> publish(const std::string& nodeId, const std::string& body);

  // Ends the subscriptions nobody reads any more (the dispatcher calls it every second, so a
  // reader that vanished without cancelling does not keep nodes streaming).
  void expire();
  // Wakes every waiting reader (the dispatcher is stopping).
  void shutdown();

 private:
  using Clock = std::chrono::steady_clock;
  struct NodePart {
    std::vector<std::string> tasks;
    std::vector<std::string> added;  // tasks that joined after it was delivered, not yet sent
    bool delivered = false;          // handed to the node's agent
    uint64_t handed = 0;             // requests handed to the node (the latest one's "seq")
    bool done = false;               // the node said it has sent everything
    bool cancelTold = false;         // the node was told the subscription ended
    std::string error;
    Clock::time_point lastHeard;  // handed out, or its last publish
  };
  struct Sub {
    Options options;
    std::string serviceId;  // followed service subscriptions only
    std::map<std::string, NodePart> nodes;
    std::deque<Record> records;  // records[i] is number base + i
    uint64_t base = 0;
    bool cancelled = false;
    Clock::time_point created, lastRead;
  };

  bool doneLocked(Sub& s, Clock::time_point now);
  // Ends subscriptions nobody reads; `wake` gets the nodes to tell (woken without mu_ held:
  // the dispatcher's lock is taken before this one).
  void expireLocked(Clock::time_point now, std::vector<std::string>& wake);

  Random& random_;
  Wake wake_;
  std::mutex mu_;
  std::condition_variable cv_;       // records arrived, a node finished, or shutdown
  std::map<std::string, Sub> subs_;  // guarded by mu_
  bool shutdown_ = false;            // guarded by mu_
};

}  // namespace shoal::manager
