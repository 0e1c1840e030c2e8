// The `shoal` command line: output, --format json, help texts and exit codes, against a real
// API server on a temporary socket.
#include <cppunit/extensions/HelperMacros.h>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Parser.h>

#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "kernel/api/api_server.h"
#include "kernel/api/system_routes.h"
#include "kernel/cli/cli.h"
#include "kernel/plugin/plugin_host.h"
#include "tests/support/temp_dir.h"

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

struct Run {
  int code;
  std::string out;
  std::string err;
};

}  // namespace

class CliTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(CliTest);
  CPPUNIT_TEST(testInfoPrintsServerSection);
  CPPUNIT_TEST(testInfoJsonIsTheApiDocument);
  CPPUNIT_TEST(testPluginLsTable);
  CPPUNIT_TEST(testPluginLsJsonAndQuiet);
  CPPUNIT_TEST(testPluginListAlias);
  CPPUNIT_TEST(testHelpReadsLikeDocker);
  CPPUNIT_TEST(testUnknownCommandAndFlagExitCodes);
  CPPUNIT_TEST(testBadFormatIsAUsageError);
  CPPUNIT_TEST(testNoDaemonIsAClearError);
  CPPUNIT_TEST(testHostFromEnvironmentAndFlag);
  CPPUNIT_TEST(testVersion);
  CPPUNIT_TEST(testBooleanSpecFlagsSetAndClear);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    dir_ = std::make_unique<shoal::test::TempDir>();
    socket_ = dir_->file("s.sock");
    plugins_ = std::make_unique<shoal::plugin::PluginHost>();
    plugins_->loadDirectories({std::string(SHOAL_FIXTURE_DIR) + "/good",
                               std::string(SHOAL_FIXTURE_DIR) + "/older-minor",
                               std::string(SHOAL_FIXTURE_DIR) + "/newer-minor"});
    shoal::api::addSystemRoutes(router_, *plugins_, {"0.1.0", "/var/lib/shoal", socket_, 1, 1, {}});
    // Just enough of the service API to see the specs the CLI sends.
    router_.add("POST", "/services/create", [this](const shoal::api::Request& r) {
      std::lock_guard<std::mutex> lock(sentMu_);
      sent_.push_back(r.body);
      return shoal::api::Response::json("{\"ID\":\"s1\"}");
    });
    router_.add("GET", "/services/inspect", [](const shoal::api::Request&) {
      return shoal::api::Response::json(
          "{\"ID\":\"s1\",\"Version\":7,\"Name\":\"web\",\"Spec\":{\"TaskTemplate\":"
          "{\"ContainerSpec\":{\"Image\":\"busybox\",\"TTY\":true,\"Init\":true,"
          "\"ReadOnly\":true}}}}");
    });
    router_.add("POST", "/services/update", [this](const shoal::api::Request& r) {
      std::lock_guard<std::mutex> lock(sentMu_);
      sent_.push_back(r.body);
      return shoal::api::Response::json("{}");
    });
    server_ = std::make_unique<shoal::api::ApiServer>(
        shoal::api::ApiServer::Options::unixSocket(socket_, 0600, 4), router_);
    CPPUNIT_ASSERT(server_->start().isOk());
  }

  void tearDown() override {
    server_.reset();
    plugins_.reset();
    dir_.reset();
  }

  Run run(std::vector<std::string> args, const std::string& envHost = "") {
    std::ostringstream out, err;
    int code = shoal::cli::run(args, out, err, envHost.empty() ? "unix://" + socket_ : envHost);
    return {code, out.str(), err.str()};
  }

  // `--tty`, `--init`, `--read-only` as Docker's: bare sets, `=false` clears, on create and on
  // update (which sends the current spec back with the change).
  void testBooleanSpecFlagsSetAndClear() {
    Run r = run(
        {"service", "create", "--detach", "--tty", "--init=true", "--read-only=false", "busybox"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(r.err, 0, r.code);
    r = run({"service", "update", "--detach", "--tty=false", "--init=false", "web"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(r.err, 0, r.code);
    std::lock_guard<std::mutex> lock(sentMu_);
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, sent_.size());
    auto container = [](const std::string& body, bool update) {
      auto o = Poco::JSON::Parser().parse(body).extract<Poco::JSON::Object::Ptr>();
      if (update) o = o->getObject("spec");
      return o->getObject("TaskTemplate")->getObject("ContainerSpec");
    };
    auto created = container(sent_[0], false);
    CPPUNIT_ASSERT_MESSAGE(sent_[0], created->getValue<bool>("TTY"));
    CPPUNIT_ASSERT(created->getValue<bool>("Init"));
    CPPUNIT_ASSERT(!created->getValue<bool>("ReadOnly"));
    auto updated = container(sent_[1], true);
    CPPUNIT_ASSERT_MESSAGE(sent_[1], !updated->getValue<bool>("TTY"));
    CPPUNIT_ASSERT(!updated->getValue<bool>("Init"));
    CPPUNIT_ASSERT(updated->getValue<bool>("ReadOnly"));  // not named: as it was
  }

  void testInfoPrintsServerSection() {
    Run r = run({"info"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(r.err, 0, r.code);
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "Server:\n Server Version: 0.1.0\n"));
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, " Plugin ABI: 1.2\n"));
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "  Runtime: fixture-good\n"));
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "  Storage: older-ok\n"));
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "  Scheduler: (none)\n"));
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, " Swarm: inactive\n"));
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, " Shoal Root Dir: /var/lib/shoal\n"));
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "WARNING: 1 plugin was refused"));
  }

  void testInfoJsonIsTheApiDocument() {
    Run r = run({"info", "--format", "json"});
    CPPUNIT_ASSERT_EQUAL(0, r.code);
    Poco::JSON::Parser p;
    auto obj = p.parse(r.out).extract<Poco::JSON::Object::Ptr>();
    CPPUNIT_ASSERT_EQUAL(std::string("0.1.0"), obj->getValue<std::string>("version"));
    Run r2 = run({"info", "--format=json"});
    CPPUNIT_ASSERT_EQUAL(0, r2.code);
  }

  void testPluginLsTable() {
    Run r = run({"plugin", "ls"});
    CPPUNIT_ASSERT_EQUAL_MESSAGE(r.err, 0, r.code);
    CPPUNIT_ASSERT_EQUAL(std::string("KIND      NAME           VERSION   ABI\n"
                                     "runtime   fixture-good   0.0.1     1.2\n"
                                     "storage   older-ok       1.2.3     1.0\n"),
                         r.out);
    // The refused plugin is reported on stderr with its reason.
    CPPUNIT_ASSERT_MESSAGE(r.err, contains(r.err, "fixture-newer-minor.so was refused"));
    CPPUNIT_ASSERT_MESSAGE(r.err, contains(r.err, "ABI 1.7"));
  }

  void testPluginLsJsonAndQuiet() {
    Run r = run({"plugin", "ls", "--format", "json"});
    CPPUNIT_ASSERT_EQUAL(0, r.code);
    Poco::JSON::Parser p;
    auto arr = p.parse(r.out).extract<Poco::JSON::Array::Ptr>();
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), arr->size());
    CPPUNIT_ASSERT_EQUAL(std::string("fixture-good"),
                         arr->getObject(0)->getValue<std::string>("name"));
    CPPUNIT_ASSERT(contains(arr->getObject(0)->getValue<std::string>("path"), "fixture-good.so"));
    r = run({"plugin", "ls", "-q"});
    CPPUNIT_ASSERT_EQUAL(std::string("fixture-good\nolder-ok\n"), r.out);
  }

  void testPluginListAlias() {
    CPPUNIT_ASSERT_EQUAL(run({"plugin", "ls"}).out, run({"plugin", "list"}).out);
  }

  void testHelpReadsLikeDocker() {
    Run r = run({"--help"});
    CPPUNIT_ASSERT_EQUAL(0, r.code);
    CPPUNIT_ASSERT(contains(r.out, "Usage:  shoal [OPTIONS] COMMAND"));
    CPPUNIT_ASSERT(contains(r.out,
                            "Management Commands:\n  image       Manage images\n"
                            "  network     Manage networks\n"
                            "  node        Manage Swarm nodes\n"
                            "  plugin      Manage plugins\n"
                            "  policy      Manage Lua placement policies\n"
                            "  service     Manage Swarm services\n"
                            "  swarm       Manage Swarm\n"));
    CPPUNIT_ASSERT(contains(r.out, "  info        Display system-wide information"));
    CPPUNIT_ASSERT(
        contains(r.out, "Run 'shoal COMMAND --help' for more information on a command."));
    r = run({"info", "--help"});
    CPPUNIT_ASSERT_EQUAL(0, r.code);
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "Usage:  shoal info [OPTIONS]"));
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "-f, --format string"));
    r = run({"swarm", "init", "--help"});
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "Usage:  shoal swarm init [OPTIONS]"));
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "--listen-addr string"));
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "(default \"0.0.0.0:2377\")"));
    r = run({"swarm", "init", "--cert-expiry", "90d"});
    CPPUNIT_ASSERT_EQUAL(125, r.code);
    CPPUNIT_ASSERT_MESSAGE(r.err,
                           contains(r.err, "invalid argument \"90d\" for \"--cert-expiry\""));
    r = run({"swarm", "join-token"});
    CPPUNIT_ASSERT_EQUAL(125, r.code);
    CPPUNIT_ASSERT(contains(r.err, "requires exactly 1 argument"));
    r = run({"plugin"});
    CPPUNIT_ASSERT_EQUAL(0, r.code);
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "Usage:  shoal plugin COMMAND"));
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "  ls          List plugins"));
    r = run({"plugin", "ls", "--help"});
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "Aliases:\n  plugin ls, plugin list"));
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "-q, --quiet"));
  }

  void testUnknownCommandAndFlagExitCodes() {
    Run r = run({"frobnicate"});
    CPPUNIT_ASSERT_EQUAL(1, r.code);
    CPPUNIT_ASSERT_EQUAL(
        std::string("shoal: 'frobnicate' is not a shoal command.\nSee 'shoal --help'\n"), r.err);
    r = run({"info", "--bogus"});
    CPPUNIT_ASSERT_EQUAL(125, r.code);
    CPPUNIT_ASSERT_EQUAL(std::string("unknown flag: --bogus\nSee 'shoal info --help'.\n"), r.err);
    r = run({"info", "extra"});
    CPPUNIT_ASSERT_EQUAL(125, r.code);
    CPPUNIT_ASSERT_MESSAGE(r.err, contains(r.err, "accepts no arguments"));
    r = run({"plugin", "nuke"});
    CPPUNIT_ASSERT_EQUAL(125, r.code);
    r = run({"info", "--format"});
    CPPUNIT_ASSERT_EQUAL(125, r.code);
    CPPUNIT_ASSERT_MESSAGE(r.err, contains(r.err, "flag needs an argument: --format"));
    r = run({"--nope"});
    CPPUNIT_ASSERT_EQUAL(125, r.code);
  }

  void testBadFormatIsAUsageError() {
    Run r = run({"plugin", "ls", "--format", "xml"});
    CPPUNIT_ASSERT_EQUAL(125, r.code);
    CPPUNIT_ASSERT_MESSAGE(r.err, contains(r.err, "unknown format \"xml\""));
  }

  void testNoDaemonIsAClearError() {
    server_->stop();
    Run r = run({"info"});
    CPPUNIT_ASSERT_EQUAL(1, r.code);
    CPPUNIT_ASSERT_MESSAGE(r.err, contains(r.err, "Cannot connect to the Shoal daemon at unix://" +
                                                      socket_ + ". Is shoald running?"));
    CPPUNIT_ASSERT(r.out.empty());
  }

  void testHostFromEnvironmentAndFlag() {
    // The flag wins over the environment.
    Run r = run({"-H", "unix://" + socket_, "plugin", "ls", "-q"}, "unix:///nonexistent.sock");
    CPPUNIT_ASSERT_EQUAL_MESSAGE(r.err, 0, r.code);
    r = run({"info"}, "unix:///nonexistent.sock");
    CPPUNIT_ASSERT_EQUAL(1, r.code);
    CPPUNIT_ASSERT(contains(r.err, "unix:///nonexistent.sock"));
    r = run({"--host", "tcp://10.0.0.1:1", "info"});
    CPPUNIT_ASSERT_EQUAL(1, r.code);
    CPPUNIT_ASSERT_MESSAGE(r.err, contains(r.err, "unsupported host"));
  }

  void testVersion() {
    Run r = run({"--version"});
    CPPUNIT_ASSERT_EQUAL(std::string("Shoal version " SHOAL_VERSION "\n"), r.out);
    r = run({"version"});
    CPPUNIT_ASSERT_EQUAL(0, r.code);
    CPPUNIT_ASSERT_MESSAGE(r.out, contains(r.out, "Server:\n Version:           0.1.0"));
  }

 private:
  std::unique_ptr<shoal::test::TempDir> dir_;
  std::string socket_;
  std::unique_ptr<shoal::plugin::PluginHost> plugins_;
  shoal::api::Router router_;
  std::unique_ptr<shoal::api::ApiServer> server_;
  std::mutex sentMu_;
  std::vector<std::string> sent_;  // guarded by sentMu_: bodies the service routes got
};

CPPUNIT_TEST_SUITE_REGISTRATION(CliTest);
