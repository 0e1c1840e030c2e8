#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "kernel/store/read_view.h"

namespace shoal::store {

// The committed objects and their indexes, at one version. MemoryStore owns one and guards it
// with its mutex; a restore builds a fresh one and swaps it in. The mutators assume the caller
// has checked the change (MemoryStore::apply validates a whole ChangeSet first), so they only
// keep the maps and indexes consistent and never fail.
// THREAD: not synchronised; readers share, mutators exclude (the owner's lock).
class StoreState final : public ReadView {
 public:
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  // Index buckets hold views of the id keys of the byId maps (node-based: a key never moves
  // until its entry is erased, and an object leaves every index before it leaves byId).
  // Hash sets, not ordered ones: writes are the replicated hot path, so buckets cost O(1) to
  // maintain and find() sorts only what it returns.
  using IdSet = std::unordered_set<std::string_view>;
  template <class V>
  using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

  StoreState() = default;
  // Moves keep the index views valid (map nodes move whole); copies would not.
  StoreState(StoreState&&) = default;
  StoreState& operator=(StoreState&&) = default;
  StoreState(const StoreState&) = delete;
  StoreState& operator=(const StoreState&) = delete;

  uint64_t version() const override { return version_; }
  ObjectPtr get(Kind kind, std::string_view id) const override;
  std::vector<ObjectPtr> find(const Query& query) const override;

  void setVersion(uint64_t version) { version_ = version; }
  void insert(ObjectPtr object);
  void replace(const ObjectPtr& old, ObjectPtr object);
  void erase(const ObjectPtr& old);

  // The ids of the objects of `kind` named `name`, or null when there are none.
  const IdSet* named(Kind kind, std::string_view name) const;
  std::size_t size() const { return size_; }
  std::size_t count(Kind kind) const { return tables_[kindIndex(kind)].byId.size(); }
  // Every object, ordered by kind then id: the canonical order of snapshots and digest().
  std::vector<ObjectPtr> sorted() const;

 private:
  struct Table {
    StringMap<ObjectPtr> byId;
    StringMap<IdSet> byName;  // non-empty names only
  };

  void indexAdd(std::string_view id, const Object& o);
  void indexRemove(std::string_view id, const Object& o);
  std::vector<ObjectPtr> resolve(Kind kind, const IdSet* ids) const;
  static std::string slotKey(std::string_view serviceId, uint64_t slot);

  uint64_t version_ = 0;
  std::size_t size_ = 0;
  std::array<Table, kKindCount> tables_;
  StringMap<IdSet> tasksByService_;
  StringMap<IdSet> tasksByNode_;  // "" holds unassigned tasks
  StringMap<IdSet> tasksBySlot_;  // slotKey(serviceId, slot)
  std::unordered_map<uint32_t, IdSet> tasksByState_;
  std::array<IdSet, 2> nodesByRole_;
  std::array<IdSet, 3> nodesByAvailability_;
};

}  // namespace shoal::store
