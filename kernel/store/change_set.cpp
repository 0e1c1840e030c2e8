#include "kernel/store/change_set.h"

#include <Poco/Checksum.h>

#include "kernel/store/codec.h"

namespace shoal::store {

namespace {

constexpr char kMagic[4] = {'S', 'H', 'C', 'S'};
constexpr std::size_t kHeaderBytes = 5;   // magic + format
constexpr std::size_t kTrailerBytes = 4;  // CRC-32

uint32_t crc32(std::string_view data) {
  Poco::Checksum c(Poco::Checksum::TYPE_CRC32);
  c.update(data.data(), static_cast<unsigned>(data.size()));
  return c.checksum();
}

bool isKeyOnly(OpType t) { return t == OpType::kDelete || t == OpType::kCheck; }

Status corrupt(const Status& s) {
  return Status::invalidArgument("corrupt changeset: " + s.message());
}

}  // namespace

std::string_view opTypeName(OpType type) {
  switch (type) {
    case OpType::kCreate:
      return "create";
    case OpType::kUpdate:
      return "update";
    case OpType::kDelete:
      return "delete";
    case OpType::kCheck:
      return "check";
  }
  return "unknown-op";
}

std::size_t encodedOpSize(const Op& op) {
  std::size_t n = 1 + varintSize(op.expectedVersion);
  if (isKeyOnly(op.type)) {
    n += 1 + varintSize(op.object.id.size()) + op.object.id.size();
  } else {
    n += encodedSize(op.object);
  }
  return n;
}

void encodeChangeSet(const ChangeSet& changes, std::string& out) {
  std::size_t start = out.size();
  std::size_t total = kHeaderBytes + varintSize(changes.ops.size()) + kTrailerBytes;
  for (const Op& op : changes.ops) total += encodedOpSize(op);
  out.reserve(start + total);
  out.append(kMagic, sizeof kMagic);
  out += static_cast<char>(kChangeSetFormat);
  putVarint(out, changes.ops.size());
  for (const Op& op : changes.ops) {
    out += static_cast<char>(op.type);
    putVarint(out, op.expectedVersion);
    if (isKeyOnly(op.type)) {
      out += static_cast<char>(op.object.kind);
      putString(out, op.object.id);
    } else {
      encodeObject(op.object, out);
    }
  }
  putFixed32(out, crc32(std::string_view(out).substr(start)));
}

std::string encodeChangeSet(const ChangeSet& changes) {
  std::string out;
  encodeChangeSet(changes, out);
  return out;
}

Result<ChangeSet> decodeChangeSet(std::string_view bytes) {
  if (bytes.size() < kHeaderBytes + 1 + kTrailerBytes) {
    return Status::invalidArgument("corrupt changeset: " + std::to_string(bytes.size()) +
                                   " bytes is too short to be one");
  }
  if (bytes.substr(0, 4) != std::string_view(kMagic, 4)) {
    return Status::invalidArgument("corrupt changeset: the bytes do not start with \"SHCS\"");
  }
  auto format = static_cast<uint8_t>(bytes[4]);
  if (format != kChangeSetFormat) {
    return Status::invalidArgument("changeset format version " + std::to_string(format) +
                                   " is not supported (this build reads version " +
                                   std::to_string(kChangeSetFormat) + ")");
  }
  std::string_view body = bytes.substr(0, bytes.size() - kTrailerBytes);
  ByteReader trailer(bytes.substr(body.size()));
  uint32_t stored = 0;
  trailer.fixed32(stored, "the checksum");
  uint32_t computed = crc32(body);
  if (stored != computed) {
    return Status::invalidArgument("corrupt changeset: checksum mismatch over " +
                                   std::to_string(body.size()) + " bytes");
  }
  ByteReader in(body);
  uint8_t header = 0;
  for (std::size_t i = 0; i < kHeaderBytes; ++i) in.u8(header, "the header");
  uint64_t count = 0;
  if (!in.varint(count, "the operation count")) return corrupt(in.status());
  // Every op takes at least 4 bytes: a larger count is corrupt, not a reason to allocate.
  if (count > in.remaining() / 4) {
    in.fail("operation count " + std::to_string(count) + " exceeds the remaining bytes");
    return corrupt(in.status());
  }
  ChangeSet cs;
  cs.ops.resize(count);
  for (uint64_t i = 0; i < count; ++i) {
    Op& op = cs.ops[i];
    uint8_t type = 0;
    const std::size_t typeAt = in.offset();
    if (!in.u8(type, "an operation type")) return corrupt(in.status());
    if (type < 1 || type > 4) {
      in.fail("unknown operation type " + std::to_string(type), typeAt);
      return corrupt(in.status());
    }
    op.type = static_cast<OpType>(type);
    if (!in.varint(op.expectedVersion, "an expected version")) return corrupt(in.status());
    if (isKeyOnly(op.type)) {
      uint8_t kind = 0;
      std::string_view id;
      const std::size_t kindAt = in.offset();
      if (!in.u8(kind, "the object kind")) return corrupt(in.status());
      if (!isKnownKind(kind)) {
        in.fail("unknown object kind " + std::to_string(kind), kindAt);
        return corrupt(in.status());
      }
      if (!in.string(id, "the object id")) return corrupt(in.status());
      op.object.kind = static_cast<Kind>(kind);
      op.object.id.assign(id);
    } else if (!decodeObject(in, op.object)) {
      return corrupt(in.status());
    }
  }
  if (!in.atEnd()) {
    in.fail(std::to_string(in.remaining()) + " unexpected bytes after the last operation");
    return corrupt(in.status());
  }
  return cs;
}

}  // namespace shoal::store
