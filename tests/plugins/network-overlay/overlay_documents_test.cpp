// network-overlay's node-side documents and state files (plugins/network-overlay/dataplane):
// attach and peers documents are refused with a message naming the field, addresses parse
// strictly, a task's state file round-trips, and a dataplane refuses work it cannot do without
// touching the node (no root needed: nothing here makes a namespace).
#include <cppunit/extensions/HelperMacros.h>

#include <shoal/plugin.h>
#include <sys/stat.h>

#include <cstdlib>
#include <future>
#include <string>

#include "dataplane/dataplane.hpp"
#include "dataplane/documents.hpp"
#include "dataplane/host_ports.hpp"
#include "dataplane/state_file.hpp"
#include "tests/support/temp_dir.h"

using namespace shoal::overlay::dataplane;
using shoal::sdk::Error;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A valid attach document, with `edit` applied to its text (a plain substring replacement).
std::string attachDoc(const std::string& from = "", const std::string& to = "") {
  std::string doc =
      R"({"schema":"shoal.attach/v1","task_id":"t1","node_addr":"192.168.99.11",)"
      R"("endpoints":[{"network_id":"n1","address":"10.0.1.5/24","mac":"02:42:0a:00:01:05",)"
      R"("aliases":["db"]}],)"
      R"("networks":[{"id":"n1","name":"backend","subnet":"10.0.1.0/24","gateway":"10.0.1.1",)"
      R"("vni":4097,"options":{}}]})";
  if (!from.empty()) {
    const std::size_t at = doc.find(from);
    CPPUNIT_ASSERT_MESSAGE("test bug: " + from + " not in the document", at != std::string::npos);
    doc.replace(at, from.size(), to);
  }
  return doc;
}

// The message of the SHOAL_EINVAL that parsing `doc` throws.
std::string attachError(const std::string& doc, const std::string& taskId = "t1") {
  try {
    parseAttach(taskId, doc);
  } catch (const Error& e) {
    CPPUNIT_ASSERT_EQUAL_MESSAGE(e.what(), SHOAL_EINVAL, e.code());
    return e.what();
  }
  CPPUNIT_FAIL("accepted: " + doc);
  return {};
}

std::string peersError(const std::string& doc) {
  try {
    parsePeers(doc);
  } catch (const Error& e) {
    CPPUNIT_ASSERT_EQUAL_MESSAGE(e.what(), SHOAL_EINVAL, e.code());
    return e.what();
  }
  CPPUNIT_FAIL("accepted: " + doc);
  return {};
}

void assertMentions(const std::string& message, const std::string& field) {
  CPPUNIT_ASSERT_MESSAGE(message + " (expected to name " + field + ")", contains(message, field));
}

}  // namespace

class OverlayDocumentsTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(OverlayDocumentsTest);
  CPPUNIT_TEST(testMacParsing);
  CPPUNIT_TEST(testIpv4AndCidrParsing);
  CPPUNIT_TEST(testValidAttachParses);
  CPPUNIT_TEST(testBadAttachDocumentsNameTheField);
  CPPUNIT_TEST(testTaskIdsThatAreNotFileNamesAreRefused);
  CPPUNIT_TEST(testEncryptedNetworksAndTunnels);
  CPPUNIT_TEST(testPeersParseAndBadPeersNameTheField);
  CPPUNIT_TEST(testStateFileRoundTrips);
  CPPUNIT_TEST(testHostPortsParseRoundTripAndRender);
  CPPUNIT_TEST(testAttachWithForeignNodeAddrFailsWithoutBuilding);
  CPPUNIT_TEST(testDetachOfUnknownTaskSucceeds);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testMacParsing() {
    MacAddress m;
    CPPUNIT_ASSERT(parseMac("02:42:0A:00:01:ff", &m));
    CPPUNIT_ASSERT_EQUAL(std::string("02:42:0a:00:01:ff"), m.str());
    for (const char* bad : {"", "02:42:0a:00:01", "02:42:0a:00:01:05:06", "02-42-0a-00-01-05",
                            "2:42:0a:00:01:05:", "02:42:0a:00:01:g5", "0242.0a00.0105"}) {
      CPPUNIT_ASSERT_MESSAGE(bad, !parseMac(bad, &m));
    }
  }

  void testIpv4AndCidrParsing() {
    uint32_t a = 0;
    CPPUNIT_ASSERT(parseIpv4("10.0.1.5", &a));
    CPPUNIT_ASSERT_EQUAL(uint32_t(0x0a000105), a);
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.1.5"), formatIpv4(a));
    for (const char* bad : {"", "10.0.1", "10.0.1.5.6", "10.0.1.256", "10.0.01.5", "10.0.1.5 ",
                            "a.b.c.d", "10..1.5", "1000.0.1.5"}) {
      CPPUNIT_ASSERT_MESSAGE(bad, !parseIpv4(bad, &a));
    }
    Cidr c;
    CPPUNIT_ASSERT(parseCidr("10.0.1.5/24", &c));
    CPPUNIT_ASSERT_EQUAL(24, c.prefix);
    CPPUNIT_ASSERT_EQUAL(uint32_t(0x0a000100), c.network());
    CPPUNIT_ASSERT(c.contains(0x0a0001fe) && !c.contains(0x0a000200));
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.1.5/24"), c.str());
    CPPUNIT_ASSERT(parseCidr("0.0.0.0/0", &c) && c.contains(0xffffffff));
    for (const char* bad : {"10.0.1.5", "10.0.1.5/", "10.0.1.5/33", "10.0.1.5/024", "10.0.1/24",
                            "10.0.1.5/2a", "/24"}) {
      CPPUNIT_ASSERT_MESSAGE(bad, !parseCidr(bad, &c));
    }
  }

  void testValidAttachParses() {
    const AttachRequest r = parseAttach("t1", attachDoc());
    CPPUNIT_ASSERT_EQUAL(std::string("t1"), r.taskId);
    CPPUNIT_ASSERT_EQUAL(std::string("192.168.99.11"), formatIpv4(r.nodeAddr));
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), r.endpoints.size());
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), r.networks.size());
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.1.5/24"), r.endpoints[0].address.str());
    CPPUNIT_ASSERT_EQUAL(std::string("02:42:0a:00:01:05"), r.endpoints[0].mac.str());
    CPPUNIT_ASSERT_EQUAL(uint32_t(4097), r.networks[0].vni);
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.1.1"), formatIpv4(r.networks[0].gateway));
    CPPUNIT_ASSERT_EQUAL(std::string("backend"), r.networks[0].name);
  }

  void testBadAttachDocumentsNameTheField() {
    assertMentions(attachError("not json"), "not valid JSON");
    assertMentions(attachError("[1]"), "must be a JSON object");
    assertMentions(attachError(attachDoc("shoal.attach/v1", "shoal.attach/v2")), "schema");
    assertMentions(attachError(attachDoc(R"("task_id":"t1",)", "")), "task_id is required");
    assertMentions(attachError(attachDoc(), "t2"), "task_id \"t1\" is not the task being attached");
    assertMentions(attachError(attachDoc("\"192.168.99.11\"", "\"192.168.99\"")), "node_addr");
    assertMentions(attachError(attachDoc("\"192.168.99.11\"", "7")), "node_addr must be a string");
    assertMentions(attachError(attachDoc("\"10.0.1.5/24\"", "\"10.0.1.5\"")),
                   "endpoints[0].address \"10.0.1.5\" is not an IPv4 CIDR");
    assertMentions(attachError(attachDoc("\"10.0.1.5/24\"", "\"10.0.2.5/24\"")),
                   "endpoints[0].address");
    assertMentions(attachError(attachDoc("\"10.0.1.5/24\"", "\"10.0.1.5/16\"")),
                   "endpoints[0].address");
    assertMentions(attachError(attachDoc("\"10.0.1.5/24\"", "\"10.0.1.1/24\"")),
                   "endpoints[0].address");  // the gateway's
    assertMentions(attachError(attachDoc("02:42:0a:00:01:05", "02:42:0a:00:01")),
                   "endpoints[0].mac \"02:42:0a:00:01\" is not a MAC address");
    assertMentions(attachError(attachDoc("02:42:0a:00:01:05", "01:00:5e:00:00:01")),
                   "endpoints[0].mac \"01:00:5e:00:00:01\" is not a unicast MAC address");
    assertMentions(attachError(attachDoc(R"("network_id":"n1")", R"("network_id":"n9")")),
                   "endpoints[0].network_id \"n9\" is not one of \"networks\"");
    assertMentions(attachError(attachDoc(R"(["db"])", R"([1])")), "endpoints[0].aliases[0]");
    assertMentions(attachError(attachDoc("\"endpoints\":[", "\"endpoints\":[7,")),
                   "endpoints[0] must be an object");
    assertMentions(attachError(attachDoc("\"10.0.1.0/24\"", "\"10.0.1.0/33\"")),
                   "networks[0].subnet");
    assertMentions(attachError(attachDoc("\"10.0.1.0/24\"", "\"10.0.1.4/24\"")),
                   "networks[0].subnet \"10.0.1.4/24\" has host bits set");
    assertMentions(attachError(attachDoc("\"10.0.1.1\"", "\"10.0.2.1\"")), "networks[0].gateway");
    assertMentions(attachError(attachDoc("4097", "0")),
                   "networks[0].vni must be from 1 to 16777215");
    assertMentions(attachError(attachDoc("4097", "16777216")), "networks[0].vni");
    assertMentions(attachError(attachDoc("4097", "\"4097\"")),
                   "networks[0].vni must be an integer");
    assertMentions(attachError(attachDoc("4097", "true")), "networks[0].vni must be an integer");
    assertMentions(attachError(attachDoc(R"("vni":4097,)", "")), "networks[0].vni is required");
    assertMentions(attachError(attachDoc(R"("id":"n1")", R"("id":"n/1")")), "networks[0].id");
    assertMentions(attachError(attachDoc(R"("networks":[)", R"("networks":{}, "x":[)")),
                   "networks must be an array");
    // Two endpoints on one network.
    assertMentions(
        attachError(attachDoc(
            R"(}],"networks")",
            R"(},{"network_id":"n1","address":"10.0.1.6/24","mac":"02:42:0a:00:01:06"}],"networks")")),
        "endpoints[1].network_id \"n1\": a task has at most one endpoint per network");
  }

  void testTaskIdsThatAreNotFileNamesAreRefused() {
    for (const char* bad :
         {"", "a/b", "..", "a..b", ".hidden", "-x", "sb-abc", "t.json", "t.tmp", "t 1", "t\n"}) {
      const std::string doc = attachDoc(R"("task_id":"t1")", std::string("\"task_id\":\"x\""));
      const std::string message = attachError(doc, bad);
      assertMentions(message, "task_id");
    }
    CPPUNIT_ASSERT_NO_THROW(checkId("x", "task_id", "abc123def456ghi789jkl0mno"));
    CPPUNIT_ASSERT_NO_THROW(checkId("x", "task_id", "web.1.x-y_z"));
  }

  void testEncryptedNetworksAndTunnels() {
    // --opt encrypted (any value) marks the network, and the state file keeps it.
    const AttachRequest r =
        parseAttach("t1", attachDoc(R"("options":{})", R"("options":{"encrypted":""})"));
    CPPUNIT_ASSERT(r.networks.at(0).encrypted);
    CPPUNIT_ASSERT(!parseAttach("t1", attachDoc()).networks.at(0).encrypted);
    TaskState s;
    s.taskId = r.taskId;
    s.netns = "/run/x/t1";
    s.nodeAddr = r.nodeAddr;
    s.endpoints = r.endpoints;
    s.networks = r.networks;
    CPPUNIT_ASSERT(taskStateFromJson("t1", toJson(s)).networks.at(0).encrypted);

    // A peer set's tunnel: keys are base64 of 32 bytes, addresses in the tunnel subnet.
    const std::string key = "YAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const std::string pub = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    const std::string ok =
        R"({"schema":"shoal.peers/v1","network_id":"n1","peers":[],"tunnel":{"private_key":")" +
        key +
        R"(","address":"169.254.64.1/18","nodes":[{"node_addr":"192.168.99.12",)"
        R"("public_key":")" +
        pub + R"(","address":"169.254.64.2"}]}})";
    const PeerSet set = parsePeers(ok);
    CPPUNIT_ASSERT(set.tunnel.has_value());
    CPPUNIT_ASSERT_EQUAL(std::string("169.254.64.1"), formatIpv4(set.tunnel->address));
    CPPUNIT_ASSERT_EQUAL(18, set.tunnel->prefix);
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), set.tunnel->nodes.size());
    uint32_t node = 0;
    CPPUNIT_ASSERT(parseIpv4("192.168.99.12", &node));
    CPPUNIT_ASSERT_EQUAL(std::string("169.254.64.2"),
                         formatIpv4(set.tunnel->nodes.at(node).address));
    CPPUNIT_ASSERT_EQUAL(0x60, int(set.tunnel->privateKey[0]));  // "YA" decodes to 0x60
    CPPUNIT_ASSERT(!parsePeers(R"({"schema":"shoal.peers/v1","network_id":"n1","peers":[]})")
                        .tunnel.has_value());
    auto edit = [&](const std::string& from, const std::string& to) {
      std::string doc = ok;
      doc.replace(doc.find(from), from.size(), to);
      return doc;
    };
    assertMentions(peersError(edit(key, "short=")), "tunnel.private_key is not a WireGuard key");
    assertMentions(peersError(edit(pub, key.substr(0, 42) + "==")), "tunnel.nodes[0].public_key");
    assertMentions(peersError(edit("169.254.64.2", "10.1.1.1")),
                   "tunnel.nodes[0].address \"10.1.1.1\" is not in the tunnel subnet");
    assertMentions(peersError(edit("169.254.64.2", "169.254.64.1")), "listed twice");
    assertMentions(peersError(edit("169.254.64.1/18", "169.254.64.1/31")), "tunnel.address");

    // Without wireguard-go on PATH the tunnel is unavailable and says why; the name of its
    // interface fits IFNAMSIZ and differs between instances.
    const char* path = std::getenv("PATH");
    const std::string saved = path != nullptr ? path : "";
    ::setenv("PATH", "/nonexistent", 1);
    const std::string why = wireguardUnavailable();
    ::setenv("PATH", saved.c_str(), 1);
    assertMentions(why, "wireguard-go is not on PATH");
    CPPUNIT_ASSERT(interfaceName("/run/a/netns").size() <= 15);
    CPPUNIT_ASSERT(interfaceName("/run/a/netns") != interfaceName("/run/b/netns"));
    CPPUNIT_ASSERT_EQUAL(interfaceName("/run/a/netns"), interfaceName("/run/a/netns"));

    // The filter of clear VXLAN: the VNIs of encrypted networks, unless from the tunnel.
    const std::string filter = renderTunnelFilter("swg0000abcd", 4789, {4097, 4100});
    assertMentions(filter,
                   "iifname != \"swg0000abcd\" udp dport 4789 @th,96,24 { 4097, 4100 } drop");
    assertMentions(filter, "delete table inet shoal_tunnel");
    CPPUNIT_ASSERT_EQUAL(
        std::string("table inet shoal_tunnel {}\ndelete table inet shoal_tunnel\n"),
        renderTunnelFilter("swg0000abcd", 4789, {}));
  }

  void testPeersParseAndBadPeersNameTheField() {
    const std::string ok =
        R"({"schema":"shoal.peers/v1","network_id":"n1","peers":[)"
        R"({"address":"10.0.1.6","mac":"02:42:0a:00:01:06","node_addr":"192.168.99.12"},)"
        R"({"address":"10.0.1.7","mac":"02:42:0a:00:01:07","node_addr":"192.168.99.13"}]})";
    const PeerSet set = parsePeers(ok);
    CPPUNIT_ASSERT_EQUAL(std::string("n1"), set.networkId);
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), set.peers.size());
    CPPUNIT_ASSERT_EQUAL(std::string("192.168.99.13"), formatIpv4(set.peers[1].nodeAddr));
    CPPUNIT_ASSERT_EQUAL(
        std::size_t(0),
        parsePeers(R"({"schema":"shoal.peers/v1","network_id":"n1","peers":[]})").peers.size());
    auto edit = [&](const std::string& from, const std::string& to) {
      std::string doc = ok;
      doc.replace(doc.find(from), from.size(), to);
      return doc;
    };
    assertMentions(peersError(edit("shoal.peers/v1", "shoal.attach/v1")), "schema");
    assertMentions(peersError(edit(R"("network_id":"n1",)", "")), "network_id is required");
    assertMentions(peersError(edit("\"10.0.1.6\"", "\"10.0.1.6/24\"")), "peers[0].address");
    assertMentions(peersError(edit("02:42:0a:00:01:07", "zz:42:0a:00:01:07")), "peers[1].mac");
    assertMentions(peersError(edit("\"192.168.99.12\"", "12")), "peers[0].node_addr");
    assertMentions(peersError(edit("\"10.0.1.7\"", "\"10.0.1.6\"")),
                   "peers[1].address \"10.0.1.6\" is listed twice");
    assertMentions(peersError(edit("02:42:0a:00:01:07", "02:42:0a:00:01:06")),
                   "peers[1].mac \"02:42:0a:00:01:06\" is listed twice");
    assertMentions(peersError(edit(R"("peers":[)", R"("peers":"x","y":[)")),
                   "peers must be an array");
  }

  void testStateFileRoundTrips() {
    shoal::test::TempDir dir;
    TaskState s;
    const AttachRequest r = parseAttach("t1", attachDoc());
    s.taskId = r.taskId;
    s.netns = dir.file("t1");
    s.nodeAddr = r.nodeAddr;
    s.endpoints = r.endpoints;
    s.networks = r.networks;
    const std::string path = dir.file("t1.json");
    writeFileAtomic(path, toJson(s));
    struct stat st {};
    CPPUNIT_ASSERT(stat((path + ".tmp").c_str(), &st) != 0);  // renamed into place
    const TaskState back = taskStateFromJson("t1", readWholeFile(path));
    CPPUNIT_ASSERT_EQUAL(s.taskId, back.taskId);
    CPPUNIT_ASSERT_EQUAL(s.netns, back.netns);
    CPPUNIT_ASSERT_EQUAL(s.nodeAddr, back.nodeAddr);
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), back.endpoints.size());
    CPPUNIT_ASSERT_EQUAL(s.endpoints[0].address.str(), back.endpoints[0].address.str());
    CPPUNIT_ASSERT(s.endpoints[0].mac == back.endpoints[0].mac);
    CPPUNIT_ASSERT_EQUAL(s.networks[0].vni, back.networks[0].vni);
    CPPUNIT_ASSERT_EQUAL(s.networks[0].subnet.str(), back.networks[0].subnet.str());
    CPPUNIT_ASSERT_EQUAL(s.networks[0].gateway, back.networks[0].gateway);
    // Named after another task, or not a state document: refused.
    CPPUNIT_ASSERT_THROW(taskStateFromJson("t2", readWholeFile(path)), Error);
    CPPUNIT_ASSERT_THROW(taskStateFromJson("t1", attachDoc()), Error);
    CPPUNIT_ASSERT_THROW(readWholeFile(dir.file("missing.json")), Error);
  }

  // "host_ports" (host-mode published ports): parsed with their defaults, bad ones named, kept
  // in the state file with the task's address slot, and rendered as DNAT without masquerade.
  void testHostPortsParseRoundTripAndRender() {
    const std::string withPorts = attachDoc(
        R"("networks":[)", R"("host_ports":[{"published":8080,"target":80},)"
                           R"({"protocol":"udp","published":8080,"target":53}],"networks":[)");
    const AttachRequest r = parseAttach("t1", withPorts);
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), r.hostPorts.size());
    CPPUNIT_ASSERT_EQUAL(std::string("tcp"), r.hostPorts[0].protocol);
    CPPUNIT_ASSERT_EQUAL(uint16_t(8080), r.hostPorts[0].published);
    CPPUNIT_ASSERT_EQUAL(uint16_t(80), r.hostPorts[0].target);
    CPPUNIT_ASSERT_EQUAL(std::string("udp"), r.hostPorts[1].protocol);
    // No endpoint at all is fine for a task with host ports only.
    const std::string bare =
        R"({"schema":"shoal.attach/v1","task_id":"t1","node_addr":"192.168.99.11",)"
        R"("endpoints":[],"networks":[],"host_ports":[{"published":81,"target":80}]})";
    CPPUNIT_ASSERT(parseAttach("t1", bare).endpoints.empty());
    auto withPort = [&](const std::string& port) {
      return attachDoc(R"("networks":[)", R"("host_ports":[)" + port + R"(],"networks":[)");
    };
    assertMentions(attachError(withPort(R"({"published":0,"target":80})")),
                   "host_ports[0].published must be from 1 to 65535");
    assertMentions(attachError(withPort(R"({"published":80})")),
                   "host_ports[0].target is required");
    assertMentions(attachError(withPort(R"({"protocol":"icmp","published":80,"target":80})")),
                   "host_ports[0].protocol");
    assertMentions(
        attachError(withPort(R"({"published":80,"target":80},{"published":80,"target":81})")),
        "80/tcp is listed twice");
    assertMentions(attachError(attachDoc(R"("networks":[)", R"("host_ports":{},"networks":[)")),
                   "host_ports must be an array");

    shoal::test::TempDir dir;
    TaskState s;
    s.taskId = "t1";
    s.netns = dir.file("t1");
    s.nodeAddr = r.nodeAddr;
    s.endpoints = r.endpoints;
    s.networks = r.networks;
    s.hostPorts = r.hostPorts;
    s.hostSlot = 7;
    const TaskState back = taskStateFromJson("t1", toJson(s));
    CPPUNIT_ASSERT(back.hostPorts == s.hostPorts);
    CPPUNIT_ASSERT_EQUAL(7, back.hostSlot);
    std::string noSlot = toJson(s);
    noSlot.replace(noSlot.find(R"("host_slot":7)"), 13, R"("host_slot":-1)");
    CPPUNIT_ASSERT_THROW(taskStateFromJson("t1", noSlot), Error);

    CPPUNIT_ASSERT_EQUAL(std::string("169.254.160.29"), formatIpv4(hostSideAddress(7)));
    CPPUNIT_ASSERT_EQUAL(std::string("169.254.160.30"), formatIpv4(taskSideAddress(7)));
    const std::string rules = renderHostPortsRuleset(
        {{r.hostPorts[0], taskSideAddress(7)}, {r.hostPorts[1], 0xa9fea002}});
    for (const char* want :
         {"fib daddr type local tcp dport 8080 dnat to 169.254.160.30:80",
          "fib daddr type local udp dport 8080 dnat to 169.254.160.2:53", "type nat hook output",
          "ip saddr 127.0.0.0/8 ip daddr 169.254.160.0/19 masquerade",
          "ip saddr 169.254.160.0/19 oifname != \"shv*\" masquerade",
          "iifname \"shv*\" ip daddr 127.0.0.0/8 drop"}) {
      CPPUNIT_ASSERT_MESSAGE(rules + " lacks " + want, contains(rules, want));
    }
    // Only loopback clients and the tasks' own connections out are masqueraded.
    std::size_t masquerades = 0;
    for (std::size_t at = rules.find("masquerade"); at != std::string::npos;
         at = rules.find("masquerade", at + 1)) {
      ++masquerades;
    }
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), masquerades);
    const std::string none = renderHostPortsRuleset({});
    CPPUNIT_ASSERT(contains(none, "delete table ip shoal_hostports") && !contains(none, "dnat"));
  }

  void testAttachWithForeignNodeAddrFailsWithoutBuilding() {
    shoal::test::TempDir dir;
    Config config;
    config.netnsDir = dir.file("netns");
    Dataplane dp(config, nullptr);
    // 192.0.2.0/24 is TEST-NET-1: no interface of this machine holds it.
    AttachRequest req = parseAttach("t1", attachDoc("192.168.99.11", "192.0.2.77"));
    std::promise<std::pair<shoal_status, std::string>> done;
    dp.attach(req, [&](shoal_status s, const std::string& json) { done.set_value({s, json}); });
    auto result = done.get_future().get();
    CPPUNIT_ASSERT_EQUAL_MESSAGE(result.second, SHOAL_EINVAL, result.first);
    assertMentions(result.second, "node_addr 192.0.2.77 is not an address of this node");
    CPPUNIT_ASSERT(dp.tasks().empty());
    CPPUNIT_ASSERT(dp.sandboxes().empty());
    struct stat st {};
    CPPUNIT_ASSERT(stat(dp.taskNetnsPath("t1").c_str(), &st) != 0);
    CPPUNIT_ASSERT(dp.overlayMtu() > 68);  // the default-route fallback
  }

  void testDetachOfUnknownTaskSucceeds() {
    shoal::test::TempDir dir;
    Config config;
    config.netnsDir = dir.file("netns");
    Dataplane dp(config, nullptr);
    std::promise<std::pair<shoal_status, std::string>> done;
    dp.detach("t1", [&](shoal_status s, const std::string& json) { done.set_value({s, json}); });
    auto result = done.get_future().get();
    CPPUNIT_ASSERT_EQUAL(SHOAL_OK, result.first);
    CPPUNIT_ASSERT_EQUAL(std::string("{}"), result.second);
    CPPUNIT_ASSERT_THROW(dp.detach("../x", [](shoal_status, const std::string&) {}), Error);
    // Peers of a network with no sandbox are kept, not an error.
    CPPUNIT_ASSERT_NO_THROW(
        dp.updatePeers(parsePeers(R"({"schema":"shoal.peers/v1","network_id":"n1","peers":[]})")));
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(OverlayDocumentsTest);
