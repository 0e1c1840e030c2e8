#include "kernel/manager/swarm.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include <Poco/Base64Decoder.h>
#include <Poco/Base64Encoder.h>

#include "kernel/agent/wire.h"
#include "kernel/api/api_client.h"
#include "kernel/ca/join_token.h"
#include "kernel/common/aead.h"
#include "kernel/common/assert.h"
#include "kernel/common/log.h"
#include "kernel/manager/allocator.h"
#include "kernel/manager/dispatcher.h"
#include "kernel/manager/network_routes.h"
#include "kernel/manager/node_api_client.h"
#include "kernel/manager/orchestrator.h"
#include "kernel/manager/policy_routes.h"
#include "kernel/manager/scheduler_host.h"
#include "kernel/store/object.h"

namespace shoal::manager {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr int kStateFormat = 1;
constexpr int kDefaultPort = 2377;
// Node API threads (Poco keeps one per open connection): two per node for 2,000 nodes.
constexpr int kNodeApiThreads = 4096;
constexpr const char* kNotManager =
    "This node is not a swarm manager. Use \"shoal swarm init\" or \"shoal swarm join\" to "
    "connect this node to swarm and try again.";

constexpr const char* kLocked =
    "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"shoal "
    "swarm unlock\" to unlock it.";
constexpr const char* kNoLeader =
    "The swarm does not have a leader. It's possible that too few managers are online. Make "
    "sure more than half of the managers are online.";

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

// A JSON object, or null when `text` is not one.
Poco::JSON::Object::Ptr parseObject(const std::string& text) {
  try {
    return Poco::JSON::Parser().parse(text).extract<Poco::JSON::Object::Ptr>();
  } catch (const std::exception&) {
    return nullptr;
  }
}

std::string hostOf(const std::string& addr) { return addr.substr(0, addr.rfind(':')); }

// The node's desired role (its spec's "Role"): "manager" or "worker".
std::string desiredRole(const store::Object& node) {
  auto spec = parseObject(node.spec);
  return spec ? spec->optValue<std::string>("Role", std::string(store::nodeRoleName(node.role)))
              : std::string(store::nodeRoleName(node.role));
}

// A node's ManagerStatus, when it has one with a Raft id.
std::optional<ManagerEntry> managerEntry(const store::Object& node) {
  // Callers look through all nodes: skip the parse for the workers, which have none.
  if (node.status.find("\"ManagerStatus\"") == std::string::npos) return std::nullopt;
  auto status = parseObject(node.status);
  auto m = status ? status->getObject("ManagerStatus") : nullptr;
  if (!m) return std::nullopt;
  ManagerEntry e;
  e.nodeId = node.id;
  try {
    e.raftId = std::stoull(m->optValue<std::string>("RaftID", "0"));
  } catch (const std::exception&) {
    return std::nullopt;
  }
  e.addr = m->optValue<std::string>("Addr", "");
  e.raftAddr = m->optValue<std::string>("RaftAddr", "");
  e.reachability = m->optValue<std::string>("Reachability", "reachable");
  if (e.raftId == 0) return std::nullopt;
  return e;
}

std::vector<ManagerEntry> managerEntries(const store::ReadView& v) {
  std::vector<ManagerEntry> out;
  for (const auto& n : v.find(store::Query::all(store::Kind::kNode))) {
    if (auto e = managerEntry(*n)) out.push_back(std::move(*e));
  }
  return out;
}

Poco::JSON::Array managersToJson(const std::vector<ManagerEntry>& list) {
  Poco::JSON::Array arr;
  for (const auto& m : list) {
    Poco::JSON::Object o;
    o.set("node_id", m.nodeId);
    o.set("raft_id", std::to_string(m.raftId));
    o.set("addr", m.addr);
    o.set("raft_addr", m.raftAddr);
    arr.add(o);
  }
  return arr;
}

std::vector<ManagerEntry> managersFromJson(const Poco::JSON::Array::Ptr& arr) {
  std::vector<ManagerEntry> out;
  if (!arr) return out;
  for (std::size_t i = 0; i < arr->size(); ++i) {
    auto o = arr->getObject(static_cast<unsigned>(i));
    if (!o) continue;
    ManagerEntry m;
    m.nodeId = o->optValue<std::string>("node_id", "");
    m.raftId = std::strtoull(o->optValue<std::string>("raft_id", "0").c_str(), nullptr, 10);
    m.addr = o->optValue<std::string>("addr", "");
    m.raftAddr = o->optValue<std::string>("raft_addr", "");
    if (!m.nodeId.empty() && !m.addr.empty()) out.push_back(std::move(m));
  }
  return out;
}

// The ManagerStatus of a manager whose node API is at `host:port`, Raft at `host:raftPort`.
Poco::JSON::Object managerStatusJson(uint64_t raftId, const std::string& host, int port,
                                     int raftPort) {
  Poco::JSON::Object m;
  m.set("RaftID", std::to_string(raftId));
  m.set("Addr", host + ":" + std::to_string(port));
  m.set("RaftAddr", host + ":" + std::to_string(raftPort));
  m.set("Reachability", std::string("reachable"));
  return m;
}

// A Raft id no member has, or had: ids are never reused (random 64-bit, and never one that
// a node object names).
uint64_t newRaftId(Random& random, const store::ReadView& v) {
  std::set<uint64_t> taken;
  for (const auto& m : managerEntries(v)) taken.insert(m.raftId);
  uint64_t id = 0;
  do {
    id = random.next();
  } while (id == 0 || taken.count(id));
  return id;
}

// The cluster's root CA as the Cluster object records it, with a rotation in progress.
struct ClusterCa {
  std::string rootPem, rootDigest;
  std::string rootKeyPem;   // recorded once a rotation has finished; before, managers' own copy
  std::string crossSigned;  // the current (or new) root cross-signed by the one before it
  std::string nextPem, nextKeyPem, nextDigest;  // during a rotation
  bool rotating() const { return !nextPem.empty(); }
  // The roots a node trusts: the current one, and the new one during a rotation.
  std::string trust() const { return rootPem + nextPem; }
  // Who issues node certificates now, and the digest their issuer is known by.
  std::string issuer() const { return rotating() ? nextDigest : rootDigest; }
};

std::optional<ClusterCa> clusterCa(const store::ReadView& v, const std::string& clusterId) {
  auto cluster = v.get(store::Kind::kCluster, clusterId);
  auto status = cluster ? parseObject(cluster->status) : nullptr;
  auto root = status ? status->getObject("RootCA") : nullptr;
  if (!root) return std::nullopt;
  ClusterCa c;
  c.rootPem = root->optValue<std::string>("CACert", "");
  c.rootDigest = root->optValue<std::string>("Digest", "");
  c.rootKeyPem = root->optValue<std::string>("CAKey", "");
  c.crossSigned = root->optValue<std::string>("CrossSigned", "");
  if (auto next = status->getObject("RootRotation")) {
    c.nextPem = next->optValue<std::string>("CACert", "");
    c.nextKeyPem = next->optValue<std::string>("CAKey", "");
    c.nextDigest = next->optValue<std::string>("Digest", "");
    c.crossSigned = next->optValue<std::string>("CrossSigned", "");
  }
  if (c.rootPem.empty()) return std::nullopt;
  return c;
}

// A node certificate from whoever issues them now (ClusterCa::issuer), as the chain the node
// presents: the certificate, then the issuer cross-signed by the root before it, if any, so
// nodes that still trust only that root accept it. `managerKey`: this manager's copy of the
// root key, for a cluster that never rotated.
struct Issued {
  std::string chainPem, issuerDigest;
};
Result<Issued> issueCertificate(const ClusterCa& c, const std::string& managerKey,
                                const std::string& csr, const std::string& nodeId,
                                std::string_view role, const std::string& clusterId,
                                std::chrono::seconds validity) {
  const bool next = c.rotating();
  auto ca =
      ca::RootCa::load(next ? c.nextPem : c.rootPem,
                       next ? c.nextKeyPem : (c.rootKeyPem.empty() ? managerKey : c.rootKeyPem));
  if (!ca) return ca.status().withContext("the swarm's root CA");
  auto cert = ca->sign(csr, nodeId, role, clusterId, validity);
  if (!cert) return cert.status();
  return Issued{*cert + c.crossSigned, ca->digest()};
}

// The "message" of an API error reply, or the whole body.
std::string replyMessage(const std::string& body) {
  auto o = parseObject(body);
  return o ? o->optValue<std::string>("message", body) : body;
}

// Key material at rest: sealed with the key encryption key (the unlock key) when the swarm
// is autolocked, as it is otherwise. A sealed file starts with kSealedMagic.
constexpr std::string_view kSealedMagic = "SHOAL-SEALED-1\n";

std::string base64(std::string_view bytes) {
  std::ostringstream out;
  Poco::Base64Encoder enc(out, Poco::BASE64_NO_PADDING);
  enc.rdbuf()->setLineLength(0);
  enc.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  enc.close();
  return out.str();
}

Result<std::string> unbase64(std::string_view text) {
  try {
    std::istringstream in{std::string(text)};
    Poco::Base64Decoder dec(in, Poco::BASE64_NO_PADDING);
    std::string out((std::istreambuf_iterator<char>(dec)), std::istreambuf_iterator<char>());
    return out;
  } catch (const std::exception& e) {
    return Status::invalidArgument(std::string("not base64: ") + e.what());
  }
}

std::string protect(const std::string& kek, const std::string& name, const std::string& text) {
  if (kek.empty()) return text;
  auto sealed = aead::seal(kek, text, name);
  SHOAL_CHECK(sealed.isOk());  // the key is always kKeyBytes: parseUnlockKey checks
  return std::string(kSealedMagic) + base64(*sealed) + "\n";
}

bool isSealed(const std::string& stored) { return stored.starts_with(kSealedMagic); }

Result<std::string> unprotect(const std::string& kek, const std::string& name,
                              const std::string& stored, const std::string& path) {
  if (!isSealed(stored)) return stored;
  if (kek.empty()) return Status::failedPrecondition(kLocked);
  std::string body = stored.substr(kSealedMagic.size());
  while (!body.empty() && body.back() == '\n') body.pop_back();
  auto sealed = unbase64(body);
  if (!sealed) return Status::invalidArgument(path + " is corrupt: " + sealed.status().message());
  auto plain = aead::open(kek, *sealed, name);
  if (!plain) {
    return Status::permissionDenied("the unlock key is incorrect (it does not open " + path + ")");
  }
  return plain;
}

// The cluster's unlock key ("" when autolock is off).
std::string clusterUnlockKey(const store::ReadView& v, const std::string& clusterId) {
  auto cluster = v.get(store::Kind::kCluster, clusterId);
  auto spec = cluster ? parseObject(cluster->spec) : nullptr;
  auto enc = spec ? spec->getObject("EncryptionConfig") : nullptr;
  if (!enc || !enc->optValue<bool>("AutoLockManagers", false)) return "";
  auto status = parseObject(cluster->status);
  return status ? status->optValue<std::string>("UnlockKey", "") : "";
}

// "SWMKEY-1-<base64 of 32 bytes>", Swarm's form of an unlock key.
std::string formatUnlockKey(const std::string& kek) { return "SWMKEY-1-" + base64(kek); }

Result<std::string> parseUnlockKey(const std::string& text) {
  std::string t = text;
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  if (!t.starts_with("SWMKEY-1-")) {
    return Status::invalidArgument("invalid unlock key: it does not start with SWMKEY-1-");
  }
  std::string body = t.substr(9);
  while (!body.empty() && body.back() == '=') body.pop_back();
  auto key = unbase64(body);
  if (!key || key->size() != aead::kKeyBytes) {
    return Status::invalidArgument("invalid unlock key: not a key of this format");
  }
  return key;
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
  // Workers: the managers they report to (node API address and node id, the id their
  // certificates name), the one that answered last first.
  std::vector<ManagerEntry> managers;
  // Managers: whether this node's Raft started the cluster (its bootstrap membership is
  // itself) rather than joining one (it learns the membership from the leader).
  bool bootstrap = false;
  // caCertPem: the roots this node trusts (the swarm's root CA, and the next one during a
  // rotation); caKeyPem (managers) the key of the first; caDigest the first's digest.
  // nodeCertPem: this node's certificate and the intermediate it presents with it, if any;
  // certIssuer the digest of the CA that issued it.
  std::string caCertPem, caKeyPem, nodeCertPem, nodeKeyPem;
  std::string caDigest, certIssuer;
  // Managers: the key that seals the Raft log and snapshots (kernel/raft "Storage"), and the
  // key encryption key that seals the private keys and it at rest (autolock; empty: none).
  std::string dataKey;
  std::string kek;

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
    o.set("managers", managersToJson(managers));
    o.set("raft_bootstrap", bootstrap);
    o.set("cert_issuer", certIssuer);
    return stringify(o);
  }

