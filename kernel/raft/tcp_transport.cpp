// TcpTransport: Raft messages over mutual TLS. kernel/raft/README.md ("Transport") has the
// wire format and the reasons for the shape.
#include "kernel/raft/tcp_transport.h"

#include <Poco/Exception.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/SocketAddress.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "kernel/common/log.h"

namespace shoal::raft {
namespace {

constexpr std::string_view kModule = "raft.transport";

// The hello (dialler -> acceptor) and the ack (acceptor -> dialler) open every connection.
constexpr char kMagic[4] = {'S', 'R', 'F', 'T'};
constexpr uint8_t kWireVersion = 2;  // 2: messages larger than a frame are fragmented
// In a frame's length word: more frames of the same message follow this one.
constexpr uint32_t kMoreFragments = 0x80000000u;
constexpr size_t kHelloBytes = 4 + 1 + 8 + 8;  // magic, version, from, to
constexpr size_t kAckBytes = 4 + 1 + 8;        // magic, version, acceptor's id
constexpr size_t kFrameHeader = 4;

// One TLS record carries at most 16 KiB of plaintext, so SSL_read never returns more.
constexpr size_t kReadChunk = 16 * 1024;
// A reader hands frames to the handler at least this often, however fast bytes arrive.
constexpr size_t kReadBurst = 1024 * 1024;
// What a sender takes off its queue for one write.
constexpr size_t kBatchMessages = 256;
constexpr size_t kBatchBytes = 1024 * 1024;
// Buffers larger than this (after a snapshot went through) are released once empty.
constexpr size_t kKeepBuffer = 4 * 1024 * 1024;

using Clock = std::chrono::steady_clock;
constexpr Clock::time_point kNever = Clock::time_point::max();

std::string errnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

// The OpenSSL error queue as text (and emptied).
std::string sslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out;
}

void putU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void putU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t getU32(std::string_view b, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(static_cast<uint8_t>(b[at + i])) << (8 * i);
  return v;
}

uint64_t getU64(std::string_view b, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= static_cast<uint64_t>(static_cast<uint8_t>(b[at + i])) << (8 * i);
  return v;
}

void appendFrame(std::string& out, std::string_view payload) {
  putU32(out, static_cast<uint32_t>(payload.size()));
  out.append(payload);
}

std::string helloFrame(NodeId from, NodeId to) {
  std::string p(kMagic, sizeof kMagic);
  p.push_back(static_cast<char>(kWireVersion));
  putU64(p, from);
  putU64(p, to);
  std::string out;
  appendFrame(out, p);
  return out;
}

std::string ackFrame(NodeId self) {
  std::string p(kMagic, sizeof kMagic);
  p.push_back(static_cast<char>(kWireVersion));
  putU64(p, self);
  std::string out;
  appendFrame(out, p);
  return out;
}

// Checks magic and version of a hello or ack payload of `size` bytes.
Status checkPreamble(std::string_view p, size_t size, const char* what) {
  if (p.size() != size || std::memcmp(p.data(), kMagic, sizeof kMagic) != 0) {
    return Status::invalidArgument(std::string("malformed ") + what);
  }
  uint8_t version = static_cast<uint8_t>(p[4]);
  if (version != kWireVersion) {
    return Status::notSupported(std::string(what) + " speaks wire version " +
                                std::to_string(version) + ", this build speaks " +
                                std::to_string(kWireVersion));
  }
  return Status::ok();
}

std::string expectedCommonName(NodeId id) { return "shoal-raft-" + std::to_string(id); }

// The subject field `nid` of the peer's certificate ("" when absent or repeated).
std::string subjectField(X509* cert, int nid) {
  X509_NAME* name = X509_get_subject_name(cert);
  if (name == nullptr) return "";
  int at = X509_NAME_get_index_by_NID(name, nid, -1);
  if (at < 0 || X509_NAME_get_index_by_NID(name, nid, at) >= 0) return "";
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at)));
  if (len < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

// The subject's common name, when it has exactly one.
std::optional<std::string> commonName(X509* cert) {
  std::string cn = subjectField(cert, NID_commonName);
  if (cn.empty()) return std::nullopt;
  return cn;
}

// The options' peerCheck, when there is one, on the peer's certificate.
Status runPeerCheck(const TcpTransport::Options& o, SSL* ssl, NodeId id) {
  if (!o.peerCheck) return Status::ok();
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) return Status::permissionDenied("peer presented no certificate");
  TcpTransport::Options::PeerSubject subject{subjectField(cert, NID_commonName),
                                             subjectField(cert, NID_organizationalUnitName),
                                             subjectField(cert, NID_organizationName)};
  X509_free(cert);
  return o.peerCheck(id, subject);
}

// The peer's certificate must name the Raft id it speaks for.
Status checkPeerCommonName(SSL* ssl, NodeId id) {
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) return Status::permissionDenied("peer presented no certificate");
  std::optional<std::string> cn = commonName(cert);
  X509_free(cert);
  std::string want = expectedCommonName(id);
  if (!cn) return Status::permissionDenied("peer certificate has no single common name");
  if (*cn != want) {
    return Status::permissionDenied("peer certificate is for \"" + *cn + "\", not \"" + want +
                                    "\"");
  }
  return Status::ok();
}

// A file descriptor, closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

void signalEventFd(int fd) {
  if (fd < 0) return;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
}

