#include "kernel/api/api_server.h"

#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <Poco/Exception.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerRequestImpl.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/SecureServerSocket.h>
#include <Poco/Net/SecureStreamSocket.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/Net/X509Certificate.h>
#include <Poco/StreamCopier.h>
#include <Poco/ThreadPool.h>
#include <Poco/URI.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "kernel/common/log.h"

namespace shoal::api {
namespace {

// Request bodies above this are refused (413) rather than read.
constexpr std::streamsize kMaxBody = 16 << 20;
// The stack of each thread of a TLS pool above 64 threads.
constexpr int kLargePoolStack = 1 << 20;

class Handler : public Poco::Net::HTTPRequestHandler {
 public:
  explicit Handler(const Router& router) : router_(router) {}

  void handleRequest(Poco::Net::HTTPServerRequest& req,
                     Poco::Net::HTTPServerResponse& resp) override {
    Response r = handle(req);
    resp.setVersion(Poco::Net::HTTPMessage::HTTP_1_1);
    resp.setStatus(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(r.status));
    resp.setContentType("application/json");
    for (const auto& [k, v] : r.headers) resp.set(k, v);
    std::string body = r.body;
    body += '\n';
    resp.setContentLength(static_cast<std::streamsize>(body.size()));
    resp.send() << body;
  }

 private:
  Response handle(Poco::Net::HTTPServerRequest& req) {
    Request r;
    r.method = req.getMethod();
    // Poco's parser accepts any three words as a request line; hold it to HTTP/1.x.
    const std::string& version = req.getVersion();
    if (version != Poco::Net::HTTPMessage::HTTP_1_0 &&
        version != Poco::Net::HTTPMessage::HTTP_1_1) {
      return Response::error(400, "malformed request: unsupported protocol \"" + version +
                                      "\" (want HTTP/1.0 or HTTP/1.1)");
    }
    if (req.getURI().empty() || req.getURI()[0] != '/') {
      return Response::error(
          400, "malformed request: the target \"" + req.getURI() + "\" is not an absolute path");
    }
    try {
      Poco::URI uri(req.getURI());
      r.path = uri.getPath();
      for (const auto& [k, v] : uri.getQueryParameters()) r.query[k] = v;
    } catch (const Poco::Exception& e) {
      return Response::error(400, "malformed request URI \"" + req.getURI() + "\": " + e.message());
    }
    try {
      if (req.hasContentLength() && req.getContentLength() > kMaxBody) {
        return Response::error(413, "request body too large (limit 16 MiB)");
      }
    } catch (const Poco::Exception& e) {
      return Response::error(400, "malformed Content-Length header: " + e.message());
    }
    try {
      std::string body;
      Poco::StreamCopier::copyToString(req.stream(), body);
      if (static_cast<std::streamsize>(body.size()) > kMaxBody) {
        return Response::error(413, "request body too large (limit 16 MiB)");
      }
      r.body = std::move(body);
    } catch (const Poco::Exception& e) {
      return Response::error(400, "cannot read the request body: " + e.message());
    }
    if (auto* impl = dynamic_cast<Poco::Net::HTTPServerRequestImpl*>(&req)) {
      try {
        Poco::Net::StreamSocket& socket = impl->socket();
        if (socket.address().family() != Poco::Net::SocketAddress::UNIX_LOCAL) {
          r.peerAddress = socket.peerAddress().toString();
          Poco::Net::SecureStreamSocket secure(socket);
          if (secure.havePeerCertificate()) {
            Poco::Net::X509Certificate cert = secure.peerCertificate();
            r.peerNodeId = cert.commonName();
            r.peerRole = cert.subjectName(Poco::Net::X509Certificate::NID_ORGANIZATION_UNIT_NAME);
            r.peerCluster = cert.subjectName(Poco::Net::X509Certificate::NID_ORGANIZATION_NAME);
          }
        }
      } catch (const Poco::Exception&) {
        // Not a TLS socket, or no certificate: an anonymous request.
      }
    }
    log::debug("api", "request", {{"method", r.method}, {"path", r.path}});
    return router_.dispatch(r);
  }

  const Router& router_;
};

class Factory : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  explicit Factory(const Router& router) : router_(router) {}
  Poco::Net::HTTPRequestHandler* createRequestHandler(
      const Poco::Net::HTTPServerRequest&) override {
    return new Handler(router_);
  }

 private:
  const Router& router_;
};

}  // namespace

ApiServer::ApiServer(Options options, const Router& router)
    : options_(std::move(options)), router_(router) {}

ApiServer::~ApiServer() { stop(); }

