#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "kernel/common/random.h"
#include "kernel/common/status.h"
#include "kernel/raft/raft_core.h"
#include "kernel/raft/raft_storage.h"
#include "kernel/raft/transport.h"

namespace shoal::raft {

// What Raft replicates into: the manager's store. Called only from the node's thread, in log
// order, each committed command exactly once per incarnation.
class StateMachine {
 public:
  virtual ~StateMachine() = default;
  // Apply one committed command. Must be deterministic: every member gets the same result.
  // The returned Status is the command's outcome (say, a version conflict), handed back to
  // the member that proposed it.
  virtual Status apply(Index index, std::string_view command) = 0;
  // The commands a member packed into one committed entry (proposals made close together),
  // in order; one outcome each. The default applies them one by one, all with `index`; a
  // state machine whose versions are Raft indexes overrides it to apply them as one step.
  virtual std::vector<Status> applyGroup(Index index,
                                         const std::vector<std::string_view>& commands);
  // The whole state as of the last applied index (for compaction and lagging members).
  virtual Result<std::string> snapshot() = 0;
  // Replace the whole state with a snapshot taken at `index`.
  virtual Status restore(Index index, std::string_view data) = 0;
};

struct RaftNodeOptions {
  RaftConfig raft;
  std::chrono::milliseconds tick{100};  // election timeout = electionTicks ticks (1–2 s)
  Index snapshotEvery = 10000;          // compact once this many entries are applied
  std::size_t maxInbox = 65536;         // received messages waiting; more are dropped
};

// A Raft member at work: the RaftCore driven by a thread with a real clock, persisting to
// RaftStorage before sending through the Transport, applying into the StateMachine, and
// compacting. This is what the rest of the kernel uses: propose a command and learn whether
// it committed, read linearizably, know who leads and hear when that changes, change the
// membership, hand leadership over. Proposals made on a follower are forwarded to the leader.
//
// THREAD: every public method is safe from any thread; the state machine and the handler are
// called on the node's own thread.
class RaftNode {
 public:
  RaftNode(RaftNodeOptions options, std::unique_ptr<RaftStorage> storage, Transport& transport,
           StateMachine& machine, Random& random);
  ~RaftNode();
  RaftNode(const RaftNode&) = delete;
  RaftNode& operator=(const RaftNode&) = delete;

  // Load the durable state, restore the state machine from the snapshot, start the thread and
  // the transport. Fails (and starts nothing) if the storage cannot be read.
  Status start();
  // Stop the thread and the transport; pending calls fail with kCancelled. Idempotent.
  void stop();

  // Replicate `command` and wait until this member has applied it; the result is the state
  // machine's outcome. kUnavailable when there is no leader (or no quorum: the wait ends in
  // kTimeout with a message saying so — the command may still commit later).
  Status propose(std::string command, std::chrono::milliseconds timeout);

  // A linearizable read barrier (read-index): returns once this member has applied every
  // command committed before the call. Leader only; a follower gets kUnavailable naming the
  // leader.
  Status readBarrier(std::chrono::milliseconds timeout);

  // Membership (leader only); waits until the change is applied here.
  Status changeMembership(ConfChange change, std::chrono::milliseconds timeout);
  Status transferLeadership(NodeId to, std::chrono::milliseconds timeout);

  NodeId id() const { return options_.raft.id; }
  NodeId leader() const { return leader_.load(); }
  Term term() const { return term_.load(); }
  bool isLeader() const { return leader() == id(); }
  Index appliedIndex() const { return applied_.load(); }
  std::vector<NodeId> voters() const;
  // When a message from each member last arrived (a leader hears from every live follower at
  // least once a heartbeat): how the manager tells reachable managers from unreachable ones.
  std::map<NodeId, std::chrono::steady_clock::time_point> lastHeard() const;
  // Why the node stopped by itself (a storage write failed), or ok.
  Status failure() const;

  // Called on the node's thread whenever the known leader or term changes.
  void setLeaderHandler(std::function<void(NodeId leader, Term term)> handler);

 private:
  struct Waiter {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    Status result;
    void finish(Status s);
    Status wait(std::chrono::milliseconds timeout, const std::string& what);
  };
  using Command = std::function<void(RaftCore&)>;

  void run();
  void proposeUnsent();
  void failProposal(uint64_t request, const Status& s);  // its waiter, if it still has one
  void parkDropped(const Message& m);
  void retryParked();
  // The request ids of this member's commands in an entry (none for another member's).
  std::vector<uint64_t> ownRequests(std::string_view entry) const;
  bool pending(std::string_view entry) const;  // one of them still has a waiter
  void processReady();
  void applyCommitted(const Entry& e);
  void maybeCompact();
  void post(Command command);
  void failAll(const Status& status);
  void noteLeadership();

  RaftNodeOptions options_;
  std::unique_ptr<RaftStorage> storage_;
  Transport& transport_;
  StateMachine& machine_;
  Random& random_;
  std::unique_ptr<RaftCore> core_;  // only the node's thread touches it after start()

  mutable std::mutex mu_;
  std::map<NodeId, std::chrono::steady_clock::time_point> lastHeard_;  // guarded by mu_
  std::condition_variable cv_;
  std::deque<Message> inbox_;                        // guarded by mu_
  std::deque<Command> commands_;                     // guarded by mu_
  bool stopping_ = false;                            // guarded by mu_
  Status failure_;                                   // guarded by mu_
  std::uint64_t droppedInbox_ = 0;                   // guarded by mu_
  std::function<void(NodeId, Term)> leaderHandler_;  // guarded by mu_

  // Waiters, touched only on the node's thread (registered through post()).
  std::map<uint64_t, std::shared_ptr<Waiter>> proposals_;            // request id -> waiter
  std::map<Index, std::pair<Term, std::shared_ptr<Waiter>>> confs_;  // index -> (term, waiter)
  std::map<uint64_t, std::shared_ptr<Waiter>> reads_;                // read id -> waiter
  std::vector<ReadState> readsToServe_;
  // Proposals received since the last pass of the loop: (request id, command).
  std::vector<std::pair<uint64_t, std::string>> unsent_;
  // Entries of ours another member sent back unappended (kProposeDropped), held until there
  // is a leader other than the member that dropped them, or an election timeout has passed.
  struct Parked {
    std::string entry;
    NodeId droppedBy = kNone;
    std::chrono::steady_clock::time_point at;
  };
  std::vector<Parked> parked_;
  static constexpr std::size_t kMaxGroupCommands = 4096;
  static constexpr std::size_t kMaxGroupBytes = std::size_t{1} << 20;
  std::vector<std::pair<std::shared_ptr<Waiter>, Status>> outcomes_;  // to finish after a Ready
  Term persistedTerm_ = 0;  // the term in storage (node's thread only)

  std::atomic<uint64_t> nextRequest_{1};
  std::atomic<NodeId> leader_{kNone};
  std::atomic<Term> term_{0};
  std::atomic<Index> applied_{0};
  std::vector<NodeId> voters_;  // guarded by mu_
  std::thread thread_;
};

}  // namespace shoal::raft
