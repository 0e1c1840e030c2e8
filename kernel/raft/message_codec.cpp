// The wire encoding of a Raft Message (kernel/raft/README.md, "Transport", has the layout).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kernel/common/status.h"
#include "kernel/raft/transport.h"

namespace shoal::raft {
namespace {

constexpr uint8_t kCodecVersion = 1;

// Flag bits: which optional parts follow the fixed header.
constexpr uint8_t kFlagReject = 0x01;
constexpr uint8_t kFlagEntries = 0x02;
constexpr uint8_t kFlagSnapshot = 0x04;
constexpr uint8_t kKnownFlags = kFlagReject | kFlagEntries | kFlagSnapshot;

constexpr uint8_t kLastMessageType = static_cast<uint8_t>(MessageType::kProposeDropped);
constexpr uint8_t kLastEntryType = static_cast<uint8_t>(EntryType::kConfChange);

// The smallest an encoded entry can be (term, index, type, data length): a count claiming more
// entries than the remaining bytes can hold is refused before anything is reserved.
constexpr size_t kMinEntryBytes = 8 + 8 + 1 + 8;

void putU8(std::string& out, uint8_t v) { out.push_back(static_cast<char>(v)); }

void putU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void putU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void putBytes(std::string& out, const std::string& bytes) {
  putU64(out, bytes.size());
  out += bytes;
}

void putIds(std::string& out, const std::vector<NodeId>& ids) {
  SHOAL_CHECK(ids.size() <= UINT32_MAX);
  putU32(out, static_cast<uint32_t>(ids.size()));
  for (NodeId id : ids) putU64(out, id);
}

bool hasSnapshot(const Snapshot& s) {
  return s.index != 0 || s.term != 0 || !s.voters.empty() || !s.learners.empty() || !s.data.empty();
}

// Reads the encoding front to back. Every read checks the remaining length first; the first
// failure is kept (with the field it was reading) and every later read fails too.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}

  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  size_t remaining() const { return bytes_.size() - pos_; }
  size_t position() const { return pos_; }

  void fail(std::string what) {
    if (error_.empty()) error_ = std::move(what);
  }

  uint8_t u8(const char* field) {
    if (!need(1, field)) return 0;
    return static_cast<uint8_t>(bytes_[pos_++]);
  }

  uint32_t u32(const char* field) {
    if (!need(4, field)) return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      v |= static_cast<uint32_t>(static_cast<uint8_t>(bytes_[pos_ + i])) << (8 * i);
    }
    pos_ += 4;
    return v;
  }

  uint64_t u64(const char* field) {
    if (!need(8, field)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) {
      v |= static_cast<uint64_t>(static_cast<uint8_t>(bytes_[pos_ + i])) << (8 * i);
    }
    pos_ += 8;
    return v;
  }

  std::string bytes(const char* field) {
    uint64_t len = u64(field);
    if (failed()) return {};
    if (len > remaining()) {
      fail(std::string(field) + " claims " + std::to_string(len) + " bytes, only " +
           std::to_string(remaining()) + " left");
      return {};
    }
    std::string out(bytes_.substr(pos_, static_cast<size_t>(len)));
    pos_ += static_cast<size_t>(len);
    return out;
  }

  std::vector<NodeId> ids(const char* field) {
    uint32_t count = u32(field);
    if (failed()) return {};
    if (count > remaining() / 8) {
      fail(std::string(field) + " claims " + std::to_string(count) + " ids, only " +
           std::to_string(remaining()) + " bytes left");
      return {};
    }
    std::vector<NodeId> out;
    out.reserve(count);
    for (uint32_t i = 0; i < count; ++i) out.push_back(u64(field));
    return out;
  }

 private:
  bool need(size_t n, const char* field) {
    if (failed()) return false;
    if (remaining() < n) {
      fail(std::string("truncated at byte ") + std::to_string(pos_) + " reading " + field);
      return false;
    }
    return true;
  }

  std::string_view bytes_;
  size_t pos_ = 0;
  std::string error_;
};

}  // namespace

