#pragma once

#include <memory>
#include <string>

#include "kernel/api/router.h"
#include "kernel/common/status.h"

namespace Poco {
class ThreadPool;
namespace Net {
class HTTPServer;
}  // namespace Net
}  // namespace Poco

namespace shoal::api {

// The control API: HTTP/1.1 + JSON on a unix socket (Poco HTTPServer).
//
// start() removes a stale socket file, binds, sets the socket's mode (0600 by default: root
// only) before listening, so no client can connect through looser permissions, and serves
// requests through the router on a small thread pool. stop() stops accepting, finishes the
// requests in flight, and removes the socket file.
class ApiServer {
 public:
  struct Options {
    std::string socketPath;
    unsigned mode = 0600;
    // Requests served at once. Poco's server keeps a thread per open connection (keep-alive
    // included), so in TLS mode, where every node keeps a connection or two to the leader,
    // this bounds the nodes served at once (connections beyond it wait for a thread).
    int maxThreads = 16;
    // Instead of the unix socket: TLS 1.3 over TCP on "IPv4:port" (port 0: any free one, see
    // port()). Clients are asked for a certificate; one that is presented must chain to
    // caFile, and the request then carries its subject (Request::peer*). Anonymous clients
    // are served too: each route decides what it allows.
    std::string tlsAddress;
    std::string caFile;
    std::string certFile;
    std::string keyFile;

    static Options unixSocket(std::string path, unsigned mode = 0600, int maxThreads = 16) {
      Options o;
      o.socketPath = std::move(path);
      o.mode = mode;
      o.maxThreads = maxThreads;
      return o;
    }
  };

  ApiServer(Options options, const Router& router);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  Status start();
  void stop();
  bool running() const { return server_ != nullptr; }
  // The TCP port bound in TLS mode (0 otherwise).
  int port() const { return port_; }

 private:
  Status startTls();

  Options options_;
  const Router& router_;
  std::unique_ptr<Poco::ThreadPool> pool_;
  std::unique_ptr<Poco::Net::HTTPServer> server_;
  int port_ = 0;
};

}  // namespace shoal::api
