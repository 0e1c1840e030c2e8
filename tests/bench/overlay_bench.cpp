// overlay_bench: what network-overlay's dataplane costs on this machine, in one run (root):
//   - single-stream TCP throughput, task to task across two "nodes" (network namespaces on an
//     underlay bridge, NetnsLab, underlay MTU 1500), over
//       * a VXLAN built by hand with iproute2 in the nodes' namespaces (nolearning proxy, static
//         FDB and neighbour entries, a bridge, a veth into a task namespace): the baseline;
//       * two Dataplane instances (attach + updatePeers, as the agent drives them);
//       * the same over an `--opt encrypted` network (VXLAN through the nodes' wireguard-go
//         tunnel, keys made here as the leader makes them), when wireguard-go is installed;
//       * for reference, a plain veth pair and the underlay itself (veth, bridge, veth);
//     median of N runs (default 3 of 3 s), the runs of all paths interleaved so that load from
//     elsewhere on the machine falls on all of them alike; iperf3 when installed, else an
//     in-process sender/receiver pair (threads in the namespaces, 128 KiB writes);
//   - the time from Dataplane::attach() to the first answered ping of the task on the other
//     node (median of 5; detached in between, so every attach builds the sandbox again).
// Overlay addresses are 10.233.1-3.x, used only inside namespaces made here. Every namespace,
// mount and process is removed on exit, also after a failure or Ctrl-C.
// Usage: overlay_bench [--builtin] [--runs N] [--seconds S] [--attaches N]
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/dataplane.hpp"
#include "dataplane/documents.hpp"
#include "dataplane/netns.hpp"
#include "kernel/manager/tunnel_keys.h"
#include "tests/support/netns_lab.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace {

using Clock = std::chrono::steady_clock;
using shoal::overlay::dataplane::Dataplane;
using shoal::overlay::dataplane::Fd;
using shoal::test::ChildProcess;
using shoal::test::NetnsLab;
using shoal::test::runCommand;
using shoal::test::RunResult;
using shoal::test::TempDir;
using Strings = std::vector<std::string>;
namespace dp = shoal::overlay::dataplane;

constexpr char kNet[] = "netbenchaaaaaaaaaaaaaaaa1";  // 25 characters, like Swarm's ids
constexpr int kShoalVni = 4233;
constexpr int kBaselineVni = 4234;
constexpr char kEncryptedNet[] = "netbenchencryptedaaaaaaa2";
constexpr int kEncryptedVni = 4235;
constexpr int kIperfPort = 5201;
constexpr auto kOpLimit = std::chrono::seconds(10);

// Set by SIGINT/SIGTERM; every wait below checks it (from any thread).
std::atomic<bool> gStop{false};
static_assert(std::atomic<bool>::is_always_lock_free, "set from a signal handler");

void onSignal(int) { gStop = true; }

struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted") {}
};

void checkStop() {
  if (gStop) throw Interrupted();
}

