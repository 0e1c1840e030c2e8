#include "dataplane/dataplane.hpp"

#include "dataplane/host_ports.hpp"

#include <shoal/plugin.hpp>

#include <Poco/JSON/Object.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

namespace shoal::overlay::dataplane {
namespace {

using sdk::Error;

constexpr char kBridge[] = "br0";
constexpr char kVxlan[] = "vxlan0";
constexpr unsigned kMinIpv4Mtu = 68;
constexpr unsigned long kRouteUp = 0x0001;  // RTF_UP in /proc/net/route's Flags

std::string messageDoc(const std::string& message) {
  Poco::JSON::Object doc;
  doc.set("message", message);
  std::ostringstream out;
  doc.stringify(out);
  return out.str();
}

// Re-throws `e` with `context` in front, keeping its code.
[[noreturn]] void rethrowWith(const std::string& context, const std::exception& e) {
  if (const auto* err = dynamic_cast<const Error*>(&e)) {
    throw Error(err->code(), context + ": " + err->what());
  }
  throw Error(SHOAL_EIO, context + ": " + e.what());
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

bool endsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool validId(const std::string& id) {
  try {
    checkId("", "", id);
    return true;
  } catch (const Error&) {
    return false;
  }
}

// The sandbox-side end of a task's veth: unique per task within a sandbox (a task has at
// most one endpoint per network), at most 15 characters.
std::string vethName(const std::string& taskId) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a
  for (unsigned char c : taskId) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[16];
  std::snprintf(buf, sizeof buf, "v%012llx",
                static_cast<unsigned long long>(h & 0xffffffffffffull));
  return buf;
}

bool parseUnsigned(const std::string& text, int base, unsigned long* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const unsigned long value = std::strtoul(text.c_str(), &end, base);
  if (errno != 0 || end == nullptr || *end != '\0') return false;
  *out = value;
  return true;
}

// The interface of the calling thread's IPv4 default route with the lowest metric, or "".
std::string defaultRouteInterface() {
  std::ifstream routes("/proc/thread-self/net/route");
  if (!routes) throw Error(SHOAL_EIO, "cannot read /proc/thread-self/net/route");
  std::string line;
  std::getline(routes, line);  // the header
  std::string best;
  unsigned long bestMetric = std::numeric_limits<unsigned long>::max();
  while (std::getline(routes, line)) {
    // Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT
    std::istringstream fields(line);
    std::string iface, destination, gateway, flags, refcnt, use, metric, mask;
    if (!(fields >> iface >> destination >> gateway >> flags >> refcnt >> use >> metric >> mask)) {
      continue;
    }
    unsigned long dst = 1, msk = 1, flg = 0, met = 0;
    if (!parseUnsigned(destination, 16, &dst) || !parseUnsigned(mask, 16, &msk) ||
        !parseUnsigned(flags, 16, &flg) || !parseUnsigned(metric, 10, &met)) {
      continue;
    }
    if (dst == 0 && msk == 0 && (flg & kRouteUp) != 0 && met < bestMetric) {
      best = iface;
      bestMetric = met;
    }
  }
  return best;
}

unsigned overlayFrom(unsigned underlay, const std::string& iface) {
  if (underlay <= kVxlanOverhead + kMinIpv4Mtu) {
    throw Error(SHOAL_EIO, "underlay " + iface + " has MTU " + std::to_string(underlay) +
                               ", too small for VXLAN");
  }
  return underlay - kVxlanOverhead;
}

}  // namespace

// ---- the worker ---------------------------------------------------------------------------

Dataplane::Dataplane(Config config, Log log)
    : config_(std::move(config)),
      log_(std::move(log)),
      home_(currentThreadNetns()),
      tunnelName_(interfaceName(config_.netnsDir)) {
  if (config_.netnsDir.empty() || config_.netnsDir[0] != '/') {
    throw Error(SHOAL_EINVAL, "netns_dir must be an absolute path");
  }
  worker_ = std::thread([this] { loop(); });
  try {
    runSync([this] {
      hostNl_ = std::make_unique<Netlink>();
      rediscover();
    });
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopped_ = true;
    }
    cv_.notify_all();
    worker_.join();
    throw;
  }
}

Dataplane::~Dataplane() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void Dataplane::post(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) throw Error(SHOAL_ECANCELED, "the dataplane is shutting down");
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void Dataplane::loop() {
  // The thread starts in its creator's namespace, which is home_; make sure of it anyway
  // (without switching when it is: setns needs privileges an unprivileged test lacks).
  if (!isCurrentNetns(home_.get()) && ::setns(home_.get(), CLONE_NEWNET) != 0) stuck_ = true;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopped_ || !jobs_.empty(); });
    if (stopped_) return;
    auto job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    try {
      job();
    } catch (const std::exception& e) {
      warn(std::string("a dataplane job failed: ") + e.what());
    }
    // Every job returns the thread home; should one not have, put it back or stop working.
    if (!stuck_ && !isCurrentNetns(home_.get()) && ::setns(home_.get(), CLONE_NEWNET) != 0) {
      stuck_ = true;
    }
    job = nullptr;
    lock.lock();
  }
}

