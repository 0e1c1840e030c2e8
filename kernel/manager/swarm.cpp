#include "kernel/manager/swarm.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "kernel/api/api_client.h"
#include "kernel/ca/join_token.h"
#include "kernel/common/log.h"
#include "kernel/manager/node_api_client.h"
#include "kernel/store/object.h"

namespace shoal::manager {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr int kStateFormat = 1;
constexpr int kDefaultPort = 2377;
constexpr const char* kNotManager =
    "This node is not a swarm manager. Use \"shoal swarm init\" or \"shoal swarm join\" to "
    "connect this node to swarm and try again.";

struct HostPort {
  std::string host;
  int port = 0;
  std::string toString() const { return host + ":" + std::to_string(port); }
};

// "IPv4[:port]"; `defaultPort` when the port is left out.
Result<HostPort> parseAddr(const std::string& text, int defaultPort, const std::string& what) {
  HostPort hp;
  std::string host = text;
  if (auto colon = text.rfind(':'); colon != std::string::npos) {
    host = text.substr(0, colon);
    const std::string port = text.substr(colon + 1);
    char* end = nullptr;
    const long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p < 0 || p > 65535) {
      return Status::invalidArgument("invalid " + what + " \"" + text + "\": port \"" + port +
                                     "\" is not a number from 0 to 65535");
    }
    hp.port = static_cast<int>(p);
  } else {
    hp.port = defaultPort;
  }
  in_addr a{};
  if (inet_pton(AF_INET, host.c_str(), &a) != 1) {
    return Status::invalidArgument("invalid " + what + " \"" + text + "\": \"" + host +
                                   "\" is not an IPv4 address");
  }
  hp.host = host;
  return hp;
}

// A port free on `host` right now.
Result<int> freePort(const std::string& host) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, host.c_str(), &a.sin_addr);
  socklen_t len = sizeof a;
  const bool ok = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok) return Status::unavailable("cannot bind the listen address " + host + ": port 0");
  return static_cast<int>(ntohs(a.sin_port));
}

// The address to advertise when none was given (Docker's rule, with loopback as the last
// resort for a machine without a network).
Result<std::string> defaultAdvertiseHost() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return std::string("127.0.0.1");
  std::vector<std::pair<std::string, std::string>> found;  // (address, interface)
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    if ((i->ifa_flags & IFF_UP) == 0 || (i->ifa_flags & IFF_LOOPBACK) != 0) continue;
    char buf[INET_ADDRSTRLEN] = "";
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf);
    found.emplace_back(buf, i->ifa_name);
  }
  freeifaddrs(list);
  if (found.empty()) return std::string("127.0.0.1");
  if (found.size() > 1) {
    return Status::invalidArgument(
        "could not choose an IP address to advertise since this system has multiple "
        "addresses on different interfaces (" +
        found[0].first + " on " + found[0].second + " and " + found[1].first + " on " +
        found[1].second + "); use --advertise-addr");
  }
  return found[0].first;
}

Status writeFile(const std::string& path, const std::string& text, fs::perms mode) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) return Status::internal("cannot write " + path);
  }
  std::error_code ec;
  fs::permissions(path, mode, ec);
  if (ec) return Status::internal("cannot set the mode of " + path + ": " + ec.message());
  return Status::ok();
}

Result<std::string> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::notFound(path + " is missing");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string stringify(const Poco::JSON::Object& o) {
  std::ostringstream out;
  o.stringify(out);
  return out.str();
}

}  // namespace

// Everything that makes this node a member: read from and written to the swarm directory.
struct Swarm::Identity {
  std::string nodeId;
  std::string clusterId;
  std::string role;  // "manager" | "worker"
  uint64_t raftId = 0;
  std::string listenAddr;  // the node API (managers)
  std::string raftAddr;    // Raft between managers (managers)
  std::string advertiseAddr;
  std::string managerAddr;    // workers: the manager they report to
  std::string managerNodeId;  // workers: its node id (its certificate's CN)
  std::string caCertPem, caKeyPem, nodeCertPem, nodeKeyPem;
  std::string caDigest;

  std::string stateJson() const {
    Poco::JSON::Object o;
    o.set("format", kStateFormat);
    o.set("node_id", nodeId);
    o.set("cluster_id", clusterId);
    o.set("role", role);
    o.set("raft_id", std::to_string(raftId));
    o.set("listen_addr", listenAddr);
    o.set("raft_listen_addr", raftAddr);
    o.set("advertise_addr", advertiseAddr);
    o.set("manager_addr", managerAddr);
    o.set("manager_node_id", managerNodeId);
    return stringify(o);
  }

  Status save(const std::string& dir) const {
    std::error_code ec;
    fs::create_directories(dir + "/certificates", ec);
    if (ec) return Status::internal("cannot create " + dir + "/certificates: " + ec.message());
    fs::permissions(dir, fs::perms::owner_all, ec);
    const auto secret = fs::perms::owner_read | fs::perms::owner_write;
    const auto open = secret | fs::perms::group_read | fs::perms::others_read;
    const std::string certs = dir + "/certificates/";
    for (auto [name, text, mode] : {std::tuple{"swarm-root-ca.crt", &caCertPem, open},
                                    std::tuple{"swarm-root-ca.key", &caKeyPem, secret},
                                    std::tuple{"swarm-node.crt", &nodeCertPem, open},
                                    std::tuple{"swarm-node.key", &nodeKeyPem, secret}}) {
      if (text->empty()) continue;
      if (Status s = writeFile(certs + name, *text, mode); !s) return s;
    }
    // Written last: its presence says the directory is complete.
    return writeFile(dir + "/state.json", stateJson(), secret);
  }

