#include "kernel/raft/raft_storage.h"

#include <cstring>

#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/iterator.h>
#include <leveldb/options.h>
#include <leveldb/write_batch.h>

#include <algorithm>
#include <array>
#include <cstdio>

#include <utility>
#include "kernel/common/aead.h"
#include "kernel/common/assert.h"

namespace shoal::raft {

namespace {

// Keys (README "Storage"): one byte of prefix, and for entries the index in big-endian so that
// LevelDB's bytewise order is index order. Sorted: entries < hard state < meta < snapshot.
constexpr char kEntryPrefix = 'E';
constexpr std::size_t kEntryKeySize = 9;
constexpr std::string_view kHardStateKey = "H";
constexpr std::string_view kMetaKey = "M";
constexpr std::string_view kSnapshotKey = "S";

// The meta record is plain text, not framed, so that any later build can read it whatever the
// framing has become: "shoal-raft <format version>".
constexpr std::string_view kMarkerPrefix = "shoal-raft ";

// Every other value: [record version][CRC32C, 4 bytes little-endian][payload]. The CRC covers
// the key, the version byte and the payload, so a valid record under the wrong key fails too.
constexpr uint8_t kRecordVersion = 1;        // the payload as it is
constexpr uint8_t kSealedRecordVersion = 2;  // the payload sealed with the data key
constexpr std::size_t kFrameHeaderSize = 5;

constexpr std::array<uint32_t, 256> makeCrc32cTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) != 0 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrc32cTable = makeCrc32cTable();

std::string_view view(const leveldb::Slice& s) { return {s.data(), s.size()}; }
leveldb::Slice slice(std::string_view s) { return {s.data(), s.size()}; }

std::string entryKey(Index index) {
  std::string key(kEntryKeySize, '\0');
  key[0] = kEntryPrefix;
  for (int i = 0; i < 8; ++i) key[1 + i] = static_cast<char>(index >> (56 - 8 * i));
  return key;
}

Index entryKeyIndex(std::string_view key) {
  Index index = 0;
  for (std::size_t i = 1; i < kEntryKeySize; ++i) index = (index << 8) | uint8_t(key[i]);
  return index;
}

void putU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void putU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

// Little-endian fixed-width reads off the front of a payload; false when it is too short.
class Decoder {
 public:
  explicit Decoder(std::string_view in) : in_(in) {}

  bool u64(uint64_t& v) { return fixed(v, 8); }
  bool u32(uint32_t& v) { return fixed(v, 4); }
  bool u8(uint8_t& v) { return fixed(v, 1); }
  std::size_t remaining() const { return in_.size(); }
  std::string_view rest() const { return in_; }

 private:
  template <class T>
  bool fixed(T& v, std::size_t n) {
    if (in_.size() < n) return false;
    v = 0;
    for (std::size_t i = n; i-- > 0;) v = static_cast<T>((v << 8) | uint8_t(in_[i]));
    in_.remove_prefix(n);
    return true;
  }