template <class F>
auto Dataplane::runSync(F fn) -> decltype(fn()) {
  using R = decltype(fn());
  auto task = std::make_shared<std::packaged_task<R()>>(std::move(fn));
  std::future<R> result = task->get_future();
  post([task] { (*task)(); });
  try {
    return result.get();
  } catch (const std::future_error&) {
    throw Error(SHOAL_ECANCELED, "the dataplane stopped before it did the work");
  }
}

void Dataplane::checkThread() {
  if (stuck_) {
    throw Error(SHOAL_EIO,
                "the dataplane's worker could not return to its host network namespace; restart "
                "the daemon");
  }
}

void Dataplane::warn(const std::string& message) const {
  if (log_) log_(SHOAL_LOG_WARN, message);
}

// ---- public operations --------------------------------------------------------------------

void Dataplane::attach(AttachRequest request, Done done) {
  post([this, req = std::move(request), done = std::move(done)] {
    std::string result;
    try {
      result = attachNow(req);
    } catch (const Error& e) {
      done(e.code() < 0 ? e.code() : SHOAL_EIO, messageDoc(e.what()));
      return;
    } catch (const std::exception& e) {
      done(SHOAL_EINTERNAL, messageDoc(std::string("attach ") + req.taskId + ": " + e.what()));
      return;
    }
    done(SHOAL_OK, result);
  });
}

void Dataplane::detach(const std::string& taskId, Done done) {
  checkId("detach", "task_id", taskId);
  post([this, taskId, done = std::move(done)] {
    try {
      detachNow(taskId);
    } catch (const Error& e) {
      done(e.code() < 0 ? e.code() : SHOAL_EIO, messageDoc(e.what()));
      return;
    } catch (const std::exception& e) {
      done(SHOAL_EINTERNAL, messageDoc("detach " + taskId + ": " + e.what()));
      return;
    }
    done(SHOAL_OK, "{}");
  });
}

void Dataplane::updatePeers(PeerSet set) {
  runSync([this, set = std::move(set)] {
    peers_[set.networkId] = set.peers;
    if (set.tunnel && tunnel_ != set.tunnel) {
      tunnel_ = set.tunnel;
      if (encryptedInUse()) {
        checkThread();
        try {
          ensureTunnel();
          // Their FDB entries point at the nodes' tunnel addresses.
          for (auto& [id, sb] : sandboxes_) {
            if (sb.encrypted && id != set.networkId) applyPeers(sb);
          }
        } catch (const std::exception& e) {
          rethrowWith("update_peers: tunnel " + tunnelName_, e);
        }
      }
    }
    auto it = sandboxes_.find(set.networkId);
    if (it == sandboxes_.end()) return;
    checkThread();
    try {
      applyPeers(it->second);
    } catch (const std::exception& e) {
      rethrowWith("update_peers: network " + set.networkId + " (" + it->second.path + ")", e);
    }
  });
}

unsigned Dataplane::overlayMtu() {
  return runSync([this]() -> unsigned {
    checkThread();
    if (nodeAddr_ != 0 && hostNl_->linkHoldingAddress(nodeAddr_) != 0) {
      return mtuForNodeAddr(nodeAddr_);
    }
    return fallbackMtu();
  });
}

std::vector<std::string> Dataplane::tasks() {
  return runSync([this] {
    std::vector<std::string> out;
    for (const auto& t : tasks_) out.push_back(t.first);
    return out;
  });
}

std::vector<std::string> Dataplane::sandboxes() {
  return runSync([this] {
    std::vector<std::string> out;
    for (const auto& s : sandboxes_) out.push_back(s.first);
    return out;
  });
}

std::vector<std::string> Dataplane::taskNetworks(const std::string& taskId) {
  return runSync([this, &taskId] {
    std::vector<std::string> out;
    auto it = tasks_.find(taskId);
    if (it == tasks_.end()) return out;
    for (const NetworkSpec& net : it->second.networks) out.push_back(net.id);
    return out;
  });
}

std::optional<TaskState> Dataplane::taskState(const std::string& taskId) {
  return runSync([this, &taskId]() -> std::optional<TaskState> {
    auto it = tasks_.find(taskId);
    if (it == tasks_.end()) return std::nullopt;
    return it->second;
  });
}

std::string Dataplane::taskNetnsPath(const std::string& taskId) const {
  return config_.netnsDir + "/" + taskId;
}

std::string Dataplane::sandboxPath(const std::string& networkId) const {
  return config_.netnsDir + "/sb-" + networkId.substr(0, 12);
}

std::string Dataplane::statePath(const std::string& taskId) const {
  return config_.netnsDir + "/" + taskId + ".json";
}

// ---- jobs ---------------------------------------------------------------------------------

