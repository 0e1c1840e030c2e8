#include <cppunit/extensions/HelperMacros.h>

#include "kernel/common/status.h"

using shoal::Result;
using shoal::Status;

class StatusTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(StatusTest);
  CPPUNIT_TEST(testOkAndError);
  CPPUNIT_TEST(testResultHoldsValueOrStatus);
  CPPUNIT_TEST(testContextPrefixesMessage);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testOkAndError() {
    CPPUNIT_ASSERT(Status::ok().isOk());
    Status s = Status::notFound("no such plugin: x");
    CPPUNIT_ASSERT(!s.isOk());
    CPPUNIT_ASSERT(s.code() == Status::Code::kNotFound);
    CPPUNIT_ASSERT_EQUAL(std::string("not found: no such plugin: x"), s.toString());
  }

  void testResultHoldsValueOrStatus() {
    Result<int> good = 5;
    CPPUNIT_ASSERT(good.isOk());
    CPPUNIT_ASSERT_EQUAL(5, *good);
    CPPUNIT_ASSERT(good.status().isOk());
    Result<std::string> bad = Status::invalidArgument("bad");
    CPPUNIT_ASSERT(!bad.isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("bad"), bad.status().message());
  }

  void testContextPrefixesMessage() {
    Status s = Status::internal("disk full").withContext("saving snapshot");
    CPPUNIT_ASSERT_EQUAL(std::string("saving snapshot: disk full"), s.message());
    CPPUNIT_ASSERT(s.code() == Status::Code::kInternal);
    CPPUNIT_ASSERT(Status::ok().withContext("x").isOk());
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(StatusTest);