  std::string_view in_;
};

// Adding an EntryType without deciding how it is stored fails the build here (-Wswitch).
bool knownEntryType(EntryType type) {
  switch (type) {
    case EntryType::kNormal:
    case EntryType::kConfChange:
      return true;
  }
  return false;
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// A key or marker for an error message: printable ASCII as is, the rest as \xNN, at most 40.
std::string printable(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < 40; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > 40) out += "...";
  return out;
}

uint32_t recordCrc(std::string_view key, char version, std::string_view payload) {
  return crc32c(payload, crc32c(std::string_view(&version, 1), crc32c(key)));
}

// A record as stored: sealed (AES-256-GCM, the key as associated data, so a record moved
// under another key fails) when there is a data key.
std::string frame(std::string_view key, std::string_view payload, const std::string& dataKey) {
  std::string sealed;
  if (!dataKey.empty()) {
    auto r = aead::seal(dataKey, payload, key);
    SHOAL_CHECK(r.isOk());  // only a wrong-sized key fails, and open() checked it
    sealed = std::move(r).value();
    payload = sealed;
  }
  std::string value;
  value.reserve(kFrameHeaderSize + payload.size());
  value.push_back(static_cast<char>(dataKey.empty() ? kRecordVersion : kSealedRecordVersion));
  putU32(value, recordCrc(key, value[0], payload));
  value.append(payload);
  return value;
}

// The payload of a framed record, or why it cannot be trusted. Plain records (written before
// the data key existed) read with or without a key; sealed ones need it.
Result<std::string> unframe(std::string_view key, std::string_view value,
                            const std::string& dataKey) {
  if (value.size() < kFrameHeaderSize)
    return Status::internal("record too short (" + std::to_string(value.size()) + " bytes)");
  const uint8_t version = uint8_t(value[0]);
  if (version != kRecordVersion && version != kSealedRecordVersion)
    return Status::internal("unknown record version " + std::to_string(version));
  uint32_t stored = 0;
  Decoder(value.substr(1, 4)).u32(stored);
  std::string_view payload = value.substr(kFrameHeaderSize);
  uint32_t computed = recordCrc(key, value[0], payload);
  if (stored != computed)
    return Status::internal("checksum mismatch (stored " + hex32(stored) + ", computed " +
                            hex32(computed) + ")");
  if (version == kRecordVersion) return std::string(payload);
  if (dataKey.empty()) {
    return Status::internal("the record is encrypted and no data key was given");
  }
  auto plain = aead::open(dataKey, payload, key);
  if (!plain) return Status::internal("cannot decrypt: " + plain.status().message());
  return plain;
}

std::string encodeEntry(const Entry& e) {
  std::string out;
  out.reserve(17 + e.data.size());
  putU64(out, e.term);
  putU64(out, e.index);
  out.push_back(static_cast<char>(e.type));
  out.append(e.data);
  return out;
}

Result<Entry> decodeEntry(std::string_view payload) {
  Decoder d(payload);
  Entry e;
  uint8_t type = 0;
  if (!d.u64(e.term) || !d.u64(e.index) || !d.u8(type))
    return Status::internal("record too short for an entry");
  e.type = static_cast<EntryType>(type);
  if (!knownEntryType(e.type))
    return Status::internal("unknown entry type " + std::to_string(type));
  e.data.assign(d.rest());
  return e;
}

std::string encodeHardState(const HardState& hs) {
  std::string out;
  putU64(out, hs.term);
  putU64(out, hs.vote);
  putU64(out, hs.commit);
  return out;
}

Result<HardState> decodeHardState(std::string_view payload) {
  Decoder d(payload);
  HardState hs;
  if (!d.u64(hs.term) || !d.u64(hs.vote) || !d.u64(hs.commit) || d.remaining() != 0)
    return Status::internal("a hard state record is 24 bytes, this one is " +
                            std::to_string(payload.size()));
  return hs;
}

void putIds(std::string& out, const std::vector<NodeId>& ids) {
  putU32(out, static_cast<uint32_t>(ids.size()));
  for (NodeId id : ids) putU64(out, id);
}

bool getIds(Decoder& d, std::vector<NodeId>& ids) {
  uint32_t n = 0;
  if (!d.u32(n) || d.remaining() / 8 < n) return false;
  ids.resize(n);
  for (NodeId& id : ids) d.u64(id);
  return true;
}

std::string encodeSnapshot(const Snapshot& s) {
  std::string out;
  out.reserve(24 + 8 * (s.voters.size() + s.learners.size()) + s.data.size());
  putU64(out, s.index);
  putU64(out, s.term);
  putIds(out, s.voters);
  putIds(out, s.learners);
  out.append(s.data);
  return out;
}

Result<Snapshot> decodeSnapshot(std::string_view payload) {
  Decoder d(payload);
  Snapshot s;
  if (!d.u64(s.index) || !d.u64(s.term) || !getIds(d, s.voters) || !getIds(d, s.learners))
    return Status::internal("record too short for a snapshot");
  s.data.assign(d.rest());
  if (s.index == 0) return Status::internal("a stored snapshot has index 0");
  return s;
}

// Files LevelDB leaves when it dies while creating a database, before any data exists: a
// directory holding only these may get a new database.
bool isCreationLeftover(const std::string& name) {
  return name == "." || name == ".." || name == "LOCK" || name == "LOG" || name == "LOG.old" ||
         name.starts_with("MANIFEST-") || name.ends_with(".dbtmp");
}

}  // namespace

