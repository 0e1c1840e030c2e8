// The routing mesh's rules (plugins/network-overlay/mesh/ruleset.hpp), without root: the host
// namespace's DNAT of every published port to the ingress sandbox, and the sandbox's rotation
// over the backends' addresses and target ports, each replaced in one transaction.
#include <cppunit/extensions/HelperMacros.h>

#include <string>
#include <vector>

#include "mesh/ruleset.hpp"

using namespace shoal::overlay::mesh;

namespace {

constexpr uint32_t kB1 = 0x0a000003;  // 10.0.0.3
constexpr uint32_t kB2 = 0x0a000004;  // 10.0.0.4

PublishedPort port(Protocol proto, uint16_t published, uint16_t target,
                   std::vector<uint32_t> backends) {
  PublishedPort p;
  p.protocol = proto;
  p.published = published;
  p.target = target;
  p.backends = std::move(backends);
  return p;
}

const char kReplace[] =
    "table ip shoal_mesh {\n}\ndelete table ip shoal_mesh\ntable ip shoal_mesh {\n";

}  // namespace

class OverlayMeshTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(OverlayMeshTest);
  CPPUNIT_TEST(testHostRulesetDnatsEveryLocalAddressToTheSandbox);
  CPPUNIT_TEST(testSandboxRulesetRotatesOverBackendsAndTargetPorts);
  CPPUNIT_TEST(testPortWithoutBackendsIsRefused);
  CPPUNIT_TEST(testNormalizedTextIsCanonical);
  CPPUNIT_TEST(testRemovalAndEmptySets);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testHostRulesetDnatsEveryLocalAddressToTheSandbox() {
    const std::string rules = renderHostRuleset(
        {port(Protocol::kTcp, 8080, 80, {kB1}), port(Protocol::kUdp, 53, 5353, {})});
    const std::string dnat =
        "\t\tfib daddr type local tcp dport 8080 dnat to 169.254.221.2\n"
        "\t\tfib daddr type local udp dport 53 dnat to 169.254.221.2\n";
    CPPUNIT_ASSERT_EQUAL(
        std::string(kReplace) +
            "\tchain prerouting {\n\t\ttype nat hook prerouting priority -100; policy accept;\n" +
            dnat +
            "\t}\n\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n" +
            dnat +
            "\t}\n\tchain postrouting {\n\t\ttype nat hook postrouting priority 100; policy "
            "accept;\n\t\tip saddr 127.0.0.0/8 ip daddr 169.254.221.2 oifname \"shoal-ig0\" "
            "masquerade\n\t}\n}\n",
        rules);
  }

  void testSandboxRulesetRotatesOverBackendsAndTargetPorts() {
    const std::string rules = renderSandboxRuleset({port(Protocol::kTcp, 8080, 80, {kB2, kB1}),
                                                    port(Protocol::kUdp, 53, 5353, {kB1}),
                                                    port(Protocol::kSctp, 9, 9, {kB2})});
    CPPUNIT_ASSERT_EQUAL(
        std::string(kReplace) +
            "\tchain prerouting {\n\t\ttype nat hook prerouting priority -100; policy accept;\n"
            "\t\ttcp dport 8080 dnat ip to numgen inc mod 2 map { 0 : 10.0.0.3 . 80, "
            "1 : 10.0.0.4 . 80 }\n"
            "\t\tudp dport 53 dnat ip to 10.0.0.3:5353\n"
            "\t\tsctp dport 9 dnat ip to 10.0.0.4:9\n"
            "\t}\n\tchain postrouting {\n\t\ttype nat hook postrouting priority 100; policy "
            "accept;\n\t\toifname \"eth0\" masquerade\n\t}\n}\n",
        rules);
  }

  void testPortWithoutBackendsIsRefused() {
    const std::string rules =
        renderSandboxRuleset({port(Protocol::kTcp, 8080, 80, {}), port(Protocol::kUdp, 53, 53, {}),
                              port(Protocol::kTcp, 9090, 90, {kB1})});
    CPPUNIT_ASSERT(rules.find("tcp dport 8080 dnat") == std::string::npos);
    CPPUNIT_ASSERT(rules.find("tcp dport 9090 dnat ip to 10.0.0.3:90\n") != std::string::npos);
    CPPUNIT_ASSERT(rules.find("\tchain input {\n\t\ttype filter hook input priority 0; policy "
                              "accept;\n\t\ttcp dport 8080 reject with tcp reset\n\t\tudp dport "
                              "53 reject with icmp type port-unreachable\n\t}\n") !=
                   std::string::npos);
    // With backends everywhere, no filter chain (it would see every packet).
    CPPUNIT_ASSERT(renderSandboxRuleset({port(Protocol::kTcp, 1, 1, {kB1})}).find("chain input") ==
                   std::string::npos);
  }

  void testNormalizedTextIsCanonical() {
    const std::vector<PublishedPort> a = {port(Protocol::kUdp, 53, 53, {kB2, kB1, kB2, 0}),
                                          port(Protocol::kTcp, 8080, 80, {kB1})};
    const std::vector<PublishedPort> b = {port(Protocol::kTcp, 8080, 80, {kB1}),
                                          port(Protocol::kUdp, 53, 53, {kB1, kB2}),
                                          port(Protocol::kTcp, 8080, 81, {kB2})};  // dropped
    CPPUNIT_ASSERT_EQUAL(renderSandboxRuleset(a), renderSandboxRuleset(b));
    CPPUNIT_ASSERT_EQUAL(renderHostRuleset(a), renderHostRuleset(b));
    const std::vector<PublishedPort> n = normalizePorts(b);
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), n.size());
    CPPUNIT_ASSERT(n[0].protocol == Protocol::kTcp && n[0].target == 80);
    CPPUNIT_ASSERT((n[1].backends == std::vector<uint32_t>{kB1, kB2}));
  }

  void testRemovalAndEmptySets() {
    CPPUNIT_ASSERT_EQUAL(std::string("table ip shoal_mesh {\n}\ndelete table ip shoal_mesh\n"),
                         renderRemoval());
    const std::string empty = renderHostRuleset({});
    CPPUNIT_ASSERT(empty.find("dport") == std::string::npos);
    CPPUNIT_ASSERT(empty.rfind(kReplace, 0) == 0);
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(OverlayMeshTest);
