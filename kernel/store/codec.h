#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "kernel/common/status.h"
#include "kernel/store/object.h"

namespace shoal::store {

// The binary envelope shared by the Raft log (ChangeSet) and snapshots: little-endian,
// unsigned LEB128 varints for counts, lengths and versions, zigzag varints for signed values,
// strings as varint length + bytes. An object encodes as
//   u8 kind, str id, varint version, zigzag createdNs, zigzag updatedNs, str name,
//   varint nLabels, (str key, str value)* in key order, str spec, str status,
//   then for tasks: str serviceId, str nodeId, varint slot, zigzag desiredState
//   and for nodes: u8 role, u8 availability.
// The encoding of an object is canonical (one object, one byte string), which digest() uses.

void putVarint(std::string& out, uint64_t v);
inline void putZigzag(std::string& out, int64_t v) {
  putVarint(out, (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63));
}
void putString(std::string& out, std::string_view s);
void putFixed32(std::string& out, uint32_t v);

void encodeObject(const Object& object, std::string& out);
// The exact number of bytes encodeObject appends.
std::size_t encodedSize(const Object& object);
std::size_t varintSize(uint64_t v);

// Reads what the put* functions wrote, never past the end. The first failure is kept (later
// reads fail too) and names the byte offset and what was being read, e.g.
// "truncated at byte 17 reading the object name". THREAD: one thread.
class ByteReader {
 public:
  explicit ByteReader(std::string_view data) : data_(data) {}

  bool u8(uint8_t& v, const char* what);
  bool varint(uint64_t& v, const char* what);
  bool zigzag(int64_t& v, const char* what);
  bool string(std::string_view& s, const char* what);
  bool fixed32(uint32_t& v, const char* what);
  // Records a semantic error at byte `at` (default: the current offset), e.g.
  // "unknown object kind 12 at byte 40".
  bool fail(const std::string& what, std::size_t at = std::string_view::npos);

  std::size_t offset() const { return pos_; }
  std::size_t remaining() const { return data_.size() - pos_; }
  bool atEnd() const { return pos_ == data_.size(); }
  const Status& status() const { return status_; }

 private:
  bool truncated(const char* what);

  std::string_view data_;
  std::size_t pos_ = 0;
  Status status_;
};

// Reads one object written by encodeObject. Checks the form (known kind and enum values,
// label keys strictly increasing), not validateObject's rules.
bool decodeObject(ByteReader& in, Object& out);

}  // namespace shoal::store
