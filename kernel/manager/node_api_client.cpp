#include "kernel/manager/node_api_client.h"

#include <sys/stat.h>

#include <Poco/Exception.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/SecureStreamSocket.h>
#include <Poco/StreamCopier.h>

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

namespace shoal::manager {
namespace {

// Idle connections older than this are reconnected before use: well inside the node API
// server's keep-alive timeout (30 s, api_server.cpp), so a reused connection is practically
// never one the server is closing at that moment; and longer than the heartbeat period (5 s
// by default), so a node's heartbeats do not cost a TLS handshake each (at 1,000 nodes those
// handshakes alone kept both cores of a 2-core manager busy).
constexpr auto kReuseFor = std::chrono::seconds(20);
// Idle connections kept per target and credentials (an agent's poller, its reports and its
// heartbeats each hold one at times).
constexpr std::size_t kMaxIdle = 4;
// Targets remembered; past this the registry starts over (it only ever holds a few per node).
constexpr std::size_t kMaxEndpoints = 8192;

// What identifies a file's content well enough to notice a rewrite or a rename over it.
struct FileStamp {
  dev_t dev = 0;
  ino_t ino = 0;
  int64_t mtimeNs = 0;
  off_t size = -1;
  bool operator==(const FileStamp& o) const {
    return std::tie(dev, ino, mtimeNs, size) == std::tie(o.dev, o.ino, o.mtimeNs, o.size);
  }
};

FileStamp stampOf(const std::string& path) {
  FileStamp s;
  struct stat st {};
  if (path.empty() || ::stat(path.c_str(), &st) != 0) return s;
  s.dev = st.st_dev;
  s.ino = st.st_ino;
  s.mtimeNs = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  s.size = st.st_size;
  return s;
}

using Stamps = std::array<FileStamp, 3>;  // CA, certificate, key

Stamps stampsOf(const NodeApiTarget& t) {
  return {stampOf(t.caFile), stampOf(t.certFile), stampOf(t.keyFile)};
}

Poco::Net::Context::Ptr makeContext(const NodeApiTarget& target) {
  Poco::Net::Context::Params params;
  params.loadDefaultCAs = false;
  params.privateKeyFile = target.keyFile;
  params.certificateFile = target.certFile;
  if (target.caFile.empty()) {
    params.verificationMode = Poco::Net::Context::VERIFY_NONE;
  } else {
    params.caLocation = target.caFile;
    params.verificationMode = Poco::Net::Context::VERIFY_STRICT;
  }
  Poco::Net::Context::Ptr context =
      new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, params);
  context->requireMinimumProtocol(Poco::Net::Context::PROTO_TLSV1_3);
  return context;
}

struct Connection {
  std::unique_ptr<Poco::Net::HTTPSClientSession> session;
  std::chrono::steady_clock::time_point lastUsed;
  Poco::Net::Context::Ptr context;  // the one it was made with
};

// One target with one set of credentials: its TLS context and its idle connections.
struct Endpoint {
  std::mutex mu;
  Poco::Net::Context::Ptr context;  // guarded by mu
  Stamps stamps;                    // guarded by mu: the files the context was read from
  std::vector<Connection> idle;     // guarded by mu
};

std::mutex registryMu;
std::map<std::string, std::shared_ptr<Endpoint>>& registry() {  // guarded by registryMu
  static auto* endpoints = new std::map<std::string, std::shared_ptr<Endpoint>>;
  return *endpoints;
}

std::shared_ptr<Endpoint> endpointFor(const NodeApiTarget& t) {
  std::string key = t.address;
  for (const std::string* part : {&t.caFile, &t.serverNodeId, &t.certFile, &t.keyFile}) {
    key += '\n';
    key += *part;
  }
  std::lock_guard<std::mutex> lock(registryMu);
  auto& endpoints = registry();
  auto it = endpoints.find(key);
  if (it != endpoints.end()) return it->second;
  if (endpoints.size() >= kMaxEndpoints) endpoints.clear();
  return endpoints.emplace(key, std::make_shared<Endpoint>()).first->second;
}

Connection newConnection(const NodeApiTarget& target, const Poco::Net::Context::Ptr& context) {
  // The name checked against the server's certificate is its node id (its CN): nodes are
  // reached by address, but identified by the cluster CA.
  // The session connects the (unconnected) socket itself, keeping the name set on it, and
  // reconnects it the same way after the server closed it.
  Poco::Net::SecureStreamSocket socket(context);
  if (!target.caFile.empty()) socket.setPeerHostName(target.serverNodeId);
  Connection c;
  c.context = context;
  c.session = std::make_unique<Poco::Net::HTTPSClientSession>(socket);
  const Poco::Net::SocketAddress address(target.address);
  c.session->setHost(address.host().toString());
  c.session->setPort(address.port());
  c.session->setKeepAlive(true);
  c.session->setKeepAliveTimeout(
      Poco::Timespan(std::chrono::duration_cast<std::chrono::seconds>(kReuseFor).count(), 0));
  return c;
}

}  // namespace