namespace {

uint32_t crc32cTable(std::string_view data, uint32_t crc) {
  for (char ch : data) crc = kCrc32cTable[(crc ^ uint8_t(ch)) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
// SSE 4.2's crc32 instruction computes exactly CRC-32C (Castagnoli), 8 bytes at a time: the
// log's records and snapshots are checksummed on every save and load, so this matters.
__attribute__((target("sse4.2"))) uint32_t crc32cSse42(std::string_view data, uint32_t crc) {
  const char* p = data.data();
  std::size_t n = data.size();
  uint64_t c = crc;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = __builtin_ia32_crc32di(c, word);
  }
  auto c32 = static_cast<uint32_t>(c);
  for (; n > 0; ++p, --n) c32 = __builtin_ia32_crc32qi(c32, static_cast<unsigned char>(*p));
  return c32;
}
const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

uint32_t crc32c(std::string_view data, uint32_t crc) {
#if defined(__x86_64__)
  if (kHaveSse42) return ~crc32cSse42(data, ~crc);
#endif
  return ~crc32cTable(data, ~crc);
}

uint32_t crc32cPortable(std::string_view data, uint32_t crc) { return ~crc32cTable(data, ~crc); }

RaftStorage::RaftStorage(std::string dir, std::unique_ptr<leveldb::DB> db)
    : dir_(std::move(dir)), db_(std::move(db)) {}

RaftStorage::~RaftStorage() = default;

Result<std::unique_ptr<RaftStorage>> RaftStorage::open(const std::string& dir,
                                                       const RaftStorageOptions& options) {
  if (dir.empty()) return Status::invalidArgument("raft storage: no directory given");
  if (!options.dataKey.empty() && options.dataKey.size() != aead::kKeyBytes) {
    return Status::invalidArgument("raft storage: the data key must be " +
                                   std::to_string(aead::kKeyBytes) + " bytes");
  }
  leveldb::Env* env = options.env != nullptr ? options.env : leveldb::Env::Default();
  const std::string where = "raft storage at " + dir;

  // Create the directory and its parents; "already exists" errors are fine, and any real
  // failure shows up as GetChildren failing below.
  for (std::size_t pos = dir.find('/', 1);; pos = dir.find('/', pos + 1)) {
    static_cast<void>(env->CreateDir(pos == std::string::npos ? dir : dir.substr(0, pos)));
    if (pos == std::string::npos) break;
  }
  std::vector<std::string> children;
  leveldb::Status ls = env->GetChildren(dir, &children);
  if (!ls.ok()) return Status::internal(where + ": cannot create or list it: " + ls.ToString());

  // Only an empty directory gets a new database. LevelDB would happily create one beside
  // files it does not know, or over a database that lost its CURRENT file (and then delete
  // that database's files): a member that forgets its vote or its log breaks Raft's safety.
  bool hasCurrent = false;
  for (const std::string& name : children) {
    if (name == "CURRENT") hasCurrent = true;
  }
  if (!hasCurrent) {
    for (const std::string& name : children) {
      if (!isCreationLeftover(name))
        return Status::failedPrecondition(
            where + ": the directory holds files ('" + printable(name) +
            "') but no LevelDB database (no CURRENT file); refusing to create a log over them");
    }
  }

  leveldb::Options o;
  o.env = env;
  o.create_if_missing = !hasCurrent;
  // Stop at damage (a bad write-ahead log record, a bad table) instead of skipping past it.
  o.paranoid_checks = true;
  leveldb::DB* raw = nullptr;
  leveldb::Status s = leveldb::DB::Open(o, dir, &raw);
  if (!s.ok())
    return Status::internal(where + ": cannot open the LevelDB database: " + s.ToString());
  std::unique_ptr<RaftStorage> storage(new RaftStorage(dir, std::unique_ptr<leveldb::DB>(raw)));
  storage->dataKey_ = options.dataKey;
  Status marker = storage->checkFormatMarker();
  if (!marker.isOk()) return marker;
  return storage;
}

Status RaftStorage::checkFormatMarker() {
  const std::string where = "raft storage at " + dir_;
  leveldb::ReadOptions ro;
  ro.verify_checksums = true;
  std::string value;
  leveldb::Status s = db_->Get(ro, slice(kMetaKey), &value);
  if (s.IsNotFound()) {
    std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(ro));
    it->SeekToFirst();
    if (!it->status().ok())
      return Status::internal(where + ": cannot read the database: " + it->status().ToString());
    if (it->Valid())
      return Status::failedPrecondition(
          where + " holds data but no format marker: not a Shoal Raft log; refusing to use it");
    leveldb::WriteOptions wo;
    wo.sync = true;
    std::string marker = std::string(kMarkerPrefix) + std::to_string(kFormatVersion);
    s = db_->Put(wo, slice(kMetaKey), marker);
    if (!s.ok())
      return Status::internal(where + ": cannot write the format marker: " + s.ToString());
    return Status::ok();
  }
  if (!s.ok()) return Status::internal(where + ": cannot read the format marker: " + s.ToString());
  return checkMarkerValue(value);
}

Status RaftStorage::checkMarkerValue(std::string_view v) const {
  const std::string where = "raft storage at " + dir_;
  std::string_view number = v.substr(std::min(v.size(), kMarkerPrefix.size()));
  bool wellFormed = v.starts_with(kMarkerPrefix) && !number.empty() && number.size() <= 9 &&
                    number.find_first_not_of("0123456789") == std::string_view::npos;
  if (!wellFormed)
    return Status::failedPrecondition(where + ": unknown format marker '" + printable(v) +
                                      "': not a Shoal Raft log; refusing to use it");
  int version = std::stoi(std::string(number));
  if (version != kFormatVersion)
    return Status::notSupported(where + " has format version " + std::to_string(version) +
                                "; this build reads version " + std::to_string(kFormatVersion) +
                                " only; refusing to open it");
  return Status::ok();
}

Status RaftStorage::corrupt(const std::string& what) const {
  return Status::internal("raft log corrupt: " + what + " (in " + dir_ + ")");
}

Result<Durable> RaftStorage::load() { return scan(); }

Result<Durable> RaftStorage::scan() {
  leveldb::ReadOptions ro;
  ro.verify_checksums = true;
  ro.fill_cache = false;  // one pass over everything: keep the cache for later reads
  std::unique_ptr<leveldb::Iterator> it(db_->NewIterator(ro));
  Durable d;
  bool marker = false;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string_view key = view(it->key());
    std::string_view value = view(it->value());
    if (key.size() == kEntryKeySize && key[0] == kEntryPrefix) {
      Index index = entryKeyIndex(key);
      std::string what = "entry " + std::to_string(index);
      Result<std::string> payload = unframe(key, value, dataKey_);
      if (!payload) return corrupt(what + ": " + payload.status().message());
      Result<Entry> e = decodeEntry(*payload);
      if (!e) return corrupt(what + ": " + e.status().message());
      if (e->index != index)
        return corrupt(what + ": the record holds entry " + std::to_string(e->index));
      d.entries.push_back(std::move(e).value());
    } else if (key == kHardStateKey) {
      Result<std::string> payload = unframe(key, value, dataKey_);
      if (!payload) return corrupt("hard state: " + payload.status().message());
      Result<HardState> hs = decodeHardState(*payload);
      if (!hs) return corrupt("hard state: " + hs.status().message());
      d.hardState = *hs;
    } else if (key == kSnapshotKey) {
      Result<std::string> payload = unframe(key, value, dataKey_);
      if (!payload) return corrupt("snapshot: " + payload.status().message());
      Result<Snapshot> snap = decodeSnapshot(*payload);
      if (!snap) return corrupt("snapshot: " + snap.status().message());
      d.snapshot = std::move(snap).value();
    } else if (key == kMetaKey) {
      Status st = checkMarkerValue(value);
      if (!st.isOk()) return st;
      marker = true;
    } else {
      return corrupt("unexpected key '" + printable(key) + "'");
    }
  }
  if (!it->status().ok())
    return Status::internal("raft storage at " + dir_ +
                            ": cannot read the database: " + it->status().ToString());
  if (!marker) return corrupt("the format marker is gone");