void drainEventFd(int fd) {
  uint64_t v;
  [[maybe_unused]] ssize_t n = ::read(fd, &v, sizeof v);
}

// Socket options every connection gets: no Nagle delay (Raft messages are small and latency
// matters), keepalives so a peer that vanished without a FIN is noticed, and a user timeout so
// unacknowledged data does not sit in the kernel for the default ~15 minutes.
void tuneSocket(int fd, std::chrono::milliseconds userTimeout) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  int idle = 10, interval = 5, count = 3;
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  unsigned timeout = static_cast<unsigned>(std::min<int64_t>(userTimeout.count(), UINT_MAX));
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout, sizeof timeout);
}

// OpenSSL writes with write(2), which raises SIGPIPE on a connection the peer reset. Blocking
// it in the transport's own threads turns that into EPIPE without touching the process's
// disposition (the signal is thread-directed and stays pending on a thread that never takes it).
void blockSigpipe() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

// What can end a wait besides the socket becoming ready: the transport stopping (stopFd, never
// drained once signalled) and, for a sender, its peer's wake-up (new messages, removal or a
// new address; drained here).
struct Interrupt {
  int stopFd = -1;
  int wakeFd = -1;
};

enum class Wait { kReady, kTimeout, kStopped, kWoken };

// Waits for `events` on `fd` (fd < 0: just wait), an interrupt, or the deadline.
Wait waitFor(int fd, short events, Clock::time_point deadline, const Interrupt& in) {
  for (;;) {
    int timeoutMs = -1;
    if (deadline != kNever) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return Wait::kTimeout;
      timeoutMs = static_cast<int>(std::min<int64_t>(left, INT_MAX));
    }
    pollfd fds[3] = {{fd, events, 0}, {in.stopFd, POLLIN, 0}, {in.wakeFd, POLLIN, 0}};
    int n = ::poll(fds, 3, timeoutMs);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Wait::kStopped;  // EINVAL/ENOMEM: nothing sensible to wait on any more
    }
    if (fds[1].revents != 0) return Wait::kStopped;
    if (fds[0].revents != 0) return Wait::kReady;
    if (fds[2].revents != 0) {
      drainEventFd(in.wakeFd);
      return Wait::kWoken;
    }
  }
}

// Turns a failed SSL call into a Status. `savedErrno` is errno right after the call.
Status ioFailure(SSL* ssl, int rc, int savedErrno, const char* op) {
  int err = SSL_get_error(ssl, rc);
  std::string detail;
  switch (err) {
    case SSL_ERROR_ZERO_RETURN:
      return Status::unavailable(std::string(op) + ": peer closed the connection");
    case SSL_ERROR_SYSCALL:
      detail = sslErrors();
      if (detail.empty()) {
        detail = savedErrno != 0 ? errnoText(savedErrno) : "connection closed without close_notify";
      }
      break;
    default:
      detail = sslErrors();
      if (detail.empty()) detail = "TLS error " + std::to_string(err);
  }
  long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK) {
    detail += std::string(" (peer certificate: ") + X509_verify_cert_error_string(verify) + ")";
  }
  return Status::unavailable(std::string(op) + ": " + detail);
}

// One TLS connection over a non-blocking socket. Every wait goes through waitFor(), so any of
// them ends at once when the transport stops.
class TlsConnection {
 public:
  TlsConnection(Fd fd, SSL* ssl, bool client) : fd_(std::move(fd)), ssl_(ssl) {
    SSL_set_fd(ssl_, fd_.get());
    SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (client) {
      SSL_set_connect_state(ssl_);
    } else {
      SSL_set_accept_state(ssl_);
      // Sessions are never resumed (every dial is a full handshake), so tickets are waste.
      SSL_set_num_tickets(ssl_, 0);
    }
  }
  ~TlsConnection() { SSL_free(ssl_); }
  TlsConnection(const TlsConnection&) = delete;
  TlsConnection& operator=(const TlsConnection&) = delete;

  int fd() const { return fd_.get(); }
  SSL* ssl() const { return ssl_; }

  // A close_notify if the socket takes it right away; never waits.
  void closeQuietly() {
    ERR_clear_error();
    SSL_shutdown(ssl_);
    ERR_clear_error();
  }

  Status handshake(Clock::time_point deadline, const Interrupt& in,
                   const std::function<bool()>& cancelled) {
    for (;;) {
      ERR_clear_error();
      int rc = SSL_do_handshake(ssl_);
      if (rc == 1) return Status::ok();
      int savedErrno = errno;
      int err = SSL_get_error(ssl_, rc);
      short events;
      if (err == SSL_ERROR_WANT_READ) {
        events = POLLIN;
      } else if (err == SSL_ERROR_WANT_WRITE) {
        events = POLLOUT;
      } else {
        return ioFailure(ssl_, rc, savedErrno, "TLS handshake");
      }
      if (Status s = await(events, deadline, in, cancelled, "TLS handshake"); !s) return s;
    }
  }