Result<NodeApiReply> nodeApiRequest(const NodeApiTarget& target, const std::string& method,
                                    const std::string& path, const std::string& body) {
  try {
    auto endpoint = endpointFor(target);
    Connection conn;
    bool reused = false;
    Poco::Net::Context::Ptr context;
    {
      const Stamps stamps = stampsOf(target);
      std::lock_guard<std::mutex> lock(endpoint->mu);
      if (!endpoint->context || !(endpoint->stamps == stamps)) {
        // First use, or new files: connections made with the old ones go.
        endpoint->context = makeContext(target);
        endpoint->stamps = stamps;
        endpoint->idle.clear();
      }
      context = endpoint->context;
      const auto now = std::chrono::steady_clock::now();
      while (!endpoint->idle.empty()) {
        Connection c = std::move(endpoint->idle.back());
        endpoint->idle.pop_back();
        if (now - c.lastUsed < kReuseFor) {
          conn = std::move(c);
          reused = true;
          break;
        }
      }
    }
    const Poco::Timespan timeout(
        std::chrono::duration_cast<std::chrono::microseconds>(target.timeout).count());
    for (int attempt = 0;; ++attempt) {
      if (!conn.session) conn = newConnection(target, context);
      conn.session->setTimeout(timeout);
      bool answered = false;
      try {
        Poco::Net::HTTPRequest request(method, path, Poco::Net::HTTPMessage::HTTP_1_1);
        request.setContentType("application/json");
        request.setContentLength(static_cast<std::streamsize>(body.size()));
        request.setKeepAlive(true);
        conn.session->sendRequest(request) << body;
        Poco::Net::HTTPResponse response;
        std::istream& in = conn.session->receiveResponse(response);
        answered = true;
        NodeApiReply reply;
        reply.status = static_cast<int>(response.getStatus());
        Poco::StreamCopier::copyToString(in, reply.body);
        if (response.getKeepAlive()) {
          conn.lastUsed = std::chrono::steady_clock::now();
          std::lock_guard<std::mutex> lock(endpoint->mu);
          if (endpoint->context == conn.context && endpoint->idle.size() < kMaxIdle) {
            endpoint->idle.push_back(std::move(conn));
          }
        }
        return reply;
      } catch (const Poco::IOException&) {
        // A kept connection the server closed before it answered anything: the request was
        // never read, so it goes once more on a new connection. Anything else is the answer.
        if (!reused || answered || attempt > 0) throw;
        conn = Connection{};
        reused = false;
      }
    }
  } catch (const Poco::Exception& e) {
    return Status::unavailable("cannot reach the node API at " + target.address + ": " +
                               e.displayText());
  } catch (const std::exception& e) {
    return Status::unavailable("cannot reach the node API at " + target.address + ": " + e.what());
  }
}

}  // namespace shoal::manager