Status ApiServer::startTls() {
  try {
    Poco::Net::Context::Params params;
    params.privateKeyFile = options_.keyFile;
    params.certificateFile = options_.certFile;
    params.caLocation = options_.caFile;
    params.verificationMode = Poco::Net::Context::VERIFY_RELAXED;
    params.loadDefaultCAs = false;
    Poco::Net::Context::Ptr context =
        new Poco::Net::Context(Poco::Net::Context::TLS_SERVER_USE, params);
    context->requireMinimumProtocol(Poco::Net::Context::PROTO_TLSV1_3);
    // Poco's extended check would match the client's certificate against the address it
    // connects from; nodes are named by their certificates (Request::peer*), not addresses.
    // (Over loopback the check happens to pass, which hid this until nodes had addresses.)
    context->enableExtendedCertificateVerification(false);
    Poco::Net::SecureServerSocket socket(context);
    socket.bind(Poco::Net::SocketAddress(options_.tlsAddress), true);
    socket.listen(64);
    port_ = socket.address().port();
    auto params2 = new Poco::Net::HTTPServerParams();
    params2->setMaxThreads(options_.maxThreads);
    // A kept connection holds its thread while it is open: as many may wait for one as the
    // server can take at all, rather than Poco's 64 (beyond which it closes new connections).
    params2->setMaxQueued(std::max(64, options_.maxThreads));
    params2->setKeepAlive(true);
    // Longer than a node's heartbeat period (5 s by default), so its heartbeats reuse one
    // connection instead of a TLS handshake each (node_api_client.cpp keeps them 20 s).
    params2->setKeepAliveTimeout(Poco::Timespan(30, 0));
    params2->setTimeout(Poco::Timespan(30, 0));
    // Threads of a large pool mostly sit in a read; a smaller stack keeps their reservation
    // modest (handlers do not recurse deeply).
    const int stack = options_.maxThreads > 64 ? kLargePoolStack : 0;
    pool_ = std::make_unique<Poco::ThreadPool>(2, options_.maxThreads, 60, stack);
    server_ =
        std::make_unique<Poco::Net::HTTPServer>(new Factory(router_), *pool_, socket, params2);
    server_->start();
  } catch (const Poco::Exception& e) {
    server_.reset();
    pool_.reset();
    port_ = 0;
    return Status::unavailable("cannot serve TLS on " + options_.tlsAddress + ": " +
                               e.displayText());
  }
  log::info("api", "node API listening",
            {{"address", options_.tlsAddress}, {"port", std::to_string(port_)}});
  return Status::ok();
}

Status ApiServer::start() {
  if (!options_.tlsAddress.empty()) return startTls();
  namespace fs = std::filesystem;
  const std::string& path = options_.socketPath;
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Status::invalidArgument("socket path too long for a unix socket: " + path);
  }
  std::error_code ec;
  fs::path dir = fs::path(path).parent_path();
  if (!dir.empty()) {
    fs::create_directories(dir, ec);
    if (ec) return Status::internal("cannot create " + dir.string() + ": " + ec.message());
  }
  // A socket file left by a daemon that died: the pidfile lock already proved no live daemon
  // owns it. Anything that is not a socket is not ours to delete.
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status::failedPrecondition(path +
                                        " exists and is not a socket; refusing to replace it");
    }
    ::unlink(path.c_str());
  }
  try {
    Poco::Net::ServerSocket socket;
    socket.bind(Poco::Net::SocketAddress(Poco::Net::SocketAddress::UNIX_LOCAL, path), false);
    if (::chmod(path.c_str(), options_.mode) != 0) {
      int err = errno;
      ::unlink(path.c_str());
      return Status::internal("cannot set the mode of " + path + ": " + std::strerror(err));
    }
    socket.listen(64);
    auto params = new Poco::Net::HTTPServerParams();
    params->setMaxThreads(options_.maxThreads);
    params->setKeepAlive(true);
    params->setTimeout(Poco::Timespan(30, 0));
    pool_ = std::make_unique<Poco::ThreadPool>(2, options_.maxThreads);
    server_ = std::make_unique<Poco::Net::HTTPServer>(new Factory(router_), *pool_, socket, params);
    server_->start();
  } catch (const Poco::Exception& e) {
    server_.reset();
    pool_.reset();
    return Status::unavailable("cannot listen on " + path + ": " + e.displayText());
  }
  log::info("api", "API listening", {{"socket", path}});
  return Status::ok();
}

void ApiServer::stop() {
  if (!server_) return;
  server_->stopAll(true);
  server_.reset();
  pool_->joinAll();
  pool_.reset();
  if (!options_.tlsAddress.empty()) {
    log::info("api", "node API stopped", {{"address", options_.tlsAddress}});
    port_ = 0;
    return;
  }
  ::unlink(options_.socketPath.c_str());
  log::info("api", "API stopped", {{"socket", options_.socketPath}});
}

}  // namespace shoal::api
