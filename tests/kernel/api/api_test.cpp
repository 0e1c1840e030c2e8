// The control API over a real unix socket: routes, JSON errors with proper statuses, socket
// permissions, malformed requests, and the client's view of all of it.
#include <cppunit/extensions/HelperMacros.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <cstring>

#include "kernel/api/api_client.h"
#include "kernel/api/api_server.h"
#include "kernel/api/router.h"
#include "kernel/api/system_routes.h"
#include "kernel/plugin/plugin_host.h"
#include "tests/support/temp_dir.h"

using shoal::Status;
using shoal::api::ApiClient;
using shoal::api::ApiServer;
using shoal::api::Response;
using shoal::api::Router;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

Poco::JSON::Object::Ptr parse(const std::string& body) {
  Poco::JSON::Parser p;
  return p.parse(body).extract<Poco::JSON::Object::Ptr>();
}

// Send raw bytes on the socket and read the whole reply.
std::string rawExchange(const std::string& socketPath, const std::string& bytes) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socketPath.c_str(), sizeof addr.sun_path - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return "";
  }
  // No half-close: the server must answer a request on a connection that stays open.
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  (void)!write(fd, bytes.data(), bytes.size());
  std::string reply;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) reply.append(buf, static_cast<std::size_t>(n));
  close(fd);
  return reply;
}

}  // namespace

class ApiTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(ApiTest);
  CPPUNIT_TEST(testInfoDescribesDaemonAndPlugins);
  CPPUNIT_TEST(testPluginsListsLoadedAndRefused);
  CPPUNIT_TEST(testUnknownPathIs404Json);
  CPPUNIT_TEST(testWrongMethodIs405WithAllow);
  CPPUNIT_TEST(testHandlerErrorsMapToStatus);
  CPPUNIT_TEST(testMalformedRequestIs400AndServerSurvives);
  CPPUNIT_TEST(testMalformedUriIs400Json);
  CPPUNIT_TEST(testSocketIsRootOnly);
  CPPUNIT_TEST(testStopRemovesSocketAndClientReportsNoDaemon);
  CPPUNIT_TEST(testStaleSocketIsReplacedButNotOtherFiles);
  CPPUNIT_TEST(testClientRejectsBadHost);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override {
    dir_ = std::make_unique<shoal::test::TempDir>();
    socket_ = dir_->file("api.sock");
    plugins_ = std::make_unique<shoal::plugin::PluginHost>();
    plugins_->loadDirectories(
        {std::string(SHOAL_FIXTURE_DIR) + "/good", std::string(SHOAL_FIXTURE_DIR) + "/bad-major"});
    router_ = std::make_unique<Router>();
    shoal::api::DaemonFacts facts{"9.9.9", "/var/lib/shoal-test", socket_, 4242, 1, {}};
    shoal::api::addSystemRoutes(*router_, *plugins_, facts);
    router_->add("POST", "/fail", [](const shoal::api::Request& r) {
      if (r.body == "conflict") return Response::error(Status::conflict("version mismatch"));
      if (r.body == "throw") throw std::runtime_error("handler exploded");
      return Response::error(Status::notSupported("not yet"));
    });
    server_ =
        std::make_unique<ApiServer>(ApiServer::Options::unixSocket(socket_, 0600, 4), *router_);
    Status s = server_->start();
    CPPUNIT_ASSERT_MESSAGE(s.toString(), s.isOk());
    client_ = std::make_unique<ApiClient>(ApiClient::create("unix://" + socket_).value());
  }

  void tearDown() override {
    server_.reset();
    plugins_.reset();
    dir_.reset();
  }

  void testInfoDescribesDaemonAndPlugins() {
    auto body = client_->call("GET", "/info");
    CPPUNIT_ASSERT_MESSAGE(body.status().toString(), body.isOk());
    auto obj = parse(*body);
    CPPUNIT_ASSERT_EQUAL(std::string("9.9.9"), obj->getValue<std::string>("version"));
    CPPUNIT_ASSERT_EQUAL(std::string("1.2"), obj->getValue<std::string>("plugin_abi"));
    CPPUNIT_ASSERT_EQUAL(std::string("/var/lib/shoal-test"),
                         obj->getValue<std::string>("data_root"));
    CPPUNIT_ASSERT_EQUAL(std::string("inactive"),
                         obj->getObject("swarm")->getValue<std::string>("state"));
    auto runtimes = obj->getObject("plugins")->getArray("runtime");
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), runtimes->size());
    CPPUNIT_ASSERT_EQUAL(std::string("fixture-good"), runtimes->getElement<std::string>(0));
    CPPUNIT_ASSERT_EQUAL(1, obj->getValue<int>("plugins_refused"));
    CPPUNIT_ASSERT(obj->getValue<int>("cpus") >= 1);
  }

  void testPluginsListsLoadedAndRefused() {
    auto body = client_->call("GET", "/plugins");
    CPPUNIT_ASSERT(body.isOk());
    auto obj = parse(*body);
    auto list = obj->getArray("plugins");
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), list->size());
    auto p = list->getObject(0);
    CPPUNIT_ASSERT_EQUAL(std::string("runtime"), p->getValue<std::string>("kind"));
    CPPUNIT_ASSERT_EQUAL(std::string("fixture-good"), p->getValue<std::string>("name"));
    CPPUNIT_ASSERT_EQUAL(std::string("0.0.1"), p->getValue<std::string>("version"));
    CPPUNIT_ASSERT_EQUAL(std::string("1.2"), p->getValue<std::string>("abi"));
    auto refused = obj->getArray("refused");
    CPPUNIT_ASSERT_EQUAL(std::size_t(1), refused->size());
    CPPUNIT_ASSERT(contains(refused->getObject(0)->getValue<std::string>("message"),
                            "ABI 2." + std::to_string(SHOAL_ABI_MINOR)));
  }

  void testUnknownPathIs404Json() {
    auto reply = client_->request("GET", "/nope");
    CPPUNIT_ASSERT(reply.isOk());
    CPPUNIT_ASSERT_EQUAL(404, reply->status);
    CPPUNIT_ASSERT_EQUAL(std::string("page not found: GET /nope"),
                         parse(reply->body)->getValue<std::string>("message"));
    auto call = client_->call("GET", "/nope");
    CPPUNIT_ASSERT(call.status().code() == Status::Code::kNotFound);
  }

  void testWrongMethodIs405WithAllow() {
    auto reply = client_->request("DELETE", "/info");
    CPPUNIT_ASSERT(reply.isOk());
    CPPUNIT_ASSERT_EQUAL(405, reply->status);
    CPPUNIT_ASSERT(contains(parse(reply->body)->getValue<std::string>("message"), "allowed: GET"));
  }

  void testHandlerErrorsMapToStatus() {
    auto reply = client_->request("POST", "/fail", "conflict");
    CPPUNIT_ASSERT_EQUAL(409, reply->status);
    reply = client_->request("POST", "/fail", "other");
    CPPUNIT_ASSERT_EQUAL(501, reply->status);
    reply = client_->request("POST", "/fail", "throw");
    CPPUNIT_ASSERT_EQUAL(500, reply->status);
    CPPUNIT_ASSERT(
        contains(parse(reply->body)->getValue<std::string>("message"), "handler exploded"));
    auto call = client_->call("POST", "/fail", "conflict");
    CPPUNIT_ASSERT(call.status().code() == Status::Code::kConflict);
    CPPUNIT_ASSERT_EQUAL(std::string("version mismatch"), call.status().message());
  }

  void testMalformedRequestIs400AndServerSurvives() {
    std::string reply = rawExchange(socket_, "THIS IS NOT HTTP\r\n\r\n");
    CPPUNIT_ASSERT_MESSAGE(reply, contains(reply, "HTTP/1.1 400 "));
    CPPUNIT_ASSERT_MESSAGE(
        reply, contains(reply, "{\"message\":\"malformed request: unsupported protocol"));
    reply = rawExchange(socket_, "GET info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CPPUNIT_ASSERT_MESSAGE(reply, contains(reply, "not an absolute path"));
    reply = rawExchange(socket_, "GARBAGE\r\n\r\n");
    CPPUNIT_ASSERT_MESSAGE(reply, contains(reply, " 400 "));
    // Poco rejects an unparsable Content-Length before any handler runs, by closing the
    // connection; what matters is that nothing is served and the server lives on.
    reply = rawExchange(
        socket_,
        "GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: nope\r\n\r\n");
    CPPUNIT_ASSERT_MESSAGE(reply, !contains(reply, " 200 "));
    CPPUNIT_ASSERT(client_->call("GET", "/info").isOk());
  }

  void testMalformedUriIs400Json() {
    std::string reply =
        rawExchange(socket_, "GET /info?x=%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    CPPUNIT_ASSERT_MESSAGE(reply, contains(reply, "HTTP/1.1 400"));
    CPPUNIT_ASSERT_MESSAGE(reply, contains(reply, "{\"message\":\"malformed request URI"));
  }

  void testSocketIsRootOnly() {
    struct stat st {};
    CPPUNIT_ASSERT_EQUAL(0, lstat(socket_.c_str(), &st));
    CPPUNIT_ASSERT(S_ISSOCK(st.st_mode));
    CPPUNIT_ASSERT_EQUAL(0600u, static_cast<unsigned>(st.st_mode & 0777));
  }

  void testStopRemovesSocketAndClientReportsNoDaemon() {
    server_->stop();
    CPPUNIT_ASSERT(access(socket_.c_str(), F_OK) != 0);
    auto call = client_->call("GET", "/info");
    CPPUNIT_ASSERT(call.status().code() == Status::Code::kUnavailable);
    CPPUNIT_ASSERT_MESSAGE(call.status().message(),
                           contains(call.status().message(),
                                    "Cannot connect to the Shoal daemon at unix://" + socket_));
  }

  void testStaleSocketIsReplacedButNotOtherFiles() {
    // A socket file left behind (no one listening) is replaced by a new server.
    server_.reset();
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_.c_str(), sizeof addr.sun_path - 1);
    CPPUNIT_ASSERT_EQUAL(0, bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr));
    close(fd);
    ApiServer again(ApiServer::Options::unixSocket(socket_, 0600, 2), *router_);
    CPPUNIT_ASSERT(again.start().isOk());
    CPPUNIT_ASSERT(client_->call("GET", "/info").isOk());
    again.stop();
    // A regular file at the socket path is never deleted.
    std::string path = dir_->write("not-a-socket", "precious");
    ApiServer refused(ApiServer::Options::unixSocket(path, 0600, 2), *router_);
    Status s = refused.start();
    CPPUNIT_ASSERT(!s.isOk());
    CPPUNIT_ASSERT_MESSAGE(s.message(), contains(s.message(), "is not a socket"));
    CPPUNIT_ASSERT_EQUAL(std::string("precious"), shoal::test::readFile(path));
  }

  void testClientRejectsBadHost() {
    CPPUNIT_ASSERT(!ApiClient::create("tcp://1.2.3.4:2375").isOk());
    CPPUNIT_ASSERT(!ApiClient::create("unix://relative.sock").isOk());
    CPPUNIT_ASSERT(ApiClient::create("/run/x.sock").isOk());
  }

 private:
  std::unique_ptr<shoal::test::TempDir> dir_;
  std::string socket_;
  std::unique_ptr<shoal::plugin::PluginHost> plugins_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<ApiServer> server_;
  std::unique_ptr<ApiClient> client_;
};

CPPUNIT_TEST_SUITE_REGISTRATION(ApiTest);
