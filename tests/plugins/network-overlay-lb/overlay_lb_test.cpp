// The VIP load balancer without root: the nftables text for VIPs with 0, 1 and 3 backends and
// for several VIPs (exact text, numgen map syntax, the same text whatever the input order or
// repetitions), the table removal batch, conntrack listing parsing, the choice of stale flows,
// and the Balancer's refusals that need no namespace.
#include <cppunit/extensions/HelperMacros.h>

#include <arpa/inet.h>

#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "lb/balancer.hpp"
#include "lb/conntrack.hpp"
#include "lb/ruleset.hpp"

using namespace shoal::overlay::lb;

namespace {

uint32_t ip(const char* text) {
  in_addr a{};
  CPPUNIT_ASSERT(inet_pton(AF_INET, text, &a) == 1);
  return ntohl(a.s_addr);
}

const std::string kPrologue =
    "table ip shoal_lb {\n"
    "}\n"
    "delete table ip shoal_lb\n"
    "table ip shoal_lb {\n";

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

class LbRulesetTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(LbRulesetTest);
  CPPUNIT_TEST(testFormatsAddressesAndChainNames);
  CPPUNIT_TEST(testNoVipsGivesEmptyNatChainAndNoFilterChain);
  CPPUNIT_TEST(testVipWithoutBackendsIsRejected);
  CPPUNIT_TEST(testVipWithOneBackendIsPlainDnat);
  CPPUNIT_TEST(testVipWithThreeBackendsUsesNumgenMap);
  CPPUNIT_TEST(testSeveralVipsAreDispatchedByOneVmap);
  CPPUNIT_TEST(testOutputIsDeterministic);
  CPPUNIT_TEST(testRepeatedVipsAndBackendsAreMerged);
  CPPUNIT_TEST(testRemovalCreatesThenDeletes);
  CPPUNIT_TEST(testHundredVipsOfTenBackends);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testFormatsAddressesAndChainNames() {
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.0.1"), formatIpv4(0x0a000001));
    CPPUNIT_ASSERT_EQUAL(std::string("255.255.255.255"), formatIpv4(0xffffffff));
    CPPUNIT_ASSERT_EQUAL(std::string("0.0.0.0"), formatIpv4(0));
    CPPUNIT_ASSERT_EQUAL(std::string("vip_10_99_7_100"), vipChainName(ip("10.99.7.100")));
  }

  void testNoVipsGivesEmptyNatChainAndNoFilterChain() {
    CPPUNIT_ASSERT_EQUAL(kPrologue +
                             "\tchain nat_output {\n"
                             "\t\ttype nat hook output priority -100; policy accept;\n"
                             "\t}\n"
                             "}\n",
                         renderRuleset(std::vector<Vip>{}));
  }

  void testVipWithoutBackendsIsRejected() {
    CPPUNIT_ASSERT_EQUAL(kPrologue +
                             "\tchain nat_output {\n"
                             "\t\ttype nat hook output priority -100; policy accept;\n"
                             "\t}\n"
                             "\tset unavailable {\n"
                             "\t\ttype ipv4_addr\n"
                             "\t\telements = { 10.0.0.5 }\n"
                             "\t}\n"
                             "\tchain filter_output {\n"
                             "\t\ttype filter hook output priority 0; policy accept;\n"
                             "\t\tip daddr @unavailable meta l4proto tcp reject with tcp reset\n"
                             "\t\tip daddr @unavailable reject with icmp type admin-prohibited\n"
                             "\t}\n"
                             "}\n",
                         renderRuleset({Vip{ip("10.0.0.5"), {}}}));
  }

  void testVipWithOneBackendIsPlainDnat() {
    CPPUNIT_ASSERT_EQUAL(kPrologue +
                             "\tchain nat_output {\n"
                             "\t\ttype nat hook output priority -100; policy accept;\n"
                             "\t\tip daddr vmap {\n"
                             "\t\t\t10.0.0.5 : jump vip_10_0_0_5\n"
                             "\t\t}\n"
                             "\t}\n"
                             "\tchain vip_10_0_0_5 {\n"
                             "\t\tdnat to 10.0.1.7\n"
                             "\t}\n"
                             "}\n",
                         renderRuleset({Vip{ip("10.0.0.5"), {ip("10.0.1.7")}}}));
  }

