#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kernel/store/rw_lock.h"
#include "kernel/store/store.h"
#include "kernel/store/store_limits.h"
#include "kernel/store/store_state.h"
#include "kernel/store/watch_hub.h"

namespace shoal::store {

// The in-memory store: every object, its indexes, and the watch history. See README.md.
//
// Determinism: apply() depends only on the current state and its arguments, so replicas fed
// the same committed entries hold identical objects (digest() compares them). A changeset that
// fails any check (a stale version, an id or name taken, a bad object, too large) is refused
// as a whole and changes no object; its index is consumed all the same (version() moves to
// it), as it is on every replica.
//
// THREAD: every method is safe from any thread. mu_ is a writer-preferring reader-writer lock
// (readers cannot starve apply()): view(),
// prepare(), snapshot() and digest() share it; apply() and restore() hold it exclusively
// (briefly: they never wait for a watcher). Callbacks run with the shared lock held: they must
// not call back into the store, and should be quick.
class MemoryStore final : public Store {
 public:
  explicit MemoryStore(StoreLimits limits = {});
  ~MemoryStore() override;  // ends every watch (cancelled)
  MemoryStore(const MemoryStore&) = delete;
  MemoryStore& operator=(const MemoryStore&) = delete;

  uint64_t version() const override;
  void view(const ViewFn& fn) const override;
  Result<ChangeSet> prepare(const TxFn& fn) const override;

  // Errors: failed precondition when `index` is not above version() (nothing changes);
  // otherwise the changeset's refusal — invalid argument, not found, already exists,
  // conflict ("update of service abc refused: it is at version 12, the change was based on
  // version 10"), resource exhausted (too large) — with the index consumed.
  Status apply(uint64_t index, int64_t timeNs, const ChangeSet& changes) override;
  // The same, moving the objects out of `changes` instead of copying them.
  Status apply(uint64_t index, int64_t timeNs, ChangeSet&& changes);
  // decodeChangeSet + apply: how a Raft entry's payload is applied. Undecodable bytes are a
  // refusal like any other (the index is consumed).
  Status applyEncoded(uint64_t index, int64_t timeNs, std::string_view bytes);

  // Several changesets committed in one Raft entry (proposals the Raft member packed
  // together): applied in order under one lock, each checked against the state the ones
  // before it left and each with its own outcome, all stamped with version `index` and
  // published to watches as one step. An undecodable one is refused alone.
  struct EncodedChange {
    int64_t timeNs = 0;
    std::string_view bytes;
  };
  std::vector<Status> applyGroup(uint64_t index, const std::vector<EncodedChange>& group);

  Result<std::unique_ptr<Watch>> watch(KindSet kinds,
                                       std::optional<uint64_t> fromVersion = std::nullopt) override;
  Result<std::unique_ptr<Watch>> viewAndWatch(KindSet kinds, const ViewFn& fn) override;

  // "SHSN", u8 format, varint version, varint count, the objects in (kind, id) order
  // (codec.h), CRC-32. Encoded outside the lock (objects are immutable and shared).
  std::string snapshot() const override;
  // Replaces every object and the version. Bad bytes (corrupt, truncated, an invalid object,
  // a duplicate id or name) are an invalid-argument error and leave the store untouched.
  // Every watch is ended (failed precondition): its history no longer applies.
  Status restore(std::string_view bytes) override;
  // Hex SHA-256 over the canonical encoding of every object in (kind, id) order. The version
  // is not part of it (compare version() for that).
  std::string digest() const override;

  std::size_t size() const;  // objects held
  const StoreLimits& limits() const { return limits_; }

 private:
  // `owned` is `&changes` when its objects may be moved out, else null.
  Status applyLocked(uint64_t index, int64_t timeNs, const ChangeSet& changes, ChangeSet* owned);
  // The checks and the changes of one changeset, its events appended to `events`; leaves the
  // version and the watches to the caller. Changes nothing when the changeset is refused.
  Status applyOps(uint64_t index, int64_t timeNs, const ChangeSet& changes, ChangeSet* owned,
                  std::vector<Event>& events);
  Status notApplied(uint64_t index) const;
  Status check(const ChangeSet& changes, std::vector<ObjectPtr>& current) const;
  Result<std::unique_ptr<Watch>> subscribe(KindSet kinds, uint64_t fromVersion) const;

  const StoreLimits limits_;
  mutable RwLock mu_;              // writer-preferring: views never starve apply()
  StoreState state_;               // guarded by mu_
  std::shared_ptr<WatchHub> hub_;  // internally synchronised; published to under mu_ (write)
};

}  // namespace shoal::store