// From here on a Ctrl-C changes nothing: the ignored disposition is inherited by the commands
// cleanup runs, which would otherwise die with us half-way and leave namespaces behind.
void ignoreInterrupts() {
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
}

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::string join(const Strings& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

std::string must(const Strings& argv) {
  checkStop();
  const RunResult r = runCommand(argv, std::chrono::seconds(30));
  if (r.exitCode != 0) throw std::runtime_error("`" + join(argv) + "` failed: " + r.err + r.out);
  return r.out;
}

Strings inNs(const std::string& nsPath, Strings cmd) {
  Strings argv = {"nsenter", "--net=" + nsPath, "--"};
  argv.insert(argv.end(), cmd.begin(), cmd.end());
  return argv;
}

void enterNetns(const std::string& nsPath) {
  Fd fd(open(nsPath.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid() || setns(fd.get(), CLONE_NEWNET) != 0) {
    throw std::runtime_error("setns " + nsPath + ": " + std::strerror(errno));
  }
}

// Runs `fn` on a fresh thread inside the namespace at `nsPath` (the thread ends with it, so
// nothing has to come back).
template <class F>
auto onThreadIn(const std::string& nsPath, F fn) -> std::future<decltype(fn())> {
  return std::async(std::launch::async, [nsPath, fn]() mutable {
    enterNetns(nsPath);
    return fn();
  });
}

template <class T>
T await(std::future<T>& f, const std::string& what, bool interruptible = true) {
  const auto deadline = Clock::now() + kOpLimit;
  while (f.wait_for(std::chrono::milliseconds(20)) != std::future_status::ready) {
    if (interruptible) checkStop();
    if (Clock::now() > deadline) throw std::runtime_error(what + ": no answer within 10 s");
  }
  return f.get();
}

uint32_t ipv4(const std::string& text) {
  uint32_t a = 0;
  if (!dp::parseIpv4(text, &a)) throw std::runtime_error("bad address " + text);
  return a;
}

sockaddr_in sockAddr(const std::string& address, uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(ipv4(address));
  return sa;
}

uint16_t checksum(const uint8_t* p, std::size_t n) {
  uint32_t sum = 0;
  for (std::size_t i = 0; i + 1 < n; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n % 2) sum += static_cast<uint32_t>(p[n - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons(static_cast<uint16_t>(~sum));
}

// Sends ICMP echo requests from inside `nsPath` to `target` every millisecond until one is
// answered; returns when the answer came. In-process (a raw socket on a thread in the
// namespace), so spawning a ping costs nothing of what is measured.
Clock::time_point firstReply(const std::string& nsPath, const std::string& target,
                             std::chrono::milliseconds limit) {
  auto f = onThreadIn(nsPath, [target, limit] {
    Fd s(socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP));
    if (!s.valid()) throw std::runtime_error(std::string("raw ICMP socket: ") + strerror(errno));
    const sockaddr_in to = sockAddr(target, 0);
    static std::atomic<uint16_t> ids{static_cast<uint16_t>(getpid())};
    const uint16_t id = ids++;
    const auto deadline = Clock::now() + limit;
    for (uint16_t seq = 1;; ++seq) {
      if (gStop) throw Interrupted();
      if (Clock::now() > deadline) {
        throw std::runtime_error("no answer to ping " + target + " within " +
                                 std::to_string(limit.count()) + " ms");
      }
      uint8_t req[16] = {ICMP_ECHO, 0, 0, 0};
      const uint16_t nid = htons(id), nseq = htons(seq);
      std::memcpy(req + 4, &nid, 2);
      std::memcpy(req + 6, &nseq, 2);
      const uint16_t sum = checksum(req, sizeof req);
      std::memcpy(req + 2, &sum, 2);
      // Unreachable (no neighbour yet, no route yet) is not an answer: try again.
      sendto(s.get(), req, sizeof req, 0, reinterpret_cast<const sockaddr*>(&to), sizeof to);
      const auto resend = Clock::now() + std::chrono::milliseconds(1);
      while (Clock::now() < resend) {
        pollfd p{s.get(), POLLIN, 0};
        if (poll(&p, 1, 1) <= 0) continue;
        uint8_t buf[1500];
        const ssize_t n = recv(s.get(), buf, sizeof buf, 0);
        const auto at = Clock::now();
        if (n < 20) continue;
        const std::size_t ihl = static_cast<std::size_t>(buf[0] & 0x0f) * 4;
        if (static_cast<std::size_t>(n) < ihl + 8 || buf[ihl] != ICMP_ECHOREPLY) continue;
        uint16_t rid = 0;
        std::memcpy(&rid, buf + ihl + 4, 2);
        if (rid == nid) return at;
      }
    }
  });
  return await(f, "ping " + target);
}

// ---- documents, as the manager would send them ----

struct Task {
  std::string id, address, mac;
};

std::string attachJson(const Task& t, const std::string& nodeAddr) {
  return R"({"schema":"shoal.attach/v1","task_id":")" + t.id + R"(","node_addr":")" + nodeAddr +
         R"(","endpoints":[{"network_id":")" + kNet + R"(","address":")" + t.address +
         R"(/24","mac":")" + t.mac + R"(","aliases":[]}],"networks":[{"id":")" + kNet +
         R"(","name":"bench","subnet":"10.233.2.0/24","gateway":"10.233.2.1","vni":)" +
         std::to_string(kShoalVni) + R"(,"options":{}}]})";
}

std::string peersJson(const Task& t, const std::string& nodeAddr) {
  return R"({"schema":"shoal.peers/v1","network_id":")" + std::string(kNet) +
         R"(","peers":[{"address":")" + t.address + R"(","mac":")" + t.mac + R"(","node_addr":")" +
         nodeAddr + R"("}]})";
}

