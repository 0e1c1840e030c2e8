#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kernel/common/status.h"
#include "kernel/store/object.h"

namespace shoal::store {

enum class OpType : uint8_t {
  kCreate = 1,  // the object must not exist
  kUpdate = 2,  // the object must exist at expectedVersion; replaced by `object`
  kDelete = 3,  // the object must exist at expectedVersion
  kCheck = 4,   // changes nothing; the object must exist at expectedVersion (a read guard)
};
std::string_view opTypeName(OpType type);  // "create", "update", "delete", "check"

// One operation of a ChangeSet.
struct Op {
  OpType type = OpType::kCreate;
  // The version the writer read (update, delete, check); 0 for create.
  uint64_t expectedVersion = 0;
  // create / update: the new content. Its version and times are ignored: apply() sets them
  // from the Raft entry. delete / check: only kind and id are used (and encoded).
  Object object;

  bool operator==(const Op&) const = default;
};

// What a transaction changes: the unit that goes through Raft and that MemoryStore::apply()
// applies atomically. At most one operation per object. A plain value type.
struct ChangeSet {
  std::vector<Op> ops;

  bool empty() const { return ops.empty(); }
  bool operator==(const ChangeSet&) const = default;
};

// The encoded form: "SHCS", u8 format version (kChangeSetFormat), varint op count, the ops
// (u8 type, varint expectedVersion, then the object for create/update or u8 kind + str id for
// delete/check; see codec.h), and a little-endian CRC-32 of everything before it.
inline constexpr uint8_t kChangeSetFormat = 1;

std::string encodeChangeSet(const ChangeSet& changes);
// Appends to `out` (lets a caller reuse a buffer).
void encodeChangeSet(const ChangeSet& changes, std::string& out);
// The exact size encodeChangeSet produces for one operation (the transaction size bound uses it).
std::size_t encodedOpSize(const Op& op);

// Never crashes on bad bytes: a wrong magic, an unsupported format version, a checksum
// mismatch, a truncation or a malformed field is an invalid-argument error saying which, and
// at which byte. Checks form only: apply() checks the meaning.
Result<ChangeSet> decodeChangeSet(std::string_view bytes);

}  // namespace shoal::store
