// network-overlay's service set (plugins/network-overlay/services.hpp): the update_services
// document is parsed whole or refused naming the field, and the embedded DNS's records follow
// Docker's rules per network (VIP or task addresses by endpoint mode, tasks.<name>, aliases,
// task names), checked through the DNS library's own name table.
#include <cppunit/extensions/HelperMacros.h>

#include <shoal/plugin.h>

#include <shoal/plugin.hpp>
#include <string>
#include <vector>

#include "dns/names.hpp"
#include "services.hpp"

using namespace shoal::overlay;
using shoal::sdk::Error;
using Ips = std::vector<uint32_t>;
using Strings = std::vector<std::string>;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

uint32_t ip(const char* text) { return *dns::parseIpv4(text); }

// "web" (vip) on networks na and nb with two tasks on na and one on nb, and "db" (dnsrr) on na
// with two tasks; `from` replaced by `to` in the text.
std::string servicesDoc(const std::string& from = "", const std::string& to = "") {
  std::string doc =
      R"({"schema":"shoal.services/v1","services":[)"
      R"({"id":"s1","name":"web","endpoint_mode":"vip",)"
      R"("vips":[{"network_id":"na","address":"10.0.1.2"},{"network_id":"nb","address":"10.0.2.2"}],)"
      R"("ports":[{"protocol":"tcp","published":8080,"target":80,"mode":"ingress"},)"
      R"({"protocol":"udp","published":53,"target":5353,"mode":"host"}],"backends":[)"
      R"({"network_id":"na","address":"10.0.1.5","task_id":"t1","task_name":"web.1.t1",)"
      R"("aliases":["frontend"]},)"
      R"({"network_id":"na","address":"10.0.1.6","task_id":"t2","task_name":"web.2.t2",)"
      R"("aliases":["frontend"]},)"
      R"({"network_id":"nb","address":"10.0.2.5","task_id":"t1","task_name":"web.1.t1",)"
      R"("aliases":[]}]},)"
      R"({"id":"s2","name":"db","endpoint_mode":"dnsrr","vips":[],"ports":[],"backends":[)"
      R"({"network_id":"na","address":"10.0.1.8","task_id":"t3","task_name":"db.1.t3",)"
      R"("aliases":["primary"]},)"
      R"({"network_id":"na","address":"10.0.1.9","task_id":"t4","task_name":"db.2.t4",)"
      R"("aliases":[]}]}])"
      R"(,"ingress":{"network":{"id":"ning","name":"ingress","subnet":"10.0.0.0/24",)"
      R"("gateway":"10.0.0.1","vni":4096,"options":{}},"address":"10.0.0.5/24",)"
      R"("mac":"02:42:0a:00:00:05","node_addr":"192.168.99.11"}})";
  if (!from.empty()) {
    const std::size_t at = doc.find(from);
    CPPUNIT_ASSERT_MESSAGE("test bug: " + from + " not in the document", at != std::string::npos);
    doc.replace(at, from.size(), to);
  }
  return doc;
}

std::string parseError(const std::string& doc) {
  try {
    parseServices(doc);
  } catch (const Error& e) {
    CPPUNIT_ASSERT_EQUAL_MESSAGE(e.what(), SHOAL_EINVAL, e.code());
    return e.what();
  }
  CPPUNIT_FAIL("accepted: " + doc);
  return {};
}

dns::NameTable table(const std::string& doc) {
  return dns::NameTable(dnsRecords(parseServices(doc)));
}

// The addresses `name` answers on `networks`; a name the table does not hold fails the check.
Ips answer(const dns::NameTable& t, const std::string& name, const Strings& networks) {
  const dns::NameTable::Result r = t.lookup(name, networks);
  CPPUNIT_ASSERT_MESSAGE(name + " is not in the table", r.match == dns::NameTable::Match::kFound);
  return r.ips;
}

bool known(const dns::NameTable& t, const std::string& name, const Strings& networks) {
  return t.lookup(name, networks).match != dns::NameTable::Match::kNone;
}

}  // namespace

class OverlayServicesTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(OverlayServicesTest);
  CPPUNIT_TEST(testParsesEveryField);
  CPPUNIT_TEST(testRefusesBadDocumentsNamingTheField);
  CPPUNIT_TEST(testRefusesBadPortsAndIngressNamingTheField);
  CPPUNIT_TEST(testVipModeNameAndAliasesAnswerTheVipOfThatNetwork);
  CPPUNIT_TEST(testDnsrrModeNameAndAliasesAnswerTaskAddresses);
  CPPUNIT_TEST(testTasksNameAndTaskNamesAnswerTaskAddresses);
  CPPUNIT_TEST(testVipModeWithoutAVipOnANetworkAnswersTaskAddresses);
  CPPUNIT_TEST(testNamesStayOnTheirNetworks);
  CPPUNIT_TEST(testEmptySetMakesNoRecords);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testParsesEveryField() {
    const ServiceSet set = parseServices(servicesDoc());
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), set.services.size());
    const Service& web = set.services[0];
    CPPUNIT_ASSERT_EQUAL(std::string("s1"), web.id);
    CPPUNIT_ASSERT_EQUAL(std::string("web"), web.name);
    CPPUNIT_ASSERT(web.mode == EndpointMode::kVip);
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), web.vips.size());
    CPPUNIT_ASSERT_EQUAL(std::string("nb"), web.vips[1].networkId);
    CPPUNIT_ASSERT_EQUAL(ip("10.0.2.2"), web.vips[1].address);
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), web.ports.size());
    CPPUNIT_ASSERT(web.ports[0].protocol == PortProtocol::kTcp);
    CPPUNIT_ASSERT_EQUAL(uint16_t(8080), web.ports[0].published);
    CPPUNIT_ASSERT_EQUAL(uint16_t(80), web.ports[0].target);
    CPPUNIT_ASSERT(web.ports[0].mode == PublishMode::kIngress);
    CPPUNIT_ASSERT(web.ports[1].protocol == PortProtocol::kUdp);
    CPPUNIT_ASSERT(web.ports[1].mode == PublishMode::kHost);
    CPPUNIT_ASSERT(set.ingress.has_value());
    CPPUNIT_ASSERT_EQUAL(std::string("ning"), set.ingress->network.id);
    CPPUNIT_ASSERT_EQUAL(std::string("ingress"), set.ingress->network.name);
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.0.0/24"), set.ingress->network.subnet.str());
    CPPUNIT_ASSERT_EQUAL(ip("10.0.0.1"), set.ingress->network.gateway);
    CPPUNIT_ASSERT_EQUAL(uint32_t(4096), set.ingress->network.vni);
    CPPUNIT_ASSERT_EQUAL(std::string("10.0.0.5/24"), set.ingress->address.str());
    CPPUNIT_ASSERT_EQUAL(std::string("02:42:0a:00:00:05"), set.ingress->mac.str());
    CPPUNIT_ASSERT_EQUAL(ip("192.168.99.11"), set.ingress->nodeAddr);
    CPPUNIT_ASSERT_EQUAL(std::size_t(3), web.backends.size());
    const ServiceBackend& b = web.backends[1];
    CPPUNIT_ASSERT_EQUAL(std::string("na"), b.networkId);
    CPPUNIT_ASSERT_EQUAL(ip("10.0.1.6"), b.address);
    CPPUNIT_ASSERT_EQUAL(std::string("t2"), b.taskId);
    CPPUNIT_ASSERT_EQUAL(std::string("web.2.t2"), b.taskName);
    CPPUNIT_ASSERT(b.aliases == Strings{"frontend"});
    CPPUNIT_ASSERT(set.services[1].mode == EndpointMode::kDnsrr);
    // endpoint_mode defaults to vip, as Docker's does; vips, ports and backends may be absent.
    const ServiceSet minimal =
        parseServices(R"({"schema":"shoal.services/v1","services":[{"id":"s9","name":"lone"}]})");
    CPPUNIT_ASSERT(minimal.services.at(0).mode == EndpointMode::kVip);
    CPPUNIT_ASSERT(minimal.services[0].vips.empty() && minimal.services[0].backends.empty());
    // An absent (or null) "ingress": a cluster without an ingress network.
    CPPUNIT_ASSERT(!minimal.ingress.has_value());
    // protocol and mode default to tcp and ingress; host mode may leave published out.
    const ServiceSet defaults = parseServices(
        servicesDoc(R"({"protocol":"udp","published":53,"target":5353,"mode":"host"})",
                    R"({"published":9000,"target":90},{"target":7,"mode":"host"},)"
                    R"({"protocol":"sctp","published":9,"target":9})"));
    const std::vector<ServicePort>& ports = defaults.services[0].ports;
    CPPUNIT_ASSERT_EQUAL(std::size_t(4), ports.size());
    CPPUNIT_ASSERT(ports[1].protocol == PortProtocol::kTcp &&
                   ports[1].mode == PublishMode::kIngress);
    CPPUNIT_ASSERT_EQUAL(uint16_t(0), ports[2].published);
    CPPUNIT_ASSERT(ports[3].protocol == PortProtocol::kSctp);
  }

  void testRefusesBadPortsAndIngressNamingTheField() {
    const std::string port = R"({"protocol":"tcp","published":8080,"target":80,"mode":"ingress"})";
    auto withPort = [&](const std::string& bad) { return parseError(servicesDoc(port, bad)); };
    CPPUNIT_ASSERT(
        contains(withPort(R"({"protocol":"icmp","published":1,"target":1})"),
                 R"(services[0].ports[0].protocol "icmp" is not "tcp", "udp" or "sctp")"));
    CPPUNIT_ASSERT(contains(withPort(R"({"published":1,"target":1,"mode":"x"})"),
                            R"(services[0].ports[0].mode "x" is not "ingress" or "host")"));
    CPPUNIT_ASSERT(
        contains(withPort(R"({"published":8080})"), "services[0].ports[0].target is required"));
    CPPUNIT_ASSERT(
        contains(withPort(R"({"target":80})"), "services[0].ports[0].published is required"));
    CPPUNIT_ASSERT(contains(withPort(R"({"published":0,"target":80})"),
                            "services[0].ports[0].published must be from 1 to 65535"));
    CPPUNIT_ASSERT(contains(withPort(R"({"published":65536,"target":80})"),
                            "services[0].ports[0].published must be from 1 to 65535"));
    CPPUNIT_ASSERT(contains(withPort(R"({"published":"80","target":80})"),
                            "services[0].ports[0].published must be an integer"));
    CPPUNIT_ASSERT(contains(withPort(R"({"published":true,"target":80})"),
                            "services[0].ports[0].published must be an integer"));
    CPPUNIT_ASSERT(contains(withPort(R"({"published":80,"target":0})"),
                            "services[0].ports[0].target must be from 1 to 65535"));
    CPPUNIT_ASSERT(contains(withPort("7"), "services[0].ports[0] must be an object"));
    CPPUNIT_ASSERT(contains(withPort(port + "," + port),
                            "services[0].ports[1].published 8080/tcp is published twice"));
    // The same number over UDP, or in host mode, is another port.
    parseServices(servicesDoc(port, port + R"(,{"protocol":"udp","published":8080,"target":1})"));

    CPPUNIT_ASSERT(
        contains(parseError(servicesDoc(R"("subnet":"10.0.0.0/24")", R"("subnet":"10.0.0.1/24")")),
                 R"(ingress.network.subnet "10.0.0.1/24" has host bits set)"));
    CPPUNIT_ASSERT(
        contains(parseError(servicesDoc(R"("gateway":"10.0.0.1")", R"("gateway":"10.0.9.1")")),
                 R"(ingress.network.gateway "10.0.9.1" is not a host address)"));
    CPPUNIT_ASSERT(contains(parseError(servicesDoc(R"("vni":4096)", R"("vni":0)")),
                            "ingress.network.vni must be from 1 to 16777215"));
    CPPUNIT_ASSERT(contains(parseError(servicesDoc(R"("id":"ning")", R"("id":"sb-x")")),
                            "ingress.network.id"));
    CPPUNIT_ASSERT(contains(
        parseError(servicesDoc(R"("address":"10.0.0.5/24")", R"("address":"10.0.0.5/16")")),
        R"(ingress.address "10.0.0.5/16" is not a host address of subnet)"));
    CPPUNIT_ASSERT(contains(
        parseError(servicesDoc(R"("address":"10.0.0.5/24")", R"("address":"10.0.0.1/24")")),
        "ingress.address"));
    CPPUNIT_ASSERT(contains(
        parseError(servicesDoc(R"("mac":"02:42:0a:00:00:05")", R"("mac":"01:00:5e:00:00:01")")),
        R"(ingress.mac "01:00:5e:00:00:01" is not a unicast MAC address)"));
    CPPUNIT_ASSERT(
        contains(parseError(servicesDoc(R"("node_addr":"192.168.99.11")", R"("node_addr":"x")")),
                 R"(ingress.node_addr "x" is not an IPv4 address)"));
    CPPUNIT_ASSERT(contains(parseError(servicesDoc(R"("options":{})", R"("options":[])")),
                            "ingress.network.options must be an object"));
    CPPUNIT_ASSERT(contains(parseError(servicesDoc(R"(,"ingress":{)", R"(,"ingress":7,"x":{)")),
                            "ingress must be an object"));
    CPPUNIT_ASSERT(contains(parseError(servicesDoc(R"("network":{)", R"("net":{)")),
                            "ingress.network is required"));
    CPPUNIT_ASSERT(
        contains(parseError(servicesDoc(R"("vni":4096,)", "")), "ingress.network.vni is required"));
  }

  void testRefusesBadDocumentsNamingTheField() {
    CPPUNIT_ASSERT(contains(parseError("{"), "update_services: the document is not valid JSON"));
    CPPUNIT_ASSERT(contains(parseError("[]"), "the document must be a JSON object"));
    CPPUNIT_ASSERT(contains(parseError(R"({"services":[]})"), "schema is required"));
    CPPUNIT_ASSERT(contains(parseError(servicesDoc("shoal.services/v1", "shoal.peers/v1")),
                            R"(schema "shoal.peers/v1" is not "shoal.services/v1")"));
    CPPUNIT_ASSERT(
        contains(parseError(R"({"schema":"shoal.services/v1"})"), "services is required"));
    CPPUNIT_ASSERT(contains(parseError(R"({"schema":"shoal.services/v1","services":[1]})"),
                            "services[0] must be an object"));
    CPPUNIT_ASSERT(
        contains(parseError(servicesDoc(R"("id":"s1",)", "")), "services[0].id is required"));
    CPPUNIT_ASSERT(contains(parseError(servicesDoc(R"("name":"web")", R"("name":"")")),
                            "services[0].name must not be empty"));
    CPPUNIT_ASSERT(contains(
        parseError(servicesDoc(R"("endpoint_mode":"vip")", R"("endpoint_mode":"ingress")")),
        R"(services[0].endpoint_mode "ingress" is not "vip" or "dnsrr")"));
    CPPUNIT_ASSERT(contains(parseError(servicesDoc("10.0.2.2", "10.0.2.2/24")),
                            R"(services[0].vips[1].address "10.0.2.2/24" is not an IPv4 address)"));
    CPPUNIT_ASSERT(contains(parseError(servicesDoc("10.0.1.6", "fe80::1")),
                            R"(services[0].backends[1].address "fe80::1" is not an IPv4 address)"));
    CPPUNIT_ASSERT(contains(parseError(servicesDoc("10.0.1.9", "10.0.1.256")),
                            "services[1].backends[1].address"));
    CPPUNIT_ASSERT(contains(parseError(servicesDoc(R"("network_id":"nb","address":"10.0.2.2")",
                                                   R"("network_id":"na","address":"10.0.2.2")")),
                            "services[0].vips[1].network_id \"na\": a service has at most one "
                            "VIP per network"));
    CPPUNIT_ASSERT(contains(parseError(servicesDoc(R"("task_id":"t3")", R"("task_id":"../x")")),
                            "services[1].backends[0].task_id"));
    CPPUNIT_ASSERT(contains(parseError(servicesDoc(R"("aliases":["primary"])", R"("aliases":[7])")),
                            "services[1].backends[0].aliases[0] must be a string"));
    CPPUNIT_ASSERT(
        contains(parseError(servicesDoc(R"("aliases":["primary"])", R"("aliases":[""])")),
                 "services[1].backends[0].aliases[0] must be a non-empty name"));
    CPPUNIT_ASSERT(contains(parseError(servicesDoc(R"("ports":[])", R"("ports":{})")),
                            "services[1].ports must be an array"));
    CPPUNIT_ASSERT(contains(parseError(servicesDoc(R"("id":"s2")", R"("id":"s1")")),
                            R"(services[1].id "s1" is listed twice)"));
  }

  void testVipModeNameAndAliasesAnswerTheVipOfThatNetwork() {
    const dns::NameTable t = table(servicesDoc());
    CPPUNIT_ASSERT(answer(t, "web", {"na"}) == Ips{ip("10.0.1.2")});
    CPPUNIT_ASSERT(answer(t, "web", {"nb"}) == Ips{ip("10.0.2.2")});
    CPPUNIT_ASSERT(answer(t, "frontend", {"na"}) == Ips{ip("10.0.1.2")});
    // The first of the asker's networks that has the name answers.
    CPPUNIT_ASSERT(answer(t, "web", {"nb", "na"}) == Ips{ip("10.0.2.2")});
    // No task on nb carries the alias.
    CPPUNIT_ASSERT(!known(t, "frontend", {"nb"}));
  }

  void testDnsrrModeNameAndAliasesAnswerTaskAddresses() {
    const dns::NameTable t = table(servicesDoc());
    CPPUNIT_ASSERT(answer(t, "db", {"na"}) == (Ips{ip("10.0.1.8"), ip("10.0.1.9")}));
    // An alias answers the tasks that carry it.
    CPPUNIT_ASSERT(answer(t, "primary", {"na"}) == Ips{ip("10.0.1.8")});
    // A dnsrr service's VIP, should one be sent, is never answered.
    const dns::NameTable withVip =
        table(servicesDoc(R"("dnsrr","vips":[])", R"("dnsrr","vips":[{"network_id":"na","address":)"
                                                  R"("10.0.1.3"}])"));
    CPPUNIT_ASSERT(answer(withVip, "db", {"na"}) == (Ips{ip("10.0.1.8"), ip("10.0.1.9")}));
  }

  void testTasksNameAndTaskNamesAnswerTaskAddresses() {
    const dns::NameTable t = table(servicesDoc());
    CPPUNIT_ASSERT(answer(t, "tasks.web", {"na"}) == (Ips{ip("10.0.1.5"), ip("10.0.1.6")}));
    CPPUNIT_ASSERT(answer(t, "tasks.web", {"nb"}) == Ips{ip("10.0.2.5")});
    CPPUNIT_ASSERT(answer(t, "tasks.db", {"na"}) == (Ips{ip("10.0.1.8"), ip("10.0.1.9")}));
    // A task on two networks answers its address on the asker's network.
    CPPUNIT_ASSERT(answer(t, "web.1.t1", {"na"}) == Ips{ip("10.0.1.5")});
    CPPUNIT_ASSERT(answer(t, "web.1.t1", {"nb"}) == Ips{ip("10.0.2.5")});
    CPPUNIT_ASSERT(answer(t, "db.2.t4", {"na"}) == Ips{ip("10.0.1.9")});
    // A service with a VIP and no task yet: the name answers the VIP, tasks.<name> nothing.
    const dns::NameTable idle =
        table(R"({"schema":"shoal.services/v1","services":[{"id":"s","name":"idle","vips":)"
              R"([{"network_id":"na","address":"10.0.1.4"}],"backends":[]}]})");
    CPPUNIT_ASSERT(answer(idle, "idle", {"na"}) == Ips{ip("10.0.1.4")});
    CPPUNIT_ASSERT(answer(idle, "tasks.idle", {"na"}).empty());
  }

  void testVipModeWithoutAVipOnANetworkAnswersTaskAddresses() {
    // web has no VIP on nb here: its name there answers the task's address on nb.
    const dns::NameTable t = table(servicesDoc(R"(,{"network_id":"nb","address":"10.0.2.2"})", ""));
    CPPUNIT_ASSERT(answer(t, "web", {"na"}) == Ips{ip("10.0.1.2")});
    CPPUNIT_ASSERT(answer(t, "web", {"nb"}) == Ips{ip("10.0.2.5")});
  }

  void testNamesStayOnTheirNetworks() {
    const dns::NameTable t = table(servicesDoc());
    for (const char* name : {"db", "tasks.db", "primary", "db.1.t3", "web.2.t2"}) {
      CPPUNIT_ASSERT_MESSAGE(name, !known(t, name, {"nb"}));
      CPPUNIT_ASSERT_MESSAGE(name, !known(t, name, {"nc"}));
    }
    CPPUNIT_ASSERT(!known(t, "web", {}));
  }

  void testEmptySetMakesNoRecords() {
    CPPUNIT_ASSERT(
        dnsRecords(parseServices(R"({"schema":"shoal.services/v1","services":[]})")).empty());
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(OverlayServicesTest);
