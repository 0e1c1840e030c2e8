#pragma once

#include <cstdint>
#include <initializer_list>
#include <string_view>

#include "kernel/common/status.h"

namespace shoal::store {

// The kinds of cluster object. The numeric values are part of the encoded format (Raft log,
// snapshots): never renumber or reuse one.
enum class Kind : uint8_t {
  kCluster = 1,
  kNode = 2,
  kService = 3,
  kTask = 4,
  kNetwork = 5,
  kSecret = 6,
  kConfig = 7,
  kVolume = 8,
  kPolicy = 9,
};

inline constexpr int kKindCount = 9;
inline constexpr Kind kAllKinds[kKindCount] = {Kind::kCluster, Kind::kNode,    Kind::kService,
                                               Kind::kTask,    Kind::kNetwork, Kind::kSecret,
                                               Kind::kConfig,  Kind::kVolume,  Kind::kPolicy};

// A dense 0-based index for per-kind arrays. Only for valid kinds.
constexpr int kindIndex(Kind kind) { return static_cast<int>(kind) - 1; }
constexpr bool isKnownKind(uint8_t raw) { return raw >= 1 && raw <= kKindCount; }
constexpr bool isKnownKind(Kind kind) { return isKnownKind(static_cast<uint8_t>(kind)); }

// "cluster", "node", "service", "task", "network", "secret", "config", "volume", "policy";
// "unknown-kind" for a value outside the enum.
std::string_view kindName(Kind kind);
Result<Kind> parseKind(std::string_view name);

// Names are unique per kind for every kind but tasks (a task's name repeats across its
// history in a slot). Empty names are never indexed.
constexpr bool namesUnique(Kind kind) { return kind != Kind::kTask; }
// Kinds whose objects must have a name (nodes and tasks may have none).
constexpr bool nameRequired(Kind kind) { return kind != Kind::kTask && kind != Kind::kNode; }

// A set of kinds, e.g. the kinds a watch subscribes to. A plain value type.
class KindSet {
 public:
  constexpr KindSet() = default;
  constexpr KindSet(std::initializer_list<Kind> kinds) {
    for (Kind k : kinds) add(k);
  }
  static constexpr KindSet all() {
    KindSet s;
    for (Kind k : kAllKinds) s.add(k);
    return s;
  }

  constexpr KindSet& add(Kind kind) {
    bits_ |= bit(kind);
    return *this;
  }
  constexpr bool contains(Kind kind) const { return (bits_ & bit(kind)) != 0; }
  constexpr bool intersects(uint32_t bits) const { return (bits_ & bits) != 0; }
  constexpr bool empty() const { return bits_ == 0; }
  constexpr uint32_t bits() const { return bits_; }
  static constexpr uint32_t bit(Kind kind) { return 1u << static_cast<uint8_t>(kind); }

 private:
  uint32_t bits_ = 0;
};

}  // namespace shoal::store
