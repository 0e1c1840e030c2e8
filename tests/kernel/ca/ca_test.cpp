// The cluster CA and join tokens: node certificates carry id, role and cluster; a request's
// subject is ignored; foreign, expired and tampered certificates are refused; tokens round-trip
// in Swarm's format and malformed ones are refused with the reason.
#include <cppunit/extensions/HelperMacros.h>

#include <ctime>
#include <thread>

#include "kernel/ca/certificate_authority.h"
#include "kernel/ca/join_token.h"

using namespace std::chrono_literals;
using shoal::Status;
using shoal::ca::JoinToken;
using shoal::ca::RootCa;

namespace {

RootCa mustCreate() {
  auto ca = RootCa::create();
  CPPUNIT_ASSERT_MESSAGE(ca.status().toString(), ca.isOk());
  return std::move(*ca);
}

std::string mustKey() {
  auto k = shoal::ca::generateKeyPem();
  CPPUNIT_ASSERT(k.isOk());
  return *k;
}

std::string mustIssue(const RootCa& ca, const std::string& key, const std::string& node,
                      std::string_view role, std::chrono::seconds validity = 24h) {
  auto csr = shoal::ca::makeCsrPem(key);
  CPPUNIT_ASSERT(csr.isOk());
  auto cert = ca.sign(*csr, node, role, "cluster1", validity);
  CPPUNIT_ASSERT_MESSAGE(cert.status().toString(), cert.isOk());
  return *cert;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

}  // namespace

class CaTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(CaTest);
  CPPUNIT_TEST(testRootIsAnEcdsaCaWithAStableDigest);
  CPPUNIT_TEST(testNodeCertificateCarriesIdRoleAndCluster);
  CPPUNIT_TEST(testForeignAndTamperedCertificatesAreRefused);
  CPPUNIT_TEST(testExpiredCertificateIsRefused);
  CPPUNIT_TEST(testLoadChecksTheKeyAndTheCaFlag);
  CPPUNIT_TEST(testBadRequestsAreRefused);
  CPPUNIT_TEST(testTokenRoundTripsInSwarmFormat);
  CPPUNIT_TEST(testMalformedTokensAreRefusedWithTheReason);
  CPPUNIT_TEST(testCrossSignedRootChainsToTheOldOne);
  CPPUNIT_TEST_SUITE_END();

 public:
  // Root rotation's trick: a node certificate from the new root, presented with the new root
  // cross-signed by the old one, verifies for nodes that trust only the old root, only the
  // new one, or both; without the cross-signed certificate only the new root's trusters
  // accept it; an unrelated root accepts none.
  void testCrossSignedRootChainsToTheOldOne() {
    auto oldRoot = shoal::ca::RootCa::create();
    auto newRoot = shoal::ca::RootCa::create();
    auto other = shoal::ca::RootCa::create();
    CPPUNIT_ASSERT(oldRoot.isOk() && newRoot.isOk() && other.isOk());
    auto cross = oldRoot->crossSign(*newRoot);
    CPPUNIT_ASSERT_MESSAGE(cross.status().toString(), cross.isOk());
    auto key = shoal::ca::generateKeyPem();
    auto leaf = newRoot->sign(*shoal::ca::makeCsrPem(*key), "n1", shoal::ca::kWorkerRole, "c1",
                              std::chrono::hours(1));
    CPPUNIT_ASSERT(leaf.isOk());
    const std::string chain = *leaf + *cross;
    using shoal::ca::verifyChain;
    CPPUNIT_ASSERT(verifyChain(oldRoot->certPem(), chain).isOk());
    CPPUNIT_ASSERT(verifyChain(newRoot->certPem(), chain).isOk());
    CPPUNIT_ASSERT(verifyChain(oldRoot->certPem() + newRoot->certPem(), chain).isOk());
    CPPUNIT_ASSERT(verifyChain(newRoot->certPem(), *leaf).isOk());
    CPPUNIT_ASSERT(!verifyChain(oldRoot->certPem(), *leaf).isOk());
    CPPUNIT_ASSERT(!verifyChain(other->certPem(), chain).isOk());
    CPPUNIT_ASSERT_EQUAL(*leaf, shoal::ca::firstCertificate(chain));
    // The cross-signed certificate is a CA for the new root's key, not a new identity.
    auto info = shoal::ca::inspectCertificate(*cross);
    CPPUNIT_ASSERT(info.isOk() && info->isCa);
  }

