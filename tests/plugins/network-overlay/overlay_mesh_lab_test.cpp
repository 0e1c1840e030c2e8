// The ingress routing mesh on real namespaces (root, iproute2, nft, nsenter, conntrack): a lab
// of two nodes (NetnsLab), the network-overlay plugin on each (one PluginHost per node, its
// init run on a thread inside the node, so the node is the instance's host namespace), two
// tasks of service "web" on node 1 on the ingress network, each a TCP server (a thread that
// setns()'d into the task) answering "hello N". Node 2 runs no task, yet its underlay address
// :8080 answers from node 2 itself, from the underlay (the hub namespace) and at 127.0.0.1;
// a removed backend stops getting connections; dropping the port tears the mesh down.
//
// tearDown removes everything, also after a failed check: the servers stop, the plugins are
// unloaded, every file under the netns dirs is unmounted and unlinked, and the lab's namespaces
// are deleted (with the veths and the ingress sandboxes' devices in them).
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

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kernel/plugin/plugin_host.h"
#include "tests/support/netns_lab.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using shoal::test::NetnsLab;
using shoal::test::runCommand;
using shoal::test::RunResult;
using shoal::test::TempDir;
using Strings = std::vector<std::string>;

namespace {

constexpr char kIngress[] = "ingressnetaaaaaaaaaaaaaa1";
constexpr uint16_t kPublished = 8080;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

bool exists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}

bool canRun() {
  static const bool ok = [] {
    if (!NetnsLab::available() || runCommand({"nsenter", "--version"}).exitCode != 0 ||
        runCommand({"conntrack", "--version"}).exitCode != 0) {
      std::cerr << "\n(overlay_mesh_lab_test needs root, ip, nft, nsenter, conntrack: skipped) ";
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

void enter(const std::string& nsPath) {
  const int fd = open(nsPath.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) throw std::runtime_error("setns " + nsPath);
  close(fd);
}

template <class F>
void onThreadIn(const std::string& nsPath, F fn) {
  std::exception_ptr error;
  std::thread t([&] {
    try {
      enter(nsPath);
      fn();
    } catch (...) {
      error = std::current_exception();
    }
  });
  t.join();
  if (error) std::rethrow_exception(error);
}

RunResult inNs(const std::string& nsPath, Strings cmd) {
  Strings argv = {"nsenter", "--net=" + nsPath, "--"};
  argv.insert(argv.end(), cmd.begin(), cmd.end());
  return runCommand(argv, std::chrono::seconds(20));
}

// One TCP connection from inside `nsPath` to address:port: what the server said, or
// "refused", "timeout", "error".
std::string fetch(const std::string& nsPath, const std::string& address, uint16_t port) {
  std::string result = "error";
  onThreadIn(nsPath, [&] {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    inet_pton(AF_INET, address.c_str(), &to.sin_addr);
    if (connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0 &&
        errno != EINPROGRESS) {
      close(fd);
      return;
    }
    pollfd pfd{fd, POLLOUT, 0};
    if (poll(&pfd, 1, 3000) != 1) {
      result = "timeout";
      close(fd);
      return;
    }
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      result = err == ECONNREFUSED ? "refused" : std::string("error ") + std::strerror(err);
      close(fd);
      return;
    }
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (std::chrono::steady_clock::now() < deadline) {
      pfd = {fd, POLLIN, 0};
      if (poll(&pfd, 1, 500) != 1) continue;
      char buf[256];
      const ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    result = got.empty() ? "empty" : got;
    close(fd);
  });
  return result;
}

// A TCP server on 0.0.0.0:80 inside a task's namespace, answering `reply` to every connection.
class Server {
 public:
  Server(const std::string& nsPath, std::string reply) : reply_(std::move(reply)) {
    std::promise<std::string> ready;
    std::future<std::string> started = ready.get_future();
    thread_ = std::thread([this, nsPath, &ready] {
      try {
        enter(nsPath);
        fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const int one = 1;
        setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in at{};
        at.sin_family = AF_INET;
        at.sin_port = htons(80);
        if (bind(fd_, reinterpret_cast<const sockaddr*>(&at), sizeof at) != 0 ||
            listen(fd_, 16) != 0) {
          throw std::runtime_error(std::string("bind/listen: ") + std::strerror(errno));
        }
        ready.set_value("");
      } catch (const std::exception& e) {
        ready.set_value(e.what());
        return;
      }
      while (!stop_) {
        pollfd pfd{fd_, POLLIN, 0};
        if (poll(&pfd, 1, 100) != 1) continue;
        const int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) continue;
        ++accepted_;
        (void)!send(c, reply_.data(), reply_.size(), MSG_NOSIGNAL);
        close(c);
      }
    });
    const std::string error = started.get();
    if (!error.empty()) {
      stop();
      throw std::runtime_error(error);
    }
  }
  ~Server() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  int accepted() const { return accepted_; }

 private:
  std::string reply_;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  int fd_ = -1;
  std::thread thread_;
};

std::string ingressNetwork() {
  return std::string(R"({"id":")") + kIngress +
         R"(","name":"ingress","subnet":"10.0.0.0/24","gateway":"10.0.0.1","vni":4096,"options":{}})";
}