  // Writes the key material into `certs` (a directory), private keys sealed with kek.
  Status saveCertificates(const std::string& certs) const {
    std::error_code ec;
    fs::create_directories(certs, ec);
    if (ec) return Status::internal("cannot create " + certs + ": " + ec.message());
    const auto secret = fs::perms::owner_read | fs::perms::owner_write;
    const auto open = secret | fs::perms::group_read | fs::perms::others_read;
    const std::string dek = dataKey.empty() ? "" : protect(kek, "raft-dek", base64(dataKey));
    const std::string caKey = caKeyPem.empty() ? "" : protect(kek, "swarm-root-ca.key", caKeyPem);
    const std::string nodeKey = protect(kek, "swarm-node.key", nodeKeyPem);
    for (auto [name, text, mode] :
         {std::tuple{"swarm-root-ca.crt", &caCertPem, open},
          std::tuple{"swarm-root-ca.key", &caKey, secret},
          std::tuple{"swarm-node.crt", &nodeCertPem, open},
          std::tuple{"swarm-node.key", &nodeKey, secret}, std::tuple{"raft-dek", &dek, secret}}) {
      if (text->empty()) continue;
      if (Status s = writeFile(certs + "/" + name, *text, mode); !s) return s;
    }
    return Status::ok();
  }

  Status save(const std::string& dir) const {
    std::error_code ec;
    fs::create_directories(dir, ec);
    fs::permissions(dir, fs::perms::owner_all, ec);
    if (Status s = saveCertificates(dir + "/certificates"); !s) return s;
    // Written last: its presence says the directory is complete.
    return writeFile(dir + "/state.json", stateJson(),
                     fs::perms::owner_read | fs::perms::owner_write);
  }

  // Seals the key material afresh (a new or no key encryption key): the whole certificates
  // directory is written beside the old one and swapped in, so a crash leaves one or the
  // other (load() finishes a swap that was cut short).
  Status reprotect(const std::string& dir) const {
    const std::string certs = dir + "/certificates";
    std::error_code ec;
    fs::remove_all(certs + ".new", ec);
    if (Status s = saveCertificates(certs + ".new"); !s) return s;
    fs::remove_all(certs + ".old", ec);
    fs::rename(certs, certs + ".old", ec);
    if (!ec) fs::rename(certs + ".new", certs, ec);
    if (ec) return Status::internal("cannot swap in " + certs + ".new: " + ec.message());
    fs::remove_all(certs + ".old", ec);
    return writeFile(dir + "/state.json", stateJson(),
                     fs::perms::owner_read | fs::perms::owner_write);
  }

  // Replaces the node key and certificate in `dir`: both are written beside the old ones,
  // then renamed key first; load() completes a replacement a crash interrupted.
  Status saveCertificate(const std::string& dir) const {
    const std::string certs = dir + "/certificates/";
    const auto secret = fs::perms::owner_read | fs::perms::owner_write;
    const auto open = secret | fs::perms::group_read | fs::perms::others_read;
    if (Status s = writeFile(certs + "swarm-node.key.new",
                             protect(kek, "swarm-node.key", nodeKeyPem), secret);
        !s) {
      return s;
    }
    if (Status s = writeFile(certs + "swarm-node.crt.new", nodeCertPem, open); !s) return s;
    std::error_code ec;
    fs::rename(certs + "swarm-node.key.new", certs + "swarm-node.key", ec);
    if (!ec) fs::rename(certs + "swarm-node.crt.new", certs + "swarm-node.crt", ec);
    if (ec) return Status::internal("cannot replace the node certificate: " + ec.message());
    return Status::ok();
  }

  // Whether the private keys in `dir` are sealed (the swarm is locked until unlocked).
  static bool lockedAtRest(const std::string& dir) {
    auto key = readFile(dir + "/certificates/swarm-node.key");
    return key && isSealed(*key);
  }

  static Result<Identity> load(const std::string& dir, const std::string& kek = "") {
    const std::string statePath = dir + "/state.json";
    {
      // A reprotect() that stopped between its renames.
      std::error_code ec;
      const std::string certs = dir + "/certificates";
      if (!fs::exists(certs, ec) && fs::exists(certs + ".new", ec)) {
        fs::rename(certs + ".new", certs, ec);
      }
      fs::remove_all(certs + ".new", ec);
      fs::remove_all(certs + ".old", ec);
    }
    {
      // A certificate replacement that stopped half-way: with the new key in place, the new
      // certificate belongs with it; with neither renamed, the old pair still stands.
      const std::string certs = dir + "/certificates/";
      std::error_code ec;
      if (fs::exists(certs + "swarm-node.key.new", ec)) {
        fs::remove(certs + "swarm-node.key.new", ec);
        fs::remove(certs + "swarm-node.crt.new", ec);
      } else if (fs::exists(certs + "swarm-node.crt.new", ec)) {
        fs::rename(certs + "swarm-node.crt.new", certs + "swarm-node.crt", ec);
      }
    }
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
      id.managers = managersFromJson(o->getArray("managers"));
      // Written before managers could join: one manager, the bootstrap one.
      if (o->has("manager_addr") && !o->getValue<std::string>("manager_addr").empty()) {
        ManagerEntry m;
        m.addr = o->getValue<std::string>("manager_addr");
        m.nodeId = o->optValue<std::string>("manager_node_id", "");
        id.managers.push_back(std::move(m));
      }
      id.bootstrap = o->optValue<bool>("raft_bootstrap", !o->has("managers"));
      id.certIssuer = o->optValue<std::string>("cert_issuer", "");
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
    if (isSealed(id.nodeKeyPem)) id.kek = kek;
    auto key = unprotect(id.kek, "swarm-node.key", id.nodeKeyPem, certs + "swarm-node.key");
    if (!key) return key.status();
    id.nodeKeyPem = std::move(*key);
    if (id.role == "manager") {
      auto r = readFile(certs + "swarm-root-ca.key");
      if (!r) return r.status();
      auto caKey = unprotect(id.kek, "swarm-root-ca.key", *r, certs + "swarm-root-ca.key");
      if (!caKey) return caKey.status();
      id.caKeyPem = std::move(*caKey);
      // Swarms made before the Raft data was sealed have no data key: they get one now (what
      // is already on disk stays readable).
      if (auto dek = readFile(certs + "raft-dek")) {
        auto text = unprotect(id.kek, "raft-dek", *dek, certs + "raft-dek");
        if (!text) return text.status();
        std::string b64 = *text;
        while (!b64.empty() && b64.back() == '\n') b64.pop_back();
        auto raw = unbase64(b64);
        if (!raw || raw->size() != aead::kKeyBytes) {
          return Status::invalidArgument(certs + "raft-dek is corrupt");
        }
        id.dataKey = std::move(*raw);
      } else {
        id.dataKey = aead::newKey();
        if (Status s =
                writeFile(certs + "raft-dek", protect(id.kek, "raft-dek", base64(id.dataKey)),
                          fs::perms::owner_read | fs::perms::owner_write);
            !s) {
          return s;
        }
      }
    }
    auto ca = ca::RootCa::load(id.caCertPem, id.caKeyPem);
    if (!ca) return ca.status().withContext(certs + "swarm-root-ca.crt");
    if (Status s = ca::verifyChain(id.caCertPem, id.nodeCertPem); !s) {
      return s.withContext(certs + "swarm-node.crt");
    }
    if (!ca::keyMatchesCertificate(id.nodeKeyPem, id.nodeCertPem)) {
      return Status::invalidArgument(certs + "swarm-node.key does not belong to swarm-node.crt");
    }
    auto info = ca::inspectCertificate(id.nodeCertPem);
    if (!info || info->nodeId != id.nodeId || info->clusterId != id.clusterId) {
      return Status::invalidArgument(certs + "swarm-node.crt is not this node's certificate");
    }
    id.caDigest = ca->digest();
    // Written before roots could rotate: the one root issued it.
    if (id.certIssuer.empty()) id.certIssuer = id.caDigest;
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
  nodeRouter_.add("POST", "/certificate",
                  [this](const api::Request& r) { return handleCertificate(r); });
  nodeRouter_.add("POST", "/raft/join",
                  [this](const api::Request& r) { return handleRaftJoin(r); });
  nodeRouter_.add("POST", "/dispatcher/assignments", [this](const api::Request& r) {
    return handleDispatcher(r, &Dispatcher::assignments);
  });
  nodeRouter_.add("POST", "/dispatcher/status", [this](const api::Request& r) {
    return handleDispatcher(r, &Dispatcher::status);
  });
  nodeRouter_.add("POST", "/dispatcher/logs",
                  [this](const api::Request& r) { return handleDispatcher(r, &Dispatcher::logs); });
}

void Swarm::setPluginLister(PluginLister lister) { plugins_ = std::move(lister); }

Swarm::~Swarm() {
  stop();
  if (keyMemfd_ >= 0) ::close(keyMemfd_);
}

void Swarm::stop() {
  std::thread role;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    role = std::move(roleThread_);
  }
  if (role.joinable()) role.join();
  std::unique_lock<std::mutex> lock(mu_);
  stopRunning(lock);
  stopping_ = false;
}

void Swarm::stopRunning(std::unique_lock<std::mutex>& lock) {
  auto agent = std::move(agent_);
  lock.unlock();
  // The agent first (its tasks keep running).
  if (agent) agent->stop();
  lock.lock();
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
  // The leader's parts, once the monitor that starts them has stopped, before the store goes.
  lock.lock();
  auto dispatcher = std::move(dispatcher_);
  auto orchestrator = std::move(orchestrator_);
  auto scheduler = std::move(schedulerHost_);
  auto allocator = std::move(allocator_);
  lock.unlock();
  if (orchestrator) orchestrator->stop();
  if (allocator) allocator->stop();
  if (scheduler) scheduler->stop();
  if (dispatcher) dispatcher->stop();
  {
    std::lock_guard<std::mutex> g(hbMu_);
    hbStop_ = false;
    lastSeen_.clear();
    managerSeen_.clear();
  }
  if (store) store->stop();
  if (transport) transport->stop();
  {
    std::lock_guard<std::mutex> g(peersMu_);
    raftPeers_.clear();
    raftNodes_.clear();
  }
  lock.lock();
}

Status Swarm::useNodeKey(const Identity& id, const std::string& dir) {
  if (keyMemfd_ >= 0) {
    ::close(keyMemfd_);
    keyMemfd_ = -1;
  }
  keyFile_ = dir + "/certificates/swarm-node.key";
  if (id.kek.empty()) return Status::ok();
  // Sealed at rest: the TLS code reads the plain key from a file that lives only in this
  // process's memory.
  const int fd = ::memfd_create("shoal-node-key", MFD_CLOEXEC);
  if (fd < 0) return Status::internal(std::string("memfd_create: ") + std::strerror(errno));
  const std::string& pem = id.nodeKeyPem;
  if (::write(fd, pem.data(), pem.size()) != static_cast<ssize_t>(pem.size())) {
    ::close(fd);
    return Status::internal("cannot write the node key to memory");
  }
  keyMemfd_ = fd;
  keyFile_ = "/proc/self/fd/" + std::to_string(fd);
  return Status::ok();
}

Swarm::Credentials Swarm::credentials() const {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string certs = dataRoot_ + "/swarm/certificates/";
  return Credentials{certs + "swarm-root-ca.crt", certs + "swarm-node.crt", keyFile_};
}

Status Swarm::startManager(const Identity& id, const std::string& dir, bool serveNodeApi,
                           bool bootstrap, const std::vector<ManagerEntry>& peers) {
  raft::RaftStorageOptions so;
  so.dataKey = id.dataKey;
  auto storage = raft::RaftStorage::open(dir + "/raft", so);
  if (!storage) return storage.status();
  raft::TcpTransport::Options to;
  to.self = id.raftId;
  to.listenAddress = id.raftAddr.empty() ? id.listenAddr : id.raftAddr;
  if (Status s = useNodeKey(id, dir); !s) return s;
  to.caFile = dir + "/certificates/swarm-root-ca.crt";
  to.certFile = dir + "/certificates/swarm-node.crt";
  to.keyFile = keyFile_;
  // Only managers of this cluster speak Raft, each as its own Raft id, and never a node
  // that was removed. A Raft id the store does not know yet (this manager lags) is let in
  // on the certificate alone; the leader is the one that hands out Raft ids.
  to.peerCheck = [this, cluster = id.clusterId](
                     raft::NodeId peer,
                     const raft::TcpTransport::Options::PeerSubject& subject) -> Status {
    if (subject.organization != cluster) {
      return Status::permissionDenied("the peer's certificate is for another swarm");
    }
    if (subject.organizationalUnit != ca::kManagerRole) {
      return Status::permissionDenied("the peer's certificate is not a manager's (" +
                                      subject.organizationalUnit + ")");
    }
    std::lock_guard<std::mutex> g(peersMu_);
    if (removedNodes_.count(subject.commonName)) {
      return Status::permissionDenied("node " + subject.commonName + " was removed from the swarm");
    }
    auto it = raftNodes_.find(peer);
    if (it != raftNodes_.end() && it->second != subject.commonName) {
      return Status::permissionDenied("Raft id " + std::to_string(peer) + " belongs to node " +
                                      it->second + ", not " + subject.commonName);
    }
    return Status::ok();
  };
  auto transport = std::make_unique<raft::TcpTransport>(to);
  for (const auto& p : peers) {
    if (p.raftId != id.raftId && p.raftId != 0 && !p.raftAddr.empty()) {
      transport->addPeer(p.raftId, p.raftAddr);
      std::lock_guard<std::mutex> g(peersMu_);
      raftPeers_[p.raftId] = p.raftAddr;
    }
  }
  ReplicatedStoreOptions o;
  o.raft.raft.id = id.raftId;
  if (bootstrap) o.raft.raft.voters = {id.raftId};
  auto store =
      std::make_unique<ReplicatedStore>(o, std::move(storage.value()), *transport, random_, clock_);
  if (Status s = store->start(); !s) return s;
  // The managers this node knows from its own committed state (a restart).
  syncPeers(*store, *transport, id);
  transport_ = std::move(transport);
  store_ = std::move(store);
  if (!serveNodeApi) return Status::ok();
  api::ApiServer::Options ao;
  ao.tlsAddress = id.listenAddr;
  ao.caFile = dir + "/certificates/swarm-root-ca.crt";
  ao.certFile = dir + "/certificates/swarm-node.crt";
  ao.keyFile = keyFile_;
  // Every node's agent keeps a connection or two open to the leader (a long poll, reports).
  ao.maxThreads = kNodeApiThreads;
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
  useNodeKey(id, dataRoot_ + "/swarm");
  hbThread_ = std::thread([this, dir = dataRoot_ + "/swarm"] { sendHeartbeats(dir); });
}

