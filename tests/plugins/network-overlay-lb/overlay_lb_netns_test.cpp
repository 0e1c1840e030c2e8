// The VIP load balancer in real network namespaces (root, iproute2, nft, conntrack, nsenter;
// busybox for ping). Each test builds a small lab, shoal-lbt-<pid>-{sw,cl,b1,b2,b3}: a bridge
// in `sw` joining a client `cl` (10.99.7.10) and three backends `b1`..`b3` (10.99.7.1-3), each
// backend serving TCP :8080 from an in-process thread that setns()ed there and answering every
// connection, and every message on it, with its own name. The Balancer programs
// the client's namespace; connections are made from threads inside it. Nothing leaves the
// lab's namespaces; tearDown stops the servers and deletes the namespaces even after a failed
// assertion, then checks that the test thread never left its own namespace.
#include <cppunit/extensions/HelperMacros.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "lb/balancer.hpp"
#include "lb/ruleset.hpp"
#include "tests/support/process.h"

using namespace shoal::overlay::lb;
using shoal::test::runCommand;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint16_t kPort = 8080;

uint32_t ip(const char* text) {
  in_addr a{};
  if (inet_pton(AF_INET, text, &a) != 1) throw std::runtime_error("bad address");
  return ntohl(a.s_addr);
}

const uint32_t kVip = ip("10.99.7.100");
const uint32_t kEmptyVip = ip("10.99.7.101");
const uint32_t kB1 = ip("10.99.7.1");
const uint32_t kB2 = ip("10.99.7.2");
const uint32_t kB3 = ip("10.99.7.3");

long msSince(Clock::time_point start) {
  return static_cast<long>(std::chrono::duration_cast<milliseconds>(Clock::now() - start).count());
}

double msBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// The inode of the calling thread's network namespace.
ino_t threadNetns() {
  struct stat st {};
  return ::stat("/proc/thread-self/ns/net", &st) == 0 ? st.st_ino : 0;
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

// One line (without its newline) from `fd` within `timeoutMs`; false on EOF, error or timeout,
// with *error set to errno (ETIMEDOUT for a timeout, 0 for EOF).
bool readLine(int fd, std::string* line, int timeoutMs, int* error) {
  line->clear();
  const auto deadline = Clock::now() + milliseconds(timeoutMs);
  for (;;) {
    const long left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    pollfd pfd{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&pfd, 1, static_cast<int>(left)) != 1) {
      *error = ETIMEDOUT;
      return false;
    }
    char c;
    const ssize_t got = ::recv(fd, &c, 1, 0);
    if (got <= 0) {
      *error = got == 0 ? 0 : errno;
      return false;
    }
    if (c == '\n') return true;
    line->push_back(c);
  }
}

struct Attempt {
  bool answered = false;
  int error = 0;  // the connect or read errno when not answered
  std::string name;
  long ms = 0;
  int fd = -1;  // when kept open
};

// A TCP connection from the namespace at `nsPath` to addr:kPort; the server's first line is
// read. With `keep`, the connected socket is handed back (it stays in that namespace).
Attempt connectFrom(const std::string& nsPath, uint32_t addr, int timeoutMs = 2000,
                    bool keep = false) {
  Attempt a;
  a.error = EINVAL;
  inNamespace(nsPath, [&] {
    const auto start = Clock::now();
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(kPort);
    to.sin_addr.s_addr = htonl(addr);
    int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to);
    a.error = 0;
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd pfd{fd, POLLOUT, 0};
      if (::poll(&pfd, 1, timeoutMs) == 1) {
        socklen_t len = sizeof a.error;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &a.error, &len);
      } else {
        a.error = ETIMEDOUT;
      }
    } else if (rc != 0) {
      a.error = errno;
    }
    if (a.error == 0) a.answered = readLine(fd, &a.name, timeoutMs, &a.error);
    a.ms = msSince(start);
    if (keep && a.answered) {
      a.fd = fd;
    } else {
      ::close(fd);
    }
  });
  return a;
}

// Sends a message on a kept connection and reads the answer.
Attempt ask(int fd, int timeoutMs) {
  Attempt a;
  const auto start = Clock::now();
  if (::send(fd, "?\n", 2, MSG_NOSIGNAL) != 2) {
    a.error = errno;
  } else {
    a.answered = readLine(fd, &a.name, timeoutMs, &a.error);
  }
  a.ms = msSince(start);
  return a;
}

