#include "kernel/store/codec.h"

namespace shoal::store {

void putVarint(std::string& out, uint64_t v) {
  char buf[10];
  int n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out.append(buf, n);
}

void putString(std::string& out, std::string_view s) {
  putVarint(out, s.size());
  out.append(s);
}

void putFixed32(std::string& out, uint32_t v) {
  char buf[4] = {static_cast<char>(v), static_cast<char>(v >> 8), static_cast<char>(v >> 16),
                 static_cast<char>(v >> 24)};
  out.append(buf, 4);
}

std::size_t varintSize(uint64_t v) {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

namespace {
std::size_t stringSize(std::string_view s) { return varintSize(s.size()) + s.size(); }
uint64_t zig(int64_t v) { return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63); }
}  // namespace

void encodeObject(const Object& o, std::string& out) {
  out += static_cast<char>(o.kind);
  putString(out, o.id);
  putVarint(out, o.version);
  putZigzag(out, o.createdNs);
  putZigzag(out, o.updatedNs);
  putString(out, o.name);
  putVarint(out, o.labels.size());
  for (const auto& [key, value] : o.labels) {
    putString(out, key);
    putString(out, value);
  }
  putString(out, o.spec);
  putString(out, o.status);
  if (o.kind == Kind::kTask) {
    putString(out, o.serviceId);
    putString(out, o.nodeId);
    putVarint(out, o.slot);
    putZigzag(out, static_cast<int32_t>(o.desiredState));
  } else if (o.kind == Kind::kNode) {
    out += static_cast<char>(o.role);
    out += static_cast<char>(o.availability);
  }
}

std::size_t encodedSize(const Object& o) {
  std::size_t n = 1 + stringSize(o.id) + varintSize(o.version) + varintSize(zig(o.createdNs)) +
                  varintSize(zig(o.updatedNs)) + stringSize(o.name) + varintSize(o.labels.size());
  for (const auto& [key, value] : o.labels) n += stringSize(key) + stringSize(value);
  n += stringSize(o.spec) + stringSize(o.status);
  if (o.kind == Kind::kTask) {
    n += stringSize(o.serviceId) + stringSize(o.nodeId) + varintSize(o.slot) +
         varintSize(zig(static_cast<int32_t>(o.desiredState)));
  } else if (o.kind == Kind::kNode) {
    n += 2;
  }
  return n;
}

bool ByteReader::truncated(const char* what) {
  if (status_.isOk()) {
    status_ =
        Status::invalidArgument("truncated at byte " + std::to_string(pos_) + " reading " + what);
  }
  return false;
}

bool ByteReader::fail(const std::string& what, std::size_t at) {
  if (status_.isOk()) {
    status_ = Status::invalidArgument(what + " at byte " +
                                      std::to_string(at == std::string_view::npos ? pos_ : at));
  }
  return false;
}

bool ByteReader::u8(uint8_t& v, const char* what) {
  if (!status_.isOk()) return false;
  if (pos_ >= data_.size()) return truncated(what);
  v = static_cast<uint8_t>(data_[pos_++]);
  return true;
}

bool ByteReader::varint(uint64_t& v, const char* what) {
  if (!status_.isOk()) return false;
  uint64_t result = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (pos_ >= data_.size()) return truncated(what);
    auto b = static_cast<uint8_t>(data_[pos_++]);
    if (shift == 63 && b > 1) return fail(std::string("varint overflow reading ") + what);
    result |= static_cast<uint64_t>(b & 0x7F) << shift;
    if ((b & 0x80) == 0) {
      v = result;
      return true;
    }
  }
  return fail(std::string("varint longer than 10 bytes reading ") + what);
}

bool ByteReader::zigzag(int64_t& v, const char* what) {
  uint64_t u;
  if (!varint(u, what)) return false;
  v = static_cast<int64_t>(u >> 1) ^ -static_cast<int64_t>(u & 1);
  return true;
}