Status Swarm::resume() {
  const std::string dir = dataRoot_ + "/swarm";
  std::error_code ec;
  // Leftovers of an init that did not finish are not a swarm; a role change that stopped
  // between its two renames left the old identity in swarm.old.
  fs::remove_all(dataRoot_ + "/swarm.new", ec);
  if (!fs::exists(dir, ec) && fs::exists(dataRoot_ + "/swarm.old", ec)) {
    fs::rename(dataRoot_ + "/swarm.old", dir, ec);
  }
  fs::remove_all(dataRoot_ + "/swarm.old", ec);
  if (!fs::exists(dir, ec)) return Status::ok();
  if (Identity::lockedAtRest(dir)) {
    // Autolocked: nothing runs until `swarm unlock` brings the key.
    std::lock_guard<std::mutex> lock(mu_);
    locked_ = true;
    log::warn("swarm", "the swarm is locked: run \"shoal swarm unlock\" with its unlock key");
    return Status::ok();
  }
  auto id = Identity::load(dir);
  if (!id) return id.status().withContext("the swarm state in " + dir);
  std::lock_guard<std::mutex> lock(mu_);
  return startIdentity(std::move(*id), dir);
}

Status Swarm::startIdentity(Identity id, const std::string& dir) {
  if (id.role == "manager") {
    if (Status s = startManager(id, dir, true, id.bootstrap); !s) {
      return s.withContext("the swarm state in " + dir);
    }
  } else {
    startWorker(id);
  }
  setIdentity(std::move(id), false);
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
  Poco::JSON::Array plugins;
  if (plugins_) {
    for (const auto& [kind, name] : plugins_()) {
      Poco::JSON::Object p;
      p.set("Type", kind);
      p.set("Name", name);
      plugins.add(p);
    }
  }
  engine.set("Plugins", plugins);
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
        Poco::JSON::Object encryption;
        encryption.set("AutoLockManagers", !id.kek.empty());
        spec.set("EncryptionConfig", encryption);
        cluster.spec = stringify(spec);
        Poco::JSON::Object status, rootCa, tokens;
        rootCa.set("CACert", id.caCertPem);
        rootCa.set("Digest", id.caDigest);
        tokens.set("Worker", worker.toString());
        tokens.set("Manager", manager.toString());
        status.set("RootCA", rootCa);
        status.set("JoinTokens", tokens);
        if (!id.kek.empty()) status.set("UnlockKey", formatUnlockKey(id.kek));
        cluster.status = stringify(status);
        if (Status s = tx.create(std::move(cluster)); !s) return s;
        // Docker's routing-mesh network, made with the swarm; the allocator gives it its
        // subnet like any other.
        store::Object ingress;
        ingress.kind = store::Kind::kNetwork;
        ingress.id = newId(random_);
        ingress.name = "ingress";
        ingress.spec = ingressNetworkSpec();
        ingress.status = "{\"State\":\"pending\"}";
        if (Status s = tx.create(std::move(ingress)); !s) return s;

        store::Object node;
        node.kind = store::Kind::kNode;
        node.id = id.nodeId;
        node.role = store::NodeRole::kManager;
        node.availability = store::NodeAvailability::kActive;
        Poco::JSON::Object nodeSpec;
        nodeSpec.set("Role", std::string("manager"));
        nodeSpec.set("Availability", std::string("active"));
        node.spec = stringify(nodeSpec);
        Poco::JSON::Object nodeStatus;
        nodeStatus.set("State", std::string("ready"));
        nodeStatus.set("Addr", id.advertiseAddr.substr(0, id.advertiseAddr.rfind(':')));
        nodeStatus.set("CertIssuer", id.certIssuer);
        Poco::JSON::Parser parser;
        nodeStatus.set("Description", parser.parse(nodeDescriptionJson()));
        const auto advertise = parseAddr(id.advertiseAddr, 0, "advertise address");
        const auto raft = parseAddr(id.raftAddr, 0, "Raft address");
        if (!advertise || !raft) return Status::internal("bad addresses in the new identity");
        nodeStatus.set("ManagerStatus",
                       managerStatusJson(id.raftId, advertise->host, advertise->port, raft->port));
        node.status = stringify(nodeStatus);
        return tx.create(std::move(node));
      },
      10s);
}

Result<std::string> Swarm::init(const SwarmInitOptions& options) {
  std::unique_lock<std::mutex> lock(mu_);
  if (identity_ || locked_) {
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
  id.bootstrap = true;
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
  id.certIssuer = id.caDigest;
  id.nodeKeyPem = *key;
  id.nodeCertPem = *cert;
  id.dataKey = aead::newKey();
  if (options.autolock) id.kek = aead::newKey();

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
  if (Status s = startManager(id, staging, false, true); !s) return abandon(s);
  if (Status s = commitInitialState(id, options); !s) return abandon(s);
  stopRunning(lock);
  fs::rename(staging, dir, ec);
  if (ec) return abandon(Status::internal("cannot move " + staging + " to " + dir));
  if (Status s = startManager(id, dir, true, true); !s) return abandon(s);
  // Answer only once the manager leads again, so the next command finds it ready.
  for (auto until = std::chrono::steady_clock::now() + 5s;
       !store_->raft().isLeader() && std::chrono::steady_clock::now() < until;) {
    std::this_thread::sleep_for(5ms);
  }
  setIdentity(std::move(id), true);
  log::info("swarm", "swarm initialised",
            {{"node", identity_->nodeId},
             {"cluster", identity_->clusterId},
             {"advertise", identity_->advertiseAddr}});
  return identity_->nodeId;
}

Status Swarm::readView(ReplicatedStore& store, const store::Store::ViewFn& fn) {
  if (store.raft().isLeader()) {
    Status s = store.linearizableView(fn, 10s);
    if (s || s.code() != Status::Code::kUnavailable || store.raft().leader() == 0) return s;
  }
  for (auto until = std::chrono::steady_clock::now() + 3s;
       store.raft().leader() == 0 && std::chrono::steady_clock::now() < until;) {
    std::this_thread::sleep_for(10ms);
  }
  if (store.raft().leader() == 0) return Status::unavailable(kNoLeader);
  store.view(fn);
  return Status::ok();
}

void Swarm::setIdentity(Identity id, bool freshCertificate) {
  // Renew at a random point between 50% and 80% of the certificate's lifetime (Swarm's rule),
  // counted from now for one just issued, from its start for one read from disk.
  auto info = ca::inspectCertificate(id.nodeCertPem);
  if (info && info->notAfter > info->notBefore) {
    const auto lifetime = std::chrono::seconds(info->notAfter - info->notBefore);
    const auto base =
        freshCertificate ? clock_.now() : Clock::WallTime(std::chrono::seconds(info->notBefore));
    renewAt_ = base + std::chrono::duration_cast<std::chrono::seconds>(
                          lifetime * (0.5 + 0.3 * random_.real()));
  } else {
    renewAt_ = clock_.now();
  }
  identity_ = std::make_unique<Identity>(std::move(id));
  startAgent();
}

bool Swarm::rootChanged(ReplicatedStore& store, const Identity& self) const {
  std::optional<ClusterCa> cca;
  store.view([&](const store::ReadView& v) { cca = clusterCa(v, self.clusterId); });
  return cca && (cca->trust() != self.caCertPem || cca->issuer() != self.certIssuer);
}

bool Swarm::certificateDue() const {
  std::lock_guard<std::mutex> lock(mu_);
  return identity_ && clock_.now() >= renewAt_;
}

Status Swarm::unlock(const std::string& key) {
  auto kek = parseUnlockKey(key);
  if (!kek) return kek.status();
  std::lock_guard<std::mutex> lock(mu_);
  if (!locked_) return Status::failedPrecondition("swarm is not locked");
  const std::string dir = dataRoot_ + "/swarm";
  auto id = Identity::load(dir, *kek);
  if (!id) return id.status();
  if (Status s = startIdentity(std::move(*id), dir); !s) return s;
  locked_ = false;
  log::info("swarm", "swarm unlocked", {{"node", identity_->nodeId}});
  return Status::ok();
}

Result<std::string> Swarm::unlockKey(bool rotate) {
  if (Status s = requireManager(); !s) return s;
  std::lock_guard<std::mutex> lock(mu_);
  std::string key;
  if (rotate) {
    Status s = store_->update(
        [&](store::Tx& tx) {
          if (clusterUnlockKey(tx, identity_->clusterId).empty()) {
            return Status::failedPrecondition("no unlock key is set (autolock is off)");
          }
          auto cluster = tx.get(store::Kind::kCluster, identity_->clusterId);
          auto status = parseObject(cluster->status);
          if (!status) return Status::internal("the cluster object's status is unreadable");
          key = formatUnlockKey(aead::newKey());
          status->set("UnlockKey", key);
          store::Object next = *cluster;
          next.status = stringify(*status);
          return tx.update(std::move(next));
        },
        10s);
    if (!s) return s;
    log::info("swarm", "unlock key rotated");
    return key;
  }
  Status s = readView(
      *store_, [&](const store::ReadView& v) { key = clusterUnlockKey(v, identity_->clusterId); });
  if (!s) return s;
  if (key.empty()) return Status::failedPrecondition("no unlock key is set (autolock is off)");
  return key;
}

void Swarm::syncUnlockKey(ReplicatedStore& store) {
  std::string key;
  std::string clusterId;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!identity_) return;
    clusterId = identity_->clusterId;
  }
  bool known = false;
  store.view([&](const store::ReadView& v) {
    known = v.get(store::Kind::kCluster, clusterId) != nullptr;
    key = clusterUnlockKey(v, clusterId);
  });
  if (!known) return;  // not caught up yet
  std::string kek;
  if (!key.empty()) {
    auto parsed = parseUnlockKey(key);
    if (!parsed) return;
    kek = std::move(*parsed);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!identity_ || identity_->kek == kek) return;
  Identity next = *identity_;
  next.kek = kek;
  const std::string dir = dataRoot_ + "/swarm";
  if (Status s = next.reprotect(dir); !s) {
    log::warn("swarm", "cannot reseal the keys", {{"error", s.message()}});
    return;
  }
  identity_->kek = kek;
  useNodeKey(*identity_, dir);
  // The TLS code keeps reading the key it was started with (an in-memory copy or the file,
  // which holds the same key in either form) until the next restart of the manager.
  log::info("swarm", kek.empty() ? "keys at rest no longer sealed (autolock off)"
                                 : "keys at rest sealed with the swarm's unlock key");
}

Status Swarm::requireManager() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (locked_) return Status::failedPrecondition(kLocked);
  if (identity_ && identity_->role == "manager" && !store_) {
    // Between stopping and starting again with a renewed certificate.
    return Status::unavailable(
        "this manager is restarting with its renewed certificate; try again in a moment");
  }
  if (!identity_ || !store_) return Status::unavailable(kNotManager);
  return Status::ok();
}

