// The embedded DNS without root: the message codec (queries with and without compression,
// malformed ones, answers, TC, EDNS0 sizes), the name table (case, trailing dots, visibility by
// network, tasks.X), resolv.conf parsing, a fixed-seed fuzz loop over random and mutated
// packets, and the server's errors that need no namespace.
#include <cppunit/extensions/HelperMacros.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "dns/message.hpp"
#include "dns/names.hpp"
#include "dns/resolv_conf.hpp"
#include "dns/server.hpp"
#include "tests/support/temp_dir.h"

using namespace shoal::overlay::dns;

namespace {

using Bytes = std::vector<uint8_t>;

uint32_t ip(const char* text) { return *parseIpv4(text); }

// A query header: id 0x1234, RD, the given counts.
Bytes header(uint16_t qd, uint16_t an = 0, uint16_t ns = 0, uint16_t ar = 0) {
  return {0x12,
          0x34,
          0x01,
          0x00,
          static_cast<uint8_t>(qd >> 8),
          static_cast<uint8_t>(qd),
          static_cast<uint8_t>(an >> 8),
          static_cast<uint8_t>(an),
          static_cast<uint8_t>(ns >> 8),
          static_cast<uint8_t>(ns),
          static_cast<uint8_t>(ar >> 8),
          static_cast<uint8_t>(ar)};
}

void append(Bytes& b, std::initializer_list<int> bytes) {
  for (int v : bytes) b.push_back(static_cast<uint8_t>(v));
}

void appendLabel(Bytes& b, const std::string& label) {
  b.push_back(static_cast<uint8_t>(label.size()));
  b.insert(b.end(), label.begin(), label.end());
}

ParseResult parse(const Bytes& b, Query* q = nullptr) {
  Query scratch;
  return parseQuery(b.data(), b.size(), q ? q : &scratch);
}

Response answerTo(const Bytes& query, const std::vector<uint32_t>& ips, bool tcp = false) {
  Query q;
  CPPUNIT_ASSERT(parse(query, &q) == ParseResult::kOk);
  Bytes out = buildAnswer(q, kNoError, ips, 1, responseLimit(q, tcp));
  CPPUNIT_ASSERT(out.size() <= responseLimit(q, tcp));
  Response r;
  std::string why;
  CPPUNIT_ASSERT_MESSAGE(why, parseResponse(out.data(), out.size(), &r, &why));
  return r;
}

std::vector<uint32_t> manyIps(int n) {
  std::vector<uint32_t> ips;
  for (int i = 0; i < n; ++i) ips.push_back(0x0A000000u + static_cast<uint32_t>(i) + 1);
  return ips;
}

}  // namespace

class DnsMessageTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(DnsMessageTest);
  CPPUNIT_TEST(testParsesAPlainQuery);
  CPPUNIT_TEST(testFollowsBackwardCompressionPointers);
  CPPUNIT_TEST(testParsesQueryWithCompressedRecordOwner);
  CPPUNIT_TEST(testShortMessagesAndResponsesAreDropped);
  CPPUNIT_TEST(testOtherOpcodesAreNotImplemented);
  CPPUNIT_TEST(testMalformedQueriesAreFormErr);
  CPPUNIT_TEST(testPointerLoopsAndOutOfBoundsPointersAreRefused);
  CPPUNIT_TEST(testAnswerEchoesQuestionAndCarriesARecords);
  CPPUNIT_TEST(testUdpAnswerIsCutAt512WithTc);
  CPPUNIT_TEST(testEdnsSizeRaisesTheLimitUpTo4096);
  CPPUNIT_TEST(testTcpLimitIs65535);
  CPPUNIT_TEST(testHeaderErrorKeepsIdAndOpcode);
  CPPUNIT_TEST(testBadVersGoesInOpt);
  CPPUNIT_TEST(testTruncateResponseKeepsQuestionOnly);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testParsesAPlainQuery() {
    Bytes b = buildQuery(0xBEEF, "Web.Example.", kTypeA);
    Query q;
    CPPUNIT_ASSERT(parse(b, &q) == ParseResult::kOk);
    CPPUNIT_ASSERT_EQUAL(uint16_t(0xBEEF), q.id);
    CPPUNIT_ASSERT_EQUAL(std::string("Web.Example"), q.name);
    CPPUNIT_ASSERT_EQUAL(kTypeA, q.qtype);
    CPPUNIT_ASSERT_EQUAL(kClassIN, q.qclass);
    CPPUNIT_ASSERT(q.recursionDesired);
    CPPUNIT_ASSERT(!q.edns);
    CPPUNIT_ASSERT_EQUAL(std::string("web.example"), normalizeName(q.name));
  }

  void testFollowsBackwardCompressionPointers() {
    Bytes b = header(1);
    appendLabel(b, "example");  // offset 12
    appendLabel(b, "com");
    b.push_back(0);
    const size_t www = b.size();
    appendLabel(b, "www");
    append(b, {0xC0, 12});
    const size_t end = b.size();
    size_t off = www;
    std::vector<std::string> labels;
    CPPUNIT_ASSERT(readName(b.data(), b.size(), &off, &labels));
    CPPUNIT_ASSERT_EQUAL(end, off);
    CPPUNIT_ASSERT_EQUAL(std::string("www.example.com"), nameText(labels));
    // A pointer to a pointer.
    append(b, {0xC0, static_cast<int>(www)});
    off = end;
    labels.clear();
    CPPUNIT_ASSERT(readName(b.data(), b.size(), &off, &labels));
    CPPUNIT_ASSERT_EQUAL(std::string("www.example.com"), nameText(labels));
    CPPUNIT_ASSERT_EQUAL(end + 2, off);
  }

  void testParsesQueryWithCompressedRecordOwner() {
    // Question "svc.local", then an additional record owned by a pointer to it, then OPT.
    Bytes b = header(1, 0, 0, 2);
    appendLabel(b, "svc");
    appendLabel(b, "local");
    append(b, {0, 0, 1, 0, 1});
    append(b, {0xC0, 12, 0, 16, 0, 1, 0, 0, 0, 0, 0, 2, 1, 'x'});  // TXT "x"
    append(b, {0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0});           // OPT, 1232 bytes
    Query q;
    CPPUNIT_ASSERT(parse(b, &q) == ParseResult::kOk);
    CPPUNIT_ASSERT_EQUAL(std::string("svc.local"), q.name);
    CPPUNIT_ASSERT(q.edns);
    CPPUNIT_ASSERT_EQUAL(uint16_t(1232), q.ednsUdpSize);
    CPPUNIT_ASSERT_EQUAL(size_t(1232), responseLimit(q, false));
  }

  void testShortMessagesAndResponsesAreDropped() {
    Bytes b = buildQuery(7, "a", kTypeA);
    for (size_t len = 0; len < kHeaderSize; ++len) {
      Query q;
      CPPUNIT_ASSERT(parseQuery(b.data(), len, &q) == ParseResult::kDrop);
      CPPUNIT_ASSERT(buildHeaderError(b.data(), len, kFormErr).empty());
    }
    CPPUNIT_ASSERT(parseQuery(nullptr, 0, nullptr) == ParseResult::kDrop);
    b[2] |= 0x80;  // QR
    CPPUNIT_ASSERT(parse(b) == ParseResult::kDrop);
  }

  void testOtherOpcodesAreNotImplemented() {
    Bytes b = buildQuery(7, "a", kTypeA);
    b[2] = static_cast<uint8_t>((b[2] & 0x87) | (2 << 3));  // STATUS
    CPPUNIT_ASSERT(parse(b) == ParseResult::kNotImplemented);
    Bytes err = buildHeaderError(b.data(), b.size(), kNotImp);
    Response r;
    CPPUNIT_ASSERT(parseResponse(err.data(), err.size(), &r));
    CPPUNIT_ASSERT_EQUAL(kNotImp, r.rcode);
    CPPUNIT_ASSERT_EQUAL(uint16_t(2), static_cast<uint16_t>((r.flags >> 11) & 0x0F));
  }

  void testMalformedQueriesAreFormErr() {
    std::string why;
    Query q;
    // No question, two questions.
    Bytes none = header(0);
    CPPUNIT_ASSERT(parse(none) == ParseResult::kMalformed);
    Bytes two = buildQuery(1, "a", kTypeA);
    two[5] = 2;
    CPPUNIT_ASSERT(parse(two) == ParseResult::kMalformed);
    // Truncated question: every cut inside the name or type/class.
    Bytes full = buildQuery(1, "abc.def", kTypeA);
    for (size_t len = kHeaderSize; len < full.size(); ++len) {
      CPPUNIT_ASSERT(parseQuery(full.data(), len, &q, &why) == ParseResult::kMalformed);
    }
    // A label of 64 octets.
    Bytes longLabel = header(1);
    appendLabel(longLabel, std::string(64, 'a'));
    append(longLabel, {0, 0, 1, 0, 1});
    CPPUNIT_ASSERT(parse(longLabel) == ParseResult::kMalformed);
    // 63 is fine.
    Bytes maxLabel = header(1);
    appendLabel(maxLabel, std::string(63, 'a'));
    append(maxLabel, {0, 0, 1, 0, 1});
    CPPUNIT_ASSERT(parse(maxLabel) == ParseResult::kOk);
    // A name of 257 octets on the wire (4 x 63-octet labels + 4 length octets + the root).
    Bytes longName = header(1);
    for (int i = 0; i < 4; ++i) appendLabel(longName, std::string(63, 'a'));
    append(longName, {0, 0, 1, 0, 1});
    CPPUNIT_ASSERT(parse(longName) == ParseResult::kMalformed);
    // Reserved label types 0x40 and 0x80.
    for (int type : {0x41, 0x81}) {
      Bytes b = header(1);
      append(b, {type, 'a', 0, 0, 1, 0, 1});
      CPPUNIT_ASSERT(parse(b) == ParseResult::kMalformed);
    }
    // Record counts that cannot fit, a record cut short, two OPTs, OPT not at the root.
    Bytes counts = buildQuery(1, "a", kTypeA);
    counts[7] = 200;
    CPPUNIT_ASSERT(parse(counts) == ParseResult::kMalformed);
    Bytes cut = buildQuery(1, "a", kTypeA, 1232);
    cut.pop_back();
    CPPUNIT_ASSERT(parse(cut) == ParseResult::kMalformed);
    Bytes twoOpt = buildQuery(1, "a", kTypeA, 1232);
    twoOpt[11] = 2;
    append(twoOpt, {0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0});
    CPPUNIT_ASSERT(parse(twoOpt) == ParseResult::kMalformed);
    Bytes ownedOpt = buildQuery(1, "a", kTypeA);
    ownedOpt[11] = 1;
    append(ownedOpt, {1, 'x', 0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0});
    CPPUNIT_ASSERT(parse(ownedOpt) == ParseResult::kMalformed);
    // An answer to any of them keeps the id.
    Bytes err = buildHeaderError(longLabel.data(), longLabel.size(), kFormErr);
    Response r;
    CPPUNIT_ASSERT(parseResponse(err.data(), err.size(), &r));
    CPPUNIT_ASSERT_EQUAL(uint16_t(0x1234), r.id);
    CPPUNIT_ASSERT_EQUAL(kFormErr, r.rcode);
  }

  void testPointerLoopsAndOutOfBoundsPointersAreRefused() {
    // The question's name is a pointer to itself.
    Bytes self = header(1);
    append(self, {0xC0, 12, 0, 1, 0, 1});
    CPPUNIT_ASSERT(parse(self) == ParseResult::kMalformed);
    // A forward pointer.
    Bytes fwd = header(1);
    append(fwd, {0xC0, 14, 1, 'a', 0, 0, 1, 0, 1});
    CPPUNIT_ASSERT(parse(fwd) == ParseResult::kMalformed);
    // Two names pointing at each other (read from the second).
    Bytes loop = header(1);
    append(loop, {1, 'a', 0xC0, 16, 1, 'b', 0xC0, 12});
    std::vector<std::string> labels;
    size_t off = 16;
    CPPUNIT_ASSERT(!readName(loop.data(), loop.size(), &off, &labels));
    CPPUNIT_ASSERT_EQUAL(size_t(16), off);
    CPPUNIT_ASSERT(labels.empty());
    // Outside the message, and a pointer cut in half.
    Bytes out = header(1);
    append(out, {0xFF, 0xFF, 0, 1, 0, 1});
    CPPUNIT_ASSERT(parse(out) == ParseResult::kMalformed);
    Bytes half = header(1);
    append(half, {0xC0});
    CPPUNIT_ASSERT(parse(half) == ParseResult::kMalformed);
    // A record owner looping through the header region: bounded, refused or read, never past.
    Bytes intoHeader = buildQuery(1, "a", kTypeA);
    intoHeader[7] = 1;
    append(intoHeader, {0xC0, 4, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4});
    const ParseResult r = parse(intoHeader);
    CPPUNIT_ASSERT(r == ParseResult::kMalformed || r == ParseResult::kOk);
  }

  void testAnswerEchoesQuestionAndCarriesARecords() {
    Bytes query = buildQuery(0x4242, "WeB.Net", kTypeA);
    Response r = answerTo(query, {ip("10.0.0.2"), ip("10.0.0.3")});
    CPPUNIT_ASSERT_EQUAL(uint16_t(0x4242), r.id);
    CPPUNIT_ASSERT_EQUAL(kNoError, r.rcode);
    CPPUNIT_ASSERT(r.authoritative);
    CPPUNIT_ASSERT(!r.truncated);
    CPPUNIT_ASSERT(r.flags & 0x0100);  // RD echoed
    CPPUNIT_ASSERT(r.flags & 0x0080);  // RA
    CPPUNIT_ASSERT_EQUAL(std::string("WeB.Net"), r.questionName);
    CPPUNIT_ASSERT_EQUAL(kTypeA, r.qtype);
    CPPUNIT_ASSERT_EQUAL(size_t(2), r.addresses.size());
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.0.2"), formatIpv4(r.addresses[0]));
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.0.3"), formatIpv4(r.addresses[1]));
    CPPUNIT_ASSERT_EQUAL(uint32_t(1), r.ttls[0]);
    CPPUNIT_ASSERT(!r.edns);
  }

  void testUdpAnswerIsCutAt512WithTc() {
    Bytes query = buildQuery(1, "tasks.web", kTypeA);
    Response r = answerTo(query, manyIps(100));
    CPPUNIT_ASSERT(r.truncated);
    // 12 header + 11 name + 4 type/class = 27; (512 - 27) / 16 = 30 records.
    CPPUNIT_ASSERT_EQUAL(size_t(30), r.addresses.size());
    CPPUNIT_ASSERT_EQUAL(uint16_t(30), r.answerCount);
    Response small = answerTo(query, manyIps(30));
    CPPUNIT_ASSERT(!small.truncated);
  }

  void testEdnsSizeRaisesTheLimitUpTo4096() {
    Response r = answerTo(buildQuery(1, "tasks.web", kTypeA, 4096), manyIps(100));
    CPPUNIT_ASSERT(!r.truncated);
    CPPUNIT_ASSERT_EQUAL(size_t(100), r.addresses.size());
    CPPUNIT_ASSERT(r.edns);
    CPPUNIT_ASSERT_EQUAL(uint16_t(4096), r.ednsUdpSize);
    // An advertised size above 4096 is clamped, below 512 raised to 512.
    Query q;
    Bytes big = buildQuery(1, "a", kTypeA, 65000);
    CPPUNIT_ASSERT(parse(big, &q) == ParseResult::kOk);
    CPPUNIT_ASSERT_EQUAL(size_t(4096), responseLimit(q, false));
    Bytes tiny = buildQuery(1, "a", kTypeA, 100);
    CPPUNIT_ASSERT(parse(tiny, &q) == ParseResult::kOk);
    CPPUNIT_ASSERT_EQUAL(size_t(512), responseLimit(q, false));
    Response cut = answerTo(buildQuery(1, "tasks.web", kTypeA, 4096), manyIps(1000));
    CPPUNIT_ASSERT(cut.truncated);
    CPPUNIT_ASSERT_EQUAL(size_t((4096 - 27 - 11) / 16), cut.addresses.size());
  }

  void testTcpLimitIs65535() {
    Response r = answerTo(buildQuery(1, "tasks.web", kTypeA), manyIps(1000), true);
    CPPUNIT_ASSERT(!r.truncated);
    CPPUNIT_ASSERT_EQUAL(size_t(1000), r.addresses.size());
    Response cut = answerTo(buildQuery(1, "tasks.web", kTypeA), manyIps(5000), true);
    CPPUNIT_ASSERT(cut.truncated);
    CPPUNIT_ASSERT_EQUAL(size_t((65535 - 27) / 16), cut.addresses.size());
  }

  void testHeaderErrorKeepsIdAndOpcode() {
    Bytes b = header(0);
    Bytes err = buildHeaderError(b.data(), b.size(), kFormErr);
    CPPUNIT_ASSERT_EQUAL(kHeaderSize, err.size());
    Response r;
    CPPUNIT_ASSERT(parseResponse(err.data(), err.size(), &r));
    CPPUNIT_ASSERT_EQUAL(uint16_t(0x1234), r.id);
    CPPUNIT_ASSERT_EQUAL(uint16_t(0), r.questionCount);
    CPPUNIT_ASSERT(r.flags & 0x0100);
  }

  void testBadVersGoesInOpt() {
    Bytes b = buildQuery(9, "a", kTypeA, 1232);
    b[b.size() - 5] = 1;  // OPT TTL's version byte
    Query q;
    CPPUNIT_ASSERT(parse(b, &q) == ParseResult::kOk);
    CPPUNIT_ASSERT_EQUAL(uint8_t(1), q.ednsVersion);
    Bytes out = buildAnswer(q, kBadVers, {}, 0, responseLimit(q, false));
    Response r;
    CPPUNIT_ASSERT(parseResponse(out.data(), out.size(), &r));
    CPPUNIT_ASSERT_EQUAL(kBadVers, r.rcode);
    CPPUNIT_ASSERT_EQUAL(uint16_t(0), static_cast<uint16_t>(r.flags & 0x0F));
  }

  void testTruncateResponseKeepsQuestionOnly() {
    Query q;
    Bytes query = buildQuery(5, "tasks.web", kTypeA);
    CPPUNIT_ASSERT(parse(query, &q) == ParseResult::kOk);
    Bytes full = buildAnswer(q, kNoError, manyIps(100), 1, kMaxTcpSize);
    Response r;
    CPPUNIT_ASSERT(parseResponse(full.data(), full.size(), &r));
    Bytes cut = truncateResponse(full.data(), full.size(), r.questionEnd);
    CPPUNIT_ASSERT_EQUAL(size_t(27), cut.size());
    Response c;
    CPPUNIT_ASSERT(parseResponse(cut.data(), cut.size(), &c));
    CPPUNIT_ASSERT(c.truncated);
    CPPUNIT_ASSERT_EQUAL(uint16_t(0), c.answerCount);
    CPPUNIT_ASSERT_EQUAL(std::string("tasks.web"), c.questionName);
  }
};

class DnsNamesTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(DnsNamesTest);
  CPPUNIT_TEST(testLookupIgnoresCaseAndTrailingDot);
  CPPUNIT_TEST(testNamesAreVisibleOnlyOnTheirNetworks);
  CPPUNIT_TEST(testFirstNetworkOfTheSandboxWinsAndDuplicatesMerge);
  CPPUNIT_TEST(testTasksOfAKnownServiceIsOwned);
  CPPUNIT_TEST(testEmptyRecordMakesTheNameKnown);
  CPPUNIT_TEST(testIpv4Helpers);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testLookupIgnoresCaseAndTrailingDot() {
    NameTable t({{"Web.", "n1", {ip("10.0.0.2")}}});
    for (const char* name : {"web", "WEB", "web.", "wEb."}) {
      NameTable::Result r = t.lookup(name, {"n1"});
      CPPUNIT_ASSERT_MESSAGE(name, r.match == NameTable::Match::kFound);
      CPPUNIT_ASSERT_EQUAL(ip("10.0.0.2"), r.ips.at(0));
    }
    CPPUNIT_ASSERT(t.lookup("web2", {"n1"}).match == NameTable::Match::kNone);
    CPPUNIT_ASSERT(t.lookup("", {"n1"}).match == NameTable::Match::kNone);
  }

  void testNamesAreVisibleOnlyOnTheirNetworks() {
    NameTable t({{"web", "front", {ip("10.0.1.2")}}, {"db", "back", {ip("10.0.2.2")}}});
    CPPUNIT_ASSERT(t.lookup("web", {"front"}).match == NameTable::Match::kFound);
    CPPUNIT_ASSERT(t.lookup("db", {"front"}).match == NameTable::Match::kNone);
    CPPUNIT_ASSERT(t.lookup("db", {"front", "back"}).match == NameTable::Match::kFound);
    CPPUNIT_ASSERT(t.lookup("web", {}).match == NameTable::Match::kNone);
  }

  void testFirstNetworkOfTheSandboxWinsAndDuplicatesMerge() {
    NameTable t({{"web", "a", {ip("10.0.1.2")}},
                 {"web", "b", {ip("10.0.2.2")}},
                 {"tasks.web", "a", {ip("10.0.1.3")}},
                 {"TASKS.web", "a", {ip("10.0.1.4"), ip("10.0.1.3")}}});
    CPPUNIT_ASSERT_EQUAL(ip("10.0.2.2"), t.lookup("web", {"b", "a"}).ips.at(0));
    CPPUNIT_ASSERT_EQUAL(ip("10.0.1.2"), t.lookup("web", {"a", "b"}).ips.at(0));
    std::vector<uint32_t> tasks = t.lookup("tasks.web", {"a"}).ips;
    CPPUNIT_ASSERT_EQUAL(size_t(2), tasks.size());
    CPPUNIT_ASSERT_EQUAL(ip("10.0.1.3"), tasks[0]);
    CPPUNIT_ASSERT_EQUAL(ip("10.0.1.4"), tasks[1]);
  }

  void testTasksOfAKnownServiceIsOwned() {
    NameTable t({{"web", "a", {ip("10.0.1.2")}}});
    CPPUNIT_ASSERT(t.lookup("tasks.web", {"a"}).match == NameTable::Match::kOwnedMissing);
    CPPUNIT_ASSERT(t.lookup("Tasks.Web.", {"a"}).match == NameTable::Match::kOwnedMissing);
    CPPUNIT_ASSERT(t.lookup("tasks.web", {"b"}).match == NameTable::Match::kNone);
    CPPUNIT_ASSERT(t.lookup("tasks.other", {"a"}).match == NameTable::Match::kNone);
  }

  void testEmptyRecordMakesTheNameKnown() {
    NameTable t(std::vector<Record>{{"tasks.web", "a", {}}});
    NameTable::Result r = t.lookup("tasks.web", {"a"});
    CPPUNIT_ASSERT(r.match == NameTable::Match::kFound);
    CPPUNIT_ASSERT(r.ips.empty());
  }

  void testIpv4Helpers() {
    CPPUNIT_ASSERT_EQUAL(uint32_t(0x0A000002), ip("10.0.0.2"));
    CPPUNIT_ASSERT_EQUAL(std::string("192.0.2.255"), formatIpv4(0xC00002FF));
    CPPUNIT_ASSERT(!parseIpv4("10.0.0"));
    CPPUNIT_ASSERT(!parseIpv4("::1"));
  }
};

class DnsResolvConfTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(DnsResolvConfTest);
  CPPUNIT_TEST(testReadsNameserversInOrderSkippingLoopback);
  CPPUNIT_TEST(testParsesUpstreamSpecsWithPorts);
  CPPUNIT_TEST(testUnreadableFileSaysWhy);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testReadsNameserversInOrderSkippingLoopback() {
    ResolvConf c = parseResolvConf(
        "# generated\n"
        "search corp.example\n"
        "nameserver 127.0.0.53\n"
        "nameserver 10.1.2.3   # the office\n"
        "; nameserver 10.9.9.9\n"
        "nameserver ::1\n"
        "nameserver 2001:db8::53\n"
        "nameserver not-an-address\n"
        "options edns0 ndots:2\n"
        "nameserver\n"
        "  nameserver 192.0.2.1\n");
    CPPUNIT_ASSERT_EQUAL(size_t(3), c.upstreams.size());
    CPPUNIT_ASSERT_EQUAL(std::string("10.1.2.3:53"), c.upstreams[0].text);
    CPPUNIT_ASSERT_EQUAL(std::string("[2001:db8::53]:53"), c.upstreams[1].text);
    CPPUNIT_ASSERT_EQUAL(std::string("192.0.2.1:53"), c.upstreams[2].text);
    CPPUNIT_ASSERT_EQUAL(size_t(3), c.skipped.size());
    CPPUNIT_ASSERT_EQUAL(std::string("127.0.0.53"), c.skipped[0]);
  }

  void testParsesUpstreamSpecsWithPorts() {
    Upstream u;
    CPPUNIT_ASSERT(parseUpstream("127.0.0.1:5353", 53, &u));
    CPPUNIT_ASSERT_EQUAL(std::string("127.0.0.1:5353"), u.text);
    CPPUNIT_ASSERT(isLoopback(u));
    CPPUNIT_ASSERT(parseUpstream("10.0.0.1", 53, &u));
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.0.1:53"), u.text);
    CPPUNIT_ASSERT(!isLoopback(u));
    CPPUNIT_ASSERT(parseUpstream("[::1]:54", 53, &u));
    CPPUNIT_ASSERT_EQUAL(std::string("[::1]:54"), u.text);
    CPPUNIT_ASSERT(isLoopback(u));
    CPPUNIT_ASSERT(parseUpstream("fe80::1", 53, &u));
    CPPUNIT_ASSERT_EQUAL(std::string("[fe80::1]:53"), u.text);
    for (const char* bad : {"", "host.example:53", "10.0.0.1:0", "10.0.0.1:65536", "[::1", "[::1]x",
                            "10.0.0.1:5x", "10.0.0.1:"}) {
      CPPUNIT_ASSERT_MESSAGE(bad, !parseUpstream(bad, 53, &u));
    }
  }

  void testUnreadableFileSaysWhy() {
    ResolvConf c;
    Status s = readResolvConf("/nonexistent/resolv.conf", &c);
    CPPUNIT_ASSERT(!s);
    CPPUNIT_ASSERT_EQUAL(std::string("dns: cannot read /nonexistent/resolv.conf: No such file or "
                                     "directory"),
                         s.message());
    shoal::test::TempDir dir;
    const std::string path = dir.write("resolv.conf", "nameserver 10.0.0.9\n");
    CPPUNIT_ASSERT(readResolvConf(path, &c));
    CPPUNIT_ASSERT_EQUAL(size_t(1), c.upstreams.size());
  }
};

class DnsFuzzTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(DnsFuzzTest);
  CPPUNIT_TEST(testRandomAndMutatedPacketsNeverCrash);
  CPPUNIT_TEST_SUITE_END();

 public:
  // Every packet goes through each parser; whatever parseQuery accepts must give an answer that
  // parseResponse reads back with the same question. Under ASan this also proves no read falls
  // outside the packet (each one is its own exactly-sized allocation).
  void testRandomAndMutatedPacketsNeverCrash() {
    std::mt19937 rng(20240607);
    const std::vector<Bytes> seeds = {
        buildQuery(1, "web", kTypeA),
        buildQuery(2, "tasks.web.front", kTypeAAAA, 1232),
        buildQuery(3, "a.b.c.d.e.f", kTypeANY, 4096),
        header(1, 1, 1, 1),
    };
    size_t accepted = 0;
    for (int i = 0; i < 10000; ++i) {
      Bytes b;
      const int mode = i % 4;
      if (mode == 0) {
        b.resize(rng() % 80);
        for (uint8_t& v : b) v = static_cast<uint8_t>(rng());
        if (b.size() > 3) b[2] &= 0x07;  // mostly queries, opcode 0
        if (b.size() > 5) {
          b[4] = 0;
          b[5] = 1;
        }
      } else {
        b = seeds[rng() % seeds.size()];
        const int edits = 1 + static_cast<int>(rng() % 4);
        for (int e = 0; e < edits && !b.empty(); ++e) {
          const size_t at = rng() % b.size();
          switch (rng() % 5) {
            case 0:
              b[at] = static_cast<uint8_t>(rng());
              break;
            case 1:
              b[at] = static_cast<uint8_t>(0xC0 | (rng() & 0x3F));  // a pointer
              if (at + 1 < b.size()) b[at + 1] = static_cast<uint8_t>(rng() % (b.size() + 4));
              break;
            case 2:
              b.resize(at);
              break;
            case 3:
              b.insert(b.begin() + static_cast<ptrdiff_t>(at), static_cast<uint8_t>(rng() % 70));
              break;
            default:
              b.push_back(static_cast<uint8_t>(rng()));
          }
        }
      }
      Bytes exact(b);  // exactly sized, so ASan sees any overrun
      Query q;
      if (parseQuery(exact.data(), exact.size(), &q) == ParseResult::kOk) {
        ++accepted;
        Bytes out = buildAnswer(q, kNoError, manyIps(static_cast<int>(rng() % 40)), 1,
                                responseLimit(q, false));
        CPPUNIT_ASSERT(out.size() <= responseLimit(q, false));
        Response r;
        CPPUNIT_ASSERT(parseResponse(out.data(), out.size(), &r));
        CPPUNIT_ASSERT_EQUAL(q.name, r.questionName);
        CPPUNIT_ASSERT_EQUAL(q.id, r.id);
      } else {
        buildHeaderError(exact.data(), exact.size(), kFormErr);
      }
      Response r;
      if (parseResponse(exact.data(), exact.size(), &r)) {
        truncateResponse(exact.data(), exact.size(), r.questionEnd);
      }
      std::vector<std::string> labels;
      size_t off = exact.empty() ? 0 : rng() % exact.size();
      readName(exact.data(), exact.size(), &off, &labels);
      CPPUNIT_ASSERT(off <= exact.size());
    }
    CPPUNIT_ASSERT(accepted > 100);  // the mutations still reach the code past the header
  }
};

class DnsServerErrorsTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(DnsServerErrorsTest);
  CPPUNIT_TEST(testAddSandboxOnMissingNamespaceSaysWhy);
  CPPUNIT_TEST(testStartAndStopAreRepeatable);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testAddSandboxOnMissingNamespaceSaysWhy() {
    Server server;
    Status s = server.addSandbox("t1", "/nonexistent/netns/x", {"n1"});
    CPPUNIT_ASSERT(!s);
    CPPUNIT_ASSERT_EQUAL(
        std::string("dns: cannot enter network namespace /nonexistent/netns/x: No such file or "
                    "directory"),
        s.message());
    CPPUNIT_ASSERT(!server.addSandbox("", "/x", {}));
    CPPUNIT_ASSERT_EQUAL(size_t(0), server.sandboxCount());
    CPPUNIT_ASSERT(!server.removeSandbox("t1"));
  }

  void testStartAndStopAreRepeatable() {
    ServerOptions options;
    options.upstreams = std::vector<std::string>{};
    Server server(options);
    CPPUNIT_ASSERT(server.start());
    CPPUNIT_ASSERT(server.start());
    server.setRecords({{"web", "n1", {ip("10.0.0.2")}}});
    server.stop();
    server.stop();
    CPPUNIT_ASSERT(server.start());
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(DnsMessageTest);
CPPUNIT_TEST_SUITE_REGISTRATION(DnsNamesTest);
CPPUNIT_TEST_SUITE_REGISTRATION(DnsResolvConfTest);
CPPUNIT_TEST_SUITE_REGISTRATION(DnsFuzzTest);
CPPUNIT_TEST_SUITE_REGISTRATION(DnsServerErrorsTest);
