// runc_image against registries on loopback: Debian's docker-registry (started and filled by
// scripts/test-images on a free port, stopped at exit) and a fake registry served by this test
// (Poco HTTPServer) that demands bearer tokens from its own token endpoint, redirects blobs to a
// "storage" path, counts requests and can serve a corrupt blob. Pins pulls by tag, by digest and
// through an index, resolve, layer sharing between images, the token flow, shared work between
// concurrent pulls, corrupt blobs leaving nothing behind, and gc after remove.
#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/Net/SocketAddress.h>
#include <cppunit/extensions/HelperMacros.h>
#include <dirent.h>
#include <fcntl.h>
#include <shoal/plugin.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <shoal/plugin.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "digest.h"
#include "fs_util.h"
#include "image_store.h"
#include "reference.h"
#include "registry.h"
#include "tests/plugins/runtime-runc/image/assert_traits.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using shoal::runc::Image;
using shoal::runc::ImageStore;
using shoal::runc::RegistryOptions;
using shoal::sdk::Error;
using shoal::test::TempDir;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

void expectError(const std::function<void()>& f, shoal_status code, const std::string& needle) {
  try {
    f();
  } catch (const Error& e) {
    CPPUNIT_ASSERT_EQUAL_MESSAGE(e.what(), static_cast<int>(code), static_cast<int>(e.code()));
    CPPUNIT_ASSERT_MESSAGE(std::string(e.what()) + " lacks: " + needle, contains(e.what(), needle));
    return;
  }
  CPPUNIT_FAIL("no error; expected one containing: " + needle);
}

std::string readAll(const std::string& path) { return shoal::test::readFile(path); }
std::string hex(const std::string& digest) { return digest.substr(7); }

uint16_t freePort() {
  Poco::Net::ServerSocket s(Poco::Net::SocketAddress("127.0.0.1", 0));
  uint16_t port = s.address().port();
  s.close();
  return port;
}

int countEntries(const std::string& dir) {
  int n = 0;
  try {
    for (const std::string& name : [&] {
           std::vector<std::string> v;
           if (DIR* d = opendir(dir.c_str())) {
             while (struct dirent* e = readdir(d)) v.push_back(e->d_name);
             closedir(d);
           }
           return v;
         }()) {
      if (name != "." && name != "..") ++n;
    }
  } catch (...) {
  }
  return n;
}