// The encrypted network's documents: its own subnet and VNI, "encrypted" in its options, and
// the tunnel (this node's key and tunnel address, the other node's public key and address).
std::string encryptedAttachJson(const Task& t, const std::string& nodeAddr) {
  return R"({"schema":"shoal.attach/v1","task_id":")" + t.id + R"(","node_addr":")" + nodeAddr +
         R"(","endpoints":[{"network_id":")" + kEncryptedNet + R"(","address":")" + t.address +
         R"(/24","mac":")" + t.mac + R"(","aliases":[]}],"networks":[{"id":")" + kEncryptedNet +
         R"(","name":"secret","subnet":"10.233.4.0/24","gateway":"10.233.4.1","vni":)" +
         std::to_string(kEncryptedVni) + R"(,"options":{"encrypted":""}}]})";
}

struct TunnelEnd {
  std::string privateKey, publicKey, address, nodeAddr;
};

std::string encryptedPeersJson(const Task& peer, const TunnelEnd& self, const TunnelEnd& other) {
  return R"({"schema":"shoal.peers/v1","network_id":")" + std::string(kEncryptedNet) +
         R"(","peers":[{"address":")" + peer.address + R"(","mac":")" + peer.mac +
         R"(","node_addr":")" + other.nodeAddr + R"("}],"tunnel":{"private_key":")" +
         self.privateKey + R"(","address":")" + self.address + R"(/18","nodes":[{"node_addr":")" +
         other.nodeAddr + R"(","public_key":")" + other.publicKey + R"(","address":")" +
         other.address + R"("}]}})";
}

// ---- things to clean up ----

// A namespace made with `ip netns add`, deleted with the object.
class Netns {
 public:
  explicit Netns(std::string name) : name_(std::move(name)) { must({"ip", "netns", "add", name_}); }
  ~Netns() { runCommand({"ip", "netns", "del", name_}, std::chrono::seconds(30)); }
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;
  const std::string& name() const { return name_; }
  std::string path() const { return "/run/netns/" + name_; }

 private:
  std::string name_;
};

struct Outcome {
  shoal_status status = SHOAL_EINTERNAL;
  std::string json;
};

// One node's Dataplane over its own netns dir. The destructor detaches every task (tasks
// outlive a Dataplane otherwise), then unmounts and unlinks whatever is left in the dir.
class ShoalNode {
 public:
  ShoalNode(const std::string& nodeNs, std::string dir) : dir_(std::move(dir)) {
    dp::Config config;
    config.netnsDir = dir_;
    // Constructed on a thread inside the node: that namespace becomes the instance's host one.
    auto f = onThreadIn(nodeNs, [config] {
      return std::make_unique<Dataplane>(config, [](int32_t level, const std::string& m) {
        std::cerr << "overlay_bench: dataplane (level " << level << "): " << m << '\n';
      });
    });
    dp_ = await(f, "Dataplane start");
  }

