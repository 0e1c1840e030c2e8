// The .deb packages: `shoal` carries the daemon, the CLI, the six plugins in the directory
// shoald searches by default, the config as a conffile and the systemd unit, and depends on
// runc; `shoal-sdk` carries the headers, the CMake package and the example.
#include <cppunit/extensions/HelperMacros.h>

#include <filesystem>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using shoal::test::runCommand;
using shoal::test::RunResult;
using shoal::test::TempDir;

namespace {
bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}
}  // namespace

class PackagingTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(PackagingTest);
  CPPUNIT_TEST(testDebPackagesHoldWhatTheDaemonExpects);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testDebPackagesHoldWhatTheDaemonExpects() {
    TempDir dir;
    RunResult r = runCommand({CPACK_COMMAND, "-G", "DEB", "-B", dir.path(), "--config",
                              std::string(SHOAL_BINARY_DIR) + "/CPackConfig.cmake"},
                             std::chrono::seconds(300));
    CPPUNIT_ASSERT_EQUAL_MESSAGE(r.out + r.err, 0, r.exitCode);
    const std::string shoalDeb = dir.file("shoal_0.1.0_amd64.deb");
    const std::string sdkDeb = dir.file("shoal-sdk_0.1.0_all.deb");
    CPPUNIT_ASSERT(std::filesystem::exists(shoalDeb));
    CPPUNIT_ASSERT(std::filesystem::exists(sdkDeb));

    RunResult files = runCommand({"dpkg-deb", "-c", shoalDeb});
    CPPUNIT_ASSERT_EQUAL(0, files.exitCode);
    for (std::string f :
         {std::string(SHOAL_FULL_BINDIR) + "/shoald", std::string(SHOAL_FULL_BINDIR) + "/shoal",
          std::string(SHOAL_FULL_SYSCONFDIR) + "/shoal/shoald.yaml"}) {
      CPPUNIT_ASSERT_MESSAGE(f + "\n" + files.out, contains(files.out, "." + f + "\n"));
    }
    for (const char* p : {"scheduler-spread", "runtime-runc", "runtime-sim", "network-overlay",
                          "secrets-tmpfs", "storage-local"}) {
      std::string f = "." + std::string(SHOAL_DEFAULT_PLUGIN_DIR) + "/" + p + ".so\n";
      CPPUNIT_ASSERT_MESSAGE(f + files.out, contains(files.out, f));
    }
    CPPUNIT_ASSERT_MESSAGE(files.out, contains(files.out, "/systemd/system/shoald.service\n"));

    RunResult info = runCommand({"dpkg-deb", "-I", shoalDeb});
    CPPUNIT_ASSERT_MESSAGE(info.out, contains(info.out, "Depends: runc"));
    CPPUNIT_ASSERT_MESSAGE(info.out, contains(info.out, "libpoconet"));
    RunResult conffiles = runCommand({"dpkg-deb", "-I", shoalDeb, "conffiles"});
    CPPUNIT_ASSERT_MESSAGE(conffiles.out, contains(conffiles.out, "/etc/shoal/shoald.yaml"));

    RunResult sdk = runCommand({"dpkg-deb", "-c", sdkDeb});
    CPPUNIT_ASSERT_MESSAGE(sdk.out, contains(sdk.out, "/include/shoal/plugin.h\n"));
    CPPUNIT_ASSERT_MESSAGE(sdk.out, contains(sdk.out, "/cmake/ShoalSDK/ShoalSDKConfig.cmake\n"));
    CPPUNIT_ASSERT_MESSAGE(sdk.out,
                           contains(sdk.out, "/examples/hello-scheduler/hello_scheduler.c\n"));
    CPPUNIT_ASSERT_MESSAGE(sdk.out, !contains(sdk.out, "shoald"));
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(PackagingTest);
