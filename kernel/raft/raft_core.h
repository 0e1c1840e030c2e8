#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "kernel/common/random.h"
#include "kernel/common/status.h"
#include "kernel/raft/raft_types.h"

namespace shoal::raft {

struct RaftConfig {
  NodeId id = kNone;
  // The bootstrap membership (used until a snapshot or a committed change says otherwise). A
  // node joining an existing cluster passes an empty list and learns it from the leader.
  std::vector<NodeId> voters;
  int electionTicks = 10;   // a follower campaigns after [electionTicks, 2*electionTicks)
  int heartbeatTicks = 1;   // a leader sends heartbeats every heartbeatTicks
  bool preVote = true;      // campaign only after a pre-vote majority (no term inflation)
  bool checkQuorum = true;  // a leader without a quorum of recent contact steps down; a
                            // follower with a live leader ignores vote requests (lease)
  std::size_t maxEntriesPerMessage = 256;
  std::size_t maxBytesPerMessage = 1 << 20;
  std::size_t maxInflight = 64;  // append messages in flight per follower (pipelining)
};

// What a node restarts from: its durable hard state and log, and how far its state machine
// had applied (entries up to `applied` are not handed out again).
struct Restored {
  HardState hardState;
  std::optional<Snapshot> snapshot;  // the latest snapshot, if any
  std::vector<Entry> entries;        // contiguous, starting right after the snapshot (or at 1)
  Index applied = 0;                 // the state machine holds every entry up to here
};

// The Raft consensus core, without I/O (the etcd/raft shape): messages and ticks go in,
// Ready (state to persist, messages to send, entries to apply) comes out. Time is ticks.
// Randomness (election timeouts) comes from the given Random, so a simulation with a seeded
// generator is exactly repeatable.
//
// THREAD: not thread-safe; the owner serialises every call.
class RaftCore {
 public:
  RaftCore(RaftConfig config, Random& random, Restored restored = {});

  // Advance logical time by one tick (elections, heartbeats, check-quorum).
  void tick();
  // Feed one message from the network. Messages for another node are ignored.
  void step(const Message& message);
  // Append a command to the log (leader only). kUnavailable "not the leader" otherwise.
  Result<Index> propose(std::string data);
  // Propose on the leader, or forward to the leader this node knows of (kPropose). A
  // forwarded proposal is fire-and-forget: the caller learns the outcome when (if) the entry
  // is applied — embed a request id in `data` to recognise it. kUnavailable with no leader.
  Status proposeOrForward(std::string data);

  // Start an election now (tests; leadership transfer builds on it).
  void campaign();

  // Propose a membership change (leader only). Refused while another change is uncommitted,
  // for a change that makes no sense (adding a voter twice, removing a non-member or the last
  // voter), or during a leadership transfer. Promote a learner with kAddVoter.
  Result<Index> proposeConfChange(const ConfChange& change);
  const std::vector<NodeId>& voters() const { return voters_; }
  const std::vector<NodeId>& learners() const { return learners_; }
  bool isVoter(NodeId id) const;

  // Hand leadership to `to` (a voter): bring it up to date, then tell it to campaign at once.
  // Proposals are refused while the transfer runs; it is abandoned after an election timeout.
  Status transferLeadership(NodeId to);
  NodeId transferee() const { return transferee_; }

  // Ask for a linearizable read (Raft §8, read-index): the leader records its commit index and
  // confirms with a quorum that it is still the leader; Ready::reads then carries {id, index}.
  // kUnavailable on a follower, or before the leader has committed an entry of its term.
  Status readIndex(uint64_t id);

  // Replace the log up to `upTo` (an applied index) with a snapshot of the state machine taken
  // at that index; returns it for the owner to persist. Followers too far behind get it
  // through InstallSnapshot. kInvalidArgument if upTo is not applied or already compacted.
  Result<Snapshot> compact(Index upTo, std::string data);
  // Entries applied since the last snapshot (the owner compacts when this passes a threshold).
  Index appliedSinceSnapshot() const { return applied_ - snapshot_.index; }
  const Snapshot& snapshot() const { return snapshot_; }
  Index appliedIndex() const { return applied_; }

  bool hasReady() const;
  Ready ready();
  // The Ready returned by the last ready() has been persisted, sent and applied.
  void advance();

  NodeId id() const { return config_.id; }
  Role role() const { return role_; }
  Term term() const { return term_; }
  NodeId leader() const { return lead_; }
  Index commitIndex() const { return commit_; }
  Index lastIndex() const { return snapshot_.index + log_.size(); }
  // The first index still in the log (entries before it are in the snapshot).
  Index firstIndex() const { return snapshot_.index + 1; }
  // The term of the entry at `index`: the snapshot's term at its index; 0 for index 0, for an
  // index past the end, or one compacted away.
  Term termAt(Index index) const;
  // The entries after the snapshot.
  const std::vector<Entry>& log() const { return log_; }