  // Writes all of `data`; fails when the peer takes nothing for `stall`.
  Status writeAll(std::string_view data, std::chrono::milliseconds stall, const Interrupt& in,
                  const std::function<bool()>& cancelled) {
    Clock::time_point deadline = Clock::now() + stall;
    while (!data.empty()) {
      ERR_clear_error();
      int len = static_cast<int>(std::min<size_t>(data.size(), INT_MAX));
      int rc = SSL_write(ssl_, data.data(), len);
      if (rc > 0) {
        data.remove_prefix(static_cast<size_t>(rc));
        deadline = Clock::now() + stall;
        continue;
      }
      int savedErrno = errno;
      int err = SSL_get_error(ssl_, rc);
      short events;
      if (err == SSL_ERROR_WANT_WRITE) {
        events = POLLOUT;
      } else if (err == SSL_ERROR_WANT_READ) {
        events = POLLIN;
      } else {
        return ioFailure(ssl_, rc, savedErrno, "write");
      }
      if (Status s = await(events, deadline, in, cancelled, "write"); !s) return s;
    }
    return Status::ok();
  }

  // Appends what can be read now to `buf` (at most about kReadBurst). `*waitEvents` says what to
  // wait for before calling again: 0 when more may be readable at once.
  Status readAvailable(std::string& buf, size_t* got, short* waitEvents) {
    *got = 0;
    char chunk[kReadChunk];
    while (*got < kReadBurst) {
      ERR_clear_error();
      int rc = SSL_read(ssl_, chunk, sizeof chunk);
      if (rc > 0) {
        buf.append(chunk, static_cast<size_t>(rc));
        *got += static_cast<size_t>(rc);
        continue;
      }
      int savedErrno = errno;
      int err = SSL_get_error(ssl_, rc);
      if (err == SSL_ERROR_WANT_READ) {
        *waitEvents = POLLIN;
        return Status::ok();
      }
      if (err == SSL_ERROR_WANT_WRITE) {
        *waitEvents = POLLOUT;
        return Status::ok();
      }
      return ioFailure(ssl_, rc, savedErrno, "read");
    }
    *waitEvents = 0;
    return Status::ok();
  }

  // Waits for one whole frame (after the handshake: hello or ack) and returns its payload;
  // bytes after it stay in `buf`.
  Result<std::string> readFrame(std::string& buf, size_t maxFrame, Clock::time_point deadline,
                                const Interrupt& in, const std::function<bool()>& cancelled) {
    for (;;) {
      if (buf.size() >= kFrameHeader) {
        uint32_t len = getU32(buf, 0);
        if (len == 0 || len > maxFrame) {
          return Status::invalidArgument("frame of " + std::to_string(len) + " bytes");
        }
        if (buf.size() - kFrameHeader >= len) {
          std::string payload = buf.substr(kFrameHeader, len);
          buf.erase(0, kFrameHeader + len);
          return payload;
        }
      }
      size_t got = 0;
      short events = 0;
      if (Status s = readAvailable(buf, &got, &events); !s) return s;
      if (got > 0 || events == 0) continue;
      if (Status s = await(events, deadline, in, cancelled, "read"); !s) return s;
    }
  }

  Status await(short events, Clock::time_point deadline, const Interrupt& in,
               const std::function<bool()>& cancelled, const char* op) {
    switch (waitFor(fd(), events, deadline, in)) {
      case Wait::kReady:
        return Status::ok();
      case Wait::kTimeout:
        return Status::timeout(std::string(op) + ": timed out");
      case Wait::kStopped:
        return Status::cancelled("transport stopping");
      case Wait::kWoken:
        if (cancelled && cancelled()) return Status::cancelled("peer removed or readdressed");
        return Status::ok();
    }
    return Status::internal("unreachable");
  }

 private:
  Fd fd_;
  SSL* ssl_;
};

// A rough size of a message's encoding, to bound a batch before encoding it.
size_t approximateSize(const Message& m) {
  size_t n = 128 + m.snapshot.data.size();
  for (const Entry& e : m.entries) n += 32 + e.data.size();
  return n;
}

std::string describeAddress(const sockaddr_storage& ss, socklen_t len) {
  try {
    return Poco::Net::SocketAddress(reinterpret_cast<const sockaddr*>(&ss),
                                    static_cast<poco_socklen_t>(len))
        .toString();
  } catch (const Poco::Exception&) {
    return "?";
  }
}

Result<Poco::Net::Context::Ptr> makeContext(Poco::Net::Context::Usage usage,
                                            const TcpTransport::Options& o) {
  Poco::Net::Context::Params params;
  params.privateKeyFile = o.keyFile;
  params.certificateFile = o.certFile;
  params.caLocation = o.caFile;
  params.verificationMode = Poco::Net::Context::VERIFY_STRICT;
  params.loadDefaultCAs = false;
  try {
    Poco::Net::Context::Ptr context = new Poco::Net::Context(usage, params);
    // Every member runs this code: no older protocol to stay compatible with.
    context->requireMinimumProtocol(Poco::Net::Context::PROTO_TLSV1_3);
    // Poco's extended check compares the certificate with the peer's host name; peers are
    // named by Raft id instead (requirePeerIdInCN), checked after the handshake.
    context->enableExtendedCertificateVerification(false);
    if (SSL_CTX_check_private_key(context->sslContext()) != 1) {
      return Status::invalidArgument("TLS: key " + o.keyFile + " does not match certificate " +
                                     o.certFile + ": " + sslErrors());
    }
    return context;
  } catch (const Poco::Exception& e) {
    ERR_clear_error();
    return Status::invalidArgument("TLS: " + e.displayText() + " (ca " + o.caFile + ", cert " +
                                   o.certFile + ", key " + o.keyFile + ")");
  }
}

}  // namespace