std::string base64(const std::string& in) {
  static const char k[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int val = 0, bits = -6;
  for (unsigned char c : in) {
    val = (val << 8) + c;
    bits += 8;
    while (bits >= 0) {
      out += k[(val >> bits) & 0x3F];
      bits -= 6;
    }
  }
  if (bits > -6) out += k[((val << 8) >> (bits + 8)) & 0x3F];
  while (out.size() % 4) out += '=';
  return out;
}

// The images scripts/test-images builds, in a real docker-registry. Made once per process and
// torn down at exit (registry stopped, directories removed), whatever the tests did.
struct World {
  TempDir dir;
  std::string images;  // scripts/test-images build DIR
  uint16_t port = 0;
  pid_t registryPid = -1;
  std::map<std::string, std::string> env;  // images.env
  std::string host() const { return "127.0.0.1:" + std::to_string(port); }
  std::string ref(const std::string& tag) const { return host() + "/shoal-test:" + tag; }

  World() {
    const std::string script = std::string(SHOAL_SOURCE_DIR) + "/scripts/test-images";
    images = dir.file("images");
    auto t0 = std::chrono::steady_clock::now();
    auto run = [&](std::vector<std::string> argv) {
      shoal::test::RunResult r = shoal::test::runCommand(argv, std::chrono::seconds(60));
      if (r.exitCode != 0) {
        throw std::runtime_error(argv[1] + " failed (" + std::to_string(r.exitCode) +
                                 "): " + r.err + r.out);
      }
      return r.out;
    };
    run({script, "build", images});
    auto t1 = std::chrono::steady_clock::now();
    port = freePort();
    registryPid = std::atoi(run({script, "registry", images, std::to_string(port)}).c_str());
    auto t2 = std::chrono::steady_clock::now();
    run({script, "push", images, host()});
    auto t3 = std::chrono::steady_clock::now();
    std::istringstream lines(readAll(images + "/images.env"));
    for (std::string line; std::getline(lines, line);) {
      auto eq = line.find('=');
      if (eq != std::string::npos) env[line.substr(0, eq)] = line.substr(eq + 1);
    }
    auto ms = [](auto a, auto b) {
      return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
    };
    std::cerr << "\n  [test-images] build " << ms(t0, t1) << " ms, registry " << ms(t1, t2)
              << " ms, push " << ms(t2, t3) << " ms\n";
  }
  // The same storage over HTTPS (scripts/test-images tls-registry), started on first use;
  // its CA is images/tls/ca.crt.
  uint16_t tlsPort = 0;
  pid_t tlsPid = -1;
  std::string tlsHost() {
    if (tlsPid < 0) {
      tlsPort = freePort();
      shoal::test::RunResult r =
          shoal::test::runCommand({std::string(SHOAL_SOURCE_DIR) + "/scripts/test-images",
                                   "tls-registry", images, std::to_string(tlsPort)},
                                  std::chrono::seconds(60));
      if (r.exitCode != 0) throw std::runtime_error("tls-registry failed: " + r.err + r.out);
      tlsPid = std::atoi(r.out.c_str());
    }
    return "127.0.0.1:" + std::to_string(tlsPort);
  }
  ~World() {
    for (pid_t pid : {registryPid, tlsPid}) {
      if (pid <= 0) continue;
      kill(pid, SIGTERM);
      shoal::test::eventually([&] { return kill(pid, 0) != 0; }, std::chrono::seconds(5));
      kill(pid, SIGKILL);
    }
  }
  const std::string& at(const std::string& key) const {
    auto it = env.find(key);
    if (it == env.end()) throw std::runtime_error("images.env has no " + key);
    return it->second;
  }
};

World& world() {
  static World w;
  return w;
}

// A registry served by the test: bearer tokens (from /token, which wants basic auth with the
// test's user), blobs redirected to /storage/<hex>, everything read from the OCI layout that
// scripts/test-images built.
class FakeRegistry {
 public:
  explicit FakeRegistry(std::string layout) : layout_(std::move(layout)) {
    Poco::Net::ServerSocket socket(Poco::Net::SocketAddress("127.0.0.1", 0));
    port_ = socket.address().port();
    auto params = new Poco::Net::HTTPServerParams;
    params->setMaxThreads(8);
    params->setMaxQueued(64);
    server_ = std::make_unique<Poco::Net::HTTPServer>(new Factory(*this), socket, params);
    server_->start();
    // Blob storage on another port: another host to the client, which must not send it the
    // registry's credentials.
    Poco::Net::ServerSocket storageSocket(Poco::Net::SocketAddress("127.0.0.1", 0));
    storagePort_ = storageSocket.address().port();
    auto storageParams = new Poco::Net::HTTPServerParams;
    storageParams->setMaxThreads(8);
    storage_ =
        std::make_unique<Poco::Net::HTTPServer>(new Factory(*this), storageSocket, storageParams);
    storage_->start();
  }
  ~FakeRegistry() {
    server_->stopAll(true);
    storage_->stopAll(true);
  }

  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string ref(const std::string& tag) const { return host() + "/shoal-test:" + tag; }
  static constexpr char kUser[] = "shoal";
  static constexpr char kPassword[] = "s3cret";
  static constexpr char kToken[] = "tok-4f1c";

  void corrupt(const std::string& digest) {
    std::lock_guard<std::mutex> lock(mutex_);
    corrupt_ = digest;
  }
  // The next transfer of blob `digest` stops at byte `at` and the connection closes, as if it
  // were cut; with `thenDown`, storage answers 503 from then on, until up(). With `stall`, the
  // connection stays open, silent, for 2 s first (past a 1 s client timeout).
  void cutAt(const std::string& digest, std::size_t at, bool thenDown, bool stall = false) {
    std::lock_guard<std::mutex> lock(mutex_);
    cut_ = digest;
    cutAt_ = at;
    downAfterCut_ = thenDown;
    stall_ = stall;
  }
  void up() {
    std::lock_guard<std::mutex> lock(mutex_);
    down_ = false;
  }
  void ignoreRange(bool ignore) {  // answer a Range with the whole blob (200), as some servers do
    std::lock_guard<std::mutex> lock(mutex_);
    ignoreRange_ = ignore;
  }
  void hide(const std::string& digest) {  // storage answers 404 for this blob
    std::lock_guard<std::mutex> lock(mutex_);
    hidden_ = digest;
  }
  // Each storage transfer of a blob: the Range asked for ("" for none), the bytes sent.
  struct Transfer {
    std::string range;
    std::size_t bytes = 0;
  };
  std::vector<Transfer> transfers(const std::string& digest) {
    std::lock_guard<std::mutex> lock(mutex_);
    return transfers_[digest];
  }
  int hits(const std::string& path) {
    std::lock_guard<std::mutex> lock(mutex_);
    return hits_[path];
  }
  int total() {
    std::lock_guard<std::mutex> lock(mutex_);
    int n = 0;
    for (const auto& [k, v] : hits_) n += v;
    return n;
  }
  int tokenGrants() {
    std::lock_guard<std::mutex> lock(mutex_);
    return tokenGrants_;
  }
  int unauthorized() {
    std::lock_guard<std::mutex> lock(mutex_);
    return unauthorized_;
  }
  bool storageSawAuthorization() {
    std::lock_guard<std::mutex> lock(mutex_);
    return storageSawAuth_;
  }

 private:
  class Handler : public Poco::Net::HTTPRequestHandler {
   public:
    explicit Handler(FakeRegistry& r) : r_(r) {}
    void handleRequest(Poco::Net::HTTPServerRequest& req,
                       Poco::Net::HTTPServerResponse& resp) override {
      r_.handle(req, resp);
    }

   private:
    FakeRegistry& r_;
  };
  class Factory : public Poco::Net::HTTPRequestHandlerFactory {
   public:
    explicit Factory(FakeRegistry& r) : r_(r) {}
    Poco::Net::HTTPRequestHandler* createRequestHandler(
        const Poco::Net::HTTPServerRequest&) override {
      return new Handler(r_);
    }

   private:
    FakeRegistry& r_;
  };

  static void send(Poco::Net::HTTPServerResponse& resp, int status, const std::string& body,
                   const std::string& type = "application/json") {
    resp.setStatus(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(status));
    resp.setContentType(type);
    resp.setContentLength(static_cast<std::streamsize>(body.size()));
    resp.send() << body;
  }

  // A blob, or from a `Range: bytes=N-` on the part asked for (206), cut where cutAt() said.
  void sendBlob(Poco::Net::HTTPServerRequest& req, Poco::Net::HTTPServerResponse& resp,
                const std::string& digest, const std::string& body) {
    const std::string asked = req.get("Range", "");
    std::string range = asked;
    bool stall = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (digest == hidden_) return send(resp, 404, "no such object");
      if (ignoreRange_) range.clear();
    }
    std::size_t from = 0;
    if (!range.empty()) {
      if (range.rfind("bytes=", 0) != 0 || range.back() != '-') return send(resp, 400, "range?");
      from = std::stoul(range.substr(6));
      if (from >= body.size()) {
        resp.set("Content-Range", "bytes */" + std::to_string(body.size()));
        return send(resp, 416, "");
      }
    }
    std::size_t end = body.size();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (down_) return send(resp, 503, "down for maintenance");
      if (digest == cut_ && cutAt_ > from && cutAt_ < end) {
        end = cutAt_;
        cut_.clear();
        down_ = downAfterCut_;
        stall = stall_;
      }
      transfers_[digest].push_back({asked, end - from});
    }
    resp.setStatus(range.empty() ? Poco::Net::HTTPResponse::HTTP_OK
                                 : Poco::Net::HTTPResponse::HTTP_PARTIAL_CONTENT);
    if (!range.empty()) {
      resp.set("Content-Range", "bytes " + std::to_string(from) + "-" +
                                    std::to_string(body.size() - 1) + "/" +
                                    std::to_string(body.size()));
    }
    resp.setContentType("application/octet-stream");
    resp.setContentLength(static_cast<std::streamsize>(body.size() - from));
    resp.setKeepAlive(false);  // so that a cut transfer ends with the connection
    std::ostream& out = resp.send();
    out.write(body.data() + from, static_cast<std::streamsize>(end - from));
    out.flush();
    if (stall) std::this_thread::sleep_for(std::chrono::seconds(2));
  }

  std::string blobBytes(const std::string& hexDigest) {
    std::string path = layout_ + "/blobs/sha256/" + hexDigest;
    if (!shoal::runc::fs::exists(path)) return "";
    return readAll(path);
  }

  void handle(Poco::Net::HTTPServerRequest& req, Poco::Net::HTTPServerResponse& resp) {
    const std::string uri = req.getURI();
    const std::string path = uri.substr(0, uri.find('?'));
    const std::string auth = req.get("Authorization", "");
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++hits_[path];
    }
    if (path == "/token") {
      if (auth != "Basic " + base64(std::string(kUser) + ":" + kPassword) ||
          !contains(uri, "service=fake-registry") ||
          !contains(uri, "scope=repository%3Ashoal-test%3Apull")) {
        return send(resp, 401, "{\"details\":\"bad credentials\"}");
      }
      std::lock_guard<std::mutex> lock(mutex_);
      ++tokenGrants_;
      return send(resp, 200, std::string("{\"token\":\"") + kToken + "\",\"expires_in\":300}");
    }
    if (path.rfind("/storage/", 0) == 0) {
      std::string digest = "sha256:" + path.substr(9);
      std::string body = blobBytes(path.substr(9));
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!auth.empty()) storageSawAuth_ = true;
        if (digest == corrupt_ && !body.empty()) body[body.size() / 2] ^= 0x55;
      }
      if (body.empty()) return send(resp, 404, "no such object");
      return sendBlob(req, resp, digest, body);
    }
    if (path.rfind("/v2/", 0) != 0) return send(resp, 404, "not here");
    if (auth != std::string("Bearer ") + kToken) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ++unauthorized_;
      }
      resp.set("WWW-Authenticate", "Bearer realm=\"http://" + host() +
                                       "/token\",service=\"fake-registry\",scope=\"repository:"
                                       "shoal-test:pull\"");
      return send(resp, 401,
                  "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication "
                  "required\"}]}");
    }
    const std::string prefix = "/v2/shoal-test/";
    if (path.rfind(prefix, 0) != 0)
      return send(resp, 404,
                  "{\"errors\":[{\"code\":\"NAME_UNKNOWN\",\"message\":\"repository name not known "
                  "to registry\"}]}");
    std::string rest = path.substr(prefix.size());
    if (rest.rfind("manifests/", 0) == 0) {
      std::string ref = rest.substr(10);
      std::string digest = ref;
      if (ref.rfind("sha256:", 0) != 0) {
        digest.clear();
        Poco::JSON::Parser parser;
        auto index =
            parser.parse(readAll(layout_ + "/index.json")).extract<Poco::JSON::Object::Ptr>();
        auto list = index->getArray("manifests");
        for (std::size_t i = 0; i < list->size(); ++i) {
          auto m = list->getObject(static_cast<unsigned>(i));
          auto ann = m->getObject("annotations");
          if (!ann.isNull() &&
              ann->optValue<std::string>("org.opencontainers.image.ref.name", "") == ref) {
            digest = m->getValue<std::string>("digest");
          }
        }
      }
      std::string body = digest.empty() ? "" : blobBytes(hex(digest));
      if (body.empty()) {
        return send(
            resp, 404,
            "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"manifest unknown\"}]}");
      }
      Poco::JSON::Parser parser;
      auto doc = parser.parse(body).extract<Poco::JSON::Object::Ptr>();
      resp.set("Docker-Content-Digest", digest);
      return send(resp, 200, body, doc->optValue<std::string>("mediaType", "application/json"));
    }
    if (rest.rfind("blobs/sha256:", 0) == 0) {
      resp.set("Location",
               "http://127.0.0.1:" + std::to_string(storagePort_) + "/storage/" + rest.substr(13));
      return send(resp, 307, "");
    }
    send(resp, 404, "{}");
  }

  const std::string layout_;
  uint16_t port_ = 0;
  uint16_t storagePort_ = 0;
  std::unique_ptr<Poco::Net::HTTPServer> server_, storage_;
  std::mutex mutex_;
  std::string corrupt_;                                     // GUARDED_BY(mutex_)
  std::map<std::string, int> hits_;                         // GUARDED_BY(mutex_)
  int tokenGrants_ = 0;                                     // GUARDED_BY(mutex_)
  int unauthorized_ = 0;                                    // GUARDED_BY(mutex_)
  bool storageSawAuth_ = false;                             // GUARDED_BY(mutex_)
  std::string cut_;                                         // GUARDED_BY(mutex_)
  std::size_t cutAt_ = 0;                                   // GUARDED_BY(mutex_)
  bool downAfterCut_ = false;                               // GUARDED_BY(mutex_)
  bool down_ = false;                                       // GUARDED_BY(mutex_)
  bool stall_ = false;                                      // GUARDED_BY(mutex_)
  bool ignoreRange_ = false;                                // GUARDED_BY(mutex_)
  std::string hidden_;                                      // GUARDED_BY(mutex_)
  std::map<std::string, std::vector<Transfer>> transfers_;  // GUARDED_BY(mutex_): by digest
};