  ~ShoalNode() {
    try {
      for (const std::string& task : dp_->tasks()) detach(task, false);
    } catch (const std::exception& e) {
      std::cerr << "overlay_bench: cleanup: " << e.what() << '\n';
    }
    dp_.reset();
    if (DIR* d = opendir(dir_.c_str())) {
      while (const dirent* e = readdir(d)) {
        const std::string n = e->d_name;
        if (n == "." || n == "..") continue;
        const std::string path = dir_ + "/" + n;
        umount2(path.c_str(), MNT_DETACH);
        unlink(path.c_str());
      }
      closedir(d);
    }
    rmdir(dir_.c_str());
  }
  ShoalNode(const ShoalNode&) = delete;
  ShoalNode& operator=(const ShoalNode&) = delete;

  Dataplane& dp() { return *dp_; }

  // Returns once attach reported (the callback ran).
  void attach(const dp::AttachRequest& req) {
    auto p = std::make_shared<std::promise<Outcome>>();
    auto f = p->get_future();
    dp_->attach(req, [p](shoal_status s, const std::string& json) { p->set_value({s, json}); });
    const Outcome o = await(f, "attach " + req.taskId);
    if (o.status != SHOAL_OK) throw std::runtime_error("attach " + req.taskId + ": " + o.json);
  }

  void detach(const std::string& task, bool interruptible = true) {
    auto p = std::make_shared<std::promise<Outcome>>();
    auto f = p->get_future();
    dp_->detach(task, [p](shoal_status s, const std::string& json) { p->set_value({s, json}); });
    const Outcome o = await(f, "detach " + task, interruptible);
    if (o.status != SHOAL_OK) throw std::runtime_error("detach " + task + ": " + o.json);
  }

 private:
  std::string dir_;
  std::unique_ptr<Dataplane> dp_;
};

// ---- throughput ----

struct Path {
  std::string name;
  std::string clientNs, serverNs;  // namespace files
  std::string serverAddr;
  unsigned mtu = 0;  // of the client's eth0
  std::vector<double> gbps;
};

unsigned mtuOf(const std::string& nsPath, const std::string& dev) {
  const std::string out = must(inNs(nsPath, {"ip", "-o", "link", "show", "dev", dev}));
  const std::size_t at = out.find(" mtu ");
  return at == std::string::npos ? 0 : static_cast<unsigned>(std::stoul(out.substr(at + 5)));
}

double iperfOnce(const Path& p, int seconds) {
  checkStop();
  const Strings argv =
      inNs(p.clientNs, {"iperf3", "-c", p.serverAddr, "-p", std::to_string(kIperfPort), "-t",
                        std::to_string(seconds), "-J"});
  const RunResult r = runCommand(argv, std::chrono::seconds(seconds + 30));
  checkStop();
  try {
    auto doc = Poco::JSON::Parser().parse(r.out).extract<Poco::JSON::Object::Ptr>();
    if (doc->has("error")) throw std::runtime_error(doc->getValue<std::string>("error"));
    return doc->getObject("end")->getObject("sum_received")->getValue<double>("bits_per_second") /
           1e9;
  } catch (const Poco::Exception& e) {
    throw std::runtime_error("`" + join(argv) + "`: " + e.displayText() + ": " + r.out + r.err);
  } catch (const std::exception& e) {
    throw std::runtime_error("`" + join(argv) + "`: " + e.what());
  }
}