class TcpTransport::Impl {
 public:
  explicit Impl(Options options) : options_(std::move(options)) {}
  ~Impl() { stop(); }

  void setHandler(Handler handler) {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != State::kNew) {
      log::error(kModule, "setHandler after start ignored");
      return;
    }
    handler_ = std::move(handler);
  }

  Status start();
  void stop();
  void addPeer(NodeId id, const std::string& address);
  void removePeer(NodeId id);
  void send(Message message);

  int port() const { return port_.load(); }
  uint64_t dropped() const { return dropped_.load(); }

  size_t queued(NodeId id) const {
    std::shared_ptr<Peer> peer = findPeer(id);
    if (!peer) return 0;
    std::lock_guard<std::mutex> lock(peer->mu);
    return peer->queue.size();
  }

  bool connected(NodeId id) const {
    std::shared_ptr<Peer> peer = findPeer(id);
    return peer && peer->connected.load();
  }

 private:
  struct Peer {
    Peer(NodeId i, std::string a) : id(i), wake(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
      address = std::move(a);
    }
    void signal() { signalEventFd(wake.get()); }

    const NodeId id;
    const Fd wake;  // eventfd; invalid if it could not be made (then idle waits poll)
    std::mutex mu;
    std::string address;        // guarded by mu
    uint64_t generation = 0;    // guarded by mu; bumped when the address changes
    std::deque<Message> queue;  // guarded by mu
    bool exit = false;          // guarded by mu
    std::atomic<bool> connected{false};
    std::thread thread;  // guarded by the transport's mu_
  };

  struct Inbound {
    Fd socket;  // handed over to the reader thread
    std::string remote;
    int liveFd = -1;           // guarded by mu_: the socket while it is open, for shutdown()
    NodeId peer = kNone;       // guarded by mu_: whom it speaks for, once the hello is accepted
    bool established = false;  // the reader's own: the ack was sent
    std::thread thread;        // guarded by mu_
    std::atomic<bool> done{false};
  };

  enum class State { kNew, kRunning, kStopped };

  std::shared_ptr<Peer> findPeer(NodeId id) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(id);
    return it == peers_.end() ? nullptr : it->second;
  }

  Status listen();
  void startSender(const std::shared_ptr<Peer>& peer);  // requires mu_
  void acceptLoop();
  void reapInbound();  // requires mu_
  void readerLoop(Inbound& in);
  Status serve(Inbound& in, TlsConnection& conn);
  void deliver(Inbound& in, NodeId from, Message m);
  void senderLoop(const std::shared_ptr<Peer>& peer);
  Result<std::unique_ptr<TlsConnection>> dial(Peer& peer, const std::string& address,
                                              const Interrupt& in,
                                              const std::function<bool()>& cancelled);
  Status pump(Peer& peer, TlsConnection& conn, uint64_t generation, const Interrupt& in,
              const std::function<bool()>& cancelled);

  const Options options_;
  // Set by start() before any thread starts; read-only afterwards.
  Poco::Net::Context::Ptr clientContext_;
  Poco::Net::Context::Ptr serverContext_;
  Fd listenFd_;
  Fd stopFd_;  // eventfd, signalled once by stop() and never drained
  Handler handler_;

  std::atomic<int> port_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<bool> stopping_{false};

  mutable std::mutex mu_;
  State state_ = State::kNew;                      // guarded by mu_
  std::map<NodeId, std::shared_ptr<Peer>> peers_;  // guarded by mu_
  std::list<std::unique_ptr<Inbound>> inbound_;    // guarded by mu_
  std::thread acceptThread_;                       // guarded by mu_
};

Status TcpTransport::Impl::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_ != State::kNew) return Status::failedPrecondition("transport already started");
  if (options_.self == kNone) return Status::invalidArgument("transport: self id is 0");
  if (!handler_) return Status::failedPrecondition("transport: no handler set");
  if (options_.caFile.empty() || options_.certFile.empty() || options_.keyFile.empty()) {
    return Status::invalidArgument("transport: caFile, certFile and keyFile are all required");
  }
  if (options_.maxFrameBytes == 0 || options_.maxFrameBytes >= kMoreFragments) {
    return Status::invalidArgument("transport: maxFrameBytes must be in [1, 2 GiB)");
  }
  if (options_.maxMessageBytes < options_.maxFrameBytes) {
    return Status::invalidArgument("transport: maxMessageBytes must be at least maxFrameBytes");
  }
  Result<Poco::Net::Context::Ptr> client =
      makeContext(Poco::Net::Context::TLS_CLIENT_USE, options_);
  if (!client) return client.status();
  Result<Poco::Net::Context::Ptr> server =
      makeContext(Poco::Net::Context::TLS_SERVER_USE, options_);
  if (!server) return server.status();
  clientContext_ = *client;
  serverContext_ = *server;
  stopFd_ = Fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!stopFd_.valid()) return Status::resourceExhausted("eventfd: " + errnoText(errno));
  if (Status s = listen(); !s) return s;

  state_ = State::kRunning;
  acceptThread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "raft-accept");
    blockSigpipe();
    acceptLoop();
  });
  for (auto& [id, peer] : peers_) startSender(peer);
  log::info(kModule, "listening",
            {{"self", std::to_string(options_.self)}, {"port", std::to_string(port_.load())}});
  return Status::ok();
}

