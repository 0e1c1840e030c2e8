#include "kernel/api/api_client.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/Net/StreamSocket.h>
#include <Poco/StreamCopier.h>

namespace shoal::api {

Result<ApiClient> ApiClient::create(const std::string& host) {
  std::string path;
  if (host.rfind("unix://", 0) == 0) {
    path = host.substr(7);
  } else if (!host.empty() && host[0] == '/') {
    path = host;
  } else {
    return Status::invalidArgument("unsupported host \"" + host +
                                   "\" (want unix:///path/to/shoald.sock)");
  }
  if (path.empty() || path[0] != '/') {
    return Status::invalidArgument("host \"" + host + "\" does not name an absolute socket path");
  }
  return ApiClient(host.rfind("unix://", 0) == 0 ? host : "unix://" + host, path);
}

Result<ApiClient::Reply> ApiClient::request(const std::string& method, const std::string& path,
                                            const std::string& body) const {
  try {
    Poco::Net::StreamSocket socket(
        Poco::Net::SocketAddress(Poco::Net::SocketAddress::UNIX_LOCAL, socketPath_));
    Poco::Net::HTTPClientSession session(socket);
    session.setTimeout(Poco::Timespan(timeoutSeconds_, 0));
    Poco::Net::HTTPRequest req(method, path, Poco::Net::HTTPMessage::HTTP_1_1);
    req.setHost("shoald");
    req.setKeepAlive(false);
    if (!body.empty() || method == "POST" || method == "PUT") {
      req.setContentType("application/json");
      req.setContentLength(static_cast<std::streamsize>(body.size()));
    }
    session.sendRequest(req) << body;
    Poco::Net::HTTPResponse resp;
    std::istream& in = session.receiveResponse(resp);
    Reply reply;
    reply.status = static_cast<int>(resp.getStatus());
    Poco::StreamCopier::copyToString(in, reply.body);
    return reply;
  } catch (const Poco::Exception& e) {
    return Status::unavailable("Cannot connect to the Shoal daemon at " + host_ +
                               ". Is shoald running? (" + e.displayText() + ")");
  }
}

Result<std::string> ApiClient::call(const std::string& method, const std::string& path,
                                    const std::string& body) const {
  auto reply = request(method, path, body);
  if (!reply) return reply.status();
  if (reply->status >= 200 && reply->status < 300) return std::move(reply->body);
  std::string message;
  try {
    Poco::JSON::Parser parser;
    auto obj = parser.parse(reply->body).extract<Poco::JSON::Object::Ptr>();
    if (obj && obj->has("message")) message = obj->getValue<std::string>("message");
  } catch (const Poco::Exception&) {
    // Not our JSON error shape (e.g. the HTTP layer's own 400): fall through.
  }
  if (message.empty()) {
    message = "the daemon answered HTTP " + std::to_string(reply->status) +
              (reply->body.empty() ? "" : ": " + reply->body);
  }
  return Status(statusCodeForHttp(reply->status), message);
}

Status::Code statusCodeForHttp(int httpStatus) {
  switch (httpStatus) {
    case 400:
      return Status::Code::kInvalidArgument;
    case 403:
      return Status::Code::kPermissionDenied;
    case 404:
      return Status::Code::kNotFound;
    case 409:
      return Status::Code::kConflict;
    case 501:
      return Status::Code::kNotSupported;
    case 503:
      return Status::Code::kUnavailable;
    case 504:
      return Status::Code::kTimeout;
    default:
      return Status::Code::kInternal;
  }
}

}  // namespace shoal::api
