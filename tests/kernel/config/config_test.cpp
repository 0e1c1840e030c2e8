// shoald.yaml: defaults, overrides, and errors that name file, line and key.
#include <cppunit/extensions/HelperMacros.h>

#include <fstream>
#include <sstream>

#include "kernel/config/daemon_config.h"

using shoal::config::DaemonConfig;
using shoal::config::parseConfig;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string errorOf(const std::string& yaml) {
  auto r = parseConfig(yaml, "/etc/shoal/shoald.yaml");
  CPPUNIT_ASSERT_MESSAGE("expected an error for:\n" + yaml, !r.isOk());
  return r.status().message();
}

}  // namespace

class ConfigTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(ConfigTest);
  CPPUNIT_TEST(testEmptyFileGivesDefaults);
  CPPUNIT_TEST(testShippedFileIsTheDefaultsAndDocumentsEveryKey);
  CPPUNIT_TEST(testValuesAreRead);
  CPPUNIT_TEST(testPluginConfigBecomesJson);
  CPPUNIT_TEST(testUnknownKeyNamesFileLineAndKey);
  CPPUNIT_TEST(testUnknownNestedKey);
  CPPUNIT_TEST(testWrongTypeNamesKeyAndLine);
  CPPUNIT_TEST(testBadValueNamesKeyAndLine);
  CPPUNIT_TEST(testRelativePathIsRefused);
  CPPUNIT_TEST(testUnknownRequiredKind);
  CPPUNIT_TEST(testSyntaxErrorHasLine);
  CPPUNIT_TEST(testMissingFileIsNamed);
  CPPUNIT_TEST_SUITE_END();

 public:
  void testEmptyFileGivesDefaults() {
    auto r = parseConfig("", "x.yaml");
    CPPUNIT_ASSERT(r.isOk());
    DaemonConfig d;
    CPPUNIT_ASSERT_EQUAL(d.dataRoot, r->dataRoot);
    CPPUNIT_ASSERT_EQUAL(std::string("/run/shoal/shoald.sock"), r->socketPath);
    CPPUNIT_ASSERT(r->logLevel == shoal::log::Level::kInfo);
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), r->requiredKinds.size());
  }

  // conf/shoald.yaml must say exactly what the code does by default, and mention every key.
  void testShippedFileIsTheDefaultsAndDocumentsEveryKey() {
    const std::string path = std::string(SHOAL_SOURCE_DIR) + "/conf/shoald.yaml";
    auto r = shoal::config::loadConfig(path);
    CPPUNIT_ASSERT_MESSAGE(r.status().toString(), r.isOk());
    DaemonConfig d;
    CPPUNIT_ASSERT_EQUAL(d.dataRoot, r->dataRoot);
    CPPUNIT_ASSERT_EQUAL(d.socketPath, r->socketPath);
    CPPUNIT_ASSERT_EQUAL(d.pidFile, r->pidFile);
    CPPUNIT_ASSERT(d.logLevel == r->logLevel);
    CPPUNIT_ASSERT(d.logFormat == r->logFormat);
    CPPUNIT_ASSERT(d.pluginDirs == r->pluginDirs);
    CPPUNIT_ASSERT(d.requiredKinds == r->requiredKinds);
    CPPUNIT_ASSERT(d.disabledPlugins == r->disabledPlugins);
    CPPUNIT_ASSERT(r->pluginConfig.empty());
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    for (const auto& key : shoal::config::knownKeys()) {
      std::string leaf = key.substr(key.rfind('.') == std::string::npos ? 0 : key.rfind('.') + 1);
      CPPUNIT_ASSERT_MESSAGE(key, contains(text.str(), leaf + ":"));
    }
  }

  void testValuesAreRead() {
    auto r = parseConfig(
        "data_root: /srv/shoal\n"
        "pidfile: /tmp/x.pid\n"
        "api:\n  socket: /tmp/s.sock\n"
        "log:\n  level: debug\n  format: json\n"
        "plugins:\n  dirs: [/a, /b]\n  required: [runtime]\n  disabled: [runtime-sim]\n",
        "x.yaml");
    CPPUNIT_ASSERT_MESSAGE(r.status().toString(), r.isOk());
    CPPUNIT_ASSERT_EQUAL(std::string("/srv/shoal"), r->dataRoot);
    CPPUNIT_ASSERT_EQUAL(std::string("/tmp/x.pid"), r->pidFile);
    CPPUNIT_ASSERT_EQUAL(std::string("/tmp/s.sock"), r->socketPath);
    CPPUNIT_ASSERT(r->logLevel == shoal::log::Level::kDebug);
    CPPUNIT_ASSERT(r->logFormat == shoal::log::Format::kJson);
    CPPUNIT_ASSERT((r->pluginDirs == std::vector<std::string>{"/a", "/b"}));
    CPPUNIT_ASSERT((r->requiredKinds == std::vector<std::string>{"runtime"}));
    CPPUNIT_ASSERT((r->disabledPlugins == std::vector<std::string>{"runtime-sim"}));
  }

  void testPluginConfigBecomesJson() {
    auto r = parseConfig(
        "plugins:\n"
        "  config:\n"
        "    runtime-runc:\n"
        "      runtime: crun\n"
        "      debug: true\n"
        "      port: 4789\n"
        "      ratio: .5\n"
        "      quoted: \"123\"\n"
        "      list: [a, 2, null]\n"
        "      text: \"say \\\"hi\\\"\"\n"
        "    storage-local:\n",
        "x.yaml");
    CPPUNIT_ASSERT_MESSAGE(r.status().toString(), r.isOk());
    CPPUNIT_ASSERT_EQUAL(
        std::string("{\"runtime\":\"crun\",\"debug\":true,\"port\":4789,\"ratio\":0.5,"
                    "\"quoted\":\"123\",\"list\":[\"a\",2,null],\"text\":\"say \\\"hi\\\"\"}"),
        r->pluginConfig.at("runtime-runc"));
    CPPUNIT_ASSERT_EQUAL(std::string("{}"), r->pluginConfig.at("storage-local"));
  }

  void testUnknownKeyNamesFileLineAndKey() {
    std::string m = errorOf("data_root: /x\n\nsocket_path: /y\n");
    CPPUNIT_ASSERT_MESSAGE(m, contains(m, "/etc/shoal/shoald.yaml:3:1: socket_path: unknown key"));
  }

  void testUnknownNestedKey() {
    std::string m = errorOf("log:\n  level: info\n  colour: red\n");
    CPPUNIT_ASSERT_MESSAGE(m, contains(m, "shoald.yaml:3:3: log.colour: unknown key in log"));
    CPPUNIT_ASSERT_MESSAGE(m, contains(m, "level, format"));
  }

  void testWrongTypeNamesKeyAndLine() {
    std::string m = errorOf("log:\n  level: [info]\n");
    CPPUNIT_ASSERT_MESSAGE(m, contains(m, ":2:10: log.level: expected a string, got a list"));
    m = errorOf("plugins:\n  dirs: /usr/lib\n");
    CPPUNIT_ASSERT_MESSAGE(m, contains(m, ":2:9: plugins.dirs: expected a list of strings"));
    m = errorOf("api: /run/x.sock\n");
    CPPUNIT_ASSERT_MESSAGE(m, contains(m, ":1:6: api: expected a mapping"));
  }

  void testBadValueNamesKeyAndLine() {
    std::string m = errorOf("data_root: /x\nlog:\n  level: loud\n");
    CPPUNIT_ASSERT_MESSAGE(m,
                           contains(m, "shoald.yaml:3:10: log.level: unknown log level \"loud\""));
    m = errorOf("log:\n  format: xml\n");
    CPPUNIT_ASSERT_MESSAGE(m, contains(m, ":2:11: log.format: unknown log format \"xml\""));
  }

  void testRelativePathIsRefused() {
    std::string m = errorOf("data_root: var/lib/shoal\n");
    CPPUNIT_ASSERT_MESSAGE(m, contains(m, ":1:12: data_root: expected an absolute path"));
    m = errorOf("plugins:\n  dirs:\n    - /ok\n    - relative\n");
    CPPUNIT_ASSERT_MESSAGE(m, contains(m, ":4:7: plugins.dirs[1]: expected an absolute path"));
  }

  void testUnknownRequiredKind() {
    std::string m = errorOf("plugins:\n  required: [runtime, gpu]\n");
    CPPUNIT_ASSERT_MESSAGE(m, contains(m, "plugins.required[1]: unknown plugin kind \"gpu\""));
  }

  void testSyntaxErrorHasLine() {
    std::string m = errorOf("log:\n  level: info\n bad indent: [\n");
    CPPUNIT_ASSERT_MESSAGE(m, contains(m, "/etc/shoal/shoald.yaml:"));
    CPPUNIT_ASSERT_MESSAGE(m, contains(m, "invalid YAML"));
  }

  void testMissingFileIsNamed() {
    auto r = shoal::config::loadConfig("/nonexistent/shoald.yaml");
    CPPUNIT_ASSERT(!r.isOk());
    CPPUNIT_ASSERT_MESSAGE(r.status().message(),
                           contains(r.status().message(), "/nonexistent/shoald.yaml"));
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(ConfigTest);