Status TcpTransport::Impl::listen() {
  Poco::Net::SocketAddress address;
  try {
    address = Poco::Net::SocketAddress(options_.listenAddress);
  } catch (const Poco::Exception& e) {
    return Status::invalidArgument("transport: listen address \"" + options_.listenAddress +
                                   "\": " + e.displayText());
  }
  Fd fd(::socket(address.af(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::unavailable("socket: " + errnoText(errno));
  // A restarted member binds its old port while connections of its previous life linger.
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), address.addr(), address.length()) != 0) {
    return Status::unavailable("transport: cannot bind " + options_.listenAddress + ": " +
                               errnoText(errno));
  }
  if (::listen(fd.get(), 128) != 0) {
    return Status::unavailable("transport: listen on " + options_.listenAddress + ": " +
                               errnoText(errno));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound), &len) != 0) {
    return Status::unavailable("getsockname: " + errnoText(errno));
  }
  port_ = Poco::Net::SocketAddress(reinterpret_cast<const sockaddr*>(&bound),
                                   static_cast<poco_socklen_t>(len))
              .port();
  listenFd_ = std::move(fd);
  return Status::ok();
}

void TcpTransport::Impl::stop() {
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == State::kStopped) return;
    bool running = state_ == State::kRunning;
    state_ = State::kStopped;
    stopping_ = true;
    if (running) signalEventFd(stopFd_.get());
    if (acceptThread_.joinable()) threads.push_back(std::move(acceptThread_));
    for (auto& [id, peer] : peers_) {
      {
        std::lock_guard<std::mutex> peerLock(peer->mu);
        peer->exit = true;
        peer->queue.clear();
      }
      if (peer->thread.joinable()) threads.push_back(std::move(peer->thread));
    }
    for (auto& in : inbound_) {
      if (in->thread.joinable()) threads.push_back(std::move(in->thread));
    }
  }
  for (std::thread& t : threads) t.join();
  std::lock_guard<std::mutex> lock(mu_);
  inbound_.clear();
  peers_.clear();
  listenFd_.reset();
}

void TcpTransport::Impl::addPeer(NodeId id, const std::string& address) {
  if (id == kNone || id == options_.self) return;
  std::shared_ptr<Peer> peer;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == State::kStopped) return;
    auto it = peers_.find(id);
    if (it == peers_.end()) {
      peer = std::make_shared<Peer>(id, address);
      if (!peer->wake.valid()) {
        log::warn(kModule, "no eventfd for peer; it will be polled",
                  {{"peer", std::to_string(id)}, {"error", errnoText(errno)}});
      }
      peers_.emplace(id, peer);
      if (state_ == State::kRunning) startSender(peer);
      return;
    }
    peer = it->second;
  }
  {
    std::lock_guard<std::mutex> lock(peer->mu);
    if (peer->address == address) return;
    peer->address = address;
    ++peer->generation;
  }
  peer->signal();
}

void TcpTransport::Impl::removePeer(NodeId id) {
  std::shared_ptr<Peer> peer;
  std::thread thread;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(id);
    if (it == peers_.end()) return;
    peer = it->second;
    peers_.erase(it);
    thread = std::move(peer->thread);
  }
  {
    std::lock_guard<std::mutex> lock(peer->mu);
    peer->exit = true;
    peer->queue.clear();
  }
  peer->signal();
  if (thread.joinable()) thread.join();
}

void TcpTransport::Impl::send(Message message) {
  std::shared_ptr<Peer> peer = findPeer(message.to);
  if (!peer) {
    ++dropped_;
    return;
  }
  bool wasEmpty;
  {
    std::lock_guard<std::mutex> lock(peer->mu);
    if (peer->exit || peer->queue.size() >= options_.maxQueuePerPeer) {
      ++dropped_;
      return;
    }
    wasEmpty = peer->queue.empty();
    peer->queue.push_back(std::move(message));
  }
  // The sender drains the whole queue before it waits again, so only the first message after
  // it went idle needs to wake it.
  if (wasEmpty) peer->signal();
}

void TcpTransport::Impl::startSender(const std::shared_ptr<Peer>& peer) {
  peer->thread = std::thread([this, peer] {
    pthread_setname_np(pthread_self(), ("raft-send-" + std::to_string(peer->id)).c_str());
    blockSigpipe();
    senderLoop(peer);
  });
}

// ---- inbound ----------------------------------------------------------------------------

