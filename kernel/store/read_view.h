#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "kernel/store/object.h"
#include "kernel/store/query.h"

namespace shoal::store {

// A consistent read-only view of the store: the committed state at one version (ReadView from
// MemoryStore::view), or that state plus a transaction's own writes (Tx).
// OWNERSHIP: returned ObjectPtrs are shared and immutable; they stay valid after the view
// ends. The view itself is borrowed: use it only inside the callback that received it.
// THREAD: a view is used by the thread that received it.
class ReadView {
 public:
  virtual ~ReadView() = default;

  // The Raft index the view reflects (for a Tx, its base view's).
  virtual uint64_t version() const = 0;
  // The object, or null when there is none.
  virtual ObjectPtr get(Kind kind, std::string_view id) const = 0;
  // The objects matching `query`, sorted by id.
  virtual std::vector<ObjectPtr> find(const Query& query) const = 0;

  // Conveniences over find().
  std::vector<ObjectPtr> list(Kind kind) const { return find(Query::all(kind)); }
  // The object of `kind` named `name` (the lowest id if several: tasks), or null.
  ObjectPtr findByName(Kind kind, std::string_view name) const {
    auto v = find(Query::byName(kind, std::string(name)));
    return v.empty() ? nullptr : v.front();
  }
  std::vector<ObjectPtr> tasksByService(std::string_view serviceId) const {
    return find(Query::tasksByService(std::string(serviceId)));
  }
  std::vector<ObjectPtr> tasksByNode(std::string_view nodeId) const {
    return find(Query::tasksByNode(std::string(nodeId)));
  }
  std::vector<ObjectPtr> tasksBySlot(std::string_view serviceId, uint64_t slot) const {
    return find(Query::tasksBySlot(std::string(serviceId), slot));
  }
  std::vector<ObjectPtr> tasksByDesiredState(TaskState state) const {
    return find(Query::tasksByDesiredState(state));
  }
  std::vector<ObjectPtr> nodesByRole(NodeRole role) const { return find(Query::nodesByRole(role)); }
  std::vector<ObjectPtr> nodesByAvailability(NodeAvailability availability) const {
    return find(Query::nodesByAvailability(availability));
  }
};

}  // namespace shoal::store
