#include "kernel/store/store_state.h"

#include <algorithm>

namespace shoal::store {

namespace {

template <class Map, class Key>
void addTo(Map& map, const Key& key, std::string_view id) {
  auto it = map.find(key);
  if (it == map.end()) it = map.emplace(key, StoreState::IdSet{}).first;
  it->second.insert(id);
}

// Empty buckets are dropped, so the ids of deleted services and nodes do not pile up.
template <class Map, class Key>
void removeFrom(Map& map, const Key& key, std::string_view id) {
  auto it = map.find(key);
  if (it == map.end()) return;
  it->second.erase(id);
  if (it->second.empty()) map.erase(it);
}

uint32_t stateKey(const Object& o) { return static_cast<uint32_t>(o.desiredState); }

bool byId(const ObjectPtr& a, const ObjectPtr& b) { return a->id < b->id; }

}  // namespace

std::string StoreState::slotKey(std::string_view serviceId, uint64_t slot) {
  std::string key(serviceId);
  key += '\0';
  for (int i = 0; i < 8; ++i) key += static_cast<char>(slot >> (8 * i));
  return key;
}

ObjectPtr StoreState::get(Kind kind, std::string_view id) const {
  if (!isKnownKind(kind)) return nullptr;
  const auto& map = tables_[kindIndex(kind)].byId;
  auto it = map.find(id);
  return it == map.end() ? nullptr : it->second;
}

std::vector<ObjectPtr> StoreState::resolve(Kind kind, const IdSet* ids) const {
  std::vector<ObjectPtr> out;
  if (ids == nullptr) return out;
  out.reserve(ids->size());
  const auto& map = tables_[kindIndex(kind)].byId;
  for (const auto& id : *ids) {
    auto it = map.find(id);
    SHOAL_ASSERT(it != map.end());
    if (it != map.end()) out.push_back(it->second);
  }
  std::sort(out.begin(), out.end(), byId);
  return out;
}

template <class Map, class Key>
static const StoreState::IdSet* bucket(const Map& map, const Key& key) {
  auto it = map.find(key);
  return it == map.end() ? nullptr : &it->second;
}

std::vector<ObjectPtr> StoreState::find(const Query& q) const {
  if (!isKnownKind(q.kind())) return {};
  const Kind kind = q.kind();
  switch (q.by()) {
    case Query::By::kAll: {
      const auto& map = tables_[kindIndex(kind)].byId;
      std::vector<ObjectPtr> out;
      out.reserve(map.size());
      for (const auto& [id, obj] : map) out.push_back(obj);
      std::sort(out.begin(), out.end(), byId);
      return out;
    }
    case Query::By::kName:
      return resolve(kind, named(kind, q.key()));
    case Query::By::kService:
      return kind == Kind::kTask ? resolve(kind, bucket(tasksByService_, q.key()))
                                 : std::vector<ObjectPtr>{};
    case Query::By::kNode:
      return kind == Kind::kTask ? resolve(kind, bucket(tasksByNode_, q.key()))
                                 : std::vector<ObjectPtr>{};
    case Query::By::kSlot:
      return kind == Kind::kTask ? resolve(kind, bucket(tasksBySlot_, slotKey(q.key(), q.number())))
                                 : std::vector<ObjectPtr>{};
    case Query::By::kDesiredState:
      return kind == Kind::kTask
                 ? resolve(kind, bucket(tasksByState_, static_cast<uint32_t>(q.number())))
                 : std::vector<ObjectPtr>{};
    case Query::By::kRole:
      return kind == Kind::kNode && q.number() < nodesByRole_.size()
                 ? resolve(kind, &nodesByRole_[q.number()])
                 : std::vector<ObjectPtr>{};
    case Query::By::kAvailability:
      return kind == Kind::kNode && q.number() < nodesByAvailability_.size()
                 ? resolve(kind, &nodesByAvailability_[q.number()])
                 : std::vector<ObjectPtr>{};
  }
  return {};
}

const StoreState::IdSet* StoreState::named(Kind kind, std::string_view name) const {
  if (!isKnownKind(kind) || name.empty()) return nullptr;
  return bucket(tables_[kindIndex(kind)].byName, name);
}

void StoreState::indexAdd(std::string_view id, const Object& o) {
  if (!o.name.empty()) addTo(tables_[kindIndex(o.kind)].byName, o.name, id);
  if (o.kind == Kind::kTask) {
    addTo(tasksByService_, o.serviceId, id);
    addTo(tasksByNode_, o.nodeId, id);
    addTo(tasksBySlot_, slotKey(o.serviceId, o.slot), id);
    addTo(tasksByState_, stateKey(o), id);
  } else if (o.kind == Kind::kNode) {
    nodesByRole_[static_cast<int>(o.role)].insert(id);
    nodesByAvailability_[static_cast<int>(o.availability)].insert(id);
  }
}

void StoreState::indexRemove(std::string_view id, const Object& o) {
  if (!o.name.empty()) removeFrom(tables_[kindIndex(o.kind)].byName, o.name, id);
  if (o.kind == Kind::kTask) {
    removeFrom(tasksByService_, o.serviceId, id);
    removeFrom(tasksByNode_, o.nodeId, id);
    removeFrom(tasksBySlot_, slotKey(o.serviceId, o.slot), id);
    removeFrom(tasksByState_, stateKey(o), id);
  } else if (o.kind == Kind::kNode) {
    nodesByRole_[static_cast<int>(o.role)].erase(id);
    nodesByAvailability_[static_cast<int>(o.availability)].erase(id);
  }
}

void StoreState::insert(ObjectPtr object) {
  auto& map = tables_[kindIndex(object->kind)].byId;
  std::string id = object->id;
  auto [it, fresh] = map.emplace(std::move(id), std::move(object));
  SHOAL_ASSERT(fresh);
  indexAdd(it->first, *it->second);
  ++size_;
}

void StoreState::replace(const ObjectPtr& old, ObjectPtr object) {
  SHOAL_ASSERT(old->kind == object->kind && old->id == object->id);
  auto& map = tables_[kindIndex(old->kind)].byId;
  auto it = map.find(old->id);
  SHOAL_ASSERT(it != map.end());
  const std::string_view id = it->first;
  const Object& a = *old;
  const Object& b = *object;
  // Most updates (status reports, state changes) move few index keys: touch only those.
  if (a.name != b.name) {
    auto& names = tables_[kindIndex(a.kind)].byName;
    if (!a.name.empty()) removeFrom(names, a.name, id);
    if (!b.name.empty()) addTo(names, b.name, id);
  }
  if (a.kind == Kind::kTask) {
    if (a.serviceId != b.serviceId) {
      removeFrom(tasksByService_, a.serviceId, id);
      addTo(tasksByService_, b.serviceId, id);
    }
    if (a.nodeId != b.nodeId) {
      removeFrom(tasksByNode_, a.nodeId, id);
      addTo(tasksByNode_, b.nodeId, id);
    }
    if (a.serviceId != b.serviceId || a.slot != b.slot) {
      removeFrom(tasksBySlot_, slotKey(a.serviceId, a.slot), id);
      addTo(tasksBySlot_, slotKey(b.serviceId, b.slot), id);
    }
    if (a.desiredState != b.desiredState) {
      removeFrom(tasksByState_, stateKey(a), id);
      addTo(tasksByState_, stateKey(b), id);
    }
  } else if (a.kind == Kind::kNode) {
    if (a.role != b.role) {
      nodesByRole_[static_cast<int>(a.role)].erase(id);
      nodesByRole_[static_cast<int>(b.role)].insert(id);
    }
    if (a.availability != b.availability) {
      nodesByAvailability_[static_cast<int>(a.availability)].erase(id);
      nodesByAvailability_[static_cast<int>(b.availability)].insert(id);
    }
  }
  it->second = std::move(object);  // may free `a` (the caller's `old` may be this pointer)
}

void StoreState::erase(const ObjectPtr& old) {
  auto& map = tables_[kindIndex(old->kind)].byId;
  auto it = map.find(old->id);
  SHOAL_ASSERT(it != map.end());
  ObjectPtr keep = std::move(it->second);  // `old` may be the map's own pointer
  indexRemove(it->first, *keep);
  map.erase(it);
  --size_;
}

std::vector<ObjectPtr> StoreState::sorted() const {
  std::vector<ObjectPtr> out;
  out.reserve(size_);
  for (Kind kind : kAllKinds) {
    auto part = find(Query::all(kind));
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

}  // namespace shoal::store