// The fallback: a receiver thread in the server's namespace, a sender thread in the client's
// writing 128 KiB at a time for `seconds`; the rate is what the receiver counted.
double builtinOnce(const Path& p, int seconds) {
  checkStop();
  std::promise<uint16_t> portP;
  std::future<uint16_t> portF = portP.get_future();
  // Not onThreadIn: a failure to enter the namespace or to listen must reach portP too.
  auto received = std::async(std::launch::async, [&p, &portP, seconds]() -> double {
    Fd ls;
    try {
      enterNetns(p.serverNs);
      ls = Fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_in sa = sockAddr(p.serverAddr, 0);
      socklen_t len = sizeof sa;
      if (!ls.valid() || bind(ls.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
          listen(ls.get(), 1) != 0 ||
          getsockname(ls.get(), reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
        throw std::runtime_error("listen on " + p.serverAddr + ": " + strerror(errno));
      }
      portP.set_value(ntohs(sa.sin_port));
    } catch (...) {
      portP.set_exception(std::current_exception());
      return 0;
    }
    pollfd pfd{ls.get(), POLLIN, 0};
    if (poll(&pfd, 1, 10000) != 1) throw std::runtime_error("no connection within 10 s");
    Fd c(accept4(ls.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!c.valid()) throw std::runtime_error(std::string("accept: ") + strerror(errno));
    const auto t0 = Clock::now();
    const auto deadline = t0 + std::chrono::seconds(seconds + 10);
    std::vector<char> buf(256 * 1024);
    double bytes = 0;
    for (;;) {
      pollfd q{c.get(), POLLIN, 0};
      if (poll(&q, 1, 1000) < 0 && errno != EINTR) throw std::runtime_error("poll failed");
      if (Clock::now() > deadline) throw std::runtime_error("the sender never stopped");
      const ssize_t n = recv(c.get(), buf.data(), buf.size(), MSG_DONTWAIT);
      if (n == 0) break;
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        throw std::runtime_error(std::string("recv: ") + strerror(errno));
      }
      bytes += static_cast<double>(n);
    }
    return bytes * 8 / std::chrono::duration<double>(Clock::now() - t0).count() / 1e9;
  });
  const uint16_t port = await(portF, "receiver");
  auto sent = onThreadIn(p.clientNs, [&p, port, seconds] {
    Fd s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const sockaddr_in to = sockAddr(p.serverAddr, port);
    if (!s.valid() || connect(s.get(), reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) {
      throw std::runtime_error("connect to " + p.serverAddr + ": " + strerror(errno));
    }
    std::vector<char> buf(128 * 1024, 'x');
    const auto end = Clock::now() + std::chrono::seconds(seconds);
    while (Clock::now() < end && !gStop) {
      for (std::size_t off = 0; off < buf.size();) {
        const ssize_t n = send(s.get(), buf.data() + off, buf.size() - off, MSG_NOSIGNAL);
        if (n < 0) {
          if (errno == EINTR) continue;
          throw std::runtime_error(std::string("send: ") + strerror(errno));
        }
        off += static_cast<std::size_t>(n);
      }
    }
  });
  std::exception_ptr error;
  try {
    sent.wait();
    sent.get();
  } catch (...) {
    error = std::current_exception();
  }
  double gbps = 0;
  try {
    gbps = await(received, "receiver", false);
  } catch (...) {
    if (!error) error = std::current_exception();
  }
  if (error) std::rethrow_exception(error);
  checkStop();
  return gbps;
}

// The middle value (of an even count, the upper of the two).
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

std::string loadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

struct Options {
  bool builtin = false;
  int runs = 3;
  int seconds = 3;
  int attaches = 5;
};

// Everything the run makes, in the order it is made; destroyed in reverse (servers, then
// Dataplanes and their namespaces, then the hand-made namespaces, then the lab).
class Bench {
 public:
  explicit Bench(Options o) : opt_(o) {}

  void run() {
    const RunResult version = runCommand({"iperf3", "--version"});
    const bool iperf = !opt_.builtin && version.exitCode == 0;
    // "iperf 3.12 (cJSON 1.7.15)\nLinux ..." -> "iperf 3.12"
    std::string tool = iperf ? version.out.substr(0, version.out.find_first_of("(\n"))
                             : "in-process TCP sender/receiver (128 KiB writes)";
    while (!tool.empty() && tool.back() == ' ') tool.pop_back();
    std::cerr << "overlay_bench: building the lab (load average " << loadAverage() << ")\n";
    lab_ = std::make_unique<NetnsLab>(2);
    const std::string node1 = "/run/netns/" + lab_->ns(1), node2 = "/run/netns/" + lab_->ns(2);
    const std::string prefix = "shoal-ob" + std::to_string(getpid());

    // Shoal: two Dataplanes, peers first (the dispatcher sends them as the task is assigned).
    nodes_.push_back(std::make_unique<ShoalNode>(node1, tmp_.file("n1")));
    nodes_.push_back(std::make_unique<ShoalNode>(node2, tmp_.file("n2")));
    const Task t1{"benchtask1", "10.233.2.5", "02:42:0a:e9:02:05"};
    const Task t2{"benchtask2", "10.233.2.6", "02:42:0a:e9:02:06"};
    ShoalNode& s1 = *nodes_[0];
    ShoalNode& s2 = *nodes_[1];
    s1.dp().updatePeers(dp::parsePeers(peersJson(t2, lab_->address(2))));
    s2.dp().updatePeers(dp::parsePeers(peersJson(t1, lab_->address(1))));
    const dp::AttachRequest a1 = dp::parseAttach(t1.id, attachJson(t1, lab_->address(1)));
    s1.attach(a1);
    s2.attach(dp::parseAttach(t2.id, attachJson(t2, lab_->address(2))));
    const unsigned mtu = s1.dp().overlayMtu();

    // The baseline, by hand, with Shoal's MTU: everything in the node's own namespace.
    const std::string m = std::to_string(mtu);
    for (int i = 1; i <= 2; ++i) {
      const int j = 3 - i;
      const std::string node = lab_->ns(i);
      spaces_.push_back(std::make_unique<Netns>(prefix + "-b" + std::to_string(i)));
      const std::string task = spaces_.back()->name();
      const std::string mac = "02:42:0a:e9:01:0" + std::to_string(4 + i);
      const std::string peerMac = "02:42:0a:e9:01:0" + std::to_string(4 + j);
      must({"ip", "-n", node, "link", "add", "vxb0", "mtu", m, "type", "vxlan", "id",
            std::to_string(kBaselineVni), "local", lab_->address(i), "dstport", "4789",
            "nolearning", "proxy"});
      must({"ip", "-n", node, "link", "add", "brb0", "mtu", m, "type", "bridge"});
      must({"ip", "-n", node, "link", "set", "vxb0", "master", "brb0", "up"});
      must({"ip", "-n", node, "link", "set", "brb0", "up"});
      must({"ip", "-n", node, "link", "add", "vb0", "mtu", m, "type", "veth", "peer", "name",
            "eth0", "mtu", m, "netns", task});
      must({"ip", "-n", node, "link", "set", "vb0", "master", "brb0", "up"});
      must({"ip", "-n", task, "link", "set", "lo", "up"});
      must({"ip", "-n", task, "link", "set", "eth0", "address", mac});
      must({"ip", "-n", task, "addr", "add", "10.233.1." + std::to_string(4 + i) + "/24", "dev",
            "eth0"});
      must({"ip", "-n", task, "link", "set", "eth0", "up"});
      must({"bridge", "-n", node, "fdb", "add", peerMac, "dev", "vxb0", "dst", lab_->address(j),
            "self", "permanent"});
      must({"ip", "-n", node, "neigh", "add", "10.233.1." + std::to_string(4 + j), "lladdr",
            peerMac, "dev", "vxb0", "nud", "permanent"});
    }
    const std::string b1 = spaces_[0]->path(), b2 = spaces_[1]->path();

    // A plain veth pair between two namespaces.
    spaces_.push_back(std::make_unique<Netns>(prefix + "-v1"));
    spaces_.push_back(std::make_unique<Netns>(prefix + "-v2"));
    const std::string v1 = spaces_[2]->name(), v2 = spaces_[3]->name();
    must({"ip", "-n", v1, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
          v2});
    for (const auto& [ns, addr] :
         {std::pair{v1, "10.233.3.1/24"}, std::pair{v2, "10.233.3.2/24"}}) {
      must({"ip", "-n", ns, "link", "set", "lo", "up"});
      must({"ip", "-n", ns, "addr", "add", addr, "dev", "eth0"});
      must({"ip", "-n", ns, "link", "set", "eth0", "up"});
    }

    const std::string task1 = s1.dp().taskNetnsPath(t1.id), task2 = s2.dp().taskNetnsPath(t2.id);
    std::vector<Path> paths = {
        {"plain veth pair", spaces_[2]->path(), spaces_[3]->path(), "10.233.3.2", 0, {}},
        {"underlay (veth, bridge, veth)", node1, node2, lab_->address(2), 0, {}},
        {"VXLAN by hand (baseline)", b1, b2, "10.233.1.6", 0, {}},
        {"Shoal Dataplane", task1, task2, t2.address, 0, {}},
    };
    // An encrypted network between the same nodes, when this machine can carry one.
    const bool encrypted = runCommand({"sh", "-c", "command -v wireguard-go"}).exitCode == 0;
    if (encrypted) {
      std::vector<TunnelEnd> ends;
      for (int i = 1; i <= 2; ++i) {
        auto key = shoal::manager::newTunnelKey();
        if (!key) throw std::runtime_error("tunnel key: " + key.status().message());
        ends.push_back(
            {key->privateKey, key->publicKey, "169.254.64." + std::to_string(i), lab_->address(i)});
      }
      const Task e1{"benchtask3", "10.233.4.5", "02:42:0a:e9:04:05"};
      const Task e2{"benchtask4", "10.233.4.6", "02:42:0a:e9:04:06"};
      s1.dp().updatePeers(dp::parsePeers(encryptedPeersJson(e2, ends[0], ends[1])));
      s2.dp().updatePeers(dp::parsePeers(encryptedPeersJson(e1, ends[1], ends[0])));
      s1.attach(dp::parseAttach(e1.id, encryptedAttachJson(e1, lab_->address(1))));
      s2.attach(dp::parseAttach(e2.id, encryptedAttachJson(e2, lab_->address(2))));
      paths.push_back({"Shoal encrypted (wireguard-go)",
                       s1.dp().taskNetnsPath(e1.id),
                       s2.dp().taskNetnsPath(e2.id),
                       e2.address,
                       0,
                       {}});
    } else {
      std::cerr << "overlay_bench: wireguard-go is not installed: no encrypted figure\n";
    }
    for (Path& p : paths) {
      p.mtu = mtuOf(p.clientNs, "eth0");
      // Reachable at all? (An encrypted path waits for its first WireGuard handshake.)
      firstReply(p.clientNs, p.serverAddr, std::chrono::seconds(10));
      if (iperf) {
        servers_.push_back(std::make_unique<ChildProcess>(
            inNs(p.serverNs,
                 {"iperf3", "-s", "-B", p.serverAddr, "-p", std::to_string(kIperfPort)}),
            tmp_.file("iperf3-" + std::to_string(servers_.size()) + ".log")));
        const std::string port = ":" + std::to_string(kIperfPort) + " ";
        const bool up = shoal::test::eventually([&] {
          return gStop ||
                 runCommand(inNs(p.serverNs, {"ss", "-Hltn"})).out.find(port) != std::string::npos;
        });
        checkStop();
        if (!up) throw std::runtime_error("iperf3 -s did not listen: " + servers_.back()->log());
      }
    }

    for (int round = 1; round <= opt_.runs; ++round) {
      // Every other round backwards, so that no path always runs right after the same one.
      std::vector<Path*> order;
      for (Path& p : paths) order.push_back(&p);
      if (round % 2 == 0) std::reverse(order.begin(), order.end());
      for (Path* pp : order) {
        Path& p = *pp;
        const double g = iperf ? iperfOnce(p, opt_.seconds) : builtinOnce(p, opt_.seconds);
        p.gbps.push_back(g);
        std::fprintf(stderr, "overlay_bench: run %d/%d  %-30s %6.2f Gbit/s\n", round, opt_.runs,
                     p.name.c_str(), g);
      }
    }

    // Time until reachable: the first task of the network on node 1, so each attach builds the
    // sandbox (bridge, VXLAN device, peers) as well as the task's namespace and veth.
    std::vector<double> done, reachable;
    s1.detach(t1.id);
    for (int i = 0; i < opt_.attaches; ++i) {
      const auto t0 = Clock::now();
      s1.attach(a1);
      done.push_back(ms(Clock::now() - t0));
      reachable.push_back(ms(firstReply(task1, t2.address, std::chrono::seconds(5)) - t0));
      std::fprintf(stderr, "overlay_bench: attach %d/%d  done %.1f ms, first reply %.1f ms\n",
                   i + 1, opt_.attaches, done.back(), reachable.back());
      s1.detach(t1.id);
    }

    const std::string endLoad = loadAverage();
    std::printf("\noverlay_bench: single TCP stream, task to task, %s\n", tool.c_str());
    std::printf(
        "median of %d runs of %d s, the paths' runs interleaved; load average after: %s\n\n",
        opt_.runs, opt_.seconds, endLoad.c_str());
    std::printf("  %-32s %5s %8s   %s\n", "path", "MTU", "Gbit/s", "runs");
    for (const Path& p : paths) {
      std::string runs;
      for (double g : p.gbps) {
        char b[16];
        std::snprintf(b, sizeof b, "%.2f ", g);
        runs += b;
      }
      std::printf("  %-32s %5u %8.2f   %s\n", p.name.c_str(), p.mtu, median(p.gbps), runs.c_str());
    }
    const double ratio = median(paths[3].gbps) / median(paths[2].gbps);
    std::printf("  %-32s %5s %7.1f%%   (target >= 90%%: %s)\n", "Shoal / baseline", "", ratio * 100,
                ratio >= 0.9 ? "met" : "NOT met");
    if (encrypted) {
      // No target: userspace WireGuard is the price of encryption on a kernel without it.
      std::printf("  %-32s %5s %7.1f%%   (userspace crypto; PLATFORM.md: 0.3-0.47 Gbit/s)\n",
                  "Shoal encrypted / baseline", "",
                  median(paths[4].gbps) / median(paths[2].gbps) * 100);
    }
    std::printf("\n");
    const auto range = [](const std::vector<double>& v) {
      char b[64];
      std::snprintf(b, sizeof b, "%7.1f ms  (%.1f .. %.1f)", median(v),
                    *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end()));
      return std::string(b);
    };
    std::printf(
        "  Dataplane::attach() on node 1: median of %d, (min .. max); a new sandbox each time\n",
        opt_.attaches);
    std::printf("    until its callback                     %s\n", range(done).c_str());
    std::printf("    until the first ping reply from node 2 %s\n", range(reachable).c_str());
  }

 private:
  const Options opt_;
  TempDir tmp_;
  std::unique_ptr<NetnsLab> lab_;
  std::vector<std::unique_ptr<Netns>> spaces_;
  std::vector<std::unique_ptr<ShoalNode>> nodes_;
  std::vector<std::unique_ptr<ChildProcess>> servers_;
};

int usage() {
  std::cerr << "usage: overlay_bench [--builtin] [--runs N] [--seconds S] [--attaches N]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    int* number = a == "--runs"       ? &opt.runs
                  : a == "--seconds"  ? &opt.seconds
                  : a == "--attaches" ? &opt.attaches
                                      : nullptr;
    if (a == "--builtin") {
      opt.builtin = true;
    } else if (!number || i + 1 >= argc || (*number = std::atoi(argv[++i])) <= 0) {
      return usage();
    }
  }
  if (!NetnsLab::available() || runCommand({"nsenter", "--version"}).exitCode != 0) {
    std::cerr << "overlay_bench needs root, ip, nft and nsenter\n";
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa {};
  sa.sa_handler = onSignal;
  sa.sa_flags = SA_RESTART;  // interrupted waitpid()s in runCommand would report success
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  int rc = 0;
  {
    Bench bench(opt);
    try {
      bench.run();
    } catch (const Interrupted&) {
      std::cerr << "overlay_bench: interrupted; cleaning up\n";
      rc = 130;
    } catch (const std::exception& e) {
      std::cerr << "overlay_bench: " << e.what() << "; cleaning up\n";
      rc = 1;
    }
    ignoreInterrupts();
  }
  return rc;
}
