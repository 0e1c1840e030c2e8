#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kernel/common/status.h"
#include "kernel/store/change_set.h"
#include "kernel/store/read_view.h"
#include "kernel/store/store_limits.h"
#include "kernel/store/store_state.h"

namespace shoal::store {

// A transaction being built: reads see the base view plus the transaction's own writes
// (read-your-writes, indexes included); writes are checked as they are made (the object's
// form, id and name uniqueness, the version the caller read, the size bounds) and collected
// into a ChangeSet. Nothing reaches the store until the ChangeSet is applied, where every
// check is made again against the state at that Raft index (optimistic concurrency).
//
// A failed write changes nothing in the transaction. Objects created in the transaction read
// back with version 0 and zero times; updated ones keep the version they were read at (so
// a second update of the same object passes the same version again).
//
// OWNERSHIP: borrows the base view, which must outlive the Tx (MemoryStore::prepare holds its
// read lock for the Tx's whole life). THREAD: one thread.
class Tx final : public ReadView {
 public:
  Tx(const ReadView& base, const StoreLimits& limits);

  uint64_t version() const override { return base_.version(); }
  ObjectPtr get(Kind kind, std::string_view id) const override;
  std::vector<ObjectPtr> find(const Query& query) const override;

  // A new object (its version and times are ignored). Errors: invalid argument (bad object),
  // already exists (id or name taken), resource exhausted (transaction too large).
  Status create(Object object);
  // Replaces an object; `object.version` must be the version it was read at. Errors: as
  // create, plus not found and conflict (the object changed since it was read).
  Status update(Object object);
  // Deletes an object; `expectedVersion` 0 means "the version this transaction sees".
  Status remove(Kind kind, std::string_view id, uint64_t expectedVersion = 0);
  // Makes the ChangeSet fail at apply() if this object has changed since it was read (a
  // read guard; a write to the same object already carries the check).
  Status require(Kind kind, std::string_view id);

  // Objects touched so far (each counts once) and their encoded size.
  std::size_t size() const { return live_; }
  std::size_t encodedBytes() const { return bytes_; }
  // The operations, in the order each object was first touched.
  ChangeSet changes() const;

 private:
  struct Entry {
    Kind kind;
    std::string id;
    OpType type;
    uint64_t baseVersion;  // the version in the base view (0 for create)
    ObjectPtr current;     // what reads see; null once deleted
    bool live = true;      // false: created then deleted in this tx (no op at all)
    std::size_t bytes = 0;
  };

  Entry* entry(Kind kind, std::string_view id);
  const Entry* entry(Kind kind, std::string_view id) const;
  Status checkName(const Object& object) const;
  Status checkRoom(std::size_t addObjects, std::size_t oldBytes, std::size_t newBytes) const;
  void add(Entry e);
  void claimName(const Object& object);
  void releaseName(const Object& object);

  const ReadView& base_;
  const StoreLimits limits_;
  std::vector<Entry> entries_;
  std::array<StoreState::StringMap<std::size_t>, kKindCount> index_;  // id -> entries_ slot
  std::array<std::vector<std::size_t>, kKindCount> byKind_;           // entries_ slots per kind
  // Names held by objects this tx created or updated (kinds with unique names): name -> id.
  std::array<StoreState::StringMap<std::string>, kKindCount> names_;
  std::size_t live_ = 0;
  std::size_t bytes_ = 0;
};

}  // namespace shoal::store
