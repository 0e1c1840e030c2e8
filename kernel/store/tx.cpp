#include "kernel/store/tx.h"

#include <algorithm>

#include "kernel/store/codec.h"

namespace shoal::store {

namespace {

std::size_t writeOpSize(uint64_t expectedVersion, const Object& object) {
  return 1 + varintSize(expectedVersion) + encodedSize(object);
}

std::size_t keyOpSize(uint64_t expectedVersion, std::string_view id) {
  return 1 + varintSize(expectedVersion) + 1 + varintSize(id.size()) + id.size();
}

}  // namespace

Tx::Tx(const ReadView& base, const StoreLimits& limits) : base_(base), limits_(limits) {}

Tx::Entry* Tx::entry(Kind kind, std::string_view id) {
  if (!isKnownKind(kind)) return nullptr;
  auto& map = index_[kindIndex(kind)];
  auto it = map.find(id);
  return it == map.end() ? nullptr : &entries_[it->second];
}

const Tx::Entry* Tx::entry(Kind kind, std::string_view id) const {
  return const_cast<Tx*>(this)->entry(kind, id);
}

ObjectPtr Tx::get(Kind kind, std::string_view id) const {
  if (const Entry* e = entry(kind, id)) return e->current;
  return base_.get(kind, id);
}

std::vector<ObjectPtr> Tx::find(const Query& query) const {
  std::vector<ObjectPtr> base = base_.find(query);
  if (!isKnownKind(query.kind())) return base;
  const auto& mine = byKind_[kindIndex(query.kind())];
  if (mine.empty()) return base;
  // Base objects this tx touched are replaced by their current form (if it still matches).
  std::vector<ObjectPtr> out;
  out.reserve(base.size() + mine.size());
  for (auto& obj : base) {
    if (entry(query.kind(), obj->id) == nullptr) out.push_back(std::move(obj));
  }
  for (std::size_t slot : mine) {
    const Entry& e = entries_[slot];
    if (e.current && query.matches(*e.current)) out.push_back(e.current);
  }
  std::sort(out.begin(), out.end(),
            [](const ObjectPtr& a, const ObjectPtr& b) { return a->id < b->id; });
  return out;
}

void Tx::add(Entry e) {
  const int k = kindIndex(e.kind);
  index_[k].emplace(e.id, entries_.size());
  byKind_[k].push_back(entries_.size());
  bytes_ += e.bytes;
  ++live_;
  entries_.push_back(std::move(e));
}

void Tx::claimName(const Object& o) {
  if (namesUnique(o.kind) && !o.name.empty()) names_[kindIndex(o.kind)][o.name] = o.id;
}

void Tx::releaseName(const Object& o) {
  if (!namesUnique(o.kind) || o.name.empty()) return;
  auto& names = names_[kindIndex(o.kind)];
  auto it = names.find(o.name);
  if (it != names.end() && it->second == o.id) names.erase(it);
}

Status Tx::checkName(const Object& o) const {
  if (!namesUnique(o.kind) || o.name.empty()) return Status::ok();
  auto taken = [&](const std::string& holder) {
    return Status::alreadyExists(std::string(kindName(o.kind)) + " name \"" + o.name +
                                 "\" is already used by " + describe(o.kind, holder));
  };
  const auto& names = names_[kindIndex(o.kind)];
  if (auto it = names.find(o.name); it != names.end() && it->second != o.id) {
    return taken(it->second);
  }
  for (const auto& holder : base_.find(Query::byName(o.kind, o.name))) {
    // A holder this tx has touched has either kept the name (then it is in names_) or
    // given it up.
    if (holder->id != o.id && entry(o.kind, holder->id) == nullptr) return taken(holder->id);
  }
  return Status::ok();
}

Status Tx::checkRoom(std::size_t addObjects, std::size_t oldBytes, std::size_t newBytes) const {
  if (live_ + addObjects > limits_.maxTxObjects) {
    return Status::resourceExhausted("transaction too large: it would change " +
                                     std::to_string(live_ + addObjects) + " objects (limit " +
                                     std::to_string(limits_.maxTxObjects) + ")");
  }
  std::size_t bytes = bytes_ - oldBytes + newBytes;
  if (bytes > limits_.maxTxBytes) {
    return Status::resourceExhausted("transaction too large: it would encode to " +
                                     std::to_string(bytes) + " bytes (limit " +
                                     std::to_string(limits_.maxTxBytes) + ")");
  }
  return Status::ok();
}

Status Tx::create(Object o) {
  if (Status s = validateObject(o); !s) return s.withContext("create");
  o.version = 0;
  o.createdNs = 0;
  o.updatedNs = 0;
  if (const Entry* e = entry(o.kind, o.id)) {
    if (e->current) return Status::alreadyExists(describe(o) + " already exists");
    return Status::invalidArgument("create: " + describe(o) +
                                   " was deleted in this transaction; an id is not reused "
                                   "within one transaction");
  }
  if (base_.get(o.kind, o.id)) return Status::alreadyExists(describe(o) + " already exists");
  if (Status s = checkName(o); !s) return s;
  std::size_t bytes = writeOpSize(0, o);
  if (Status s = checkRoom(1, 0, bytes); !s) return s;
  Entry e{o.kind, o.id, OpType::kCreate, 0, nullptr, true, bytes};
  claimName(o);
  e.current = std::make_shared<const Object>(std::move(o));
  add(std::move(e));
  return Status::ok();
}

Status Tx::update(Object o) {
  if (Status s = validateObject(o); !s) return s.withContext("update");
  Entry* e = entry(o.kind, o.id);
  ObjectPtr cur = e ? e->current : base_.get(o.kind, o.id);
  if (!cur) {
    return Status::notFound("update: " + describe(o) +
                            (e ? " was deleted in this transaction" : " does not exist"));
  }
  if (o.version != cur->version) {
    return Status::conflict("update of " + describe(o) + " refused: it is at version " +
                            std::to_string(cur->version) + ", the update was based on version " +
                            std::to_string(o.version));
  }
  o.createdNs = cur->createdNs;
  o.updatedNs = cur->updatedNs;
  if (Status s = checkName(o); !s) return s;
  if (e) {
    if (e->type == OpType::kCheck) e->type = OpType::kUpdate;
    std::size_t bytes = writeOpSize(e->baseVersion, o);
    if (Status s = checkRoom(0, e->bytes, bytes); !s) return s;
    bytes_ = bytes_ - e->bytes + bytes;
    e->bytes = bytes;
    releaseName(*cur);
    claimName(o);
    e->current = std::make_shared<const Object>(std::move(o));
    return Status::ok();
  }
  std::size_t bytes = writeOpSize(cur->version, o);
  if (Status s = checkRoom(1, 0, bytes); !s) return s;
  Entry fresh{o.kind, o.id, OpType::kUpdate, cur->version, nullptr, true, bytes};
  claimName(o);
  fresh.current = std::make_shared<const Object>(std::move(o));
  add(std::move(fresh));
  return Status::ok();
}

Status Tx::remove(Kind kind, std::string_view id, uint64_t expectedVersion) {
  if (Status s = validateId(kind, id); !s) return s.withContext("delete");
  Entry* e = entry(kind, id);
  ObjectPtr cur = e ? e->current : base_.get(kind, id);
  if (!cur) {
    return Status::notFound("delete: " + describe(kind, id) +
                            (e ? " was deleted in this transaction" : " does not exist"));
  }
  if (expectedVersion != 0 && expectedVersion != cur->version) {
    return Status::conflict("delete of " + describe(kind, id) + " refused: it is at version " +
                            std::to_string(cur->version) + ", the delete was based on version " +
                            std::to_string(expectedVersion));
  }
  if (e) {
    releaseName(*cur);
    e->current = nullptr;
    if (e->type == OpType::kCreate) {
      // Created and deleted in one transaction: nothing to replicate.
      e->live = false;
      bytes_ -= e->bytes;
      e->bytes = 0;
      --live_;
    } else {
      e->type = OpType::kDelete;
      std::size_t bytes = keyOpSize(e->baseVersion, id);
      bytes_ = bytes_ - e->bytes + bytes;
      e->bytes = bytes;
    }
    return Status::ok();
  }
  std::size_t bytes = keyOpSize(cur->version, id);
  if (Status s = checkRoom(1, 0, bytes); !s) return s;
  add(Entry{kind, std::string(id), OpType::kDelete, cur->version, nullptr, true, bytes});
  return Status::ok();
}

Status Tx::require(Kind kind, std::string_view id) {
  if (Status s = validateId(kind, id); !s) return s.withContext("require");
  if (const Entry* e = entry(kind, id)) {
    if (!e->current) {
      return Status::notFound("require: " + describe(kind, id) +
                              " was deleted in this transaction");
    }
    return Status::ok();  // its write op carries the version check already
  }
  ObjectPtr cur = base_.get(kind, id);
  if (!cur) return Status::notFound("require: " + describe(kind, id) + " does not exist");
  std::size_t bytes = keyOpSize(cur->version, id);
  if (Status s = checkRoom(1, 0, bytes); !s) return s;
  add(Entry{kind, std::string(id), OpType::kCheck, cur->version, cur, true, bytes});
  return Status::ok();
}

ChangeSet Tx::changes() const {
  ChangeSet cs;
  cs.ops.reserve(live_);
  for (const Entry& e : entries_) {
    if (!e.live) continue;
    Op op;
    op.type = e.type;
    op.expectedVersion = e.baseVersion;
    if (e.type == OpType::kCreate || e.type == OpType::kUpdate) {
      op.object = *e.current;
    } else {
      op.object.kind = e.kind;
      op.object.id = e.id;
    }
    cs.ops.push_back(std::move(op));
  }
  return cs;
}

}  // namespace shoal::store
