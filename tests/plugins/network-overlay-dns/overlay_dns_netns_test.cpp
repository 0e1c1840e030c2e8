// The embedded DNS in real network namespaces (root, iproute2). Each test makes two namespaces
// (shoal-dnstest-<pid>-a/-b, lo up), serves both from one Server with different network sets,
// and queries 127.0.0.11 from inside them over UDP and TCP on threads that setns() into them.
// Forwarding goes to fake upstreams on 127.0.0.1:<ephemeral> in the test's own namespace. No
// traffic leaves loopback. tearDown stops the server and deletes the namespaces even after a
// failed assertion.
#include <cppunit/extensions/HelperMacros.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "dns/message.hpp"
#include "dns/names.hpp"
#include "dns/server.hpp"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace shoal::overlay::dns;
using shoal::test::runCommand;
using Bytes = std::vector<uint8_t>;
using std::chrono::milliseconds;

namespace {

uint32_t ip(const char* text) { return *parseIpv4(text); }

sockaddr_in resolverAddress() {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(53);
  inet_pton(AF_INET, "127.0.0.11", &a.sin_addr);
  return a;
}

// Runs `fn` on a thread inside the namespace at `nsPath`; the thread ends with it.
template <class F>
void inNamespace(const std::string& nsPath, F fn) {
  std::thread t([&] {
    const int fd = ::open(nsPath.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) {
      if (fd >= 0) ::close(fd);
      return;
    }
    ::close(fd);
    fn();
  });
  t.join();
}

bool readFull(int fd, uint8_t* p, size_t n, int timeoutMs) {
  while (n > 0) {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, timeoutMs) != 1) return false;
    const ssize_t got = ::recv(fd, p, n, 0);
    if (got <= 0) return false;
    p += got;
    n -= static_cast<size_t>(got);
  }
  return true;
}

// One UDP query from inside `nsPath`; nullopt when nothing (valid) came back in time.
std::optional<Response> udpQuery(const std::string& nsPath, const Bytes& query,
                                 int timeoutMs = 3000, Bytes* raw = nullptr) {
  std::optional<Response> result;
  inNamespace(nsPath, [&] {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in to = resolverAddress();
    if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0 &&
        ::send(fd, query.data(), query.size(), 0) == static_cast<ssize_t>(query.size())) {
      pollfd pfd{fd, POLLIN, 0};
      Bytes buf(65536);
      if (::poll(&pfd, 1, timeoutMs) == 1) {
        const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
        Response r;
        if (n > 0 && parseResponse(buf.data(), static_cast<size_t>(n), &r)) {
          result = r;
          if (raw) raw->assign(buf.begin(), buf.begin() + n);
        }
      }
    }
    ::close(fd);
  });
  return result;
}

// Several queries in sequence on one TCP connection from inside `nsPath`; one entry per answer.
std::vector<Response> tcpQueries(const std::string& nsPath, const std::vector<Bytes>& queries) {
  std::vector<Response> answers;
  inNamespace(nsPath, [&] {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in to = resolverAddress();
    if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
      ::close(fd);
      return;
    }
    for (const Bytes& q : queries) {
      Bytes framed = {static_cast<uint8_t>(q.size() >> 8), static_cast<uint8_t>(q.size())};
      framed.insert(framed.end(), q.begin(), q.end());
      if (::send(fd, framed.data(), framed.size(), MSG_NOSIGNAL) < 0) break;
      uint8_t len[2];
      if (!readFull(fd, len, 2, 3000)) break;
      Bytes body((static_cast<size_t>(len[0]) << 8) | len[1]);
      if (!readFull(fd, body.data(), body.size(), 3000)) break;
      Response r;
      if (!parseResponse(body.data(), body.size(), &r)) break;
      answers.push_back(r);
    }
    ::close(fd);
  });
  return answers;
}