SwarmStatus Swarm::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  SwarmStatus s;
  if (locked_) {
    s.state = "locked";
    return s;
  }
  if (!identity_) return s;
  s.state = "active";
  s.nodeId = identity_->nodeId;
  s.clusterId = identity_->clusterId;
  s.role = identity_->role;
  s.caDigest = identity_->caDigest;
  s.advertiseAddr = identity_->advertiseAddr;
  s.raftId = identity_->raftId;
  for (const auto& m : identity_->managers) s.managerAddrs.push_back(m.addr);
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
    ca::JoinToken fresh{"", ca::newTokenSecret(random_)};
    Status s = store_->update(
        [&](store::Tx& tx) {
          auto cluster = tx.get(store::Kind::kCluster, identity_->clusterId);
          if (!cluster) return Status::notFound("the cluster object is missing");
          auto cca = clusterCa(tx, identity_->clusterId);
          fresh.caDigest = cca ? cca->rootDigest : identity_->caDigest;
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
  Status s = readView(*store_, [&](const store::ReadView& v) {
    auto cluster = v.get(store::Kind::kCluster, identity_->clusterId);
    if (!cluster) return;
    auto status = Poco::JSON::Parser().parse(cluster->status).extract<Poco::JSON::Object::Ptr>();
    token = status->getObject("JoinTokens")->optValue<std::string>(key, "");
  });
  if (!s) return s;
  if (token.empty()) return Status::internal("the cluster object has no " + role + " join token");
  return token;
}

Result<std::vector<NodeSummary>> Swarm::nodes() {
  if (Status s = requireManager(); !s) return s;
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<NodeSummary> out;
  Status s = readView(*store_, [&](const store::ReadView& v) {
    const uint64_t leader = store_->raft().leader();  // known: readView checked
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
          row.managerStatus =
              raftId == leader ? "Leader"
              : m->optValue<std::string>("Reachability", "reachable") == "unreachable"
                  ? "Unreachable"
                  : "Reachable";
        }
      } catch (const std::exception&) {
        row.status = "unknown";
      }
      out.push_back(std::move(row));
    }
  });
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
  Status s = readView(*store_, [&](const store::ReadView& v) {
    auto id = resolveNode(v, ref);
    if (!id) {
      out = id.status();
      return;
    }
    if (auto n = v.get(store::Kind::kNode, *id)) out = store::toJson(*n);
  });
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
        if (role && std::string(store::nodeRoleName(*role)) != desiredRole(next)) {
          if (*role == store::NodeRole::kWorker) {
            // The managers that stay, and how many of them the leader can reach.
            std::size_t staying = 0, reachable = 0;
            for (const auto& n : tx.find(store::Query::all(store::Kind::kNode))) {
              if (n->id == next.id || desiredRole(*n) != "manager") continue;
              ++staying;
              auto e = managerEntry(*n);
              if (e && e->reachability != "unreachable") ++reachable;
            }
            if (staying == 0) {
              return Status::failedPrecondition(
                  "attempting to demote the last manager of the swarm");
            }
            if (reachable <= staying / 2) {
              return Status::failedPrecondition(
                  "demoting node " + ref + " would leave " + std::to_string(reachable) +
                  " reachable manager(s) of " + std::to_string(staying) +
                  ": the swarm would lose its quorum");
            }
          }
          spec->set("Role", std::string(store::nodeRoleName(*role)));
        }
        next.spec = stringify(*spec);
        return tx.update(std::move(next));
      },
      10s);
}

Status Swarm::leave(bool force) {
  std::unique_lock<std::mutex> lock(mu_);
  if (locked_) {
    // Nothing runs; the sealed state can only be thrown away (Docker's rule too).
    if (!force) {
      return Status::failedPrecondition(
          "Swarm is locked: unlock it first (shoal swarm unlock), or use `--force` to leave "
          "and erase this node's swarm state.");
    }
    std::error_code ec;
    fs::remove_all(dataRoot_ + "/swarm", ec);
    if (ec) return Status::internal("cannot remove " + dataRoot_ + "/swarm: " + ec.message());
    locked_ = false;
    log::info("swarm", "left the swarm (it was locked)");
    return Status::ok();
  }
  if (!identity_) return Status::failedPrecondition("This node is not part of a swarm");
  if (identity_->role == "manager" && store_) {
    std::size_t managers = 0;
    store_->view([&](const store::ReadView& v) {
      for (const auto& n : v.find(store::Query::all(store::Kind::kNode))) {
        if (managerEntry(*n)) ++managers;
      }
    });
    if (!force) {
      if (managers <= 1) {
        return Status::failedPrecondition(
            "You are attempting to leave the swarm on a node that is participating as a "
            "manager. Removing the last manager erases all current state of the swarm. Use "
            "`--force` to ignore this message.");
      }
      return Status::failedPrecondition(
          "You are attempting to leave the swarm on a node that is participating as a manager. "
          "Removing this node leaves " +
          std::to_string(managers - 1) + " managers out of " + std::to_string(managers) +
          ". The recommended way is to demote it first (shoal node demote). Use `--force` to "
          "ignore this message.");
    }
    if (managers > 1) {
      // Forced: leave Raft the way a demotion does (the leader, if this is it, hands over
      // first), so the managers that stay keep their quorum; then go.
      const uint64_t raftId = identity_->raftId;
      lock.unlock();
      NodeUpdate demote;
      demote.role = "worker";
      if (Status s = updateNode("self", demote); !s) {
        log::warn("swarm", "leaving without leaving Raft first", {{"error", s.message()}});
      } else {
        const auto until = std::chrono::steady_clock::now() + 15s;
        for (;;) {
          {
            std::lock_guard<std::mutex> g(mu_);
            if (!store_) break;
            const auto voters = store_->raft().voters();
            if (!std::count(voters.begin(), voters.end(), raftId)) break;
          }
          if (std::chrono::steady_clock::now() > until) break;
          std::this_thread::sleep_for(50ms);
        }
      }
      lock.lock();
    }
  }
  stopping_ = true;
  std::thread role = std::move(roleThread_);
  // Stays while the tasks go: stopRunning takes the agent, and here that is below; the
  // daemon's Swarm::stop() runs only after the API server has joined its handler threads,
  // this call's among them.
  agent::Agent* agent = agent_.get();
  lock.unlock();
  if (role.joinable()) role.join();
  // As Docker's: the node's tasks stop and go with it (the managers place them elsewhere).
  if (agent) agent->removeAllTasks();
  lock.lock();
  stopping_ = false;
  if (!identity_) return Status::ok();
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

Result<std::string> Swarm::update(const SwarmUpdate& u) {
  if (u.certExpiry && *u.certExpiry < 1h) {
    return Status::invalidArgument("--cert-expiry must be at least 1 hour");
  }
  if (u.heartbeatPeriod && *u.heartbeatPeriod < 1s) {
    return Status::invalidArgument("--dispatcher-heartbeat must be at least 1 second");
  }
  if (u.overlayKeyRotation && *u.overlayKeyRotation < 10s) {
    return Status::invalidArgument("--overlay-key-rotation must be at least 10 seconds");
  }
  if (u.taskHistoryLimit && *u.taskHistoryLimit < 0) {
    return Status::invalidArgument("--task-history-limit must not be negative");
  }
  if (Status s = requireManager(); !s) return s;
  std::lock_guard<std::mutex> lock(mu_);
  std::string unlockKey;
  Status s = store_->update(
      [&](store::Tx& tx) {
        auto cluster = tx.get(store::Kind::kCluster, identity_->clusterId);
        if (!cluster) return Status::notFound("the cluster object is missing");
        auto spec = parseObject(cluster->spec);
        if (!spec) return Status::internal("the cluster object's spec is unreadable");
        auto section = [&](const char* name) {
          Poco::JSON::Object::Ptr o = spec->getObject(name);
          if (!o) {
            o = new Poco::JSON::Object;
            spec->set(name, o);
          }
          return o;
        };
        if (u.certExpiry) {
          section("CAConfig")->set("NodeCertExpiry", static_cast<int64_t>(u.certExpiry->count()));
        }
        if (u.heartbeatPeriod) {
          section("Dispatcher")
              ->set("HeartbeatPeriod", static_cast<int64_t>(u.heartbeatPeriod->count()));
        }
        if (u.taskHistoryLimit) {
          section("Orchestration")->set("TaskHistoryRetentionLimit", *u.taskHistoryLimit);
        }
        if (u.overlayKeyRotation) {
          section("EncryptionConfig")
              ->set("OverlayKeyRotation", static_cast<int64_t>(u.overlayKeyRotation->count()));
        }
        store::Object next = *cluster;
        if (u.autolock) {
          auto status = parseObject(cluster->status);
          if (!status) return Status::internal("the cluster object's status is unreadable");
          const bool was = !clusterUnlockKey(tx, identity_->clusterId).empty();
          section("EncryptionConfig")->set("AutoLockManagers", *u.autolock);
          if (*u.autolock && !was) {
            unlockKey = formatUnlockKey(aead::newKey());
            status->set("UnlockKey", unlockKey);
          } else if (!*u.autolock) {
            status->remove("UnlockKey");
          }
          next.status = stringify(*status);
        }
        next.spec = stringify(*spec);
        return tx.update(std::move(next));
      },
      10s);
  if (!s) return s;
  return unlockKey;
}

// ---- the node API (managers) and heartbeats ---------------------------------------------

namespace {

// The cluster's Dispatcher.HeartbeatPeriod (5 s when unset or unreadable, at least 1 s).
std::chrono::seconds heartbeatPeriodOf(const store::Object* cluster) {
  int64_t seconds = 5;
  if (cluster) {
    try {
      auto spec = Poco::JSON::Parser().parse(cluster->spec).extract<Poco::JSON::Object::Ptr>();
      if (auto d = spec->getObject("Dispatcher")) {
        seconds = d->optValue<int64_t>("HeartbeatPeriod", 5);
      }
    } catch (const std::exception&) {
    }
  }
  return std::chrono::seconds(std::max<int64_t>(seconds, 1));
}

}  // namespace

std::chrono::seconds Swarm::heartbeatPeriod() {
  std::lock_guard<std::mutex> lock(mu_);
  auto period = heartbeatPeriodOf(nullptr);
  if (store_ && identity_) {
    store_->view([&](const store::ReadView& v) {
      period = heartbeatPeriodOf(v.get(store::Kind::kCluster, identity_->clusterId).get());
    });
  }
  return period;
}

api::Response Swarm::handleCa(const api::Request&) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!identity_) return api::Response::error(Status::unavailable(kNotManager));
  Poco::JSON::Object out;
  out.set("ca_cert", ca::firstCertificate(identity_->caCertPem));
  out.set("node_id", identity_->nodeId);
  return api::Response::json(stringify(out));
}