// TCP :kPort inside a namespace, answering each connection and each message with its name.
class Backend {
 public:
  Backend(const std::string& nsPath, std::string name) : name_(std::move(name) + "\n") {
    stop_ = ::eventfd(0, EFD_CLOEXEC);
    inNamespace(nsPath, [&] {
      listen_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      const int one = 1;
      ::setsockopt(listen_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(kPort);
      if (::bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
          ::listen(listen_, 128) != 0) {
        ::close(listen_);
        listen_ = -1;
      }
    });
    if (listen_ < 0) throw std::runtime_error("backend " + name_ + ": cannot listen");
    thread_ = std::thread([this] { run(); });
  }
  ~Backend() {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(stop_, &one, sizeof one);
    thread_.join();
    for (int fd : clients_) ::close(fd);
    ::close(listen_);
    ::close(stop_);
  }
  int accepted() const { return accepted_.load(); }

 private:
  void run() {
    for (;;) {
      std::vector<pollfd> fds = {{stop_, POLLIN, 0}, {listen_, POLLIN, 0}};
      for (int fd : clients_) fds.push_back({fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), -1) < 0) continue;
      if (fds[0].revents) return;
      if (fds[1].revents) {
        const int fd = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
          ++accepted_;
          ::send(fd, name_.data(), name_.size(), MSG_NOSIGNAL);
          clients_.push_back(fd);
        }
      }
      for (size_t i = 2; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        char buf[256];
        const ssize_t got = ::recv(fds[i].fd, buf, sizeof buf, 0);
        if (got > 0) {
          ::send(fds[i].fd, name_.data(), name_.size(), MSG_NOSIGNAL);
        } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
          ::close(fds[i].fd);
          clients_.erase(std::find(clients_.begin(), clients_.end(), fds[i].fd));
        }
      }
    }
  }

  std::string name_;
  int listen_ = -1;
  int stop_ = -1;
  std::vector<int> clients_;  // the loop thread's
  std::atomic<int> accepted_{0};
  std::thread thread_;
};

}  // namespace

class LbNetnsTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(LbNetnsTest);
  CPPUNIT_TEST(testSpreadsNewConnectionsEvenlyOverAllBackends);
  CPPUNIT_TEST(testIcmpEchoToVipIsAnsweredByABackend);
  CPPUNIT_TEST(testRemovedBackendGetsNoNewConnectionsAndItsFlowsAreDeleted);
  CPPUNIT_TEST(testRestartedBalancerDeletesFlowsItNeverSaw);
  CPPUNIT_TEST(testVipWithoutBackendsIsRefusedAtOnce);
  CPPUNIT_TEST(testApplyReplacesTheWholeSet);
  CPPUNIT_TEST(testRemoveDeletesTableAndFlowsAndIsIdempotent);
  CPPUNIT_TEST(testRemoveAfterNamespaceVanishedIsOk);
  CPPUNIT_TEST(testNamespaceReplacedAtSamePathGetsItsOwnTable);
  CPPUNIT_TEST(testApplyTimings);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    CPPUNIT_ASSERT_MESSAGE("this test needs root, ip, nft, conntrack and nsenter",
                           geteuid() == 0 && runCommand({"ip", "netns", "list"}).exitCode == 0 &&
                               runCommand({"nft", "--version"}).exitCode == 0 &&
                               runCommand({"conntrack", "--version"}).exitCode == 0);
    home_ = threadNetns();
    prefix_ = "shoal-lbt-" + std::to_string(getpid()) + "-";
    addNamespace("sw");
    run({"ip", "-n", name("sw"), "link", "add", "br0", "type", "bridge"});
    run({"ip", "-n", name("sw"), "link", "set", "br0", "up"});
    // Namespaces start with br_netfilter on here; the bridge's frames need no firewall.
    runCommand({"nsenter", "--net=" + path("sw"), "sysctl", "-qw",
                "net.bridge.bridge-nf-call-iptables=0"});
    const std::vector<std::pair<std::string, std::string>> hosts = {
        {"cl", "10.99.7.10"}, {"b1", "10.99.7.1"}, {"b2", "10.99.7.2"}, {"b3", "10.99.7.3"}};
    for (const auto& [host, address] : hosts) {
      addNamespace(host);
      run({"ip", "-n", name("sw"), "link", "add", "v" + host, "type", "veth", "peer", "name",
           "eth0", "netns", name(host)});
      run({"ip", "-n", name("sw"), "link", "set", "v" + host, "master", "br0", "up"});
      run({"ip", "-n", name(host), "addr", "add", address + "/24", "dev", "eth0"});
      run({"ip", "-n", name(host), "link", "set", "eth0", "up"});
    }
    for (const char* b : {"b1", "b2", "b3"}) backends_[b] = std::make_unique<Backend>(path(b), b);
    // The bridge forwards only once its ports leave the listening state.
    CPPUNIT_ASSERT_MESSAGE("the lab's bridge does not forward", shoal::test::eventually([&] {
                             return connectFrom(path("cl"), kB1, 200).answered;
                           }));
    balancer_ = std::make_unique<Balancer>([this](const std::string& m) { logged_.push_back(m); });
  }

  void tearDown() override {
    balancer_.reset();
    for (auto& [name, flow] : flows_) ::close(flow);
    flows_.clear();
    backends_.clear();
    for (auto it = made_.rbegin(); it != made_.rend(); ++it) {
      runCommand({"ip", "netns", "del", *it}, std::chrono::seconds(30));
    }
    made_.clear();
    CPPUNIT_ASSERT_MESSAGE("the test thread left its network namespace", threadNetns() == home_);
  }

  void testSpreadsNewConnectionsEvenlyOverAllBackends() {
    applyOk({Vip{kVip, {kB1, kB2, kB3}}});
    const std::map<std::string, int> hits = connectMany(30);
    CPPUNIT_ASSERT_EQUAL(30, total(hits));
    CPPUNIT_ASSERT_EQUAL(size_t(3), hits.size());
    for (const auto& [backend, n] : hits) {
      CPPUNIT_ASSERT_MESSAGE(backend + " got " + std::to_string(n), n >= 7 && n <= 13);
    }
    std::cout << "\n  30 connections: b1 " << hits.at("b1") << ", b2 " << hits.at("b2") << ", b3 "
              << hits.at("b3") << std::endl;
  }

  void testIcmpEchoToVipIsAnsweredByABackend() {
    applyOk({Vip{kVip, {kB1, kB2, kB3}}});
    const auto ping = runCommand({"nsenter", "--net=" + path("cl"), "busybox", "ping", "-c", "1",
                                  "-W", "2", formatIpv4(kVip)},
                                 std::chrono::seconds(10));
    CPPUNIT_ASSERT_EQUAL_MESSAGE(ping.out + ping.err, 0, ping.exitCode);
  }

  void testRemovedBackendGetsNoNewConnectionsAndItsFlowsAreDeleted() {
    applyOk({Vip{kVip, {kB1, kB2, kB3}}});
    CPPUNIT_ASSERT_EQUAL(3, int(connectMany(30).size()));
    const int kept = keepFlowTo("b3");
    CPPUNIT_ASSERT_EQUAL(std::string("b3"), ask(kept, 1000).name);
    CPPUNIT_ASSERT(hasFlows(kVip, kB3));

    applyOk({Vip{kVip, {kB1, kB2}}});
    // Its entries are gone the moment apply() returns...
    CPPUNIT_ASSERT_MESSAGE(flowsTo(kVip, kB3), !hasFlows(kVip, kB3));
    CPPUNIT_ASSERT(hasFlows(kVip, kB1));
    // ...so its old flow no longer reaches it (it is reset by whichever backend it now meets)...
    const Attempt again = ask(kept, 1000);
    CPPUNIT_ASSERT_MESSAGE("the old flow still reaches " + again.name, !again.answered);
    std::cout << "\n  old flow to the removed backend: " << std::strerror(again.error) << " after "
              << again.ms << " ms" << std::endl;
    // ...and no new connection does.
    const std::map<std::string, int> hits = connectMany(30);
    CPPUNIT_ASSERT_EQUAL(30, total(hits));
    CPPUNIT_ASSERT_EQUAL(0, hits.count("b3") ? hits.at("b3") : 0);
    CPPUNIT_ASSERT_EQUAL(15, hits.at("b1"));
    CPPUNIT_ASSERT_EQUAL(15, hits.at("b2"));
  }

  void testRestartedBalancerDeletesFlowsItNeverSaw() {
    applyOk({Vip{kVip, {kB1, kB2, kB3}}});
    connectMany(9);
    CPPUNIT_ASSERT(hasFlows(kVip, kB3));
    // A daemon restart: the old Balancer's memory is lost, the table stays in the kernel.
    balancer_ = std::make_unique<Balancer>();
    applyOk({Vip{kVip, {kB1, kB2}}});
    CPPUNIT_ASSERT_MESSAGE(flowsTo(kVip, kB3), !hasFlows(kVip, kB3));
    CPPUNIT_ASSERT(hasFlows(kVip, kB2));
    const std::map<std::string, int> hits = connectMany(10);
    CPPUNIT_ASSERT_EQUAL(10, total(hits));
    CPPUNIT_ASSERT(hits.count("b3") == 0);
  }

  void testVipWithoutBackendsIsRefusedAtOnce() {
    applyOk({Vip{kVip, {kB1}}, Vip{kEmptyVip, {}}});
    Attempt refused = connectFrom(path("cl"), kEmptyVip);
    CPPUNIT_ASSERT(!refused.answered);
    CPPUNIT_ASSERT_EQUAL_MESSAGE(std::strerror(refused.error), ECONNREFUSED, refused.error);
    CPPUNIT_ASSERT_MESSAGE(std::to_string(refused.ms) + " ms", refused.ms < 500);
    CPPUNIT_ASSERT_EQUAL(std::string("b1"), connectFrom(path("cl"), kVip).name);

    // A VIP whose last backend goes: its old flow breaks, new ones are refused.
    const int kept = keepFlowTo("b1");
    applyOk({Vip{kVip, {}}});
    CPPUNIT_ASSERT(!hasFlows(kVip, kB1));
    CPPUNIT_ASSERT(!ask(kept, 1000).answered);
    refused = connectFrom(path("cl"), kVip);
    CPPUNIT_ASSERT_EQUAL_MESSAGE(std::strerror(refused.error), ECONNREFUSED, refused.error);
    CPPUNIT_ASSERT_MESSAGE(std::to_string(refused.ms) + " ms", refused.ms < 500);
    std::cout << "\n  VIP without backends: refused in " << refused.ms << " ms" << std::endl;
  }

  void testApplyReplacesTheWholeSet() {
    applyOk({Vip{kVip, {kB1}}, Vip{kEmptyVip, {kB2}}});
    CPPUNIT_ASSERT_EQUAL(std::string("b2"), connectFrom(path("cl"), kEmptyVip).name);
    applyOk({Vip{kVip, {kB3}}});
    const std::string table = nft(path("cl"), {"list", "table", "ip", "shoal_lb"});
    CPPUNIT_ASSERT_MESSAGE(table, table.find(vipChainName(kVip)) != std::string::npos);
    CPPUNIT_ASSERT_MESSAGE(table, table.find("10.99.7.101") == std::string::npos);
    CPPUNIT_ASSERT_EQUAL(std::string("b3"), connectFrom(path("cl"), kVip).name);
    // The dropped VIP is plain traffic again (to an address nobody has) and its flows are gone.
    CPPUNIT_ASSERT(!connectFrom(path("cl"), kEmptyVip, 300).answered);
    CPPUNIT_ASSERT(!hasFlows(kEmptyVip, kB2));
    // An empty set keeps the table, with nothing in it.
    applyOk({});
    const std::string empty = nft(path("cl"), {"list", "table", "ip", "shoal_lb"});
    CPPUNIT_ASSERT_MESSAGE(empty, empty.find("dnat") == std::string::npos);
  }

  void testRemoveDeletesTableAndFlowsAndIsIdempotent() {
    applyOk({Vip{kVip, {kB1, kB2}}});
    CPPUNIT_ASSERT_EQUAL(size_t(1), balancer_->taskCount());
    CPPUNIT_ASSERT(nft(path("cl"), {"list", "tables"}).find("table ip shoal_lb") !=
                   std::string::npos);
    connectMany(4);
    CPPUNIT_ASSERT(hasFlows(kVip, kB1));
    const Status removed = balancer_->remove("task-cl");
    CPPUNIT_ASSERT_MESSAGE(removed.message(), removed.isOk());
    CPPUNIT_ASSERT_EQUAL(std::string(), nft(path("cl"), {"list", "tables"}));
    CPPUNIT_ASSERT(!hasFlows(kVip, kB1) && !hasFlows(kVip, kB2));
    CPPUNIT_ASSERT_EQUAL(size_t(0), balancer_->taskCount());
    CPPUNIT_ASSERT(balancer_->remove("task-cl").isOk());
    CPPUNIT_ASSERT(balancer_->remove("never-seen").isOk());
    // And apply works again after a remove.
    applyOk({Vip{kVip, {kB2}}});
    CPPUNIT_ASSERT_EQUAL(std::string("b2"), connectFrom(path("cl"), kVip).name);
  }

  void testRemoveAfterNamespaceVanishedIsOk() {
    addNamespace("x");
    Status s = balancer_->apply("task-x", path("x"), {Vip{kVip, {kB1}}});
    CPPUNIT_ASSERT_MESSAGE(s.message(), s.isOk());
    run({"ip", "netns", "del", name("x")});
    s = balancer_->remove("task-x");
    CPPUNIT_ASSERT_MESSAGE(s.message(), s.isOk());
    CPPUNIT_ASSERT_EQUAL(size_t(0), balancer_->taskCount());
    // apply() to a vanished namespace is an error, and leaves nothing behind.
    s = balancer_->apply("task-x", path("x"), {Vip{kVip, {kB1}}});
    CPPUNIT_ASSERT(!s.isOk());
    CPPUNIT_ASSERT_MESSAGE(s.message(),
                           s.message().find("cannot enter network namespace") != std::string::npos);
    CPPUNIT_ASSERT_EQUAL(size_t(0), balancer_->taskCount());
  }

  void testNamespaceReplacedAtSamePathGetsItsOwnTable() {
    addNamespace("x");
    applyOk({Vip{kVip, {kB1}}}, "task-x", path("x"));
    run({"ip", "netns", "del", name("x")});
    run({"ip", "netns", "add", name("x")});
    CPPUNIT_ASSERT_EQUAL(std::string(), nft(path("x"), {"list", "tables"}));
    applyOk({Vip{kVip, {kB2}}}, "task-x", path("x"));
    const std::string table = nft(path("x"), {"list", "table", "ip", "shoal_lb"});
    CPPUNIT_ASSERT_MESSAGE(table, table.find("dnat to 10.99.7.2") != std::string::npos);
    CPPUNIT_ASSERT(!logged_.empty());
    CPPUNIT_ASSERT_MESSAGE(logged_.back(), logged_.back().find("not the one") != std::string::npos);
  }

  void testApplyTimings() {
    addNamespace("perf");
    const std::string ns = path("perf");
    std::vector<Vip> one = {Vip{ip("10.200.0.1"), {ip("10.201.0.1"), ip("10.201.0.2")}}};
    std::vector<Vip> big;
    for (uint32_t v = 0; v < 100; ++v) {
      Vip vip{ip("10.200.1.1") + v, {}};
      for (uint32_t b = 0; b < 10; ++b) vip.backends.push_back(ip("10.202.0.1") + v * 10 + b);
      big.push_back(vip);
    }
    std::vector<Vip> bigLessOne = big;
    for (Vip& vip : bigLessOne) vip.backends.pop_back();

    Balancer balancer;
    const double firstOne = timeApply(balancer, ns, one);
    const double againOne = median(balancer, ns, one, 21);
    const double firstBig = timeApply(balancer, ns, big);
    const double againBig = median(balancer, ns, big, 11);
    std::vector<double> shrink;
    for (int i = 0; i < 5; ++i) {
      shrink.push_back(timeApply(balancer, ns, bigLessOne));  // 100 removed backends: a sweep
      timeApply(balancer, ns, big);
    }
    std::sort(shrink.begin(), shrink.end());
    const auto t0 = Clock::now();
    CPPUNIT_ASSERT(balancer.remove("task-perf").isOk());
    const double removeMs = msBetween(t0, Clock::now());
    std::cout << "\n  apply(): 1 VIP x 2 backends: first " << firstOne << " ms (context, "
              << "conntrack sweep), then " << againOne << " ms (median of 21)"
              << "\n  apply(): 100 VIPs x 10 backends: first " << firstBig << " ms, then "
              << againBig << " ms (median of 11); removing one backend of each: " << shrink[2]
              << " ms (median of 5, one conntrack -L)"
              << "\n  remove(): " << removeMs << " ms" << std::endl;
    CPPUNIT_ASSERT_MESSAGE(std::to_string(againOne), againOne < 100);
    CPPUNIT_ASSERT_MESSAGE(std::to_string(againBig), againBig < 2000);
  }

 private:
  std::string name(const std::string& suffix) const { return prefix_ + suffix; }
  std::string path(const std::string& suffix) const { return "/run/netns/" + name(suffix); }

  void run(const std::vector<std::string>& argv) {
    const auto r = runCommand(argv, std::chrono::seconds(30));
    std::string line;
    for (const auto& a : argv) line += a + " ";
    CPPUNIT_ASSERT_EQUAL_MESSAGE(line + ": " + r.err, 0, r.exitCode);
  }

  void addNamespace(const std::string& suffix) {
    run({"ip", "netns", "add", name(suffix)});
    made_.push_back(name(suffix));
    run({"ip", "-n", name(suffix), "link", "set", "lo", "up"});
  }

  void applyOk(const std::vector<Vip>& vips, const std::string& task = "task-cl",
               std::string nsPath = "") {
    if (nsPath.empty()) nsPath = path("cl");
    const Status s = balancer_->apply(task, nsPath, vips);
    CPPUNIT_ASSERT_MESSAGE(s.message(), s.isOk());
  }

  // `count` connections to kVip from the client, every one answered; backend name -> count.
  std::map<std::string, int> connectMany(int count) {
    std::map<std::string, int> hits;
    for (int i = 0; i < count; ++i) {
      const Attempt a = connectFrom(path("cl"), kVip);
      CPPUNIT_ASSERT_MESSAGE("connection " + std::to_string(i) + ": " + std::strerror(a.error),
                             a.answered);
      ++hits[a.name];
    }
    return hits;
  }

  static int total(const std::map<std::string, int>& hits) {
    int n = 0;
    for (const auto& entry : hits) n += entry.second;
    return n;
  }

  // An open connection through kVip that `backend` answered (closed in tearDown).
  int keepFlowTo(const std::string& backend) {
    for (int i = 0; i < 10; ++i) {
      Attempt a = connectFrom(path("cl"), kVip, 2000, true);
      if (!a.answered) continue;
      if (a.name == backend) {
        flows_.emplace_back(backend, a.fd);
        return a.fd;
      }
      ::close(a.fd);
    }
    CPPUNIT_FAIL("no connection through the VIP reached " + backend);
    return -1;
  }

  // The client namespace's conntrack entries sent to `vip` and answered by `from`.
  std::string flowsTo(uint32_t vip, uint32_t from) {
    return runCommand({"nsenter", "--net=" + path("cl"), "conntrack", "-L", "-f", "ipv4", "-d",
                       formatIpv4(vip), "-r", formatIpv4(from)})
        .out;
  }
  bool hasFlows(uint32_t vip, uint32_t from) {
    return flowsTo(vip, from).find("src=") != std::string::npos;
  }

  std::string nft(const std::string& nsPath, std::vector<std::string> args) {
    args.insert(args.begin(), {"nsenter", "--net=" + nsPath, "nft"});
    return runCommand(args).out;
  }

  static double timeApply(Balancer& balancer, const std::string& ns, const std::vector<Vip>& vips) {
    const auto t0 = Clock::now();
    const Status s = balancer.apply("task-perf", ns, vips);
    const double ms = msBetween(t0, Clock::now());
    CPPUNIT_ASSERT_MESSAGE(s.message(), s.isOk());
    return ms;
  }
  static double median(Balancer& balancer, const std::string& ns, const std::vector<Vip>& vips,
                       int n) {
    std::vector<double> times;
    for (int i = 0; i < n; ++i) times.push_back(timeApply(balancer, ns, vips));
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  }

  ino_t home_ = 0;
  std::string prefix_;
  std::vector<std::string> made_;
  std::map<std::string, std::unique_ptr<Backend>> backends_;
  std::vector<std::pair<std::string, int>> flows_;
  std::unique_ptr<Balancer> balancer_;
  std::vector<std::string> logged_;
};

CPPUNIT_TEST_SUITE_REGISTRATION(LbNetnsTest);