  // The log's shape: it starts right after the snapshot, has no holes, terms never go down,
  // and the hard state agrees with it.
  Shape shape;
  shape.hardState = d.hardState;
  if (d.snapshot) {
    shape.snapIndex = d.snapshot->index;
    shape.snapTerm = d.snapshot->term;
  }
  Index expected = shape.snapIndex + 1;
  Term prevTerm = shape.snapTerm;
  for (const Entry& e : d.entries) {
    std::string what = "entry " + std::to_string(e.index);
    if (e.index < expected)
      return corrupt(what + " is covered by the snapshot at " + std::to_string(shape.snapIndex) +
                     " but still stored");
    if (e.index > expected) {
      std::string why;
      if (expected == shape.snapIndex + 1 && d.snapshot)
        why = " (the log must start right after the snapshot at " +
              std::to_string(shape.snapIndex) + ")";
      return corrupt("missing entry " + std::to_string(expected) + why);
    }
    if (e.term == 0) return corrupt(what + " has term 0");
    if (e.term < prevTerm)
      return corrupt(what + " has term " + std::to_string(e.term) + " < " +
                     (e.index == shape.snapIndex + 1 && d.snapshot ? "the snapshot's term "
                                                                   : "previous term ") +
                     std::to_string(prevTerm));
    prevTerm = e.term;
    ++expected;
  }
  shape.lastIndex = expected - 1;
  shape.lastTerm = prevTerm;
  if (d.hardState.commit > shape.lastIndex)
    return corrupt("hard state commit " + std::to_string(d.hardState.commit) +
                   " beyond last entry " + std::to_string(shape.lastIndex));
  if (shape.lastTerm > d.hardState.term)
    return corrupt((d.entries.empty() ? std::string("the snapshot")
                                      : "entry " + std::to_string(shape.lastIndex)) +
                   " has term " + std::to_string(shape.lastTerm) + " above the hard state's term " +
                   std::to_string(d.hardState.term));
  shape_ = shape;
  return d;
}