// Queries written at once on one TCP connection, then the write side shut; answers (in any
// order) read until the server closes. `closed` says the server closed the connection.
std::vector<Response> tcpPipelined(const std::string& nsPath, const std::vector<Bytes>& queries,
                                   bool* closed) {
  std::vector<Response> answers;
  *closed = false;
  inNamespace(nsPath, [&] {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in to = resolverAddress();
    if (::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
      ::close(fd);
      return;
    }
    Bytes all;
    for (const Bytes& q : queries) {
      all.push_back(static_cast<uint8_t>(q.size() >> 8));
      all.push_back(static_cast<uint8_t>(q.size()));
      all.insert(all.end(), q.begin(), q.end());
    }
    ::send(fd, all.data(), all.size(), MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);
    for (;;) {
      uint8_t len[2];
      pollfd pfd{fd, POLLIN, 0};
      if (::poll(&pfd, 1, 3000) != 1) break;
      const ssize_t got = ::recv(fd, len, 1, MSG_PEEK);
      if (got == 0) {
        *closed = true;
        break;
      }
      if (!readFull(fd, len, 2, 3000)) break;
      Bytes body((static_cast<size_t>(len[0]) << 8) | len[1]);
      Response r;
      if (!readFull(fd, body.data(), body.size(), 3000) ||
          !parseResponse(body.data(), body.size(), &r)) {
        break;
      }
      answers.push_back(r);
    }
    ::close(fd);
  });
  return answers;
}

// A resolver on 127.0.0.1:<ephemeral> in the test's namespace: "outside.example" -> 192.0.2.7,
// "big.example" -> 100 addresses whatever the asker can take, anything else NXDOMAIN. With
// `silent` it reads and never answers (an upstream that times out).
class FakeUpstream {
 public:
  explicit FakeUpstream(bool silent = false) : silent_(silent) {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t len = sizeof a;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      throw std::runtime_error("fake upstream: bind failed");
    }
    port_ = ntohs(a.sin_port);
    stop_ = ::eventfd(0, EFD_CLOEXEC);
    thread_ = std::thread([this] { run(); });
  }
  ~FakeUpstream() {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(stop_, &one, sizeof one);
    thread_.join();
    ::close(fd_);
    ::close(stop_);
  }
  std::string spec() const { return "127.0.0.1:" + std::to_string(port_); }
  std::vector<std::string> names() {
    std::lock_guard<std::mutex> lock(mu_);
    return names_;
  }
  std::vector<uint16_t> ids() {
    std::lock_guard<std::mutex> lock(mu_);
    return ids_;
  }

 private:
  void run() {
    Bytes buf(65536);
    for (;;) {
      pollfd pfds[2] = {{fd_, POLLIN, 0}, {stop_, POLLIN, 0}};
      if (::poll(pfds, 2, -1) < 0 || (pfds[1].revents & POLLIN)) return;
      sockaddr_in from{};
      socklen_t len = sizeof from;
      const ssize_t n =
          ::recvfrom(fd_, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n <= 0) continue;
      Query q;
      if (parseQuery(buf.data(), static_cast<size_t>(n), &q) != ParseResult::kOk) continue;
      {
        std::lock_guard<std::mutex> lock(mu_);
        names_.push_back(normalizeName(q.name));
        ids_.push_back(q.id);
      }
      if (silent_) continue;
      const std::string name = normalizeName(q.name);
      Bytes out;
      if (name == "outside.example") {
        out = buildAnswer(q, kNoError, {ip("192.0.2.7")}, 300, responseLimit(q, false));
      } else if (name == "big.example") {
        std::vector<uint32_t> many;
        for (uint32_t i = 1; i <= 100; ++i) many.push_back(0xC6336400u + i);
        out = buildAnswer(q, kNoError, many, 300, kMaxTcpSize);
      } else {
        out = buildAnswer(q, kNxDomain, {}, 0, responseLimit(q, false));
      }
      ::sendto(fd_, out.data(), out.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
    }
  }

  bool silent_;
  int fd_ = -1;
  int stop_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> names_;  // guarded by mu_
  std::vector<uint16_t> ids_;       // guarded by mu_
};

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ",") + n;
  return out;
}

bool hasAddress(const std::optional<Response>& r, const char* address) {
  if (!r) return false;
  for (uint32_t a : r->addresses) {
    if (a == ip(address)) return true;
  }
  return false;
}

}  // namespace

class DnsNetnsTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(DnsNetnsTest);
  CPPUNIT_TEST(testSharedNetworksResolveOtherNetworksDoNot);
  CPPUNIT_TEST(testKnownNamesAnswerOtherTypesEmpty);
  CPPUNIT_TEST(testTcpServesSeveralQueriesPerConnection);
  CPPUNIT_TEST(testTcpPipelinedQueriesAreAllAnsweredBeforeClose);
  CPPUNIT_TEST(testChangesFromOtherThreadsWhileServing);
  CPPUNIT_TEST(testSetRecordsIsSeenAtOnce);
  CPPUNIT_TEST(testRotatesMultipleAddresses);
  CPPUNIT_TEST(testRemoveSandboxFreesThePort);
  CPPUNIT_TEST(testSandboxErrorsSayWhy);
  CPPUNIT_TEST(testMalformedQueryGetsFormErrAndServingGoesOn);
  CPPUNIT_TEST(testForwardsUnknownNamesKeepingTheAskersId);
  CPPUNIT_TEST(testOversizedUpstreamAnswerIsTruncatedForUdp);
  CPPUNIT_TEST(testSilentUpstreamTimesOutToTheNext);
  CPPUNIT_TEST(testRefusedUpstreamIsSkippedAtOnce);
  CPPUNIT_TEST(testNoUpstreamAnswersServfail);
  CPPUNIT_TEST(testOwnedTasksNameIsNotForwarded);
  CPPUNIT_TEST(testGlibcResolverInsideTheNamespace);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    CPPUNIT_ASSERT_MESSAGE("this test needs root and ip (network namespaces)",
                           geteuid() == 0 && runCommand({"ip", "netns", "list"}).exitCode == 0);
    const std::string prefix = "shoal-dnstest-" + std::to_string(getpid()) + "-";
    for (const char* suffix : {"a", "b"}) {
      const std::string name = prefix + suffix;
      run({"ip", "netns", "add", name});
      made_.push_back(name);
      run({"ip", "-n", name, "link", "set", "lo", "up"});
    }
    upstream_ = std::make_unique<FakeUpstream>();
    startServer({upstream_->spec()});
  }

  void tearDown() override {
    server_.reset();
    upstream_.reset();
    for (const std::string& name : made_) {
      runCommand({"ip", "netns", "del", name}, std::chrono::seconds(30));
    }
    made_.clear();
  }

  void testSharedNetworksResolveOtherNetworksDoNot() {
    // a is on front; b on front and back.
    std::optional<Response> web = udpQuery(nsA(), buildQuery(1, "web", kTypeA));
    CPPUNIT_ASSERT(hasAddress(web, "10.0.1.2"));
    CPPUNIT_ASSERT_EQUAL(kNoError, web->rcode);
    CPPUNIT_ASSERT_EQUAL(uint32_t(1), web->ttls.at(0));
    CPPUNIT_ASSERT(hasAddress(udpQuery(nsB(), buildQuery(2, "WEB.", kTypeA)), "10.0.1.2"));
    CPPUNIT_ASSERT(hasAddress(udpQuery(nsB(), buildQuery(3, "db", kTypeA)), "10.0.2.2"));
    // From a, "db" is not ours: forwarded, and the upstream does not know it.
    std::optional<Response> db = udpQuery(nsA(), buildQuery(4, "db", kTypeA));
    CPPUNIT_ASSERT(db);
    CPPUNIT_ASSERT_EQUAL(kNxDomain, db->rcode);
    CPPUNIT_ASSERT(db->addresses.empty());
    CPPUNIT_ASSERT_EQUAL(uint16_t(4), db->id);
    CPPUNIT_ASSERT_EQUAL(std::string("db"), joined(upstream_->names()));
    // Task names too.
    CPPUNIT_ASSERT(hasAddress(udpQuery(nsB(), buildQuery(5, "db.1.abcdef", kTypeA)), "10.0.2.3"));
  }

  void testKnownNamesAnswerOtherTypesEmpty() {
    for (uint16_t type : {kTypeAAAA, kTypeMX, kTypeTXT}) {
      std::optional<Response> r = udpQuery(nsA(), buildQuery(7, "web", type));
      CPPUNIT_ASSERT(r);
      CPPUNIT_ASSERT_EQUAL(kNoError, r->rcode);
      CPPUNIT_ASSERT_EQUAL(uint16_t(0), r->answerCount);
      CPPUNIT_ASSERT_EQUAL(type, r->qtype);
    }
    CPPUNIT_ASSERT(upstream_->names().empty());
  }

  void testTcpServesSeveralQueriesPerConnection() {
    std::vector<Response> answers = tcpQueries(
        nsB(), {buildQuery(11, "web", kTypeA), buildQuery(12, "tasks.db", kTypeA),
                buildQuery(13, "outside.example", kTypeA), buildQuery(14, "db", kTypeAAAA)});
    CPPUNIT_ASSERT_EQUAL(size_t(4), answers.size());
    CPPUNIT_ASSERT_EQUAL(uint16_t(11), answers[0].id);
    CPPUNIT_ASSERT_EQUAL(ip("10.0.1.2"), answers[0].addresses.at(0));
    CPPUNIT_ASSERT_EQUAL(uint16_t(12), answers[1].id);
    CPPUNIT_ASSERT_EQUAL(size_t(2), answers[1].addresses.size());
    CPPUNIT_ASSERT_EQUAL(uint16_t(13), answers[2].id);  // forwarded over UDP, back over TCP
    CPPUNIT_ASSERT_EQUAL(ip("192.0.2.7"), answers[2].addresses.at(0));
    CPPUNIT_ASSERT_EQUAL(uint16_t(14), answers[3].id);
    CPPUNIT_ASSERT_EQUAL(uint16_t(0), answers[3].answerCount);
  }

  void testTcpPipelinedQueriesAreAllAnsweredBeforeClose() {
    bool closed = false;
    std::vector<Response> answers =
        tcpPipelined(nsB(),
                     {buildQuery(61, "outside.example", kTypeA), buildQuery(62, "web", kTypeA),
                      buildQuery(63, "nothere.example", kTypeA)},
                     &closed);
    CPPUNIT_ASSERT_EQUAL(size_t(3), answers.size());
    CPPUNIT_ASSERT(closed);  // after the last answer, since the client shut its side
    std::vector<uint16_t> ids;
    for (const Response& r : answers) {
      ids.push_back(r.id);
      if (r.id == 61) CPPUNIT_ASSERT_EQUAL(ip("192.0.2.7"), r.addresses.at(0));
      if (r.id == 62) CPPUNIT_ASSERT_EQUAL(ip("10.0.1.2"), r.addresses.at(0));
      if (r.id == 63) CPPUNIT_ASSERT_EQUAL(kNxDomain, r.rcode);
    }
    std::sort(ids.begin(), ids.end());
    CPPUNIT_ASSERT(ids == (std::vector<uint16_t>{61, 62, 63}));
  }

  // setRecords and add/removeSandbox from another thread while a's queries keep being answered
  // (run under TSan in the sanitizer build).
  void testChangesFromOtherThreadsWhileServing() {
    std::atomic<bool> done{false};
    std::string failure;
    std::thread churn([&] {
      for (int i = 0; i < 50 && failure.empty(); ++i) {
        server_->setRecords({{"web", "front", {ip(i % 2 ? "10.0.1.2" : "10.0.1.20")}}});
        server_->removeSandbox("task-b");
        Status s = server_->addSandbox("task-b", nsB(), {"front", "back"});
        if (!s) failure = s.message();
      }
      done = true;
    });
    int answered = 0;
    for (uint16_t i = 0; !done; ++i) {
      std::optional<Response> r = udpQuery(nsA(), buildQuery(i, "web", kTypeA), 1000);
      if (r && r->addresses.size() == 1) ++answered;
    }
    churn.join();
    CPPUNIT_ASSERT_MESSAGE(failure, failure.empty());
    CPPUNIT_ASSERT(answered > 0);
    CPPUNIT_ASSERT(udpQuery(nsB(), buildQuery(1, "web", kTypeA)));
    CPPUNIT_ASSERT_EQUAL(size_t(2), server_->sandboxCount());
  }

  void testSetRecordsIsSeenAtOnce() {
    CPPUNIT_ASSERT(hasAddress(udpQuery(nsA(), buildQuery(1, "web", kTypeA)), "10.0.1.2"));
    server_->setRecords({{"web", "front", {ip("10.0.1.99")}}, {"new", "front", {ip("10.0.1.50")}}});
    std::optional<Response> web = udpQuery(nsA(), buildQuery(2, "web", kTypeA));
    CPPUNIT_ASSERT(hasAddress(web, "10.0.1.99"));
    CPPUNIT_ASSERT_EQUAL(size_t(1), web->addresses.size());
    CPPUNIT_ASSERT(hasAddress(udpQuery(nsA(), buildQuery(3, "new", kTypeA)), "10.0.1.50"));
    // "db" is gone for b: forwarded now, NXDOMAIN from the upstream.
    std::optional<Response> db = udpQuery(nsB(), buildQuery(4, "db", kTypeA));
    CPPUNIT_ASSERT(db);
    CPPUNIT_ASSERT_EQUAL(kNxDomain, db->rcode);
  }

  void testRotatesMultipleAddresses() {
    std::vector<uint32_t> firsts;
    for (uint16_t i = 0; i < 3; ++i) {
      std::optional<Response> r = udpQuery(nsA(), buildQuery(i, "tasks.web", kTypeA));
      CPPUNIT_ASSERT(r);
      CPPUNIT_ASSERT_EQUAL(size_t(3), r->addresses.size());
      firsts.push_back(r->addresses[0]);
    }
    std::sort(firsts.begin(), firsts.end());
    CPPUNIT_ASSERT(std::unique(firsts.begin(), firsts.end()) == firsts.end());
  }

  void testRemoveSandboxFreesThePort() {
    CPPUNIT_ASSERT(udpQuery(nsA(), buildQuery(1, "web", kTypeA)));
    CPPUNIT_ASSERT(server_->removeSandbox("task-a"));
    CPPUNIT_ASSERT(!server_->removeSandbox("task-a"));
    CPPUNIT_ASSERT(!udpQuery(nsA(), buildQuery(2, "web", kTypeA), 300));
    CPPUNIT_ASSERT(tcpQueries(nsA(), {buildQuery(3, "web", kTypeA)}).empty());
    // b is still served, and a can be added again (port 53 is free in its namespace).
    CPPUNIT_ASSERT(udpQuery(nsB(), buildQuery(4, "web", kTypeA)));
    Status again = server_->addSandbox("task-a2", "/run/netns/" + made_[0], {"back"});
    CPPUNIT_ASSERT_MESSAGE(again.message(), again.isOk());
    CPPUNIT_ASSERT(hasAddress(udpQuery(nsA(), buildQuery(5, "db", kTypeA)), "10.0.2.2"));
    CPPUNIT_ASSERT_EQUAL(size_t(1), tcpQueries(nsA(), {buildQuery(6, "db", kTypeA)}).size());
  }

  void testSandboxErrorsSayWhy() {
    Status exists = server_->addSandbox("task-a", nsA(), {"front"});
    CPPUNIT_ASSERT(!exists);
    CPPUNIT_ASSERT_EQUAL(std::string("dns: sandbox task-a exists"), exists.message());
    Status busy = server_->addSandbox("task-a-dup", nsA(), {"front"});
    CPPUNIT_ASSERT(!busy);
    CPPUNIT_ASSERT_EQUAL(
        std::string("dns: cannot bind 127.0.0.11:53/udp in " + nsA() + ": Address already in use"),
        busy.message());
    Status notNs = server_->addSandbox("task-x", "/etc/hostname", {});
    CPPUNIT_ASSERT(!notNs);
    CPPUNIT_ASSERT_EQUAL(
        std::string("dns: cannot enter network namespace /etc/hostname: Invalid argument"),
        notNs.message());
    CPPUNIT_ASSERT_EQUAL(size_t(2), server_->sandboxCount());
    // The failed attempts left a's sockets working.
    CPPUNIT_ASSERT(udpQuery(nsA(), buildQuery(1, "web", kTypeA)));
  }

  void testMalformedQueryGetsFormErrAndServingGoesOn() {
    Bytes bad = buildQuery(0x7777, "web", kTypeA);
    bad[12] = 0xC0;  // the question's name becomes a pointer to itself
    bad[13] = 12;
    std::optional<Response> r = udpQuery(nsA(), bad);
    CPPUNIT_ASSERT(r);
    CPPUNIT_ASSERT_EQUAL(kFormErr, r->rcode);
    CPPUNIT_ASSERT_EQUAL(uint16_t(0x7777), r->id);
    // Garbage shorter than a header is dropped without an answer.
    CPPUNIT_ASSERT(!udpQuery(nsA(), Bytes{1, 2, 3}, 200));
    CPPUNIT_ASSERT(hasAddress(udpQuery(nsA(), buildQuery(1, "web", kTypeA)), "10.0.1.2"));
  }

  void testForwardsUnknownNamesKeepingTheAskersId() {
    std::optional<Response> r = udpQuery(nsA(), buildQuery(0xABCD, "Outside.Example", kTypeA));
    CPPUNIT_ASSERT(r);
    CPPUNIT_ASSERT_EQUAL(uint16_t(0xABCD), r->id);
    CPPUNIT_ASSERT_EQUAL(std::string("Outside.Example"), r->questionName);
    CPPUNIT_ASSERT(hasAddress(r, "192.0.2.7"));
    CPPUNIT_ASSERT_EQUAL(uint32_t(300), r->ttls.at(0));  // relayed verbatim
    CPPUNIT_ASSERT_EQUAL(std::string("outside.example"), joined(upstream_->names()));
  }

  void testOversizedUpstreamAnswerIsTruncatedForUdp() {
    std::optional<Response> plain = udpQuery(nsA(), buildQuery(21, "big.example", kTypeA));
    CPPUNIT_ASSERT(plain);
    CPPUNIT_ASSERT(plain->truncated);
    CPPUNIT_ASSERT_EQUAL(uint16_t(0), plain->answerCount);
    CPPUNIT_ASSERT_EQUAL(uint16_t(21), plain->id);
    std::optional<Response> edns = udpQuery(nsA(), buildQuery(22, "big.example", kTypeA, 4096));
    CPPUNIT_ASSERT(edns);
    CPPUNIT_ASSERT(!edns->truncated);
    CPPUNIT_ASSERT_EQUAL(size_t(100), edns->addresses.size());
  }

  void testSilentUpstreamTimesOutToTheNext() {
    FakeUpstream silent(true);
    startServer({silent.spec(), upstream_->spec()}, milliseconds(300));
    const auto t0 = std::chrono::steady_clock::now();
    std::optional<Response> r = udpQuery(nsA(), buildQuery(31, "outside.example", kTypeA));
    const auto took = std::chrono::steady_clock::now() - t0;
    CPPUNIT_ASSERT(hasAddress(r, "192.0.2.7"));
    CPPUNIT_ASSERT(took >= milliseconds(290));
    CPPUNIT_ASSERT(took < milliseconds(2000));
    CPPUNIT_ASSERT_EQUAL(size_t(1), silent.names().size());
    // Both silent: SERVFAIL after both timeouts.
    FakeUpstream silent2(true);
    startServer({silent.spec(), silent2.spec()}, milliseconds(200));
    std::optional<Response> failed = udpQuery(nsA(), buildQuery(32, "outside.example", kTypeA));
    CPPUNIT_ASSERT(failed);
    CPPUNIT_ASSERT_EQUAL(kServFail, failed->rcode);
    CPPUNIT_ASSERT_EQUAL(uint16_t(32), failed->id);
  }

  void testRefusedUpstreamIsSkippedAtOnce() {
    // A port nobody listens on: the kernel answers ICMP port unreachable.
    const int probe = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t len = sizeof a;
    ::bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::getsockname(probe, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(probe);
    startServer({"127.0.0.1:" + std::to_string(ntohs(a.sin_port)), upstream_->spec()});
    const auto t0 = std::chrono::steady_clock::now();
    std::optional<Response> r = udpQuery(nsA(), buildQuery(35, "outside.example", kTypeA));
    CPPUNIT_ASSERT(hasAddress(r, "192.0.2.7"));
    CPPUNIT_ASSERT(std::chrono::steady_clock::now() - t0 < milliseconds(1000));  // not 2 s
  }

  void testNoUpstreamAnswersServfail() {
    startServer({});
    std::optional<Response> r = udpQuery(nsA(), buildQuery(41, "outside.example", kTypeA));
    CPPUNIT_ASSERT(r);
    CPPUNIT_ASSERT_EQUAL(kServFail, r->rcode);
    CPPUNIT_ASSERT(hasAddress(udpQuery(nsA(), buildQuery(42, "web", kTypeA)), "10.0.1.2"));
    std::vector<Response> tcp = tcpQueries(nsA(), {buildQuery(43, "outside.example", kTypeA)});
    CPPUNIT_ASSERT_EQUAL(size_t(1), tcp.size());
    CPPUNIT_ASSERT_EQUAL(kServFail, tcp[0].rcode);
  }

  void testOwnedTasksNameIsNotForwarded() {
    server_->setRecords({{"web", "front", {ip("10.0.1.2")}}});
    std::optional<Response> r = udpQuery(nsA(), buildQuery(51, "tasks.web", kTypeA));
    CPPUNIT_ASSERT(r);
    CPPUNIT_ASSERT_EQUAL(kNxDomain, r->rcode);
    CPPUNIT_ASSERT(upstream_->names().empty());
  }

  // The real client: glibc's stub resolver (getent) inside a's namespace, with a private mount
  // namespace whose /etc/resolv.conf says 127.0.0.11 (the host's file is not touched). "hosts"
  // (gethostbyname2: AAAA, then A), not "ahosts": getaddrinfo's AI_ADDRCONFIG finds no
  // non-loopback address in these namespaces and would not ask at all.
  void testGlibcResolverInsideTheNamespace() {
    if (access("/usr/bin/getent", X_OK) != 0 || access("/usr/bin/unshare", X_OK) != 0) {
      std::cerr << "(getent or unshare missing: skipped) ";
      return;
    }
    shoal::test::TempDir dir;
    const std::string conf =
        dir.write("resolv.conf", "nameserver 127.0.0.11\noptions attempts:1\n");
    auto getent = [&](const std::string& db, const std::string& name) {
      return runCommand(
          {"nsenter", "--net=" + nsA(), "--", "unshare", "--mount", "--", "sh", "-c",
           "mount --bind \"$0\" /etc/resolv.conf && exec getent \"$1\" \"$2\"", conf, db, name},
          std::chrono::seconds(20));
    };
    shoal::test::RunResult web = getent("hosts", "web.");
    CPPUNIT_ASSERT_EQUAL_MESSAGE(web.err, 0, web.exitCode);
    CPPUNIT_ASSERT_MESSAGE(web.out, web.out.find("10.0.1.2") != std::string::npos);
    shoal::test::RunResult tasks = getent("hosts", "tasks.web.");
    CPPUNIT_ASSERT_EQUAL_MESSAGE(tasks.err, 0, tasks.exitCode);
    for (const char* a : {"10.0.1.3", "10.0.1.4", "10.0.1.5"}) {
      CPPUNIT_ASSERT_MESSAGE(tasks.out, tasks.out.find(a) != std::string::npos);
    }
    shoal::test::RunResult outside = getent("hosts", "outside.example.");
    CPPUNIT_ASSERT_MESSAGE(outside.out, outside.out.find("192.0.2.7") != std::string::npos);
    // db is on a network a is not on; the upstream does not know it either.
    CPPUNIT_ASSERT_EQUAL(2, getent("hosts", "db.").exitCode);  // getent: not found
  }

 private:
  std::string nsA() const { return "/run/netns/" + made_.at(0); }
  std::string nsB() const { return "/run/netns/" + made_.at(1); }

  // A fresh server (the previous one stopped first) with the standard records and sandboxes.
  void startServer(std::vector<std::string> upstreams, milliseconds timeout = milliseconds(2000)) {
    server_.reset();
    ServerOptions options;
    options.upstreams = std::move(upstreams);
    options.forwardTimeout = timeout;
    options.log = [](const std::string& m) { std::cerr << "\n[dns] " << m; };
    server_ = std::make_unique<Server>(options);
    server_->setRecords({
        {"web", "front", {ip("10.0.1.2")}},
        {"tasks.web", "front", {ip("10.0.1.3"), ip("10.0.1.4"), ip("10.0.1.5")}},
        {"db", "back", {ip("10.0.2.2")}},
        {"tasks.db", "back", {ip("10.0.2.3"), ip("10.0.2.4")}},
        {"db.1.abcdef", "back", {ip("10.0.2.3")}},
    });
    Status started = server_->start();
    CPPUNIT_ASSERT_MESSAGE(started.message(), started.isOk());
    Status a = server_->addSandbox("task-a", nsA(), {"front"});
    CPPUNIT_ASSERT_MESSAGE(a.message(), a.isOk());
    Status b = server_->addSandbox("task-b", nsB(), {"front", "back"});
    CPPUNIT_ASSERT_MESSAGE(b.message(), b.isOk());
  }

  void run(const std::vector<std::string>& argv) {
    shoal::test::RunResult r = runCommand(argv, std::chrono::seconds(30));
    std::string cmd;
    for (const std::string& a : argv) cmd += a + " ";
    CPPUNIT_ASSERT_MESSAGE(cmd + ": " + r.err + r.out, r.exitCode == 0);
  }

  std::vector<std::string> made_;
  std::unique_ptr<FakeUpstream> upstream_;
  std::unique_ptr<Server> server_;
};

CPPUNIT_TEST_SUITE_REGISTRATION(DnsNetnsTest);
