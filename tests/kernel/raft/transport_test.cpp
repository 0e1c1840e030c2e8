// The Raft wire codec and TcpTransport: exact round trips, bad bytes refused without a crash,
// in-order delivery over mutual TLS on loopback, refusal of peers with the wrong CA, the wrong
// name or no certificate, reconnection after a peer restarts, backpressure by dropping, and a
// prompt stop() with unreachable peers. Certificates are made at test time (tests/support).
#include <arpa/inet.h>
#include <cppunit/extensions/HelperMacros.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernel/raft/tcp_transport.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_ca.h"

using namespace std::chrono_literals;
using shoal::Result;
using shoal::Status;
using shoal::raft::decodeMessage;
using shoal::raft::encodeMessage;
using shoal::raft::Entry;
using shoal::raft::EntryType;
using shoal::raft::Message;
using shoal::raft::MessageType;
using shoal::raft::NodeId;
using shoal::raft::TcpTransport;
using shoal::test::eventually;
using shoal::test::TempDir;
using shoal::test::TestCa;
using shoal::test::TestCredentials;
using Clock = std::chrono::steady_clock;

namespace {

// ---- messages ---------------------------------------------------------------------------

std::string pattern(uint64_t seed, size_t bytes) {
  std::string s(bytes, '\0');
  for (size_t i = 0; i < bytes; ++i) s[i] = static_cast<char>((seed * 131 + i * 7) & 0xff);
  return s;
}

// An append carrying one entry whose index is seq + 1 and whose data depends on seq.
Message append(NodeId from, NodeId to, uint64_t seq, size_t bytes = 16) {
  Message m;
  m.type = MessageType::kAppend;
  m.from = from;
  m.to = to;
  m.term = 1;
  m.logTerm = 1;
  m.index = seq;
  m.commit = seq;
  Entry e;
  e.term = 1;
  e.index = seq + 1;
  e.data = pattern(seq, bytes);
  m.entries.push_back(std::move(e));
  return m;
}

// Every field set, binary data with NULs and high bytes, entries and a snapshot.
Message fullMessage() {
  Message m;
  m.type = MessageType::kSnapshot;
  m.from = 0x0102030405060708ULL;
  m.to = UINT64_MAX;
  m.term = 7;
  m.logTerm = 6;
  m.index = 1ULL << 40;
  m.commit = 99;
  m.reject = true;
  m.rejectHint = 12345;
  m.context = 0xdeadbeefcafeULL;
  m.entries.push_back(Entry{3, 100, EntryType::kNormal, ""});
  m.entries.push_back(Entry{3, 101, EntryType::kConfChange,
                            std::string("\0\xff\x01"
                                        "ab\0",
                                        6)});
  m.entries.push_back(Entry{4, 102, EntryType::kNormal, std::string(1000, '\0')});
  m.snapshot.index = 90;
  m.snapshot.term = 3;
  m.snapshot.voters = {1, 2, UINT64_MAX};
  m.snapshot.learners = {4};
  m.snapshot.data = pattern(5, 700);
  return m;
}

void assertSameMessage(const Message& want, const Message& got) {
  CPPUNIT_ASSERT(want.type == got.type);
  CPPUNIT_ASSERT_EQUAL(want.from, got.from);
  CPPUNIT_ASSERT_EQUAL(want.to, got.to);
  CPPUNIT_ASSERT_EQUAL(want.term, got.term);
  CPPUNIT_ASSERT_EQUAL(want.logTerm, got.logTerm);
  CPPUNIT_ASSERT_EQUAL(want.index, got.index);
  CPPUNIT_ASSERT_EQUAL(want.commit, got.commit);
  CPPUNIT_ASSERT_EQUAL(want.reject, got.reject);
  CPPUNIT_ASSERT_EQUAL(want.rejectHint, got.rejectHint);
  CPPUNIT_ASSERT_EQUAL(want.context, got.context);
  CPPUNIT_ASSERT_EQUAL(want.entries.size(), got.entries.size());
  for (size_t i = 0; i < want.entries.size(); ++i)
    CPPUNIT_ASSERT(want.entries[i] == got.entries[i]);
  CPPUNIT_ASSERT_EQUAL(want.snapshot.index, got.snapshot.index);
  CPPUNIT_ASSERT_EQUAL(want.snapshot.term, got.snapshot.term);
  CPPUNIT_ASSERT(want.snapshot.voters == got.snapshot.voters);
  CPPUNIT_ASSERT(want.snapshot.learners == got.snapshot.learners);
  CPPUNIT_ASSERT(want.snapshot.data == got.snapshot.data);
}

void putU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void putU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// The fixed header of an encoding (README "Transport"): version, type, flags, 8 numbers.
std::string header(uint8_t version, uint8_t type, uint8_t flags) {
  std::string out;
  out.push_back(static_cast<char>(version));
  out.push_back(static_cast<char>(type));
  out.push_back(static_cast<char>(flags));
  for (int i = 0; i < 8; ++i) putU64(out, i + 1);
  return out;
}

std::string frame(const std::string& payload) {
  std::string out;
  putU32(out, static_cast<uint32_t>(payload.size()));
  return out + payload;
}

std::string hello(NodeId from, NodeId to, uint8_t version = 2) {
  std::string p = "SRFT";
  p.push_back(static_cast<char>(version));
  putU64(p, from);
  putU64(p, to);
  return frame(p);
}

// ---- certificates and nodes -------------------------------------------------------------

// A cluster CA and an unrelated "rogue" CA with the same name; certificates in a temp dir.
class Pki {
 public:
  Pki() : ca_("shoal-test-root"), rogue_("shoal-test-root") {
    caFile_ = dir_.write("ca.pem", ca_.certPem());
  }