// node 1's ingress sandbox .2, node 2's .3; the tasks .10 and .11 on node 1.
std::string sboxAddress(int node) { return "10.0.0." + std::to_string(node + 1); }
std::string sboxMac(int node) { return "02:42:0a:00:00:0" + std::to_string(node + 1); }
std::string taskAddress(int i) { return "10.0.0." + std::to_string(9 + i); }
std::string taskMac(int i) { return "02:42:0a:00:00:" + std::to_string(9 + i == 10 ? 10 : 11); }

}  // namespace

class OverlayMeshLabTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(OverlayMeshLabTest);
  CPPUNIT_TEST(testPublishedPortAnswersOnANodeWithoutTasks);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    if (!canRun()) return;
    lab_ = std::make_unique<NetnsLab>(2);
    for (int node = 1; node <= 2; ++node) dirs_.push_back(tmp_.file("n" + std::to_string(node)));
    // The underlay's own address, for a client that is no node.
    hub_ = lab_->ns(1).substr(0, lab_->ns(1).size() - 3) + "-hub";
    const RunResult r =
        runCommand({"ip", "-n", hub_, "addr", "add", "10.231.0.254/24", "dev", "br0"});
    CPPUNIT_ASSERT_MESSAGE(r.err, r.exitCode == 0);
  }

  void tearDown() override {
    servers_.clear();
    hosts_.clear();
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

  void testPublishedPortAnswersOnANodeWithoutTasks() {
    if (!canRun()) return;
    for (int node = 1; node <= 2; ++node) load(node);

    // Two tasks of web on node 1, on the ingress network only, each answering.
    for (int i = 1; i <= 2; ++i) {
      const std::string task = "webtask" + std::to_string(i);
      const std::string doc = R"({"schema":"shoal.attach/v1","task_id":")" + task +
                              R"(","node_addr":")" + lab_->address(1) +
                              R"(","endpoints":[{"network_id":")" + kIngress + R"(","address":")" +
                              taskAddress(i) + R"(/24","mac":")" + taskMac(i) +
                              R"(","aliases":[]}],"networks":[)" + ingressNetwork() + "]}";
      const shoal_status st = attach(1, task, doc);
      CPPUNIT_ASSERT_EQUAL(SHOAL_OK, st);
      servers_.push_back(
          std::make_unique<Server>(dirs_[0] + "/" + task, "hello " + std::to_string(i)));
    }
    // Every node learns every endpoint of the ingress network (its own are skipped).
    std::string peers =
        R"({"schema":"shoal.peers/v1","network_id":")" + std::string(kIngress) + R"(","peers":[)";
    for (int i = 1; i <= 2; ++i) {
      peers += R"({"address":")" + taskAddress(i) + R"(","mac":")" + taskMac(i) +
               R"(","node_addr":")" + lab_->address(1) + R"("},)";
    }
    for (int node = 1; node <= 2; ++node) {
      peers += R"({"address":")" + sboxAddress(node) + R"(","mac":")" + sboxMac(node) +
               R"(","node_addr":")" + lab_->address(node) + R"("})" + (node == 1 ? "," : "");
    }
    peers += "]}";
    for (int node = 1; node <= 2; ++node)
      CPPUNIT_ASSERT_EQUAL(SHOAL_OK, call(node, "peers", peers));
    for (int node = 1; node <= 2; ++node) {
      CPPUNIT_ASSERT_EQUAL(SHOAL_OK, call(node, "services", services(node, {1, 2}, true)));
    }

    const std::string n2 = "/run/netns/" + lab_->ns(2);
    const std::string sbox2 = dirs_[1] + "/ingress-sbox";
    CPPUNIT_ASSERT(exists(sbox2));
    const RunResult hostTable = inNs(n2, {"nft", "list", "table", "ip", "shoal_mesh"});
    CPPUNIT_ASSERT_MESSAGE(hostTable.out + hostTable.err,
                           contains(hostTable.out,
                                    "fib daddr type local tcp dport 8080 dnat to "
                                    "169.254.221.2"));
    const RunResult sbTable = inNs(sbox2, {"nft", "list", "table", "ip", "shoal_mesh"});
    CPPUNIT_ASSERT_MESSAGE(sbTable.out + sbTable.err, contains(sbTable.out, "numgen inc mod 2"));

    // From node 2 itself, from the underlay, and at 127.0.0.1 on node 2: both tasks answer,
    // in turn.
    std::map<std::string, int> seen;
    for (int k = 0; k < 4; ++k) ++seen[fetch(n2, lab_->address(2), kPublished)];
    for (int k = 0; k < 2; ++k) ++seen[fetch("/run/netns/" + hub_, lab_->address(2), kPublished)];
    for (int k = 0; k < 2; ++k) ++seen[fetch(n2, "127.0.0.1", kPublished)];
    std::string what;
    for (const auto& [reply, n] : seen) what += reply + " x" + std::to_string(n) + "; ";
    CPPUNIT_ASSERT_EQUAL_MESSAGE(what, std::size_t(2), seen.size());
    CPPUNIT_ASSERT_MESSAGE(what, seen["hello 1"] == 4 && seen["hello 2"] == 4);
    // Node 1 answers too (its own tasks, through its own sandbox).
    CPPUNIT_ASSERT(contains(fetch("/run/netns/" + hub_, lab_->address(1), kPublished), "hello"));

    // Task 2 leaves the service: every new connection goes to task 1.
    const int before = servers_[1]->accepted();
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, call(2, "services", services(2, {1}, true)));
    for (int k = 0; k < 4; ++k) {
      CPPUNIT_ASSERT_EQUAL(std::string("hello 1"), fetch(n2, lab_->address(2), kPublished));
    }
    CPPUNIT_ASSERT_EQUAL(before, servers_[1]->accepted());
    // No backend at all: refused at once, not a timeout.
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, call(2, "services", services(2, {}, true)));
    CPPUNIT_ASSERT_EQUAL(std::string("refused"), fetch(n2, lab_->address(2), kPublished));
    // A refused document changes nothing (and is refused before anything else).
    CPPUNIT_ASSERT_EQUAL(SHOAL_EINVAL, call(2, "services",
                                            R"({"schema":"shoal.services/v1","services":[],)"
                                            R"("ingress":{"address":"x"}})"));
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, call(2, "services", services(2, {1, 2}, true)));
    CPPUNIT_ASSERT(contains(fetch(n2, lab_->address(2), kPublished), "hello"));

    // A restarted plugin on node 2 finds its sandbox and keeps (re-applies) the mesh...
    hosts_[1].reset();
    load(2);
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, call(2, "peers", peers));
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, call(2, "services", services(2, {1}, true)));
    CPPUNIT_ASSERT_EQUAL(std::string("hello 1"), fetch(n2, lab_->address(2), kPublished));
    // ... and rebuilds it when the node's ingress endpoint changed while it was down.
    auto sandboxAddress = [&] {
      return inNs(sbox2, {"ip", "-o", "addr", "show", "dev", "eth0"}).out;
    };
    CPPUNIT_ASSERT_MESSAGE(sandboxAddress(), contains(sandboxAddress(), sboxAddress(2) + "/24"));
    hosts_[1].reset();
    load(2);
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, call(2, "peers", peers));
    CPPUNIT_ASSERT_EQUAL(
        SHOAL_OK, call(2, "services", services(2, {1}, true, "10.0.0.9", "02:42:0a:00:00:09")));
    CPPUNIT_ASSERT_MESSAGE(sandboxAddress(), contains(sandboxAddress(), "10.0.0.9/24"));
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, call(2, "services", services(2, {1}, true)));
    CPPUNIT_ASSERT_MESSAGE(sandboxAddress(), contains(sandboxAddress(), sboxAddress(2) + "/24"));
    CPPUNIT_ASSERT_EQUAL(std::string("hello 1"), fetch(n2, lab_->address(2), kPublished));

    // The port goes: both tables, the veth and the sandbox go with it.
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, call(2, "services", services(2, {1}, false)));
    CPPUNIT_ASSERT(inNs(n2, {"nft", "list", "table", "ip", "shoal_mesh"}).exitCode != 0);
    CPPUNIT_ASSERT(inNs(n2, {"ip", "link", "show", "dev", "shoal-ig0"}).exitCode != 0);
    CPPUNIT_ASSERT(!exists(sbox2));
    CPPUNIT_ASSERT(fetch(n2, lab_->address(2), kPublished) != "hello 1");
    // Node 1 keeps its own mesh.
    CPPUNIT_ASSERT(contains(fetch("/run/netns/" + hub_, lab_->address(1), kPublished), "hello"));
  }

 private:
  struct Node {
    std::unique_ptr<shoal::plugin::PluginHost> host;
    std::mutex mu;
    std::condition_variable cv;
    std::map<uint64_t, shoal::plugin::PluginEvent> done;
  };

  void load(int node) {
    if (hosts_.size() < static_cast<size_t>(node)) hosts_.resize(static_cast<size_t>(node));
    auto n = std::make_unique<Node>();
    Node* raw = n.get();
    n->host = std::make_unique<shoal::plugin::PluginHost>();
    n->host->setEventHandler([raw](const shoal::plugin::PluginEvent& e) {
      if (e.type != SHOAL_EVENT_OP_DONE) return;
      std::lock_guard<std::mutex> lock(raw->mu);
      raw->done[e.op] = e;
      raw->cv.notify_all();
    });
    n->host->setPluginConfig(
        {{"network-overlay", "{\"netns_dir\":\"" + dirs_.at(node - 1) + "\"}"}});
    onThreadIn("/run/netns/" + lab_->ns(node), [&] {
      const shoal::Status s =
          n->host->loadFile(std::string(SHOAL_PLUGIN_BUILD_DIR) + "/network-overlay.so");
      if (!s.isOk()) throw std::runtime_error(s.toString());
    });
    n->host->start();
    hosts_[static_cast<size_t>(node - 1)] = std::move(n);
  }

  shoal::plugin::PluginInstance* plugin(int node) {
    return hosts_.at(static_cast<size_t>(node - 1))
        ->host->find(shoal::plugin::Kind::kNetwork, "network-overlay");
  }

  static shoal_str str(const std::string& t) { return shoal_str{t.data(), t.size()}; }

  shoal_status attach(int node, const std::string& task, const std::string& doc) {
    auto* p = plugin(node);
    const auto& ops = p->ops<shoal_network_ops>();
    const uint64_t op = ++ops_;
    const shoal::Status st = p->invoke(
        "attach", [&](void* state) { return ops.attach(state, op, str(task), str(doc)); }, true);
    CPPUNIT_ASSERT_MESSAGE(st.toString(), st.isOk());
    Node& n = *hosts_.at(static_cast<size_t>(node - 1));
    std::unique_lock<std::mutex> lock(n.mu);
    CPPUNIT_ASSERT(n.cv.wait_for(lock, std::chrono::seconds(10), [&] { return n.done.count(op); }));
    CPPUNIT_ASSERT_EQUAL_MESSAGE(n.done[op].json, SHOAL_OK, n.done[op].status);
    return n.done[op].status;
  }

  // update_peers or update_services; SHOAL_OK or the status's code as a shoal_status.
  shoal_status call(int node, const std::string& what, const std::string& doc) {
    auto* p = plugin(node);
    const auto& ops = p->ops<shoal_network_ops>();
    const shoal::Status st =
        what == "peers"
            ? p->invoke("update_peers", [&](void* s) { return ops.update_peers(s, str(doc)); })
            : p->invoke("update_services",
                        [&](void* s) { return ops.update_services(s, str(doc)); });
    if (st.isOk()) return SHOAL_OK;
    return st.code() == shoal::Status::Code::kInvalidArgument ? SHOAL_EINVAL : SHOAL_EIO;
  }

  // Service web publishing 8080->80 (when `published`) over the tasks `tasks` on the ingress
  // network, with node `node`'s ingress member.
  // `address`/`mac`: node's sandbox endpoint on ingress, when not sboxAddress/sboxMac.
  std::string services(int node, const std::vector<int>& tasks, bool published,
                       const std::string& address = "", const std::string& mac = "") const {
    std::string backends;
    for (int i : tasks) {
      backends += std::string(backends.empty() ? "" : ",") + R"({"network_id":")" + kIngress +
                  R"(","address":")" + taskAddress(i) + R"(","task_id":"webtask)" +
                  std::to_string(i) + R"(","task_name":"web.)" + std::to_string(i) + R"(.webtask)" +
                  std::to_string(i) + R"(","aliases":[]})";
    }
    const std::string ports =
        published ? R"([{"protocol":"tcp","published":8080,"target":80,"mode":"ingress"}])" : "[]";
    return R"({"schema":"shoal.services/v1","services":[{"id":"svcweb","name":"web",)"
           R"("endpoint_mode":"vip","vips":[],"ports":)" +
           ports + R"(,"backends":[)" + backends + R"(]}],"ingress":{"network":)" +
           ingressNetwork() + R"(,"address":")" + (address.empty() ? sboxAddress(node) : address) +
           R"(/24","mac":")" + (mac.empty() ? sboxMac(node) : mac) + R"(","node_addr":")" +
           lab_->address(node) + R"("}})";
  }

  TempDir tmp_;
  std::unique_ptr<NetnsLab> lab_;
  std::string hub_;
  Strings dirs_;
  std::vector<std::unique_ptr<Server>> servers_;  // stopped before the namespaces go
  std::vector<std::unique_ptr<Node>> hosts_;
  uint64_t ops_ = 0;
};

CPPUNIT_TEST_SUITE_REGISTRATION(OverlayMeshLabTest);