std::unique_ptr<Netlink> Dataplane::socketIn(int ns) {
  return inNetns(home_.get(), ns, &stuck_, [] { return std::make_unique<Netlink>(); });
}

void Dataplane::ensureDir() {
  const std::string& dir = config_.netnsDir;
  for (std::size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    const std::string part = dir.substr(0, pos);
    const bool last = pos == dir.size();
    if (::mkdir(part.c_str(), last ? 0711 : 0755) == 0) {
      // mkdir obeys the umask; the namespace directory must be searchable by all (0711).
      if (last && ::chmod(part.c_str(), 0711) != 0) throwErrno("chmod " + part);
    } else if (errno != EEXIST) {
      throwErrno("create directory " + part);
    }
  }
}

unsigned Dataplane::mtuForNodeAddr(uint32_t nodeAddr) {
  const int ifindex = hostNl_->linkHoldingAddress(nodeAddr);
  if (ifindex == 0) {
    throw Error(SHOAL_EINVAL, "node_addr " + formatIpv4(nodeAddr) +
                                  " is not an address of this node's network namespace");
  }
  return overlayFrom(hostNl_->linkMtu(ifindex), "interface " + std::to_string(ifindex));
}

unsigned Dataplane::fallbackMtu() {
  const std::string iface = defaultRouteInterface();
  if (iface.empty()) return kFallbackUnderlayMtu - kVxlanOverhead;
  const int ifindex = hostNl_->linkIndex(iface);
  if (ifindex == 0) throw Error(SHOAL_EIO, "the default route's interface " + iface + " is gone");
  return overlayFrom(hostNl_->linkMtu(ifindex), iface);
}

std::string Dataplane::attachNow(const AttachRequest& req) {
  const std::string context = "attach " + req.taskId;
  checkThread();
  if (auto it = tasks_.find(req.taskId); it != tasks_.end()) {
    Poco::JSON::Object doc;
    doc.set("netns", it->second.netns);
    std::ostringstream out;
    doc.stringify(out);
    return out.str();
  }
  const std::string nsPath = taskNetnsPath(req.taskId);
  std::vector<std::string> built;  // sandboxes this attach made
  bool madeTaskNs = false;
  int hostSlot = -1;  // the task's link to the host namespace (host_ports.hpp), when it has one
  bool madeHostLink = false;  // this attach made it (a name another task holds is not undone)
  try {
    ensureDir();
    const unsigned mtu = mtuForNodeAddr(req.nodeAddr);
    nodeAddr_ = req.nodeAddr;
    for (const NetworkSpec& net : req.networks) {
      auto it = sandboxes_.find(net.id);
      if (it == sandboxes_.end()) {
        if (net.encrypted && mtu <= kWireguardOverhead + kMinIpv4Mtu) {
          throw Error(SHOAL_EIO, "network " + net.id + ": an overlay MTU of " +
                                     std::to_string(mtu) + " leaves no room for WireGuard");
        }
        buildSandbox(net, req.nodeAddr, net.encrypted ? mtu - kWireguardOverhead : mtu);
        built.push_back(net.id);
      } else if (it->second.encrypted != net.encrypted) {
        throw Error(SHOAL_EINVAL, "network " + net.id + " is " + (net.encrypted ? "" : "not ") +
                                      "encrypted but its sandbox here was built otherwise");
      } else if (it->second.vni != net.vni) {
        throw Error(SHOAL_EINVAL, "network " + net.id + " has vni " + std::to_string(net.vni) +
                                      " but its sandbox here was built with vni " +
                                      std::to_string(it->second.vni));
      }
    }
    // A namespace file without state is what an attach interrupted by a crash left.
    if (exists(nsPath)) removeStaleTask(req.taskId);
    createNetnsFile(nsPath, home_.get(), &stuck_);
    madeTaskNs = true;
    {
      Fd taskNs = openNetns(nsPath);
      std::unique_ptr<Netlink> taskNl = socketIn(taskNs.get());
      taskNl->setUp(taskNl->linkIndex("lo"), "lo in the task's namespace");
      const std::string veth = vethName(req.taskId);
      for (std::size_t i = 0; i < req.endpoints.size(); ++i) {
        const EndpointSpec& ep = req.endpoints[i];
        Sandbox& sb = sandboxes_.at(ep.networkId);
        const std::string ifname = "eth" + std::to_string(i);
        const std::string where = "network " + ep.networkId + ": ";
        try {
          if (const std::string* other = vethOwner(sb, veth, req.taskId)) {
            throw Error(SHOAL_EEXIST, "veth name " + veth + " is taken by task " + *other);
          }
          if (const int old = sb.nl->linkIndex(veth)) sb.nl->deleteLink(old, "stale " + veth);
          sb.nl->addVeth(veth, ifname, ep.mac, sb.mtu, taskNs.get());
          const int host = sb.nl->linkIndex(veth);
          if (host == 0) throw Error(SHOAL_EIO, "veth " + veth + " vanished after its creation");
          sb.nl->setMaster(host, sb.bridge, veth + " to " + kBridge);
          sb.nl->setUp(host, veth);
          const int inner = taskNl->linkIndex(ifname);
          if (inner == 0)
            throw Error(SHOAL_EIO, ifname + " did not appear in the task's namespace");
          taskNl->addAddress(inner, ep.address, ifname);
          taskNl->setUp(inner, ifname);
        } catch (const std::exception& e) {
          rethrowWith(where + ifname, e);
        }
      }
      if (!req.hostPorts.empty()) {
        hostSlot = freeHostSlot();
        buildHostLink(req.taskId, hostSlot, "eth" + std::to_string(req.endpoints.size()),
                      mtu + kVxlanOverhead, taskNs.get(), *taskNl, &madeHostLink);
      }
    }  // the task's socket and fd must be gone before a rollback can delete the namespace
    TaskState state;
    state.taskId = req.taskId;
    state.netns = nsPath;
    state.nodeAddr = req.nodeAddr;
    state.endpoints = req.endpoints;
    state.networks = req.networks;
    state.hostPorts = req.hostPorts;
    state.hostSlot = hostSlot;
    if (hostSlot >= 0) applyHostPorts(&state);
    writeFileAtomic(statePath(req.taskId), toJson(state));
    tasks_[req.taskId] = state;
    for (const NetworkSpec& net : req.networks) sandboxes_.at(net.id).tasks.insert(req.taskId);
  } catch (const std::exception& e) {
    // Undo in reverse: the veths (deleting one end deletes the pair, at once, where a dying
    // namespace would take its devices only later), the namespace, then new sandboxes.
    const std::string veth = vethName(req.taskId);
    for (const NetworkSpec& net : req.networks) {
      auto it = sandboxes_.find(net.id);
      if (it == sandboxes_.end()) continue;
      try {
        if (const int idx = it->second.nl->linkIndex(veth)) it->second.nl->deleteLink(idx, veth);
      } catch (const std::exception& u) {
        warn(context + ": undo: " + u.what());
      }
    }
    if (!req.hostPorts.empty()) {
      try {
        const std::string link = hostLinkName(req.taskId);
        if (madeHostLink) {
          if (const int idx = hostNl_->linkIndex(link)) hostNl_->deleteLink(idx, link);
        }
        if (hostSlot >= 0) applyHostPorts(nullptr);  // the table without this task
      } catch (const std::exception& u) {
        warn(context + ": undo: " + u.what());
      }
    }
    if (madeTaskNs) {
      try {
        removeNetnsFile(nsPath);
      } catch (const std::exception& u) {
        warn(context + ": undo: " + u.what());
      }
    }
    for (const std::string& id : built) {
      try {
        teardownSandbox(id);
      } catch (const std::exception& u) {
        warn(context + ": undo: " + u.what());
      }
    }
    rethrowWith(context, e);
  }
  Poco::JSON::Object doc;
  doc.set("netns", nsPath);
  std::ostringstream out;
  doc.stringify(out);
  return out.str();
}

