#pragma once

#include <string>

#include "kernel/common/status.h"

namespace shoal::api {

// A client of the control API, used by the CLI. Speaks HTTP/1.1 on the daemon's unix socket.
// (Remote managers over mutual TLS come with the membership work.)
class ApiClient {
 public:
  static constexpr const char* kDefaultHost = "unix:///run/shoal/shoald.sock";

  struct Reply {
    int status = 0;
    std::string body;
  };

  // `host` is "unix:///path/to.sock" (or a bare absolute path).
  static Result<ApiClient> create(const std::string& host);

  // One request. A transport failure is kUnavailable with a message naming the socket; any
  // HTTP status is a Reply.
  Result<Reply> request(const std::string& method, const std::string& path,
                        const std::string& body = "") const;

  // A request whose non-2xx reply becomes a Status carrying the daemon's {"message"}.
  Result<std::string> call(const std::string& method, const std::string& path,
                           const std::string& body = "") const;

  const std::string& host() const { return host_; }
  // How long a request may wait for its reply (60 s by default; an image pull takes longer).
  void setTimeoutSeconds(int seconds) { timeoutSeconds_ = seconds; }

 private:
  ApiClient(std::string host, std::string socketPath)
      : host_(std::move(host)), socketPath_(std::move(socketPath)) {}

  std::string host_;
  std::string socketPath_;
  int timeoutSeconds_ = 60;
};

// The Status code for an HTTP error status (the inverse of httpStatusFor).
Status::Code statusCodeForHttp(int httpStatus);

}  // namespace shoal::api
