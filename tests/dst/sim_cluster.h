#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "kernel/common/random.h"
#include "kernel/raft/raft_core.h"

namespace shoal::dst {

// Fault rates for one simulation run; all probabilities are per tick unless noted.
struct Faults {
  double drop = 0;       // per message
  double duplicate = 0;  // per message
  int minDelay = 1;      // ticks
  int maxDelay = 1;
  double crash = 0;       // a random live node crashes (maybe between persisting and sending)
  double restart = 0;     // a random crashed node restarts from its disk
  double partition = 0;   // a random split of the nodes into two sides
  double oneWay = 0;      // a random directed link starts dropping everything
  double heal = 0;        // every link works again
  double clientOp = 0.5;  // a client submits an operation
  int snapshotEvery = 0;  // compact once this many entries are applied (0: never)
  double transfer = 0;    // the leader hands leadership to a random member
  double readIndex = 0;   // share of reads served by read-index instead of through the log
  double pause = 0;       // a random node stalls (a GC or VM pause): no ticks, no messages
  double membership = 0;  // the leader proposes a random membership change
  int initialVoters = 0;  // members at bootstrap (0: every node); the rest join later
  int maxPause = 30;      // ticks
  // Disk faults, as shares of the crashes: a power loss also loses what was written without
  // an fsync (RaftStorage does not sync a save that only moves the commit index); a torn
  // write strikes while a Ready is being written, and the batch is lost whole (LevelDB drops
  // a torn tail of its write-ahead log, giving the state before it).
  double powerLoss = 0;
  double tornWrite = 0;

  // The profile CI and the soak use, drawn from the seed too, so seeds cover calm and stormy
  // runs alike.
  static Faults forSeed(uint64_t seed);
};

// One client operation on the replicated key-value register.
struct Op {
  uint64_t id = 0;
  bool put = false;
  std::string key;
  std::string value;          // put: the value written
  int64_t invoked = 0;        // tick of the successful propose
  int64_t completed = -1;     // tick of the acknowledgement, -1 if never acknowledged
  std::string result;         // get: the value read
  bool viaReadIndex = false;  // a read-index read: not in the log
  uint64_t prefix = 0;        // read-index read: the applied index it was served at
  raft::NodeId node = 0;      // where it was proposed
  uint64_t epoch = 0;         // that node's incarnation when proposed
};

// A whole Raft cluster in one process: simulated time (ticks), a network that drops,
// duplicates, delays, reorders and partitions, crashes that lose everything not on the
// simulated disk, and clients. Every choice comes from one seeded generator, so a run is
// exactly repeatable from its seed. Safety is checked as the run goes; `failure()` holds the
// first violation.
class SimCluster {
 public:
  SimCluster(int nodes, uint64_t seed, Faults faults);

  // Run `ticks` ticks with faults and clients.
  void run(int ticks);
  // Restart every node, heal every link, stop faults; then run until a leader commits a new
  // entry everywhere. False if that does not happen within `ticks`.
  bool settle(int ticks);
  // The end-of-run checks: every acknowledged op is in the committed log exactly once and the
  // history is linearizable. Returns false (with failure()) on a violation.
  bool checkHistory();

  const std::string& failure() const { return failure_; }
  bool failed() const { return !failure_.empty(); }
  // A digest of everything that happened (for bit-for-bit reproduction checks).
  uint64_t traceHash() const { return trace_; }
  std::size_t committedCount() const { return committed_.size(); }
  std::size_t ackedCount() const;
  uint64_t leaderChanges() const { return leaderChanges_; }
  uint64_t snapshotsInstalled() const { return snapshotsInstalled_; }
  uint64_t membershipChanges() const { return membershipChanges_; }
  // Crashes that really lost something on disk: a commit index written without an fsync, or
  // a Ready whose batch was torn.
  uint64_t diskLosses() const { return diskLosses_; }

  // Direct control, for targeted tests.
  void tick();
  raft::NodeId leader() const;  // the live leader with the highest term, or 0
  raft::RaftCore* core(raft::NodeId id);
  // `powerLoss`: what was written without an fsync is lost too.
  void crash(raft::NodeId id, bool powerLoss = false);
  void restart(raft::NodeId id);
  void isolate(raft::NodeId id);
  void healAll();
  Result<raft::Index> propose(raft::NodeId id, const std::string& data);
  // Entries node `id` has applied, in order.
  const std::vector<raft::Entry>& applied(raft::NodeId id) const { return nodes_.at(id).applied; }
  // Read-index reads node `id` has had confirmed since it last booted.
  const std::vector<raft::ReadState>& confirmedReads(raft::NodeId id) const {
    return nodes_.at(id).confirmed;
  }

 private:
  struct Node {
    raft::NodeId id = 0;
    bool up = true;
    uint64_t epoch = 0;
    std::unique_ptr<raft::RaftCore> core;
    // The simulated disk: what survives a crash.
    raft::HardState hardState;
    raft::HardState syncedHardState;  // as of the last synced write
    std::optional<raft::Snapshot> snapshot;
    std::vector<raft::Entry> disk;  // the entries after the snapshot
    // The state machine (rebuilt from the log after a restart).
    std::map<std::string, std::string> kv;
    std::vector<raft::Entry> applied;
    raft::Role lastRole = raft::Role::kFollower;
    std::vector<raft::ReadState> toServe;    // confirmed read-index reads waiting for apply
    int64_t pausedUntil = 0;                 // stalled until this tick
    std::vector<raft::ReadState> confirmed;  // every read-index read confirmed, for tests
  };
  struct InFlight {
    int64_t deliverAt;
    uint64_t order;  // random tie-break: reordering
    raft::Message message;
  };

  void boot(Node& n);
  // How a crash meets the Ready being processed, if it does.
  enum class CrashPoint { kNone, kAfterPersist, kDuringPersist };
  void process(Node& n, CrashPoint crash = CrashPoint::kNone);
  void deliver();
  void injectFaults();
  void clientStep();
  void serveReads(Node& n);
  void applyEntry(Node& n, const raft::Entry& e);
  void installSnapshot(Node& n, const raft::Snapshot& s);
  void persistEntries(Node& n, const std::vector<raft::Entry>& entries);
  void checkLeaders();
  void checkLogMatching();
  void fail(const std::string& what);
  void mix(uint64_t v) { trace_ = (trace_ ^ v) * 0x100000001b3ULL; }

  Faults faults_;
  SeededRandom random_;
  raft::RaftConfig base_;
  std::map<raft::NodeId, Node> nodes_;
  std::vector<InFlight> network_;
  std::set<std::pair<raft::NodeId, raft::NodeId>> blocked_;  // directed links that drop
  int64_t now_ = 0;
  uint64_t nextOrder_ = 0;
  uint64_t nextOp_ = 1;
  std::map<uint64_t, Op> ops_;
  std::vector<raft::Entry> committed_;  // the cluster's committed log, as applied
  // For each committed entry, an upper bound on the term in which it was committed: the term
  // of the first node to apply it, which learned the commit from a leader of that term or
  // earlier.
  std::vector<raft::Term> commitTerm_;
  std::map<raft::Term, raft::NodeId> leaders_;  // term -> the one leader of that term
  uint64_t leaderChanges_ = 0;
  uint64_t snapshotsInstalled_ = 0;
  uint64_t membershipChanges_ = 0;
  uint64_t diskLosses_ = 0;
  std::set<raft::NodeId> removed_;  // Raft ids are never reused
  std::vector<raft::NodeId> bootstrap_;
  std::string failure_;
  uint64_t trace_ = 0xcbf29ce484222325ULL;
};

}  // namespace shoal::dst