  static Result<Identity> load(const std::string& dir) {
    const std::string statePath = dir + "/state.json";
    auto text = readFile(statePath);
    if (!text) return text.status();
    Identity id;
    try {
      auto o = Poco::JSON::Parser().parse(*text).extract<Poco::JSON::Object::Ptr>();
      if (!o) throw Poco::Exception("not a JSON object");
      const int format = o->optValue<int>("format", 0);
      if (format != kStateFormat) {
        return Status::invalidArgument(statePath + ": format " + std::to_string(format) +
                                       " is not supported (this build reads format " +
                                       std::to_string(kStateFormat) + ")");
      }
      id.nodeId = o->getValue<std::string>("node_id");
      id.clusterId = o->getValue<std::string>("cluster_id");
      id.role = o->getValue<std::string>("role");
      id.raftId = std::stoull(o->getValue<std::string>("raft_id"));
      id.listenAddr = o->getValue<std::string>("listen_addr");
      id.advertiseAddr = o->getValue<std::string>("advertise_addr");
      id.raftAddr = o->optValue<std::string>("raft_listen_addr", "");
      id.managerAddr = o->optValue<std::string>("manager_addr", "");
      id.managerNodeId = o->optValue<std::string>("manager_node_id", "");
    } catch (const std::exception& e) {
      return Status::invalidArgument(statePath + " is corrupt: " + e.what());
    }
    if (id.role != "manager" && id.role != "worker") {
      return Status::invalidArgument(statePath + " is corrupt: unknown role \"" + id.role + "\"");
    }
    const std::string certs = dir + "/certificates/";
    for (auto [name, text] : {std::pair{"swarm-root-ca.crt", &id.caCertPem},
                              std::pair{"swarm-node.crt", &id.nodeCertPem},
                              std::pair{"swarm-node.key", &id.nodeKeyPem}}) {
      auto r = readFile(certs + name);
      if (!r) return r.status();
      *text = std::move(*r);
    }
    if (id.role == "manager") {
      auto r = readFile(certs + "swarm-root-ca.key");
      if (!r) return r.status();
      id.caKeyPem = std::move(*r);
    }
    auto ca = ca::RootCa::load(id.caCertPem, id.caKeyPem);
    if (!ca) return ca.status().withContext(certs + "swarm-root-ca.crt");
    if (Status s = ca->verify(id.nodeCertPem); !s) return s.withContext(certs + "swarm-node.crt");
    if (!ca::keyMatchesCertificate(id.nodeKeyPem, id.nodeCertPem)) {
      return Status::invalidArgument(certs + "swarm-node.key does not belong to swarm-node.crt");
    }
    auto info = ca::inspectCertificate(id.nodeCertPem);
    if (!info || info->nodeId != id.nodeId || info->clusterId != id.clusterId) {
      return Status::invalidArgument(certs + "swarm-node.crt is not this node's certificate");
    }
    id.caDigest = ca->digest();
    return id;
  }
};

Swarm::Swarm(std::string dataRoot, std::string engineVersion, Random& random, const Clock& clock)
    : dataRoot_(std::move(dataRoot)),
      engineVersion_(std::move(engineVersion)),
      random_(random),
      clock_(clock) {
  nodeRouter_.add("GET", "/ca", [this](const api::Request& r) { return handleCa(r); });
  nodeRouter_.add("POST", "/join", [this](const api::Request& r) { return handleJoin(r); });
  nodeRouter_.add("POST", "/heartbeat",
                  [this](const api::Request& r) { return handleHeartbeat(r); });
}

Swarm::~Swarm() { stop(); }

void Swarm::stop() {
  std::unique_lock<std::mutex> lock(mu_);
  stopRunning(lock);
}

void Swarm::stopRunning(std::unique_lock<std::mutex>& lock) {
  auto api = std::move(nodeApi_);
  auto store = std::move(store_);
  auto transport = std::move(transport_);
  std::thread hb = std::move(hbThread_);
  lock.unlock();
  if (api) api->stop();
  {
    std::lock_guard<std::mutex> g(hbMu_);
    hbStop_ = true;
  }
  hbCv_.notify_all();
  if (hb.joinable()) hb.join();
  {
    std::lock_guard<std::mutex> g(hbMu_);
    hbStop_ = false;
    lastSeen_.clear();
  }
  if (store) store->stop();
  if (transport) transport->stop();
  lock.lock();
}

Status Swarm::startManager(const Identity& id, const std::string& dir, bool serveNodeApi) {
  auto storage = raft::RaftStorage::open(dir + "/raft");
  if (!storage) return storage.status();
  raft::TcpTransport::Options to;
  to.self = id.raftId;
  to.listenAddress = id.raftAddr.empty() ? id.listenAddr : id.raftAddr;
  to.caFile = dir + "/certificates/swarm-root-ca.crt";
  to.certFile = dir + "/certificates/swarm-node.crt";
  to.keyFile = dir + "/certificates/swarm-node.key";
  auto transport = std::make_unique<raft::TcpTransport>(to);
  ReplicatedStoreOptions o;
  o.raft.raft.id = id.raftId;
  o.raft.raft.voters = {id.raftId};
  auto store =
      std::make_unique<ReplicatedStore>(o, std::move(storage.value()), *transport, random_, clock_);
  if (Status s = store->start(); !s) return s;
  transport_ = std::move(transport);
  store_ = std::move(store);
  if (!serveNodeApi) return Status::ok();
  api::ApiServer::Options ao;
  ao.tlsAddress = id.listenAddr;
  ao.caFile = dir + "/certificates/swarm-root-ca.crt";
  ao.certFile = dir + "/certificates/swarm-node.crt";
  ao.keyFile = dir + "/certificates/swarm-node.key";
  auto api = std::make_unique<api::ApiServer>(ao, nodeRouter_);
  if (Status s = api->start(); !s) {
    store_->stop();
    store_.reset();
    transport_->stop();
    transport_.reset();
    return s;
  }
  nodeApi_ = std::move(api);
  hbThread_ = std::thread([this] { monitorHeartbeats(); });
  return Status::ok();
}

