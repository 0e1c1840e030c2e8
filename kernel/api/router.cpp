#include "kernel/api/router.h"

#include <Poco/JSON/Object.h>

#include <sstream>

#include "kernel/common/log.h"

namespace shoal::api {

Response Response::json(std::string body, int status) {
  Response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

Response Response::error(int httpStatus, const std::string& message) {
  Poco::JSON::Object obj;
  obj.set("message", message);
  std::ostringstream out;
  obj.stringify(out);
  return json(out.str(), httpStatus);
}

Response Response::error(const Status& status) {
  return error(httpStatusFor(status.code()), status.message());
}

int httpStatusFor(Status::Code code) {
  switch (code) {
    case Status::Code::kOk:
      return 200;
    case Status::Code::kInvalidArgument:
      return 400;
    case Status::Code::kPermissionDenied:
      return 403;
    case Status::Code::kNotFound:
      return 404;
    case Status::Code::kAlreadyExists:
    case Status::Code::kConflict:
    case Status::Code::kFailedPrecondition:
      return 409;
    case Status::Code::kNotSupported:
      return 501;
    case Status::Code::kUnavailable:
    case Status::Code::kResourceExhausted:
      return 503;
    case Status::Code::kTimeout:
      return 504;
    case Status::Code::kCancelled:
    case Status::Code::kInternal:
      return 500;
  }
  return 500;
}

void Router::add(const std::string& method, const std::string& path, Handler handler) {
  routes_[path][method] = std::move(handler);
}

Response Router::dispatch(const Request& request) const {
  auto byPath = routes_.find(request.path);
  if (byPath == routes_.end()) {
    return Response::error(404, "page not found: " + request.method + " " + request.path);
  }
  auto byMethod = byPath->second.find(request.method);
  if (byMethod == byPath->second.end()) {
    std::string allow;
    for (const auto& [m, h] : byPath->second) allow += (allow.empty() ? "" : ", ") + m;
    Response r = Response::error(405, "method " + request.method + " is not allowed on " +
                                          request.path + " (allowed: " + allow + ")");
    r.headers["Allow"] = allow;
    return r;
  }
  try {
    return byMethod->second(request);
  } catch (const std::exception& e) {
    log::error("api", "handler failed", {{"path", request.path}, {"error", e.what()}});
    return Response::error(500, std::string("internal error: ") + e.what());
  }
}

}  // namespace shoal::api
