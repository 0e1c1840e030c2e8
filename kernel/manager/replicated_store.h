#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "kernel/common/clock.h"
#include "kernel/common/random.h"
#include "kernel/common/status.h"
#include "kernel/raft/raft_node.h"
#include "kernel/raft/raft_storage.h"
#include "kernel/raft/transport.h"
#include "kernel/store/memory_store.h"

namespace shoal::manager {

// How a store transaction travels in a Raft entry: a format byte, the proposer's wall-clock
// time (8 bytes, big-endian Unix nanoseconds: the created/updated time every replica stamps),
// then the encoded ChangeSet (kernel/store/change_set.h).
std::string encodeStoreCommand(int64_t timeNs, std::string_view encodedChanges);

// The store as Raft's state machine: committed commands are applied in log order; snapshots
// are the store's own snapshot format. A command that cannot be decoded is a refusal like any
// other (its index is consumed on every replica alike).
//
// THREAD: called on the Raft node's thread; the store is safe to read from any thread.
class StoreStateMachine final : public raft::StateMachine {
 public:
  explicit StoreStateMachine(store::MemoryStore& store) : store_(store) {}
  Status apply(raft::Index index, std::string_view command) override;
  // Commands packed into one entry: one store step at `index` (MemoryStore::applyGroup).
  std::vector<Status> applyGroup(raft::Index index,
                                 const std::vector<std::string_view>& commands) override;
  Result<std::string> snapshot() override;
  Status restore(raft::Index index, std::string_view data) override;
  // Snapshots restored since construction (at start, or sent by the leader to catch up).
  uint64_t restores() const { return restores_.load(); }

 private:
  store::MemoryStore& store_;
  std::atomic<uint64_t> restores_{0};
};

struct ReplicatedStoreOptions {
  raft::RaftNodeOptions raft;
  store::StoreLimits limits;
};

// A manager's cluster store: a MemoryStore kept by a RaftNode. Writes are transactions built
// on this manager's committed view, proposed through Raft (forwarded to the leader from a
// follower) and acknowledged once committed and applied here; their optimistic version
// checks run again at apply time, so a transaction built on a stale view is refused as a
// conflict rather than applied. Reads are either local (view(): this manager's committed
// state, possibly behind the leader) or linearizable (linearizableView(): a read-index
// barrier first, leader only).
//
// Persistence: the store's durable form is the Raft state in LevelDB — the latest snapshot
// (the store's snapshot, written at every compaction) plus the log after it. start() restores
// the snapshot and re-applies the committed log, so a manager that restarts comes back with
// exactly the state it had committed. Corrupt or foreign files make start() fail with an
// error naming the file (RaftStorage::open and load), and nothing is served.
//
// THREAD: every method is safe from any thread. OWNERSHIP: borrows the transport, random
// source and clock, which must outlive it.
class ReplicatedStore {
 public:
  ReplicatedStore(ReplicatedStoreOptions options, std::unique_ptr<raft::RaftStorage> storage,
                  raft::Transport& transport, Random& random, const Clock& clock);
  ~ReplicatedStore();
  ReplicatedStore(const ReplicatedStore&) = delete;
  ReplicatedStore& operator=(const ReplicatedStore&) = delete;

  Status start();
  void stop();

  // Runs `fn` on a transaction over this manager's committed view, then replicates the
  // changes and waits until they are applied here. Errors: `fn`'s own; the store's refusal at
  // apply (conflict, already exists, ...); kUnavailable "no quorum: ..." when this manager
  // knows no leader (it cannot reach a majority) after waiting up to 3 s (an election in
  // progress) for one; kTimeout when the write was not confirmed
  // in time (it may still commit). An empty transaction succeeds without touching Raft.
  Status update(const store::Store::TxFn& fn, std::chrono::milliseconds timeout);

  // Local read of this manager's committed state (may lag the leader).
  void view(const store::Store::ViewFn& fn) const { store_.view(fn); }
  // Linearizable read: every write acknowledged before the call is visible. Leader only
  // (kUnavailable naming the leader otherwise, or "no quorum" when there is none).
  Status linearizableView(const store::Store::ViewFn& fn, std::chrono::milliseconds timeout);

  store::MemoryStore& store() { return store_; }
  const store::MemoryStore& store() const { return store_; }
  uint64_t snapshotsRestored() const { return machine_.restores(); }
  raft::RaftNode& raft() { return *node_; }
  const raft::RaftNode& raft() const { return *node_; }

 private:
  Status explain(Status s) const;
  void awaitLeader(std::chrono::milliseconds timeout) const;
  static constexpr std::chrono::milliseconds kElectionWait{3000};

  store::MemoryStore store_;
  StoreStateMachine machine_;
  const Clock& clock_;
  std::unique_ptr<raft::RaftNode> node_;
};

}  // namespace shoal::manager