void Swarm::startWorker(const Identity& id) {
  hbThread_ = std::thread([this, dir = dataRoot_ + "/swarm", addr = id.managerAddr,
                           manager = id.managerNodeId] { sendHeartbeats(dir, addr, manager); });
}

Status Swarm::resume() {
  const std::string dir = dataRoot_ + "/swarm";
  std::error_code ec;
  // Leftovers of an init that did not finish are not a swarm.
  fs::remove_all(dataRoot_ + "/swarm.new", ec);
  if (!fs::exists(dir, ec)) return Status::ok();
  auto id = Identity::load(dir);
  if (!id) return id.status().withContext("the swarm state in " + dir);
  std::lock_guard<std::mutex> lock(mu_);
  if (id->role == "manager") {
    if (Status s = startManager(*id, dir, true); !s) {
      return s.withContext("the swarm state in " + dir);
    }
  } else {
    startWorker(*id);
  }
  identity_ = std::make_unique<Identity>(std::move(*id));
  log::info("swarm", "rejoined the swarm",
            {{"node", identity_->nodeId}, {"cluster", identity_->clusterId}});
  return Status::ok();
}

std::string Swarm::nodeDescriptionJson() const {
  Poco::JSON::Object d;
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  d.set("Hostname", std::string(host));
  utsname u{};
  uname(&u);
  Poco::JSON::Object platform;
  platform.set("OS", std::string("linux"));
  platform.set("Architecture", std::string(u.machine));
  d.set("Platform", platform);
  Poco::JSON::Object resources;
  resources.set("NanoCPUs", static_cast<int64_t>(sysconf(_SC_NPROCESSORS_ONLN)) * 1000000000);
  resources.set("MemoryBytes",
                static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGESIZE));
  d.set("Resources", resources);
  Poco::JSON::Object engine;
  engine.set("EngineVersion", engineVersion_);
  d.set("Engine", engine);
  return stringify(d);
}

Status Swarm::commitInitialState(const Identity& id, const SwarmInitOptions& options) {
  // A single voter elects itself after one election timeout.
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  while (!store_->raft().isLeader()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return Status::timeout("the new swarm's manager did not become leader within 15 s");
    }
    std::this_thread::sleep_for(10ms);
  }
  ca::JoinToken worker{id.caDigest, ca::newTokenSecret(random_)};
  ca::JoinToken manager{id.caDigest, ca::newTokenSecret(random_)};
  return store_->update(
      [&](store::Tx& tx) {
        store::Object cluster;
        cluster.kind = store::Kind::kCluster;
        cluster.id = id.clusterId;
        cluster.name = "default";
        Poco::JSON::Object spec, caConfig, orchestration, dispatcher;
        caConfig.set("NodeCertExpiry", static_cast<int64_t>(options.certExpiry.count()));
        orchestration.set("TaskHistoryRetentionLimit", 5);
        dispatcher.set("HeartbeatPeriod", static_cast<int64_t>(options.heartbeatPeriod.count()));
        spec.set("CAConfig", caConfig);
        spec.set("Orchestration", orchestration);
        spec.set("Dispatcher", dispatcher);
        cluster.spec = stringify(spec);
        Poco::JSON::Object status, rootCa, tokens;
        rootCa.set("CACert", id.caCertPem);
        rootCa.set("Digest", id.caDigest);
        tokens.set("Worker", worker.toString());
        tokens.set("Manager", manager.toString());
        status.set("RootCA", rootCa);
        status.set("JoinTokens", tokens);
        cluster.status = stringify(status);
        if (Status s = tx.create(std::move(cluster)); !s) return s;

        store::Object node;
        node.kind = store::Kind::kNode;
        node.id = id.nodeId;
        node.role = store::NodeRole::kManager;
        node.availability = store::NodeAvailability::kActive;
        Poco::JSON::Object nodeSpec;
        nodeSpec.set("Role", std::string("manager"));
        nodeSpec.set("Availability", std::string("active"));
        node.spec = stringify(nodeSpec);
        Poco::JSON::Object nodeStatus, manager;
        nodeStatus.set("State", std::string("ready"));
        nodeStatus.set("Addr", id.advertiseAddr.substr(0, id.advertiseAddr.rfind(':')));
        Poco::JSON::Parser parser;
        nodeStatus.set("Description", parser.parse(nodeDescriptionJson()));
        manager.set("RaftID", std::to_string(id.raftId));
        manager.set("Addr", id.advertiseAddr);
        nodeStatus.set("ManagerStatus", manager);
        node.status = stringify(nodeStatus);
        return tx.create(std::move(node));
      },
      10s);
}