void Dataplane::buildSandbox(const NetworkSpec& net, uint32_t nodeAddr, unsigned mtu) {
  const std::string path = sandboxPath(net.id);
  const std::string context = "network " + net.id + " (" + path + ")";
  for (const auto& [id, other] : sandboxes_) {
    if (other.path == path) {
      throw Error(SHOAL_EEXIST, context + ": network " + id +
                                    " already has this sandbox (their ids "
                                    "share the first 12 characters)");
    }
  }
  Sandbox sb;
  sb.networkId = net.id;
  sb.path = path;
  sb.vni = net.vni;
  sb.nodeAddr = nodeAddr;
  sb.mtu = mtu;
  sb.encrypted = net.encrypted;
  bool made = false;
  try {
    if (exists(path)) destroySandboxFile(path);  // left by a crash, or by a failed teardown
    createNetnsFile(path, home_.get(), &stuck_);
    made = true;
    sb.ns = openNetns(path);
    sb.nl = socketIn(sb.ns.get());
    sb.nl->setUp(sb.nl->linkIndex("lo"), "lo");
    sb.nl->addBridge(kBridge, mtu);
    sb.bridge = sb.nl->linkIndex(kBridge);
    if (sb.bridge == 0) throw Error(SHOAL_EIO, "bridge br0 vanished after its creation");
    sb.nl->addAddress(sb.bridge, Cidr{net.gateway, net.subnet.prefix}, kBridge);
    // Made from the host namespace, so the device's UDP socket (and the underlay) stay there
    // while the device itself, and every overlay packet, lives in the sandbox.
    if (net.encrypted) {
      // Its packets go between tunnel addresses and may leave only by the tunnel, which
      // takes the device with it when it goes: never in plaintext on the underlay.
      ensureTunnel();
      hostNl_->addVxlan(kVxlan, net.vni, config_.vxlanPort, tunnel_->address, mtu, sb.ns.get(),
                        tunnelIf_);
    } else {
      hostNl_->addVxlan(kVxlan, net.vni, config_.vxlanPort, nodeAddr, mtu, sb.ns.get());
    }
    sb.vxlan = sb.nl->linkIndex(kVxlan);
    if (sb.vxlan == 0) throw Error(SHOAL_EIO, "vxlan0 did not appear in the sandbox");
    sb.nl->setMaster(sb.vxlan, sb.bridge, std::string(kVxlan) + " to " + kBridge);
    sb.nl->setUp(sb.vxlan, kVxlan);
    sb.nl->setUp(sb.bridge, kBridge);
    applyPeers(sb);
  } catch (const std::exception& e) {
    // Deleted by name: the request that made it may have failed after the kernel did.
    if (sb.nl) {
      try {
        if (const int idx = sb.nl->linkIndex(kVxlan)) sb.nl->deleteLink(idx, kVxlan);
      } catch (const std::exception& u) {
        warn(context + ": undo: " + u.what());
      }
    }
    sb.nl.reset();
    sb.ns.reset();
    if (made) {
      try {
        removeNetnsFile(path);
      } catch (const std::exception& u) {
        warn(context + ": undo: " + u.what());
      }
    }
    if (net.encrypted) {
      try {
        stopTunnelIfUnused();
      } catch (const std::exception& u) {
        warn(context + ": undo: " + u.what());
      }
    }
    rethrowWith(context, e);
  }
  sandboxes_.emplace(net.id, std::move(sb));
  if (net.encrypted) {
    try {
      applyTunnelFilter();
    } catch (const std::exception& e) {
      teardownSandbox(net.id);
      rethrowWith(context, e);
    }
  }
}

