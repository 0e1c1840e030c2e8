// Helpers shared by the store suites: object builders and a local "commit" (prepare + apply at
// the next index), standing in for the Raft round trip.
#pragma once

#include <cppunit/extensions/HelperMacros.h>

#include <string>

#include "kernel/store/memory_store.h"

namespace storetest {

using namespace shoal::store;

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

inline Object service(const std::string& id, const std::string& name) {
  Object o;
  o.kind = Kind::kService;
  o.id = id;
  o.name = name;
  o.spec =
      R"({"Mode":{"Replicated":{"Replicas":3}},"TaskTemplate":{"ContainerSpec":{"Image":"busybox"}}})";
  return o;
}

inline Object task(const std::string& id, const std::string& serviceId, uint64_t slot,
                   const std::string& nodeId = "", TaskState desired = TaskState::kRunning) {
  Object o;
  o.kind = Kind::kTask;
  o.id = id;
  o.name = serviceId + "." + std::to_string(slot);
  o.spec = R"({"ContainerSpec":{"Image":"busybox"}})";
  o.status = R"({"State":"new"})";
  o.serviceId = serviceId;
  o.nodeId = nodeId;
  o.slot = slot;
  o.desiredState = desired;
  return o;
}

inline Object node(const std::string& id, NodeRole role = NodeRole::kWorker,
                   NodeAvailability availability = NodeAvailability::kActive) {
  Object o;
  o.kind = Kind::kNode;
  o.id = id;
  o.spec = "{}";
  o.role = role;
  o.availability = availability;
  return o;
}

// The time apply() stamps on the change at `index` in these tests.
inline int64_t timeAt(uint64_t index) { return 1700000000000000000 + static_cast<int64_t>(index); }

// prepare + apply at the next index (through the encoded form, as Raft would carry it).
inline shoal::Status commit(MemoryStore& store, const Store::TxFn& fn) {
  auto cs = store.prepare(fn);
  if (!cs) return cs.status();
  uint64_t index = store.version() + 1;
  return store.applyEncoded(index, timeAt(index), encodeChangeSet(*cs));
}

inline void mustCommit(MemoryStore& store, const Store::TxFn& fn) {
  shoal::Status s = commit(store, fn);
  CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
}

inline ObjectPtr get(const MemoryStore& store, Kind kind, const std::string& id) {
  ObjectPtr out;
  store.view([&](const ReadView& v) { out = v.get(kind, id); });
  return out;
}

}  // namespace storetest