Status RaftStorage::ensureShape() {
  if (shape_) return Status::ok();
  Result<Durable> d = scan();
  return d ? Status::ok() : d.status();
}

Result<Term> RaftStorage::termAt(const Shape& shape, Index index) {
  if (index == shape.snapIndex) return shape.snapTerm;
  if (index == shape.lastIndex) return shape.lastTerm;
  if (index < shape.snapIndex || index > shape.lastIndex)
    return Status::internal("raft storage: no entry " + std::to_string(index) + " in the log");
  leveldb::ReadOptions ro;
  ro.verify_checksums = true;
  std::string key = entryKey(index);
  std::string value;
  leveldb::Status s = db_->Get(ro, key, &value);
  std::string what = "entry " + std::to_string(index);
  if (s.IsNotFound()) return corrupt("missing " + what);
  if (!s.ok())
    return Status::internal("raft storage at " + dir_ + ": cannot read " + what + ": " +
                            s.ToString());
  Result<std::string> payload = unframe(key, value, dataKey_);
  if (!payload) return corrupt(what + ": " + payload.status().message());
  Result<Entry> e = decodeEntry(*payload);
  if (!e) return corrupt(what + ": " + e.status().message());
  if (e->index != index)
    return corrupt(what + ": the record holds entry " + std::to_string(e->index));
  return e->term;
}