void TcpTransport::Impl::acceptLoop() {
  for (;;) {
    pollfd fds[2] = {{listenFd_.get(), POLLIN, 0}, {stopFd_.get(), POLLIN, 0}};
    // The timeout only bounds how long finished reader threads wait to be joined.
    int n = ::poll(fds, 2, 1000);
    if (n < 0 && errno != EINTR) {
      log::error(kModule, "poll on the listening socket failed", {{"error", errnoText(errno)}});
      return;
    }
    if (fds[1].revents != 0) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      reapInbound();
    }
    if ((fds[0].revents & POLLIN) == 0) continue;
    sockaddr_storage remote{};
    socklen_t len = sizeof remote;
    int fd = ::accept4(listenFd_.get(), reinterpret_cast<sockaddr*>(&remote), &len,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == EAGAIN || err == EINTR || err == ECONNABORTED) continue;
      log::warn(kModule, "accept failed", {{"error", errnoText(err)}});
      // Out of descriptors or memory: the pending connection stays pending, so pause instead
      // of spinning on it.
      if (waitFor(-1, 0, Clock::now() + std::chrono::milliseconds(100),
                  Interrupt{stopFd_.get(), -1}) == Wait::kStopped) {
        return;
      }
      continue;
    }
    Fd socket(fd);
    tuneSocket(fd, options_.writeStallTimeout);
    std::string from = describeAddress(remote, len);
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != State::kRunning) return;
    if (inbound_.size() >= options_.maxInboundConnections) {
      log::warn(kModule, "too many inbound connections; refusing one",
                {{"remote", from}, {"limit", std::to_string(options_.maxInboundConnections)}});
      continue;
    }
    auto in = std::make_unique<Inbound>();
    in->liveFd = fd;
    in->socket = std::move(socket);
    in->remote = std::move(from);
    Inbound* raw = in.get();
    inbound_.push_back(std::move(in));
    raw->thread = std::thread([this, raw] {
      pthread_setname_np(pthread_self(), "raft-recv");
      blockSigpipe();
      readerLoop(*raw);
    });
  }
}

void TcpTransport::Impl::reapInbound() {
  for (auto it = inbound_.begin(); it != inbound_.end();) {
    if ((*it)->done.load() && (*it)->thread.joinable()) {
      (*it)->thread.join();
      it = inbound_.erase(it);
    } else {
      ++it;
    }
  }
}

void TcpTransport::Impl::readerLoop(Inbound& in) {
  Status status;
  {
    SSL* ssl = SSL_new(serverContext_->sslContext());
    if (ssl == nullptr) {
      status = Status::internal("SSL_new: " + sslErrors());
      std::lock_guard<std::mutex> lock(mu_);
      in.liveFd = -1;
      in.socket.reset();
    } else {
      TlsConnection conn(std::move(in.socket), ssl, /*client=*/false);
      status = serve(in, conn);
      conn.closeQuietly();
      // The socket closes with `conn`; after this nobody may shutdown() its number.
      std::lock_guard<std::mutex> lock(mu_);
      in.liveFd = -1;
      in.peer = kNone;
    }
  }
  // A refused handshake, certificate or hello is worth a warning; an established connection
  // that the peer closed or reset is routine (the peer restarted or redialled).
  if (!in.established) {
    log::warn(kModule, "inbound connection refused",
              {{"remote", in.remote}, {"reason", status.toString()}});
  } else if (status.code() != Status::Code::kCancelled) {
    log::write(status.code() == Status::Code::kUnavailable ? log::Level::kInfo : log::Level::kWarn,
               kModule, "inbound connection closed",
               {{"remote", in.remote}, {"reason", status.toString()}});
  }
  in.done = true;
}

Status TcpTransport::Impl::serve(Inbound& in, TlsConnection& conn) {
  const Interrupt interrupt{stopFd_.get(), -1};
  const Clock::time_point deadline = Clock::now() + options_.handshakeTimeout;
  if (Status s = conn.handshake(deadline, interrupt, nullptr); !s) return s;

  std::string buf;
  Result<std::string> hello = conn.readFrame(buf, kHelloBytes, deadline, interrupt, nullptr);
  if (!hello) return hello.status().withContext("hello");
  if (Status s = checkPreamble(*hello, kHelloBytes, "hello"); !s) return s;
  NodeId from = getU64(*hello, 5);
  NodeId to = getU64(*hello, 13);
  if (to != options_.self) {
    return Status::invalidArgument("peer dialled node " + std::to_string(to) + ", this is node " +
                                   std::to_string(options_.self));
  }
  if (from == kNone || from == options_.self) {
    return Status::invalidArgument("peer announced itself as node " + std::to_string(from));
  }
  if (options_.requirePeerIdInCN) {
    if (Status s = checkPeerCommonName(conn.ssl(), from); !s) {
      return s.withContext("node " + std::to_string(from));
    }
  }
  if (Status s = runPeerCheck(options_, conn.ssl(), from); !s) {
    return s.withContext("node " + std::to_string(from));
  }
  {
    // The peer dialled again, so an older connection from it is dead or dying: close it, or
    // its unread tail could arrive after newer messages.
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& other : inbound_) {
      if (other.get() != &in && other->peer == from && other->liveFd >= 0) {
        ::shutdown(other->liveFd, SHUT_RDWR);
        other->peer = kNone;
      }
    }
    in.peer = from;
  }
  if (Status s =
          conn.writeAll(ackFrame(options_.self), options_.writeStallTimeout, interrupt, nullptr);
      !s) {
    return s;
  }
  in.established = true;
  log::debug(kModule, "inbound connection accepted",
             {{"remote", in.remote}, {"peer", std::to_string(from)}});

  std::string pieces;  // the fragments of a message so far
  for (;;) {
    size_t used = 0;
    while (buf.size() - used >= kFrameHeader) {
      const uint32_t word = getU32(buf, used);
      const bool more = (word & kMoreFragments) != 0;
      const uint32_t len = word & ~kMoreFragments;
      if (len == 0 || len > options_.maxFrameBytes) {
        return Status::invalidArgument("protocol error: frame of " + std::to_string(len) +
                                       " bytes (limit " + std::to_string(options_.maxFrameBytes) +
                                       ") from node " + std::to_string(from));
      }
      if (buf.size() - used - kFrameHeader < len) break;
      std::string_view frame = std::string_view(buf).substr(used + kFrameHeader, len);
      used += kFrameHeader + len;
      if (more || !pieces.empty()) {
        if (pieces.size() + len > options_.maxMessageBytes) {
          return Status::invalidArgument("protocol error: a message of more than " +
                                         std::to_string(options_.maxMessageBytes) +
                                         " bytes from node " + std::to_string(from));
        }
        pieces.append(frame);
        if (more) continue;
        frame = pieces;
      }
      Result<Message> m = decodeMessage(frame);
      if (!m) {
        return m.status().withContext("corrupt frame from node " + std::to_string(from));
      }
      if (!pieces.empty()) std::string().swap(pieces);
      deliver(in, from, std::move(m).value());
    }
    buf.erase(0, used);
    // Give back the room a snapshot needed instead of keeping it for the connection's life.
    if (buf.empty() && buf.capacity() > kKeepBuffer) std::string().swap(buf);
    size_t got = 0;
    short events = 0;
    if (Status s = conn.readAvailable(buf, &got, &events); !s) return s;
    if (got > 0 || events == 0) continue;
    if (Status s = conn.await(events, kNever, interrupt, nullptr, "read"); !s) return s;
  }
}