Result<std::string> Swarm::init(const SwarmInitOptions& options) {
  std::unique_lock<std::mutex> lock(mu_);
  if (identity_) {
    return Status::failedPrecondition(
        "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm "
        "and join another one.");
  }
  auto listen = parseAddr(options.listenAddr, kDefaultPort, "listen address");
  if (!listen) return listen.status();
  // Raft listens next to the node API: on the following port, or on another free one.
  int raftPort = listen->port + 1;
  if (listen->port == 0) {
    auto port = freePort(listen->host);
    if (!port) return port.status();
    listen->port = *port;
    auto other = freePort(listen->host);
    if (!other) return other.status();
    raftPort = *other;
  } else if (listen->port == 65535) {
    return Status::invalidArgument("invalid listen address \"" + options.listenAddr +
                                   "\": Raft needs the next port too");
  }
  HostPort advertise;
  if (!options.advertiseAddr.empty()) {
    auto a = parseAddr(options.advertiseAddr, listen->port, "advertise address");
    if (!a) return a.status();
    advertise = *a;
  } else if (listen->host != "0.0.0.0") {
    advertise = *listen;
  } else {
    auto host = defaultAdvertiseHost();
    if (!host) return host.status();
    advertise = HostPort{*host, listen->port};
  }
  if (options.heartbeatPeriod < 1s) {
    return Status::invalidArgument("--dispatcher-heartbeat must be at least 1 second");
  }
  if (options.certExpiry < 1h) {
    return Status::invalidArgument("--cert-expiry must be at least 1 hour");
  }

  Identity id;
  id.nodeId = newId(random_);
  id.clusterId = newId(random_);
  id.role = "manager";
  do {
    id.raftId = random_.next();
  } while (id.raftId == 0);
  id.listenAddr = listen->toString();
  id.raftAddr = HostPort{listen->host, raftPort}.toString();
  id.advertiseAddr = advertise.toString();
  auto ca = ca::RootCa::create();
  if (!ca) return ca.status();
  auto key = ca::generateKeyPem();
  if (!key) return key.status();
  auto csr = ca::makeCsrPem(*key);
  if (!csr) return csr.status();
  auto cert = ca->sign(*csr, id.nodeId, ca::kManagerRole, id.clusterId, options.certExpiry);
  if (!cert) return cert.status();
  id.caCertPem = ca->certPem();
  id.caKeyPem = ca->keyPem();
  id.caDigest = ca->digest();
  id.nodeKeyPem = *key;
  id.nodeCertPem = *cert;

  const std::string staging = dataRoot_ + "/swarm.new";
  const std::string dir = dataRoot_ + "/swarm";
  std::error_code ec;
  fs::remove_all(staging, ec);
  auto abandon = [&](const Status& s) {
    stopRunning(lock);
    fs::remove_all(staging, ec);
    fs::remove_all(dir, ec);
    return s;
  };
  if (Status s = id.save(staging); !s) return abandon(s);
  // Raft's files are made in the staging directory too: a crash before the rename leaves no
  // swarm, one after it a complete one.
  if (Status s = startManager(id, staging, false); !s) return abandon(s);
  if (Status s = commitInitialState(id, options); !s) return abandon(s);
  stopRunning(lock);
  fs::rename(staging, dir, ec);
  if (ec) return abandon(Status::internal("cannot move " + staging + " to " + dir));
  if (Status s = startManager(id, dir, true); !s) return abandon(s);
  // Answer only once the manager leads again, so the next command finds it ready.
  for (auto until = std::chrono::steady_clock::now() + 5s;
       !store_->raft().isLeader() && std::chrono::steady_clock::now() < until;) {
    std::this_thread::sleep_for(5ms);
  }
  identity_ = std::make_unique<Identity>(std::move(id));
  log::info("swarm", "swarm initialised",
            {{"node", identity_->nodeId},
             {"cluster", identity_->clusterId},
             {"advertise", identity_->advertiseAddr}});
  return identity_->nodeId;
}

Status Swarm::requireManager() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!identity_ || !store_) return Status::unavailable(kNotManager);
  return Status::ok();
}

SwarmStatus Swarm::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  SwarmStatus s;
  if (!identity_) return s;
  s.state = "active";
  s.nodeId = identity_->nodeId;
  s.clusterId = identity_->clusterId;
  s.role = identity_->role;
  s.caDigest = identity_->caDigest;
  s.advertiseAddr = identity_->advertiseAddr;
  s.raftId = identity_->raftId;
  if (store_) {
    s.raftLeader = store_->raft().leader();
    s.raftTerm = store_->raft().term();
    s.raftApplied = store_->raft().appliedIndex();
    store_->view([&](const store::ReadView& v) {
      for (const auto& n : v.find(store::Query::all(store::Kind::kNode))) {
        ++s.nodes;
        if (n->role == store::NodeRole::kManager) ++s.managers;
      }
    });
  }
  return s;
}

Result<std::string> Swarm::joinToken(const std::string& role, bool rotate) {
  if (role != "worker" && role != "manager") {
    return Status::invalidArgument("unknown role \"" + role + "\" (want worker or manager)");
  }
  if (Status s = requireManager(); !s) return s;
  const std::string key = role == "worker" ? "Worker" : "Manager";
  std::lock_guard<std::mutex> lock(mu_);
  if (rotate) {
    ca::JoinToken fresh{identity_->caDigest, ca::newTokenSecret(random_)};
    Status s = store_->update(
        [&](store::Tx& tx) {
          auto cluster = tx.get(store::Kind::kCluster, identity_->clusterId);
          if (!cluster) return Status::notFound("the cluster object is missing");
          store::Object next = *cluster;
          auto status = Poco::JSON::Parser().parse(next.status).extract<Poco::JSON::Object::Ptr>();
          status->getObject("JoinTokens")->set(key, fresh.toString());
          next.status = stringify(*status);
          return tx.update(std::move(next));
        },
        10s);
    if (!s) return s;
  }
  std::string token;
  Status s = store_->linearizableView(
      [&](const store::ReadView& v) {
        auto cluster = v.get(store::Kind::kCluster, identity_->clusterId);
        if (!cluster) return;
        auto status =
            Poco::JSON::Parser().parse(cluster->status).extract<Poco::JSON::Object::Ptr>();
        token = status->getObject("JoinTokens")->optValue<std::string>(key, "");
      },
      10s);
  if (!s) return s;
  if (token.empty()) return Status::internal("the cluster object has no " + role + " join token");
  return token;
}

