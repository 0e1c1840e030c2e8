// The object model: validation messages, the JSON checker, the API rendering, the codec.
#include <cppunit/extensions/HelperMacros.h>

#include "kernel/store/codec.h"
#include "kernel/store/json_text.h"
#include "kernel/store/object.h"
#include "tests/kernel/store/store_test_util.h"

using namespace shoal::store;
using storetest::contains;

namespace {

std::string errorOf(const Object& o) {
  shoal::Status s = validateObject(o);
  CPPUNIT_ASSERT_MESSAGE("expected an error for " + describe(o), !s.isOk());
  CPPUNIT_ASSERT(s.code() == shoal::Status::Code::kInvalidArgument);
  return s.message();
}

}  // namespace

class ObjectTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(ObjectTest);
  CPPUNIT_TEST(testKindNamesRoundTrip);
  CPPUNIT_TEST(testValidObjectsPass);
  CPPUNIT_TEST(testIdRules);
  CPPUNIT_TEST(testNameRequiredExceptNodesAndTasks);
  CPPUNIT_TEST(testSpecAndStatusMustBeJsonObjects);
  CPPUNIT_TEST(testTypedFieldsBelongToTheirKind);
  CPPUNIT_TEST(testUnknownEnumValuesAreRefused);
  CPPUNIT_TEST(testLabelsMustBeCleanText);
  CPPUNIT_TEST(testJsonCheckerAcceptsAndRefuses);
  CPPUNIT_TEST(testToJsonRendersEnvelopeAndTypedFields);
  CPPUNIT_TEST(testObjectCodecRoundTripAndExactSize);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testKindNamesRoundTrip() {
    for (Kind k : kAllKinds) {
      auto parsed = parseKind(kindName(k));
      CPPUNIT_ASSERT(parsed.isOk());
      CPPUNIT_ASSERT(*parsed == k);
    }
    auto bad = parseKind("gizmo");
    CPPUNIT_ASSERT(!bad.isOk());
    CPPUNIT_ASSERT(contains(bad.status().message(), "gizmo"));
    CPPUNIT_ASSERT_EQUAL(std::string("orphaned"), std::string(taskStateName(TaskState::kOrphaned)));
    CPPUNIT_ASSERT(*parseTaskState("running") == TaskState::kRunning);
    CPPUNIT_ASSERT(TaskState::kRunning < TaskState::kShutdown);  // SwarmKit's order
    CPPUNIT_ASSERT(*parseNodeRole("manager") == NodeRole::kManager);
    CPPUNIT_ASSERT(*parseAvailability("drain") == NodeAvailability::kDrain);
    CPPUNIT_ASSERT(!parseAvailability("sleepy").isOk());
  }

  void testValidObjectsPass() {
    CPPUNIT_ASSERT(validateObject(storetest::service("s1", "web")).isOk());
    CPPUNIT_ASSERT(validateObject(storetest::task("t1", "s1", 1, "n1")).isOk());
    CPPUNIT_ASSERT(validateObject(storetest::node("n1", NodeRole::kManager)).isOk());
  }

  void testIdRules() {
    Object o = storetest::service("", "web");
    CPPUNIT_ASSERT(contains(errorOf(o), "service without an id"));
    o.id = "has space";
    CPPUNIT_ASSERT(contains(errorOf(o), "[A-Za-z0-9_.-]"));
    o.id = std::string(kMaxIdBytes + 1, 'a');
    CPPUNIT_ASSERT(contains(errorOf(o), "65 bytes long (limit 64)"));
    o.kind = static_cast<Kind>(42);
    o.id = "x";
    CPPUNIT_ASSERT(contains(errorOf(o), "unknown object kind 42"));
  }

  void testNameRequiredExceptNodesAndTasks() {
    Object s = storetest::service("s1", "");
    CPPUNIT_ASSERT_EQUAL(std::string("service s1: a name is required"), errorOf(s));
    Object n = storetest::node("n1");
    CPPUNIT_ASSERT(n.name.empty() && validateObject(n).isOk());
    Object t = storetest::task("t1", "s1", 1);
    t.name.clear();
    CPPUNIT_ASSERT(validateObject(t).isOk());
    s.name = "bad\nname";
    CPPUNIT_ASSERT(contains(errorOf(s), "control characters"));
  }

  void testSpecAndStatusMustBeJsonObjects() {
    Object s = storetest::service("s1", "web");
    s.spec = R"({"Mode": {"Replicas": 3,}})";
    std::string e = errorOf(s);
    CPPUNIT_ASSERT_MESSAGE(e, contains(e, "service s1: spec is not valid JSON"));
    CPPUNIT_ASSERT_MESSAGE(e, contains(e, "at byte 24"));
    s.spec = "[1,2]";
    CPPUNIT_ASSERT(contains(errorOf(s), "expected '{'"));
    s.spec = "";
    CPPUNIT_ASSERT(contains(errorOf(s), "empty"));
    s.spec = "{}";
    s.status = "{\"State\":";
    CPPUNIT_ASSERT(contains(errorOf(s), "status is not valid JSON"));
    s.status.clear();
    CPPUNIT_ASSERT(validateObject(s).isOk());
  }

  void testTypedFieldsBelongToTheirKind() {
    Object s = storetest::service("s1", "web");
    s.serviceId = "other";
    CPPUNIT_ASSERT(contains(errorOf(s), "for tasks only"));
    s.serviceId.clear();
    s.desiredState = TaskState::kRunning;
    CPPUNIT_ASSERT(contains(errorOf(s), "for tasks only"));
    s.desiredState = TaskState::kNew;
    s.availability = NodeAvailability::kDrain;
    CPPUNIT_ASSERT(contains(errorOf(s), "for nodes only"));
    Object t = storetest::task("t1", "bad id!", 1);
    CPPUNIT_ASSERT(contains(errorOf(t), "task t1"));
  }

  void testUnknownEnumValuesAreRefused() {
    Object t = storetest::task("t1", "s1", 1);
    t.desiredState = static_cast<TaskState>(5);
    CPPUNIT_ASSERT(contains(errorOf(t), "unknown desired state 5"));
    Object n = storetest::node("n1");
    n.role = static_cast<NodeRole>(7);
    CPPUNIT_ASSERT(contains(errorOf(n), "unknown role 7"));
  }

  void testLabelsMustBeCleanText() {
    Object s = storetest::service("s1", "web");
    s.labels[""] = "x";
    CPPUNIT_ASSERT(contains(errorOf(s), "empty key"));
    s.labels.clear();
    s.labels["k"] = std::string("\xff\xfe", 2);
    CPPUNIT_ASSERT(contains(errorOf(s), "label \"k\""));
    s.labels["k"] = "caf\xc3\xa9";  // UTF-8 is fine
    CPPUNIT_ASSERT(validateObject(s).isOk());
  }

  void testJsonCheckerAcceptsAndRefuses() {
    const char* good[] = {
        "{}", " { \"a\" : [1, -2.5e+3, 0, true, false, null, \"x\\u00e9\\n\"] } ",
        R"({"a":{"b":{"c":[]}},"d":"caf\u00e9","e":1E5})",
        "{\"k\":\"\xe2\x82\xac\"}",  // the euro sign, raw UTF-8
    };
    for (const char* g : good) {
      shoal::Status s = checkJsonObject(g);
      CPPUNIT_ASSERT_MESSAGE(std::string(g) + ": " + s.toString(), s.isOk());
    }
    const char* bad[] = {
        "{",           "{\"a\"}",         "{\"a\":}",         "{\"a\":1,}",
        "{'a':1}",     "{\"a\":01}",      "{\"a\":1.}",       "{\"a\":-}",
        "{\"a\":tru}", "{\"a\":\"\\x\"}", "{\"a\":\"\x01\"}", "{\"a\":\"\xc0\xaf\"}",
        "{} {}",       "{\"a\":[1 2]}",   "{\"a\":\"abc",     "{\"a\":\"\\u12\"}",
    };
    for (const char* b : bad) {
      CPPUNIT_ASSERT_MESSAGE(std::string("accepted: ") + b, !checkJsonObject(b).isOk());
    }
    std::string deep(kMaxJsonDepth + 1, '[');
    deep = "{\"a\":" + deep + std::string(kMaxJsonDepth + 1, ']') + "}";
    shoal::Status s = checkJsonObject(deep);
    CPPUNIT_ASSERT(contains(s.message(), "nested too deeply"));
  }

  void testToJsonRendersEnvelopeAndTypedFields() {
    Object t = storetest::task("t1", "s1", 2, "n1");
    t.version = 7;
    t.createdNs = 1700000000000000001;
    t.updatedNs = 1700000000000000002;
    t.labels["quote\"d"] = "line\nbreak";
    std::string json = toJson(t);
    CPPUNIT_ASSERT_MESSAGE(json, checkJsonObject(json).isOk());
    CPPUNIT_ASSERT(contains(json, R"("ID":"t1","Kind":"task","Version":{"Index":7})"));
    CPPUNIT_ASSERT(contains(json, R"("CreatedAt":"2023-11-14T22:13:20.000000001Z")"));
    CPPUNIT_ASSERT(contains(json, R"("Labels":{"quote\"d":"line\nbreak"})"));
    CPPUNIT_ASSERT(
        contains(json, R"("ServiceID":"s1","NodeID":"n1","Slot":2,"DesiredState":"running")"));
    CPPUNIT_ASSERT(contains(json, R"("Spec":{"ContainerSpec":{"Image":"busybox"}})"));
    std::string nodeJson =
        toJson(storetest::node("n1", NodeRole::kManager, NodeAvailability::kDrain));
    CPPUNIT_ASSERT(checkJsonObject(nodeJson).isOk());
    CPPUNIT_ASSERT(contains(nodeJson, R"("Role":"manager","Availability":"drain")"));
    CPPUNIT_ASSERT(contains(nodeJson, R"("Status":{})"));
  }

  void testObjectCodecRoundTripAndExactSize() {
    for (Object o : {storetest::task("t1", "s1", 300, "n1", TaskState::kShutdown),
                     storetest::node("n1", NodeRole::kManager, NodeAvailability::kPause),
                     storetest::service("s1", "web")}) {
      o.version = 1234567;
      o.createdNs = -5;  // before 1970: zigzag
      o.updatedNs = 1700000000000000000;
      o.labels = {{"a", "1"}, {"b", ""}};
      std::string bytes;
      encodeObject(o, bytes);
      CPPUNIT_ASSERT_EQUAL(bytes.size(), encodedSize(o));
      ByteReader in(bytes);
      Object back;
      CPPUNIT_ASSERT_MESSAGE(in.status().toString(), decodeObject(in, back));
      CPPUNIT_ASSERT(in.atEnd());
      CPPUNIT_ASSERT(back == o);
    }
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(ObjectTest);