void TcpTransport::Impl::deliver(Inbound& in, NodeId from, Message m) {
  if (m.to != options_.self || m.from != from) {
    log::debug(kModule, "dropping a misaddressed message",
               {{"remote", in.remote},
                {"connection_peer", std::to_string(from)},
                {"from", std::to_string(m.from)},
                {"to", std::to_string(m.to)},
                {"type", messageTypeName(m.type)}});
    return;
  }
  handler_(std::move(m));
}

// ---- outbound ---------------------------------------------------------------------------

void TcpTransport::Impl::senderLoop(const std::shared_ptr<Peer>& peer) {
  const Interrupt interrupt{stopFd_.get(), peer->wake.get()};
  std::chrono::milliseconds backoff = options_.backoffInitial;
  std::string lastError;
  for (;;) {
    std::string address;
    uint64_t generation;
    {
      std::lock_guard<std::mutex> lock(peer->mu);
      if (peer->exit) return;
      address = peer->address;
      generation = peer->generation;
    }
    if (stopping_) return;
    auto cancelled = [&peer, generation] {
      std::lock_guard<std::mutex> lock(peer->mu);
      return peer->exit || peer->generation != generation;
    };

    Result<std::unique_ptr<TlsConnection>> conn = dial(*peer, address, interrupt, cancelled);
    if (conn) {
      backoff = options_.backoffInitial;
      lastError.clear();
      peer->connected = true;
      log::info(kModule, "connected", {{"peer", std::to_string(peer->id)}, {"address", address}});
      Status status = pump(*peer, **conn, generation, interrupt, cancelled);
      peer->connected = false;
      (*conn)->closeQuietly();
      conn = Status::cancelled("closed");
      if (stopping_ || status.code() == Status::Code::kCancelled || cancelled()) continue;
      // A peer that closed or reset the connection has usually just restarted.
      log::write(
          status.code() == Status::Code::kUnavailable ? log::Level::kInfo : log::Level::kWarn,
          kModule, "connection to peer lost",
          {{"peer", std::to_string(peer->id)}, {"address", address}, {"error", status.toString()}});
    } else {
      Status status = conn.status();
      if (stopping_ || status.code() == Status::Code::kCancelled || cancelled()) continue;
      // Say it once at warn level; the same failure again, every backoff, only at debug.
      log::write(status.toString() == lastError ? log::Level::kDebug : log::Level::kWarn, kModule,
                 "cannot connect to peer",
                 {{"peer", std::to_string(peer->id)},
                  {"address", address},
                  {"error", status.toString()},
                  {"retry_ms", std::to_string(backoff.count())}});
      lastError = status.toString();
    }
    Clock::time_point until = Clock::now() + backoff;
    backoff = std::min(backoff * 2, options_.backoffMax);
    for (;;) {
      Wait w = waitFor(-1, 0, until, interrupt);
      if (w == Wait::kTimeout || w == Wait::kStopped || cancelled()) break;
    }
  }
}