api::Response Swarm::handleJoin(const api::Request& r) {
  std::string tokenText, csr, advertise;
  int listenPort = kDefaultPort, raftPort = kDefaultPort + 1;
  Poco::JSON::Object::Ptr description;
  try {
    auto body = Poco::JSON::Parser().parse(r.body).extract<Poco::JSON::Object::Ptr>();
    if (!body) throw Poco::Exception("not a JSON object");
    tokenText = body->getValue<std::string>("token");
    csr = body->getValue<std::string>("csr");
    advertise = body->optValue<std::string>("advertise_addr", "");
    listenPort = body->optValue<int>("listen_port", kDefaultPort);
    raftPort = body->optValue<int>("raft_port", listenPort + 1);
    description = body->getObject("description");
  } catch (const std::exception& e) {
    return api::Response::error(400, std::string("bad join request: ") + e.what());
  }
  if (listenPort < 1 || listenPort > 65535 || raftPort < 1 || raftPort > 65535) {
    return api::Response::error(400,
                                "bad join request: listen_port and raft_port must be "
                                "from 1 to 65535");
  }
  auto token = ca::parseJoinToken(tokenText);
  if (!token) return api::Response::error(token.status());

  std::unique_lock<std::mutex> lock(mu_);
  if (!identity_ || !store_) return api::Response::error(Status::unavailable(kNotManager));
  ReplicatedStore* store = store_.get();
  const Identity id = *identity_;
  lock.unlock();

  std::string role;
  int64_t expiry = 90LL * 24 * 3600;
  std::optional<ClusterCa> cca;
  Status read = readView(*store, [&](const store::ReadView& v) {
    auto cluster = v.get(store::Kind::kCluster, id.clusterId);
    if (!cluster) return;
    cca = clusterCa(v, id.clusterId);
    auto status = Poco::JSON::Parser().parse(cluster->status).extract<Poco::JSON::Object::Ptr>();
    auto tokens = status->getObject("JoinTokens");
    if (tokens->optValue<std::string>("Worker", "") == tokenText) role = "worker";
    if (tokens->optValue<std::string>("Manager", "") == tokenText) role = "manager";
    auto spec = Poco::JSON::Parser().parse(cluster->spec).extract<Poco::JSON::Object::Ptr>();
    if (auto c = spec->getObject("CAConfig")) {
      expiry = c->optValue<int64_t>("NodeCertExpiry", expiry);
    }
  });
  if (!read) return api::Response::error(read);
  if (!cca) return api::Response::error(Status::internal("the cluster object has no root CA"));
  if (token->caDigest != cca->rootDigest) {
    return api::Response::error(Status::permissionDenied(
        "the join token is for another swarm (its CA digest does not match this swarm's)"));
  }
  if (role.empty()) {
    return api::Response::error(Status::permissionDenied(
        "A valid join token is necessary to join this cluster (the token is wrong, or was "
        "rotated out)"));
  }
  const std::string nodeId = newId(random_);
  const bool manager = role == "manager";
  auto cert =
      issueCertificate(*cca, id.caKeyPem, csr, nodeId, manager ? ca::kManagerRole : ca::kWorkerRole,
                       id.clusterId, std::chrono::seconds(expiry));
  if (!cert) return api::Response::error(cert.status());

  std::string addr = advertise;
  if (addr.empty()) addr = hostOf(r.peerAddress);
  uint64_t raftId = 0;
  std::vector<ManagerEntry> managers;
  Status created = store->update(
      [&](store::Tx& tx) {
        store::Object node;
        node.kind = store::Kind::kNode;
        node.id = nodeId;
        node.role = manager ? store::NodeRole::kManager : store::NodeRole::kWorker;
        node.availability = store::NodeAvailability::kActive;
        Poco::JSON::Object spec;
        spec.set("Role", role);
        spec.set("Availability", std::string("active"));
        node.spec = stringify(spec);
        Poco::JSON::Object status;
        status.set("State", std::string("ready"));
        status.set("Addr", addr);
        status.set("CertIssuer", cert->issuerDigest);
        if (description) status.set("Description", description);
        if (manager) {
          raftId = newRaftId(random_, tx);
          status.set("ManagerStatus", managerStatusJson(raftId, addr, listenPort, raftPort));
        }
        node.status = stringify(status);
        managers = managerEntries(tx);
        return tx.create(std::move(node));
      },
      10s);
  if (!created) return api::Response::error(created);
  {
    std::lock_guard<std::mutex> g(hbMu_);
    (manager ? managerSeen_ : lastSeen_)[nodeId] = std::chrono::steady_clock::now();
  }
  log::info("swarm", "node joined", {{"node", nodeId}, {"role", role}, {"addr", addr}});
  Poco::JSON::Object out;
  out.set("node_id", nodeId);
  out.set("cluster_id", id.clusterId);
  out.set("role", role);
  out.set("certificate", cert->chainPem);
  out.set("issuer", cert->issuerDigest);
  out.set("trust", cca->trust());
  out.set("manager_node_id", id.nodeId);
  out.set("addr", addr);
  out.set("managers", managersToJson(managers));
  out.set("heartbeat_period", static_cast<int64_t>(heartbeatPeriod().count()));
  if (manager) {
    out.set("ca_key", cca->rootKeyPem.empty() ? id.caKeyPem : cca->rootKeyPem);
    out.set("raft_id", std::to_string(raftId));
    std::string unlock;
    store->view([&](const store::ReadView& v) { unlock = clusterUnlockKey(v, id.clusterId); });
    if (!unlock.empty()) out.set("unlock_key", unlock);
  }
  return api::Response::json(stringify(out));
}

namespace {

constexpr int kMisdirected = 421;  // "not the leader": the body names it

// Edits a node's status with `edit` (which says whether it changed anything) and commits it
// if it did.
Status editNodeStatus(ReplicatedStore& store, const std::string& nodeId,
                      const std::function<bool(Poco::JSON::Object&)>& edit) {
  return store.update(
      [&](store::Tx& tx) {
        auto node = tx.get(store::Kind::kNode, nodeId);
        if (!node) return Status::notFound("node " + nodeId + " not found");
        Poco::JSON::Object::Ptr status = parseObject(node->status);
        if (!status) status = new Poco::JSON::Object;
        if (!edit(*status)) return Status::ok();
        store::Object next = *node;
        next.status = stringify(*status);
        return tx.update(std::move(next));
      },
      10s);
}

// Sets a node's State ("ready" / "down"), if it differs.
Status setNodeState(ReplicatedStore& store, const std::string& nodeId, const std::string& state) {
  return editNodeStatus(store, nodeId, [&](Poco::JSON::Object& status) {
    if (status.optValue<std::string>("State", "") == state) return false;
    status.set("State", state);
    return true;
  });
}

// The node API target of a manager, verified as that manager, with this node's certificate.
NodeApiTarget managerTarget(const Swarm::Credentials& creds, const ManagerEntry& m) {
  NodeApiTarget t;
  t.address = m.addr;
  t.caFile = creds.caFile;
  t.serverNodeId = m.nodeId;
  t.certFile = creds.certFile;
  t.keyFile = creds.keyFile;
  t.timeout = 5s;
  return t;
}

// Sends a request to the leader: tries the managers in order, following a "not the leader"
// answer to the manager it names. Returns the first answer that is not such a redirect.
Result<NodeApiReply> callLeader(const Swarm::Credentials& creds,
                                const std::vector<ManagerEntry>& managers, const std::string& path,
                                const std::string& body, ManagerEntry* answered = nullptr) {
  Status last = Status::unavailable("no manager to ask");
  // A manager that is not one right now (503: restarting on a new certificate, say) is passed
  // over while others remain; its answer is the result only when nobody else gives one.
  std::optional<std::pair<NodeApiReply, ManagerEntry>> notManager;
  for (const auto& first : managers) {
    ManagerEntry target = first;
    for (int hop = 0; hop < 3; ++hop) {
      auto reply = nodeApiRequest(managerTarget(creds, target), "POST", path, body);
      if (!reply) {
        last = reply.status();
        break;
      }
      if (reply->status == 503 && replyMessage(reply->body) == kNotManager) {
        if (!notManager) notManager.emplace(*reply, target);
        break;
      }
      if (reply->status != kMisdirected) {
        if (answered) *answered = target;
        return reply;
      }
      auto o = parseObject(reply->body);
      last = Status::unavailable(replyMessage(reply->body));
      if (!o || !o->has("leader_addr")) break;
      target.addr = o->getValue<std::string>("leader_addr");
      target.nodeId = o->getValue<std::string>("leader_node_id");
    }
  }
  if (notManager) {
    if (answered) *answered = notManager->second;
    return notManager->first;
  }
  return last;
}

// A reply's Status: ok for 200, else the error it carries.
Status replyStatus(const NodeApiReply& reply) {
  if (reply.status == 200) return Status::ok();
  return Status(api::statusCodeForHttp(reply.status), replyMessage(reply.body));
}

}  // namespace

api::Response Swarm::redirectToLeader(ReplicatedStore& store) {
  const uint64_t leader = store.raft().leader();
  std::optional<ManagerEntry> found;
  store.view([&](const store::ReadView& v) {
    for (auto& m : managerEntries(v)) {
      if (m.raftId == leader) found = m;
    }
  });
  if (leader == 0 || !found) return api::Response::error(Status::unavailable(kNoLeader));
  Poco::JSON::Object out;
  out.set("message", "this manager is not the leader; the leader is node " + found->nodeId +
                         " at " + found->addr);
  out.set("leader_addr", found->addr);
  out.set("leader_node_id", found->nodeId);
  return api::Response::json(stringify(out), kMisdirected);
}

std::optional<api::Response> Swarm::admitLeaderCall(const api::Request& r, const std::string& what,
                                                    bool managersOnly, LeaderCall& call) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!identity_ || !store_ || !transport_) {
    return api::Response::error(Status::unavailable(kNotManager));
  }
  if (r.peerNodeId.empty() || r.peerCluster != identity_->clusterId ||
      (managersOnly && r.peerRole != ca::kManagerRole)) {
    return api::Response::error(Status::permissionDenied(
        what + " needs this swarm's " + (managersOnly ? "manager" : "node") + " certificate"));
  }
  call.store = store_.get();
  call.transport = transport_.get();
  call.clusterId = identity_->clusterId;
  call.caCertPem = identity_->caCertPem;
  call.caKeyPem = identity_->caKeyPem;
  lock.unlock();
  if (!call.store->raft().isLeader()) return redirectToLeader(*call.store);
  return std::nullopt;
}

