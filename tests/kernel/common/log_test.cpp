#include <cppunit/extensions/HelperMacros.h>

#include <memory>
#include <vector>

#include "kernel/common/log.h"

namespace {
struct Capture : shoal::log::Sink {
  std::vector<std::string> lines;
  void write(shoal::log::Level, std::string_view line) override { lines.emplace_back(line); }
};
}  // namespace

class LogTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(LogTest);
  CPPUNIT_TEST(testTextLinesAreLogfmt);
  CPPUNIT_TEST(testJsonLinesEscape);
  CPPUNIT_TEST(testLevelFilters);
  CPPUNIT_TEST(testParseLevel);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    capture_ = std::make_shared<Capture>();
    shoal::log::setSink(capture_);
    shoal::log::setLevel(shoal::log::Level::kInfo);
  }
  void tearDown() override {
    shoal::log::setSink(nullptr);
    shoal::log::setFormat(shoal::log::Format::kText);
    shoal::log::setLevel(shoal::log::Level::kWarn);
  }

  void testTextLinesAreLogfmt() {
    shoal::log::setFormat(shoal::log::Format::kText);
    shoal::log::info("plugin", "plugin loaded", {{"name", "runtime-runc"}, {"path", "/a b"}});
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), capture_->lines.size());
    const std::string& l = capture_->lines[0];
    CPPUNIT_ASSERT_MESSAGE(l, l.find("level=info module=plugin msg=\"plugin loaded\" "
                                     "name=runtime-runc path=\"/a b\"\n") != std::string::npos);
  }

  void testJsonLinesEscape() {
    shoal::log::setFormat(shoal::log::Format::kJson);
    shoal::log::warn("api", "bad \"input\"\n", {{"k", "v"}});
    const std::string& l = capture_->lines.at(0);
    CPPUNIT_ASSERT_MESSAGE(l, l.find("\"level\":\"warn\",\"module\":\"api\",\"msg\":\"bad "
                                     "\\\"input\\\"\\n\",\"k\":\"v\"}") != std::string::npos);
  }

  void testLevelFilters() {
    shoal::log::debug("x", "hidden");
    CPPUNIT_ASSERT(capture_->lines.empty());
    shoal::log::setLevel(shoal::log::Level::kDebug);
    shoal::log::debug("x", "shown");
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), capture_->lines.size());
  }

  void testParseLevel() {
    CPPUNIT_ASSERT(*shoal::log::parseLevel("trace") == shoal::log::Level::kTrace);
    CPPUNIT_ASSERT(!shoal::log::parseLevel("loud").isOk());
  }

 private:
  std::shared_ptr<Capture> capture_;
};

CPPUNIT_TEST_SUITE_REGISTRATION(LogTest);
