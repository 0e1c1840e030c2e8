#include "kernel/store/memory_store.h"

#include <Poco/Checksum.h>
#include <Poco/DigestEngine.h>
#include <Poco/SHA2Engine.h>

#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "kernel/store/codec.h"

namespace shoal::store {

namespace {

constexpr char kSnapshotMagic[4] = {'S', 'H', 'S', 'N'};
constexpr uint8_t kSnapshotFormat = 1;

uint32_t crc32(std::string_view data) {
  Poco::Checksum c(Poco::Checksum::TYPE_CRC32);
  c.update(data.data(), static_cast<unsigned>(data.size()));
  return c.checksum();
}

// "service abc (\"web\")": messages name the object the way a user knows it.
std::string nameOf(const Object& o) {
  std::string s = describe(o);
  if (!o.name.empty()) s += " (\"" + o.name + "\")";
  return s;
}

Status corruptSnapshot(const Status& s) {
  return Status::invalidArgument("corrupt snapshot: " + s.message());
}

}  // namespace

MemoryStore::MemoryStore(StoreLimits limits)
    : limits_(limits),
      hub_(std::make_shared<WatchHub>(limits.historyChangeSets, limits.historyEvents, 0)) {}

MemoryStore::~MemoryStore() { hub_->close(); }

uint64_t MemoryStore::version() const {
  std::shared_lock lk(mu_);
  return state_.version();
}

std::size_t MemoryStore::size() const {
  std::shared_lock lk(mu_);
  return state_.size();
}

void MemoryStore::view(const ViewFn& fn) const {
  std::shared_lock lk(mu_);
  fn(state_);
}

Result<ChangeSet> MemoryStore::prepare(const TxFn& fn) const {
  std::shared_lock lk(mu_);
  Tx tx(state_, limits_);
  if (Status s = fn(tx); !s) return s;
  return tx.changes();
}

Status MemoryStore::check(const ChangeSet& cs, std::vector<ObjectPtr>& current) const {
  const std::size_t n = cs.ops.size();
  if (n > limits_.maxTxObjects) {
    return Status::resourceExhausted("transaction too large: it changes " + std::to_string(n) +
                                     " objects (limit " + std::to_string(limits_.maxTxObjects) +
                                     ")");
  }
  std::size_t bytes = 0;
  for (const Op& op : cs.ops) bytes += encodedOpSize(op);
  if (bytes > limits_.maxTxBytes) {
    return Status::resourceExhausted("transaction too large: it encodes to " +
                                     std::to_string(bytes) + " bytes (limit " +
                                     std::to_string(limits_.maxTxBytes) + ")");
  }

  // Keys point into `cs`, which outlives these maps.
  std::array<std::unordered_map<std::string_view, std::size_t>, kKindCount> touched;
  for (std::size_t i = 0; i < n; ++i) {
    const Op& op = cs.ops[i];
    const Object& o = op.object;
    const bool write = op.type == OpType::kCreate || op.type == OpType::kUpdate;
    if (!write && op.type != OpType::kDelete && op.type != OpType::kCheck) {
      return Status::invalidArgument("unknown operation type " +
                                     std::to_string(static_cast<int>(op.type)) + " on " +
                                     describe(o));
    }
    const std::string_view what = opTypeName(op.type);
    if (Status s = write ? validateObject(o) : validateId(o.kind, o.id); !s) {
      return s.withContext(what);
    }
    if (!touched[kindIndex(o.kind)].emplace(o.id, i).second) {
      return Status::invalidArgument("the changeset has more than one operation on " + describe(o));
    }
    ObjectPtr cur = state_.get(o.kind, o.id);
    if (op.type == OpType::kCreate) {
      if (cur) return Status::alreadyExists("create: " + nameOf(*cur) + " already exists");
    } else {
      if (!cur) {
        return Status::notFound(std::string(what) + " of " + describe(o) +
                                " refused: it does not exist");
      }
      if (cur->version != op.expectedVersion) {
        return Status::conflict(std::string(what) + " of " + nameOf(*cur) +
                                " refused: it is at version " + std::to_string(cur->version) +
                                ", the change was based on version " +
                                std::to_string(op.expectedVersion));
      }
    }
    current[i] = std::move(cur);
  }

  // Names are checked against the state as it will be after the whole changeset, so one
  // changeset may rename a and give a's old name to b.
  std::array<std::unordered_map<std::string_view, std::size_t>, kKindCount> claims;
  for (std::size_t i = 0; i < n; ++i) {
    const Op& op = cs.ops[i];
    const Object& o = op.object;
    if (op.type != OpType::kCreate && op.type != OpType::kUpdate) continue;
    if (!namesUnique(o.kind) || o.name.empty()) continue;
    const int k = kindIndex(o.kind);
    auto [it, fresh] = claims[k].emplace(o.name, i);
    if (!fresh) {
      return Status::alreadyExists(std::string(kindName(o.kind)) + " name \"" + o.name +
                                   "\" is given to both " + describe(cs.ops[it->second].object) +
                                   " and " + describe(o) + " in one changeset");
    }
    const StoreState::IdSet* holders = state_.named(o.kind, o.name);
    if (holders == nullptr) continue;
    for (std::string_view holder : *holders) {
      if (holder == o.id) continue;
      auto t = touched[k].find(holder);
      // A holder deleted or renamed by this changeset gives the name up; one renamed to the
      // same name would have collided in `claims` above.
      bool released = t != touched[k].end() && (cs.ops[t->second].type == OpType::kDelete ||
                                                cs.ops[t->second].type == OpType::kUpdate);
      if (!released) {
        return Status::alreadyExists(std::string(opTypeName(op.type)) + " of " + describe(o) +
                                     " refused: " + std::string(kindName(o.kind)) + " name \"" +
                                     o.name + "\" is already used by " + describe(o.kind, holder));
      }
    }
  }
  return Status::ok();
}

Status MemoryStore::notApplied(uint64_t index) const {
  return Status::failedPrecondition("Raft index " + std::to_string(index) +
                                    " is already applied (the store is at version " +
                                    std::to_string(state_.version()) + ")");
}

Status MemoryStore::applyLocked(uint64_t index, int64_t timeNs, const ChangeSet& cs,
                                ChangeSet* owned) {
  if (index <= state_.version()) return notApplied(index);
  std::vector<Event> events;
  Status s = applyOps(index, timeNs, cs, owned, events);
  state_.setVersion(index);
  if (!s) return s;
  if (!events.empty()) hub_->publish(index, std::move(events));
  return Status::ok();
}

Status MemoryStore::applyOps(uint64_t index, int64_t timeNs, const ChangeSet& cs, ChangeSet* owned,
                             std::vector<Event>& events) {
  std::vector<ObjectPtr> current(cs.ops.size());
  if (Status s = check(cs, current); !s) {
    return s.withContext("changeset at index " + std::to_string(index) + " refused");
  }
  events.reserve(events.size() + cs.ops.size());
  for (std::size_t i = 0; i < cs.ops.size(); ++i) {
    const Op& op = cs.ops[i];
    ObjectPtr& cur = current[i];
    switch (op.type) {
      case OpType::kCreate: {
        auto obj = owned ? std::make_shared<Object>(std::move(owned->ops[i].object))
                         : std::make_shared<Object>(op.object);
        obj->version = index;
        obj->createdNs = timeNs;
        obj->updatedNs = timeNs;
        ObjectPtr p = std::move(obj);
        state_.insert(p);
        events.push_back(Event{EventType::kCreated, index, std::move(p), nullptr});
        break;
      }
      case OpType::kUpdate: {
        auto obj = owned ? std::make_shared<Object>(std::move(owned->ops[i].object))
                         : std::make_shared<Object>(op.object);
        obj->version = index;
        obj->createdNs = cur->createdNs;
        obj->updatedNs = timeNs;
        ObjectPtr p = std::move(obj);
        state_.replace(cur, p);
        events.push_back(Event{EventType::kUpdated, index, std::move(p), std::move(cur)});
        break;
      }
      case OpType::kDelete:
        state_.erase(cur);
        events.push_back(Event{EventType::kDeleted, index, std::move(cur), nullptr});
        break;
      case OpType::kCheck:
        break;
    }
  }
  return Status::ok();
}

std::vector<Status> MemoryStore::applyGroup(uint64_t index,
                                            const std::vector<EncodedChange>& group) {
  std::vector<Status> out;
  out.reserve(group.size());
  std::unique_lock lk(mu_);
  if (index <= state_.version()) {
    out.assign(group.size(), notApplied(index));
    return out;
  }
  std::vector<Event> events;
  for (const EncodedChange& change : group) {
    auto decoded = decodeChangeSet(change.bytes);
    if (!decoded) {
      out.push_back(
          decoded.status().withContext("changeset at index " + std::to_string(index) + " refused"));
      continue;
    }
    out.push_back(applyOps(index, change.timeNs, *decoded, &*decoded, events));
  }
  state_.setVersion(index);
  if (!events.empty()) hub_->publish(index, std::move(events));
  return out;
}

Status MemoryStore::apply(uint64_t index, int64_t timeNs, const ChangeSet& changes) {
  std::unique_lock lk(mu_);
  return applyLocked(index, timeNs, changes, nullptr);
}

Status MemoryStore::apply(uint64_t index, int64_t timeNs, ChangeSet&& changes) {
  std::unique_lock lk(mu_);
  return applyLocked(index, timeNs, changes, &changes);
}

Status MemoryStore::applyEncoded(uint64_t index, int64_t timeNs, std::string_view bytes) {
  auto decoded = decodeChangeSet(bytes);
  if (decoded) return apply(index, timeNs, std::move(*decoded));
  std::unique_lock lk(mu_);
  if (index <= state_.version()) {
    return Status::failedPrecondition("Raft index " + std::to_string(index) +
                                      " is already applied (the store is at version " +
                                      std::to_string(state_.version()) + ")");
  }
  state_.setVersion(index);
  return decoded.status().withContext("changeset at index " + std::to_string(index) + " refused");
}

Result<std::unique_ptr<Watch>> MemoryStore::subscribe(KindSet kinds, uint64_t fromVersion) const {
  auto cursor = hub_->subscribe(kinds, fromVersion, limits_.watchQueueEvents, state_.version());
  if (!cursor) return cursor.status();
  return std::make_unique<Watch>(hub_, std::move(*cursor));
}

Result<std::unique_ptr<Watch>> MemoryStore::watch(KindSet kinds,
                                                  std::optional<uint64_t> fromVersion) {
  // The shared lock keeps apply() out, so "now" is exact.
  std::shared_lock lk(mu_);
  return subscribe(kinds, fromVersion.value_or(state_.version()));
}

Result<std::unique_ptr<Watch>> MemoryStore::viewAndWatch(KindSet kinds, const ViewFn& fn) {
  std::shared_lock lk(mu_);
  fn(state_);
  return subscribe(kinds, state_.version());
}

std::string MemoryStore::snapshot() const {
  std::vector<ObjectPtr> objects;
  uint64_t version;
  {
    std::shared_lock lk(mu_);
    objects = state_.sorted();
    version = state_.version();
  }
  std::size_t total = 4 + 1 + 10 + 10 + 4;
  for (const auto& o : objects) total += encodedSize(*o);
  std::string out;
  out.reserve(total);
  out.append(kSnapshotMagic, 4);
  out += static_cast<char>(kSnapshotFormat);
  putVarint(out, version);
  putVarint(out, objects.size());
  for (const auto& o : objects) encodeObject(*o, out);
  putFixed32(out, crc32(out));
  return out;
}

Status MemoryStore::restore(std::string_view bytes) {
  if (bytes.size() < 4 + 1 + 1 + 1 + 4) {
    return Status::invalidArgument("corrupt snapshot: " + std::to_string(bytes.size()) +
                                   " bytes is too short to be one");
  }
  if (bytes.substr(0, 4) != std::string_view(kSnapshotMagic, 4)) {
    return Status::invalidArgument("corrupt snapshot: the bytes do not start with \"SHSN\"");
  }
  auto format = static_cast<uint8_t>(bytes[4]);
  if (format != kSnapshotFormat) {
    return Status::invalidArgument("snapshot format version " + std::to_string(format) +
                                   " is not supported (this build reads version " +
                                   std::to_string(kSnapshotFormat) + ")");
  }
  std::string_view body = bytes.substr(0, bytes.size() - 4);
  ByteReader trailer(bytes.substr(body.size()));
  uint32_t stored = 0;
  trailer.fixed32(stored, "the checksum");
  if (stored != crc32(body)) {
    return Status::invalidArgument("corrupt snapshot: checksum mismatch over " +
                                   std::to_string(body.size()) + " bytes");
  }

  ByteReader in(body.substr(5));
  uint64_t version = 0, count = 0;
  if (!in.varint(version, "the snapshot version") || !in.varint(count, "the object count")) {
    return corruptSnapshot(in.status());
  }
  // An object takes at least 9 bytes: a larger count is corrupt.
  if (count > in.remaining() / 9) {
    in.fail("object count " + std::to_string(count) + " exceeds the remaining bytes");
    return corruptSnapshot(in.status());
  }
  StoreState fresh;
  fresh.setVersion(version);
  for (uint64_t i = 0; i < count; ++i) {
    auto obj = std::make_shared<Object>();
    if (!decodeObject(in, *obj)) return corruptSnapshot(in.status());
    if (Status s = validateObject(*obj); !s) return corruptSnapshot(s);
    if (obj->version == 0 || obj->version > version) {
      return Status::invalidArgument("corrupt snapshot: " + describe(*obj) + " has version " +
                                     std::to_string(obj->version) + ", outside the snapshot's 1.." +
                                     std::to_string(version));
    }
    if (fresh.get(obj->kind, obj->id)) {
      return Status::invalidArgument("corrupt snapshot: " + describe(*obj) + " appears twice");
    }
    if (namesUnique(obj->kind) && fresh.named(obj->kind, obj->name) != nullptr) {
      return Status::invalidArgument("corrupt snapshot: " + std::string(kindName(obj->kind)) +
                                     " name \"" + obj->name + "\" is used twice");
    }
    fresh.insert(std::move(obj));
  }
  if (!in.atEnd()) {
    in.fail(std::to_string(in.remaining()) + " unexpected bytes after the last object");
    return corruptSnapshot(in.status());
  }
  // `fresh` is declared before the lock, so the old state it receives is freed after unlocking.
  std::unique_lock lk(mu_);
  std::swap(state_, fresh);
  hub_->reset(version);
  return Status::ok();
}

std::string MemoryStore::digest() const {
  std::vector<ObjectPtr> objects;
  {
    std::shared_lock lk(mu_);
    objects = state_.sorted();
  }
  Poco::SHA2Engine sha(Poco::SHA2Engine::SHA_256);
  std::string buf;
  for (const auto& o : objects) {
    buf.clear();
    encodeObject(*o, buf);
    sha.update(buf.data(), static_cast<unsigned>(buf.size()));
  }
  return Poco::DigestEngine::digestToHex(sha.digest());
}

}  // namespace shoal::store
