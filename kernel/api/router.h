#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "kernel/common/status.h"

namespace shoal::api {

// One API request, decoded.
struct Request {
  std::string method;                        // "GET", "POST", ...
  std::string path;                          // decoded path, without the query
  std::map<std::string, std::string> query;  // decoded query parameters
  std::string body;
  // Over TLS with a client certificate that chains to the cluster CA: its subject (CN, OU,
  // O = node id, role, cluster id). Empty on the unix socket and for anonymous clients.
  std::string peerNodeId;
  std::string peerRole;
  std::string peerCluster;
  std::string peerAddress;  // "ip:port" over TCP
};

// One API response: an HTTP status and a JSON body.
struct Response {
  int status = 200;
  std::string body = "{}";
  std::map<std::string, std::string> headers;

  static Response json(std::string body, int status = 200);
  // {"message": ...} with the HTTP status that matches the Status code.
  static Response error(const Status& status);
  static Response error(int httpStatus, const std::string& message);
};

// The HTTP status for a Status code (400 invalid, 404 not found, 409 conflict, ...).
int httpStatusFor(Status::Code code);

// Maps (method, path) to handlers. Paths are exact ("/info"); a later issue adds patterns.
// THREAD: add() before the server starts; dispatch() from any thread.
class Router {
 public:
  using Handler = std::function<Response(const Request&)>;

  void add(const std::string& method, const std::string& path, Handler handler);

  // 404 for an unknown path, 405 (with an Allow header) for a known path and another method.
  // A handler that throws gives a 500 with the exception's text; nothing escapes.
  Response dispatch(const Request& request) const;

 private:
  std::map<std::string, std::map<std::string, Handler>> routes_;  // path -> method -> handler
};

}  // namespace shoal::api
