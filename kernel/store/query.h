#pragma once

#include <cstdint>
#include <string>

#include "kernel/store/object.h"

namespace shoal::store {

// One index lookup: all objects of a kind, or those matching one indexed field. Built by the
// named constructors; a plain value type. matches() is the lookup's definition: an index
// answers exactly the objects for which it is true (Tx uses it to merge its own writes).
class Query {
 public:
  enum class By : uint8_t {
    kAll,           // every object of the kind
    kName,          // objects of the kind with this (non-empty) name
    kService,       // tasks of this service
    kNode,          // tasks on this node ("" = unassigned tasks)
    kSlot,          // tasks of this service in this slot
    kDesiredState,  // tasks with this desired state
    kRole,          // nodes with this role
    kAvailability,  // nodes with this availability
  };

  static Query all(Kind kind) { return Query(kind, By::kAll, {}, 0); }
  static Query byName(Kind kind, std::string name) {
    return Query(kind, By::kName, std::move(name), 0);
  }
  static Query tasksByService(std::string serviceId) {
    return Query(Kind::kTask, By::kService, std::move(serviceId), 0);
  }
  static Query tasksByNode(std::string nodeId) {
    return Query(Kind::kTask, By::kNode, std::move(nodeId), 0);
  }
  static Query tasksBySlot(std::string serviceId, uint64_t slot) {
    return Query(Kind::kTask, By::kSlot, std::move(serviceId), slot);
  }
  static Query tasksByDesiredState(TaskState state) {
    return Query(Kind::kTask, By::kDesiredState, {},
                 static_cast<uint64_t>(static_cast<uint32_t>(state)));
  }
  static Query nodesByRole(NodeRole role) {
    return Query(Kind::kNode, By::kRole, {}, static_cast<uint64_t>(role));
  }
  static Query nodesByAvailability(NodeAvailability availability) {
    return Query(Kind::kNode, By::kAvailability, {}, static_cast<uint64_t>(availability));
  }

  Kind kind() const { return kind_; }
  By by() const { return by_; }
  const std::string& key() const { return key_; }  // name, service id or node id
  uint64_t number() const { return number_; }      // slot, state, role or availability

  bool matches(const Object& o) const {
    if (o.kind != kind_) return false;
    switch (by_) {
      case By::kAll:
        return true;
      case By::kName:
        return !key_.empty() && o.name == key_;
      case By::kService:
        return o.serviceId == key_;
      case By::kNode:
        return o.nodeId == key_;
      case By::kSlot:
        return o.serviceId == key_ && o.slot == number_;
      case By::kDesiredState:
        return static_cast<uint32_t>(o.desiredState) == number_;
      case By::kRole:
        return static_cast<uint64_t>(o.role) == number_;
      case By::kAvailability:
        return static_cast<uint64_t>(o.availability) == number_;
    }
    return false;
  }

 private:
  Query(Kind kind, By by, std::string key, uint64_t number)
      : kind_(kind), by_(by), key_(std::move(key)), number_(number) {}

  Kind kind_;
  By by_;
  std::string key_;
  uint64_t number_;
};

}  // namespace shoal::store
