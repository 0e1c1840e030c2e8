#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "kernel/store/object.h"

namespace shoal::store {

enum class EventType : uint8_t { kCreated = 1, kUpdated = 2, kDeleted = 3 };
std::string_view eventTypeName(EventType type);  // "created", "updated", "deleted"

// One committed change to one object.
struct Event {
  EventType type = EventType::kCreated;
  uint64_t version = 0;  // the Raft index of the changeset
  ObjectPtr object;      // as committed; for kDeleted, the object as it was last stored
  ObjectPtr previous;    // kUpdated: the object before the change; otherwise null
};

// The events one committed changeset produced for one watch (its kinds only), in the
// changeset's order.
struct EventBatch {
  uint64_t version = 0;
  std::vector<Event> events;
};

}  // namespace shoal::store