 private:
  enum class ProgressState : uint8_t { kProbe, kReplicate, kSnapshot };
  struct Progress {
    Index match = 0;
    Index next = 1;
    ProgressState state = ProgressState::kProbe;
    bool probeSent = false;      // kProbe: one append outstanding, wait for its answer
    std::deque<Index> inflight;  // kReplicate: last index of each append in flight
    bool recentActive = false;   // heard from since the last check-quorum round
    Index pendingSnapshot = 0;   // kSnapshot: the index of the snapshot sent
    int snapshotTicks = 0;       // kSnapshot: ticks waited; a lost snapshot is resent
  };

  void becomeFollower(Term term, NodeId lead);
  void becomePreCandidate();
  void becomeCandidate();
  void becomeLeader();
  void resetTimers();
  bool pastElectionTimeout() const { return electionElapsed_ >= randomizedTimeout_; }
  bool inLease() const;

  void send(Message m);
  void broadcastAppend();
  void broadcastHeartbeat();
  enum class SendMode : uint8_t {
    kEntries,  // only if there are entries to send
    kCommit,   // an empty append is fine (it carries the commit index), unless appends are
               // in flight (they carry it, and an empty one would race ahead of them)
    kAlways,   // even empty: probes for a gap left by a lost append
  };
  bool sendAppend(NodeId to, SendMode mode);
  void requestVotes(bool pre);
  int quorum() const { return static_cast<int>(voters_.size() / 2 + 1); }
  std::vector<NodeId> members() const;  // voters and learners
  void commitTo(Index index);           // raise commit_, applying membership changes
  void applyConfChange(const ConfChange& cc);
  void addProgress(NodeId id);

  void stepLeader(const Message& m);
  void stepCandidate(const Message& m);
  void stepFollower(const Message& m);
  void handleVoteRequest(const Message& m);
  void handleAppend(const Message& m);
  void handleHeartbeat(const Message& m);
  void handleAppendResp(const Message& m);
  void handleSnapshot(const Message& m);
  void handleHeartbeatResp(const Message& m);
  void handlePropose(const Message& m);
  void sendTimeoutNow(NodeId to);
  void abortTransfer() {
    transferee_ = kNone;
    transferElapsed_ = 0;
  }
  void sendSnapshot(NodeId to);
  const Entry& entryAt(Index index) const { return log_[index - snapshot_.index - 1]; }
  bool maybeCommit();
  bool logUpToDate(Term lastTerm, Index lastIdx) const;
  void appendAsLeader(Entry e);
  // Follower side: append after (prevIndex, prevTerm), truncating a conflicting suffix.
  // Returns the last index now known to match the leader, or nullopt on mismatch.
  std::optional<Index> tryAppend(Index prevIndex, Term prevTerm, const std::vector<Entry>& entries);

  RaftConfig config_;
  Random& random_;

  Term term_ = 0;
  NodeId vote_ = kNone;
  NodeId lead_ = kNone;
  Role role_ = Role::kFollower;
  std::vector<NodeId> voters_;  // the membership in effect (committed changes applied)
  std::vector<NodeId> learners_;
  Index confApplied_ = 0;         // membership changes are applied up to this index
  Index pendingConfIndex_ = 0;    // the last membership change appended (leader)
  bool stepDownPending_ = false;  // the leader's own removal just committed
  Snapshot snapshot_;             // index/term 0 until the first compaction or InstallSnapshot
  std::vector<Entry> log_;        // log_[i].index == snapshot_.index + i + 1
  bool snapshotToReady_ = false;
  NodeId transferee_ = kNone;      // leadership transfer in progress to this node
  bool campaignTransfer_ = false;  // this campaign was started by kTimeoutNow
  int transferElapsed_ = 0;
  // Read-index rounds not yet confirmed: round -> (reads, acks). Rounds confirm in order.
  struct ReadRound {
    std::vector<ReadState> reads;
    std::vector<NodeId> acks;
  };
  std::map<uint64_t, ReadRound> readRounds_;
  uint64_t nextReadRound_ = 1;
  std::vector<ReadState> readyReads_;  // a received snapshot the owner has not been handed yet
  Index commit_ = 0;
  Index applied_ = 0;  // last index handed out in Ready::committed
  Index stable_ = 0;   // entries up to here are on stable storage

  int electionElapsed_ = 0;
  int heartbeatElapsed_ = 0;
  int randomizedTimeout_ = 0;
  std::map<NodeId, bool> votes_;  // this campaign's answers
  std::map<NodeId, Progress> progress_;

  bool pendingBroadcast_ = false;  // proposals wait for ready() to go out together
  HardState persisted_;            // what the last advance() knows to be durable
  std::vector<Message> outbox_;
  // The bounds of the Ready handed out and not yet advanced.
  Index readyStable_ = 0;
  Index readyApplied_ = 0;
  HardState readyHardState_;
};

}  // namespace shoal::raft