api::Response Swarm::handleHeartbeat(const api::Request& r) {
  // The leader keeps the heartbeats: a follower sends the node there.
  LeaderCall call;
  if (auto refused = admitLeaderCall(r, "a heartbeat", false, call)) return *refused;
  ReplicatedStore* store = call.store;
  // Every node sends one each period (200/s at 1,000 nodes): what comes from the cluster
  // object is read once per version of it, the node's state in place, and the managers from
  // the role index rather than a look through every node.
  bool member = false;
  std::string state, role;
  std::vector<ManagerEntry> managers;
  HeartbeatCluster cluster;
  store->view([&](const store::ReadView& v) {
    auto node = v.get(store::Kind::kNode, r.peerNodeId);
    if (!node) return;
    member = true;
    role = desiredRole(*node);
    state = agent::wire::stringMember(node->status, "State");
    for (const auto& n : v.nodesByRole(store::NodeRole::kManager)) {
      if (auto m = managerEntry(*n)) managers.push_back(std::move(*m));
    }
    auto object = v.get(store::Kind::kCluster, call.clusterId);
    const uint64_t version = object ? object->version : 0;
    std::lock_guard<std::mutex> g(hbMu_);
    if (!hbCluster_ || hbCluster_->version != version || hbCluster_->id != call.clusterId) {
      HeartbeatCluster fresh;
      fresh.id = call.clusterId;
      fresh.version = version;
      fresh.period = heartbeatPeriodOf(object.get());
      if (auto cca = clusterCa(v, call.clusterId)) {
        fresh.trust = cca->trust();
        fresh.issuer = cca->issuer();
      }
      hbCluster_ = std::move(fresh);
    }
    cluster = *hbCluster_;
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
  out.set("period_seconds", static_cast<int64_t>(cluster.period.count()));
  out.set("role", role);
  out.set("managers", managersToJson(managers));
  if (cluster.issuer) {
    // What the node should trust and whose certificate it should hold (a root rotation).
    out.set("trust", *cluster.trust);
    out.set("issuer", *cluster.issuer);
  }
  return api::Response::json(stringify(out));
}

api::Response Swarm::handleCertificate(const api::Request& r) {
  std::string csr;
  int listenPort = kDefaultPort, raftPort = kDefaultPort + 1;
  try {
    auto body = Poco::JSON::Parser().parse(r.body).extract<Poco::JSON::Object::Ptr>();
    if (!body) throw Poco::Exception("not a JSON object");
    csr = body->getValue<std::string>("csr");
    listenPort = body->optValue<int>("listen_port", kDefaultPort);
    raftPort = body->optValue<int>("raft_port", listenPort + 1);
  } catch (const std::exception& e) {
    return api::Response::error(400, std::string("bad certificate request: ") + e.what());
  }
  // Raft ids and role changes are decided in one place: the leader.
  LeaderCall call;
  if (auto refused = admitLeaderCall(r, "a certificate", false, call)) return *refused;
  ReplicatedStore* store = call.store;

  std::string role, nodeAddr, trust, rootKey;
  int64_t expiry = 90LL * 24 * 3600;
  uint64_t raftId = 0;
  Issued cert;
  std::vector<ManagerEntry> managers;
  const std::vector<raft::NodeId> voters = store->raft().voters();
  Status s = store->update(
      [&](store::Tx& tx) {
        auto node = tx.get(store::Kind::kNode, r.peerNodeId);
        if (!node) {
          return Status::permissionDenied("node " + r.peerNodeId +
                                          " is not a member of this swarm (was it removed?)");
        }
        if (auto cluster = tx.get(store::Kind::kCluster, call.clusterId)) {
          auto spec = parseObject(cluster->spec);
          auto c = spec ? spec->getObject("CAConfig") : nullptr;
          if (c) expiry = c->optValue<int64_t>("NodeCertExpiry", expiry);
        }
        auto cca = clusterCa(tx, call.clusterId);
        if (!cca) return Status::internal("the cluster object has no root CA");
        role = desiredRole(*node);
        auto status = parseObject(node->status);
        if (!status) return Status::internal("node " + node->id + " has no readable status");
        nodeAddr = status->optValue<std::string>("Addr", "");
        auto current = managerEntry(*node);
        managers = managerEntries(tx);
        if (role == "worker" && current &&
            std::count(voters.begin(), voters.end(), current->raftId)) {
          return Status::unavailable("node " + node->id +
                                     " is still a Raft member; retry once it is removed");
        }
        if (role == "manager" && current) raftId = current->raftId;
        if (role == "manager" && !current) {
          raftId = newRaftId(random_, tx);
          status->set("ManagerStatus", managerStatusJson(raftId, nodeAddr, listenPort, raftPort));
        }
        auto issued = issueCertificate(*cca, call.caKeyPem, csr, r.peerNodeId,
                                       role == "manager" ? ca::kManagerRole : ca::kWorkerRole,
                                       call.clusterId, std::chrono::seconds(expiry));
        if (!issued) return issued.status();
        cert = std::move(*issued);
        trust = cca->trust();
        rootKey = cca->rootKeyPem.empty() ? call.caKeyPem : cca->rootKeyPem;
        status->set("CertIssuer", cert.issuerDigest);
        store::Object next = *node;
        next.status = stringify(*status);
        return tx.update(std::move(next));
      },
      10s);
  if (!s) return api::Response::error(s);
  const bool manager = role == "manager";
  log::info("swarm", "node certificate issued",
            {{"node", r.peerNodeId}, {"role", role}, {"issuer", cert.issuerDigest}});
  Poco::JSON::Object out;
  out.set("role", role);
  out.set("certificate", cert.chainPem);
  out.set("issuer", cert.issuerDigest);
  out.set("trust", trust);
  out.set("addr", nodeAddr);
  managers.erase(std::remove_if(managers.begin(), managers.end(),
                                [&](const ManagerEntry& m) { return m.nodeId == r.peerNodeId; }),
                 managers.end());
  out.set("managers", managersToJson(managers));
  if (manager) {
    out.set("ca_key", rootKey);
    out.set("raft_id", std::to_string(raftId));
    std::string unlock;
    store->view([&](const store::ReadView& v) { unlock = clusterUnlockKey(v, call.clusterId); });
    if (!unlock.empty()) out.set("unlock_key", unlock);
  }
  return api::Response::json(stringify(out));
}

api::Response Swarm::handleRaftJoin(const api::Request& r) {
  LeaderCall call;
  if (auto refused = admitLeaderCall(r, "joining Raft", true, call)) return *refused;
  ReplicatedStore* store = call.store;
  raft::TcpTransport* transport = call.transport;
  std::optional<ManagerEntry> entry;
  store->view([&](const store::ReadView& v) {
    if (auto node = v.get(store::Kind::kNode, r.peerNodeId)) entry = managerEntry(*node);
  });
  if (!entry) {
    return api::Response::error(Status::failedPrecondition(
        "node " + r.peerNodeId + " has no Raft id: it is not a manager of this swarm"));
  }
  {
    std::lock_guard<std::mutex> g(peersMu_);
    raftPeers_[entry->raftId] = entry->raftAddr;
    raftNodes_[entry->raftId] = entry->nodeId;
  }
  transport->addPeer(entry->raftId, entry->raftAddr);
  // A learner first (it catches up without counting towards the quorum), then a voter. One
  // change at a time: retry while another is in flight.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  for (auto type : {raft::ConfChange::Type::kAddLearner, raft::ConfChange::Type::kAddVoter}) {
    for (;;) {
      const auto voters = store->raft().voters();
      if (std::count(voters.begin(), voters.end(), entry->raftId)) break;
      raft::ConfChange cc;
      cc.type = type;
      cc.node = entry->raftId;
      Status s = store->raft().changeMembership(cc, 10s);
      if (s || s.code() == Status::Code::kAlreadyExists) break;
      if (s.code() != Status::Code::kUnavailable || std::chrono::steady_clock::now() > deadline) {
        return api::Response::error(s.withContext("adding node " + r.peerNodeId + " to Raft"));
      }
      std::this_thread::sleep_for(50ms);
    }
  }
  Status s = store->update(
      [&](store::Tx& tx) {
        auto node = tx.get(store::Kind::kNode, r.peerNodeId);
        if (!node || node->role == store::NodeRole::kManager) return Status::ok();
        store::Object next = *node;
        next.role = store::NodeRole::kManager;
        return tx.update(std::move(next));
      },
      10s);
  if (!s) return api::Response::error(s);
  {
    std::lock_guard<std::mutex> g(hbMu_);
    managerSeen_[r.peerNodeId] = std::chrono::steady_clock::now();
  }
  log::info("swarm", "manager joined Raft",
            {{"node", r.peerNodeId}, {"raft_id", std::to_string(entry->raftId)}});
  return api::Response::json("{}");
}

bool Swarm::syncPeers(ReplicatedStore& store, raft::TcpTransport& transport, const Identity& self) {
  std::vector<ManagerEntry> managers;
  std::set<std::string> removed;
  bool demoted = false;
  store.view([&](const store::ReadView& v) {
    managers = managerEntries(v);
    if (auto cluster = v.get(store::Kind::kCluster, self.clusterId)) {
      auto status = parseObject(cluster->status);
      auto list = status ? status->getArray("RemovedNodes") : nullptr;
      for (std::size_t i = 0; list && i < list->size(); ++i) {
        removed.insert(list->getElement<std::string>(static_cast<unsigned>(i)));
      }
    }
    auto me = v.get(store::Kind::kNode, self.nodeId);
    demoted = me && desiredRole(*me) == "worker";
  });
  // A store that names no manager has not caught up yet (a manager that just joined): the
  // peers it was given at join stay as they are.
  if (managers.empty()) return demoted;
  std::map<uint64_t, std::string> want, nodes;
  for (const auto& m : managers) {
    nodes[m.raftId] = m.nodeId;
    if (m.raftId != self.raftId && !m.raftAddr.empty()) want[m.raftId] = m.raftAddr;
  }
  std::map<uint64_t, std::string> have;
  {
    std::lock_guard<std::mutex> g(peersMu_);
    have = raftPeers_;
    // A peer the store no longer lists but the transport still has stays until it is gone
    // from Raft too (a joining manager is added to the transport before the store says so).
    const auto voters = store.raft().voters();
    for (const auto& [id, addr] : have) {
      if (!want.count(id) && std::count(voters.begin(), voters.end(), id)) want[id] = addr;
    }
    raftPeers_ = want;
    raftNodes_ = std::move(nodes);
    removedNodes_ = std::move(removed);
  }
  for (const auto& [id, addr] : want) {
    auto it = have.find(id);
    if (it == have.end() || it->second != addr) transport.addPeer(id, addr);
  }
  for (const auto& [id, addr] : have) {
    if (!want.count(id)) transport.removePeer(id);
  }
  return demoted;
}

void Swarm::finishRootRotation(ReplicatedStore& store, const std::string& clusterId) {
  std::optional<ClusterCa> cca;
  std::size_t pending = 0;
  store.view([&](const store::ReadView& v) {
    cca = clusterCa(v, clusterId);
    if (!cca || !cca->rotating()) return;
    for (const auto& n : v.find(store::Query::all(store::Kind::kNode))) {
      auto st = parseObject(n->status);
      if (!st || st->optValue<std::string>("State", "") == "down") continue;
      if (st->optValue<std::string>("CertIssuer", "") != cca->nextDigest) ++pending;
    }
  });
  if (!cca || !cca->rotating() || pending > 0) return;
  // Every node that is up holds a certificate from the new root: it becomes the root, and the
  // join tokens name it (their secrets stay).
  Status s = store.update(
      [&](store::Tx& tx) {
        auto cluster = tx.get(store::Kind::kCluster, clusterId);
        auto status = cluster ? parseObject(cluster->status) : nullptr;
        if (!status || !status->getObject("RootRotation")) return Status::ok();
        Poco::JSON::Object::Ptr root = new Poco::JSON::Object;
        root->set("CACert", cca->nextPem);
        root->set("CAKey", cca->nextKeyPem);
        root->set("Digest", cca->nextDigest);
        root->set("CrossSigned", cca->crossSigned);
        status->set("RootCA", root);
        status->remove("RootRotation");
        if (auto tokens = status->getObject("JoinTokens")) {
          for (const char* kind : {"Worker", "Manager"}) {
            auto token = ca::parseJoinToken(tokens->optValue<std::string>(kind, ""));
            if (!token) continue;
            tokens->set(kind, ca::JoinToken{cca->nextDigest, token->secret}.toString());
          }
        }
        store::Object next = *cluster;
        next.status = stringify(*status);
        return tx.update(std::move(next));
      },
      10s);
  if (s) log::info("swarm", "root CA rotation finished", {{"digest", cca->nextDigest}});
}

Result<std::string> Swarm::rotateRootCa() {
  if (Status s = requireManager(); !s) return s;
  std::lock_guard<std::mutex> lock(mu_);
  auto next = ca::RootCa::create();
  if (!next) return next.status();
  Status s = store_->update(
      [&](store::Tx& tx) {
        auto cca = clusterCa(tx, identity_->clusterId);
        if (!cca) return Status::internal("the cluster object has no root CA");
        if (cca->rotating()) {
          return Status::failedPrecondition("a root CA rotation is already in progress");
        }
        auto current = ca::RootCa::load(
            cca->rootPem, cca->rootKeyPem.empty() ? identity_->caKeyPem : cca->rootKeyPem);
        if (!current) return current.status().withContext("the current root CA");
        auto cross = current->crossSign(*next);
        if (!cross) return cross.status();
        auto cluster = tx.get(store::Kind::kCluster, identity_->clusterId);
        auto status = parseObject(cluster->status);
        if (!status) return Status::internal("the cluster object's status is unreadable");
        Poco::JSON::Object::Ptr rotation = new Poco::JSON::Object;
        rotation->set("CACert", next->certPem());
        rotation->set("CAKey", next->keyPem());
        rotation->set("Digest", next->digest());
        rotation->set("CrossSigned", *cross);
        status->set("RootRotation", rotation);
        store::Object updated = *cluster;
        updated.status = stringify(*status);
        return tx.update(std::move(updated));
      },
      10s);
  if (!s) return s;
  log::info("swarm", "root CA rotation started", {{"digest", next->digest()}});
  return next->digest();
}

Result<RootCaStatus> Swarm::rootCaStatus() {
  if (Status s = requireManager(); !s) return s;
  std::lock_guard<std::mutex> lock(mu_);
  RootCaStatus out;
  Status s = readView(*store_, [&](const store::ReadView& v) {
    auto cca = clusterCa(v, identity_->clusterId);
    if (!cca) return;
    out.certPem = cca->rootPem;
    out.digest = cca->rootDigest;
    out.rotating = cca->rotating();
    out.nextDigest = cca->nextDigest;
    for (const auto& n : v.find(store::Query::all(store::Kind::kNode))) {
      auto st = parseObject(n->status);
      if (!st || st->optValue<std::string>("State", "") == "down") continue;
      ++out.nodes;
      if (st->optValue<std::string>("CertIssuer", "") == cca->issuer()) ++out.reissued;
    }
  });
  if (!s) return s;
  if (out.certPem.empty()) return Status::internal("the cluster object has no root CA");
  return out;
}

void Swarm::leaderRound(ReplicatedStore& store, const Identity& self,
                        std::chrono::steady_clock::time_point started) {
  finishRootRotation(store, self.clusterId);
  const auto period = heartbeatPeriod();
  const auto limit = 3 * period;
  const auto now = std::chrono::steady_clock::now();
  struct Change {
    std::string nodeId, state, reachability;
  };
  std::vector<Change> changes;
  std::vector<ManagerEntry> demote;  // still voters: take out of Raft
  std::vector<std::string> demoted;  // out of Raft: make workers in the store
  const auto voters = store.raft().voters();
  auto isVoter = [&](uint64_t id) { return std::count(voters.begin(), voters.end(), id) > 0; };
  const auto heard = store.raft().lastHeard();
  store.view([&](const store::ReadView& v) {
    std::lock_guard<std::mutex> g(hbMu_);
    for (const auto& n : v.find(store::Query::all(store::Kind::kNode))) {
      auto st = parseObject(n->status);
      const std::string state = st ? st->optValue<std::string>("State", "") : "";
      auto m = managerEntry(*n);
      if (m && desiredRole(*n) == "worker") {
        if (isVoter(m->raftId)) {
          demote.push_back(*m);
        } else {
          demoted.push_back(n->id);
          continue;
        }
      }
      if (m) {
        // A manager is as alive as its Raft connection from the leader.
        std::string reach = "reachable";
        std::string next = "ready";
        if (n->id != self.nodeId) {
          if (auto h = heard.find(m->raftId); h != heard.end()) {
            managerSeen_[n->id] = std::max(managerSeen_[n->id], h->second);
          }
          auto it = managerSeen_.find(n->id);
          const auto seen = it == managerSeen_.end() ? started : std::max(it->second, started);
          // Followers answer the leader's heartbeats every Raft tick (100 ms).
          if (now - seen > 2s) reach = "unreachable";
          if (now - seen > limit) next = "down";
        }
        if (reach != m->reachability || next != state) changes.push_back({n->id, next, reach});
        continue;
      }
      if (n->role != store::NodeRole::kWorker) continue;
      auto it = lastSeen_.find(n->id);
      const auto seen = it == lastSeen_.end() ? started : std::max(it->second, started);
      if (now - seen > limit && state == "ready") changes.push_back({n->id, "down", ""});
    }
  });
  for (const auto& c : changes) {
    Status s = editNodeStatus(store, c.nodeId, [&](Poco::JSON::Object& status) {
      status.set("State", c.state);
      if (auto m = status.getObject("ManagerStatus"); m && !c.reachability.empty()) {
        m->set("Reachability", c.reachability);
      }
      return true;
    });
    if (s) {
      log::info("swarm", "node state changed",
                {{"node", c.nodeId}, {"state", c.state}, {"reachability", c.reachability}});
    }
  }
  for (const auto& m : demote) {
    if (m.raftId == self.raftId) {
      // The leader being demoted hands leadership to a reachable manager that stays; the new
      // leader then takes it out of Raft.
      for (uint64_t other : voters) {
        auto h = heard.find(other);
        if (other != self.raftId && h != heard.end() && now - h->second < 2s) {
          store.raft().transferLeadership(other, 5s);
          break;
        }
      }
      return;
    }
    raft::ConfChange cc;
    cc.type = raft::ConfChange::Type::kRemoveVoter;
    cc.node = m.raftId;
    if (Status s = store.raft().changeMembership(cc, 10s); !s) {
      log::debug("swarm", "demotion waits", {{"node", m.nodeId}, {"error", s.message()}});
    } else {
      log::info("swarm", "manager left Raft (demoted)", {{"node", m.nodeId}});
    }
  }
  for (const auto& id : demoted) {
    store.update(
        [&](store::Tx& tx) {
          auto node = tx.get(store::Kind::kNode, id);
          if (!node) return Status::ok();
          auto status = parseObject(node->status);
          store::Object next = *node;
          next.role = store::NodeRole::kWorker;
          if (status) {
            status->remove("ManagerStatus");
            next.status = stringify(*status);
          }
          return tx.update(std::move(next));
        },
        10s);
    std::lock_guard<std::mutex> g(hbMu_);
    lastSeen_[id] = now;  // a grace period to come back as a worker
  }
}

void Swarm::monitorHeartbeats() {
  // Every manager keeps its Raft peers in step with the store; the leader also marks nodes
  // down and managers unreachable, and carries out demotions. Every node gets a full grace
  // period from the moment this manager starts watching.
  const auto started = std::chrono::steady_clock::now();
  bool wasLeader = false;
  auto since = started;
  for (;;) {
    {
      std::unique_lock<std::mutex> g(hbMu_);
      if (hbCv_.wait_for(g, 250ms, [this] { return hbStop_; })) return;
    }
    ReplicatedStore* store = nullptr;
    raft::TcpTransport* transport = nullptr;
    std::unique_ptr<Identity> self;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!store_ || !identity_ || !transport_) continue;
      store = store_.get();
      transport = transport_.get();
      self = std::make_unique<Identity>(*identity_);
    }
    // Demoted: this manager asks for a worker certificate, which the leader gives once it has
    // taken it out of Raft. Renewal goes the same way.
    if (syncPeers(*store, *transport, *self) || certificateDue() || rootChanged(*store, *self)) {
      requestRoleChange();
    }
    syncUnlockKey(*store);
    const bool leader = store->raft().isLeader();
    if (leader && !wasLeader) since = std::chrono::steady_clock::now();
    wasLeader = leader;
    syncLeaderServices(*store, leader);
    if (leader) leaderRound(*store, *self, since);
  }
}