  struct Files {
    std::string cert;
    std::string key;
  };

  // A certificate named `cn` from the cluster CA (or the rogue one), written to files.
  Files credentials(const std::string& cn, bool fromRogueCa = false) {
    TestCredentials c = (fromRogueCa ? rogue_ : ca_).issue(cn);
    std::string base = "c" + std::to_string(counter_++);
    return Files{dir_.write(base + ".crt", c.certPem), dir_.write(base + ".key", c.keyPem)};
  }

  // Options for node `id`, trusting the cluster CA, with a certificate named `cn` (default
  // "shoal-raft-<id>").
  TcpTransport::Options options(NodeId id, std::string cn = "", bool fromRogueCa = false) {
    if (cn.empty()) cn = "shoal-raft-" + std::to_string(id);
    Files f = credentials(cn, fromRogueCa);
    TcpTransport::Options o;
    o.self = id;
    o.listenAddress = "127.0.0.1:0";
    o.caFile = caFile_;
    o.certFile = f.cert;
    o.keyFile = f.key;
    return o;
  }

  const std::string& caFile() const { return caFile_; }
  const TempDir& dir() const { return dir_; }

 private:
  TempDir dir_;
  TestCa ca_;
  TestCa rogue_;
  std::string caFile_;
  int counter_ = 0;
};

// What a node received.
class Inbox {
 public:
  void push(Message m) {
    std::lock_guard<std::mutex> lock(mu_);
    messages_.push_back(std::move(m));
    cv_.notify_all();
  }
  bool waitForCount(size_t n, std::chrono::milliseconds limit = 30s) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return messages_.size() >= n; });
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return messages_.size();
  }
  std::vector<Message> from(NodeId sender) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Message> out;
    for (const Message& m : messages_) {
      if (m.from == sender) out.push_back(m);
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Message> messages_;  // guarded by mu_
};

// A transport and what it received. The inbox outlives the transport (declared first).
struct Node {
  explicit Node(TcpTransport::Options o) : transport(std::move(o)) {
    transport.setHandler([this](Message m) { inbox.push(std::move(m)); });
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(transport.port()); }

  Inbox inbox;
  TcpTransport transport;
};

std::unique_ptr<Node> startNode(TcpTransport::Options o) {
  auto node = std::make_unique<Node>(std::move(o));
  Status s = node->transport.start();
  CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
  CPPUNIT_ASSERT(node->transport.port() > 0);
  return node;
}

// Sends without overrunning the peer's queue (send() drops beyond it, by design).
void sendPaced(TcpTransport& t, Message m, size_t limit = 2048) {
  while (t.queued(m.to) >= limit) std::this_thread::sleep_for(100us);
  t.send(std::move(m));
}

// Asserts `got` holds exactly appends seq first..last from `from`, in order and intact.
void assertSequence(const std::vector<Message>& got, NodeId from, uint64_t first, uint64_t last,
                    size_t bytes = 16) {
  CPPUNIT_ASSERT_EQUAL(static_cast<size_t>(last - first + 1), got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const Message& m = got[i];
    uint64_t seq = first + i;
    CPPUNIT_ASSERT_EQUAL(from, m.from);
    CPPUNIT_ASSERT_EQUAL(seq, m.index);
    CPPUNIT_ASSERT_EQUAL(size_t{1}, m.entries.size());
    CPPUNIT_ASSERT(m.entries[0].data == pattern(seq, bytes));
  }
}

// A loopback port nothing listens on.
int closedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// A loopback socket that listens but never accepts: the kernel completes TCP handshakes, and
// nobody ever answers a TLS ClientHello.
class SilentListener {
 public:
  SilentListener() : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 16);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~SilentListener() { ::close(fd_); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_;
  int port_ = 0;
};