std::string encodeMessage(const Message& m) {
  const bool snapshot = hasSnapshot(m.snapshot);
  size_t size = 2 + 1 + 8 * 8;
  if (!m.entries.empty()) {
    size += 4;
    for (const Entry& e : m.entries) size += kMinEntryBytes + e.data.size();
  }
  if (snapshot) {
    size += 8 + 8 + 4 + 4 + 8 * (m.snapshot.voters.size() + m.snapshot.learners.size()) + 8 +
            m.snapshot.data.size();
  }

  std::string out;
  out.reserve(size);
  putU8(out, kCodecVersion);
  putU8(out, static_cast<uint8_t>(m.type));
  uint8_t flags = 0;
  if (m.reject) flags |= kFlagReject;
  if (!m.entries.empty()) flags |= kFlagEntries;
  if (snapshot) flags |= kFlagSnapshot;
  putU8(out, flags);
  putU64(out, m.from);
  putU64(out, m.to);
  putU64(out, m.term);
  putU64(out, m.logTerm);
  putU64(out, m.index);
  putU64(out, m.commit);
  putU64(out, m.rejectHint);
  putU64(out, m.context);
  if (!m.entries.empty()) {
    SHOAL_CHECK(m.entries.size() <= UINT32_MAX);
    putU32(out, static_cast<uint32_t>(m.entries.size()));
    for (const Entry& e : m.entries) {
      putU64(out, e.term);
      putU64(out, e.index);
      putU8(out, static_cast<uint8_t>(e.type));
      putBytes(out, e.data);
    }
  }
  if (snapshot) {
    putU64(out, m.snapshot.index);
    putU64(out, m.snapshot.term);
    putIds(out, m.snapshot.voters);
    putIds(out, m.snapshot.learners);
    putBytes(out, m.snapshot.data);
  }
  SHOAL_ASSERT(out.size() == size);
  return out;
}

Result<Message> decodeMessage(std::string_view bytes) {
  auto bad = [](const std::string& why) { return Status::invalidArgument("raft message: " + why); };
  Reader r(bytes);
  uint8_t version = r.u8("version");
  if (r.failed()) return bad(r.error());
  if (version != kCodecVersion) {
    return bad("unsupported encoding version " + std::to_string(version) + " (this build reads " +
               std::to_string(kCodecVersion) + ")");
  }
  Message m;
  uint8_t type = r.u8("type");
  uint8_t flags = r.u8("flags");
  if (r.failed()) return bad(r.error());
  if (type > kLastMessageType) return bad("unknown message type " + std::to_string(type));
  if ((flags & ~kKnownFlags) != 0) return bad("unknown flags " + std::to_string(flags));
  m.type = static_cast<MessageType>(type);
  m.reject = (flags & kFlagReject) != 0;
  m.from = r.u64("from");
  m.to = r.u64("to");
  m.term = r.u64("term");
  m.logTerm = r.u64("logTerm");
  m.index = r.u64("index");
  m.commit = r.u64("commit");
  m.rejectHint = r.u64("rejectHint");
  m.context = r.u64("context");
  if (r.failed()) return bad(r.error());

  if (flags & kFlagEntries) {
    uint32_t count = r.u32("entry count");
    if (r.failed()) return bad(r.error());
    if (count == 0) return bad("entries flag set with an entry count of 0");
    if (count > r.remaining() / kMinEntryBytes) {
      return bad("entry count " + std::to_string(count) + " does not fit in the " +
                 std::to_string(r.remaining()) + " bytes left");
    }
    m.entries.reserve(count);
    for (uint32_t i = 0; i < count; ++i) {
      Entry e;
      e.term = r.u64("entry term");
      e.index = r.u64("entry index");
      uint8_t entryType = r.u8("entry type");
      e.data = r.bytes("entry data");
      if (r.failed()) return bad("entries[" + std::to_string(i) + "]: " + r.error());
      if (entryType > kLastEntryType) {
        return bad("entries[" + std::to_string(i) + "]: unknown entry type " +
                   std::to_string(entryType));
      }
      e.type = static_cast<EntryType>(entryType);
      m.entries.push_back(std::move(e));
    }
  }
  if (flags & kFlagSnapshot) {
    m.snapshot.index = r.u64("snapshot index");
    m.snapshot.term = r.u64("snapshot term");
    m.snapshot.voters = r.ids("snapshot voters");
    m.snapshot.learners = r.ids("snapshot learners");
    m.snapshot.data = r.bytes("snapshot data");
    if (r.failed()) return bad(r.error());
    // One encoding per message: an empty snapshot is left out, never sent.
    if (!hasSnapshot(m.snapshot)) return bad("snapshot flag set with an empty snapshot");
  }
  if (r.remaining() != 0) {
    return bad(std::to_string(r.remaining()) + " trailing bytes after byte " +
               std::to_string(r.position()));
  }
  return m;
}

}  // namespace shoal::raft
