// A client of the distribution API v2 (Docker Registry HTTP API): manifests and blobs, over
// HTTPS with the system CAs or, for insecure registries, plain HTTP; anonymous, bearer-token
// and basic auth. See README.md ("Registry client").
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <Poco/AutoPtr.h>
#include <Poco/Net/Context.h>

#include "image_store.h"
#include "reference.h"

namespace shoal::runc {

class RegistryClient {
 public:
  explicit RegistryClient(RegistryOptions options);

  struct Fetched {
    std::string body;         // the manifest's bytes, exactly as served
    std::string contentType;  // the response's Content-Type
    std::string digest;       // sha256 of body (checked against a requested digest)
  };
  // The manifest or index `ref` names by `tagOrDigest` (a tag, or "sha256:..." which the
  // bytes are checked against). `what` names the image in errors. SHOAL_ENOENT when the
  // registry has no such manifest, SHOAL_EIO for everything else that goes wrong.
  Fetched manifest(const Reference& ref, const std::string& tagOrDigest, const std::string& what);

  // Blob `digest` of `ref`'s repository streamed into the file `path` and checked against
  // `digest` (and `size` when >= 0) while it arrives; redirects are followed. A transfer cut
  // short after some bytes arrived is resumed (`Range: bytes=N-`), up to kBlobAttempts
  // requests. On an error the file is removed and SHOAL_EIO ("blob sha256:...: digest mismatch
  // (got sha256:...)") or SHOAL_ENOENT (the registry has no such blob) is thrown. Returns the
  // bytes in the file.
  //
  // With `resume` (and a size), what `path` already holds (an earlier call's, perhaps before a
  // restart) is hashed and only the rest is asked for, and on an error the file stays for the
  // next call to go on from, unless it is empty or the error says its bytes are wrong or gone
  // (digest mismatch, too many or too few bytes, 404, a failed write). A file joined from
  // several responses that does not match the digest is fetched again whole, once.
  uint64_t blobToFile(const Reference& ref, const std::string& digest, int64_t size,
                      const std::string& path, bool resume = false);
  static constexpr int kBlobAttempts = 8;
  // A small blob (an image config) in memory, checked the same way; at most `limit` bytes.
  std::string blob(const Reference& ref, const std::string& digest, int64_t size,
                   std::size_t limit = 16 << 20);

  // THREAD: every method may be called from several threads at once.

 private:
  struct Endpoint {
    std::string scheme, host;  // host without brackets
    uint16_t port = 0;
    std::string domain;  // "host:port" as the reference names it
  };
  struct Response;
  // Takes a 200's or 206's body; `contentRange` is the 206's Content-Range.
  using Sink = void (*)(void* ctx, int status, const std::string& contentRange, std::istream& in);

  Endpoint endpoint(const std::string& domain) const;
  // `range`, when not empty, is sent as the Range header (to redirects too).
  Response get(const Reference& ref, const std::string& target, const std::string& accept,
               Sink sink, void* ctx, const std::string& what, const std::string& range = "");
  std::string authorize(const Reference& ref, const Response& challenge, const std::string& what);
  std::string credentials(const std::string& domain) const;  // "Basic ..." or ""
  // The CA files options_.certsDir holds for `domain` (sorted; none without a certsDir).
  std::vector<std::string> caFiles(const std::string& domain) const;
  // TLS for `domain`: the system's CAs plus its caFiles; peer certificate and name checked.
  Poco::AutoPtr<Poco::Net::Context> tls(const std::string& domain);

  const RegistryOptions options_;
  mutable std::mutex mutex_;
  struct Token {
    std::string header;  // the Authorization value
    std::chrono::steady_clock::time_point expires;
  };
  std::map<std::string, Token> tokens_;  // GUARDED_BY(mutex_): "domain|scope" -> auth
  std::map<std::string, Poco::AutoPtr<Poco::Net::Context>> contexts_;  // GUARDED_BY(mutex_)
};

}  // namespace shoal::runc
