#include "dns/message.hpp"

#include <algorithm>

namespace shoal::overlay::dns {
namespace {

// A chain of pointers is already bounded by the strictly-backwards rule; this only caps the work
// a hostile message can cause (a legitimate name needs a handful).
constexpr int kMaxPointerHops = 64;
constexpr size_t kRecordFixedSize = 10;  // type, class, TTL, rdlength

uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
uint32_t get32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | p[3];
}
void put16(std::vector<uint8_t>& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v & 0xFF));
}
void put32(std::vector<uint8_t>& b, uint32_t v) {
  put16(b, static_cast<uint16_t>(v >> 16));
  put16(b, static_cast<uint16_t>(v & 0xFFFF));
}
void set16(std::vector<uint8_t>& b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v >> 8);
  b[at + 1] = static_cast<uint8_t>(v & 0xFF);
}

void setWhy(std::string* why, const char* text) {
  if (why) *why = text;
}

struct RecordHead {
  std::vector<std::string> labels;
  uint16_t type = 0;
  uint16_t rclass = 0;
  uint32_t ttl = 0;
  size_t rdata = 0;  // offset of the rdata
  uint16_t rdlength = 0;
};

// Reads one resource record at *offset and moves past it; false when any part lies outside.
bool readRecord(const uint8_t* data, size_t len, size_t* offset, RecordHead* out) {
  size_t off = *offset;
  out->labels.clear();
  if (!readName(data, len, &off, &out->labels)) return false;
  if (len - off < kRecordFixedSize) return false;
  out->type = get16(data + off);
  out->rclass = get16(data + off + 2);
  out->ttl = get32(data + off + 4);
  out->rdlength = get16(data + off + 8);
  off += kRecordFixedSize;
  if (len - off < out->rdlength) return false;
  out->rdata = off;
  *offset = off + out->rdlength;
  return true;
}

void putName(std::vector<uint8_t>& b, const std::vector<std::string>& labels) {
  for (const std::string& label : labels) {
    b.push_back(static_cast<uint8_t>(label.size()));
    b.insert(b.end(), label.begin(), label.end());
  }
  b.push_back(0);
}

}  // namespace

bool readName(const uint8_t* msg, size_t len, size_t* offset, std::vector<std::string>* labels) {
  size_t pos = *offset;
  size_t runStart = pos;  // every pointer must point before the run of labels it ends
  size_t end = 0;         // where the name ends in place (set at the first pointer)
  bool jumped = false;
  int hops = 0;
  size_t wire = 0;
  std::vector<std::string> found;
  for (;;) {
    if (pos >= len) return false;
    const uint8_t c = msg[pos];
    if ((c & 0xC0) == 0xC0) {
      if (pos + 1 >= len) return false;
      const size_t target = (static_cast<size_t>(c & 0x3F) << 8) | msg[pos + 1];
      if (target >= runStart || ++hops > kMaxPointerHops) return false;
      if (!jumped) {
        end = pos + 2;
        jumped = true;
      }
      pos = runStart = target;
      continue;
    }
    if ((c & 0xC0) != 0) return false;  // 0x40 (extended) and 0x80 (reserved) label types
    ++pos;
    wire += 1 + c;
    if (wire > kMaxNameWireSize) return false;
    if (c == 0) break;
    if (len - pos < c) return false;
    found.emplace_back(reinterpret_cast<const char*>(msg + pos), c);
    pos += c;
  }
  *offset = jumped ? end : pos;
  labels->insert(labels->end(), found.begin(), found.end());
  return true;
}

std::string nameText(const std::vector<std::string>& labels) {
  std::string text;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i > 0) text.push_back('.');
    for (char c : labels[i]) {
      if (c == '.' || c == '\\') text.push_back('\\');
      text.push_back(c);
    }
  }
  return text;
}