Result<std::vector<NodeSummary>> Swarm::nodes() {
  if (Status s = requireManager(); !s) return s;
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<NodeSummary> out;
  Status s = store_->linearizableView(
      [&](const store::ReadView& v) {
        const uint64_t leader = store_->raft().leader();  // known: the barrier passed
        for (const auto& n : v.find(store::Query::all(store::Kind::kNode))) {
          NodeSummary row;
          row.id = n->id;
          row.self = n->id == identity_->nodeId;
          row.availability = std::string(store::availabilityName(n->availability));
          row.json = store::toJson(*n);
          try {
            auto st = Poco::JSON::Parser().parse(n->status).extract<Poco::JSON::Object::Ptr>();
            row.status = st->optValue<std::string>("State", "unknown");
            if (auto d = st->getObject("Description")) {
              row.hostname = d->optValue<std::string>("Hostname", "");
              if (auto e = d->getObject("Engine")) {
                row.engineVersion = e->optValue<std::string>("EngineVersion", "");
              }
            }
            if (auto m = st->getObject("ManagerStatus")) {
              const uint64_t raftId = std::stoull(m->optValue<std::string>("RaftID", "0"));
              row.managerStatus = raftId == leader ? "Leader" : "Reachable";
            }
          } catch (const std::exception&) {
            row.status = "unknown";
          }
          out.push_back(std::move(row));
        }
      },
      10s);
  if (!s) return s;
  std::sort(out.begin(), out.end(),
            [](const NodeSummary& a, const NodeSummary& b) { return a.id < b.id; });
  return out;
}

Result<std::string> Swarm::resolveNode(const store::ReadView& view, const std::string& ref) const {
  if (ref.empty()) return Status::invalidArgument("a node reference is required");
  if (ref == "self") return identity_->nodeId;
  if (view.get(store::Kind::kNode, ref)) return ref;
  std::vector<std::string> byPrefix, byHostname;
  for (const auto& n : view.find(store::Query::all(store::Kind::kNode))) {
    if (n->id.starts_with(ref)) byPrefix.push_back(n->id);
    try {
      auto st = Poco::JSON::Parser().parse(n->status).extract<Poco::JSON::Object::Ptr>();
      auto d = st ? st->getObject("Description") : nullptr;
      if (d && d->optValue<std::string>("Hostname", "") == ref) byHostname.push_back(n->id);
    } catch (const std::exception&) {
    }
  }
  for (const auto* list : {&byPrefix, &byHostname}) {
    if (list->size() == 1) return list->front();
    if (list->size() > 1) {
      return Status::invalidArgument("node " + ref + " is ambiguous (" +
                                     std::to_string(list->size()) + " matches)");
    }
  }
  return Status::notFound("node " + ref + " not found");
}

Result<std::string> Swarm::inspectNode(const std::string& ref) {
  if (Status s = requireManager(); !s) return s;
  std::lock_guard<std::mutex> lock(mu_);
  Result<std::string> out = Status::notFound("node " + ref + " not found");
  Status s = store_->linearizableView(
      [&](const store::ReadView& v) {
        auto id = resolveNode(v, ref);
        if (!id) {
          out = id.status();
          return;
        }
        if (auto n = v.get(store::Kind::kNode, *id)) out = store::toJson(*n);
      },
      10s);
  if (!s) return s;
  return out;
}

Status Swarm::updateNode(const std::string& ref, const NodeUpdate& update) {
  if (Status s = requireManager(); !s) return s;
  std::optional<store::NodeAvailability> availability;
  if (!update.availability.empty()) {
    auto a = store::parseAvailability(update.availability);
    if (!a) return a.status();
    availability = *a;
  }
  std::optional<store::NodeRole> role;
  if (!update.role.empty()) {
    auto r = store::parseNodeRole(update.role);
    if (!r) return r.status();
    role = *r;
  }
  for (const auto& [key, value] : update.labelAdd) {
    if (key.empty()) return Status::invalidArgument("a label to add has an empty key");
  }
  std::lock_guard<std::mutex> lock(mu_);
  return store_->update(
      [&](store::Tx& tx) {
        auto id = resolveNode(tx, ref);
        if (!id) return id.status();
        auto current = tx.get(store::Kind::kNode, *id);
        if (!current) return Status::notFound("node " + ref + " not found");
        store::Object next = *current;
        for (const auto& key : update.labelRm) {
          if (next.labels.erase(key) == 0 && !update.labelAdd.count(key)) {
            return Status::invalidArgument("key " + key + " doesn't exist in node's labels");
          }
        }
        for (const auto& [key, value] : update.labelAdd) next.labels[key] = value;
        auto spec = Poco::JSON::Parser().parse(next.spec).extract<Poco::JSON::Object::Ptr>();
        if (availability) {
          next.availability = *availability;
          spec->set("Availability", std::string(store::availabilityName(*availability)));
        }
        if (role && *role != next.role) {
          if (*role == store::NodeRole::kWorker) {
            std::size_t managers = 0;
            for (const auto& n : tx.find(store::Query::nodesByRole(store::NodeRole::kManager))) {
              managers += n ? 1 : 0;
            }
            if (managers <= 1) {
              return Status::failedPrecondition(
                  "attempting to demote the last manager of the swarm");
            }
          }
          // Promotion and demotion change the Raft membership, which arrives with swarm join
          // (issue #4): until then no swarm has a second node to promote or demote.
          return Status::failedPrecondition("node " + ref +
                                            " cannot change role: this swarm has no other "
                                            "manager to hand Raft membership to yet");
        }
        next.spec = stringify(*spec);
        return tx.update(std::move(next));
      },
      10s);
}