bool ByteReader::string(std::string_view& s, const char* what) {
  uint64_t len;
  if (!varint(len, what)) return false;
  if (len > data_.size() - pos_) {
    return fail(std::string("length ") + std::to_string(len) + " runs past the end reading " +
                what);
  }
  s = data_.substr(pos_, len);
  pos_ += len;
  return true;
}

bool ByteReader::fixed32(uint32_t& v, const char* what) {
  if (!status_.isOk()) return false;
  if (data_.size() - pos_ < 4) return truncated(what);
  auto b = reinterpret_cast<const unsigned char*>(data_.data() + pos_);
  v = static_cast<uint32_t>(b[0]) | static_cast<uint32_t>(b[1]) << 8 |
      static_cast<uint32_t>(b[2]) << 16 | static_cast<uint32_t>(b[3]) << 24;
  pos_ += 4;
  return true;
}

bool decodeObject(ByteReader& in, Object& o) {
  uint8_t kind = 0;
  const std::size_t at = in.offset();
  if (!in.u8(kind, "the object kind")) return false;
  if (!isKnownKind(kind)) return in.fail("unknown object kind " + std::to_string(kind), at);
  o.kind = static_cast<Kind>(kind);
  std::string_view s;
  if (!in.string(s, "the object id")) return false;
  o.id.assign(s);
  if (!in.varint(o.version, "the object version")) return false;
  if (!in.zigzag(o.createdNs, "the creation time")) return false;
  if (!in.zigzag(o.updatedNs, "the update time")) return false;
  if (!in.string(s, "the object name")) return false;
  o.name.assign(s);
  uint64_t labels = 0;
  if (!in.varint(labels, "the label count")) return false;
  // Each label takes at least two bytes: a count beyond that is corrupt, not a huge map.
  if (labels > in.remaining() / 2)
    return in.fail("label count " + std::to_string(labels) + " exceeds the remaining bytes");
  o.labels.clear();
  std::string_view prev;
  for (uint64_t i = 0; i < labels; ++i) {
    std::string_view key, value;
    if (!in.string(key, "a label key") || !in.string(value, "a label value")) return false;
    if (i > 0 && key <= prev) return in.fail("label keys out of order or repeated");
    o.labels.emplace_hint(o.labels.end(), key, value);
    prev = key;
  }
  if (!in.string(s, "the spec")) return false;
  o.spec.assign(s);
  if (!in.string(s, "the status")) return false;
  o.status.assign(s);
  o.serviceId.clear();
  o.nodeId.clear();
  o.slot = 0;
  o.desiredState = TaskState::kNew;
  o.role = NodeRole::kWorker;
  o.availability = NodeAvailability::kActive;
  if (o.kind == Kind::kTask) {
    if (!in.string(s, "the task's service id")) return false;
    o.serviceId.assign(s);
    if (!in.string(s, "the task's node id")) return false;
    o.nodeId.assign(s);
    if (!in.varint(o.slot, "the task's slot")) return false;
    int64_t state = 0;
    if (!in.zigzag(state, "the task's desired state")) return false;
    if (state < INT32_MIN || state > INT32_MAX || !isKnownTaskState(static_cast<int32_t>(state))) {
      return in.fail("unknown task state " + std::to_string(state));
    }
    o.desiredState = static_cast<TaskState>(state);
  } else if (o.kind == Kind::kNode) {
    uint8_t role = 0, availability = 0;
    if (!in.u8(role, "the node role") || !in.u8(availability, "the node availability")) {
      return false;
    }
    if (role > 1) return in.fail("unknown node role " + std::to_string(role));
    if (availability > 2)
      return in.fail("unknown node availability " + std::to_string(availability));
    o.role = static_cast<NodeRole>(role);
    o.availability = static_cast<NodeAvailability>(availability);
  }
  return true;
}

}  // namespace shoal::store