  void testRootIsAnEcdsaCaWithAStableDigest() {
    RootCa ca = mustCreate();
    CPPUNIT_ASSERT(ca.canSign());
    CPPUNIT_ASSERT(contains(ca.certPem(), "BEGIN CERTIFICATE"));
    CPPUNIT_ASSERT_EQUAL(std::size_t{7 + 64}, ca.digest().size());
    auto info = shoal::ca::inspectCertificate(ca.certPem());
    CPPUNIT_ASSERT(info.isOk() && info->isCa);
    CPPUNIT_ASSERT_EQUAL(std::string("swarm-ca"), info->nodeId);
    CPPUNIT_ASSERT(info->notAfter - std::time(nullptr) > 19LL * 365 * 24 * 3600);
    auto again = RootCa::load(ca.certPem(), "");
    CPPUNIT_ASSERT(again.isOk());
    CPPUNIT_ASSERT_EQUAL(ca.digest(), again->digest());
    CPPUNIT_ASSERT(!again->canSign());
    CPPUNIT_ASSERT(mustCreate().digest() != ca.digest());
  }

  void testNodeCertificateCarriesIdRoleAndCluster() {
    RootCa ca = mustCreate();
    std::string key = mustKey();
    std::string cert = mustIssue(ca, key, "node-abc", shoal::ca::kManagerRole, 90 * 24h);
    auto info = shoal::ca::inspectCertificate(cert);
    CPPUNIT_ASSERT(info.isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("node-abc"), info->nodeId);
    CPPUNIT_ASSERT_EQUAL(std::string("swarm-manager"), info->role);
    CPPUNIT_ASSERT_EQUAL(std::string("cluster1"), info->clusterId);
    CPPUNIT_ASSERT(!info->isCa);
    const int64_t life = info->notAfter - std::time(nullptr);
    CPPUNIT_ASSERT(life > 89LL * 24 * 3600 && life <= 90LL * 24 * 3600);
    CPPUNIT_ASSERT(shoal::ca::keyMatchesCertificate(key, cert));
    CPPUNIT_ASSERT(!shoal::ca::keyMatchesCertificate(mustKey(), cert));
    CPPUNIT_ASSERT(ca.verify(cert).isOk());
    // A verify-only copy verifies too.
    CPPUNIT_ASSERT(RootCa::load(ca.certPem(), "")->verify(cert).isOk());
  }