  void testVipWithThreeBackendsUsesNumgenMap() {
    const std::string text =
        renderRuleset({Vip{ip("10.0.0.5"), {ip("10.0.1.9"), ip("10.0.1.2"), ip("10.0.1.30")}}});
    CPPUNIT_ASSERT_EQUAL(kPrologue +
                             "\tchain nat_output {\n"
                             "\t\ttype nat hook output priority -100; policy accept;\n"
                             "\t\tip daddr vmap {\n"
                             "\t\t\t10.0.0.5 : jump vip_10_0_0_5\n"
                             "\t\t}\n"
                             "\t}\n"
                             "\tchain vip_10_0_0_5 {\n"
                             "\t\tdnat to numgen inc mod 3 map { 0 : 10.0.1.2, 1 : 10.0.1.9, "
                             "2 : 10.0.1.30 }\n"
                             "\t}\n"
                             "}\n",
                         text);
  }

  void testSeveralVipsAreDispatchedByOneVmap() {
    const std::string text = renderRuleset({
        Vip{ip("10.0.0.7"), {ip("10.0.1.1"), ip("10.0.1.2")}},
        Vip{ip("10.0.0.5"), {ip("10.0.2.1")}},
        Vip{ip("10.0.0.6"), {}},
        Vip{ip("10.0.0.4"), {}},
    });
    CPPUNIT_ASSERT_EQUAL(kPrologue +
                             "\tchain nat_output {\n"
                             "\t\ttype nat hook output priority -100; policy accept;\n"
                             "\t\tip daddr vmap {\n"
                             "\t\t\t10.0.0.5 : jump vip_10_0_0_5,\n"
                             "\t\t\t10.0.0.7 : jump vip_10_0_0_7\n"
                             "\t\t}\n"
                             "\t}\n"
                             "\tchain vip_10_0_0_5 {\n"
                             "\t\tdnat to 10.0.2.1\n"
                             "\t}\n"
                             "\tchain vip_10_0_0_7 {\n"
                             "\t\tdnat to numgen inc mod 2 map { 0 : 10.0.1.1, 1 : 10.0.1.2 }\n"
                             "\t}\n"
                             "\tset unavailable {\n"
                             "\t\ttype ipv4_addr\n"
                             "\t\telements = { 10.0.0.4, 10.0.0.6 }\n"
                             "\t}\n"
                             "\tchain filter_output {\n"
                             "\t\ttype filter hook output priority 0; policy accept;\n"
                             "\t\tip daddr @unavailable meta l4proto tcp reject with tcp reset\n"
                             "\t\tip daddr @unavailable reject with icmp type admin-prohibited\n"
                             "\t}\n"
                             "}\n",
                         text);
  }

  void testOutputIsDeterministic() {
    std::vector<Vip> vips;
    for (uint32_t v = 0; v < 20; ++v) {
      Vip vip{ip("10.1.0.1") + v, {}};
      for (uint32_t b = 0; b < v % 5; ++b) vip.backends.push_back(ip("10.2.0.1") + v * 10 + b);
      vips.push_back(vip);
    }
    const std::string first = renderRuleset(vips);
    CPPUNIT_ASSERT_EQUAL(first, renderRuleset(vips));
    std::vector<Vip> shuffled = vips;
    std::reverse(shuffled.begin(), shuffled.end());
    for (Vip& vip : shuffled) std::reverse(vip.backends.begin(), vip.backends.end());
    CPPUNIT_ASSERT_EQUAL(first, renderRuleset(shuffled));
  }