void Swarm::sendHeartbeats(std::string dir) {
  std::chrono::seconds period{5};
  std::size_t next = 0;  // which manager to try
  for (;;) {
    std::vector<ManagerEntry> managers;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (identity_) managers = identity_->managers;
    }
    if (!managers.empty()) {
      std::rotate(managers.begin(), managers.begin() + (next % managers.size()), managers.end());
      ManagerEntry answered;
      auto reply = callLeader(credentials(), managers, "/heartbeat", "", &answered);
      if (!reply) {
        log::warn("swarm", "heartbeat failed", {{"error", reply.status().message()}});
        ++next;
      } else if (reply->status != 200) {
        log::warn("swarm", "heartbeat refused",
                  {{"status", std::to_string(reply->status)}, {"reply", reply->body}});
        ++next;
      } else if (auto o = parseObject(reply->body)) {
        next = 0;
        period =
            std::chrono::seconds(std::max<int64_t>(1, o->optValue<int64_t>("period_seconds", 5)));
        // The leader first, then the other managers it names: who to ask next time.
        std::vector<ManagerEntry> known{answered};
        for (auto& m : managersFromJson(o->getArray("managers"))) {
          if (m.nodeId != answered.nodeId) known.push_back(std::move(m));
        }
        {
          std::lock_guard<std::mutex> lock(mu_);
          if (identity_ && identity_->role == "worker") {
            bool changed = known.size() != identity_->managers.size();
            for (std::size_t i = 0; !changed && i < known.size(); ++i) {
              changed = known[i].nodeId != identity_->managers[i].nodeId ||
                        known[i].addr != identity_->managers[i].addr;
            }
            if (changed) {
              identity_->managers = known;
              if (Status s = identity_->save(dir); !s) {
                log::warn("swarm", "cannot record the managers", {{"error", s.message()}});
              }
            }
          }
        }
        if (o->optValue<std::string>("role", "worker") == "manager") requestRoleChange();
        // A root rotation: a new certificate (and the roots to trust) from the leader.
        bool reissue = false;
        if (o->has("issuer")) {
          std::lock_guard<std::mutex> lock(mu_);
          reissue = identity_ && (identity_->certIssuer != o->getValue<std::string>("issuer") ||
                                  identity_->caCertPem != o->optValue<std::string>("trust", ""));
        }
        if (reissue) requestRoleChange();
      }
      if (certificateDue()) requestRoleChange();
    }
    std::unique_lock<std::mutex> g(hbMu_);
    if (hbCv_.wait_for(g, period, [this] { return hbStop_; })) return;
  }
}

// ---- role changes (promotion, demotion) ---------------------------------------------------

void Swarm::requestRoleChange() {
  std::lock_guard<std::mutex> lock(mu_);
  if (roleBusy_ || stopping_ || !identity_) return;
  roleBusy_ = true;
  // A finished thread (roleBusy_ was false): it only has to exit.
  if (roleThread_.joinable()) roleThread_.join();
  roleThread_ = std::thread([this] {
    changeRole();
    std::lock_guard<std::mutex> g(mu_);
    roleBusy_ = false;
  });
}

void Swarm::changeRole() {
  std::lock_guard<std::mutex> roleLock(roleMu_);
  const std::string dir = dataRoot_ + "/swarm";
  std::unique_lock<std::mutex> lock(mu_);
  if (!identity_ || stopping_) return;
  const Identity cur = *identity_;
  std::vector<ManagerEntry> ask = cur.managers;
  if (cur.role == "manager" && store_) {
    // The other managers (one of them leads, or knows who does), then this one (a sole
    // manager renews its own certificate through its own node API).
    std::optional<ManagerEntry> self;
    store_->view([&](const store::ReadView& v) {
      for (auto& m : managerEntries(v)) {
        if (m.nodeId == cur.nodeId) {
          self = m;
        } else {
          ask.push_back(std::move(m));
        }
      }
    });
    if (self) ask.push_back(*self);
  }
  lock.unlock();
  auto listen = parseAddr(cur.listenAddr.empty() ? "0.0.0.0:2377" : cur.listenAddr, kDefaultPort,
                          "listen address");
  if (!listen) {
    log::warn("swarm", "cannot change role", {{"error", listen.status().message()}});
    return;
  }
  auto key = ca::generateKeyPem();
  auto csr = key ? ca::makeCsrPem(*key) : Result<std::string>(key.status());
  if (!csr) return;
  Poco::JSON::Object req;
  req.set("csr", *csr);
  req.set("listen_port", listen->port);
  req.set("raft_port", listen->port + 1);
  auto reply = callLeader(credentials(), ask, "/certificate", stringify(req));
  Status s = reply ? replyStatus(*reply) : reply.status();
  if (!s) {
    log::debug("swarm", "role change waits", {{"error", s.message()}});
    return;
  }
  auto o = parseObject(reply->body);
  if (!o) return;
  const std::string role = o->optValue<std::string>("role", cur.role);
  Identity next = cur;
  next.role = role;
  next.nodeCertPem = o->optValue<std::string>("certificate", "");
  next.nodeKeyPem = *key;
  // The roots to trust and the issuer come with it: new ones during a root rotation.
  next.caCertPem = o->optValue<std::string>("trust", cur.caCertPem);
  next.certIssuer = o->optValue<std::string>("issuer", cur.certIssuer);
  if (role == "manager" && o->has("ca_key")) next.caKeyPem = o->getValue<std::string>("ca_key");
  auto info = ca::inspectCertificate(next.nodeCertPem);
  const auto want = role == "manager" ? ca::kManagerRole : ca::kWorkerRole;
  auto root = ca::RootCa::load(next.caCertPem, role == "manager" ? next.caKeyPem : "");
  if (!info || !root || info->nodeId != cur.nodeId || info->role != want ||
      !ca::verifyChain(next.caCertPem, next.nodeCertPem) ||
      !ca::verifyChain(cur.caCertPem, next.nodeCertPem)) {  // anchored in what it trusted
    log::warn("swarm", "the leader sent a certificate that is not this node's; role unchanged");
    return;
  }
  next.caDigest = root->digest();
  if (role == cur.role) {
    // A renewal: the new key and certificate replace the old ones in place (with the trusted
    // roots, when they changed, the whole certificates directory).
    const bool rootsChanged = next.caCertPem != cur.caCertPem || next.caKeyPem != cur.caKeyPem;
    if (Status w = rootsChanged ? next.reprotect(dir) : next.saveCertificate(dir); !w) {
      log::warn("swarm", "cannot store the renewed certificate", {{"error", w.message()}});
      return;
    }
    lock.lock();
    if (stopping_ || !identity_ || identity_->nodeId != cur.nodeId) return;
    if (role == "manager") {
      // The Raft transport and the node API load their certificate when they start.
      stopRunning(lock);
      setIdentity(next, true);
      if (Status st = startManager(next, dir, true, next.bootstrap); !st) {
        log::error("swarm", "cannot restart the manager with its renewed certificate",
                   {{"error", st.message()}});
      }
    } else {
      setIdentity(next, true);
    }
    log::info("swarm", "node certificate renewed",
              {{"node", next.nodeId}, {"expires", std::to_string(info->notAfter)}});
    return;
  }
  const std::vector<ManagerEntry> managers = managersFromJson(o->getArray("managers"));
  if (role == "manager") {
    next.raftId = std::strtoull(o->optValue<std::string>("raft_id", "0").c_str(), nullptr, 10);
    next.bootstrap = false;
    next.dataKey = aead::newKey();
    next.kek.clear();
    if (o->has("unlock_key")) {
      auto kek = parseUnlockKey(o->getValue<std::string>("unlock_key"));
      if (!kek) {
        log::warn("swarm", "the leader's unlock key is malformed; role unchanged");
        return;
      }
      next.kek = std::move(*kek);
    }
    next.listenAddr = listen->toString();
    next.raftAddr = HostPort{listen->host, listen->port + 1}.toString();
    next.advertiseAddr = o->optValue<std::string>("addr", "") + ":" + std::to_string(listen->port);
    next.managers.clear();
    if (next.raftId == 0 || next.caKeyPem.empty()) {
      log::warn("swarm", "the leader's promotion reply is incomplete; role unchanged");
      return;
    }
  } else {
    next.caKeyPem.clear();
    next.dataKey.clear();
    next.kek.clear();
    next.raftId = 0;
    next.raftAddr.clear();
    next.bootstrap = false;
    next.managers = managers;
  }
  // The new identity is written beside the old one, then swapped in.
  const std::string staging = dataRoot_ + "/swarm.new";
  const std::string old = dataRoot_ + "/swarm.old";
  std::error_code ec;
  fs::remove_all(staging, ec);
  if (Status w = next.save(staging); !w) {
    log::warn("swarm", "cannot change role", {{"error", w.message()}});
    fs::remove_all(staging, ec);
    return;
  }
  lock.lock();
  if (stopping_ || !identity_ || identity_->nodeId != cur.nodeId) return;
  stopRunning(lock);
  fs::remove_all(old, ec);
  fs::rename(dir, old, ec);
  if (!ec) fs::rename(staging, dir, ec);
  if (ec) {
    log::error("swarm", "cannot swap in the new identity", {{"error", ec.message()}});
    fs::rename(old, dir, ec);
    return;
  }
  fs::remove_all(old, ec);
  setIdentity(next, true);
  log::info("swarm", role == "manager" ? "promoted to manager" : "demoted to worker",
            {{"node", next.nodeId}});
  if (role == "worker") {
    startWorker(next);
    return;
  }
  if (Status st = startManager(next, dir, true, false, managers); !st) {
    log::error("swarm", "cannot start the manager after promotion", {{"error", st.message()}});
    return;
  }
  lock.unlock();
  if (Status j = joinRaft(next, managers); !j) {
    log::error("swarm", "promoted, but not added to Raft yet", {{"error", j.message()}});
  }
}

Status Swarm::joinRaft(const Identity& id, const std::vector<ManagerEntry>& managers) {
  const std::string dir = dataRoot_ + "/swarm";
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  Status last = Status::unavailable("no manager to ask");
  while (std::chrono::steady_clock::now() < deadline) {
    auto reply = callLeader(credentials(), managers, "/raft/join", "{}");
    last = reply ? replyStatus(*reply) : reply.status();
    if (last) break;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return Status::cancelled("the daemon is stopping");
    }
    std::this_thread::sleep_for(500ms);
  }
  if (!last) return last;
  // Answer once this member has applied its own promotion (it then counts in the quorum).
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!store_) return Status::cancelled("the manager stopped");
      const auto voters = store_->raft().voters();
      if (std::count(voters.begin(), voters.end(), id.raftId)) return Status::ok();
    }
    std::this_thread::sleep_for(20ms);
  }
  return Status::timeout("added to Raft, but this manager has not caught up within 30 s");
}