Status Swarm::leave(bool force) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!identity_) return Status::failedPrecondition("This node is not part of a swarm");
  if (identity_->role == "manager" && !force) {
    return Status::failedPrecondition(
        "You are attempting to leave the swarm on a node that is participating as a manager. "
        "Removing the last manager erases all current state of the swarm. Use `--force` to "
        "ignore this message.");
  }
  stopRunning(lock);
  std::error_code ec;
  fs::remove_all(dataRoot_ + "/swarm", ec);
  if (ec) {
    return Status::internal("left the swarm, but cannot remove " + dataRoot_ +
                            "/swarm: " + ec.message());
  }
  log::info("swarm", "left the swarm", {{"node", identity_->nodeId}});
  identity_.reset();
  return Status::ok();
}

// ---- the node API (managers) and heartbeats ---------------------------------------------

std::chrono::seconds Swarm::heartbeatPeriod() {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t seconds = 5;
  if (store_ && identity_) {
    store_->view([&](const store::ReadView& v) {
      auto cluster = v.get(store::Kind::kCluster, identity_->clusterId);
      if (!cluster) return;
      try {
        auto spec = Poco::JSON::Parser().parse(cluster->spec).extract<Poco::JSON::Object::Ptr>();
        if (auto d = spec->getObject("Dispatcher")) {
          seconds = d->optValue<int64_t>("HeartbeatPeriod", 5);
        }
      } catch (const std::exception&) {
      }
    });
  }
  return std::chrono::seconds(std::max<int64_t>(seconds, 1));
}

api::Response Swarm::handleCa(const api::Request&) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!identity_) return api::Response::error(Status::unavailable(kNotManager));
  Poco::JSON::Object out;
  out.set("ca_cert", identity_->caCertPem);
  out.set("node_id", identity_->nodeId);
  return api::Response::json(stringify(out));
}

api::Response Swarm::handleJoin(const api::Request& r) {
  std::string tokenText, csr, advertise;
  Poco::JSON::Object::Ptr description;
  try {
    auto body = Poco::JSON::Parser().parse(r.body).extract<Poco::JSON::Object::Ptr>();
    if (!body) throw Poco::Exception("not a JSON object");
    tokenText = body->getValue<std::string>("token");
    csr = body->getValue<std::string>("csr");
    advertise = body->optValue<std::string>("advertise_addr", "");
    description = body->getObject("description");
  } catch (const std::exception& e) {
    return api::Response::error(400, std::string("bad join request: ") + e.what());
  }
  auto token = ca::parseJoinToken(tokenText);
  if (!token) return api::Response::error(token.status());

  std::unique_lock<std::mutex> lock(mu_);
  if (!identity_ || !store_) return api::Response::error(Status::unavailable(kNotManager));
  if (token->caDigest != identity_->caDigest) {
    return api::Response::error(Status::permissionDenied(
        "the join token is for another swarm (its CA digest does not match this swarm's)"));
  }
  ReplicatedStore* store = store_.get();
  const Identity id = *identity_;
  lock.unlock();

  std::string role;
  int64_t expiry = 90LL * 24 * 3600;
  Status read = store->linearizableView(
      [&](const store::ReadView& v) {
        auto cluster = v.get(store::Kind::kCluster, id.clusterId);
        if (!cluster) return;
        auto status =
            Poco::JSON::Parser().parse(cluster->status).extract<Poco::JSON::Object::Ptr>();
        auto tokens = status->getObject("JoinTokens");
        if (tokens->optValue<std::string>("Worker", "") == tokenText) role = "worker";
        if (tokens->optValue<std::string>("Manager", "") == tokenText) role = "manager";
        auto spec = Poco::JSON::Parser().parse(cluster->spec).extract<Poco::JSON::Object::Ptr>();
        if (auto c = spec->getObject("CAConfig")) {
          expiry = c->optValue<int64_t>("NodeCertExpiry", expiry);
        }
      },
      10s);
  if (!read) return api::Response::error(read);
  if (role.empty()) {
    return api::Response::error(Status::permissionDenied(
        "A valid join token is necessary to join this cluster (the token is wrong, or was "
        "rotated out)"));
  }
  if (role == "manager") {
    return api::Response::error(Status::notSupported(
        "joining as a manager is not supported by this version yet: join with the worker token"));
  }
  auto ca = ca::RootCa::load(id.caCertPem, id.caKeyPem);
  if (!ca) return api::Response::error(ca.status());
  const std::string nodeId = newId(random_);
  auto cert = ca->sign(csr, nodeId, ca::kWorkerRole, id.clusterId, std::chrono::seconds(expiry));
  if (!cert) return api::Response::error(cert.status());

  std::string addr = advertise;
  if (addr.empty()) addr = r.peerAddress.substr(0, r.peerAddress.rfind(':'));
  Status created = store->update(
      [&](store::Tx& tx) {
        store::Object node;
        node.kind = store::Kind::kNode;
        node.id = nodeId;
        node.role = store::NodeRole::kWorker;
        node.availability = store::NodeAvailability::kActive;
        Poco::JSON::Object spec;
        spec.set("Role", std::string("worker"));
        spec.set("Availability", std::string("active"));
        node.spec = stringify(spec);
        Poco::JSON::Object status;
        status.set("State", std::string("ready"));
        status.set("Addr", addr);
        if (description) status.set("Description", description);
        node.status = stringify(status);
        return tx.create(std::move(node));
      },
      10s);
  if (!created) return api::Response::error(created);
  {
    std::lock_guard<std::mutex> g(hbMu_);
    lastSeen_[nodeId] = std::chrono::steady_clock::now();
  }
  log::info("swarm", "node joined", {{"node", nodeId}, {"role", role}, {"addr", addr}});
  Poco::JSON::Object out;
  out.set("node_id", nodeId);
  out.set("cluster_id", id.clusterId);
  out.set("role", role);
  out.set("certificate", *cert);
  out.set("manager_node_id", id.nodeId);
  out.set("heartbeat_period", static_cast<int64_t>(heartbeatPeriod().count()));
  return api::Response::json(stringify(out));
}