bool Dataplane::adoptSandbox(const NetworkSpec& net, uint32_t nodeAddr) {
  const std::string path = sandboxPath(net.id);
  if (!isNetnsMount(path)) return false;
  Sandbox sb;
  sb.networkId = net.id;
  sb.path = path;
  sb.vni = net.vni;
  sb.nodeAddr = nodeAddr;
  sb.encrypted = net.encrypted;
  sb.ns = openNetns(path);
  sb.nl = socketIn(sb.ns.get());
  sb.bridge = sb.nl->linkIndex(kBridge);
  sb.vxlan = sb.nl->linkIndex(kVxlan);
  if (sb.bridge == 0 || sb.vxlan == 0) return false;
  sb.mtu = sb.nl->linkMtu(sb.vxlan);
  sandboxes_.emplace(net.id, std::move(sb));
  return true;
}

void Dataplane::teardownSandbox(const std::string& networkId) {
  auto it = sandboxes_.find(networkId);
  if (it == sandboxes_.end()) return;
  Sandbox& sb = it->second;
  // The VXLAN device goes first and at once: a namespace's devices die only some time after
  // its last reference, and until then the VNI would stay taken in the host namespace.
  if (sb.nl) {
    if (const int idx = sb.nl->linkIndex(kVxlan)) sb.nl->deleteLink(idx, kVxlan);
  }
  sb.nl.reset();
  sb.ns.reset();
  const std::string path = sb.path;
  const bool encrypted = sb.encrypted;
  sandboxes_.erase(it);
  if (encrypted) stopTunnelIfUnused();
  removeNetnsFile(path);
}

void Dataplane::destroySandboxFile(const std::string& path) {
  if (isNetnsMount(path)) {
    Fd ns = openNetns(path);
    std::unique_ptr<Netlink> nl = socketIn(ns.get());
    if (const int idx = nl->linkIndex(kVxlan)) nl->deleteLink(idx, kVxlan);
  }
  removeNetnsFile(path);
}

void Dataplane::sweepEmptySandboxes() {
  std::vector<std::string> empty;
  for (const auto& [id, sb] : sandboxes_) {
    if (sb.tasks.empty()) empty.push_back(id);
  }
  for (const std::string& id : empty) teardownSandbox(id);
}

void Dataplane::removeStaleTask(const std::string& taskId) {
  const std::string veth = vethName(taskId);
  for (auto& [id, sb] : sandboxes_) {
    if (vethOwner(sb, veth, taskId) != nullptr) continue;
    if (const int idx = sb.nl->linkIndex(veth)) sb.nl->deleteLink(idx, veth);
  }
  removeNetnsFile(taskNetnsPath(taskId));
}

const std::string* Dataplane::vethOwner(const Sandbox& sb, const std::string& veth,
                                        const std::string& taskId) const {
  for (const std::string& t : sb.tasks) {
    if (t != taskId && vethName(t) == veth) return &t;
  }
  return nullptr;
}

