#pragma once

#include <chrono>
#include <string>

#include "kernel/common/status.h"

namespace shoal::manager {

// A client of another node's node API (TLS 1.3 over TCP; see api::ApiServer's TLS mode).
struct NodeApiTarget {
  std::string address;  // "ip:port"
  // Empty: the server is not verified at all (only to fetch the CA whose digest the join
  // token then checks). Otherwise the CA file the server's certificate must chain to.
  std::string caFile;
  // The node id the server's certificate must name (its CN); required with caFile.
  std::string serverNodeId;
  // This node's certificate and key, presented when set.
  std::string certFile;
  std::string keyFile;
  std::chrono::milliseconds timeout{10000};
};

struct NodeApiReply {
  int status = 0;
  std::string body;
};

// One request. A connection or TLS failure (including a server certificate that does not
// verify) is kUnavailable naming the address; any HTTP status is a reply.
//
// Connections are kept: requests to the same target with the same credentials reuse an idle
// TLS connection (HTTP/1.1 keep-alive) and one TLS context, read from the files once. The
// context is made anew when any of the three files changes (a renewed certificate, a rotated
// root), and idle connections made with the old one are dropped. A connection idle for more
// than a few seconds is reconnected (well before the server closes it); a request that finds
// its reused connection closed by the server before any answer is sent once more on a new
// connection. THREAD: safe from any thread; concurrent requests use separate connections.
Result<NodeApiReply> nodeApiRequest(const NodeApiTarget& target, const std::string& method,
                                    const std::string& path, const std::string& body = "");

}  // namespace shoal::manager