Status Swarm::removeNode(const std::string& ref, bool force) {
  if (Status s = requireManager(); !s) return s;
  std::lock_guard<std::mutex> lock(mu_);
  std::string removed;
  Status s = store_->update(
      [&](store::Tx& tx) {
        auto id = resolveNode(tx, ref);
        if (!id) return id.status();
        auto node = tx.get(store::Kind::kNode, *id);
        if (!node) return Status::notFound("node " + ref + " not found");
        if (node->role == store::NodeRole::kManager || managerEntry(*node) ||
            desiredRole(*node) == "manager") {
          return Status::failedPrecondition(
              "node " + *id +
              " is a cluster manager and is a member of the raft cluster. It must be demoted to "
              "worker before removal");
        }
        auto st = parseObject(node->status);
        if (!force && (!st || st->optValue<std::string>("State", "") != "down")) {
          return Status::failedPrecondition("node " + *id +
                                            " is not down and can't be removed (use --force)");
        }
        auto cluster = tx.get(store::Kind::kCluster, identity_->clusterId);
        if (!cluster) return Status::notFound("the cluster object is missing");
        auto status = parseObject(cluster->status);
        if (!status) return Status::internal("the cluster object's status is unreadable");
        Poco::JSON::Array::Ptr list = status->getArray("RemovedNodes");
        if (!list) list = new Poco::JSON::Array;
        list->add(*id);
        status->set("RemovedNodes", list);
        store::Object next = *cluster;
        next.status = stringify(*status);
        if (Status u = tx.update(std::move(next)); !u) return u;
        removed = *id;
        return tx.remove(store::Kind::kNode, *id);
      },
      10s);
  if (!s) return s;
  std::lock_guard<std::mutex> g(hbMu_);
  lastSeen_.erase(removed);
  log::info("swarm", "node removed", {{"node", removed}});
  return Status::ok();
}

// ---- join (the joining node) -----------------------------------------------------------------

Result<std::string> Swarm::join(const SwarmJoinOptions& options) {
  std::unique_lock<std::mutex> lock(mu_);
  if (identity_ || locked_) {
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
  auto listen = parseAddr(options.listenAddr, kDefaultPort, "listen address");
  if (!listen) return listen.status();
  int raftPort = listen->port + 1;
  if (listen->port == 0) {
    auto port = freePort(listen->host);
    auto other = port ? freePort(listen->host) : port;
    if (!other) return other.status();
    listen->port = *port;
    raftPort = *other;
  } else if (listen->port == 65535) {
    return Status::invalidArgument("invalid listen address \"" + options.listenAddr +
                                   "\": Raft needs the next port too");
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
  id.managers.push_back(ManagerEntry{managerNodeId, 0, remote->toString(), "", ""});
  id.listenAddr = listen->toString();
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
  req.set("listen_port", listen->port);
  req.set("raft_port", raftPort);
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
  std::vector<ManagerEntry> managers;
  std::string seenAddr;
  try {
    auto o = Poco::JSON::Parser().parse(joined->body).extract<Poco::JSON::Object::Ptr>();
    id.nodeId = o->getValue<std::string>("node_id");
    id.clusterId = o->getValue<std::string>("cluster_id");
    id.nodeCertPem = o->getValue<std::string>("certificate");
    id.role = o->getValue<std::string>("role");
    seenAddr = o->optValue<std::string>("addr", "");
    managers = managersFromJson(o->getArray("managers"));
    // The roots to trust: the one the token named, and the next during a root rotation.
    id.caCertPem = o->optValue<std::string>("trust", caPem);
    id.certIssuer = o->optValue<std::string>("issuer", ca->digest());
    if (id.role == "manager") {
      id.caKeyPem = o->getValue<std::string>("ca_key");
      id.raftId = std::stoull(o->getValue<std::string>("raft_id"));
      id.dataKey = aead::newKey();
      if (o->has("unlock_key")) {
        auto kek = parseUnlockKey(o->getValue<std::string>("unlock_key"));
        if (!kek) throw Poco::Exception(kek.status().message());
        id.kek = std::move(*kek);
      }
    }
  } catch (const std::exception& e) {
    return abandon(
        Status::unavailable(std::string("the manager's join reply is unreadable: ") + e.what()));
  }
  const bool manager = id.role == "manager";
  auto info = ca::inspectCertificate(id.nodeCertPem);
  if (!info || info->nodeId != id.nodeId ||
      info->role != (manager ? ca::kManagerRole : ca::kWorkerRole) ||
      !ca::verifyChain(caPem, id.nodeCertPem) || ca::firstCertificate(id.caCertPem) != caPem ||
      (manager && !ca::RootCa::load(id.caCertPem, id.caKeyPem))) {
    return abandon(Status::permissionDenied(
        "the manager returned a certificate that is not this node's " + id.role + " certificate"));
  }
  id.advertiseAddr = options.advertiseAddr;
  if (manager) {
    const std::string host =
        options.advertiseAddr.empty() ? seenAddr : hostOf(options.advertiseAddr);
    id.advertiseAddr = host + ":" + std::to_string(listen->port);
    id.raftAddr = HostPort{listen->host, raftPort}.toString();
    id.managers.clear();
  } else if (!managers.empty()) {
    id.managers = managers;
  }
  if (Status s = id.save(staging); !s) return abandon(s);
  fs::rename(staging, dir, ec);
  if (ec) return abandon(Status::internal("cannot move " + staging + " to " + dir));
  if (!manager) {
    startWorker(id);
    setIdentity(std::move(id), true);
    log::info("swarm", "joined the swarm as a worker",
              {{"node", identity_->nodeId}, {"manager", remote->toString()}});
    return identity_->nodeId;
  }
  auto undo = [&](const Status& s) {
    if (!lock.owns_lock()) lock.lock();
    stopRunning(lock);
    identity_.reset();
    fs::remove_all(dir, ec);
    return s;
  };
  if (Status s = startManager(id, dir, true, false, managers); !s) return undo(s);
  setIdentity(id, true);
  lock.unlock();
  if (Status s = joinRaft(id, managers); !s) return undo(s.withContext("joining Raft"));
  log::info("swarm", "joined the swarm as a manager",
            {{"node", id.nodeId}, {"raft_id", std::to_string(id.raftId)}});
  return id.nodeId;
}

void Swarm::setPlugins(plugin::PluginHost* host, const std::string& runtimeName) {
  pluginHost_ = host;
  if (!host) return;
  plugin::PluginInstance* runtime = nullptr;
  if (!runtimeName.empty()) {
    runtime = host->find(plugin::Kind::kRuntime, runtimeName);
    if (!runtime) {
      log::error("swarm", "the configured runtime plugin is not loaded; this node runs no tasks",
                 {{"runtime", runtimeName}});
    }
  } else {
    runtime = host->find(plugin::Kind::kRuntime, "runtime-runc");
    auto all = host->ofKind(plugin::Kind::kRuntime);
    if (!runtime && !all.empty()) runtime = all.front();
  }
  if (runtime) runtime_ = std::make_unique<agent::PluginRuntime>(*runtime);
  auto networks = host->ofKind(plugin::Kind::kNetwork);
  if (!networks.empty()) network_ = std::make_unique<agent::PluginNetwork>(*networks.front());
  auto schedulers = host->ofKind(plugin::Kind::kScheduler);
  scheduler_ = schedulers.empty() ? nullptr : schedulers.front();
  // Named placement policies are policy objects of this manager's store.
  host->setPolicySource([this](const std::string& name) -> Result<std::string> {
    // Asked from inside a scheduling pass (the usual case): its store, and no lock, since a
    // preview runs under mu_ already.
    if (ReplicatedStore* store = SchedulerHost::currentStore()) return policySource(*store, name);
    Result<std::string> source = Status::unavailable(kNotManager);
    Status s = withStore([&](ReplicatedStore& store, const std::string&) {
      source = policySource(store, name);
      return Status::ok();
    });
    if (!s) return s;
    return source;
  });
}

void Swarm::onPluginEvent(const plugin::PluginEvent& event) {
  if (runtime_) runtime_->onEvent(event);
  if (network_) network_->onEvent(event);
}

Status Swarm::withStore(const std::function<Status(ReplicatedStore&, const std::string&)>& fn) {
  if (Status s = requireManager(); !s) return s;
  std::lock_guard<std::mutex> lock(mu_);
  if (!store_ || !identity_) return Status::unavailable(kNotManager);
  return fn(*store_, identity_->nodeId);
}

std::map<std::string, std::string> Swarm::agentTasks() {
  std::lock_guard<std::mutex> lock(mu_);
  return agent_ ? agent_->tasks() : std::map<std::string, std::string>{};
}

std::vector<ManagerEntry> Swarm::agentManagers() {
  std::lock_guard<std::mutex> lock(mu_);
  if (store_) {
    std::vector<ManagerEntry> out;
    store_->view([&](const store::ReadView& v) { out = managerEntries(v); });
    if (!out.empty()) return out;
  }
  return identity_ ? identity_->managers : std::vector<ManagerEntry>{};
}

void Swarm::startAgent() {
  if (!runtime_ || agent_ || !identity_) return;
  auto call = [this](const std::string& path,
                     const std::string& body) -> Result<agent::LeaderReply> {
    auto reply = callLeader(credentials(), agentManagers(), path, body);
    if (!reply) return reply.status();
    return agent::LeaderReply{reply->status, reply->body};
  };
  agent_ = std::make_unique<agent::Agent>(dataRoot_ + "/agent", *runtime_, call, clock_);
  // Overlay tunnels start from the address this node advertises to the swarm.
  const std::string& advertise = identity_->advertiseAddr;
  agent_->setNetwork(network_.get(), advertise.substr(0, advertise.rfind(':')));
  if (Status s = agent_->start(); !s) {
    log::error("swarm", "the agent did not start", {{"error", s.message()}});
    agent_.reset();
  }
}

void Swarm::syncLeaderServices(ReplicatedStore& store, bool leader) {
  std::unique_lock<std::mutex> lock(mu_);
  if (leader && !dispatcher_ && store_.get() == &store) {
    dispatcher_ = std::make_shared<Dispatcher>(store, random_, clock_);
    dispatcher_->start();
    orchestrator_ = std::make_unique<Orchestrator>(store, random_, clock_);
    orchestrator_->start();
    allocator_ = std::make_unique<Allocator>(store, network_.get(), clock_);
    allocator_->start();
    if (scheduler_) {
      schedulerHost_ = std::make_unique<SchedulerHost>(store, *scheduler_, clock_);
      schedulerHost_->start();
    } else {
      log::error("swarm", "no scheduler plugin is loaded: pending tasks stay pending");
    }
    log::info("swarm", "leading: orchestrator, scheduler and dispatcher started");
    return;
  }
  if (!leader && dispatcher_) {
    auto d = std::move(dispatcher_);
    auto o = std::move(orchestrator_);
    auto sh = std::move(schedulerHost_);
    auto al = std::move(allocator_);
    lock.unlock();
    if (o) o->stop();
    if (al) al->stop();
    if (sh) sh->stop();
    d->stop();
    log::info("swarm", "no longer leading: orchestrator, scheduler and dispatcher stopped");
  }
}

api::Response Swarm::handleDispatcher(const api::Request& r, DispatcherCall call_) {
  LeaderCall call;
  if (auto refused = admitLeaderCall(r, "an agent session", false, call)) return *refused;
  std::shared_ptr<Dispatcher> d;
  {
    std::lock_guard<std::mutex> lock(mu_);
    d = dispatcher_;
  }
  if (!d) return api::Response::error(Status::unavailable("the leader's dispatcher is starting"));
  return ((*d).*call_)(r.peerNodeId, r.body);
}

void Swarm::addLeaderRoute(const std::string& path,
                           std::function<api::Response(const api::Request&)> handler) {
  nodeRouter_.add("POST", path, [this, handler = std::move(handler)](const api::Request& r) {
    LeaderCall call;
    if (auto refused = admitLeaderCall(r, "a call forwarded by a manager", true, call)) {
      return *refused;
    }
    return handler(r);
  });
}

Result<api::Response> Swarm::askLeader(const std::string& path, const std::string& body) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!identity_ || !store_) return Status::unavailable(kNotManager);
  }
  auto reply = callLeader(credentials(), agentManagers(), path, body);
  if (!reply) return reply.status();
  return api::Response::json(reply->body, reply->status);
}

std::shared_ptr<Dispatcher> Swarm::dispatcher() {
  std::lock_guard<std::mutex> lock(mu_);
  return dispatcher_;
}

}  // namespace shoal::manager
