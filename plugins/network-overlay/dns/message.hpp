// The DNS wire format, as much of it as the embedded DNS server needs (RFC 1035, RFC 6891 EDNS0):
// parsing queries strictly and safely, building answers, and reading responses (the server checks
// upstream replies with it; tests read the server's answers with it).
//
// Every function is pure: no I/O, no global state, safe from any thread. Parsers read only inside
// [data, data + len), whatever the bytes say (compression pointers included), and never throw.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::overlay::dns {

// Record types and classes.
constexpr uint16_t kTypeA = 1;
constexpr uint16_t kTypeNS = 2;
constexpr uint16_t kTypeCNAME = 5;
constexpr uint16_t kTypePTR = 12;
constexpr uint16_t kTypeMX = 15;
constexpr uint16_t kTypeTXT = 16;
constexpr uint16_t kTypeAAAA = 28;
constexpr uint16_t kTypeSRV = 33;
constexpr uint16_t kTypeOPT = 41;
constexpr uint16_t kTypeANY = 255;
constexpr uint16_t kClassIN = 1;
constexpr uint16_t kClassANY = 255;

// Response codes. kBadVers (16) needs EDNS0: its upper bits travel in the OPT record.
constexpr uint16_t kNoError = 0;
constexpr uint16_t kFormErr = 1;
constexpr uint16_t kServFail = 2;
constexpr uint16_t kNxDomain = 3;
constexpr uint16_t kNotImp = 4;
constexpr uint16_t kRefused = 5;
constexpr uint16_t kBadVers = 16;

// Sizes.
constexpr size_t kHeaderSize = 12;
constexpr size_t kClassicUdpSize = 512;   // UDP answers without EDNS0
constexpr size_t kMaxUdpSize = 4096;      // the most we send over UDP, whatever EDNS0 says
constexpr size_t kMaxTcpSize = 65535;     // a TCP message's 2-byte length
constexpr size_t kMaxNameWireSize = 255;  // a name's wire form, final zero octet included
constexpr size_t kMaxLabelSize = 63;

// A parsed query: exactly one question, plus what the OPT record (if any) said.
struct Query {
  uint16_t id = 0;
  uint8_t opcode = 0;
  bool recursionDesired = false;
  bool checkingDisabled = false;
  std::vector<std::string> labels;  // the question's labels as sent (case kept)
  std::string name;                 // presentation form of labels, see nameText()
  uint16_t qtype = 0;
  uint16_t qclass = 0;
  bool edns = false;         // an OPT record was present
  uint16_t ednsUdpSize = 0;  // the requestor's advertised UDP payload size
  uint8_t ednsVersion = 0;
};

enum class ParseResult {
  kOk,         // *out holds the query
  kDrop,       // not worth an answer: shorter than a header, or a response (QR set; would loop)
  kMalformed,  // answer buildHeaderError(data, len, kFormErr)
  kNotImplemented,  // an opcode other than QUERY: answer buildHeaderError(data, len, kNotImp)
};

// Parses one query message. Refuses (kMalformed) a question count other than 1, a bad name
// (label over 63 octets, name over 255, reserved label types, compression pointers that do not
// point strictly backwards or point outside the message), records running past the end, and
// more than one OPT record or an OPT not owned by the root. Bytes after the last record are
// ignored. `why`, when given, receives a short reason on any result but kOk.
ParseResult parseQuery(const uint8_t* data, size_t len, Query* out, std::string* why = nullptr);

// Reads the name at *offset of the message [msg, msg + len), following compression pointers.
// Each pointer must point before the start of the label run it ends, so reading always ends;
// the total wire length is limited to 255. On success appends the labels to *labels (case kept)
// and moves *offset past the name where it is written (past the first pointer). On failure
// returns false and leaves both untouched.
bool readName(const uint8_t* msg, size_t len, size_t* offset, std::vector<std::string>* labels);

// Labels joined by '.', with '.' and '\' inside a label escaped by '\'. The root is "".
std::string nameText(const std::vector<std::string>& labels);

// The form names are compared in: ASCII lowercased, one trailing '.' removed ("Web." -> "web").
std::string normalizeName(std::string_view name);

// The largest answer `q` may get: over TCP kMaxTcpSize; over UDP 512, or with EDNS0 the
// advertised size clamped to [512, kMaxUdpSize].
size_t responseLimit(const Query& q, bool tcp);

// An answer to `q`: the header echoes id, opcode, RD and CD and sets QR, AA and RA; the question
// is repeated as asked; each address becomes an A record (class IN, `ttl`, owner compressed to
// the question); an OPT record (payload size kMaxUdpSize) follows when `q` had one. `rcode`
// above 15 needs q.edns (its upper bits go in the OPT record). When not every address fits in
// `limit` bytes, as many as fit are sent and TC is set. `ipv4` in host byte order.
std::vector<uint8_t> buildAnswer(const Query& q, uint16_t rcode, const std::vector<uint32_t>& ipv4,
                                 uint32_t ttl, size_t limit);

// A bare error answer (no question, no records) to a message parseQuery refused: id, opcode and
// RD copied, QR and RA set, `rcode` (0..15). Empty when the message is shorter than a header.
std::vector<uint8_t> buildHeaderError(const uint8_t* data, size_t len, uint16_t rcode);

// A query for `name` ("a.b.c", trailing '.' allowed, no escapes) with RD set, and an OPT record
// advertising `ednsUdpSize` unless it is 0. Empty when `name` has an empty or over-long label.
std::vector<uint8_t> buildQuery(uint16_t id, std::string_view name, uint16_t qtype,
                                uint16_t ednsUdpSize = 0);

// A parsed response.
struct Response {
  uint16_t id = 0;
  uint16_t flags = 0;  // the header's second word as sent
  uint16_t rcode = 0;  // the header's 4 bits, plus OPT's extended bits when present
  bool truncated = false;
  bool authoritative = false;
  uint16_t questionCount = 0;
  std::string questionName;  // the first question's name (nameText form), "" without one
  uint16_t qtype = 0;
  uint16_t qclass = 0;
  size_t questionEnd = kHeaderSize;  // offset just past the question section
  uint16_t answerCount = 0;
  uint16_t authorityCount = 0;
  uint16_t additionalCount = 0;
  std::vector<uint32_t> addresses;  // every IN A record in the answer section (host order)
  std::vector<uint32_t> ttls;       // their TTLs, same order
  bool edns = false;
  uint16_t ednsUdpSize = 0;
};

// Parses a response (QR must be set); every record is checked to lie inside the message.
bool parseResponse(const uint8_t* data, size_t len, Response* out, std::string* why = nullptr);

// The first `questionEnd` bytes of a response (header and question), with TC set and the answer,
// authority and additional counts zeroed: what a UDP asker gets when the upstream's answer is
// larger than it can take. `questionEnd` comes from parseResponse.
std::vector<uint8_t> truncateResponse(const uint8_t* data, size_t len, size_t questionEnd);

}  // namespace shoal::overlay::dns