  void testForeignAndTamperedCertificatesAreRefused() {
    RootCa ca = mustCreate();
    RootCa other = mustCreate();
    std::string cert = mustIssue(other, mustKey(), "n1", shoal::ca::kWorkerRole);
    Status s = ca.verify(cert);
    CPPUNIT_ASSERT(s.code() == Status::Code::kPermissionDenied);
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "not valid for this cluster"));
    CPPUNIT_ASSERT(ca.verify("junk").code() == Status::Code::kInvalidArgument);
    std::string good = mustIssue(ca, mustKey(), "n2", shoal::ca::kWorkerRole);
    std::string flipped = good;
    flipped[flipped.size() / 2] = flipped[flipped.size() / 2] == 'A' ? 'B' : 'A';
    CPPUNIT_ASSERT(!ca.verify(flipped).isOk());
  }

  void testExpiredCertificateIsRefused() {
    RootCa ca = mustCreate();
    // Valid for one second from now; two seconds later it has expired.
    std::string cert = mustIssue(ca, mustKey(), "n1", shoal::ca::kWorkerRole, 1s);
    CPPUNIT_ASSERT(ca.verify(cert).isOk());
    std::this_thread::sleep_for(2100ms);
    Status s = ca.verify(cert);
    CPPUNIT_ASSERT_MESSAGE(s.toString(), contains(s.message(), "expired"));
  }

  void testLoadChecksTheKeyAndTheCaFlag() {
    RootCa ca = mustCreate();
    auto wrongKey = RootCa::load(ca.certPem(), mustKey());
    CPPUNIT_ASSERT(!wrongKey.isOk());
    CPPUNIT_ASSERT(contains(wrongKey.status().message(), "does not belong"));
    std::string leaf = mustIssue(ca, mustKey(), "n1", shoal::ca::kWorkerRole);
    auto notCa = RootCa::load(leaf, "");
    CPPUNIT_ASSERT(!notCa.isOk());
    CPPUNIT_ASSERT(contains(notCa.status().message(), "not a certificate authority"));
    CPPUNIT_ASSERT(!RootCa::load("-----BEGIN CERTIFICATE-----\nxx\n", "").isOk());
  }

  void testBadRequestsAreRefused() {
    RootCa ca = mustCreate();
    auto r = ca.sign("not a request", "n1", shoal::ca::kWorkerRole, "c", 1h);
    CPPUNIT_ASSERT(r.status().code() == Status::Code::kInvalidArgument);
    auto verifyOnly = RootCa::load(ca.certPem(), "");
    auto csr = shoal::ca::makeCsrPem(mustKey());
    CPPUNIT_ASSERT(verifyOnly->sign(*csr, "n1", shoal::ca::kWorkerRole, "c", 1h).status().code() ==
                   Status::Code::kFailedPrecondition);
    CPPUNIT_ASSERT(!shoal::ca::makeCsrPem("junk").isOk());
  }

  void testTokenRoundTripsInSwarmFormat() {
    RootCa ca = mustCreate();
    shoal::SeededRandom random(9);
    JoinToken t{ca.digest(), shoal::ca::newTokenSecret(random)};
    const std::string text = t.toString();
    CPPUNIT_ASSERT_EQUAL(std::size_t{9 + 50 + 1 + 25}, text.size());
    CPPUNIT_ASSERT(text.starts_with("SWMTKN-1-"));
    auto parsed = shoal::ca::parseJoinToken(text);
    CPPUNIT_ASSERT_MESSAGE(parsed.status().toString(), parsed.isOk());
    CPPUNIT_ASSERT_EQUAL(ca.digest(), parsed->caDigest);
    CPPUNIT_ASSERT_EQUAL(t.secret, parsed->secret);
    // All-zero and all-ones digests survive the base-36 round trip too.
    for (std::string hex : {std::string(64, '0'), std::string(64, 'f')}) {
      JoinToken edge{"sha256:" + hex, std::string(25, 'z')};
      CPPUNIT_ASSERT_EQUAL(edge.caDigest, shoal::ca::parseJoinToken(edge.toString())->caDigest);
    }
  }

  void testMalformedTokensAreRefusedWithTheReason() {
    const std::string digest(50, '1');
    const std::string secret(25, 'a');
    auto reason = [](const std::string& token) {
      auto r = shoal::ca::parseJoinToken(token);
      CPPUNIT_ASSERT_MESSAGE(token, !r.isOk());
      CPPUNIT_ASSERT(r.status().code() == Status::Code::kInvalidArgument);
      return r.status().message();
    };
    CPPUNIT_ASSERT(contains(reason(""), "SWMTKN-1-<digest>-<secret>"));
    CPPUNIT_ASSERT(contains(reason("XYZ-1-" + digest + "-" + secret), "SWMTKN-1"));
    CPPUNIT_ASSERT(contains(reason("SWMTKN-2-" + digest + "-" + secret), "version \"2\""));
    CPPUNIT_ASSERT(contains(reason("SWMTKN-1-" + digest.substr(1) + "-" + secret), "CA digest"));
    CPPUNIT_ASSERT(contains(reason("SWMTKN-1-" + digest + "-" + secret + "x"), "secret"));
    CPPUNIT_ASSERT(contains(reason("SWMTKN-1-" + digest + "-" + std::string(25, 'A')), "secret"));
    CPPUNIT_ASSERT(
        contains(reason("SWMTKN-1-" + std::string(50, 'z') + "-" + secret), "out of range"));
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(CaTest);