namespace {

// Sets a node's State ("ready" / "down") in the store, if it differs.
Status setNodeState(ReplicatedStore& store, const std::string& nodeId, const std::string& state) {
  return store.update(
      [&](store::Tx& tx) {
        auto node = tx.get(store::Kind::kNode, nodeId);
        if (!node) return Status::notFound("node " + nodeId + " not found");
        auto status = Poco::JSON::Parser().parse(node->status).extract<Poco::JSON::Object::Ptr>();
        if (status->optValue<std::string>("State", "") == state) return Status::ok();
        status->set("State", state);
        store::Object next = *node;
        next.status = stringify(*status);
        return tx.update(std::move(next));
      },
      10s);
}

}  // namespace

api::Response Swarm::handleHeartbeat(const api::Request& r) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!identity_ || !store_) return api::Response::error(Status::unavailable(kNotManager));
  if (r.peerNodeId.empty() || r.peerCluster != identity_->clusterId) {
    return api::Response::error(
        Status::permissionDenied("a heartbeat needs this swarm's node certificate"));
  }
  ReplicatedStore* store = store_.get();
  lock.unlock();
  bool member = false;
  std::string state;
  store->view([&](const store::ReadView& v) {
    auto node = v.get(store::Kind::kNode, r.peerNodeId);
    if (!node) return;
    member = true;
    try {
      auto st = Poco::JSON::Parser().parse(node->status).extract<Poco::JSON::Object::Ptr>();
      state = st->optValue<std::string>("State", "");
    } catch (const std::exception&) {
    }
  });
  if (!member) {
    return api::Response::error(Status::permissionDenied(
        "node " + r.peerNodeId + " is not a member of this swarm (was it removed?)"));
  }
  {
    std::lock_guard<std::mutex> g(hbMu_);
    lastSeen_[r.peerNodeId] = std::chrono::steady_clock::now();
  }
  if (state != "ready") {
    if (Status s = setNodeState(*store, r.peerNodeId, "ready"); !s) {
      return api::Response::error(s);
    }
    log::info("swarm", "node is back", {{"node", r.peerNodeId}});
  }
  Poco::JSON::Object out;
  out.set("period_seconds", static_cast<int64_t>(heartbeatPeriod().count()));
  return api::Response::json(stringify(out));
}

void Swarm::monitorHeartbeats() {
  // On the leader: a worker not heard from for 3 periods is marked down. Every worker gets a
  // full grace period from the moment this manager starts watching.
  const auto started = std::chrono::steady_clock::now();
  for (;;) {
    {
      std::unique_lock<std::mutex> g(hbMu_);
      if (hbCv_.wait_for(g, 250ms, [this] { return hbStop_; })) return;
    }
    ReplicatedStore* store = nullptr;
    std::string self;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!store_ || !identity_ || !store_->raft().isLeader()) continue;
      store = store_.get();
      self = identity_->nodeId;
    }
    const auto limit = 3 * heartbeatPeriod();
    std::vector<std::string> late;
    store->view([&](const store::ReadView& v) {
      const auto now = std::chrono::steady_clock::now();
      std::lock_guard<std::mutex> g(hbMu_);
      for (const auto& n : v.find(store::Query::nodesByRole(store::NodeRole::kWorker))) {
        auto it = lastSeen_.find(n->id);
        const auto seen = it == lastSeen_.end() ? started : std::max(it->second, started);
        if (now - seen <= limit) continue;
        if (n->status.find("\"State\":\"ready\"") != std::string::npos) late.push_back(n->id);
      }
    });
    for (const auto& id : late) {
      if (setNodeState(*store, id, "down")) {
        log::warn("swarm", "node missed its heartbeats; marked down", {{"node", id}});
      }
    }
  }
}

void Swarm::sendHeartbeats(std::string dir, std::string managerAddr, std::string managerNodeId) {
  NodeApiTarget target;
  target.address = managerAddr;
  target.caFile = dir + "/certificates/swarm-root-ca.crt";
  target.serverNodeId = managerNodeId;
  target.certFile = dir + "/certificates/swarm-node.crt";
  target.keyFile = dir + "/certificates/swarm-node.key";
  target.timeout = 5s;
  std::chrono::seconds period{5};
  for (;;) {
    auto reply = nodeApiRequest(target, "POST", "/heartbeat");
    if (!reply) {
      log::warn("swarm", "heartbeat failed", {{"error", reply.status().message()}});
    } else if (reply->status != 200) {
      log::warn("swarm", "heartbeat refused",
                {{"status", std::to_string(reply->status)}, {"reply", reply->body}});
    } else {
      try {
        auto o = Poco::JSON::Parser().parse(reply->body).extract<Poco::JSON::Object::Ptr>();
        period =
            std::chrono::seconds(std::max<int64_t>(1, o->optValue<int64_t>("period_seconds", 5)));
      } catch (const std::exception&) {
      }
    }
    std::unique_lock<std::mutex> g(hbMu_);
    if (hbCv_.wait_for(g, period, [this] { return hbStop_; })) return;
  }
}