Status RaftStorage::save(const std::optional<HardState>& hs, const std::vector<Entry>& entries,
                         const std::optional<Snapshot>& snapshot) {
  if (!failed_.isOk()) return failed_;
  if (!hs && entries.empty() && !snapshot) return Status::ok();
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    std::string what = "save: entry " + std::to_string(e.index);
    if (e.index == 0 || e.term == 0)
      return Status::invalidArgument(what + " has term " + std::to_string(e.term) +
                                     " (index and term must be > 0)");
    if (!knownEntryType(e.type))
      return Status::invalidArgument(what + " has unknown type " +
                                     std::to_string(static_cast<int>(e.type)));
    if (i > 0 && e.index != entries[i - 1].index + 1)
      return Status::invalidArgument(what + " follows entry " +
                                     std::to_string(entries[i - 1].index) + ": not contiguous");
    if (i > 0 && e.term < entries[i - 1].term)
      return Status::invalidArgument(what + " has term " + std::to_string(e.term) +
                                     " < previous term " + std::to_string(entries[i - 1].term));
  }
  if (snapshot && (snapshot->index == 0 || snapshot->term == 0))
    return Status::invalidArgument("save: a snapshot needs an index and a term > 0");
  Status st = ensureShape();
  if (!st.isOk()) return st;

  Shape next = *shape_;
  leveldb::WriteBatch batch;
  if (snapshot) {
    if (snapshot->index < next.snapIndex)
      return Status::failedPrecondition("save: snapshot at " + std::to_string(snapshot->index) +
                                        " is older than the stored snapshot at " +
                                        std::to_string(next.snapIndex));
    // InstallSnapshot: entries after the snapshot survive only if the log agrees with it at
    // its index; otherwise they belong to another history and the whole log goes.
    bool keepSuffix = false;
    if (snapshot->index <= next.lastIndex) {
      Result<Term> t = termAt(next, snapshot->index);
      if (!t) return t.status();
      keepSuffix = *t == snapshot->term;
    }
    Index dropTo = keepSuffix ? snapshot->index : next.lastIndex;
    for (Index i = next.snapIndex + 1; i <= dropTo; ++i) batch.Delete(entryKey(i));
    batch.Put(slice(kSnapshotKey), frame(kSnapshotKey, encodeSnapshot(*snapshot), dataKey_));
    if (!keepSuffix) {
      next.lastIndex = snapshot->index;
      next.lastTerm = snapshot->term;
    }
    next.snapIndex = snapshot->index;
    next.snapTerm = snapshot->term;
  }
  if (!entries.empty()) {
    const Entry& first = entries.front();
    if (first.index <= next.snapIndex)
      return Status::failedPrecondition("save: entry " + std::to_string(first.index) +
                                        " is already covered by the snapshot at " +
                                        std::to_string(next.snapIndex));
    if (first.index > next.lastIndex + 1)
      return Status::failedPrecondition("save: entries start at " + std::to_string(first.index) +
                                        " but the log ends at " + std::to_string(next.lastIndex) +
                                        "; that would leave a gap");
    Result<Term> prev = termAt(next, first.index - 1);
    if (!prev) return prev.status();
    if (first.term < *prev)
      return Status::failedPrecondition("save: entry " + std::to_string(first.index) +
                                        " has term " + std::to_string(first.term) +
                                        " < previous term " + std::to_string(*prev));
    // Conflict truncation: the new entries overwrite [first, back]; what lies beyond goes.
    for (Index i = entries.back().index + 1; i <= next.lastIndex; ++i) batch.Delete(entryKey(i));
    for (const Entry& e : entries) {
      std::string key = entryKey(e.index);
      batch.Put(key, frame(key, encodeEntry(e), dataKey_));
    }
    next.lastIndex = entries.back().index;
    next.lastTerm = entries.back().term;
  }
  // Only the term, the vote, entries and snapshots are promises to other members; the commit
  // index is not (a member that loses its latest value after a crash learns it again from
  // the leader, and the value it keeps never exceeds what it has durably stored). So a Ready
  // that only moves the commit index is written without an fsync: that halves the fsyncs of
  // a busy follower (one for the entries, none for the commit that follows).
  bool mustSync = snapshot.has_value() || !entries.empty();
  if (hs) {
    mustSync = mustSync || hs->term != next.hardState.term || hs->vote != next.hardState.vote;
    next.hardState = *hs;
    batch.Put(slice(kHardStateKey), frame(kHardStateKey, encodeHardState(*hs), dataKey_));
  }
  // Refuse to write a state that load() would reject.
  if (next.hardState.commit > next.lastIndex)
    return Status::failedPrecondition("save: hard state commit " +
                                      std::to_string(next.hardState.commit) +
                                      " beyond last entry " + std::to_string(next.lastIndex));
  if (next.lastTerm > next.hardState.term)
    return Status::failedPrecondition(
        "save: the last entry's term " + std::to_string(next.lastTerm) +
        " is above the hard state's term " + std::to_string(next.hardState.term));
  return write(batch, next, mustSync);
}