// A hand-driven TLS client (plain OpenSSL, blocking socket with a receive timeout), to speak
// the wire protocol directly: well-formed, malformed or without a certificate.
class RawTlsClient {
 public:
  // `cert`/`key` empty: present no certificate.
  RawTlsClient(const std::string& caFile, const std::string& cert, const std::string& key,
               int port) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx_, TLS1_3_VERSION);
    SSL_CTX_load_verify_locations(ctx_, caFile.c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    if (!cert.empty()) {
      SSL_CTX_use_certificate_file(ctx_, cert.c_str(), SSL_FILETYPE_PEM);
      SSL_CTX_use_PrivateKey_file(ctx_, key.c_str(), SSL_FILETYPE_PEM);
    }
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return;
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd_);
    connected_ = SSL_connect(ssl_) == 1;
    ERR_clear_error();
  }
  ~RawTlsClient() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    ::close(fd_);
    SSL_CTX_free(ctx_);
  }

  // True when the TLS handshake completed on the client's side.
  bool connected() const { return connected_; }

  bool write(const std::string& bytes) {
    if (!connected_) return false;
    size_t done = 0;
    while (done < bytes.size()) {
      int n = SSL_write(ssl_, bytes.data() + done, static_cast<int>(bytes.size() - done));
      if (n <= 0) {
        ERR_clear_error();
        return false;
      }
      done += static_cast<size_t>(n);
    }
    return true;
  }

  // The next frame's payload; nullopt when the connection closed or 5 s passed.
  std::optional<std::string> readFrame() {
    if (!connected_) return std::nullopt;
    for (;;) {
      if (buf_.size() >= 4) {
        uint32_t len = 0;
        for (int i = 0; i < 4; ++i)
          len |= static_cast<uint32_t>(static_cast<uint8_t>(buf_[i])) << (8 * i);
        if (buf_.size() >= 4 + len) {
          std::string p = buf_.substr(4, len);
          buf_.erase(0, 4 + len);
          return p;
        }
      }
      char chunk[4096];
      int n = SSL_read(ssl_, chunk, sizeof chunk);
      if (n <= 0) {
        ERR_clear_error();
        return std::nullopt;
      }
      buf_.append(chunk, static_cast<size_t>(n));
    }
  }

  // True when the server closed the connection (within the 5 s receive timeout).
  bool closedByServer() {
    if (!connected_) return true;
    char c;
    int n = SSL_read(ssl_, &c, 1);
    if (n > 0) return false;
    int err = SSL_get_error(ssl_, n);
    ERR_clear_error();
    return err != SSL_ERROR_WANT_READ;  // WANT_READ: the receive timeout passed
  }

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

}  // namespace

class TransportTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(TransportTest);
  CPPUNIT_TEST(testCodecRoundTripsEveryField);
  CPPUNIT_TEST(testCodecIsCompactForHeartbeats);
  CPPUNIT_TEST(testCodecRejectsEveryTruncation);
  CPPUNIT_TEST(testCodecRejectsGarbageWithClearErrors);
  CPPUNIT_TEST(testCodecSurvivesRandomMutations);
  CPPUNIT_TEST(testTwoTransportsExchangeTenThousandInOrder);
  CPPUNIT_TEST(testThreeTransportsAllToAll);
  CPPUNIT_TEST(testPeerWithCertificateFromAnotherCaIsRefused);
  CPPUNIT_TEST(testPeerWithoutCertificateIsRefused);
  CPPUNIT_TEST(testCommonNameMismatchRefusedWhenRequired);
  CPPUNIT_TEST(testCommonNameNotCheckedUnlessRequired);
  CPPUNIT_TEST(testPeerRestartReconnectsAndDeliversWhatWasQueued);
  CPPUNIT_TEST(testNewAddressIsDialled);
  CPPUNIT_TEST(testLargeSnapshotDeliveredAndOversizeDropped);
  CPPUNIT_TEST(testFullQueueDropsAndCountsWithoutBlocking);
  CPPUNIT_TEST(testStopIsPromptWithUnreachablePeers);
  CPPUNIT_TEST(testBadFramesCloseTheConnectionOnly);
  CPPUNIT_TEST(testHelloIsChecked);
  CPPUNIT_TEST(testStartReportsBadConfiguration);
  CPPUNIT_TEST(testThroughputOfSmallAppends);
  CPPUNIT_TEST_SUITE_END();

 public:
  // ---- codec ----

  void testCodecRoundTripsEveryField() {
    std::vector<Message> cases;
    cases.push_back(fullMessage());
    cases.push_back(Message{});  // every field at its default
    Message onlySnapshot;
    onlySnapshot.type = MessageType::kSnapshot;
    onlySnapshot.snapshot.index = 5;
    onlySnapshot.snapshot.data = std::string("\0", 1);
    cases.push_back(onlySnapshot);
    Message snapshotWithLearnersOnly;
    snapshotWithLearnersOnly.snapshot.learners = {9};
    cases.push_back(snapshotWithLearnersOnly);
    for (int t = 0; t <= static_cast<int>(MessageType::kProposeDropped); ++t) {
      Message m = append(1, 2, 7);
      m.type = static_cast<MessageType>(t);
      cases.push_back(m);
    }
    for (const Message& want : cases) {
      std::string bytes = encodeMessage(want);
      Result<Message> got = decodeMessage(bytes);
      CPPUNIT_ASSERT_MESSAGE(got.status().toString(), got.isOk());
      assertSameMessage(want, *got);
      CPPUNIT_ASSERT(encodeMessage(*got) == bytes);
    }
  }

  void testCodecIsCompactForHeartbeats() {
    Message m;
    m.type = MessageType::kHeartbeat;
    m.from = 1;
    m.to = 2;
    m.term = 3;
    m.commit = 4;
    // version, type, flags and eight 8-byte numbers; nothing for absent entries/snapshot.
    CPPUNIT_ASSERT_EQUAL(size_t{3 + 8 * 8}, encodeMessage(m).size());
    // An entry costs its 25 bytes of framing plus its data (and the 4-byte count, once).
    Message a = append(1, 2, 1, 100);
    CPPUNIT_ASSERT_EQUAL(size_t{3 + 8 * 8 + 4 + 25 + 100}, encodeMessage(a).size());
  }

  void testCodecRejectsEveryTruncation() {
    std::string bytes = encodeMessage(fullMessage());
    for (size_t len = 0; len < bytes.size(); ++len) {
      Result<Message> r = decodeMessage(std::string_view(bytes).substr(0, len));
      CPPUNIT_ASSERT_MESSAGE("prefix of " + std::to_string(len) + " bytes accepted", !r.isOk());
      CPPUNIT_ASSERT(r.status().code() == Status::Code::kInvalidArgument);
      CPPUNIT_ASSERT(r.status().message().find("raft message:") == 0);
    }
  }

  void testCodecRejectsGarbageWithClearErrors() {
    auto rejects = [](const std::string& bytes, const std::string& mentions) {
      Result<Message> r = decodeMessage(bytes);
      CPPUNIT_ASSERT_MESSAGE("accepted: expected an error mentioning " + mentions, !r.isOk());
      CPPUNIT_ASSERT_MESSAGE(r.status().message() + " does not mention " + mentions,
                             r.status().message().find(mentions) != std::string::npos);
    };
    const uint8_t kAppendType = static_cast<uint8_t>(MessageType::kAppend);
    rejects("", "truncated");
    rejects(header(2, kAppendType, 0), "version 2");
    rejects(header(1, 200, 0), "unknown message type 200");
    rejects(header(1, kAppendType, 0x80), "unknown flags");
    rejects(header(1, kAppendType, 0) + "x", "trailing");
    // Counts and lengths far beyond the input are refused before anything is allocated.
    std::string hugeCount = header(1, kAppendType, 0x02);
    putU32(hugeCount, UINT32_MAX);
    rejects(hugeCount, "entry count 4294967295");
    std::string zeroCount = header(1, kAppendType, 0x02);
    putU32(zeroCount, 0);
    rejects(zeroCount, "entry count of 0");
    std::string hugeData = header(1, kAppendType, 0x02);
    putU32(hugeData, 1);
    putU64(hugeData, 1);
    putU64(hugeData, 2);
    hugeData.push_back(0);
    putU64(hugeData, UINT64_MAX);
    hugeData += "abc";
    rejects(hugeData, "claims 18446744073709551615 bytes");
    std::string badEntryType = header(1, kAppendType, 0x02);
    putU32(badEntryType, 1);
    putU64(badEntryType, 1);
    putU64(badEntryType, 2);
    badEntryType.push_back(9);
    putU64(badEntryType, 0);
    rejects(badEntryType, "unknown entry type 9");
    std::string hugeVoters = header(1, kAppendType, 0x04);
    putU64(hugeVoters, 1);
    putU64(hugeVoters, 1);
    putU32(hugeVoters, UINT32_MAX);
    rejects(hugeVoters, "snapshot voters claims 4294967295 ids");
    std::string emptySnapshot = header(1, kAppendType, 0x04);
    for (int i = 0; i < 2; ++i) putU64(emptySnapshot, 0);
    for (int i = 0; i < 2; ++i) putU32(emptySnapshot, 0);
    putU64(emptySnapshot, 0);
    rejects(emptySnapshot, "empty snapshot");

    std::mt19937_64 rng(42);
    for (int i = 0; i < 2000; ++i) {
      std::string junk(rng() % 300, '\0');
      for (char& c : junk) c = static_cast<char>(rng());
      Result<Message> r = decodeMessage(junk);
      if (r.isOk()) CPPUNIT_ASSERT(encodeMessage(*r) == junk);
    }
  }

  // Whatever the bytes, decoding returns (no crash, no huge allocation — run under ASan too),
  // and anything accepted is exactly what encoding the result gives back.
  void testCodecSurvivesRandomMutations() {
    const std::string valid = encodeMessage(fullMessage());
    std::mt19937_64 rng(20240611);
    int accepted = 0;
    for (int i = 0; i < 5000; ++i) {
      std::string bytes = valid;
      int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits && !bytes.empty(); ++e) {
        size_t at = rng() % bytes.size();
        switch (rng() % 6) {
          case 0:
            bytes[at] = static_cast<char>(bytes[at] ^ (1 << (rng() % 8)));
            break;
          case 1:
            bytes[at] = static_cast<char>(rng());
            break;
          case 2:
            bytes[at] = '\xff';
            break;
          case 3:
            bytes.resize(at);
            break;
          case 4:
            bytes.insert(at, 1 + rng() % 16, static_cast<char>(rng()));
            break;
          case 5:
            bytes.erase(at, 1 + rng() % 16);
            break;
        }
      }
      Result<Message> r = decodeMessage(bytes);
      if (r.isOk()) {
        ++accepted;
        CPPUNIT_ASSERT(encodeMessage(*r) == bytes);
      } else {
        CPPUNIT_ASSERT(!r.status().message().empty());
      }
    }
    // Flips inside numbers leave valid messages: the mutations did reach the decoder's logic.
    CPPUNIT_ASSERT(accepted > 0);
  }

  // ---- transport ----

  void testTwoTransportsExchangeTenThousandInOrder() {
    Pki pki;
    auto a = startNode(pki.options(1));
    auto b = startNode(pki.options(2));
    a->transport.addPeer(2, b->address());
    b->transport.addPeer(1, a->address());
    const uint64_t kCount = 10000;
    std::thread back([&] {
      for (uint64_t i = 1; i <= kCount; ++i) sendPaced(b->transport, append(2, 1, i));
    });
    for (uint64_t i = 1; i <= kCount; ++i) sendPaced(a->transport, append(1, 2, i));
    back.join();
    CPPUNIT_ASSERT(b->inbox.waitForCount(kCount));
    CPPUNIT_ASSERT(a->inbox.waitForCount(kCount));
    std::this_thread::sleep_for(100ms);  // nothing more (no duplicates) may arrive
    assertSequence(b->inbox.from(1), 1, 1, kCount);
    assertSequence(a->inbox.from(2), 2, 1, kCount);
    CPPUNIT_ASSERT_EQUAL(uint64_t{0}, a->transport.dropped());
    CPPUNIT_ASSERT_EQUAL(uint64_t{0}, b->transport.dropped());
    CPPUNIT_ASSERT(a->transport.connected(2));
    CPPUNIT_ASSERT(b->transport.connected(1));
  }

  void testThreeTransportsAllToAll() {
    Pki pki;
    std::vector<std::unique_ptr<Node>> nodes;
    for (NodeId id = 1; id <= 3; ++id) nodes.push_back(startNode(pki.options(id)));
    for (NodeId id = 1; id <= 3; ++id) {
      for (NodeId peer = 1; peer <= 3; ++peer) {
        if (peer != id) nodes[id - 1]->transport.addPeer(peer, nodes[peer - 1]->address());
      }
    }
    const uint64_t kCount = 500;
    std::vector<std::thread> senders;
    for (NodeId id = 1; id <= 3; ++id) {
      senders.emplace_back([&, id] {
        for (uint64_t i = 1; i <= kCount; ++i) {
          for (NodeId peer = 1; peer <= 3; ++peer) {
            if (peer != id) sendPaced(nodes[id - 1]->transport, append(id, peer, i));
          }
        }
      });
    }
    for (std::thread& t : senders) t.join();
    for (NodeId id = 1; id <= 3; ++id) {
      Node& n = *nodes[id - 1];
      CPPUNIT_ASSERT(n.inbox.waitForCount(2 * kCount));
      for (NodeId peer = 1; peer <= 3; ++peer) {
        if (peer != id) assertSequence(n.inbox.from(peer), peer, 1, kCount);
      }
      CPPUNIT_ASSERT_EQUAL(uint64_t{0}, n.transport.dropped());
    }
  }

  // The rogue CA even has the cluster CA's name: only the signature tells them apart.
  void testPeerWithCertificateFromAnotherCaIsRefused() {
    Pki pki;
    auto a = startNode(pki.options(1));
    auto rogue = startNode(pki.options(2, "", /*fromRogueCa=*/true));
    auto good = startNode(pki.options(3));
    a->transport.addPeer(2, rogue->address());
    rogue->transport.addPeer(1, a->address());
    good->transport.addPeer(1, a->address());
    for (uint64_t i = 1; i <= 20; ++i) {
      rogue->transport.send(append(2, 1, i));
      good->transport.send(append(3, 1, i));
      a->transport.send(append(1, 2, i));
    }
    CPPUNIT_ASSERT(a->inbox.waitForCount(20));
    std::this_thread::sleep_for(1s);  // several redials by the rogue, and by a
    assertSequence(a->inbox.from(3), 3, 1, 20);
    CPPUNIT_ASSERT(a->inbox.from(2).empty());
    CPPUNIT_ASSERT_EQUAL(size_t{0}, rogue->inbox.size());
    CPPUNIT_ASSERT(!rogue->transport.connected(1));
    CPPUNIT_ASSERT(!a->transport.connected(2));
    // Nothing was taken off the queues of refused connections.
    CPPUNIT_ASSERT_EQUAL(size_t{20}, rogue->transport.queued(1));
    CPPUNIT_ASSERT_EQUAL(size_t{20}, a->transport.queued(2));
  }

  void testPeerWithoutCertificateIsRefused() {
    Pki pki;
    auto a = startNode(pki.options(1));
    RawTlsClient anonymous(pki.caFile(), "", "", a->transport.port());
    anonymous.write(hello(2, 1));
    anonymous.write(frame(encodeMessage(append(2, 1, 1))));
    CPPUNIT_ASSERT(!anonymous.readFrame().has_value());  // no ack: the server hung up
    CPPUNIT_ASSERT_EQUAL(size_t{0}, a->inbox.size());

    // The same bytes from a client with a certificate are delivered (the test can fail).
    Pki::Files f = pki.credentials("shoal-raft-2");
    RawTlsClient client(pki.caFile(), f.cert, f.key, a->transport.port());
    CPPUNIT_ASSERT(client.connected());
    CPPUNIT_ASSERT(client.write(hello(2, 1)));
    CPPUNIT_ASSERT(client.readFrame().has_value());
    CPPUNIT_ASSERT(client.write(frame(encodeMessage(append(2, 1, 1)))));
    CPPUNIT_ASSERT(a->inbox.waitForCount(1, 5s));
  }

  void testCommonNameMismatchRefusedWhenRequired() {
    Pki pki;
    TcpTransport::Options strict = pki.options(1);
    strict.requirePeerIdInCN = true;
    auto a = startNode(strict);
    auto impostor = startNode(pki.options(2, "shoal-raft-7"));  // valid CA, wrong name
    auto good = startNode(pki.options(3));
    a->transport.addPeer(2, impostor->address());
    impostor->transport.addPeer(1, a->address());
    good->transport.addPeer(1, a->address());
    for (uint64_t i = 1; i <= 20; ++i) {
      impostor->transport.send(append(2, 1, i));
      good->transport.send(append(3, 1, i));
      a->transport.send(append(1, 2, i));  // a checks the name of the node it dials, too
    }
    CPPUNIT_ASSERT(a->inbox.waitForCount(20));
    std::this_thread::sleep_for(1s);
    assertSequence(a->inbox.from(3), 3, 1, 20);
    CPPUNIT_ASSERT(a->inbox.from(2).empty());
    CPPUNIT_ASSERT_EQUAL(size_t{0}, impostor->inbox.size());
    CPPUNIT_ASSERT(!impostor->transport.connected(1));
    CPPUNIT_ASSERT(!a->transport.connected(2));
  }

  void testCommonNameNotCheckedUnlessRequired() {
    Pki pki;
    auto a = startNode(pki.options(1));
    auto other = startNode(pki.options(2, "shoal-raft-7"));
    other->transport.addPeer(1, a->address());
    a->transport.addPeer(2, other->address());
    other->transport.send(append(2, 1, 1));
    a->transport.send(append(1, 2, 1));
    CPPUNIT_ASSERT(a->inbox.waitForCount(1, 10s));
    CPPUNIT_ASSERT(other->inbox.waitForCount(1, 10s));
  }

  void testPeerRestartReconnectsAndDeliversWhatWasQueued() {
    Pki pki;
    auto a = startNode(pki.options(1));
    TcpTransport::Options bOptions = pki.options(2);
    auto b = startNode(bOptions);
    const int port = b->transport.port();
    a->transport.addPeer(2, b->address());
    for (uint64_t i = 1; i <= 100; ++i) a->transport.send(append(1, 2, i));
    CPPUNIT_ASSERT(b->inbox.waitForCount(100));
    assertSequence(b->inbox.from(1), 1, 1, 100);

    b.reset();  // stops: closes its connections and its port
    // a notices the close without having to lose a write on it.
    CPPUNIT_ASSERT(eventually([&] { return !a->transport.connected(2); }, 5s));
    for (uint64_t i = 101; i <= 200; ++i) a->transport.send(append(1, 2, i));
    std::this_thread::sleep_for(300ms);  // a few failed redials
    CPPUNIT_ASSERT_EQUAL(size_t{100}, a->transport.queued(2));

    bOptions.listenAddress = "127.0.0.1:" + std::to_string(port);
    b = startNode(bOptions);
    CPPUNIT_ASSERT(b->inbox.waitForCount(100, 10s));
    std::this_thread::sleep_for(100ms);
    assertSequence(b->inbox.from(1), 1, 101, 200);
    CPPUNIT_ASSERT(a->transport.connected(2));
    CPPUNIT_ASSERT_EQUAL(uint64_t{0}, a->transport.dropped());
  }

  void testNewAddressIsDialled() {
    Pki pki;
    auto a = startNode(pki.options(1));
    auto b = startNode(pki.options(2));
    a->transport.addPeer(2, "127.0.0.1:" + std::to_string(closedPort()));
    for (uint64_t i = 1; i <= 10; ++i) a->transport.send(append(1, 2, i));
    std::this_thread::sleep_for(200ms);
    CPPUNIT_ASSERT_EQUAL(size_t{0}, b->inbox.size());
    a->transport.addPeer(2, b->address());
    CPPUNIT_ASSERT(b->inbox.waitForCount(10, 10s));
    assertSequence(b->inbox.from(1), 1, 1, 10);
    // A removed peer is unknown again: its connection closes and sends to it are counted.
    a->transport.removePeer(2);
    CPPUNIT_ASSERT(!a->transport.connected(2));
    a->transport.send(append(1, 2, 11));
    CPPUNIT_ASSERT_EQUAL(uint64_t{1}, a->transport.dropped());
    CPPUNIT_ASSERT_EQUAL(size_t{0}, a->transport.queued(2));
  }

  // A snapshot larger than a frame travels as several frames and arrives whole; one above
  // the message limit is dropped and counted by the sender, and what follows it still
  // arrives. A receiver with a smaller message limit closes the connection instead of
  // buffering without bound.
  void testLargeSnapshotDeliveredAndOversizeDropped() {
    Pki pki;
    TcpTransport::Options o = pki.options(1);
    o.maxFrameBytes = size_t{4} << 20;
    o.maxMessageBytes = size_t{16} << 20;
    auto a = startNode(o);
    auto b = startNode(pki.options(2));
    a->transport.addPeer(2, b->address());
    Message snap;
    snap.type = MessageType::kSnapshot;
    snap.from = 1;
    snap.to = 2;
    snap.term = 2;
    snap.snapshot.index = 10;
    snap.snapshot.term = 2;
    snap.snapshot.voters = {1, 2};
    snap.snapshot.data = pattern(3, size_t{12} << 20);  // three frames
    Message tooBig = snap;
    tooBig.snapshot.data = pattern(4, size_t{17} << 20);
    a->transport.send(snap);
    a->transport.send(tooBig);
    a->transport.send(append(1, 2, 1));
    CPPUNIT_ASSERT(b->inbox.waitForCount(2));
    std::this_thread::sleep_for(100ms);
    std::vector<Message> got = b->inbox.from(1);
    CPPUNIT_ASSERT_EQUAL(size_t{2}, got.size());
    assertSameMessage(snap, got[0]);
    CPPUNIT_ASSERT_EQUAL(uint64_t{1}, got[1].index);
    CPPUNIT_ASSERT_EQUAL(uint64_t{1}, a->transport.dropped());

    TcpTransport::Options small = pki.options(3);
    small.maxFrameBytes = size_t{4} << 20;
    small.maxMessageBytes = size_t{8} << 20;
    auto c = startNode(small);
    a->transport.addPeer(3, c->address());
    Message toC = snap;
    toC.to = 3;
    a->transport.send(toC);
    std::this_thread::sleep_for(500ms);
    a->transport.send(append(1, 3, 7));
    CPPUNIT_ASSERT(c->inbox.waitForCount(1));
    for (const Message& m : c->inbox.from(1)) {
      CPPUNIT_ASSERT(m.type != MessageType::kSnapshot);
    }
  }

  void testFullQueueDropsAndCountsWithoutBlocking() {
    Pki pki;
    TcpTransport::Options o = pki.options(1);
    o.maxQueuePerPeer = 100;
    auto a = startNode(o);
    a->transport.addPeer(2, "127.0.0.1:" + std::to_string(closedPort()));
    Clock::time_point t0 = Clock::now();
    for (uint64_t i = 1; i <= 150; ++i) a->transport.send(append(1, 2, i));
    auto elapsed = Clock::now() - t0;
    CPPUNIT_ASSERT_MESSAGE(std::to_string(elapsed.count()) + " ns", elapsed < 500ms);
    CPPUNIT_ASSERT_EQUAL(size_t{100}, a->transport.queued(2));
    CPPUNIT_ASSERT_EQUAL(uint64_t{50}, a->transport.dropped());
    a->transport.send(append(1, 9, 1));  // unknown peer
    CPPUNIT_ASSERT_EQUAL(uint64_t{51}, a->transport.dropped());
    // The queue keeps its bound while redials fail.
    std::this_thread::sleep_for(300ms);
    CPPUNIT_ASSERT_EQUAL(size_t{100}, a->transport.queued(2));
  }

  void testStopIsPromptWithUnreachablePeers() {
    Pki pki;
    TcpTransport::Options o = pki.options(1);
    o.handshakeTimeout = 60s;  // so nothing ends by itself: stop() must cut every wait short
    auto a = startNode(o);
    SilentListener silent;
    a->transport.addPeer(2, "127.0.0.1:" + std::to_string(closedPort()));  // refused
    a->transport.addPeer(3, silent.address());  // TLS handshake never answered
    a->transport.addPeer(4, "192.0.2.1:2387");  // TEST-NET-1: black hole or unreachable
    for (NodeId peer = 2; peer <= 4; ++peer) {
      for (uint64_t i = 1; i <= 50; ++i) a->transport.send(append(1, peer, i));
    }
    // An inbound connection that never starts TLS keeps a reader waiting in the handshake.
    int idle = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(a->transport.port()));
    CPPUNIT_ASSERT_EQUAL(0, ::connect(idle, reinterpret_cast<sockaddr*>(&addr), sizeof addr));
    std::this_thread::sleep_for(300ms);

    Clock::time_point t0 = Clock::now();
    a->transport.stop();
    auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
    ::close(idle);
    CPPUNIT_ASSERT_MESSAGE(std::to_string(elapsed.count()) + " ms", elapsed < 1s);
    a->transport.stop();  // idempotent
    a->transport.send(append(1, 2, 1));
    CPPUNIT_ASSERT_EQUAL(size_t{0}, a->transport.queued(2));
  }

  void testBadFramesCloseTheConnectionOnly() {
    Pki pki;
    auto a = startNode(pki.options(1));
    Pki::Files f = pki.credentials("shoal-raft-2");
    const int port = a->transport.port();
    {
      RawTlsClient c(pki.caFile(), f.cert, f.key, port);
      CPPUNIT_ASSERT(c.connected());
      CPPUNIT_ASSERT(c.write(hello(2, 1)));
      std::optional<std::string> ack = c.readFrame();
      CPPUNIT_ASSERT(ack.has_value());
      std::string want = "SRFT";
      want.push_back(2);  // the wire version
      putU64(want, 1);
      CPPUNIT_ASSERT(*ack == want);
      CPPUNIT_ASSERT(c.write(frame(encodeMessage(append(2, 1, 1)))));
      CPPUNIT_ASSERT(c.write(frame(encodeMessage(append(2, 99, 2)))));  // not for this node
      CPPUNIT_ASSERT(c.write(frame(encodeMessage(append(3, 1, 3)))));   // not from this peer
      CPPUNIT_ASSERT(c.write(frame(encodeMessage(append(2, 1, 4)))));
      CPPUNIT_ASSERT(a->inbox.waitForCount(2, 5s));
      CPPUNIT_ASSERT(c.write(frame("definitely not a raft message")));
      CPPUNIT_ASSERT(c.closedByServer());
      std::vector<Message> got = a->inbox.from(2);
      CPPUNIT_ASSERT_EQUAL(size_t{2}, got.size());
      CPPUNIT_ASSERT_EQUAL(uint64_t{1}, got[0].index);
      CPPUNIT_ASSERT_EQUAL(uint64_t{4}, got[1].index);
    }
    {
      // A length over the limit is refused from the header alone.
      RawTlsClient c(pki.caFile(), f.cert, f.key, port);
      CPPUNIT_ASSERT(c.write(hello(2, 1)));
      CPPUNIT_ASSERT(c.readFrame().has_value());
      std::string huge;
      putU32(huge, 0xfffffff0u);
      CPPUNIT_ASSERT(c.write(huge + "abc"));
      CPPUNIT_ASSERT(c.closedByServer());
    }
    {
      // A zero-length frame is a protocol error too.
      RawTlsClient c(pki.caFile(), f.cert, f.key, port);
      CPPUNIT_ASSERT(c.write(hello(2, 1)));
      CPPUNIT_ASSERT(c.readFrame().has_value());
      CPPUNIT_ASSERT(c.write(std::string(4, '\0')));
      CPPUNIT_ASSERT(c.closedByServer());
    }
    // The transport itself carries on.
    RawTlsClient c(pki.caFile(), f.cert, f.key, port);
    CPPUNIT_ASSERT(c.write(hello(2, 1)));
    CPPUNIT_ASSERT(c.readFrame().has_value());
    CPPUNIT_ASSERT(c.write(frame(encodeMessage(append(2, 1, 5)))));
    CPPUNIT_ASSERT(a->inbox.waitForCount(3, 5s));
  }

  void testHelloIsChecked() {
    Pki pki;
    auto a = startNode(pki.options(1));
    Pki::Files f = pki.credentials("shoal-raft-2");
    const int port = a->transport.port();
    auto refused = [&](const std::string& opening) {
      RawTlsClient c(pki.caFile(), f.cert, f.key, port);
      CPPUNIT_ASSERT(c.connected());
      c.write(opening);
      return !c.readFrame().has_value();
    };
    CPPUNIT_ASSERT(refused(hello(2, 5)));                 // dialled another node
    CPPUNIT_ASSERT(refused(hello(2, 1, /*version=*/9)));  // unknown wire version
    CPPUNIT_ASSERT(refused(hello(2, 1, /*version=*/1)));  // before fragments: no longer spoken
    CPPUNIT_ASSERT(refused(hello(0, 1)));                 // no id
    CPPUNIT_ASSERT(refused(hello(1, 1)));                 // claims to be the acceptor
    CPPUNIT_ASSERT(refused(frame(encodeMessage(append(2, 1, 1)))));  // no hello at all
    CPPUNIT_ASSERT(!refused(hello(2, 1)));
    CPPUNIT_ASSERT_EQUAL(size_t{0}, a->inbox.size());
  }

  void testStartReportsBadConfiguration() {
    Pki pki;
    {
      TcpTransport::Options o = pki.options(1);
      o.certFile = pki.dir().file("missing.crt");
      Node n(o);
      Status s = n.transport.start();
      CPPUNIT_ASSERT(s.code() == Status::Code::kInvalidArgument);
    }
    {
      // A key that belongs to another certificate.
      TcpTransport::Options o = pki.options(1);
      o.keyFile = pki.options(2).keyFile;
      Node n(o);
      Status s = n.transport.start();
      CPPUNIT_ASSERT_MESSAGE(s.toString(), s.code() == Status::Code::kInvalidArgument);
    }
    {
      auto a = startNode(pki.options(1));
      TcpTransport::Options o = pki.options(2);
      o.listenAddress = a->address();  // taken
      Node n(o);
      Status s = n.transport.start();
      CPPUNIT_ASSERT_MESSAGE(s.toString(), s.code() == Status::Code::kUnavailable);
      CPPUNIT_ASSERT(n.transport.start().code() != Status::Code::kOk);
    }
    {
      TcpTransport::Options o = pki.options(1);
      TcpTransport t(o);  // no handler
      CPPUNIT_ASSERT(t.start().code() == Status::Code::kFailedPrecondition);
    }
  }

  // Not a pass/fail bound (machines differ): prints messages per second for appends with one
  // 100-byte entry, one direction, over loopback TLS, and checks they all arrived in order.
  void testThroughputOfSmallAppends() {
#ifdef SHOAL_SANITIZE_BUILD
    const uint64_t kCount = 20000;
#else
    const uint64_t kCount = 200000;
#endif
    Pki pki;
    auto a = startNode(pki.options(1));
    std::atomic<uint64_t> received{0};
    std::atomic<bool> inOrder{true};
    TcpTransport b(pki.options(2));
    std::atomic<bool> warm{false};
    b.setHandler([&](Message m) {
      if (m.index == 0) {
        warm = true;
        return;
      }
      uint64_t n = received.load() + 1;
      if (m.index != n || m.entries.size() != 1 || m.entries[0].data.size() != 100) {
        inOrder = false;
      }
      received = n;
    });
    Status s = b.start();
    CPPUNIT_ASSERT(s.isOk());
    a->transport.addPeer(2, "127.0.0.1:" + std::to_string(b.port()));
    a->transport.send(append(1, 2, 0, 100));  // connect first: time the steady state
    CPPUNIT_ASSERT(eventually([&] { return warm.load(); }));

    Clock::time_point t0 = Clock::now();
    for (uint64_t i = 1; i <= kCount; ++i) sendPaced(a->transport, append(1, 2, i, 100), 4000);
    CPPUNIT_ASSERT(eventually([&] { return received.load() >= kCount; }, 120s));
    double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    b.stop();
    CPPUNIT_ASSERT(inOrder.load());
    CPPUNIT_ASSERT_EQUAL(kCount, received.load());
    std::cerr << "\n  transport throughput: " << static_cast<uint64_t>(kCount / seconds)
              << " appends/s (one 100-byte entry each, loopback TLS 1.3, " << kCount
              << " messages in " << seconds << " s)\n";
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(TransportTest);
