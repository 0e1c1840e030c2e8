// The loader: a good plugin loads and gets its configuration; every kind of broken plugin is
// refused with a message naming the file (and, for versions, both versions), and none of them
// stops the host from loading the rest.
#include <cppunit/extensions/HelperMacros.h>

#include <cstdlib>
#include <string>

#include <shoal/runtime.h>

#include "kernel/plugin/plugin_host.h"

using shoal::Status;
using shoal::plugin::Kind;
using shoal::plugin::PluginHost;
using shoal::plugin::PluginInstance;

namespace {

std::string fixture(const std::string& dir) { return std::string(SHOAL_FIXTURE_DIR) + "/" + dir; }

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// "ABI 1.1": this host's version as refusals name it. The fixtures are built with the SDK's
// minor (bad-major is "ABI 2.<minor>").
std::string abi(int major, int minor = SHOAL_ABI_MINOR) {
  return "ABI " + std::to_string(major) + "." + std::to_string(minor);
}

}  // namespace

class LoaderTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(LoaderTest);
  CPPUNIT_TEST(testLoadsGoodPluginWithItsConfig);
  CPPUNIT_TEST(testRefusesOtherAbiMajorNamingBothVersions);
  CPPUNIT_TEST(testRefusesNewerMinorAcceptsSameMinor);
  CPPUNIT_TEST(testLoadsRuntimeOpsTableOfAnOlderMinor);
  CPPUNIT_TEST(testRefusesMissingEntryPoint);
  CPPUNIT_TEST(testRefusesEntryPointOfADependency);
  CPPUNIT_TEST(testRefusesDuplicateEntryPoint);
  CPPUNIT_TEST(testRefusesTooSmallDescriptor);
  CPPUNIT_TEST(testRefusesUnknownKind);
  CPPUNIT_TEST(testRefusesNullOp);
  CPPUNIT_TEST(testRefusesDuplicateKindAndName);
  CPPUNIT_TEST(testFailedInitIsReportedNotRegistered);
  CPPUNIT_TEST(testRefusesFileThatIsNoSharedObject);
  CPPUNIT_TEST(testBadPluginsDoNotStopTheRest);
  CPPUNIT_TEST(testRequiredKindMissingIsAnError);
  CPPUNIT_TEST(testDisabledPluginIsSkipped);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testLoadsGoodPluginWithItsConfig() {
    PluginHost host;
    host.setPluginConfig({{"fixture-good", "{\"answer\":42}"}});
    host.loadDirectories({fixture("good")});
    CPPUNIT_ASSERT(host.refusals().empty());
    auto list = host.list();
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), list.size());
    CPPUNIT_ASSERT_EQUAL(std::string("fixture-good"), list[0].name);
    CPPUNIT_ASSERT_EQUAL(std::string("0.0.1"), list[0].version);
    CPPUNIT_ASSERT(list[0].kind == Kind::kRuntime);
    CPPUNIT_ASSERT_EQUAL(uint16_t(1), list[0].abiMajor);
    auto* inst = host.find(Kind::kRuntime, "fixture-good");
    CPPUNIT_ASSERT(inst != nullptr);
    shoal_buf out{};
    Status s = inst->invoke(
        "describe", [&](void* st) { return inst->ops<shoal_runtime_ops>().describe(st, &out); });
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    std::string json(out.ptr, out.len);
    std::free(out.ptr);
    CPPUNIT_ASSERT_MESSAGE(json, contains(json, "\"config\":{\"answer\":42}"));
  }

  void testRefusesOtherAbiMajorNamingBothVersions() {
    std::string msg = refusalFor("bad-major");
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, "fixture-bad-major.so"));
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, abi(2)));
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, abi(SHOAL_ABI_MAJOR)));
  }

  void testRefusesNewerMinorAcceptsSameMinor() {
    std::string msg = refusalFor("newer-minor");
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, "ABI 1.7"));
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, abi(SHOAL_ABI_MAJOR)));
    PluginHost host;
    host.loadDirectories({fixture("older-minor")});
    CPPUNIT_ASSERT(host.refusals().empty());
    CPPUNIT_ASSERT(host.find(Kind::kStorage, "older-ok") != nullptr);
  }

  void testLoadsRuntimeOpsTableOfAnOlderMinor() {
    // ABI 1.1's runtime table ends before the image_* slots; a reader probes for them.
    PluginHost host;
    host.loadDirectories({fixture("older-runtime")});
    CPPUNIT_ASSERT(host.refusals().empty());
    PluginInstance* p = host.find(Kind::kRuntime, "older-runtime");
    CPPUNIT_ASSERT(p != nullptr);
    const auto& ops = p->ops<shoal_runtime_ops>();
    CPPUNIT_ASSERT_EQUAL(uint32_t(SHOAL_RUNTIME_OPS_MIN_SIZE), ops.struct_size);
    CPPUNIT_ASSERT(!SHOAL_HAS_FIELD(&ops, shoal_runtime_ops, image_pull));
  }

  void testRefusesMissingEntryPoint() {
    std::string msg = refusalFor("no-entry");
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, "fixture-no-entry.so"));
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, "missing entry point"));
  }

  void testRefusesEntryPointOfADependency() {
    std::string msg = refusalFor("foreign-entry");
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, "missing entry point"));
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, "libfixture_base.so"));
  }

  void testRefusesDuplicateEntryPoint() {
    std::string msg = refusalFor("duplicate-entry");
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, "duplicate entry point"));
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, "libfixture_base.so"));
  }

  void testRefusesTooSmallDescriptor() {
    std::string msg = refusalFor("small-desc");
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, "descriptor too small"));
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, "24 bytes"));
  }

  void testRefusesUnknownKind() {
    std::string msg = refusalFor("unknown-kind");
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, "unknown plugin kind 42"));
  }

  void testRefusesNullOp() {
    std::string msg = refusalFor("null-op");
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, "is null"));
  }

  void testRefusesDuplicateKindAndName() {
    PluginHost host;
    host.loadDirectories({fixture("duplicate-name")});
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), host.list().size());
    auto refusals = host.refusals();
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), refusals.size());
    const std::string& msg = refusals[0].message;
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, "duplicate plugin runtime/fixture-good"));
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, host.list()[0].path));
  }

  void testFailedInitIsReportedNotRegistered() {
    std::string msg = refusalFor("init-fails");
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, "init failed"));
    CPPUNIT_ASSERT_MESSAGE(msg, contains(msg, "the setting \"color\" is wrong"));
  }

  void testRefusesFileThatIsNoSharedObject() {
    char dir[] = "/tmp/shoal-notso.XXXXXX";
    CPPUNIT_ASSERT(mkdtemp(dir) != nullptr);
    std::string path = std::string(dir) + "/junk.so";
    FILE* f = std::fopen(path.c_str(), "w");
    std::fputs("this is not an ELF file\n", f);
    std::fclose(f);
    PluginHost host;
    Status s = host.loadFile(path);
    CPPUNIT_ASSERT(!s.isOk());
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "junk.so"));
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "cannot load"));
    std::remove(path.c_str());
    rmdir(dir);
  }

  void testBadPluginsDoNotStopTheRest() {
    PluginHost host;
    host.loadDirectories({fixture("bad-major"), fixture("no-entry"), fixture("unknown-kind"),
                          fixture("init-fails"), fixture("does-not-exist"), fixture("good")});
    CPPUNIT_ASSERT_EQUAL(std::size_t(4), host.refusals().size());
    CPPUNIT_ASSERT(host.find(Kind::kRuntime, "fixture-good") != nullptr);
  }

  void testRequiredKindMissingIsAnError() {
    PluginHost host;
    host.loadDirectories({fixture("good")});
    CPPUNIT_ASSERT(host.checkRequired({"runtime"}).isOk());
    Status s = host.checkRequired({"runtime", "scheduler", "network"});
    CPPUNIT_ASSERT(!s.isOk());
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "scheduler, network"));
    CPPUNIT_ASSERT(!host.checkRequired({"gpu"}).isOk());
  }

  void testDisabledPluginIsSkipped() {
    PluginHost host;
    host.setDisabled({"fixture-good"});
    host.loadDirectories({fixture("good")});
    CPPUNIT_ASSERT(host.list().empty());
    CPPUNIT_ASSERT(host.refusals().empty());
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), host.disabledSkipped().size());
  }

 private:
  // Load one fixture directory and return its single refusal's message.
  static std::string refusalFor(const std::string& dir) {
    PluginHost host;
    host.loadDirectories({fixture(dir)});
    auto refusals = host.refusals();
    CPPUNIT_ASSERT_EQUAL_MESSAGE(dir, std::size_t(1), refusals.size());
    CPPUNIT_ASSERT(host.list().empty());
    CPPUNIT_ASSERT_MESSAGE(refusals[0].message, contains(refusals[0].path, dir));
    return refusals[0].path + ": " + refusals[0].message;
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(LoaderTest);