std::string normalizeName(std::string_view name) {
  if (!name.empty() && name.back() == '.' && !(name.size() >= 2 && name[name.size() - 2] == '\\')) {
    name.remove_suffix(1);
  }
  std::string out(name);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

ParseResult parseQuery(const uint8_t* data, size_t len, Query* out, std::string* why) {
  if (data == nullptr || len < kHeaderSize) {
    setWhy(why, "shorter than a DNS header");
    return ParseResult::kDrop;
  }
  const uint16_t flags = get16(data + 2);
  if (flags & 0x8000) {
    setWhy(why, "a response, not a query");
    return ParseResult::kDrop;
  }
  Query q;
  q.id = get16(data);
  q.opcode = static_cast<uint8_t>((flags >> 11) & 0x0F);
  q.recursionDesired = (flags & 0x0100) != 0;
  q.checkingDisabled = (flags & 0x0010) != 0;
  if (q.opcode != 0) {
    setWhy(why, "opcode is not QUERY");
    return ParseResult::kNotImplemented;
  }
  const uint16_t qdcount = get16(data + 4);
  const size_t others = static_cast<size_t>(get16(data + 6)) + get16(data + 8) + get16(data + 10);
  const size_t arStart = others - get16(data + 10);
  if (qdcount != 1) {
    setWhy(why, "question count is not 1");
    return ParseResult::kMalformed;
  }
  size_t off = kHeaderSize;
  if (!readName(data, len, &off, &q.labels)) {
    setWhy(why, "bad question name");
    return ParseResult::kMalformed;
  }
  if (len - off < 4) {
    setWhy(why, "question runs past the end");
    return ParseResult::kMalformed;
  }
  q.qtype = get16(data + off);
  q.qclass = get16(data + off + 2);
  off += 4;
  // Each record takes at least 11 bytes, so a count that cannot fit is refused before looping.
  if (others > (len - off) / (1 + kRecordFixedSize)) {
    setWhy(why, "record counts exceed the message");
    return ParseResult::kMalformed;
  }
  RecordHead rr;
  for (size_t i = 0; i < others; ++i) {
    if (!readRecord(data, len, &off, &rr)) {
      setWhy(why, "record runs past the end");
      return ParseResult::kMalformed;
    }
    if (rr.type != kTypeOPT) continue;
    if (i < arStart || q.edns || !rr.labels.empty()) {
      setWhy(why, "misplaced or repeated OPT record");
      return ParseResult::kMalformed;
    }
    q.edns = true;
    q.ednsUdpSize = rr.rclass;
    q.ednsVersion = static_cast<uint8_t>((rr.ttl >> 16) & 0xFF);
  }
  q.name = nameText(q.labels);
  *out = std::move(q);
  return ParseResult::kOk;
}

size_t responseLimit(const Query& q, bool tcp) {
  if (tcp) return kMaxTcpSize;
  if (!q.edns) return kClassicUdpSize;
  return std::clamp<size_t>(q.ednsUdpSize, kClassicUdpSize, kMaxUdpSize);
}

std::vector<uint8_t> buildAnswer(const Query& q, uint16_t rcode, const std::vector<uint32_t>& ipv4,
                                 uint32_t ttl, size_t limit) {
  constexpr size_t kARecordSize = 2 + kRecordFixedSize + 4;  // pointer owner + fixed + address
  constexpr size_t kOptSize = 1 + kRecordFixedSize;
  std::vector<uint8_t> b;
  b.reserve(std::min(limit, kHeaderSize + kMaxNameWireSize + 4 + kOptSize + ipv4.size() * 16));
  put16(b, q.id);
  uint16_t flags =
      0x8000 | static_cast<uint16_t>(q.opcode << 11) | 0x0400 | 0x0080 | (rcode & 0x0F);
  if (q.recursionDesired) flags |= 0x0100;
  if (q.checkingDisabled) flags |= 0x0010;
  put16(b, flags);
  put16(b, 1);
  put16(b, 0);  // answer count, set below
  put16(b, 0);
  put16(b, q.edns ? 1 : 0);
  putName(b, q.labels);
  put16(b, q.qtype);
  put16(b, q.qclass);
  const size_t fixed = b.size() + (q.edns ? kOptSize : 0);
  const size_t room = limit > fixed ? (limit - fixed) / kARecordSize : 0;
  const size_t count = std::min(ipv4.size(), room);
  if (count < ipv4.size()) b[2] |= 0x02;  // TC
  set16(b, 6, static_cast<uint16_t>(count));
  for (size_t i = 0; i < count; ++i) {
    put16(b, 0xC000 | kHeaderSize);  // owner: the question's name
    put16(b, kTypeA);
    put16(b, kClassIN);
    put32(b, ttl);
    put16(b, 4);
    put32(b, ipv4[i]);
  }
  if (q.edns) {
    b.push_back(0);
    put16(b, kTypeOPT);
    put16(b, static_cast<uint16_t>(kMaxUdpSize));
    put32(b, static_cast<uint32_t>((rcode >> 4) & 0xFF) << 24);  // extended rcode, version 0
    put16(b, 0);
  }
  return b;
}

std::vector<uint8_t> buildHeaderError(const uint8_t* data, size_t len, uint16_t rcode) {
  if (data == nullptr || len < kHeaderSize) return {};
  std::vector<uint8_t> b;
  put16(b, get16(data));
  const uint16_t asked = get16(data + 2);
  put16(b, static_cast<uint16_t>(0x8000 | (asked & 0x7900) | 0x0080 | (rcode & 0x0F)));
  for (int i = 0; i < 4; ++i) put16(b, 0);
  return b;
}

std::vector<uint8_t> buildQuery(uint16_t id, std::string_view name, uint16_t qtype,
                                uint16_t ednsUdpSize) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  std::vector<std::string> labels;
  while (!name.empty()) {
    const size_t dot = name.find('.');
    const std::string_view label = name.substr(0, dot);
    if (label.empty() || label.size() > kMaxLabelSize) return {};
    labels.emplace_back(label);
    if (dot == std::string_view::npos) break;
    name.remove_prefix(dot + 1);
    if (name.empty()) return {};
  }
  std::vector<uint8_t> b;
  put16(b, id);
  put16(b, 0x0100);
  put16(b, 1);
  put16(b, 0);
  put16(b, 0);
  put16(b, ednsUdpSize ? 1 : 0);
  putName(b, labels);
  if (b.size() - kHeaderSize > kMaxNameWireSize) return {};
  put16(b, qtype);
  put16(b, kClassIN);
  if (ednsUdpSize) {
    b.push_back(0);
    put16(b, kTypeOPT);
    put16(b, ednsUdpSize);
    put32(b, 0);
    put16(b, 0);
  }
  return b;
}

