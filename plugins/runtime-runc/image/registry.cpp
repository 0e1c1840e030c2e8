#include "registry.h"

#include <Poco/Crypto/X509Certificate.h>
#include <Poco/Dynamic/Var.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/StreamCopier.h>
#include <Poco/Timespan.h>
#include <Poco/URI.h>
#include <dirent.h>
#include <fcntl.h>
#include <shoal/plugin.h>
#include <unistd.h>
#include <shoal/plugin.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <istream>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "digest.h"
#include "fs_util.h"
#include "manifest.h"

namespace shoal::runc {

namespace {

constexpr std::size_t kManifestLimit = 4 << 20;  // distribution refuses larger ones too
constexpr std::size_t kErrorBodyLimit = 64 << 10;
constexpr int kMaxRedirects = 5;

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// A TLS client context: the system's CAs, the peer's certificate and name checked.
Poco::Net::Context::Ptr newTlsContext() {
  static std::once_flag once;
  std::call_once(once, [] { Poco::Net::initializeSSL(); });
  Poco::Net::Context::Params params;
  params.verificationMode = Poco::Net::Context::VERIFY_RELAXED;
  params.loadDefaultCAs = true;
  params.cipherList = "HIGH:!aNULL:!MD5";
  return Poco::Net::Context::Ptr(
      new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, params));
}

// For hosts no certs.d entry names (token services, blob storage a registry redirects to).
Poco::Net::Context::Ptr tlsContext() {
  static Poco::Net::Context::Ptr context = newTlsContext();
  return context;
}

bool isLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// One auth challenge of a WWW-Authenticate header: `Bearer realm="...",service="..."`.
struct Challenge {
  std::string scheme;
  std::map<std::string, std::string> params;
};

std::vector<Challenge> parseChallenges(const std::string& header) {
  std::vector<Challenge> out;
  std::size_t i = 0, n = header.size();
  auto skipSpace = [&] {
    while (i < n && (header[i] == ' ' || header[i] == '\t' || header[i] == ',')) ++i;
  };
  while (i < n) {
    skipSpace();
    std::size_t start = i;
    while (i < n && header[i] != ' ' && header[i] != ',') ++i;
    Challenge c;
    c.scheme = lower(header.substr(start, i - start));
    if (c.scheme.empty()) break;
    // key=value pairs until the next bare token (the next challenge's scheme).
    while (true) {
      skipSpace();
      std::size_t keyStart = i;
      while (i < n && header[i] != '=' && header[i] != ' ' && header[i] != ',') ++i;
      if (i >= n || header[i] != '=') {
        i = keyStart;
        break;
      }
      std::string key = lower(header.substr(keyStart, i - keyStart));
      ++i;
      std::string value;
      if (i < n && header[i] == '"') {
        ++i;
        while (i < n && header[i] != '"') {
          if (header[i] == '\\' && i + 1 < n) ++i;
          value += header[i++];
        }
        ++i;
      } else {
        while (i < n && header[i] != ',' && header[i] != ' ') value += header[i++];
      }
      c.params[key] = value;
    }
    out.push_back(std::move(c));
  }
  return out;
}

std::string base64(const std::string& in) {
  static const char kChars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (static_cast<uint8_t>(in[i]) << 16) | (static_cast<uint8_t>(in[i + 1]) << 8) |
                 static_cast<uint8_t>(in[i + 2]);
    out += kChars[v >> 18];
    out += kChars[(v >> 12) & 63];
    out += kChars[(v >> 6) & 63];
    out += kChars[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    out += kChars[v >> 18];
    out += kChars[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (static_cast<uint8_t>(in[i]) << 16) | (static_cast<uint8_t>(in[i + 1]) << 8);
    out += kChars[v >> 18];
    out += kChars[(v >> 12) & 63];
    out += kChars[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

// "host:port" as a credentials file key names it: "https://host:port/v1/" -> "host:port".
std::string credentialHost(std::string key) {
  if (auto p = key.find("://"); p != std::string::npos) key = key.substr(p + 3);
  if (auto p = key.find('/'); p != std::string::npos) key.resize(p);
  key = lower(key);
  if (key == "index.docker.io" || key == "registry-1.docker.io") key = "docker.io";
  return key;
}

}  // namespace

struct RegistryClient::Response {
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;                                          // unless a sink took it
  bool redirected = false;

  std::string header(const std::string& name) const {
    for (const auto& [k, v] : headers) {
      if (k == name) return v;
    }
    return "";
  }
  // What the registry said: its error JSON's first message, else the reason phrase.
  std::string said() const {
    std::string message;
    try {
      Poco::JSON::Parser parser;
      Poco::Dynamic::Var v = parser.parse(body);
      if (v.type() == typeid(Poco::JSON::Object::Ptr)) {
        auto errors = v.extract<Poco::JSON::Object::Ptr>()->getArray("errors");
        if (!errors.isNull() && errors->size() > 0) {
          auto first = errors->getObject(0);
          if (!first.isNull()) message = first->optValue<std::string>("message", "");
          if (message.empty() && !first.isNull()) {
            message = lower(first->optValue<std::string>("code", ""));
          }
        }
      }
    } catch (const Poco::Exception&) {
    } catch (const std::exception&) {
    }
    if (message.empty()) message = lower(reason.empty() ? "error" : reason);
    return message + " (registry said " + std::to_string(status) + ")";
  }
};

RegistryClient::RegistryClient(RegistryOptions options) : options_(std::move(options)) {}

RegistryClient::Endpoint RegistryClient::endpoint(const std::string& domain) const {
  Endpoint ep;
  std::string hostPort = domain == "docker.io" ? "registry-1.docker.io" : domain;
  bool insecure = std::find(options_.insecure.begin(), options_.insecure.end(), domain) !=
                  options_.insecure.end();
  std::string host = hostPort, port;
  if (!hostPort.empty() && hostPort[0] == '[') {
    auto close = hostPort.find(']');
    host = hostPort.substr(1, close - 1);
    if (close + 1 < hostPort.size() && hostPort[close + 1] == ':')
      port = hostPort.substr(close + 2);
  } else if (auto colon = hostPort.rfind(':'); colon != std::string::npos) {
    host = hostPort.substr(0, colon);
    port = hostPort.substr(colon + 1);
  }
  // Like Docker, loopback registries are insecure without being listed; one this node was
  // given CAs for is spoken to over TLS, checked against them.
  if (isLoopback(host)) insecure = true;
  if (!caFiles(domain).empty()) insecure = false;
  ep.domain = domain;
  ep.scheme = insecure ? "http" : "https";
  ep.host = host;
  ep.port = static_cast<uint16_t>(port.empty() ? (insecure ? 80 : 443) : std::stoi(port));
  return ep;
}

std::vector<std::string> RegistryClient::caFiles(const std::string& domain) const {
  std::vector<std::string> out;
  if (options_.certsDir.empty() || domain.empty() || domain.find('/') != std::string::npos ||
      domain[0] == '.') {
    return out;
  }
  const std::string dir = options_.certsDir + "/" + domain;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".crt") == 0) {
      out.push_back(dir + "/" + name);
    }
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

Poco::AutoPtr<Poco::Net::Context> RegistryClient::tls(const std::string& domain) {
  const std::vector<std::string> files = caFiles(domain);
  if (files.empty()) return tlsContext();
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = contexts_.find(domain);
  if (it != contexts_.end()) return it->second;
  Poco::Net::Context::Ptr context = newTlsContext();
  for (const std::string& file : files) {
    try {
      for (const auto& cert : Poco::Crypto::X509Certificate::readPEM(file)) {
        context->addCertificateAuthority(cert);
      }
    } catch (const Poco::Exception& e) {
      throw sdk::Error(SHOAL_EINVAL, "registry " + domain + ": CA file " + file +
                                         " is not a PEM certificate: " + e.displayText());
    }
  }
  contexts_.emplace(domain, context);
  return context;
}

std::string RegistryClient::credentials(const std::string& domain) const {
  if (options_.credentialsFile.empty()) return "";
  std::string text;
  try {
    text = fs::readFile(options_.credentialsFile);
  } catch (const sdk::Error& e) {
    if (e.code() == SHOAL_ENOENT) return "";
    throw;
  }
  try {
    Poco::JSON::Parser parser;
    Poco::Dynamic::Var v = parser.parse(text);
    if (v.type() != typeid(Poco::JSON::Object::Ptr))
      throw Poco::DataFormatException("not an object");
    auto auths = v.extract<Poco::JSON::Object::Ptr>()->getObject("auths");
    if (auths.isNull()) return "";
    for (const auto& [key, entry] : *auths) {
      if (credentialHost(key) != lower(domain)) continue;
      if (entry.type() != typeid(Poco::JSON::Object::Ptr)) continue;
      auto e = entry.extract<Poco::JSON::Object::Ptr>();
      std::string auth = e->optValue<std::string>("auth", "");
      if (auth.empty()) {
        std::string user = e->optValue<std::string>("username", "");
        std::string pass = e->optValue<std::string>("password", "");
        if (!user.empty()) auth = base64(user + ":" + pass);
      }
      if (!auth.empty()) return "Basic " + auth;
    }
  } catch (const Poco::Exception& e) {
    throw sdk::Error(SHOAL_EINVAL, "credentials file " + options_.credentialsFile +
                                       " is not valid: " + e.displayText());
  }
  return "";
}

RegistryClient::Response RegistryClient::get(const Reference& ref, const std::string& target,
                                             const std::string& accept, Sink sink, void* ctx,
                                             const std::string& what, const std::string& range) {
  const std::string key = ref.domain + "|repository:" + ref.path + ":pull";
  std::string auth;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = tokens_.find(key);
    if (it != tokens_.end() && it->second.expires > std::chrono::steady_clock::now()) {
      auth = it->second.header;
    }
  }
  const Endpoint home = endpoint(ref.domain);
  for (int attempt = 0;; ++attempt) {
    Endpoint ep = home;
    std::string tgt = target;
    Response r;
    for (int hop = 0;; ++hop) {
      bool sameHost = ep.scheme == home.scheme && ep.host == home.host && ep.port == home.port;
      try {
        std::unique_ptr<Poco::Net::HTTPClientSession> session;
        if (ep.scheme == "https") {
          // The registry's own CAs for it; a redirect elsewhere gets the system's alone.
          session = std::make_unique<Poco::Net::HTTPSClientSession>(
              ep.host, ep.port, tls(sameHost ? home.domain : ep.domain));
        } else {
          session = std::make_unique<Poco::Net::HTTPClientSession>(ep.host, ep.port);
        }
        session->setTimeout(Poco::Timespan(options_.timeoutSeconds, 0));
        Poco::Net::HTTPRequest req(Poco::Net::HTTPRequest::HTTP_GET, tgt,
                                   Poco::Net::HTTPMessage::HTTP_1_1);
        req.set("User-Agent", "shoal-runtime-runc/0.1");
        if (!accept.empty()) req.set("Accept", accept);
        if (!range.empty()) req.set("Range", range);
        // Credentials go to the registry only, never to a redirect's storage backend.
        if (!auth.empty() && sameHost) req.set("Authorization", auth);
        session->sendRequest(req);
        Poco::Net::HTTPResponse resp;
        std::istream& in = session->receiveResponse(resp);
        r = Response();
        r.status = static_cast<int>(resp.getStatus());
        r.reason = resp.getReason();
        for (const auto& [k, v] : resp) r.headers.emplace_back(lower(k), v);
        r.redirected = hop > 0;
        if ((r.status == 200 || (r.status == 206 && !range.empty())) && sink != nullptr) {
          sink(ctx, r.status, r.header("content-range"), in);
        } else {
          char buf[4096];
          while (r.body.size() < kErrorBodyLimit && in.read(buf, sizeof buf).gcount() > 0) {
            r.body.append(buf, static_cast<std::size_t>(in.gcount()));
          }
        }
      } catch (const Poco::TimeoutException&) {
        throw sdk::Error(SHOAL_EIO, what + ": registry " + ep.host + ":" + std::to_string(ep.port) +
                                        " timed out after " +
                                        std::to_string(options_.timeoutSeconds) + " s");
      } catch (const Poco::Exception& e) {
        throw sdk::Error(SHOAL_EIO, what + ": registry " + ep.host + ":" + std::to_string(ep.port) +
                                        ": " + e.displayText());
      }
      bool redirect = r.status == 301 || r.status == 302 || r.status == 303 || r.status == 307 ||
                      r.status == 308;
      if (!redirect) break;
      std::string location = r.header("location");
      if (location.empty() || hop >= kMaxRedirects) {
        throw sdk::Error(SHOAL_EIO, what + ": too many or empty redirects from the registry");
      }
      try {
        Poco::URI base(ep.scheme + "://" +
                       (ep.host.find(':') != std::string::npos ? "[" + ep.host + "]" : ep.host) +
                       ":" + std::to_string(ep.port) + tgt);
        base.resolve(location);
        if (base.getScheme() != "http" && base.getScheme() != "https") {
          throw sdk::Error(SHOAL_EIO, what + ": redirect to an unsupported URL " + location);
        }
        ep.scheme = base.getScheme();
        ep.host = base.getHost();
        ep.port = base.getPort();
        ep.domain = base.getAuthority();  // its certs.d entry, if it has one
        tgt = base.getPathEtc();
      } catch (const Poco::Exception& e) {
        throw sdk::Error(SHOAL_EIO, what + ": bad redirect " + location + ": " + e.displayText());
      }
    }
    if (r.status == 401 && attempt == 0 && !r.redirected) {
      auth = authorize(ref, r, what);
      continue;
    }
    return r;
  }
}

std::string RegistryClient::authorize(const Reference& ref, const Response& challenge,
                                      const std::string& what) {
  const std::string scope = "repository:" + ref.path + ":pull";
  const std::string key = ref.domain + "|" + scope;
  std::vector<Challenge> challenges;
  for (const auto& [k, v] : challenge.headers) {
    if (k == "www-authenticate") {
      for (Challenge& c : parseChallenges(v)) challenges.push_back(std::move(c));
    }
  }
  std::string basic = credentials(ref.domain);
  for (const Challenge& c : challenges) {
    if (c.scheme != "bearer") continue;
    auto realmIt = c.params.find("realm");
    if (realmIt == c.params.end() || realmIt->second.empty()) continue;
    const std::string& realm = realmIt->second;
    Poco::URI uri;
    try {
      uri = Poco::URI(realm);
      if (uri.getScheme() != "http" && uri.getScheme() != "https") {
        throw Poco::SyntaxException("not an http(s) URL");
      }
      if (c.params.count("service")) uri.addQueryParameter("service", c.params.at("service"));
      // The scope the registry asked for; ours when it named none.
      auto s = c.params.find("scope");
      uri.addQueryParameter("scope", s != c.params.end() && !s->second.empty() ? s->second : scope);
    } catch (const Poco::Exception& e) {
      throw sdk::Error(SHOAL_EIO, what + ": bad token realm \"" + realm + "\": " + e.displayText());
    }
    std::string body;
    int status = 0;
    try {
      std::unique_ptr<Poco::Net::HTTPClientSession> session;
      if (uri.getScheme() == "https") {
        // A token service on a private CA is trusted through certs.d like a registry.
        session = std::make_unique<Poco::Net::HTTPSClientSession>(uri.getHost(), uri.getPort(),
                                                                  tls(uri.getAuthority()));
      } else {
        session = std::make_unique<Poco::Net::HTTPClientSession>(uri.getHost(), uri.getPort());
      }
      session->setTimeout(Poco::Timespan(options_.timeoutSeconds, 0));
      Poco::Net::HTTPRequest req(Poco::Net::HTTPRequest::HTTP_GET, uri.getPathEtc(),
                                 Poco::Net::HTTPMessage::HTTP_1_1);
      req.set("User-Agent", "shoal-runtime-runc/0.1");
      if (!basic.empty()) req.set("Authorization", basic);
      session->sendRequest(req);
      Poco::Net::HTTPResponse resp;
      std::istream& in = session->receiveResponse(resp);
      status = static_cast<int>(resp.getStatus());
      char buf[4096];
      while (body.size() < kManifestLimit && in.read(buf, sizeof buf).gcount() > 0) {
        body.append(buf, static_cast<std::size_t>(in.gcount()));
      }
    } catch (const Poco::Exception& e) {
      throw sdk::Error(SHOAL_EIO, what + ": token service " + realm + ": " + e.displayText());
    }
    if (status != 200) {
      throw sdk::Error(SHOAL_EIO, what + ": token service " + realm + " refused " +
                                      (basic.empty() ? "anonymous access" : "the credentials") +
                                      " (said " + std::to_string(status) + ")");
    }
    std::string token;
    int expires = 60;
    try {
      Poco::JSON::Parser parser;
      auto o = parser.parse(body).extract<Poco::JSON::Object::Ptr>();
      token = o->optValue<std::string>("token", "");
      if (token.empty()) token = o->optValue<std::string>("access_token", "");
      expires = o->optValue<int>("expires_in", 60);
    } catch (const std::exception&) {
    }
    if (token.empty()) {
      throw sdk::Error(SHOAL_EIO, what + ": token service " + realm + " sent no token");
    }
    std::string header = "Bearer " + token;
    std::lock_guard<std::mutex> lock(mutex_);
    // Renew a little early so a long pull does not run into the expiry.
    tokens_[key] = Token{
        header, std::chrono::steady_clock::now() + std::chrono::seconds(std::max(10, expires - 5))};
    return header;
  }
  for (const Challenge& c : challenges) {
    if (c.scheme != "basic") continue;
    if (basic.empty()) {
      throw sdk::Error(
          SHOAL_EIO,
          what + ": registry " + ref.domain +
              " requires authentication and there are no credentials " + "for it" +
              (options_.credentialsFile.empty() ? "" : " in " + options_.credentialsFile));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    tokens_[key] = Token{basic, std::chrono::steady_clock::now() + std::chrono::hours(1)};
    return basic;
  }
  throw sdk::Error(SHOAL_EIO, what + ": access denied: " + challenge.said());
}

namespace {

[[noreturn]] void statusError(const std::string& what, const std::string& said, int status) {
  throw sdk::Error(status == 404 ? SHOAL_ENOENT : SHOAL_EIO,
                   what + ": " + (status == 401 || status == 403 ? "access denied: " : "") + said);
}

struct MemorySink {
  std::string body;
  std::size_t limit;
  bool tooBig = false;
  bool broken = false;
  static void take(void* ctx, int, const std::string&, std::istream& in) {
    auto* self = static_cast<MemorySink*>(ctx);
    char buf[65536];
    while (in.read(buf, sizeof buf).gcount() > 0) {
      self->body.append(buf, static_cast<std::size_t>(in.gcount()));
      if (self->body.size() > self->limit) {
        self->tooBig = true;
        return;
      }
    }
    self->broken = in.bad();
  }
};

// A header's non-negative decimal (Content-Length, a Content-Range bound), or -1.
int64_t decimal(std::string_view text) {
  if (text.empty() || text.size() > 18) return -1;
  for (char c : text) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return -1;
  }
  return std::stoll(std::string(text));
}

// The first byte a 206's Content-Range ("bytes 100-199/200") covers.
std::optional<uint64_t> rangeStart(const std::string& contentRange) {
  const std::string_view prefix = "bytes ";
  if (contentRange.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  const auto dash = contentRange.find('-', prefix.size());
  if (dash == std::string::npos) return std::nullopt;
  const int64_t v =
      decimal(std::string_view(contentRange).substr(prefix.size(), dash - prefix.size()));
  if (v < 0) return std::nullopt;
  return static_cast<uint64_t>(v);
}

// A blob streamed into a file and hashed as it arrives; a 206 goes on from what the file holds.
struct FileSink {
  int fd = -1;
  std::string path;
  std::string what;
  int64_t size = -1;
  std::optional<Sha256> hash{std::in_place};
  uint64_t bytes = 0;     // in the file, every one hashed
  uint64_t received = 0;  // by the last response
  bool unproven = false;  // the file joins bytes from more than one response
  bool fatal = false;     // the error thrown is not one a retry could mend
  bool badRange = false;  // a 206 that did not go on from `bytes`

  void startOver() {
    if (ftruncate(fd, 0) != 0) fs::throwErrno("truncate " + path);
    if (lseek(fd, 0, SEEK_SET) < 0) fs::throwErrno("seek " + path);
    hash.emplace();
    bytes = 0;
    unproven = false;
  }
  // Hashes what the file already holds and leaves the write position at its end.
  void adopt() {
    std::vector<char> buf(1 << 17);
    if (lseek(fd, 0, SEEK_SET) < 0) fs::throwErrno("seek " + path);
    bytes = 0;
    while (true) {
      ssize_t n = read(fd, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fs::throwErrno("read " + path);
      if (n == 0) break;
      hash->update(buf.data(), static_cast<std::size_t>(n));
      bytes += static_cast<uint64_t>(n);
    }
    unproven = bytes > 0;
  }
  static void take(void* ctx, int status, const std::string& contentRange, std::istream& in) {
    auto* self = static_cast<FileSink*>(ctx);
    self->received = 0;
    if (status == 200) {
      if (self->bytes > 0) self->startOver();  // the registry ignored the Range: all of it again
    } else if (rangeStart(contentRange) != self->bytes) {
      self->badRange = true;
      throw sdk::Error(SHOAL_EIO, self->what + ": asked for the bytes from " +
                                      std::to_string(self->bytes) +
                                      ", the registry sent Content-Range \"" + contentRange + "\"");
    } else {
      self->unproven = self->unproven || self->bytes > 0;
    }
    // Small reads: when the connection fails, what the failing read had taken is lost (the
    // stream only sets badbit), and the next request goes on from the last one that returned.
    std::vector<char> buf(16 << 10);
    while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())).gcount() > 0) {
      std::size_t n = static_cast<std::size_t>(in.gcount());
      if (self->size >= 0 && self->bytes + n > static_cast<uint64_t>(self->size)) {
        self->fatal = true;
        throw sdk::Error(SHOAL_EIO, self->what + ": the registry sent more than the " +
                                        std::to_string(self->size) + " bytes the manifest says");
      }
      std::size_t done = 0;
      while (done < n) {
        ssize_t w = write(self->fd, buf.data() + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
          self->fatal = true;
          fs::throwErrno("write " + self->path);
        }
        done += static_cast<std::size_t>(w);
      }
      self->hash->update(buf.data(), n);
      self->bytes += n;
      self->received += n;
    }
    if (in.bad()) {
      throw sdk::Error(SHOAL_EIO, self->what + ": download interrupted after " +
                                      std::to_string(self->bytes) + " bytes");
    }
  }
};

}  // namespace

RegistryClient::Fetched RegistryClient::manifest(const Reference& ref,
                                                 const std::string& tagOrDigest,
                                                 const std::string& what) {
  MemorySink sink;
  sink.limit = kManifestLimit;
  Response r = get(ref, "/v2/" + ref.path + "/manifests/" + tagOrDigest, media::acceptHeader(),
                   &MemorySink::take, &sink, what);
  if (r.status != 200) statusError(what, r.said(), r.status);
  if (sink.tooBig) throw sdk::Error(SHOAL_EIO, what + ": manifest larger than 4 MiB");
  if (sink.broken) throw sdk::Error(SHOAL_EIO, what + ": manifest download interrupted");
  Fetched f;
  f.body = std::move(sink.body);
  f.contentType = r.header("content-type");
  f.digest = sha256Digest(f.body);
  if (isSha256Digest(tagOrDigest)) {
    checkDigest("manifest", tagOrDigest, f.digest);
  } else if (std::string served = r.header("docker-content-digest");
             isSha256Digest(served) && served != f.digest) {
    checkDigest("manifest", served, f.digest);
  }
  return f;
}

uint64_t RegistryClient::blobToFile(const Reference& ref, const std::string& digest, int64_t size,
                                    const std::string& path, bool resume) {
  FileSink sink;
  sink.path = path;
  sink.what = "blob " + digest;
  sink.size = size;
  // Without a size there is no telling whether kept bytes are all of it: start over then.
  resume = resume && size >= 0;
  sink.fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | (resume ? 0 : O_TRUNC), 0600);
  if (sink.fd < 0) fs::throwErrno("create " + path);
  const std::string target = "/v2/" + ref.path + "/blobs/" + digest;
  auto shortBlob = [&] {
    return sdk::Error(SHOAL_EIO, sink.what + ": the registry sent " + std::to_string(sink.bytes) +
                                     " bytes, the manifest says " + std::to_string(size));
  };
  bool keep = false;  // whether an error leaves the file for a later call to go on from
  try {
    if (resume) sink.adopt();
    if (size >= 0 && sink.bytes > static_cast<uint64_t>(size)) sink.startOver();
    for (int attempt = 1;; ++attempt) {
      const bool more = attempt < kBlobAttempts;
      const uint64_t before = sink.bytes;
      if (size < 0 || before < static_cast<uint64_t>(size)) {
        keep = resume;
        Response r;
        try {
          r = get(ref, target, "", &FileSink::take, &sink, sink.what,
                  before > 0 ? "bytes=" + std::to_string(before) + "-" : "");
        } catch (const sdk::Error&) {
          if (sink.fatal) keep = false;
          if (sink.badRange && more) {
            sink.badRange = false;
            sink.startOver();
            continue;
          }
          if (!sink.fatal && sink.bytes > before && more) continue;  // cut short: go on
          throw;
        }
        if (r.status == 416 && before > 0) {
          // "bytes */N": the blob is N bytes. Not the size the manifest says, it is not the
          // manifest's blob; else the registry will not go on from there: start over.
          const std::string range = r.header("content-range");
          const int64_t total = range.rfind("bytes */", 0) == 0 ? decimal(range.substr(8)) : -1;
          if (total >= 0 && total != size) {
            keep = false;
            throw shortBlob();
          }
          if (more) {
            sink.startOver();
            continue;
          }
        }
        if (r.status != 200 && r.status != 206) {
          keep = keep && r.status != 404;
          statusError(sink.what, r.said(), r.status);
        }
        if (size >= 0 && sink.bytes < static_cast<uint64_t>(size)) {
          // A body that ended where its Content-Length said is all the registry has.
          if (decimal(r.header("content-length")) == static_cast<int64_t>(sink.received)) {
            keep = false;
            throw shortBlob();
          }
          if (sink.bytes > before && more) continue;  // the connection ended early: go on
          throw shortBlob();
        }
      }
      const std::string got = sink.hash->digest();
      if (got != digest && sink.unproven && more) {  // joined bytes were wrong: fetch it whole
        sink.startOver();
        continue;
      }
      keep = false;
      checkDigest("blob", digest, got);
      if (fsync(sink.fd) != 0) fs::throwErrno("fsync " + path);
      break;
    }
  } catch (...) {
    if (keep && sink.bytes > 0) {
      fsync(sink.fd);  // best effort: the next call hashes whatever is there
      close(sink.fd);
    } else {
      close(sink.fd);
      unlink(path.c_str());
    }
    throw;
  }
  if (close(sink.fd) != 0) {
    unlink(path.c_str());
    fs::throwErrno("close " + path);
  }
  return sink.bytes;
}

std::string RegistryClient::blob(const Reference& ref, const std::string& digest, int64_t size,
                                 std::size_t limit) {
  MemorySink sink;
  sink.limit = limit;
  std::string what = "blob " + digest;
  Response r = get(ref, "/v2/" + ref.path + "/blobs/" + digest, "", &MemorySink::take, &sink, what);
  if (r.status != 200) statusError(what, r.said(), r.status);
  if (sink.tooBig) throw sdk::Error(SHOAL_EIO, what + ": larger than " + std::to_string(limit));
  if (sink.broken) throw sdk::Error(SHOAL_EIO, what + ": download interrupted");
  if (size >= 0 && sink.body.size() != static_cast<std::size_t>(size)) {
    throw sdk::Error(SHOAL_EIO, what + ": the registry sent " + std::to_string(sink.body.size()) +
                                    " bytes, the manifest says " + std::to_string(size));
  }
  checkDigest("blob", digest, sha256Digest(sink.body));
  return std::move(sink.body);
}

}  // namespace shoal::runc
