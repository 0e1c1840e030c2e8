// network-overlay's node half on real namespaces (root, iproute2, nsenter, busybox): a lab of
// two "nodes" (network namespaces on an underlay bridge, NetnsLab, underlay MTU 1400), one
// Dataplane per node constructed from a thread inside that node's namespace, tasks attached
// on both, pings across the overlay and none across networks, FDB/neighbour entries following
// the peer set, detach and rollback leaving nothing, a restarted instance finding what the
// last one built, once the whole path through the plugin's ops table, and the embedded DNS
// answering service names at 127.0.0.11 inside a task's namespace (after a restart too).
//
// Every namespace, mount and file a test makes is removed in tearDown, also after a failed
// check: the lab's namespaces are deleted and every file under the netns dirs is unmounted and
// unlinked.
#include <cppunit/extensions/HelperMacros.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <shoal/network.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <exception>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/dataplane.hpp"
#include "dataplane/documents.hpp"
#include "dns/message.hpp"
#include "dns/names.hpp"
#include "kernel/plugin/plugin_host.h"
#include "tests/support/netns_lab.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace shoal::overlay::dataplane;
using shoal::test::NetnsLab;
using shoal::test::runCommand;
using shoal::test::RunResult;
using shoal::test::TempDir;
using Strings = std::vector<std::string>;

namespace {

constexpr char kNetA[] = "netaaaaaaaaaaaaaaaaaaaaa1";  // 25 characters, like Swarm's ids
constexpr char kNetB[] = "netbbbbbbbbbbbbbbbbbbbbb2";
constexpr unsigned kUnderlayMtu = 1400;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

bool exists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}

bool canRun() {
  static const bool ok = [] {
    if (!NetnsLab::available() || runCommand({"busybox", "true"}).exitCode != 0 ||
        runCommand({"nsenter", "--version"}).exitCode != 0) {
      std::cerr << "\n(overlay_dataplane_test needs root, ip, nft, nsenter and busybox: skipped) ";
      return false;
    }
    return true;
  }();
  return ok;
}

std::vector<std::string> listDir(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = opendir(dir.c_str())) {
    while (const dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(n);
    }
    closedir(d);
  }
  return out;
}

// Runs `fn` on a fresh thread that first enters the namespace bound at `nsPath`.
template <class F>
void onThreadIn(const std::string& nsPath, F fn) {
  std::exception_ptr error;
  std::thread t([&] {
    try {
      const int fd = open(nsPath.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) throw std::runtime_error("setns " + nsPath);
      close(fd);
      fn();
    } catch (...) {
      error = std::current_exception();
    }
  });
  t.join();
  if (error) std::rethrow_exception(error);
}

struct Outcome {
  shoal_status status = SHOAL_EINTERNAL;
  std::string json;
};

Outcome await(std::future<Outcome>& f) {
  CPPUNIT_ASSERT_MESSAGE("no completion within 10 s",
                         f.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  return f.get();
}

Outcome attachNow(Dataplane& dp, const std::string& task, const std::string& doc) {
  auto p = std::make_shared<std::promise<Outcome>>();
  std::future<Outcome> f = p->get_future();
  dp.attach(parseAttach(task, doc), [p](shoal_status s, const std::string& json) {
    p->set_value({s, json});
  });
  return await(f);
}

Outcome detachNow(Dataplane& dp, const std::string& task) {
  auto p = std::make_shared<std::promise<Outcome>>();
  std::future<Outcome> f = p->get_future();
  dp.detach(task, [p](shoal_status s, const std::string& json) { p->set_value({s, json}); });
  return await(f);
}

struct Endpoint {
  std::string network;
  std::string address;  // with prefix
  std::string mac;
};

std::string networkJson(const std::string& id, const std::string& subnet,
                        const std::string& gateway, int vni) {
  return R"({"id":")" + id + R"(","name":"n","subnet":")" + subnet + R"(","gateway":")" + gateway +
         R"(","vni":)" + std::to_string(vni) + R"(,"options":{}})";
}

std::string attachJson(const std::string& task, const std::string& nodeAddr,
                       const std::vector<Endpoint>& eps, const Strings& networks) {
  std::string doc = R"({"schema":"shoal.attach/v1","task_id":")" + task + R"(","node_addr":")" +
                    nodeAddr + R"(","endpoints":[)";
  for (std::size_t i = 0; i < eps.size(); ++i) {
    doc += (i ? "," : "") + std::string(R"({"network_id":")") + eps[i].network +
           R"(","address":")" + eps[i].address + R"(","mac":")" + eps[i].mac + R"(","aliases":[]})";
  }
  doc += R"(],"networks":[)";
  for (std::size_t i = 0; i < networks.size(); ++i) doc += (i ? "," : "") + networks[i];
  return doc + "]}";
}

std::string netA() { return networkJson(kNetA, "10.0.1.0/24", "10.0.1.1", 4097); }
// Overlaps network A's subnet on purpose: networks stay apart by VNI and sandbox, not address.
std::string netB() { return networkJson(kNetB, "10.0.1.0/24", "10.0.1.1", 4098); }

struct PeerJson {
  std::string address, mac, nodeAddr;
};

std::string peersJson(const std::string& network, const std::vector<PeerJson>& peers) {
  std::string doc = R"({"schema":"shoal.peers/v1","network_id":")" + network + R"(","peers":[)";
  for (std::size_t i = 0; i < peers.size(); ++i) {
    doc += (i ? "," : "") + std::string(R"({"address":")") + peers[i].address + R"(","mac":")" +
           peers[i].mac + R"(","node_addr":")" + peers[i].nodeAddr + R"("})";
  }
  return doc + "]}";
}

