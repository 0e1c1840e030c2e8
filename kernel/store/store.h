#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "kernel/common/status.h"
#include "kernel/store/change_set.h"
#include "kernel/store/read_view.h"
#include "kernel/store/tx.h"
#include "kernel/store/watch.h"

namespace shoal::store {

// The cluster object store as the rest of the manager sees it: a deterministic state machine
// fed by committed Raft entries (apply), read through consistent views, written by building
// ChangeSets (prepare) that go through Raft, and watched. MemoryStore is the implementation;
// tests may substitute their own.
class Store {
 public:
  using ViewFn = std::function<void(const ReadView&)>;
  using TxFn = std::function<Status(Tx&)>;

  virtual ~Store() = default;

  // The Raft index of the last applied entry (0 for an empty store).
  virtual uint64_t version() const = 0;
  // Runs `fn` on a consistent view of the committed state.
  virtual void view(const ViewFn& fn) const = 0;
  // Runs `fn` on a transaction over a consistent view and returns its changes, to be
  // proposed through Raft; `fn`'s error (or the first refused write it returns) comes back
  // instead, and nothing is produced.
  virtual Result<ChangeSet> prepare(const TxFn& fn) const = 0;
  // Applies a committed changeset atomically at Raft index `index`, stamping versions with
  // `index` and times with `timeNs` (taken from the entry, never from a local clock).
  virtual Status apply(uint64_t index, int64_t timeNs, const ChangeSet& changes) = 0;
  // Changes of `kinds` with a version above `fromVersion` (default: the current version).
  virtual Result<std::unique_ptr<Watch>> watch(KindSet kinds,
                                               std::optional<uint64_t> fromVersion) = 0;
  // Runs `fn` on a view and returns a watch that starts exactly after that view.
  virtual Result<std::unique_ptr<Watch>> viewAndWatch(KindSet kinds, const ViewFn& fn) = 0;
  // The whole store, encoded; and replacing it.
  virtual std::string snapshot() const = 0;
  virtual Status restore(std::string_view bytes) = 0;
  // A hash of the canonical encoding of every object: equal digests, equal objects.
  virtual std::string digest() const = 0;
};

}  // namespace shoal::store