// ---- join (the joining node) -----------------------------------------------------------------

Result<std::string> Swarm::join(const SwarmJoinOptions& options) {
  std::unique_lock<std::mutex> lock(mu_);
  if (identity_) {
    return Status::failedPrecondition(
        "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm "
        "and join another one.");
  }
  auto token = ca::parseJoinToken(options.token);
  if (!token) return token.status();
  auto remote = parseAddr(options.remoteAddr, kDefaultPort, "manager address");
  if (!remote) return remote.status();
  if (remote->port == 0) {
    return Status::invalidArgument("invalid manager address \"" + options.remoteAddr +
                                   "\": port 0");
  }
  if (!options.advertiseAddr.empty()) {
    auto a = parseAddr(options.advertiseAddr, kDefaultPort, "advertise address");
    if (!a) return a.status();
  }

  // 1. The manager's CA, fetched without trusting anything, must be the one the token names.
  NodeApiTarget anonymous;
  anonymous.address = remote->toString();
  auto caReply = nodeApiRequest(anonymous, "GET", "/ca");
  if (!caReply) return caReply.status();
  if (caReply->status != 200) {
    return Status::unavailable("the node at " + anonymous.address +
                               " is not a swarm manager: " + caReply->body);
  }
  std::string caPem, managerNodeId;
  try {
    auto o = Poco::JSON::Parser().parse(caReply->body).extract<Poco::JSON::Object::Ptr>();
    caPem = o->getValue<std::string>("ca_cert");
    managerNodeId = o->getValue<std::string>("node_id");
  } catch (const std::exception& e) {
    return Status::unavailable("the manager at " + anonymous.address +
                               " sent an unreadable CA: " + e.what());
  }
  auto ca = ca::RootCa::load(caPem, "");
  if (!ca) return ca.status().withContext("the manager's CA");
  if (ca->digest() != token->caDigest) {
    return Status::permissionDenied(
        "the manager's CA does not match the join token (remote CA digest " + ca->digest() +
        "): the token is for another swarm, or the connection is intercepted");
  }

  // 2. A key and a request; the manager, now verified against that CA, signs it.
  Identity id;
  id.role = "worker";
  id.managerAddr = remote->toString();
  id.managerNodeId = managerNodeId;
  id.caCertPem = caPem;
  id.caDigest = ca->digest();
  auto key = ca::generateKeyPem();
  if (!key) return key.status();
  auto csr = ca::makeCsrPem(*key);
  if (!csr) return csr.status();
  id.nodeKeyPem = *key;

  const std::string staging = dataRoot_ + "/swarm.new";
  const std::string dir = dataRoot_ + "/swarm";
  std::error_code ec;
  fs::remove_all(staging, ec);
  auto abandon = [&](const Status& s) {
    fs::remove_all(staging, ec);
    return s;
  };
  fs::create_directories(staging + "/certificates", ec);
  if (ec) return abandon(Status::internal("cannot create " + staging + ": " + ec.message()));
  if (Status s = writeFile(staging + "/certificates/swarm-root-ca.crt", caPem,
                           fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                               fs::perms::others_read);
      !s) {
    return abandon(s);
  }
  NodeApiTarget verified = anonymous;
  verified.caFile = staging + "/certificates/swarm-root-ca.crt";
  verified.serverNodeId = managerNodeId;
  Poco::JSON::Object req;
  req.set("token", options.token);
  req.set("csr", *csr);
  if (!options.advertiseAddr.empty()) {
    req.set("advertise_addr", options.advertiseAddr.substr(0, options.advertiseAddr.rfind(':')));
  }
  req.set("description", Poco::JSON::Parser().parse(nodeDescriptionJson()));
  auto joined = nodeApiRequest(verified, "POST", "/join", stringify(req));
  if (!joined) return abandon(joined.status());
  if (joined->status != 200) {
    std::string message = joined->body;
    try {
      auto o = Poco::JSON::Parser().parse(joined->body).extract<Poco::JSON::Object::Ptr>();
      message = o->optValue<std::string>("message", message);
    } catch (const std::exception&) {
    }
    return abandon(Status(api::statusCodeForHttp(joined->status), message));
  }
  try {
    auto o = Poco::JSON::Parser().parse(joined->body).extract<Poco::JSON::Object::Ptr>();
    id.nodeId = o->getValue<std::string>("node_id");
    id.clusterId = o->getValue<std::string>("cluster_id");
    id.nodeCertPem = o->getValue<std::string>("certificate");
  } catch (const std::exception& e) {
    return abandon(
        Status::unavailable(std::string("the manager's join reply is unreadable: ") + e.what()));
  }
  auto info = ca::inspectCertificate(id.nodeCertPem);
  if (!info || info->nodeId != id.nodeId || info->role != ca::kWorkerRole ||
      !ca->verify(id.nodeCertPem)) {
    return abandon(Status::permissionDenied(
        "the manager returned a certificate that is not this node's worker certificate"));
  }
  id.advertiseAddr = options.advertiseAddr;
  if (Status s = id.save(staging); !s) return abandon(s);
  fs::rename(staging, dir, ec);
  if (ec) return abandon(Status::internal("cannot move " + staging + " to " + dir));
  startWorker(id);
  identity_ = std::make_unique<Identity>(std::move(id));
  log::info("swarm", "joined the swarm as a worker",
            {{"node", identity_->nodeId}, {"manager", identity_->managerAddr}});
  return identity_->nodeId;
}

}  // namespace shoal::manager
