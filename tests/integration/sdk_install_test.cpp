// The SDK as a third party uses it: install it into a prefix, build the example plugin with
// plain CMake against that prefix (nothing from the source tree), and have shoald load it.
#include <cppunit/extensions/HelperMacros.h>

#include "tests/integration/daemon_harness.h"

using shoal::test::Daemon;
using shoal::test::runCommand;
using shoal::test::RunResult;
using shoal::test::TempDir;

namespace {
bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}
std::string describe(const RunResult& r) { return r.out + "\n" + r.err; }
}  // namespace

class SdkInstallTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(SdkInstallTest);
  CPPUNIT_TEST(testOutOfTreeExampleBuildsAndLoads);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testOutOfTreeExampleBuildsAndLoads() {
    TempDir dir;
    const std::string prefix = dir.file("prefix");
    RunResult r = runCommand(
        {CMAKE_COMMAND, "--install", SHOAL_BINARY_DIR, "--component", "sdk", "--prefix", prefix});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(describe(r), 0, r.exitCode);
    // The installed copy of the example, not the source tree's, is what a third party gets.
    const std::string example = prefix + "/share/shoal-sdk/examples/hello-scheduler";
    const std::string build = dir.file("build");
    r = runCommand({CMAKE_COMMAND, "-S", example, "-B", build, "-DCMAKE_PREFIX_PATH=" + prefix,
                    "-DCMAKE_BUILD_TYPE=Release"},
                   std::chrono::seconds(300));
    CPPUNIT_ASSERT_EQUAL_MESSAGE(describe(r), 0, r.exitCode);
    r = runCommand({CMAKE_COMMAND, "--build", build}, std::chrono::seconds(300));
    CPPUNIT_ASSERT_EQUAL_MESSAGE(describe(r), 0, r.exitCode);
    CPPUNIT_ASSERT(access((build + "/hello-scheduler.so").c_str(), F_OK) == 0);

    Daemon d(dir, {SHOAL_PLUGIN_BUILD_DIR, build});
    CPPUNIT_ASSERT_MESSAGE(d.process().log(), d.waitReady());
    RunResult ls = d.shoal({"plugin", "ls"});
    CPPUNIT_ASSERT_EQUAL(0, ls.exitCode);
    CPPUNIT_ASSERT_MESSAGE(ls.out, contains(ls.out, "scheduler   hello-scheduler"));
    CPPUNIT_ASSERT_MESSAGE(ls.out, contains(ls.out, "scheduler   scheduler-spread"));
    CPPUNIT_ASSERT_MESSAGE(ls.err, ls.err.empty());
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(SdkInstallTest);