bool parseResponse(const uint8_t* data, size_t len, Response* out, std::string* why) {
  if (data == nullptr || len < kHeaderSize) {
    setWhy(why, "shorter than a DNS header");
    return false;
  }
  Response r;
  r.id = get16(data);
  r.flags = get16(data + 2);
  if (!(r.flags & 0x8000)) {
    setWhy(why, "not a response");
    return false;
  }
  r.rcode = r.flags & 0x0F;
  r.truncated = (r.flags & 0x0200) != 0;
  r.authoritative = (r.flags & 0x0400) != 0;
  r.questionCount = get16(data + 4);
  r.answerCount = get16(data + 6);
  r.authorityCount = get16(data + 8);
  r.additionalCount = get16(data + 10);
  size_t off = kHeaderSize;
  for (uint16_t i = 0; i < r.questionCount; ++i) {
    std::vector<std::string> labels;
    if (!readName(data, len, &off, &labels) || len - off < 4) {
      setWhy(why, "bad question");
      return false;
    }
    if (i == 0) {
      r.questionName = nameText(labels);
      r.qtype = get16(data + off);
      r.qclass = get16(data + off + 2);
    }
    off += 4;
  }
  r.questionEnd = off;
  const size_t total = static_cast<size_t>(r.answerCount) + r.authorityCount + r.additionalCount;
  RecordHead rr;
  for (size_t i = 0; i < total; ++i) {
    if (!readRecord(data, len, &off, &rr)) {
      setWhy(why, "record runs past the end");
      return false;
    }
    if (i < r.answerCount && rr.type == kTypeA && rr.rclass == kClassIN && rr.rdlength == 4) {
      r.addresses.push_back(get32(data + rr.rdata));
      r.ttls.push_back(rr.ttl);
    }
    if (i >= static_cast<size_t>(r.answerCount) + r.authorityCount && rr.type == kTypeOPT) {
      r.edns = true;
      r.ednsUdpSize = rr.rclass;
      r.rcode = static_cast<uint16_t>(r.rcode | (((rr.ttl >> 24) & 0xFF) << 4));
    }
  }
  *out = std::move(r);
  return true;
}

std::vector<uint8_t> truncateResponse(const uint8_t* data, size_t len, size_t questionEnd) {
  if (data == nullptr || len < kHeaderSize) return {};
  questionEnd = std::clamp(questionEnd, kHeaderSize, len);
  std::vector<uint8_t> b(data, data + questionEnd);
  b[2] |= 0x02;
  for (size_t at = 6; at < kHeaderSize; ++at) b[at] = 0;
  return b;
}

}  // namespace shoal::overlay::dns
