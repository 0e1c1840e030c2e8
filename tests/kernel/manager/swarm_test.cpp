// Swarm: init makes a one-manager cluster (CA, certificates, tokens, Raft, the Cluster and
// Node objects); a second init is refused; a restart resumes it exactly; state it cannot trust
// (corrupt files, a foreign certificate, corrupt Raft files) stops resume with the file named.
#include <cppunit/extensions/HelperMacros.h>

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "kernel/ca/certificate_authority.h"
#include "kernel/ca/join_token.h"
#include "kernel/manager/node_api_client.h"
#include "kernel/manager/swarm.h"
#include "tests/support/temp_dir.h"

using shoal::Status;
using shoal::manager::Swarm;
using shoal::manager::SwarmInitOptions;

namespace {

SwarmInitOptions loopback() {
  SwarmInitOptions o;
  o.listenAddr = "127.0.0.1:0";
  return o;
}

// The node API of `manager` as the node that joined with state in `nodeDir` reaches it.
shoal::manager::NodeApiTarget nodeTarget(Swarm& manager, const shoal::test::TempDir& nodeDir) {
  shoal::manager::NodeApiTarget t;
  t.address = manager.status().advertiseAddr;
  t.caFile = nodeDir.file("swarm/certificates/swarm-root-ca.crt");
  t.serverNodeId = manager.status().nodeId;
  t.certFile = nodeDir.file("swarm/certificates/swarm-node.crt");
  t.keyFile = nodeDir.file("swarm/certificates/swarm-node.key");
  return t;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

void overwrite(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

std::string readAll(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The system clock moved forward by a settable offset: for the certificate-renewal schedule.
// Certificates are still signed with the real time, so TLS checks stay real.
class OffsetClock final : public shoal::Clock {
 public:
  WallTime now() const override { return std::chrono::system_clock::now() + offset.load(); }
  MonoTime monotonic() const override { return std::chrono::steady_clock::now(); }
  std::atomic<std::chrono::system_clock::duration> offset{};
};

bool eventually(const std::function<bool()>& check, std::chrono::seconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (check()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return check();
}

}  // namespace

class SwarmTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(SwarmTest);
  CPPUNIT_TEST(testInitMakesAOneManagerCluster);
  CPPUNIT_TEST(testSecondInitAndNonManagerAreRefused);
  CPPUNIT_TEST(testBadAddressesAreRefusedAndLeaveNothing);
  CPPUNIT_TEST(testRestartResumesTheSameSwarm);
  CPPUNIT_TEST(testUntrustworthyStateStopsResume);
  CPPUNIT_TEST(testNodeUpdateInspectAndLeave);
  CPPUNIT_TEST(testNodeApiChecksWhoIsCalling);
  CPPUNIT_TEST(testCertificatesRenewBetweenHalfAndFourFifthsOfTheirLife);
  CPPUNIT_TEST(testWorkerCertificateCannotCallManagerApis);
  CPPUNIT_TEST(testSwarmUpdateChangesClusterSettings);
  CPPUNIT_TEST(testAutolockKeepsKeysAndRaftDataSealedUntilUnlocked);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testInitMakesAOneManagerCluster() {
    shoal::test::TempDir dir;
    shoal::SystemRandom random;
    Swarm swarm(dir.path(), "9.9.9", random, shoal::SystemClock::instance());
    CPPUNIT_ASSERT_EQUAL(std::string("inactive"), swarm.status().state);
    auto id = swarm.init(loopback());
    CPPUNIT_ASSERT_MESSAGE(id.status().toString(), id.isOk());
    auto st = swarm.status();
    CPPUNIT_ASSERT_EQUAL(std::string("active"), st.state);
    CPPUNIT_ASSERT_EQUAL(*id, st.nodeId);
    CPPUNIT_ASSERT_EQUAL(std::string("manager"), st.role);
    CPPUNIT_ASSERT_EQUAL(uint64_t{1}, st.managers);
    CPPUNIT_ASSERT_EQUAL(uint64_t{1}, st.nodes);
    CPPUNIT_ASSERT_EQUAL(st.raftId, st.raftLeader);
    CPPUNIT_ASSERT(st.advertiseAddr.starts_with("127.0.0.1:"));
    CPPUNIT_ASSERT(!st.advertiseAddr.ends_with(":0"));

    auto nodes = swarm.nodes();
    CPPUNIT_ASSERT(nodes.isOk());
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, nodes->size());
    const auto& me = nodes->front();
    CPPUNIT_ASSERT(me.self);
    CPPUNIT_ASSERT_EQUAL(std::string("ready"), me.status);
    CPPUNIT_ASSERT_EQUAL(std::string("active"), me.availability);
    CPPUNIT_ASSERT_EQUAL(std::string("Leader"), me.managerStatus);
    CPPUNIT_ASSERT_EQUAL(std::string("9.9.9"), me.engineVersion);

    auto worker = swarm.joinToken("worker", false);
    auto manager = swarm.joinToken("manager", false);
    CPPUNIT_ASSERT(worker.isOk() && manager.isOk());
    CPPUNIT_ASSERT(*worker != *manager);
    auto parsed = shoal::ca::parseJoinToken(*worker);
    CPPUNIT_ASSERT(parsed.isOk());
    CPPUNIT_ASSERT_EQUAL(st.caDigest, parsed->caDigest);
    auto rotated = swarm.joinToken("worker", true);
    CPPUNIT_ASSERT(rotated.isOk() && *rotated != *worker);
    CPPUNIT_ASSERT_EQUAL(*rotated, *swarm.joinToken("worker", false));
    CPPUNIT_ASSERT_EQUAL(*manager, *swarm.joinToken("manager", false));
    CPPUNIT_ASSERT(swarm.joinToken("admin", false).status().code() ==
                   Status::Code::kInvalidArgument);

    // The node's certificate says who it is.
    std::ifstream in(dir.file("swarm/certificates/swarm-node.crt"));
    std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto info = shoal::ca::inspectCertificate(pem);
    CPPUNIT_ASSERT(info.isOk());
    CPPUNIT_ASSERT_EQUAL(*id, info->nodeId);
    CPPUNIT_ASSERT_EQUAL(std::string("swarm-manager"), info->role);
    CPPUNIT_ASSERT_EQUAL(st.clusterId, info->clusterId);
    namespace fs = std::filesystem;
    CPPUNIT_ASSERT((fs::status(dir.file("swarm/certificates/swarm-node.key")).permissions() &
                    (fs::perms::group_all | fs::perms::others_all)) == fs::perms::none);
  }

  void testSecondInitAndNonManagerAreRefused() {
    shoal::test::TempDir dir;
    shoal::SystemRandom random;
    Swarm swarm(dir.path(), "1", random, shoal::SystemClock::instance());
    Status notYet = swarm.nodes().status();
    CPPUNIT_ASSERT(notYet.code() == Status::Code::kUnavailable);
    CPPUNIT_ASSERT(contains(notYet.message(), "This node is not a swarm manager."));
    CPPUNIT_ASSERT(swarm.joinToken("worker", false).status().code() == Status::Code::kUnavailable);
    CPPUNIT_ASSERT(swarm.init(loopback()).isOk());
    auto again = swarm.init(loopback());
    CPPUNIT_ASSERT(again.status().code() == Status::Code::kFailedPrecondition);
    CPPUNIT_ASSERT(contains(again.status().message(), "already part of a swarm"));
  }

  void testBadAddressesAreRefusedAndLeaveNothing() {
    shoal::test::TempDir dir;
    shoal::SystemRandom random;
    Swarm swarm(dir.path(), "1", random, shoal::SystemClock::instance());
    for (auto [listen, advertise, want] :
         {std::tuple{"1.2.3:2377", "", "\"1.2.3\" is not an IPv4 address"},
          std::tuple{"127.0.0.1:70000", "", "port \"70000\""},
          std::tuple{"127.0.0.1:x", "", "port \"x\""},
          std::tuple{"127.0.0.1:0", "host.example", "advertise address"}}) {
      SwarmInitOptions o;
      o.listenAddr = listen;
      o.advertiseAddr = advertise;
      auto r = swarm.init(o);
      CPPUNIT_ASSERT_MESSAGE(listen, r.status().code() == Status::Code::kInvalidArgument);
      CPPUNIT_ASSERT_MESSAGE(r.status().message(), contains(r.status().message(), want));
    }
    SwarmInitOptions shortCerts = loopback();
    shortCerts.certExpiry = std::chrono::minutes(5);
    CPPUNIT_ASSERT(!swarm.init(shortCerts).isOk());
    CPPUNIT_ASSERT(!std::filesystem::exists(dir.file("swarm")));
    CPPUNIT_ASSERT(!std::filesystem::exists(dir.file("swarm.new")));
    CPPUNIT_ASSERT_EQUAL(std::string("inactive"), swarm.status().state);
  }

  void testRestartResumesTheSameSwarm() {
    shoal::test::TempDir dir;
    shoal::SystemRandom random;
    std::string id, cluster, token;
    {
      Swarm swarm(dir.path(), "1", random, shoal::SystemClock::instance());
      id = *swarm.init(loopback());
      cluster = swarm.status().clusterId;
      token = *swarm.joinToken("worker", true);
    }
    Swarm again(dir.path(), "1", random, shoal::SystemClock::instance());
    Status s = again.resume();
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    CPPUNIT_ASSERT_EQUAL(id, again.status().nodeId);
    CPPUNIT_ASSERT_EQUAL(cluster, again.status().clusterId);
    auto t = again.joinToken("worker", false);
    CPPUNIT_ASSERT_MESSAGE(t.status().toString(), t.isOk());
    CPPUNIT_ASSERT_EQUAL(token, *t);
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, again.nodes()->size());
  }

  void testNodeUpdateInspectAndLeave() {
    shoal::test::TempDir dir;
    shoal::SystemRandom random;
    Swarm swarm(dir.path(), "1", random, shoal::SystemClock::instance());
    const std::string id = *swarm.init(loopback());
    Swarm::NodeUpdate u;
    u.availability = "drain";
    u.labelAdd = {{"zone", "a"}, {"ssd", ""}};
    CPPUNIT_ASSERT(swarm.updateNode("self", u).isOk());
    auto json = swarm.inspectNode(id.substr(0, 6));  // a unique prefix
    CPPUNIT_ASSERT_MESSAGE(json.status().toString(), json.isOk());
    CPPUNIT_ASSERT(contains(*json, "\"Availability\":\"drain\""));
    CPPUNIT_ASSERT(contains(*json, "\"zone\":\"a\""));
    CPPUNIT_ASSERT_EQUAL(std::string("drain"), swarm.nodes()->front().availability);
    CPPUNIT_ASSERT(swarm.inspectNode("nosuch").status().code() == Status::Code::kNotFound);

    Swarm::NodeUpdate rm;
    rm.labelRm = {"zone"};
    CPPUNIT_ASSERT(swarm.updateNode(id, rm).isOk());
    CPPUNIT_ASSERT(!contains(*swarm.inspectNode(id), "zone"));
    Status missing = swarm.updateNode(id, rm);
    CPPUNIT_ASSERT(contains(missing.message(), "key zone doesn't exist in node's labels"));
    Swarm::NodeUpdate bad;
    bad.availability = "busy";
    CPPUNIT_ASSERT(swarm.updateNode(id, bad).code() == Status::Code::kInvalidArgument);
    Swarm::NodeUpdate demote;
    demote.role = "worker";
    Status last = swarm.updateNode(id, demote);
    CPPUNIT_ASSERT(contains(last.message(), "attempting to demote the last manager"));

    Status noForce = swarm.leave(false);
    CPPUNIT_ASSERT(contains(noForce.message(), "Use `--force`"));
    CPPUNIT_ASSERT_EQUAL(std::string("active"), swarm.status().state);
    CPPUNIT_ASSERT(swarm.leave(true).isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("inactive"), swarm.status().state);
    CPPUNIT_ASSERT(!std::filesystem::exists(dir.file("swarm")));
    // And a new swarm can be made afterwards, with a new identity.
    auto again = swarm.init(loopback());
    CPPUNIT_ASSERT(again.isOk() && *again != id);
  }

  // The manager's node API: the CA is public; a heartbeat needs this swarm's certificate; a
  // certificate from another CA does not get through TLS; a server that is not the expected
  // node is refused by the client.
  void testNodeApiChecksWhoIsCalling() {
    shoal::test::TempDir dir;
    shoal::SystemRandom random;
    Swarm swarm(dir.path(), "1", random, shoal::SystemClock::instance());
    const std::string id = *swarm.init(loopback());
    const std::string addr = swarm.status().advertiseAddr;
    using shoal::manager::nodeApiRequest;
    shoal::manager::NodeApiTarget anonymous;
    anonymous.address = addr;
    auto ca = nodeApiRequest(anonymous, "GET", "/ca");
    CPPUNIT_ASSERT_MESSAGE(ca.status().toString(), ca.isOk());
    CPPUNIT_ASSERT_EQUAL(200, ca->status);
    CPPUNIT_ASSERT(contains(ca->body, "BEGIN CERTIFICATE") && contains(ca->body, id));
    auto hb = nodeApiRequest(anonymous, "POST", "/heartbeat");
    CPPUNIT_ASSERT(hb.isOk());
    CPPUNIT_ASSERT_EQUAL(403, hb->status);
    auto junk = nodeApiRequest(anonymous, "POST", "/join", "{\"token\": 1}");
    CPPUNIT_ASSERT(junk.isOk());
    CPPUNIT_ASSERT_EQUAL(400, junk->status);

    // A client certificate from another CA: the TLS handshake fails.
    auto other = shoal::ca::RootCa::create();
    auto key = shoal::ca::generateKeyPem();
    auto cert = other->sign(*shoal::ca::makeCsrPem(*key), "intruder", shoal::ca::kWorkerRole,
                            swarm.status().clusterId, std::chrono::hours(1));
    shoal::test::TempDir creds;
    shoal::manager::NodeApiTarget intruder = anonymous;
    intruder.certFile = creds.write("c.crt", *cert);
    intruder.keyFile = creds.write("c.key", *key);
    auto refused = nodeApiRequest(intruder, "POST", "/heartbeat");
    CPPUNIT_ASSERT(!refused.isOk());

    // Verifying the server: the right CA but the wrong node id is refused by the client.
    shoal::manager::NodeApiTarget verified = anonymous;
    verified.caFile = dir.file("swarm/certificates/swarm-root-ca.crt");
    verified.serverNodeId = id;
    auto good = nodeApiRequest(verified, "GET", "/ca");
    CPPUNIT_ASSERT_MESSAGE(good.status().toString(), good.isOk() && good->status == 200);
    verified.serverNodeId = "someone-else";
    CPPUNIT_ASSERT(!nodeApiRequest(verified, "GET", "/ca").isOk());
  }

  // A manager and a worker in one process (loopback), certificates of 1 hour: nothing is
  // renewed before half their life; once the clock passes four fifths, both renew (the worker
  // through the manager, the sole manager through its own node API) and keep working.
  void testCertificatesRenewBetweenHalfAndFourFifthsOfTheirLife() {
    shoal::test::TempDir mdir, wdir;
    shoal::SystemRandom random;
    OffsetClock clock;
    Swarm manager(mdir.path(), "1", random, clock);
    SwarmInitOptions o = loopback();
    o.certExpiry = std::chrono::hours(1);
    o.heartbeatPeriod = std::chrono::seconds(1);
    CPPUNIT_ASSERT(manager.init(o).isOk());
    Swarm worker(wdir.path(), "1", random, clock);
    shoal::manager::SwarmJoinOptions j;
    j.token = *manager.joinToken("worker", false);
    j.remoteAddr = manager.status().advertiseAddr;
    j.listenAddr = "127.0.0.1:0";
    auto wid = worker.join(j);
    CPPUNIT_ASSERT_MESSAGE(wid.status().toString(), wid.isOk());
    const std::string mcert = readAll(mdir.file("swarm/certificates/swarm-node.crt"));
    const std::string wcert = readAll(wdir.file("swarm/certificates/swarm-node.crt"));

    clock.offset = std::chrono::minutes(29);  // under half: nothing is due
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    CPPUNIT_ASSERT_EQUAL(mcert, readAll(mdir.file("swarm/certificates/swarm-node.crt")));
    CPPUNIT_ASSERT_EQUAL(wcert, readAll(wdir.file("swarm/certificates/swarm-node.crt")));

    clock.offset = std::chrono::minutes(49);  // past four fifths: both are due
    CPPUNIT_ASSERT(eventually(
        [&] {
          return readAll(wdir.file("swarm/certificates/swarm-node.crt")) != wcert &&
                 readAll(mdir.file("swarm/certificates/swarm-node.crt")) != mcert;
        },
        std::chrono::seconds(20)));
    // Renewed once, not over and over: the new certificates are scheduled from now.
    const std::string renewed = readAll(wdir.file("swarm/certificates/swarm-node.crt"));
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    CPPUNIT_ASSERT_EQUAL(renewed, readAll(wdir.file("swarm/certificates/swarm-node.crt")));
    auto info = shoal::ca::inspectCertificate(renewed);
    CPPUNIT_ASSERT(info.isOk() && info->nodeId == *wid && info->role == shoal::ca::kWorkerRole);
    // Both still work with their new certificates: the worker's heartbeats get through.
    CPPUNIT_ASSERT(eventually(
        [&] {
          auto nodes = manager.nodes();
          return nodes.isOk() && nodes->size() == 2 && (*nodes)[0].status == "ready" &&
                 (*nodes)[1].status == "ready";
        },
        std::chrono::seconds(10)));
    // A restart resumes from the renewed files.
    worker.stop();
    Swarm again(wdir.path(), "1", random, clock);
    CPPUNIT_ASSERT(again.resume().isOk());
  }

  // Manager-only node API calls with a worker's certificate are refused.
  void testWorkerCertificateCannotCallManagerApis() {
    shoal::test::TempDir mdir, wdir;
    shoal::SystemRandom random;
    Swarm manager(mdir.path(), "1", random, shoal::SystemClock::instance());
    CPPUNIT_ASSERT(manager.init(loopback()).isOk());
    Swarm worker(wdir.path(), "1", random, shoal::SystemClock::instance());
    shoal::manager::SwarmJoinOptions j;
    j.token = *manager.joinToken("worker", false);
    j.remoteAddr = manager.status().advertiseAddr;
    j.listenAddr = "127.0.0.1:0";
    CPPUNIT_ASSERT(worker.join(j).isOk());
    const auto t = nodeTarget(manager, wdir);
    auto raft = shoal::manager::nodeApiRequest(t, "POST", "/raft/join", "{}");
    CPPUNIT_ASSERT(raft.isOk());
    CPPUNIT_ASSERT_EQUAL(403, raft->status);
    CPPUNIT_ASSERT(contains(raft->body, "manager certificate"));
    // Its own certificate, for its own (worker) role: granted; never a manager's.
    auto key = shoal::ca::generateKeyPem();
    auto csr = shoal::ca::makeCsrPem(*key);
    std::string body = "{\"csr\": \"";
    for (char c : *csr) body += c == '\n' ? std::string("\\n") : std::string(1, c);
    body += "\"}";
    auto cert = shoal::manager::nodeApiRequest(t, "POST", "/certificate", body);
    CPPUNIT_ASSERT(cert.isOk());
    CPPUNIT_ASSERT_EQUAL_MESSAGE(cert->body, 200, cert->status);
    CPPUNIT_ASSERT(contains(cert->body, "\"role\":\"worker\""));
    CPPUNIT_ASSERT(!contains(cert->body, "ca_key"));
    // A removed node gets nothing any more.
    CPPUNIT_ASSERT(manager.removeNode(worker.status().nodeId, true).isOk());
    auto gone = shoal::manager::nodeApiRequest(t, "POST", "/certificate", body);
    CPPUNIT_ASSERT(gone.isOk() && gone->status == 403);
    auto hb = shoal::manager::nodeApiRequest(t, "POST", "/heartbeat");
    CPPUNIT_ASSERT(hb.isOk() && hb->status == 403);
  }

  void testSwarmUpdateChangesClusterSettings() {
    shoal::test::TempDir dir;
    shoal::SystemRandom random;
    Swarm swarm(dir.path(), "1", random, shoal::SystemClock::instance());
    shoal::manager::SwarmUpdate u;
    CPPUNIT_ASSERT(contains(swarm.update(u).status().message(), "not a swarm manager"));
    CPPUNIT_ASSERT(swarm.init(loopback()).isOk());
    u.certExpiry = std::chrono::minutes(5);
    CPPUNIT_ASSERT(contains(swarm.update(u).status().message(), "--cert-expiry"));
    u.certExpiry = std::chrono::hours(48);
    u.heartbeatPeriod = std::chrono::seconds(0);
    CPPUNIT_ASSERT(contains(swarm.update(u).status().message(), "--dispatcher-heartbeat"));
    u.heartbeatPeriod = std::chrono::seconds(2);
    u.taskHistoryLimit = -1;
    CPPUNIT_ASSERT(contains(swarm.update(u).status().message(), "--task-history-limit"));
    u.taskHistoryLimit = 9;
    auto updated = swarm.update(u);
    CPPUNIT_ASSERT_MESSAGE(updated.status().toString(), updated.isOk());
    CPPUNIT_ASSERT(updated->empty());  // autolock untouched: no unlock key
    // The Cluster object carries them (the worker join reply reads the heartbeat period).
    shoal::test::TempDir wdir;
    Swarm worker(wdir.path(), "1", random, shoal::SystemClock::instance());
    shoal::manager::SwarmJoinOptions j;
    j.token = *swarm.joinToken("worker", false);
    j.remoteAddr = swarm.status().advertiseAddr;
    j.listenAddr = "127.0.0.1:0";
    CPPUNIT_ASSERT(worker.join(j).isOk());
    auto cert =
        shoal::ca::inspectCertificate(readAll(wdir.file("swarm/certificates/swarm-node.crt")));
    CPPUNIT_ASSERT(cert.isOk());
    CPPUNIT_ASSERT(cert->notAfter - cert->notBefore >= 48 * 3600);
    CPPUNIT_ASSERT(cert->notAfter - cert->notBefore <= 48 * 3600 + 120);
    // Heartbeats answer with the period, the managers and the CA, and follow a change of them
    // (the answer keeps what it read of the cluster object until that changes).
    const auto t = nodeTarget(swarm, wdir);
    auto beat = [&] {
      auto hb = shoal::manager::nodeApiRequest(t, "POST", "/heartbeat");
      CPPUNIT_ASSERT(hb.isOk());
      CPPUNIT_ASSERT_EQUAL_MESSAGE(hb->body, 200, hb->status);
      return Poco::JSON::Parser().parse(hb->body).extract<Poco::JSON::Object::Ptr>();
    };
    auto first = beat();
    CPPUNIT_ASSERT_EQUAL(int64_t{2}, first->getValue<int64_t>("period_seconds"));
    CPPUNIT_ASSERT_EQUAL(std::string("worker"), first->getValue<std::string>("role"));
    auto managers = first->getArray("managers");
    CPPUNIT_ASSERT(managers && managers->size() == 1);
    CPPUNIT_ASSERT_EQUAL(swarm.status().nodeId,
                         managers->getObject(0)->getValue<std::string>("node_id"));
    CPPUNIT_ASSERT(contains(first->getValue<std::string>("trust"), "BEGIN CERTIFICATE"));
    CPPUNIT_ASSERT(!first->getValue<std::string>("issuer").empty());
    shoal::manager::SwarmUpdate again;
    again.heartbeatPeriod = std::chrono::seconds(3);
    CPPUNIT_ASSERT(swarm.update(again).isOk());
    CPPUNIT_ASSERT_EQUAL(int64_t{3}, beat()->getValue<int64_t>("period_seconds"));
  }

  // Autolock: the private keys and the Raft data are sealed at rest; a restarted manager is
  // locked and serves nothing until unlocked with the right key; a rotated key replaces the
  // old one; turning autolock off leaves a manager that starts by itself.
  void testAutolockKeepsKeysAndRaftDataSealedUntilUnlocked() {
    shoal::test::TempDir dir;
    shoal::SystemRandom random;
    auto& clock = shoal::SystemClock::instance();
    std::string key;
    {
      Swarm swarm(dir.path(), "1", random, clock);
      SwarmInitOptions o = loopback();
      o.autolock = true;
      CPPUNIT_ASSERT(swarm.init(o).isOk());
      auto k = swarm.unlockKey(false);
      CPPUNIT_ASSERT_MESSAGE(k.status().toString(), k.isOk());
      key = *k;
      CPPUNIT_ASSERT(key.starts_with("SWMKEY-1-"));
      Swarm::NodeUpdate u;
      u.labelAdd = {{"secret", "label-only-in-raft"}};
      CPPUNIT_ASSERT(swarm.updateNode("self", u).isOk());
    }
    // Nothing readable on disk: no private key in the clear, no Raft record in the clear.
    for (const auto& f : std::filesystem::recursive_directory_iterator(dir.file("swarm"))) {
      if (!f.is_regular_file()) continue;
      const std::string bytes = readAll(f.path().string());
      CPPUNIT_ASSERT_MESSAGE(f.path().string(), !contains(bytes, "PRIVATE KEY"));
      CPPUNIT_ASSERT_MESSAGE(f.path().string(), !contains(bytes, "label-only-in-raft"));
    }
    {
      Swarm swarm(dir.path(), "1", random, clock);
      CPPUNIT_ASSERT(swarm.resume().isOk());
      CPPUNIT_ASSERT_EQUAL(std::string("locked"), swarm.status().state);
      CPPUNIT_ASSERT(contains(swarm.nodes().status().message(), "needs to be unlocked"));
      CPPUNIT_ASSERT(!swarm.init(loopback()).isOk());
      CPPUNIT_ASSERT(contains(swarm.unlock("SWMKEY-1-nonsense").message(), "invalid unlock key"));
      std::string wrong = key;
      wrong[10] = wrong[10] == 'A' ? 'B' : 'A';
      CPPUNIT_ASSERT(contains(swarm.unlock(wrong).message(), "incorrect"));
      CPPUNIT_ASSERT_EQUAL(std::string("locked"), swarm.status().state);
      Status s = swarm.unlock(key);
      CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
      CPPUNIT_ASSERT_EQUAL(std::string("active"), swarm.status().state);
      CPPUNIT_ASSERT(contains(*swarm.inspectNode("self"), "label-only-in-raft"));
      CPPUNIT_ASSERT(contains(swarm.unlock(key).message(), "not locked"));
      // Rotate: the managers reseal their keys with the new one.
      auto rotated = swarm.unlockKey(true);
      CPPUNIT_ASSERT(rotated.isOk() && *rotated != key);
      const std::string before = readAll(dir.file("swarm/certificates/swarm-node.key"));
      CPPUNIT_ASSERT(eventually(
          [&] { return readAll(dir.file("swarm/certificates/swarm-node.key")) != before; },
          std::chrono::seconds(10)));
      key = *rotated;
    }
    {
      Swarm swarm(dir.path(), "1", random, clock);
      CPPUNIT_ASSERT(swarm.resume().isOk());
      CPPUNIT_ASSERT_EQUAL(std::string("locked"), swarm.status().state);
      Status s = swarm.unlock(key);
      CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
      shoal::manager::SwarmUpdate off;
      off.autolock = false;
      CPPUNIT_ASSERT(swarm.update(off).isOk());
      CPPUNIT_ASSERT(contains(swarm.unlockKey(false).status().message(), "no unlock key"));
      CPPUNIT_ASSERT(eventually(
          [&] {
            return contains(readAll(dir.file("swarm/certificates/swarm-node.key")), "PRIVATE KEY");
          },
          std::chrono::seconds(10)));
    }
    {
      Swarm swarm(dir.path(), "1", random, clock);
      CPPUNIT_ASSERT(swarm.resume().isOk());
      CPPUNIT_ASSERT_EQUAL(std::string("active"), swarm.status().state);
      CPPUNIT_ASSERT(contains(*swarm.inspectNode("self"), "label-only-in-raft"));
      // On again: a new key comes back from update.
      shoal::manager::SwarmUpdate on;
      on.autolock = true;
      auto k = swarm.update(on);
      CPPUNIT_ASSERT(k.isOk() && k->starts_with("SWMKEY-1-"));
    }
  }

  void testUntrustworthyStateStopsResume() {
    auto setUp = [](const shoal::test::TempDir& dir) {
      shoal::SystemRandom random;
      Swarm swarm(dir.path(), "1", random, shoal::SystemClock::instance());
      CPPUNIT_ASSERT(swarm.init(loopback()).isOk());
    };
    auto resumeError = [](const shoal::test::TempDir& dir) {
      shoal::SystemRandom random;
      Swarm swarm(dir.path(), "1", random, shoal::SystemClock::instance());
      Status s = swarm.resume();
      CPPUNIT_ASSERT(!s.isOk());
      CPPUNIT_ASSERT_EQUAL(std::string("inactive"), swarm.status().state);
      return s.message();
    };
    {
      shoal::test::TempDir dir;
      setUp(dir);
      overwrite(dir.file("swarm/state.json"), "{\"format\": 1, \"node_id\": ");
      std::string m = resumeError(dir);
      CPPUNIT_ASSERT_MESSAGE(m, contains(m, "state.json is corrupt"));
    }
    {
      shoal::test::TempDir dir;
      setUp(dir);
      std::filesystem::remove(dir.file("swarm/certificates/swarm-node.key"));
      std::string m = resumeError(dir);
      CPPUNIT_ASSERT_MESSAGE(m, contains(m, "swarm-node.key is missing"));
    }
    {
      // A certificate from another cluster's CA.
      shoal::test::TempDir dir;
      setUp(dir);
      auto other = shoal::ca::RootCa::create();
      auto key = shoal::ca::generateKeyPem();
      auto cert = other->sign(*shoal::ca::makeCsrPem(*key), "n", shoal::ca::kManagerRole, "c",
                              std::chrono::hours(1));
      overwrite(dir.file("swarm/certificates/swarm-node.crt"), *cert);
      overwrite(dir.file("swarm/certificates/swarm-node.key"), *key);
      std::string m = resumeError(dir);
      CPPUNIT_ASSERT_MESSAGE(m, contains(m, "swarm-node.crt") && contains(m, "not valid"));
    }
    {
      shoal::test::TempDir dir;
      setUp(dir);
      overwrite(dir.file("swarm/raft/CURRENT"), "MANIFEST-999999\n");
      std::string m = resumeError(dir);
      CPPUNIT_ASSERT_MESSAGE(m, contains(m, dir.file("swarm/raft")));
    }
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(SwarmTest);