Result<std::unique_ptr<TlsConnection>> TcpTransport::Impl::dial(
    Peer& peer, const std::string& address, const Interrupt& in,
    const std::function<bool()>& cancelled) {
  const Clock::time_point deadline = Clock::now() + options_.handshakeTimeout;
  Poco::Net::SocketAddress target;
  try {
    target = Poco::Net::SocketAddress(address);
  } catch (const Poco::Exception& e) {
    return Status::invalidArgument("bad peer address \"" + address + "\": " + e.displayText());
  }
  Fd fd(::socket(target.af(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::unavailable("socket: " + errnoText(errno));
  tuneSocket(fd.get(), options_.writeStallTimeout);
  if (::connect(fd.get(), target.addr(), target.length()) != 0) {
    if (errno != EINPROGRESS) return Status::unavailable("connect: " + errnoText(errno));
    for (;;) {
      Wait w = waitFor(fd.get(), POLLOUT, deadline, in);
      if (w == Wait::kReady) break;
      if (w == Wait::kTimeout) return Status::timeout("connect: timed out");
      if (w == Wait::kStopped || cancelled()) return Status::cancelled("dial abandoned");
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return Status::unavailable("connect: " + errnoText(err));
  }

  SSL* ssl = SSL_new(clientContext_->sslContext());
  if (ssl == nullptr) return Status::internal("SSL_new: " + sslErrors());
  auto conn = std::make_unique<TlsConnection>(std::move(fd), ssl, /*client=*/true);
  if (Status s = conn->handshake(deadline, in, cancelled); !s) return s;
  if (options_.requirePeerIdInCN) {
    if (Status s = checkPeerCommonName(conn->ssl(), peer.id); !s) return s;
  }
  if (Status s = runPeerCheck(options_, conn->ssl(), peer.id); !s) return s;
  if (Status s = conn->writeAll(helloFrame(options_.self, peer.id), options_.writeStallTimeout, in,
                                cancelled);
      !s) {
    return s;
  }
  // The ack says the acceptor checked our certificate and hello; with TLS 1.3 a refused client
  // certificate only shows up here, after the handshake completed on our side.
  std::string buf;
  Result<std::string> ack = conn->readFrame(buf, kAckBytes, deadline, in, cancelled);
  if (!ack) return ack.status().withContext("waiting for the peer's ack");
  if (Status s = checkPreamble(*ack, kAckBytes, "ack"); !s) return s;
  NodeId answered = getU64(*ack, 5);
  if (answered != peer.id) {
    return Status::failedPrecondition(address + " answered as node " + std::to_string(answered) +
                                      ", expected node " + std::to_string(peer.id));
  }
  if (!buf.empty()) return Status::invalidArgument("protocol error: data after the ack");
  return conn;
}

Status TcpTransport::Impl::pump(Peer& peer, TlsConnection& conn, uint64_t generation,
                                const Interrupt& in, const std::function<bool()>& cancelled) {
  std::vector<Message> batch;
  std::string out;
  std::string unexpected;
  for (;;) {
    batch.clear();
    {
      std::lock_guard<std::mutex> lock(peer.mu);
      if (peer.exit) return Status::cancelled("peer removed");
      if (peer.generation != generation) return Status::cancelled("peer readdressed");
      size_t bytes = 0;
      while (!peer.queue.empty() && batch.size() < kBatchMessages && bytes < kBatchBytes) {
        bytes += approximateSize(peer.queue.front());
        batch.push_back(std::move(peer.queue.front()));
        peer.queue.pop_front();
      }
    }
    if (batch.empty()) {
      // Idle: wait for messages, and watch the socket so a peer that closed (restarted) is
      // noticed now rather than by losing the next write. Without an eventfd, poll.
      Clock::time_point until =
          peer.wake.valid() ? kNever : Clock::now() + std::chrono::milliseconds(20);
      Wait w = waitFor(conn.fd(), POLLIN, until, in);
      if (w == Wait::kStopped) return Status::cancelled("transport stopping");
      if (w != Wait::kReady) continue;
      size_t got = 0;
      short events = 0;
      if (Status s = conn.readAvailable(unexpected, &got, &events); !s) return s;
      if (got > 0) return Status::invalidArgument("protocol error: data from the acceptor");
      continue;
    }

    if (out.capacity() > kKeepBuffer) std::string().swap(out);
    out.clear();
    for (const Message& m : batch) {
      std::string payload = encodeMessage(m);
      if (payload.size() > options_.maxMessageBytes) {
        ++dropped_;
        log::error(kModule, "message too large to send; dropped",
                   {{"peer", std::to_string(peer.id)},
                    {"type", messageTypeName(m.type)},
                    {"bytes", std::to_string(payload.size())},
                    {"limit", std::to_string(options_.maxMessageBytes)}});
        continue;
      }
      // Larger than a frame: fragments, every one but the last flagged.
      std::string_view rest = payload;
      while (rest.size() > options_.maxFrameBytes) {
        putU32(out, static_cast<uint32_t>(options_.maxFrameBytes) | kMoreFragments);
        out.append(rest.substr(0, options_.maxFrameBytes));
        rest.remove_prefix(options_.maxFrameBytes);
      }
      appendFrame(out, rest);
    }
    if (Status s = conn.writeAll(out, options_.writeStallTimeout, in, cancelled); !s) {
      return s.withContext("sending " + std::to_string(batch.size()) + " messages (lost)");
    }
  }
}

// ---- TcpTransport ----------------------------------------------------------------------

TcpTransport::TcpTransport(Options options) : impl_(std::make_unique<Impl>(std::move(options))) {}
TcpTransport::~TcpTransport() = default;

void TcpTransport::setHandler(Handler handler) { impl_->setHandler(std::move(handler)); }
Status TcpTransport::start() { return impl_->start(); }
void TcpTransport::stop() { impl_->stop(); }
void TcpTransport::addPeer(NodeId id, const std::string& address) { impl_->addPeer(id, address); }
void TcpTransport::removePeer(NodeId id) { impl_->removePeer(id); }
void TcpTransport::send(Message message) { impl_->send(std::move(message)); }
int TcpTransport::port() const { return impl_->port(); }
uint64_t TcpTransport::dropped() const { return impl_->dropped(); }
size_t TcpTransport::queued(NodeId peer) const { return impl_->queued(peer); }
bool TcpTransport::connected(NodeId peer) const { return impl_->connected(peer); }

}  // namespace shoal::raft