void Dataplane::detachNow(const std::string& taskId) {
  checkThread();
  auto it = tasks_.find(taskId);
  try {
    if (it == tasks_.end()) {
      if (exists(taskNetnsPath(taskId))) removeStaleTask(taskId);
      sweepEmptySandboxes();  // what an earlier, failed detach may have left
      return;
    }
    const std::string veth = vethName(taskId);
    for (const NetworkSpec& net : it->second.networks) {
      auto sb = sandboxes_.find(net.id);
      if (sb == sandboxes_.end()) continue;
      if (const int idx = sb->second.nl->linkIndex(veth)) sb->second.nl->deleteLink(idx, veth);
    }
    const bool hadHostPorts = it->second.hostSlot >= 0;
    if (hadHostPorts) {
      const std::string link = hostLinkName(taskId);
      if (const int idx = hostNl_->linkIndex(link)) hostNl_->deleteLink(idx, link);
    }
    removeNetnsFile(taskNetnsPath(taskId));
    if (::unlink(statePath(taskId).c_str()) != 0 && errno != ENOENT) {
      throwErrno("remove " + statePath(taskId));
    }
    for (const NetworkSpec& net : it->second.networks) {
      auto sb = sandboxes_.find(net.id);
      if (sb != sandboxes_.end()) sb->second.tasks.erase(taskId);
    }
    tasks_.erase(it);
    if (hadHostPorts) applyHostPorts(nullptr);
    sweepEmptySandboxes();
  } catch (const std::exception& e) {
    rethrowWith("detach " + taskId, e);
  }
}

std::string Dataplane::hostLinkName(const std::string& taskId) { return "sh" + vethName(taskId); }

int Dataplane::freeHostSlot() const {
  std::vector<bool> used(kHostSlots, false);
  for (const auto& [id, t] : tasks_) {
    if (t.hostSlot >= 0 && t.hostSlot < kHostSlots)
      used[static_cast<std::size_t>(t.hostSlot)] = true;
  }
  for (int slot = 0; slot < kHostSlots; ++slot) {
    if (!used[static_cast<std::size_t>(slot)]) return slot;
  }
  throw Error(SHOAL_ENOSPC,
              "no address is left for a host-mode port link: " + std::to_string(kHostSlots) +
                  " tasks on this node publish ports in host mode already");
}

void Dataplane::buildHostLink(const std::string& taskId, int slot, const std::string& ifname,
                              unsigned mtu, int taskNs, Netlink& taskNl, bool* made) {
  const std::string link = hostLinkName(taskId);
  const std::string where = "host-mode port link " + link + "/" + ifname + ": ";
  try {
    for (const auto& [id, t] : tasks_) {
      if (id != taskId && t.hostSlot >= 0 && hostLinkName(id) == link) {
        throw Error(SHOAL_EEXIST, "link name " + link + " is taken by task " + id);
      }
    }
    if (const int old = hostNl_->linkIndex(link)) hostNl_->deleteLink(old, "stale " + link);
    const uint32_t inner = taskSideAddress(slot);
    MacAddress mac;
    mac.bytes = {0x02,
                 0x53,
                 static_cast<uint8_t>(inner >> 24),
                 static_cast<uint8_t>(inner >> 16),
                 static_cast<uint8_t>(inner >> 8),
                 static_cast<uint8_t>(inner)};
    hostNl_->addVeth(link, ifname, mac, mtu, taskNs);
    *made = true;
    const int host = hostNl_->linkIndex(link);
    if (host == 0) throw Error(SHOAL_EIO, "veth " + link + " vanished after its creation");
    hostNl_->addAddress(host, Cidr{hostSideAddress(slot), 30}, link);
    // A client on the node's 127.0.0.1 is DNATed here, and the kernel routes 127/8 sources
    // out of an interface only with route_localnet; the node forwards to its tasks.
    writeSysctl("ipv4/conf/" + link + "/route_localnet", "1");
    writeSysctl("ipv4/conf/lo/route_localnet", "1");
    writeSysctl("ipv4/ip_forward", "1");
    hostNl_->setUp(host, link);
    const int task = taskNl.linkIndex(ifname);
    if (task == 0) throw Error(SHOAL_EIO, ifname + " did not appear in the task's namespace");
    taskNl.addAddress(task, Cidr{inner, 30}, ifname);
    taskNl.setUp(task, ifname);
    taskNl.addDefaultRoute(task, hostSideAddress(slot), ifname);
  } catch (const std::exception& e) {
    rethrowWith(where, e);
  }
}

void Dataplane::applyHostPorts(const TaskState* adding) {
  std::vector<HostMapping> mappings;
  auto add = [&](const TaskState& t) {
    if (t.hostSlot < 0) return;
    for (const HostPort& p : t.hostPorts) mappings.push_back({p, taskSideAddress(t.hostSlot)});
  };
  for (const auto& [id, t] : tasks_) {
    if (adding == nullptr || id != adding->taskId) add(t);
  }
  if (adding != nullptr) add(*adding);
  try {
    runNft(renderHostPortsRuleset(mappings));
  } catch (const std::exception& e) {
    rethrowWith("table ip shoal_hostports", e);
  }
}