  void testRepeatedVipsAndBackendsAreMerged() {
    const std::vector<Vip> repeated = {
        Vip{ip("10.0.0.5"), {ip("10.0.1.2"), ip("10.0.1.2")}},
        Vip{ip("10.0.0.5"), {ip("10.0.1.1")}},
    };
    CPPUNIT_ASSERT_EQUAL(renderRuleset({Vip{ip("10.0.0.5"), {ip("10.0.1.1"), ip("10.0.1.2")}}}),
                         renderRuleset(repeated));
    const VipTable table = normalizeVips(repeated);
    CPPUNIT_ASSERT_EQUAL(size_t(1), table.size());
    CPPUNIT_ASSERT(table.at(ip("10.0.0.5")) ==
                   (std::vector<uint32_t>{ip("10.0.1.1"), ip("10.0.1.2")}));
    // A VIP listed once without backends and once with them has those backends.
    const std::string text = renderRuleset(
        std::vector<Vip>{Vip{ip("10.0.0.5"), {}}, Vip{ip("10.0.0.5"), {ip("10.0.1.1")}}});
    CPPUNIT_ASSERT_EQUAL(size_t(0), count(text, "unavailable"));
    CPPUNIT_ASSERT_EQUAL(size_t(1), count(text, "dnat to 10.0.1.1"));
  }

  void testRemovalCreatesThenDeletes() {
    CPPUNIT_ASSERT_EQUAL(std::string("table ip shoal_lb {\n}\ndelete table ip shoal_lb\n"),
                         renderRemoval());
  }

  void testHundredVipsOfTenBackends() {
    std::vector<Vip> vips;
    for (uint32_t v = 0; v < 100; ++v) {
      Vip vip{ip("10.200.0.1") + v, {}};
      for (uint32_t b = 0; b < 10; ++b) vip.backends.push_back(ip("10.201.0.1") + v * 10 + b);
      vips.push_back(vip);
    }
    const std::string text = renderRuleset(vips);
    CPPUNIT_ASSERT_EQUAL(size_t(100), count(text, "dnat to numgen inc mod 10 map { 0 : "));
    CPPUNIT_ASSERT_EQUAL(size_t(100), count(text, " : jump vip_10_200_0_"));
    CPPUNIT_ASSERT_EQUAL(size_t(101), count(text, "\tchain "));
    CPPUNIT_ASSERT_EQUAL(size_t(1), count(text, "ip daddr vmap {"));
    CPPUNIT_ASSERT_EQUAL(size_t(0), count(text, "filter_output"));
  }
};

class LbConntrackTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(LbConntrackTest);
  CPPUNIT_TEST(testParsesListing);
  CPPUNIT_TEST(testStaleFlowsAreThoseNotGoingToCurrentBackends);
  CPPUNIT_TEST(testFindsConntrackOutsidePath);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testParsesListing() {
    const std::string listing =
        "tcp      6 117 TIME_WAIT src=10.99.7.10 dst=10.99.7.100 sport=40000 dport=8080 "
        "src=10.99.7.3 dst=10.99.7.10 sport=8080 dport=40000 [ASSURED] mark=0 use=1\n"
        "udp      17 29 src=10.99.7.10 dst=10.99.7.100 sport=5000 dport=53 [UNREPLIED] "
        "src=10.99.7.1 dst=10.99.7.10 sport=53 dport=5000 mark=0 use=1\n"
        "icmp     1 29 src=127.0.0.1 dst=127.0.0.1 type=8 code=0 id=6496 src=127.0.0.1 "
        "dst=127.0.0.1 type=0 code=0 id=6496 mark=0 use=1\n"
        "garbage line\n"
        "tcp 6 1 src=1.2.3.4 dst=bad sport=1 dport=2 src=5.6.7.8 dst=1.2.3.4\n"
        "\n";
    const std::vector<Flow> flows = parseConntrackListing(listing);
    CPPUNIT_ASSERT_EQUAL(size_t(3), flows.size());
    CPPUNIT_ASSERT_EQUAL(ip("10.99.7.100"), flows[0].origDst);
    CPPUNIT_ASSERT_EQUAL(ip("10.99.7.3"), flows[0].replySrc);
    CPPUNIT_ASSERT_EQUAL(ip("10.99.7.1"), flows[1].replySrc);
    CPPUNIT_ASSERT_EQUAL(ip("127.0.0.1"), flows[2].origDst);
    CPPUNIT_ASSERT(parseConntrackListing("").empty());
  }

  void testStaleFlowsAreThoseNotGoingToCurrentBackends() {
    const uint32_t vip = ip("10.0.0.5");
    const uint32_t gone = ip("10.0.0.6");
    const uint32_t other = ip("192.0.2.1");
    const std::vector<Flow> flows = {
        {vip, ip("10.0.1.1")},   // current backend: kept
        {vip, ip("10.0.1.3")},   // removed backend
        {vip, ip("10.0.1.3")},   // same pair again: deleted once
        {vip, vip},              // never translated (sent before the rules): redone
        {gone, ip("10.0.1.1")},  // VIP dropped
        {other, other},          // not a VIP: never touched
    };
    const VipTable current = {{vip, {ip("10.0.1.1"), ip("10.0.1.2")}}};
    const auto stale = staleFlowPairs(flows, {vip, gone}, current);
    const std::vector<std::pair<uint32_t, uint32_t>> expected = {
        {vip, ip("10.0.1.3")}, {vip, vip}, {gone, ip("10.0.1.1")}};
    using Pairs = std::set<std::pair<uint32_t, uint32_t>>;
    CPPUNIT_ASSERT(Pairs(expected.begin(), expected.end()) == Pairs(stale.begin(), stale.end()));
    CPPUNIT_ASSERT_EQUAL(expected.size(), stale.size());
    CPPUNIT_ASSERT(staleFlowPairs(flows, {}, current).empty());
  }

  void testFindsConntrackOutsidePath() {
    const std::string found = findConntrack();
    if (found.empty()) return;  // not installed here: nothing to check
    CPPUNIT_ASSERT(found.size() > std::string("/conntrack").size());
    CPPUNIT_ASSERT_EQUAL(std::string("/conntrack"), found.substr(found.size() - 10));
  }
};

class LbBalancerRefusalsTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(LbBalancerRefusalsTest);
  CPPUNIT_TEST(testRefusesEmptyIdsAndZeroAddresses);
  CPPUNIT_TEST(testRefusesMissingNamespaceAndForgetsTask);
  CPPUNIT_TEST(testRemoveOfUnknownTaskIsOk);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testRefusesEmptyIdsAndZeroAddresses() {
    Balancer balancer;
    Status s = balancer.apply("", "/proc/self/ns/net", {});
    CPPUNIT_ASSERT(!s.isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("lb: empty task id"), s.message());
    s = balancer.apply("t1", "", {});
    CPPUNIT_ASSERT(!s && s.message().find("empty network namespace path") != std::string::npos);
    s = balancer.apply("t1", "/proc/self/ns/net", {Vip{0, {ip("10.0.0.1")}}});
    CPPUNIT_ASSERT(!s && s.message().find("VIP 0.0.0.0") != std::string::npos);
    s = balancer.apply("t1", "/proc/self/ns/net", {Vip{ip("10.0.0.1"), {ip("10.0.0.2"), 0}}});
    CPPUNIT_ASSERT(!s && s.message().find("backend 0.0.0.0 for VIP 10.0.0.1") != std::string::npos);
    CPPUNIT_ASSERT_EQUAL(size_t(0), balancer.taskCount());
  }

  void testRefusesMissingNamespaceAndForgetsTask() {
    Balancer balancer;
    const Status s = balancer.apply("t1", "/nonexistent/netns/x", {Vip{ip("10.0.0.1"), {}}});
    CPPUNIT_ASSERT(!s.isOk());
    CPPUNIT_ASSERT_EQUAL(
        std::string("lb: task t1: cannot enter network namespace /nonexistent/netns/x: "
                    "No such file or directory"),
        s.message());
    CPPUNIT_ASSERT_EQUAL(size_t(0), balancer.taskCount());
  }

  void testRemoveOfUnknownTaskIsOk() {
    Balancer balancer;
    CPPUNIT_ASSERT(balancer.remove("never-applied").isOk());
    CPPUNIT_ASSERT(balancer.remove("").isOk());
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(LbRulesetTest);
CPPUNIT_TEST_SUITE_REGISTRATION(LbConntrackTest);
CPPUNIT_TEST_SUITE_REGISTRATION(LbBalancerRefusalsTest);