// `cmd` run with only the network namespace at `nsPath` entered.
RunResult inNs(const std::string& nsPath, Strings cmd) {
  Strings argv = {"nsenter", "--net=" + nsPath, "--"};
  argv.insert(argv.end(), cmd.begin(), cmd.end());
  return runCommand(argv, std::chrono::seconds(20));
}

// True when `bridge fdb` output has a permanent VXLAN entry (NTF_SELF) for mac -> dst.
bool fdbHas(const std::string& fdb, const std::string& mac, const std::string& dst) {
  std::size_t start = 0;
  while (start < fdb.size()) {
    std::size_t end = fdb.find('\n', start);
    if (end == std::string::npos) end = fdb.size();
    const std::string line = fdb.substr(start, end - start);
    if (line.rfind(mac + " dst " + dst + " ", 0) == 0 && contains(line, " self permanent")) {
      return true;
    }
    start = end + 1;
  }
  return false;
}

bool pings(const std::string& nsPath, const std::string& address) {
  return inNs(nsPath, {"busybox", "ping", "-c1", "-W1", address}).exitCode == 0;
}

bool pingsSoon(const std::string& nsPath, const std::string& address) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (pings(nsPath, address)) return true;
  }
  return false;
}

// One UDP query (type A) for `name` to 127.0.0.11:53 from inside the namespace at `nsPath`;
// nullopt when no (parseable) answer came within 3 s.
std::optional<shoal::overlay::dns::Response> dnsQuery(const std::string& nsPath,
                                                      const std::string& name) {
  namespace dns = shoal::overlay::dns;
  std::optional<dns::Response> result;
  onThreadIn(nsPath, [&] {
    const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(53);
    inet_pton(AF_INET, "127.0.0.11", &to.sin_addr);
    const std::vector<uint8_t> query = dns::buildQuery(0x5348, name, dns::kTypeA);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0 &&
        send(fd, query.data(), query.size(), 0) == static_cast<ssize_t>(query.size())) {
      pollfd pfd{fd, POLLIN, 0};
      std::vector<uint8_t> buf(4096);
      if (poll(&pfd, 1, 3000) == 1) {
        const ssize_t n = recv(fd, buf.data(), buf.size(), 0);
        dns::Response r;
        if (n > 0 && dns::parseResponse(buf.data(), static_cast<size_t>(n), &r)) result = r;
      }
    }
    close(fd);
  });
  return result;
}

// The addresses of a NOERROR answer, sorted, as dotted quads joined by spaces; "no answer" or
// "rcode N" otherwise, so that a failed check shows what came back.
std::string answered(const std::optional<shoal::overlay::dns::Response>& r) {
  if (!r) return "no answer";
  if (r->rcode != 0) return "rcode " + std::to_string(r->rcode);
  std::vector<uint32_t> ips = r->addresses;
  std::sort(ips.begin(), ips.end());
  std::string out;
  for (uint32_t ip : ips) out += (out.empty() ? "" : " ") + shoal::overlay::dns::formatIpv4(ip);
  return out;
}

std::string backendJson(const std::string& network, const std::string& address,
                        const std::string& task, const std::string& taskName,
                        const std::string& aliases) {
  return R"({"network_id":")" + network + R"(","address":")" + address + R"(","task_id":")" + task +
         R"(","task_name":")" + taskName + R"(","aliases":)" + aliases + "}";
}

std::string serviceJson(const std::string& id, const std::string& name,
                        const std::string& vipNetwork, const std::string& vip,
                        const std::string& backends) {
  return R"({"id":")" + id + R"(","name":")" + name + R"(","endpoint_mode":"vip","vips":[)" +
         R"({"network_id":")" + vipNetwork + R"(","address":")" + vip +
         R"("}],"ports":[],"backends":[)" + backends + "]}";
}

// "web" on network A (VIP .2) with a task here (taska) and one on node 2 (taskb); "other" on
// network B only (VIP .3), with its task (taskc) here.
std::string servicesJson() {
  const std::string web =
      serviceJson("svcweb", "web", kNetA, "10.0.1.2",
                  backendJson(kNetA, "10.0.1.5", "taska", "web.1.taska", R"(["frontend"])") + "," +
                      backendJson(kNetA, "10.0.1.6", "taskb", "web.2.taskb", R"(["frontend"])"));
  const std::string other =
      serviceJson("svcother", "other", kNetB, "10.0.1.3",
                  backendJson(kNetB, "10.0.1.7", "taskc", "other.1.taskc", "[]"));
  return R"({"schema":"shoal.services/v1","services":[)" + web + "," + other + "]}";
}

}  // namespace

class OverlayDataplaneTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(OverlayDataplaneTest);
  CPPUNIT_TEST(testTasksOnTwoNodesReachEachOther);
  CPPUNIT_TEST(testOtherNetworkCannotReachThem);
  CPPUNIT_TEST(testPeersFollowTheFullSet);
  CPPUNIT_TEST(testDetachRemovesNamespacesAndTheLastSandbox);
  CPPUNIT_TEST(testFailedAttachLeavesNothing);
  CPPUNIT_TEST(testRestartRediscoversAttachedTasks);
  CPPUNIT_TEST(testPluginOpsThroughTheHost);
  CPPUNIT_TEST(testEmbeddedDnsAnswersServiceNamesInsideTheTask);
  CPPUNIT_TEST(testHostModePortsReachTheTaskWithTheClientsAddress);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    if (!canRun()) return;
    lab_ = std::make_unique<NetnsLab>(2);
    for (int node = 1; node <= 2; ++node) {
      Strings argv = lab_->exec(node);
      for (const char* a : {"ip", "link", "set", "eth0", "mtu", "1400"}) argv.push_back(a);
      RunResult r = runCommand(argv);
      CPPUNIT_ASSERT_MESSAGE(r.err, r.exitCode == 0);
      dirs_.push_back(tmp_.file("n" + std::to_string(node)));
    }
  }

  void tearDown() override {
    host_.reset();
    dp_.clear();
    for (const std::string& dir : dirs_) {
      for (const std::string& name : listDir(dir)) {
        const std::string path = dir + "/" + name;
        umount2(path.c_str(), MNT_DETACH);
        unlink(path.c_str());
      }
      rmdir(dir.c_str());
    }
    dirs_.clear();
    lab_.reset();
  }

  void testTasksOnTwoNodesReachEachOther() {
    if (!canRun()) return;
    Dataplane& n1 = start(1);
    Dataplane& n2 = start(2);
    const Outcome a = attachNow(n1, "taska", attachJson("taska", addr(1), {epA5()}, {netA()}));
    CPPUNIT_ASSERT_EQUAL_MESSAGE(a.json, SHOAL_OK, a.status);
    CPPUNIT_ASSERT_EQUAL("{\"netns\":\"" + dirs_[0] + "/taska\"}", a.json);
    const Outcome b = attachNow(n2, "taskb", attachJson("taskb", addr(2), {epA6()}, {netA()}));
    CPPUNIT_ASSERT_EQUAL_MESSAGE(b.json, SHOAL_OK, b.status);
    // Attaching again answers the same, building nothing.
    const Outcome again = attachNow(n1, "taska", attachJson("taska", addr(1), {epA5()}, {netA()}));
    CPPUNIT_ASSERT_EQUAL(a.json, again.json);

    // Both tasks' views: eth0 with the endpoint's MAC, address and the overlay MTU.
    RunResult link = inNs(dirs_[0] + "/taska", {"ip", "-o", "addr", "show", "dev", "eth0"});
    CPPUNIT_ASSERT_MESSAGE(link.out, contains(link.out, "inet 10.0.1.5/24"));
    link = inNs(dirs_[0] + "/taska", {"ip", "-o", "link", "show", "dev", "eth0"});
    CPPUNIT_ASSERT_MESSAGE(link.out, contains(link.out, "mtu 1350") &&
                                         contains(link.out, "link/ether 02:42:0a:00:01:05") &&
                                         contains(link.out, "state UP"));
    CPPUNIT_ASSERT_EQUAL(kUnderlayMtu - 50, n1.overlayMtu());
    const RunResult routes = inNs(dirs_[0] + "/taska", {"ip", "route", "show", "default"});
    CPPUNIT_ASSERT_MESSAGE(routes.out, routes.out.empty());  // nothing to route to yet
    // The sandbox: vxlan0 as the contract says, enslaved to br0 with the gateway address.
    const std::string sb1 = n1.sandboxPath(kNetA);
    CPPUNIT_ASSERT_EQUAL(dirs_[0] + "/sb-netaaaaaaaaa", sb1);
    const RunResult vx = inNs(sb1, {"ip", "-d", "-o", "link", "show", "dev", "vxlan0"});
    for (const char* want : {"mtu 1350", "master br0", "vxlan id 4097", "local 10.231.0.1",
                             "dstport 4789", "nolearning", "proxy"}) {
      CPPUNIT_ASSERT_MESSAGE(vx.out + " lacks " + want, contains(vx.out, want));
    }
    const RunResult br = inNs(sb1, {"ip", "-o", "addr", "show", "dev", "br0"});
    CPPUNIT_ASSERT_MESSAGE(br.out, contains(br.out, "inet 10.0.1.1/24"));

    // No peers yet: no way across.
    CPPUNIT_ASSERT(!pings(dirs_[0] + "/taska", "10.0.1.6"));
    n1.updatePeers(parsePeers(peersJson(kNetA, {{"10.0.1.6", "02:42:0a:00:01:06", addr(2)}})));
    n2.updatePeers(parsePeers(peersJson(kNetA, {{"10.0.1.5", "02:42:0a:00:01:05", addr(1)}})));
    CPPUNIT_ASSERT(pingsSoon(dirs_[0] + "/taska", "10.0.1.6"));
    CPPUNIT_ASSERT(pingsSoon(dirs_[1] + "/taskb", "10.0.1.5"));
  }

  void testOtherNetworkCannotReachThem() {
    if (!canRun()) return;
    Dataplane& n1 = start(1);
    Dataplane& n2 = start(2);
    CPPUNIT_ASSERT_EQUAL(
        SHOAL_OK, attachNow(n1, "taska", attachJson("taska", addr(1), {epA5()}, {netA()})).status);
    CPPUNIT_ASSERT_EQUAL(
        SHOAL_OK, attachNow(n2, "taskb", attachJson("taskb", addr(2), {epA6()}, {netA()})).status);
    // Task c: network B (vni 4098, the same subnet), on node 1 beside task a.
    const Endpoint c{kNetB, "10.0.1.7/24", "02:42:0a:00:01:07"};
    const Outcome oc = attachNow(n1, "taskc", attachJson("taskc", addr(1), {c}, {netB()}));
    CPPUNIT_ASSERT_EQUAL_MESSAGE(oc.json, SHOAL_OK, oc.status);
    n1.updatePeers(parsePeers(peersJson(kNetA, {{"10.0.1.6", "02:42:0a:00:01:06", addr(2)}})));
    n2.updatePeers(parsePeers(peersJson(
        kNetA, {{"10.0.1.5", "02:42:0a:00:01:05", addr(1)}, {"10.0.1.7", c.mac, addr(1)}})));
    CPPUNIT_ASSERT(pingsSoon(dirs_[0] + "/taska", "10.0.1.6"));
    const std::string taskC = dirs_[0] + "/taskc";
    CPPUNIT_ASSERT(!pings(taskC, "10.0.1.6"));  // across nodes
    CPPUNIT_ASSERT(!pings(taskC, "10.0.1.5"));  // on the same node
    CPPUNIT_ASSERT(!pings(dirs_[0] + "/taska", "10.0.1.7"));
    // Even a peer entry naming c on network A's node 2 cannot carry b's packets into B.
    CPPUNIT_ASSERT(!pings(dirs_[1] + "/taskb", "10.0.1.7"));
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), n1.sandboxes().size());
  }

  void testPeersFollowTheFullSet() {
    if (!canRun()) return;
    Dataplane& n1 = start(1);
    // Peers before the sandbox exists are kept and applied when it is built.
    n1.updatePeers(parsePeers(peersJson(kNetA, {{"10.0.1.6", "02:42:0a:00:01:06", addr(2)},
                                                {"10.0.1.9", "02:42:0a:00:01:09", addr(1)}})));
    CPPUNIT_ASSERT(n1.sandboxes().empty());
    CPPUNIT_ASSERT_EQUAL(
        SHOAL_OK, attachNow(n1, "taska", attachJson("taska", addr(1), {epA5()}, {netA()})).status);
    const std::string sb = n1.sandboxPath(kNetA);
    std::string fdb = inNs(sb, {"bridge", "fdb", "show", "dev", "vxlan0"}).out;
    std::string neigh = inNs(sb, {"ip", "neigh", "show", "dev", "vxlan0"}).out;
    CPPUNIT_ASSERT_MESSAGE(fdb, fdbHas(fdb, "02:42:0a:00:01:06", "10.231.0.2"));
    CPPUNIT_ASSERT_MESSAGE(neigh, contains(neigh, "10.0.1.6 lladdr 02:42:0a:00:01:06 PERMANENT"));
    // A peer on this very node (node_addr is ours) is not a remote endpoint.
    CPPUNIT_ASSERT_MESSAGE(fdb, !contains(fdb, "02:42:0a:00:01:09"));
    CPPUNIT_ASSERT_MESSAGE(neigh, !contains(neigh, "10.0.1.9"));

    // The full set replaces the last one: .6 moved to another node, .8 is new, .9 left.
    n1.updatePeers(parsePeers(peersJson(kNetA, {{"10.0.1.6", "02:42:0a:00:01:06", "10.231.0.3"},
                                                {"10.0.1.8", "02:42:0a:00:01:08", addr(2)}})));
    fdb = inNs(sb, {"bridge", "fdb", "show", "dev", "vxlan0"}).out;
    neigh = inNs(sb, {"ip", "neigh", "show", "dev", "vxlan0"}).out;
    CPPUNIT_ASSERT_MESSAGE(fdb, fdbHas(fdb, "02:42:0a:00:01:06", "10.231.0.3"));
    CPPUNIT_ASSERT_MESSAGE(fdb, !contains(fdb, "02:42:0a:00:01:06 dst 10.231.0.2"));
    CPPUNIT_ASSERT_MESSAGE(fdb, fdbHas(fdb, "02:42:0a:00:01:08", "10.231.0.2"));
    CPPUNIT_ASSERT_MESSAGE(neigh, contains(neigh, "10.0.1.8 lladdr 02:42:0a:00:01:08 PERMANENT"));
    n1.updatePeers(parsePeers(peersJson(kNetA, {{"10.0.1.8", "02:42:0a:00:01:08", addr(2)}})));
    fdb = inNs(sb, {"bridge", "fdb", "show", "dev", "vxlan0"}).out;
    neigh = inNs(sb, {"ip", "neigh", "show", "dev", "vxlan0"}).out;
    CPPUNIT_ASSERT_MESSAGE(fdb, !contains(fdb, "02:42:0a:00:01:06 dst"));
    CPPUNIT_ASSERT_MESSAGE(neigh, !contains(neigh, "10.0.1.6 "));
    CPPUNIT_ASSERT_MESSAGE(neigh, contains(neigh, "10.0.1.8 lladdr"));

    // Kept across a teardown and rebuild of the sandbox (same VNI: the old device is gone).
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, detachNow(n1, "taska").status);
    CPPUNIT_ASSERT(!exists(sb));
    CPPUNIT_ASSERT_EQUAL(
        SHOAL_OK, attachNow(n1, "taska", attachJson("taska", addr(1), {epA5()}, {netA()})).status);
    fdb = inNs(sb, {"bridge", "fdb", "show", "dev", "vxlan0"}).out;
    CPPUNIT_ASSERT_MESSAGE(fdb, fdbHas(fdb, "02:42:0a:00:01:08", "10.231.0.2"));
  }

  void testDetachRemovesNamespacesAndTheLastSandbox() {
    if (!canRun()) return;
    Dataplane& n1 = start(1);
    const Endpoint a2{kNetA, "10.0.1.10/24", "02:42:0a:00:01:0a"};
    CPPUNIT_ASSERT_EQUAL(
        SHOAL_OK, attachNow(n1, "taska", attachJson("taska", addr(1), {epA5()}, {netA()})).status);
    CPPUNIT_ASSERT_EQUAL(
        SHOAL_OK, attachNow(n1, "taskd", attachJson("taskd", addr(1), {a2}, {netA()})).status);
    // Two tasks of one network on one node share its sandbox and reach each other there.
    CPPUNIT_ASSERT(pingsSoon(dirs_[0] + "/taska", "10.0.1.10"));
    const std::string sb = n1.sandboxPath(kNetA);

    CPPUNIT_ASSERT_EQUAL(std::string("{}"), detachNow(n1, "taska").json);
    CPPUNIT_ASSERT(!exists(dirs_[0] + "/taska"));
    CPPUNIT_ASSERT(!exists(dirs_[0] + "/taska.json"));
    CPPUNIT_ASSERT(exists(sb));  // taskd still uses it
    std::string links = inNs(sb, {"ip", "-o", "link"}).out;
    CPPUNIT_ASSERT_EQUAL_MESSAGE(links, std::size_t(4), countLines(links));  // lo br0 vxlan0 veth

    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, detachNow(n1, "taskd").status);
    CPPUNIT_ASSERT(!exists(sb));
    CPPUNIT_ASSERT(listDir(dirs_[0]).empty());
    CPPUNIT_ASSERT(n1.tasks().empty() && n1.sandboxes().empty());
    // Nothing left in the node's namespace either (the VXLAN device lived in the sandbox).
    Strings argv = lab_->exec(1);
    for (const char* a : {"ip", "-o", "link"}) argv.push_back(a);
    links = runCommand(argv).out;
    CPPUNIT_ASSERT_EQUAL_MESSAGE(links, std::size_t(2), countLines(links));  // lo, eth0
    // Idempotent.
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, detachNow(n1, "taskd").status);
  }

  void testFailedAttachLeavesNothing() {
    if (!canRun()) return;
    Dataplane& n1 = start(1);
    // Network B with network A's VNI: its VXLAN device cannot be made once A's exists, after
    // A's sandbox was built for this very attach.
    const std::string clash = networkJson(kNetB, "10.0.2.0/24", "10.0.2.1", 4097);
    const Endpoint c{kNetB, "10.0.2.5/24", "02:42:0a:00:02:05"};
    const Outcome o =
        attachNow(n1, "taskx", attachJson("taskx", addr(1), {epA5(), c}, {netA(), clash}));
    CPPUNIT_ASSERT_EQUAL_MESSAGE(o.json, SHOAL_EIO, o.status);
    CPPUNIT_ASSERT_MESSAGE(o.json, contains(o.json, "attach taskx: network " + std::string(kNetB)));
    CPPUNIT_ASSERT_MESSAGE(o.json, contains(o.json, "create VXLAN device vxlan0 (vni 4097)"));
    CPPUNIT_ASSERT_MESSAGE(o.json, contains(o.json, "File exists"));
    CPPUNIT_ASSERT(listDir(dirs_[0]).empty());
    CPPUNIT_ASSERT(n1.tasks().empty() && n1.sandboxes().empty());
    // And the VNI is free again: a clean attach works.
    const Outcome ok = attachNow(n1, "taskx", attachJson("taskx", addr(1), {epA5()}, {netA()}));
    CPPUNIT_ASSERT_EQUAL_MESSAGE(ok.json, SHOAL_OK, ok.status);
  }

  void testRestartRediscoversAttachedTasks() {
    if (!canRun()) return;
    Dataplane* n1 = &start(1);
    Dataplane& n2 = start(2);
    const Outcome a = attachNow(*n1, "taska", attachJson("taska", addr(1), {epA5()}, {netA()}));
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, a.status);
    CPPUNIT_ASSERT_EQUAL(
        SHOAL_OK, attachNow(n2, "taskb", attachJson("taskb", addr(2), {epA6()}, {netA()})).status);
    n2.updatePeers(parsePeers(peersJson(kNetA, {{"10.0.1.5", "02:42:0a:00:01:05", addr(1)}})));
    // What a crash can leave: a temporary state file and a namespace never attached.
    close(open((dirs_[0] + "/taska.json.tmp").c_str(), O_CREAT | O_WRONLY, 0600));
    close(open((dirs_[0] + "/orphan").c_str(), O_CREAT | O_WRONLY, 0444));

    stop(n1);  // the daemon stops: its tasks stay
    CPPUNIT_ASSERT(exists(dirs_[0] + "/taska") && exists(n2.sandboxPath(kNetA)));
    n1 = &start(1);
    CPPUNIT_ASSERT(n1->tasks() == Strings{"taska"});
    CPPUNIT_ASSERT(n1->sandboxes() == Strings{kNetA});
    CPPUNIT_ASSERT(!exists(dirs_[0] + "/taska.json.tmp") && !exists(dirs_[0] + "/orphan"));
    CPPUNIT_ASSERT_EQUAL(kUnderlayMtu - 50, n1->overlayMtu());  // node_addr from the state
    CPPUNIT_ASSERT_EQUAL(
        a.json, attachNow(*n1, "taska", attachJson("taska", addr(1), {epA5()}, {netA()})).json);
    // Peers are re-sent after a restart; they reach the adopted sandbox.
    n1->updatePeers(parsePeers(peersJson(kNetA, {{"10.0.1.6", "02:42:0a:00:01:06", addr(2)}})));
    CPPUNIT_ASSERT(pingsSoon(dirs_[0] + "/taska", "10.0.1.6"));
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, detachNow(*n1, "taska").status);
    CPPUNIT_ASSERT(listDir(dirs_[0]).empty());

    // A task whose namespace vanished while the daemon was down is dropped at start-up.
    CPPUNIT_ASSERT_EQUAL(
        SHOAL_OK, attachNow(*n1, "taske", attachJson("taske", addr(1), {epA5()}, {netA()})).status);
    stop(n1);
    umount2((dirs_[0] + "/taske").c_str(), MNT_DETACH);
    unlink((dirs_[0] + "/taske").c_str());
    n1 = &start(1);
    CPPUNIT_ASSERT(n1->tasks().empty());
    CPPUNIT_ASSERT(n1->sandboxes().empty());  // and its sandbox, now unused, is gone
    CPPUNIT_ASSERT(listDir(dirs_[0]).empty());
  }

  void testPluginOpsThroughTheHost() {
    if (!canRun()) return;
    using shoal::plugin::Kind;
    using shoal::plugin::PluginEvent;
    using shoal::plugin::PluginHost;
    host_ = std::make_unique<PluginHost>();
    std::mutex mu;
    std::condition_variable cv;
    std::map<uint64_t, PluginEvent> done;
    host_->setEventHandler([&](const PluginEvent& e) {
      if (e.type != SHOAL_EVENT_OP_DONE) return;
      std::lock_guard<std::mutex> lock(mu);
      done[e.op] = e;
      cv.notify_all();
    });
    host_->setPluginConfig({{"network-overlay", "{\"netns_dir\":\"" + dirs_[0] + "\"}"}});
    // init runs on a thread inside node 1, which makes node 1 the instance's host namespace.
    onThreadIn("/run/netns/" + lab_->ns(1), [&] {
      const shoal::Status s =
          host_->loadFile(std::string(SHOAL_PLUGIN_BUILD_DIR) + "/network-overlay.so");
      if (!s.isOk()) throw std::runtime_error(s.toString());
    });
    host_->start();
    auto* net = host_->find(Kind::kNetwork, "network-overlay");
    CPPUNIT_ASSERT(net != nullptr);
    const auto& ops = net->ops<shoal_network_ops>();
    auto wait = [&](uint64_t op) {
      std::unique_lock<std::mutex> lock(mu);
      CPPUNIT_ASSERT(cv.wait_for(lock, std::chrono::seconds(10), [&] { return done.count(op); }));
      return done[op];
    };
    auto s = [](const std::string& t) { return shoal_str{t.data(), t.size()}; };

    const std::string task = "taska";
    const std::string doc = attachJson(task, addr(1), {epA5()}, {netA()});
    shoal::Status st = net->invoke(
        "attach", [&](void* state) { return ops.attach(state, 7, s(task), s(doc)); }, true);
    CPPUNIT_ASSERT_MESSAGE(st.toString(), st.isOk());
    PluginEvent e = wait(7);
    CPPUNIT_ASSERT_EQUAL_MESSAGE(e.json, SHOAL_OK, e.status);
    CPPUNIT_ASSERT_EQUAL("{\"netns\":\"" + dirs_[0] + "/taska\"}", e.json);
    CPPUNIT_ASSERT(exists(dirs_[0] + "/taska"));

    // describe's mtu now comes from the interface holding node_addr (eth0, MTU 1400).
    shoal_buf out{};
    st = net->invoke("describe", [&](void* state) { return ops.describe(state, &out); });
    CPPUNIT_ASSERT_MESSAGE(st.toString(), st.isOk());
    const std::string described(out.ptr, out.len);
    std::free(out.ptr);
    CPPUNIT_ASSERT_MESSAGE(described, contains(described, "\"mtu\":1350"));

    const std::string peers = peersJson(kNetA, {{"10.0.1.6", "02:42:0a:00:01:06", addr(2)}});
    st =
        net->invoke("update_peers", [&](void* state) { return ops.update_peers(state, s(peers)); });
    CPPUNIT_ASSERT_MESSAGE(st.toString(), st.isOk());
    const std::string badPeers = R"({"schema":"shoal.peers/v1","network_id":"x","peers":[{}]})";
    st = net->invoke("update_peers",
                     [&](void* state) { return ops.update_peers(state, s(badPeers)); });
    CPPUNIT_ASSERT(st.code() == shoal::Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_MESSAGE(st.message(), contains(st.message(), "peers[0].address is required"));
    const std::string badDoc = "{\"schema\":\"shoal.attach/v1\"}";
    st = net->invoke(
        "attach", [&](void* state) { return ops.attach(state, 8, s(task), s(badDoc)); }, true);
    CPPUNIT_ASSERT(st.code() == shoal::Status::Code::kInvalidArgument);

    st = net->invoke(
        "detach", [&](void* state) { return ops.detach(state, 9, s(task)); }, true);
    CPPUNIT_ASSERT_MESSAGE(st.toString(), st.isOk());
    e = wait(9);
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, e.status);
    CPPUNIT_ASSERT_EQUAL(std::string("{}"), e.json);
    CPPUNIT_ASSERT(listDir(dirs_[0]).empty());
  }

  void testEmbeddedDnsAnswersServiceNamesInsideTheTask() {
    if (!canRun()) return;
    const shoal_network_ops* ops = &loadPlugin();
    auto s = [](const std::string& t) { return shoal_str{t.data(), t.size()}; };
    const Endpoint c{kNetB, "10.0.1.7/24", "02:42:0a:00:01:07"};
    const std::string docA = attachJson("taska", addr(1), {epA5()}, {netA()});
    const std::string docC = attachJson("taskc", addr(1), {c}, {netB()});
    shoal::Status st = plugin()->invoke(
        "attach", [&](void* state) { return ops->attach(state, 1, s("taska"), s(docA)); }, true);
    CPPUNIT_ASSERT_MESSAGE(st.toString(), st.isOk());
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, awaitOp(1).status);
    st = plugin()->invoke(
        "attach", [&](void* state) { return ops->attach(state, 2, s("taskc"), s(docC)); }, true);
    CPPUNIT_ASSERT_MESSAGE(st.toString(), st.isOk());
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, awaitOp(2).status);
    const std::string services = servicesJson();
    st = plugin()->invoke("update_services",
                          [&](void* state) { return ops->update_services(state, s(services)); });
    CPPUNIT_ASSERT_MESSAGE(st.toString(), st.isOk());

    const std::string nsA = dirs_[0] + "/taska";
    const std::string nsC = dirs_[0] + "/taskc";
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.1.2"), answered(dnsQuery(nsA, "web")));
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.1.2"), answered(dnsQuery(nsA, "frontend")));
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.1.5 10.0.1.6"), answered(dnsQuery(nsA, "tasks.web")));
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.1.6"), answered(dnsQuery(nsA, "web.2.taskb")));
    // "other" is on network B only: taska's table does not have it (the query is forwarded,
    // and no upstream is reachable from the lab node), taskc's does, and taskc sees no "web".
    const std::string otherFromA = answered(dnsQuery(nsA, "other"));
    CPPUNIT_ASSERT_MESSAGE(otherFromA, !contains(otherFromA, "10.0.1.3"));
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.1.3"), answered(dnsQuery(nsC, "other")));
    const std::string webFromC = answered(dnsQuery(nsC, "web"));
    CPPUNIT_ASSERT_MESSAGE(webFromC, !contains(webFromC, "10.0.1.2"));

    // A restarted plugin serves the tasks it finds again, once the agent re-sends the set.
    host_.reset();
    ops = &loadPlugin();
    st = plugin()->invoke("update_services",
                          [&](void* state) { return ops->update_services(state, s(services)); });
    CPPUNIT_ASSERT_MESSAGE(st.toString(), st.isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.1.2"), answered(dnsQuery(nsA, "web")));
    // A refused update changes nothing.
    const std::string bad = R"({"schema":"shoal.services/v1","services":[{"id":"x"}]})";
    st = plugin()->invoke("update_services",
                          [&](void* state) { return ops->update_services(state, s(bad)); });
    CPPUNIT_ASSERT(st.code() == shoal::Status::Code::kInvalidArgument);
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.1.5 10.0.1.6"), answered(dnsQuery(nsA, "tasks.web")));

    st = plugin()->invoke(
        "detach", [&](void* state) { return ops->detach(state, 3, s("taska")); }, true);
    CPPUNIT_ASSERT_MESSAGE(st.toString(), st.isOk());
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, awaitOp(3).status);
    CPPUNIT_ASSERT(!exists(nsA));
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.1.3"), answered(dnsQuery(nsC, "other")));
  }

 private:
  // The network-overlay plugin through a PluginHost over node 1's netns dir, its init run on a
  // thread inside node 1 (the instance's host namespace); completions land in events_.
  const shoal_network_ops& loadPlugin() {
    host_ = std::make_unique<shoal::plugin::PluginHost>();
    host_->setEventHandler([this](const shoal::plugin::PluginEvent& e) {
      if (e.type != SHOAL_EVENT_OP_DONE) return;
      std::lock_guard<std::mutex> lock(eventsMu_);
      events_[e.op] = e;
      eventsCv_.notify_all();
    });
    host_->setPluginConfig({{"network-overlay", "{\"netns_dir\":\"" + dirs_[0] + "\"}"}});
    onThreadIn("/run/netns/" + lab_->ns(1), [&] {
      const shoal::Status s =
          host_->loadFile(std::string(SHOAL_PLUGIN_BUILD_DIR) + "/network-overlay.so");
      if (!s.isOk()) throw std::runtime_error(s.toString());
    });
    host_->start();
    CPPUNIT_ASSERT(plugin() != nullptr);
    return plugin()->ops<shoal_network_ops>();
  }

  shoal::plugin::PluginInstance* plugin() {
    return host_->find(shoal::plugin::Kind::kNetwork, "network-overlay");
  }

  shoal::plugin::PluginEvent awaitOp(uint64_t op) {
    std::unique_lock<std::mutex> lock(eventsMu_);
    CPPUNIT_ASSERT_MESSAGE(
        "no completion of op " + std::to_string(op) + " within 10 s",
        eventsCv_.wait_for(lock, std::chrono::seconds(10), [&] { return events_.count(op) != 0; }));
    shoal::plugin::PluginEvent e = events_[op];
    events_.erase(op);
    return e;
  }

  // A dataplane for `node` over its netns dir, constructed on a thread inside the node.
  // A host-mode published port: the task gets a link to its node's namespace and a default
  // route there, the node DNATs the port to it without masquerading, so the task sees the
  // client's own address; only that node answers; a restart keeps it; detach takes it all.
  void testHostModePortsReachTheTaskWithTheClientsAddress() {
    if (!canRun()) return;
    Dataplane* n1 = &start(1);
    start(2);
    std::string doc = attachJson("taskh", addr(1), {epA5()}, {netA()});
    doc.pop_back();
    doc += R"(,"host_ports":[{"protocol":"tcp","published":8081,"target":80}]})";
    const Outcome a = attachNow(*n1, "taskh", doc);
    CPPUNIT_ASSERT_EQUAL_MESSAGE(a.json, SHOAL_OK, a.status);
    const std::string ns = dirs_[0] + "/taskh";
    RunResult r = inNs(ns, {"ip", "-o", "addr", "show", "dev", "eth1"});
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "inet 169.254.160.2/30"));
    r = inNs(ns, {"ip", "route", "show", "default"});
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "default via 169.254.160.1 dev eth1"));

    // busybox httpd in the task's namespace, with a CGI answering the client's address (as
    // busybox spells it: IPv4-mapped, in brackets).
    const std::string www = tmp_.file("www");
    mkdir(www.c_str(), 0755);
    mkdir((www + "/cgi-bin").c_str(), 0755);
    {
      std::ofstream cgi(www + "/cgi-bin/ip");
      cgi << "#!/bin/sh\necho Content-Type: text/plain\necho\necho \"$REMOTE_ADDR\"\n";
    }
    chmod((www + "/cgi-bin/ip").c_str(), 0755);
    auto server = std::make_unique<shoal::test::ChildProcess>(
        Strings{"nsenter", "--net=" + ns, "--", "busybox", "httpd", "-f", "-p", "80", "-h", www},
        tmp_.file("httpd.log"));
    auto fetch = [&](int node, const std::string& url) {
      Strings argv = lab_->exec(node);
      for (const char* w : {"busybox", "wget", "-q", "-O", "-"}) argv.push_back(w);
      argv.push_back(url);
      const RunResult got = runCommand(argv, std::chrono::seconds(10));
      return got.exitCode == 0 ? got.out : std::string();
    };
    const std::string url = "http://" + addr(1) + ":8081/cgi-bin/ip";
    CPPUNIT_ASSERT(
        shoal::test::eventually([&] { return !fetch(2, url).empty(); }, std::chrono::seconds(10)));
    CPPUNIT_ASSERT_EQUAL("[::ffff:" + addr(2) + "]\n", fetch(2, url));  // the client's own address
    // From the node itself, on loopback too (masqueraded: 127.0.0.1 cannot be answered).
    CPPUNIT_ASSERT_EQUAL(std::string("[::ffff:169.254.160.1]\n"),
                         fetch(1, "http://127.0.0.1:8081/cgi-bin/ip"));
    // A node without the task does not answer on the port.
    CPPUNIT_ASSERT(fetch(1, "http://" + addr(2) + ":8081/cgi-bin/ip").empty());
    // The table says so, and a restarted instance keeps it.
    auto hostTable = [&] {
      Strings argv = lab_->exec(1);
      for (const char* w : {"nft", "list", "table", "ip", "shoal_hostports"}) argv.push_back(w);
      return runCommand(argv).out;
    };
    CPPUNIT_ASSERT_MESSAGE(hostTable(), contains(hostTable(), "dnat to 169.254.160.2:80"));
    stop(n1);
    n1 = &start(1);
    CPPUNIT_ASSERT_EQUAL("[::ffff:" + addr(2) + "]\n", fetch(2, url));
    // A second task takes the next address block.
    std::string doc2 = attachJson("taski", addr(1), {}, {});
    doc2.pop_back();
    doc2 += R"(,"host_ports":[{"protocol":"udp","published":5353,"target":53}]})";
    const Outcome b = attachNow(*n1, "taski", doc2);
    CPPUNIT_ASSERT_EQUAL_MESSAGE(b.json, SHOAL_OK, b.status);
    r = inNs(dirs_[0] + "/taski", {"ip", "-o", "addr", "show", "dev", "eth0"});
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "inet 169.254.160.6/30"));
    CPPUNIT_ASSERT_MESSAGE(hostTable(),
                           contains(hostTable(), "udp dport 5353 dnat to 169.254.160.6:53"));

    server->signal(SIGKILL);
    server->wait(std::chrono::seconds(5));
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, detachNow(*n1, "taskh").status);
    CPPUNIT_ASSERT_MESSAGE(hostTable(), !contains(hostTable(), "8081"));
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, detachNow(*n1, "taski").status);
    Strings links = lab_->exec(1);
    for (const char* w : {"ip", "-o", "link", "show"}) links.push_back(w);
    const RunResult left = runCommand(links);
    CPPUNIT_ASSERT_MESSAGE(left.out, !contains(left.out, "shv"));
    Strings tables = lab_->exec(1);
    for (const char* w : {"nft", "list", "tables"}) tables.push_back(w);
    CPPUNIT_ASSERT(!contains(runCommand(tables).out, "shoal_hostports"));
  }

  Dataplane& start(int node) {
    std::unique_ptr<Dataplane> dp;
    Config config;
    config.netnsDir = dirs_.at(node - 1);
    onThreadIn("/run/netns/" + lab_->ns(node), [&] {
      dp = std::make_unique<Dataplane>(config, [](int32_t, const std::string&) {});
    });
    dp_.push_back(std::move(dp));
    return *dp_.back();
  }

  void stop(Dataplane* dp) {
    for (auto it = dp_.begin(); it != dp_.end(); ++it) {
      if (it->get() == dp) {
        dp_.erase(it);
        return;
      }
    }
  }

  std::string addr(int node) const { return lab_->address(node); }
  static Endpoint epA5() { return {kNetA, "10.0.1.5/24", "02:42:0a:00:01:05"}; }
  static Endpoint epA6() { return {kNetA, "10.0.1.6/24", "02:42:0a:00:01:06"}; }
  static std::size_t countLines(const std::string& s) {
    std::size_t n = 0;
    for (char c : s) n += c == '\n';
    return n;
  }

  TempDir tmp_;
  std::unique_ptr<NetnsLab> lab_;
  Strings dirs_;
  std::vector<std::unique_ptr<Dataplane>> dp_;
  std::mutex eventsMu_;
  std::condition_variable eventsCv_;
  std::map<uint64_t, shoal::plugin::PluginEvent> events_;  // guarded by eventsMu_
  std::unique_ptr<shoal::plugin::PluginHost> host_;
};

CPPUNIT_TEST_SUITE_REGISTRATION(OverlayDataplaneTest);