void Dataplane::applyPeers(Sandbox& sb) {
  std::map<MacAddress, uint32_t> fdb;        // mac -> remote node
  std::map<uint32_t, MacAddress> neighbour;  // overlay address -> mac
  if (auto it = peers_.find(sb.networkId); it != peers_.end()) {
    for (const Peer& p : it->second) {
      if (p.nodeAddr == sb.nodeAddr || p.nodeAddr == nodeAddr_) continue;  // our own tasks
      uint32_t dst = p.nodeAddr;
      if (sb.encrypted) {
        // Through the tunnel only: a node the tunnel does not know is left out.
        auto node = tunnelSet_ ? tunnelSet_->nodes.find(p.nodeAddr)
                               : std::map<uint32_t, TunnelSpec::Node>::const_iterator();
        if (!tunnelSet_ || node == tunnelSet_->nodes.end()) continue;
        dst = node->second.address;
      }
      fdb[p.mac] = dst;
      neighbour[p.address] = p.mac;
    }
  }
  // The difference is taken against what the kernel holds, so it is right after a restart too.
  for (const FdbEntry& e : sb.nl->fdbEntries(sb.vxlan)) {
    auto want = fdb.find(e.mac);
    if (want != fdb.end() && want->second == e.dst) {
      fdb.erase(want);  // already there
    } else {
      sb.nl->deleteFdb(sb.vxlan, e);
    }
  }
  for (const NeighEntry& e : sb.nl->neighbours(sb.vxlan)) {
    auto want = neighbour.find(e.address);
    if (want != neighbour.end() && want->second == e.mac) {
      neighbour.erase(want);
    } else {
      sb.nl->deleteNeighbour(sb.vxlan, e);
    }
  }
  for (const auto& [mac, dst] : fdb) sb.nl->addFdb(sb.vxlan, FdbEntry{mac, dst});
  for (const auto& [address, mac] : neighbour) {
    sb.nl->addNeighbour(sb.vxlan, NeighEntry{address, mac});
  }
}

void Dataplane::ensureTunnel() {
  if (!tunnel_) {
    throw Error(SHOAL_EIO,
                "the managers have sent this node no tunnel key yet (encrypted networks carry "
                "traffic only through the tunnel)");
  }
  if (tunnelIf_ != 0 && hostNl_->linkIndex(tunnelName_) != tunnelIf_) {
    tunnelIf_ = 0;  // gone (wireguard-go ended): made again below
    tunnelSet_.reset();
  }
  if (tunnelIf_ != 0 && tunnelSet_ && tunnelSet_->address != tunnel_->address) {
    // A node's tunnel address is kept for as long as the cluster has encrypted networks; a
    // new one means the managers started over. The old interface cannot carry it.
    if (encryptedInUse()) {
      throw Error(SHOAL_EIO, "the tunnel address changed from " + formatIpv4(tunnelSet_->address) +
                                 " to " + formatIpv4(tunnel_->address) +
                                 " while encrypted networks use the old one");
    }
    hostNl_->deleteLink(tunnelIf_, tunnelName_);
    tunnelIf_ = 0;
    tunnelSet_.reset();
  }
  if (tunnelIf_ == 0) {
    if (const int stale = hostNl_->linkIndex(tunnelName_)) {
      tunnelIf_ = stale;  // left by an earlier instance: adopted, its settings unknown
    } else {
      startWireguard(tunnelName_);
      tunnelIf_ = hostNl_->linkIndex(tunnelName_);
      if (tunnelIf_ == 0) {
        throw Error(SHOAL_EIO, "wireguard-go started but " + tunnelName_ + " did not appear");
      }
    }
    tunnelSet_.reset();
    try {
      const unsigned underlay = nodeAddr_ != 0 ? mtuForNodeAddr(nodeAddr_) + kVxlanOverhead
                                               : fallbackMtu() + kVxlanOverhead;
      if (underlay <= kWireguardOverhead + kVxlanOverhead + kMinIpv4Mtu) {
        throw Error(SHOAL_EIO, "an underlay MTU of " + std::to_string(underlay) +
                                   " leaves no room for WireGuard and VXLAN");
      }
      hostNl_->setMtu(tunnelIf_, underlay - kWireguardOverhead, tunnelName_);
      if (hostNl_->linkHoldingAddress(tunnel_->address) != tunnelIf_) {
        hostNl_->addAddress(tunnelIf_, Cidr{tunnel_->address, tunnel_->prefix}, tunnelName_);
      }
      hostNl_->setUp(tunnelIf_, tunnelName_);
    } catch (...) {
      if (!encryptedInUse()) {
        hostNl_->deleteLink(tunnelIf_, tunnelName_);
        tunnelIf_ = 0;
      }
      throw;
    }
  }
  if (tunnelSet_ != tunnel_) {
    configureWireguard(tunnelName_, config_.wireguardPort, *tunnel_,
                       tunnelSet_ ? &*tunnelSet_ : nullptr);
    tunnelSet_ = tunnel_;
  }
}