constexpr char FakeRegistry::kUser[];
constexpr char FakeRegistry::kPassword[];
constexpr char FakeRegistry::kToken[];

std::string topLayerDir(ImageStore& store, const Image& image) {
  return store.layerDirs(image).at(0);
}

// A credentials file for the fake registry's user.
std::string credentials(TempDir& tmp, const FakeRegistry& fake) {
  return tmp.write("config.json", "{\"auths\":{\"" + fake.host() + "\":{\"auth\":\"" +
                                      base64("shoal:s3cret") + "\"}}}");
}

std::size_t blobSize(World& w, const std::string& digest) {
  return readAll(w.images + "/layout/blobs/sha256/" + hex(digest)).size();
}

off_t fileSize(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

void flipByte(const std::string& path, off_t at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(at);
  char c = 0;
  f.get(c);
  f.seekp(at);
  f.put(static_cast<char>(c ^ 0x5a));
}

}  // namespace

class RuncImagePullTest : public CppUnit::TestFixture {
  CPPUNIT_TEST_SUITE(RuncImagePullTest);
  CPPUNIT_TEST(testPullByTagUnpacksAndRecordsTheImage);
  CPPUNIT_TEST(testResolveReportsTheServedDigest);
  CPPUNIT_TEST(testUnknownTagIsENOENTNamingTheImage);
  CPPUNIT_TEST(testPullV1ThenV2SharesOnlyTheBaseLayer);
  CPPUNIT_TEST(testPullByDigest);
  CPPUNIT_TEST(testPullThroughIndexPicksThisPlatform);
  CPPUNIT_TEST(testZstdAndHealthcheckImages);
  CPPUNIT_TEST(testEnsurePullsOnlyWhenAbsent);
  CPPUNIT_TEST(testBearerTokenFlowWithCredentials);
  CPPUNIT_TEST(testTokenServiceRefusesWithoutCredentials);
  CPPUNIT_TEST(testConcurrentPullsShareTheWork);
  CPPUNIT_TEST(testCorruptBlobIsRejectedAndLeavesNothing);
  CPPUNIT_TEST(testCutTransferGoesOnFromWhereItStopped);
  CPPUNIT_TEST(testInterruptedDownloadResumesAfterARestart);
  CPPUNIT_TEST(testResumeCornerCases);
  CPPUNIT_TEST(testGcAfterRemoveFreesLayers);
  CPPUNIT_TEST(testUnreachableRegistryIsEIO);
  CPPUNIT_TEST(testHttpsRegistryTrustedThroughItsCertsDir);
  CPPUNIT_TEST(testLoadsTheScriptsTarballs);
  CPPUNIT_TEST_SUITE_END();

 public:
  void setUp() override { world(); }