Status RaftStorage::compact(Index upTo, const Snapshot& snapshot) {
  if (!failed_.isOk()) return failed_;
  std::string what = "compact up to " + std::to_string(upTo);
  if (upTo == 0 || snapshot.index != upTo)
    return Status::invalidArgument(what +
                                   ": the snapshot must cover exactly the compacted "
                                   "entries (its index is " +
                                   std::to_string(snapshot.index) + ")");
  Status st = ensureShape();
  if (!st.isOk()) return st;
  Shape next = *shape_;
  if (upTo < next.snapIndex)
    return Status::failedPrecondition(what + ": older than the stored snapshot at " +
                                      std::to_string(next.snapIndex));
  if (upTo > next.lastIndex)
    return Status::failedPrecondition(what + ": beyond the last entry " +
                                      std::to_string(next.lastIndex));
  if (upTo > next.hardState.commit)
    return Status::failedPrecondition(what + ": beyond the commit index " +
                                      std::to_string(next.hardState.commit) +
                                      " (only committed entries go into a snapshot)");
  Result<Term> term = termAt(next, upTo);
  if (!term) return term.status();
  if (*term != snapshot.term)
    return Status::failedPrecondition(what + ": the snapshot's term " +
                                      std::to_string(snapshot.term) + " is not entry " +
                                      std::to_string(upTo) + "'s term " + std::to_string(*term));
  leveldb::WriteBatch batch;
  for (Index i = next.snapIndex + 1; i <= upTo; ++i) batch.Delete(entryKey(i));
  batch.Put(slice(kSnapshotKey), frame(kSnapshotKey, encodeSnapshot(snapshot), dataKey_));
  next.snapIndex = upTo;
  next.snapTerm = snapshot.term;
  return write(batch, next);
}

Status RaftStorage::write(leveldb::WriteBatch& batch, const Shape& next, bool sync) {
  leveldb::WriteOptions wo;
  wo.sync = sync;  // durable before the Ready's messages leave (README "Storage")
  leveldb::Status s = db_->Write(wo, &batch);
  if (!s.ok()) {
    failed_ = Status::internal("raft storage at " + dir_ +
                               ": a write failed, so what reached the disk is unknown; "
                               "restart from load(): " +
                               s.ToString());
    return failed_;
  }
  shape_ = next;
  return Status::ok();
}

}  // namespace shoal::raft