void Dataplane::applyTunnelFilter() {
  std::vector<uint32_t> vnis;
  for (const auto& [id, sb] : sandboxes_) {
    if (sb.encrypted) vnis.push_back(sb.vni);
  }
  if (vnis == filteredVnis_) return;
  runNft(renderTunnelFilter(tunnelName_, config_.vxlanPort, vnis));
  filteredVnis_ = std::move(vnis);
}

bool Dataplane::encryptedInUse() const {
  for (const auto& [id, sb] : sandboxes_) {
    if (sb.encrypted) return true;
  }
  return false;
}

void Dataplane::stopTunnelIfUnused() {
  applyTunnelFilter();
  if (encryptedInUse()) return;
  // Deleting the interface ends wireguard-go (and its control socket) too.
  if (const int idx = hostNl_->linkIndex(tunnelName_)) hostNl_->deleteLink(idx, tunnelName_);
  tunnelIf_ = 0;
  tunnelSet_.reset();
}

void Dataplane::rediscover() {
  const std::string& dir = config_.netnsDir;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return;  // nothing was ever built here
    if (errno == EACCES) {
      // Not ours to read (an unprivileged process): nothing to rediscover, and every attach
      // will say why it cannot build.
      warn("cannot read netns_dir " + dir + ": " + std::strerror(errno));
      return;
    }
    throwErrno("open netns_dir " + dir);
  }
  std::vector<std::string> names;
  while (const struct dirent* ent = ::readdir(d)) {
    const std::string name = ent->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);

  // Tasks: a state file whose namespace is still there.
  for (const std::string& name : names) {
    if (endsWith(name, ".tmp")) {
      ::unlink((dir + "/" + name).c_str());  // a write a crash interrupted
      continue;
    }
    if (!endsWith(name, ".json")) continue;
    const std::string taskId = name.substr(0, name.size() - 5);
    if (!validId(taskId)) continue;
    try {
      TaskState state = taskStateFromJson(taskId, readWholeFile(dir + "/" + name));
      if (!isNetnsMount(taskNetnsPath(taskId))) {
        warn("task " + taskId + ": its network namespace is gone; dropping its state");
        ::unlink((dir + "/" + name).c_str());
        continue;
      }
      state.netns = taskNetnsPath(taskId);
      if (state.nodeAddr != 0) nodeAddr_ = state.nodeAddr;
      tasks_[taskId] = std::move(state);
    } catch (const std::exception& e) {
      warn("ignoring unreadable state " + dir + "/" + name + ": " + e.what());
    }
  }
  // The host-mode ports of those that have them (and no table when none does).
  try {
    applyHostPorts(nullptr);
  } catch (const std::exception& e) {
    warn(std::string("rewriting the host-mode port table: ") + e.what());
  }
  // Their sandboxes.
  for (auto& [taskId, state] : tasks_) {
    for (const NetworkSpec& net : state.networks) {
      auto it = sandboxes_.find(net.id);
      if (it == sandboxes_.end()) {
        try {
          if (!adoptSandbox(net, state.nodeAddr)) {
            warn("task " + taskId + ": the sandbox of network " + net.id + " (" +
                 sandboxPath(net.id) + ") is gone or incomplete; the task is cut off from it");
            continue;
          }
        } catch (const std::exception& e) {
          warn("task " + taskId + ": cannot adopt the sandbox of network " + net.id + ": " +
               e.what());
          continue;
        }
        it = sandboxes_.find(net.id);
      }
      it->second.tasks.insert(taskId);
    }
  }
  // What no state explains: sandboxes nobody uses, and task namespaces an interrupted attach
  // made before it could write its state (a completed attach always has one).
  // A sandbox a task names is kept even when it could not be adopted (it may only have failed
  // for now); the next attach to its network replaces it.
  // The tunnel lives on with the encrypted sandboxes (its settings are sent again with the
  // peers); without one it goes.
  try {
    tunnelIf_ = hostNl_->linkIndex(tunnelName_);
    filteredVnis_ = {0};  // unknown: written again below
    stopTunnelIfUnused();
  } catch (const std::exception& e) {
    warn("cleaning up tunnel " + tunnelName_ + ": " + e.what());
  }
  std::set<std::string> referenced;
  for (const auto& [taskId, state] : tasks_) {
    for (const NetworkSpec& net : state.networks) referenced.insert(sandboxPath(net.id));
  }
  for (const std::string& name : names) {
    const std::string path = dir + "/" + name;
    try {
      if (name.rfind("sb-", 0) == 0) {
        if (referenced.count(path) == 0 && exists(path)) {
          warn("removing unused sandbox " + path);
          destroySandboxFile(path);
        }
      } else if (validId(name) && tasks_.count(name) == 0 && exists(path)) {
        struct stat st {};
        if (isNetnsMount(path) ||
            (::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0)) {
          warn("removing the network namespace of task " + name + ", which was never attached");
          removeStaleTask(name);
        }
      }
    } catch (const std::exception& e) {
      warn("cleaning up " + path + ": " + e.what());
    }
  }
}

}  // namespace shoal::overlay::dataplane