  void testPullByTagUnpacksAndRecordsTheImage() {
    World& w = world();
    TempDir tmp;
    ImageStore store(tmp.file("store"), RegistryOptions{});
    auto t0 = std::chrono::steady_clock::now();
    Image v1 = store.pull(w.ref("v1"));
    auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    std::cerr << "\n  [pull] " << w.ref("v1") << " into an empty store: " << ms << " ms ("
              << v1.size << " bytes compressed)\n";
    CPPUNIT_ASSERT_EQUAL(w.at("V1_CONFIG"), v1.id);
    CPPUNIT_ASSERT_EQUAL(w.at("V1_MANIFEST"), v1.manifestDigest);
    CPPUNIT_ASSERT_EQUAL(std::vector<std::string>{w.ref("v1")}, v1.tags);
    CPPUNIT_ASSERT_EQUAL(std::vector<std::string>{w.host() + "/shoal-test@" + w.at("V1_MANIFEST")},
                         v1.repoDigests);
    CPPUNIT_ASSERT_EQUAL((std::vector<std::string>{w.at("BASE_DIFFID"), w.at("V1_DIFFID")}),
                         v1.layers);
    CPPUNIT_ASSERT_EQUAL(w.at("HOST_ARCH"), v1.architecture);
    CPPUNIT_ASSERT_EQUAL(std::string("linux"), v1.os);
    CPPUNIT_ASSERT(v1.size > 100000);  // busybox, compressed
    CPPUNIT_ASSERT_EQUAL(int64_t{1704164645123456789}, v1.createdNs);
    CPPUNIT_ASSERT_EQUAL(
        (std::vector<std::string>{"sh", "-c", "trap \"exit 0\" TERM; sleep 86400 & wait"}),
        v1.config.cmd);
    CPPUNIT_ASSERT_EQUAL(std::string("/"), v1.config.workingDir);
    CPPUNIT_ASSERT_EQUAL(std::string("v1"), v1.config.labels["org.shoal.test"]);
    std::vector<std::string> dirs = store.layerDirs(v1);
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, dirs.size());
    CPPUNIT_ASSERT_EQUAL(std::string("v1\n"), readAll(dirs[0] + "/etc/shoal-test-version"));
    struct stat st {};
    CPPUNIT_ASSERT_EQUAL(0, stat((dirs[1] + "/bin/busybox").c_str(), &st));
    CPPUNIT_ASSERT(st.st_mode & S_IXUSR);
    char target[64] = {};
    CPPUNIT_ASSERT(readlink((dirs[1] + "/bin/sh").c_str(), target, sizeof target - 1) > 0);
    CPPUNIT_ASSERT_EQUAL(std::string("busybox"), std::string(target));
    CPPUNIT_ASSERT_EQUAL(01777u,
                         static_cast<unsigned>(lstatOrDie(dirs[1] + "/tmp").st_mode & 07777));
    // Found by tag, by repo digest, by id; the store's temporary area is empty again.
    CPPUNIT_ASSERT_EQUAL(v1.id, store.find(w.ref("v1"))->id);
    CPPUNIT_ASSERT_EQUAL(v1.id, store.find(w.host() + "/shoal-test@" + w.at("V1_MANIFEST"))->id);
    CPPUNIT_ASSERT_EQUAL(v1.id, store.find(v1.id)->id);
    CPPUNIT_ASSERT_EQUAL(0, countEntries(store.root() + "/tmp"));
    // Pulling again downloads no layer and keeps the same image.
    Image again = store.pull(w.ref("v1"));
    CPPUNIT_ASSERT_EQUAL(v1.id, again.id);
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, store.list().size());
  }

  void testResolveReportsTheServedDigest() {
    World& w = world();
    TempDir tmp;
    ImageStore store(tmp.file("store"), RegistryOptions{});
    CPPUNIT_ASSERT_EQUAL(w.ref("v1") + "@" + w.at("V1_MANIFEST"), store.resolve(w.ref("v1")));
    CPPUNIT_ASSERT_EQUAL(w.ref("multi") + "@" + w.at("MULTI_INDEX"), store.resolve(w.ref("multi")));
    std::string byDigest = w.host() + "/shoal-test@" + w.at("V2_MANIFEST");
    CPPUNIT_ASSERT_EQUAL(byDigest, store.resolve(byDigest));
    CPPUNIT_ASSERT(store.list().empty());  // nothing downloaded
    CPPUNIT_ASSERT_EQUAL(0, countEntries(store.root() + "/layers"));
  }

  void testUnknownTagIsENOENTNamingTheImage() {
    World& w = world();
    TempDir tmp;
    ImageStore store(tmp.file("store"), RegistryOptions{});
    expectError([&] { store.pull(w.ref("v9")); }, SHOAL_ENOENT,
                "image " + w.ref("v9") + ": manifest unknown (registry said 404)");
    expectError([&] { store.resolve(w.host() + "/no-such-repo:v1"); }, SHOAL_ENOENT,
                "image " + w.host() + "/no-such-repo:v1: ");
    expectError([&] { store.pull(w.host() + "/shoal-test@" + shoal::runc::sha256Digest("x")); },
                SHOAL_ENOENT, "(registry said 404)");
    expectError([&] { store.pull("Bad:Ref"); }, SHOAL_EINVAL, "invalid reference \"Bad:Ref\"");
  }

  void testPullV1ThenV2SharesOnlyTheBaseLayer() {
    World& w = world();
    TempDir tmp;
    ImageStore store(tmp.file("store"), RegistryOptions{});
    Image v1 = store.pull(w.ref("v1"));
    Image v2 = store.pull(w.ref("v2"));
    CPPUNIT_ASSERT(v1.id != v2.id);
    std::vector<std::string> d1 = store.layerDirs(v1), d2 = store.layerDirs(v2);
    CPPUNIT_ASSERT_EQUAL(d1[1], d2[1]);  // the base: one directory
    CPPUNIT_ASSERT(d1[0] != d2[0]);
    CPPUNIT_ASSERT_EQUAL(std::string("v1\n"), readAll(d1[0] + "/etc/shoal-test-version"));
    CPPUNIT_ASSERT_EQUAL(std::string("v2\n"), readAll(d2[0] + "/etc/shoal-test-version"));
    CPPUNIT_ASSERT_EQUAL(std::string("shoal-test v2\n"), readAll(d2[0] + "/var/www/index.html"));
    CPPUNIT_ASSERT(!shoal::runc::fs::exists(d1[0] + "/var/www/index.html"));
    CPPUNIT_ASSERT(!shoal::runc::fs::exists(d1[1] + "/etc/shoal-test-version"));
    CPPUNIT_ASSERT_EQUAL(3, countEntries(store.root() + "/layers"));
    CPPUNIT_ASSERT(contains(v2.config.cmd.at(2), "cat /etc/shoal-test-version"));
    CPPUNIT_ASSERT_EQUAL(std::string("SIGTERM"), v2.config.stopSignal);
  }

  void testPullByDigest() {
    World& w = world();
    TempDir tmp;
    ImageStore store(tmp.file("store"), RegistryOptions{});
    const std::string ref = w.host() + "/shoal-test@" + w.at("V2_MANIFEST");
    Image v2 = store.pull(ref);
    CPPUNIT_ASSERT_EQUAL(w.at("V2_CONFIG"), v2.id);
    CPPUNIT_ASSERT(v2.tags.empty());  // a digest names no tag
    CPPUNIT_ASSERT_EQUAL(std::vector<std::string>{ref}, v2.repoDigests);
    CPPUNIT_ASSERT_EQUAL(std::string("v2\n"),
                         readAll(store.layerDirs(v2)[0] + "/etc/shoal-test-version"));
    // A pinned tag@digest, as the manager hands it out, tags and matches by digest.
    const std::string pinned = w.ref("v2") + "@" + w.at("V2_MANIFEST");
    Image p = store.pull(pinned);
    CPPUNIT_ASSERT_EQUAL(v2.id, p.id);
    CPPUNIT_ASSERT_EQUAL(std::vector<std::string>{w.ref("v2")}, p.tags);
    CPPUNIT_ASSERT_EQUAL(v2.id, store.find(pinned)->id);
    // gc keeps an image a digest names.
    CPPUNIT_ASSERT_EQUAL(std::size_t{0}, store.gc().images);
  }

  void testPullThroughIndexPicksThisPlatform() {
    World& w = world();
    TempDir tmp;
    ImageStore store(tmp.file("store"), RegistryOptions{});
    Image m = store.pull(w.ref("multi"));
    CPPUNIT_ASSERT_EQUAL(w.at("MULTI_HOST_MANIFEST"), m.manifestDigest);
    CPPUNIT_ASSERT_EQUAL(w.at("V1_CONFIG"), m.id);
    CPPUNIT_ASSERT_EQUAL(w.at("HOST_ARCH"), m.architecture);
    CPPUNIT_ASSERT_EQUAL(std::vector<std::string>{w.host() + "/shoal-test@" + w.at("MULTI_INDEX")},
                         m.repoDigests);
    // The index digest finds it, as a pinned service image would.
    CPPUNIT_ASSERT_EQUAL(m.id, store.find(w.ref("multi") + "@" + w.at("MULTI_INDEX"))->id);
    // Another node's platform gets the other manifest.
    TempDir tmp2;
    shoal::runc::Platform other{"linux", w.at("OTHER_ARCH"),
                                w.at("OTHER_ARCH") == "arm64" ? "v8" : ""};
    ImageStore foreign(tmp2.file("store"), RegistryOptions{}, other);
    Image o = foreign.pull(w.ref("multi"));
    CPPUNIT_ASSERT_EQUAL(w.at("MULTI_OTHER_MANIFEST"), o.manifestDigest);
    CPPUNIT_ASSERT_EQUAL(w.at("MULTI_OTHER_CONFIG"), o.id);
    CPPUNIT_ASSERT_EQUAL(w.at("OTHER_ARCH"), o.architecture);
    TempDir tmp3;
    ImageStore none(tmp3.file("store"), RegistryOptions{}, {"linux", "s390x", ""});
    expectError([&] { none.pull(w.ref("multi")); }, SHOAL_ENOENT, "no manifest for linux/s390x");
  }

  void testZstdAndHealthcheckImages() {
    World& w = world();
    TempDir tmp;
    ImageStore store(tmp.file("store"), RegistryOptions{});
    Image z = store.pull(w.ref("zstd"));
    CPPUNIT_ASSERT_EQUAL(w.at("ZSTD_MANIFEST"), z.manifestDigest);
    CPPUNIT_ASSERT_EQUAL(std::string("v1\n"),
                         readAll(store.layerDirs(z)[0] + "/etc/shoal-test-version"));
    Image h = store.pull(w.ref("health"));
    CPPUNIT_ASSERT(
        contains(h.config.healthcheckJson, "\"Test\":[\"CMD-SHELL\",\"test -f /tmp/healthy\"]"));
    CPPUNIT_ASSERT(contains(h.config.healthcheckJson, "\"Interval\":1000000000"));
    CPPUNIT_ASSERT(contains(h.config.healthcheckJson, "\"Retries\":2"));
    // Same diff_ids as zstd (= v1): no new layer directories.
    CPPUNIT_ASSERT_EQUAL(store.layerDirs(z), store.layerDirs(h));
  }

  void testEnsurePullsOnlyWhenAbsent() {
    World& w = world();
    FakeRegistry fake(w.images + "/layout");
    TempDir tmp;
    const std::string creds = credentials(tmp, fake);
    ImageStore store(tmp.file("store"), RegistryOptions{{}, creds, 3, 30, ""});
    Image a = store.ensure(fake.ref("v1"));
    int after = fake.total();
    CPPUNIT_ASSERT(after > 0);
    Image b = store.ensure(fake.ref("v1"));
    Image c = store.ensure(fake.host() + "/shoal-test@" + w.at("V1_MANIFEST"));
    CPPUNIT_ASSERT_EQUAL(a.id, b.id);
    CPPUNIT_ASSERT_EQUAL(a.id, c.id);
    CPPUNIT_ASSERT_EQUAL(after, fake.total());  // no request for an image that is here
  }

  void testBearerTokenFlowWithCredentials() {
    World& w = world();
    FakeRegistry fake(w.images + "/layout");
    TempDir tmp;
    std::string creds =
        tmp.write("config.json",
                  "{\"auths\":{\"https://" + fake.host() + "/v1/\":{\"auth\":\"" +
                      base64(std::string(FakeRegistry::kUser) + ":" + FakeRegistry::kPassword) +
                      "\"},\"other.example.com\":{\"auth\":\"eDp5\"}}}");
    ImageStore store(tmp.file("store"), RegistryOptions{{}, creds, 3, 30, ""});
    Image v2 = store.pull(fake.ref("v2"));
    CPPUNIT_ASSERT_EQUAL(w.at("V2_CONFIG"), v2.id);
    CPPUNIT_ASSERT_EQUAL(std::string("v2\n"),
                         readAll(topLayerDir(store, v2) + "/etc/shoal-test-version"));
    CPPUNIT_ASSERT_EQUAL(1, fake.tokenGrants());   // one token, cached for the whole pull
    CPPUNIT_ASSERT_EQUAL(1, fake.unauthorized());  // only the first request was turned away
    CPPUNIT_ASSERT(fake.hits("/storage/" + hex(w.at("V2_BLOB"))) == 1);  // redirect followed
    CPPUNIT_ASSERT(!fake.storageSawAuthorization());  // no credentials to the storage backend
    CPPUNIT_ASSERT_EQUAL(fake.ref("v2") + "@" + w.at("V2_MANIFEST"), store.resolve(fake.ref("v2")));
  }

  void testTokenServiceRefusesWithoutCredentials() {
    World& w = world();
    FakeRegistry fake(w.images + "/layout");
    TempDir tmp;
    ImageStore store(tmp.file("store"), RegistryOptions{});
    expectError([&] { store.pull(fake.ref("v1")); }, SHOAL_EIO,
                "image " + fake.ref("v1") + ": token service http://" + fake.host() +
                    "/token refused anonymous access (said 401)");
    std::string wrong =
        tmp.write("config.json", "{\"auths\":{\"" + fake.host() + "\":{\"auth\":\"" +
                                     base64("shoal:wrong") + "\"}}}");
    TempDir tmp2;
    ImageStore store2(tmp2.file("store"), RegistryOptions{{}, wrong, 3, 30, ""});
    expectError([&] { store2.pull(fake.ref("v1")); }, SHOAL_EIO, "refused the credentials");
    std::string broken = tmp.write("broken.json", "{\"auths\":");
    TempDir tmp3;
    ImageStore store3(tmp3.file("store"), RegistryOptions{{}, broken, 3, 30, ""});
    expectError([&] { store3.pull(fake.ref("v1")); }, SHOAL_EINVAL, "broken.json");
  }

  void testConcurrentPullsShareTheWork() {
    World& w = world();
    FakeRegistry fake(w.images + "/layout");
    TempDir tmp;
    const std::string creds = credentials(tmp, fake);
    ImageStore store(tmp.file("store"), RegistryOptions{{}, creds, 3, 30, ""});
    // Four pulls at once: two of v1 (one pull, shared) and two of health, which has v1's layers
    // (each layer fetched once, whichever pull gets there first).
    std::vector<std::thread> threads;
    std::vector<std::string> ids(4);
    std::atomic<int> failures{0};
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&, i] {
        try {
          ids[static_cast<std::size_t>(i)] = store.pull(fake.ref(i % 2 ? "health" : "v1")).id;
        } catch (const std::exception& e) {
          std::cerr << "pull failed: " << e.what() << "\n";
          ++failures;
        }
      });
    }
    for (std::thread& t : threads) t.join();
    CPPUNIT_ASSERT_EQUAL(0, failures.load());
    CPPUNIT_ASSERT_EQUAL(w.at("V1_CONFIG"), ids[0]);
    CPPUNIT_ASSERT_EQUAL(ids[0], ids[2]);
    CPPUNIT_ASSERT_EQUAL(w.at("HEALTH_CONFIG"), ids[1]);
    CPPUNIT_ASSERT_EQUAL(1, fake.hits("/storage/" + hex(w.at("BASE_BLOB"))));
    CPPUNIT_ASSERT_EQUAL(1, fake.hits("/storage/" + hex(w.at("V1_BLOB"))));
    CPPUNIT_ASSERT(fake.hits("/v2/shoal-test/manifests/v1") <= 2);  // 401 + one real fetch
    CPPUNIT_ASSERT_EQUAL(2, countEntries(store.root() + "/layers"));
    CPPUNIT_ASSERT_EQUAL(0, countEntries(store.root() + "/tmp"));
  }

  void testCorruptBlobIsRejectedAndLeavesNothing() {
    World& w = world();
    FakeRegistry fake(w.images + "/layout");
    TempDir tmp;
    const std::string creds = credentials(tmp, fake);
    ImageStore store(tmp.file("store"), RegistryOptions{{}, creds, 3, 30, ""});
    fake.corrupt(w.at("V2_BLOB"));
    expectError([&] { store.pull(fake.ref("v2")); }, SHOAL_EIO,
                "blob " + w.at("V2_BLOB") + ": digest mismatch (got sha256:");
    CPPUNIT_ASSERT(!store.find(fake.ref("v2")).has_value());
    std::vector<std::string> chain =
        shoal::runc::chainIds({w.at("BASE_DIFFID"), w.at("V2_DIFFID")});
    CPPUNIT_ASSERT(!shoal::runc::fs::exists(store.root() + "/layers/" + hex(chain[1])));
    CPPUNIT_ASSERT(
        !shoal::runc::fs::exists(store.root() + "/blobs/sha256/" + hex(w.at("V2_BLOB"))));
    CPPUNIT_ASSERT_EQUAL(0, countEntries(store.root() + "/tmp"));
    CPPUNIT_ASSERT_EQUAL(0, countEntries(store.root() + "/partial"));  // wrong bytes never kept
    // Once the registry serves the right bytes, the same store pulls it whole.
    fake.corrupt("");
    Image v2 = store.pull(fake.ref("v2"));
    CPPUNIT_ASSERT_EQUAL(std::string("v2\n"),
                         readAll(topLayerDir(store, v2) + "/etc/shoal-test-version"));
  }

  void testCutTransferGoesOnFromWhereItStopped() {
    World& w = world();
    FakeRegistry fake(w.images + "/layout");
    TempDir tmp;
    ImageStore store(tmp.file("store"), RegistryOptions{{}, credentials(tmp, fake), 3, 30, ""});
    const std::string base = w.at("BASE_BLOB");
    const std::size_t size = blobSize(w, base), cut = size / 3;
    fake.cutAt(base, cut, false);
    Image v1 = store.pull(fake.ref("v1"));
    CPPUNIT_ASSERT_EQUAL(std::string("v1\n"),
                         readAll(topLayerDir(store, v1) + "/etc/shoal-test-version"));
    // One transfer cut short, one for the rest: no byte fetched twice.
    std::vector<FakeRegistry::Transfer> t = fake.transfers(base);
    CPPUNIT_ASSERT_EQUAL(std::size_t(2), t.size());
    CPPUNIT_ASSERT_EQUAL(std::string(""), t[0].range);
    CPPUNIT_ASSERT_EQUAL(cut, t[0].bytes);
    CPPUNIT_ASSERT_EQUAL("bytes=" + std::to_string(cut) + "-", t[1].range);
    CPPUNIT_ASSERT_EQUAL(size - cut, t[1].bytes);
    CPPUNIT_ASSERT_EQUAL(0, countEntries(store.root() + "/partial"));
    CPPUNIT_ASSERT_EQUAL(0, countEntries(store.root() + "/tmp"));
  }

  void testInterruptedDownloadResumesAfterARestart() {
    World& w = world();
    FakeRegistry fake(w.images + "/layout");
    TempDir tmp;
    const std::string root = tmp.file("store"), creds = credentials(tmp, fake);
    const std::string base = w.at("BASE_BLOB");
    const std::size_t size = blobSize(w, base), cut = size / 2;
    const std::string partial = root + "/partial/" + hex(base);
    {
      ImageStore store(root, RegistryOptions{{}, creds, 1, 30, ""});
      fake.cutAt(base, cut, true);  // cut, then the storage is down: the pull fails
      expectError([&] { store.pull(fake.ref("v1")); }, SHOAL_EIO, "(registry said 503)");
      CPPUNIT_ASSERT(!store.find(fake.ref("v1")).has_value());
      CPPUNIT_ASSERT_EQUAL(static_cast<off_t>(cut), fileSize(partial));  // kept, on disk
    }
    // A new store on the same root (shoald restarted) goes on from the kept bytes.
    fake.up();
    {
      ImageStore store(root, RegistryOptions{{}, creds, 1, 30, ""});
      CPPUNIT_ASSERT_EQUAL(static_cast<off_t>(cut), fileSize(partial));
      Image v1 = store.pull(fake.ref("v1"));
      CPPUNIT_ASSERT_EQUAL(w.at("V1_CONFIG"), v1.id);
      std::vector<FakeRegistry::Transfer> t = fake.transfers(base);
      CPPUNIT_ASSERT_EQUAL(std::size_t(2), t.size());
      CPPUNIT_ASSERT_EQUAL("bytes=" + std::to_string(cut) + "-", t[1].range);
      CPPUNIT_ASSERT_EQUAL(size - cut, t[1].bytes);
      CPPUNIT_ASSERT_EQUAL(0, countEntries(root + "/partial"));
      store.remove(fake.ref("v1"), false);
      store.gc();
    }
    // Kept bytes that are wrong (a disk that lied) are thrown away: the blob comes again whole.
    {
      ImageStore store(root, RegistryOptions{{}, creds, 1, 30, ""});
      fake.cutAt(base, cut, true);
      expectError([&] { store.pull(fake.ref("v1")); }, SHOAL_EIO, "(registry said 503)");
      flipByte(partial, cut / 2);
      fake.up();
      Image v1 = store.pull(fake.ref("v1"));
      CPPUNIT_ASSERT_EQUAL(w.at("V1_CONFIG"), v1.id);
      std::vector<FakeRegistry::Transfer> t = fake.transfers(base);
      CPPUNIT_ASSERT_EQUAL(std::size_t(5), t.size());
      CPPUNIT_ASSERT_EQUAL("bytes=" + std::to_string(cut) + "-", t[3].range);
      CPPUNIT_ASSERT_EQUAL(std::string(""), t[4].range);
      CPPUNIT_ASSERT_EQUAL(size, t[4].bytes);
      CPPUNIT_ASSERT_EQUAL(0, countEntries(root + "/partial"));
    }
    // gc() leaves an interrupted download alone for an hour, then frees it.
    {
      ImageStore store(root, RegistryOptions{{}, creds, 1, 30, ""});
      store.remove(fake.ref("v1"), false);
      store.gc();
      fake.cutAt(base, cut, true);
      expectError([&] { store.pull(fake.ref("v1")); }, SHOAL_EIO, "(registry said 503)");
      CPPUNIT_ASSERT_EQUAL(std::size_t(0), store.gc().partials);
      CPPUNIT_ASSERT(shoal::runc::fs::exists(partial));
      const struct timespec old[2] = {{time(nullptr) - 7200, 0}, {time(nullptr) - 7200, 0}};
      CPPUNIT_ASSERT_EQUAL(0, utimensat(AT_FDCWD, partial.c_str(), old, 0));
      CPPUNIT_ASSERT_EQUAL(std::size_t(1), store.gc().partials);
      CPPUNIT_ASSERT(!shoal::runc::fs::exists(partial));
      fake.up();
    }
    // So does a store opening the root: an old one goes, a recent one stays.
    const std::string stale = root + "/partial/" + std::string(64, 'a');
    const std::string recent = root + "/partial/" + std::string(64, 'b');
    for (const std::string& p : {stale, recent}) shoal::runc::fs::writeFileAtomic(p, "k", root);
    const struct timespec old[2] = {{time(nullptr) - 7200, 0}, {time(nullptr) - 7200, 0}};
    CPPUNIT_ASSERT_EQUAL(0, utimensat(AT_FDCWD, stale.c_str(), old, 0));
    ImageStore reopened(root, RegistryOptions{{}, creds, 1, 30, ""});
    CPPUNIT_ASSERT(!shoal::runc::fs::exists(stale));
    CPPUNIT_ASSERT(shoal::runc::fs::exists(recent));
  }

  void testResumeCornerCases() {
    World& w = world();
    FakeRegistry fake(w.images + "/layout");
    TempDir tmp;
    const std::string creds = credentials(tmp, fake);
    const std::string base = w.at("BASE_BLOB");
    const std::size_t size = blobSize(w, base), cut = size / 2;
    std::size_t seen = 0;  // transfers of base so far
    // A registry that ignores Range sends the whole blob again: the file starts over.
    {
      ImageStore store(tmp.file("a"), RegistryOptions{{}, creds, 1, 30, ""});
      fake.ignoreRange(true);
      fake.cutAt(base, cut, false);
      Image v1 = store.pull(fake.ref("v1"));
      CPPUNIT_ASSERT_EQUAL(w.at("V1_CONFIG"), v1.id);
      std::vector<FakeRegistry::Transfer> t = fake.transfers(base);
      CPPUNIT_ASSERT_EQUAL(std::size_t(2), t.size());
      CPPUNIT_ASSERT_EQUAL("bytes=" + std::to_string(cut) + "-", t[1].range);
      CPPUNIT_ASSERT_EQUAL(size, t[1].bytes);
      fake.ignoreRange(false);
      seen = t.size();
    }
    // A read that times out mid-blob (the connection open, silent): the next request goes on
    // from the last read that returned, at most one 16 KiB read short of where it stopped.
    {
      ImageStore store(tmp.file("b"), RegistryOptions{{}, creds, 1, 1, ""});
      fake.cutAt(base, cut, false, true);
      Image v1 = store.pull(fake.ref("v1"));
      CPPUNIT_ASSERT_EQUAL(w.at("V1_CONFIG"), v1.id);
      std::vector<FakeRegistry::Transfer> t = fake.transfers(base);
      CPPUNIT_ASSERT_EQUAL(seen + 2, t.size());
      const std::string& range = t[seen + 1].range;
      CPPUNIT_ASSERT_MESSAGE(range, range.rfind("bytes=", 0) == 0);
      const std::size_t from = std::stoul(range.substr(6));
      CPPUNIT_ASSERT_MESSAGE(range, from > 0 && from <= cut && from + (16 << 10) >= cut);
      seen = t.size();
    }
    // A blob gone from the registry (404) takes the bytes kept for it along.
    {
      ImageStore store(tmp.file("c"), RegistryOptions{{}, creds, 1, 30, ""});
      const std::string partial = store.root() + "/partial/" + hex(base);
      fake.cutAt(base, cut, true);
      expectError([&] { store.pull(fake.ref("v1")); }, SHOAL_EIO, "(registry said 503)");
      CPPUNIT_ASSERT_EQUAL(static_cast<off_t>(cut), fileSize(partial));
      fake.up();
      fake.hide(base);
      expectError([&] { store.pull(fake.ref("v1")); }, SHOAL_ENOENT, "blob " + base);
      CPPUNIT_ASSERT(!shoal::runc::fs::exists(partial));
      fake.hide("");
      seen = fake.transfers(base).size();
    }
    // A manifest that says more than the blob has: one transfer, then an error saying so (not
    // a Range past the end and a refetch), and nothing kept.
    {
      shoal::runc::RegistryClient client(RegistryOptions{{}, creds, 1, 30, ""});
      const shoal::runc::Reference ref = shoal::runc::parseReference(fake.ref("v1"));
      const std::string path = tmp.file("short");
      expectError(
          [&] { client.blobToFile(ref, base, static_cast<int64_t>(size) + 10, path, true); },
          SHOAL_EIO,
          "the registry sent " + std::to_string(size) + " bytes, the manifest says " +
              std::to_string(size + 10));
      CPPUNIT_ASSERT_EQUAL(seen + 1, fake.transfers(base).size());
      CPPUNIT_ASSERT(!shoal::runc::fs::exists(path));
    }
  }

  void testGcAfterRemoveFreesLayers() {
    World& w = world();
    TempDir tmp;
    ImageStore store(tmp.file("store"), RegistryOptions{});
    Image v1 = store.pull(w.ref("v1"));
    Image v2 = store.pull(w.ref("v2"));
    std::vector<std::string> d1 = store.layerDirs(v1);
    store.acquire(v2.id, "task-a");
    expectError([&] { store.remove(w.ref("v2"), false); }, SHOAL_EBUSY, "task-a");
    // As in Docker, the repository's last tag takes its repo digests along: v1 is gone.
    store.remove(w.ref("v1"), false);
    CPPUNIT_ASSERT(!store.find(v1.id).has_value());
    CPPUNIT_ASSERT(!store.find(w.host() + "/shoal-test@" + w.at("V1_MANIFEST")).has_value());
    ImageStore::GcResult g = store.gc();
    CPPUNIT_ASSERT_EQUAL(std::size_t{1}, g.layers);
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, g.blobs);  // v1's manifest and config
    CPPUNIT_ASSERT(g.bytes > 0);
    CPPUNIT_ASSERT(!shoal::runc::fs::exists(d1[0]));
    CPPUNIT_ASSERT(shoal::runc::fs::isDir(d1[1]));
    CPPUNIT_ASSERT_EQUAL(std::string("v2\n"),
                         readAll(store.layerDirs(v2)[0] + "/etc/shoal-test-version"));
    store.release(v2.id, "task-a");
    store.remove(v2.id, false);
    g = store.gc();
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, g.layers);
    CPPUNIT_ASSERT(g.bytes > 500000);  // busybox went
    CPPUNIT_ASSERT_EQUAL(0, countEntries(store.root() + "/layers"));
    CPPUNIT_ASSERT_EQUAL(0, countEntries(store.root() + "/blobs/sha256"));
  }

  void testUnreachableRegistryIsEIO() {
    TempDir tmp;
    ImageStore store(tmp.file("store"), RegistryOptions{{}, "", 3, 2, ""});
    std::string host = "127.0.0.1:" + std::to_string(freePort());
    expectError([&] { store.pull(host + "/x:1"); }, SHOAL_EIO,
                "image " + host + "/x:1: registry 127.0.0.1");
  }

  // HTTPS: a registry whose CA sits in certs.d/<host:port>/ is spoken to over TLS (loopback
  // too) and its certificate checked against that CA: with an unrelated CA there, or none
  // (then plain HTTP, which a TLS server refuses), the pull fails and the store stays empty.
  void testHttpsRegistryTrustedThroughItsCertsDir() {
    World& w = world();
    const std::string host = w.tlsHost();
    const std::string ref = host + "/shoal-test:v1";
    auto storeWith = [&](TempDir& tmp, const std::string& ca) {
      const std::string certs = tmp.file("certs.d");
      if (!ca.empty()) {
        CPPUNIT_ASSERT_EQUAL(0, mkdir(certs.c_str(), 0755));
        CPPUNIT_ASSERT_EQUAL(0, mkdir((certs + "/" + host).c_str(), 0755));
        tmp.write("certs.d/" + host + "/ca.crt", readAll(w.images + "/tls/" + ca));
      }
      return std::make_unique<ImageStore>(tmp.file("store"), RegistryOptions{{}, "", 3, 10, certs});
    };
    TempDir trusted;
    auto store = storeWith(trusted, "ca.crt");
    Image v1 = store->pull(ref);
    CPPUNIT_ASSERT_EQUAL(w.at("V1_CONFIG"), v1.id);
    CPPUNIT_ASSERT_EQUAL(w.at("V1_MANIFEST"), store->resolve(ref).substr(ref.size() + 1));

    TempDir wrong;
    auto untrusted = storeWith(wrong, "other-ca.crt");
    expectError([&] { untrusted->pull(ref); }, SHOAL_EIO, "certificate verify failed");
    CPPUNIT_ASSERT(untrusted->list().empty());
    TempDir none;
    auto plain = storeWith(none, "");
    expectError([&] { plain->pull(ref); }, SHOAL_EIO, "(registry said 400)");
    CPPUNIT_ASSERT(plain->list().empty());
  }

  void testLoadsTheScriptsTarballs() {
    World& w = world();
    TempDir tmp;
    ImageStore store(tmp.file("store"), RegistryOptions{});
    std::vector<Image> oci = store.load(w.images + "/shoal-test-oci.tar");
    CPPUNIT_ASSERT_EQUAL(std::size_t{5}, oci.size());  // v1 v2 health zstd multi
    CPPUNIT_ASSERT_EQUAL(w.at("V1_CONFIG"), store.find("localhost/shoal-test:v1")->id);
    CPPUNIT_ASSERT_EQUAL(w.at("V1_CONFIG"), store.find("localhost/shoal-test:multi")->id);
    CPPUNIT_ASSERT_EQUAL(w.at("MULTI_HOST_MANIFEST"),
                         store.find("localhost/shoal-test:multi")->manifestDigest);
    Image h = *store.find("localhost/shoal-test:health");
    CPPUNIT_ASSERT(contains(h.config.healthcheckJson, "CMD-SHELL"));
    std::vector<Image> docker = store.load(w.images + "/shoal-test-docker.tar");
    CPPUNIT_ASSERT_EQUAL(std::size_t{2}, docker.size());
    CPPUNIT_ASSERT_EQUAL(w.at("V2_CONFIG"), docker[1].id);
    CPPUNIT_ASSERT_EQUAL(std::string("v2\n"),
                         readAll(store.layerDirs(docker[1])[0] + "/etc/shoal-test-version"));
    CPPUNIT_ASSERT_EQUAL(3, countEntries(store.root() + "/layers"));  // base, v1, v2
  }

 private:
  static struct stat lstatOrDie(const std::string& path) {
    struct stat st {};
    CPPUNIT_ASSERT_EQUAL_MESSAGE(path, 0, lstat(path.c_str(), &st));
    return st;
  }
};

CPPUNIT_TEST_SUITE_REGISTRATION(RuncImagePullTest);
