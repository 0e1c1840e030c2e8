// network-overlay's manager half: address management (plugins/network-overlay/ipam.hpp).
#include <cppunit/extensions/HelperMacros.h>

#include <shoal/plugin.hpp>

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <set>
#include <string>

#include "ipam.hpp"

using shoal::overlay::Ipam;
using shoal::overlay::Subnet;
using shoal::sdk::Error;

namespace {

Poco::JSON::Object::Ptr parse(const std::string& json) {
  return Poco::JSON::Parser().parse(json).extract<Poco::JSON::Object::Ptr>();
}

std::string network(const std::string& id, const std::string& subnet = "",
                    const std::string& gateway = "") {
  std::string ipam;
  if (!subnet.empty()) ipam += "\"subnet\":\"" + subnet + "\"";
  if (!gateway.empty())
    ipam += std::string(ipam.empty() ? "" : ",") + "\"gateway\":\"" + gateway + "\"";
  return "{\"schema\":\"shoal.network/v1\",\"id\":\"" + id + "\",\"name\":\"" + id +
         "\",\"driver\":\"overlay\",\"options\":{},\"ipam\":{" + ipam + "}}";
}

std::string endpoint(const std::string& net, const std::string& owner,
                     const std::string& address = "") {
  return "{\"schema\":\"shoal.endpoint-req/v1\",\"kind\":\"task\",\"owner\":\"" + owner +
         "\",\"network_id\":\"" + net + "\",\"address\":\"" + address + "\"}";
}

// The status an Ipam call fails with, or 0 when it does not fail.
template <class F>
int failure(F&& f, std::string* message = nullptr) {
  try {
    f();
  } catch (const Error& e) {
    if (message) *message = e.what();
    return e.code();
  }
  return 0;
}

}  // namespace

class OverlayIpamTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(OverlayIpamTest);
  CPPUNIT_TEST(testParsing);
  CPPUNIT_TEST(testPoolSubnetsAndVnis);
  CPPUNIT_TEST(testRequestedSubnetGatewayAndOverlap);
  CPPUNIT_TEST(testEndpoints);
  CPPUNIT_TEST(testExhaustion);
  CPPUNIT_TEST(testRestoreNeverGivesTwice);
  CPPUNIT_TEST(testBadDocuments);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testParsing() {
    Subnet s;
    std::string error;
    CPPUNIT_ASSERT(shoal::overlay::parseSubnet("10.0.1.0/24", &s, &error));
    CPPUNIT_ASSERT_EQUAL(24, s.prefix);
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.1.255"), shoal::overlay::formatAddress(s.last()));
    CPPUNIT_ASSERT(!shoal::overlay::parseSubnet("10.0.1.5/24", &s, &error));
    CPPUNIT_ASSERT(error.find("host bits") != std::string::npos);
    CPPUNIT_ASSERT(error.find("10.0.1.0/24") != std::string::npos);
    CPPUNIT_ASSERT(!shoal::overlay::parseSubnet("10.0.1.0", &s, &error));
    CPPUNIT_ASSERT(!shoal::overlay::parseSubnet("10.0.1.0/33", &s, &error));
    CPPUNIT_ASSERT(!shoal::overlay::parseSubnet("10.0.1.0/", &s, &error));
    CPPUNIT_ASSERT(!shoal::overlay::parseSubnet("10.0.1.4/31", &s, &error));
    CPPUNIT_ASSERT(!shoal::overlay::parseSubnet("256.0.0.0/8", &s, &error));
    uint32_t a = 0;
    CPPUNIT_ASSERT(!shoal::overlay::parseAddress("1.2.3", &a));
    CPPUNIT_ASSERT(!shoal::overlay::parseAddress("1.2.3.4.5", &a));
    CPPUNIT_ASSERT(!shoal::overlay::parseAddress("01.2.3.4", &a));
    CPPUNIT_ASSERT(!shoal::overlay::parseAddress("1.2.3.4 ", &a));
    CPPUNIT_ASSERT(shoal::overlay::parseAddress("192.168.0.255", &a));
    CPPUNIT_ASSERT_EQUAL(std::string("02:42:c0:a8:00:ff"), shoal::overlay::macFor(a));
  }

  void testPoolSubnetsAndVnis() {
    Ipam ipam;
    auto a = parse(ipam.allocateNetwork(network("a")));
    auto b = parse(ipam.allocateNetwork(network("b")));
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.0.0/24"), a->getValue<std::string>("subnet"));
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.0.1"), a->getValue<std::string>("gateway"));
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.1.0/24"), b->getValue<std::string>("subnet"));
    CPPUNIT_ASSERT_EQUAL(4096, a->getValue<int>("vni"));
    CPPUNIT_ASSERT_EQUAL(4097, b->getValue<int>("vni"));
    // Asking again answers the same allocation.
    auto again = parse(ipam.allocateNetwork(network("a")));
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.0.0/24"), again->getValue<std::string>("subnet"));
    // A released network's subnet and VNI are free again.
    ipam.releaseNetwork("a");
    auto c = parse(ipam.allocateNetwork(network("c")));
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.0.0/24"), c->getValue<std::string>("subnet"));
    CPPUNIT_ASSERT_EQUAL(4096, c->getValue<int>("vni"));
    // The pool skips requested subnets it overlaps.
    ipam.allocateNetwork(network("d", "10.0.2.0/23"));
    auto e = parse(ipam.allocateNetwork(network("e")));
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.4.0/24"), e->getValue<std::string>("subnet"));
  }

  void testRequestedSubnetGatewayAndOverlap() {
    Ipam ipam;
    auto a = parse(ipam.allocateNetwork(network("a", "192.168.50.0/24", "192.168.50.254")));
    CPPUNIT_ASSERT_EQUAL(std::string("192.168.50.254"), a->getValue<std::string>("gateway"));
    std::string message;
    CPPUNIT_ASSERT_EQUAL(
        int(SHOAL_EEXIST),
        failure([&] { ipam.allocateNetwork(network("b", "192.168.0.0/16")); }, &message));
    CPPUNIT_ASSERT_MESSAGE(
        message,
        message.find("overlaps the subnet 192.168.50.0/24 of network a") != std::string::npos);
    CPPUNIT_ASSERT_EQUAL(
        int(SHOAL_EINVAL),
        failure([&] { ipam.allocateNetwork(network("c", "10.9.0.0/24", "10.8.0.1")); }, &message));
    CPPUNIT_ASSERT(message.find("not a host address") != std::string::npos);
    CPPUNIT_ASSERT_EQUAL(int(SHOAL_EINVAL), failure([&] {
                           ipam.allocateNetwork(network("c", "10.9.0.0/24", "10.9.0.255"));
                         }));
    CPPUNIT_ASSERT_EQUAL(int(SHOAL_EINVAL),
                         failure([&] { ipam.allocateNetwork(network("c", "", "10.9.0.1")); }));
    // The gateway is never an endpoint.
    auto ep = parse(ipam.allocateEndpoint(endpoint("a", "t1")));
    CPPUNIT_ASSERT_EQUAL(std::string("192.168.50.1/24"), ep->getValue<std::string>("address"));
  }

  void testEndpoints() {
    Ipam ipam;
    ipam.allocateNetwork(network("n", "10.1.0.0/29"));  // hosts .1-.6; .1 is the gateway
    std::set<std::string> seen;
    for (int i = 0; i < 5; ++i) {
      auto ep = parse(ipam.allocateEndpoint(endpoint("n", "t" + std::to_string(i))));
      const std::string addr = ep->getValue<std::string>("address");
      CPPUNIT_ASSERT(seen.insert(addr).second);
      CPPUNIT_ASSERT(addr != "10.1.0.1/29" && addr != "10.1.0.0/29" && addr != "10.1.0.7/29");
      CPPUNIT_ASSERT_EQUAL(std::string("n"), ep->getValue<std::string>("network_id"));
    }
    CPPUNIT_ASSERT_EQUAL(std::string("02:42:0a:01:00:02"),
                         parse(ipam.allocateEndpoint(endpoint("n", "t0")))
                             ->getValue<std::string>("mac"));  // same owner, same address
    ipam.releaseEndpoint("{\"network_id\":\"n\",\"address\":\"10.1.0.4/29\"}");
    auto again = parse(ipam.allocateEndpoint(endpoint("n", "t9")));
    CPPUNIT_ASSERT_EQUAL(std::string("10.1.0.4/29"), again->getValue<std::string>("address"));
    // A requested address: given when free, refused when taken or outside.
    ipam.releaseEndpoint("{\"network_id\":\"n\",\"address\":\"10.1.0.5\"}");
    CPPUNIT_ASSERT_EQUAL(std::string("10.1.0.5/29"),
                         parse(ipam.allocateEndpoint(endpoint("n", "vip", "10.1.0.5")))
                             ->getValue<std::string>("address"));
    CPPUNIT_ASSERT_EQUAL(int(SHOAL_EEXIST),
                         failure([&] { ipam.allocateEndpoint(endpoint("n", "x", "10.1.0.5")); }));
    CPPUNIT_ASSERT_EQUAL(int(SHOAL_EINVAL),
                         failure([&] { ipam.allocateEndpoint(endpoint("n", "x", "10.2.0.5")); }));
    CPPUNIT_ASSERT_EQUAL(int(SHOAL_ENOENT),
                         failure([&] { ipam.allocateEndpoint(endpoint("nope", "x")); }));
  }

  void testExhaustion() {
    Ipam ipam;
    ipam.allocateNetwork(network("n", "10.1.0.0/30"));  // .1 gateway, .2 the one host
    ipam.allocateEndpoint(endpoint("n", "a"));
    std::string message;
    CPPUNIT_ASSERT_EQUAL(int(SHOAL_ENOSPC),
                         failure([&] { ipam.allocateEndpoint(endpoint("n", "b")); }, &message));
    CPPUNIT_ASSERT(message.find("no free address") != std::string::npos);
    // The whole default pool.
    Ipam pool;
    pool.allocateNetwork(network("all", "10.0.0.0/8"));
    CPPUNIT_ASSERT_EQUAL(int(SHOAL_ENOSPC),
                         failure([&] { pool.allocateNetwork(network("x")); }, &message));
    CPPUNIT_ASSERT(message.find("10.0.0.0/8") != std::string::npos);
  }

  void testRestoreNeverGivesTwice() {
    Ipam first;
    const std::string alloc = first.allocateNetwork(network("n"));
    const std::string e1 = first.allocateEndpoint(endpoint("n", "t1"));
    const std::string e2 = first.allocateEndpoint(endpoint("n", "t2"));
    // A new leader: endpoints may come before their network.
    Ipam second;
    second.restore("[" + e2 + "," + alloc + "," + e1 + "]");
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), second.networks());
    auto e3 = parse(second.allocateEndpoint(endpoint("n", "t3")));
    CPPUNIT_ASSERT(e3->getValue<std::string>("address") !=
                   parse(e1)->getValue<std::string>("address"));
    CPPUNIT_ASSERT(e3->getValue<std::string>("address") !=
                   parse(e2)->getValue<std::string>("address"));
    // The restored network's subnet and VNI are taken.
    auto other = parse(second.allocateNetwork(network("m")));
    CPPUNIT_ASSERT(other->getValue<std::string>("subnet") !=
                   parse(alloc)->getValue<std::string>("subnet"));
    CPPUNIT_ASSERT(other->getValue<int>("vni") != parse(alloc)->getValue<int>("vni"));
    // Restore replaces what was known.
    second.restore("[]");
    CPPUNIT_ASSERT_EQUAL(std::size_t(0), second.networks());
  }

  void testBadDocuments() {
    Ipam ipam;
    std::string message;
    CPPUNIT_ASSERT_EQUAL(int(SHOAL_EINVAL), failure([&] { ipam.allocateNetwork("nope"); }));
    CPPUNIT_ASSERT_EQUAL(int(SHOAL_EINVAL), failure([&] { ipam.allocateNetwork("{}"); }, &message));
    CPPUNIT_ASSERT(message.find("\"id\"") != std::string::npos);
    CPPUNIT_ASSERT_EQUAL(int(SHOAL_EINVAL), failure([&] {
                           ipam.allocateNetwork("{\"id\":\"x\",\"driver\":\"macvlan\"}");
                         }));
    CPPUNIT_ASSERT_EQUAL(int(SHOAL_EINVAL), failure([&] { ipam.allocateNetwork("{\"id\":7}"); }));
    CPPUNIT_ASSERT_EQUAL(int(SHOAL_EINVAL), failure([&] { ipam.restore("{}"); }));
    CPPUNIT_ASSERT_EQUAL(int(SHOAL_EINVAL),
                         failure([&] { ipam.restore("[{\"schema\":\"what\"}]"); }));
    CPPUNIT_ASSERT_EQUAL(int(SHOAL_EINVAL), failure([&] {
                           ipam.restore(
                               "[{\"schema\":\"shoal.network-alloc/v1\",\"id\":\"n\",\"subnet\":"
                               "\"10.0.0.0/24\",\"gateway\":\"10.0.0.1\",\"vni\":0}]");
                         }));
    ipam.allocateNetwork(network("n"));
    CPPUNIT_ASSERT_EQUAL(int(SHOAL_EINVAL),
                         failure([&] { ipam.allocateEndpoint(endpoint("n", "t", "garbage")); }));
    CPPUNIT_ASSERT_EQUAL(int(SHOAL_EINVAL), failure([&] { ipam.releaseEndpoint("{}"); }));
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(OverlayIpamTest);
