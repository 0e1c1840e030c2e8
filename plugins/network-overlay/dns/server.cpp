#include "dns/server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>

#include "dns/message.hpp"
#include "dns/resolv_conf.hpp"

namespace shoal::overlay::dns {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kListenAddress[] = "127.0.0.11";
constexpr uint16_t kListenPort = 53;
constexpr uint64_t kWakeToken = 0;
constexpr size_t kMaxForwards = 256;       // concurrent forwards (each holds one socket)
constexpr int kMaxConnsPerSandbox = 32;    // TCP connections per task
constexpr size_t kMaxTcpOutput = 1 << 20;  // a client that does not read is cut off
constexpr int kMaxEvents = 64;
constexpr int kMaxDatagramsPerEvent = 32;  // fairness between sandboxes
constexpr auto kResolvConfCheckInterval = std::chrono::seconds(1);

std::string errnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

void closeFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// Where an answer goes: a UDP listener (by token) and the asker's address, or a TCP connection.
struct Target {
  bool tcp = false;
  uint64_t token = 0;
  sockaddr_in peer{};
  size_t limit = kClassicUdpSize;
};

struct Sandbox {
  std::vector<std::string> networks;
  int udpFd = -1;
  int tcpFd = -1;
  uint64_t udpToken = 0;  // 0 until registered with epoll
  uint64_t tcpToken = 0;
  int conns = 0;
};

struct Listener {
  std::string taskId;
  bool tcp = false;
  int fd = -1;
};

struct TcpConn {
  int fd = -1;
  std::string taskId;
  std::vector<uint8_t> in;
  std::vector<uint8_t> out;
  size_t outPos = 0;
  int pending = 0;  // forwards whose answers are still to come
  bool readClosed = false;
  uint32_t interest = 0;
  Clock::time_point idleDeadline;
};

struct Forward {
  int fd = -1;
  Target to;
  Query query;
  std::vector<uint8_t> packet;  // the asker's query, re-sent verbatim but for the id
  std::string normalizedName;
  std::vector<Upstream> upstreams;
  size_t next = 0;
  uint16_t upstreamId = 0;
  Clock::time_point deadline;
};

struct Sockets {
  int udp = -1;
  int tcp = -1;
};

// Runs on a thread of its own: entering a namespace changes only the calling thread, and that
// thread ends here, so no other code ever runs in the task's namespace. The sockets keep the
// namespace they were made in.
Status openInNamespace(const std::string& path, Sockets* out) {
  const int ns = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (ns < 0) {
    return Status::error("dns: cannot enter network namespace " + path + ": " + errnoText(errno));
  }
  if (::setns(ns, CLONE_NEWNET) != 0) {
    const int err = errno;
    ::close(ns);
    return Status::error("dns: cannot enter network namespace " + path + ": " + errnoText(err));
  }
  ::close(ns);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(kListenPort);
  inet_pton(AF_INET, kListenAddress, &addr.sin_addr);
  const int one = 1;
  Sockets s;
  for (int type : {SOCK_DGRAM, SOCK_STREAM}) {
    const char* proto = type == SOCK_DGRAM ? "udp" : "tcp";
    const int fd = ::socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0;
    // FREEBIND: the bind works before the namespace's `lo` is up. REUSEADDR (TCP): connections
    // left in TIME_WAIT by a removed sandbox do not block the next bind.
    ok = ok && ::setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one) == 0;
    ok = ok &&
         (type == SOCK_DGRAM || ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
    ok = ok && ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
    ok = ok && (type == SOCK_DGRAM || ::listen(fd, SOMAXCONN) == 0);
    if (!ok) {
      const int err = errno;
      if (fd >= 0) ::close(fd);
      if (s.udp >= 0) ::close(s.udp);
      return Status::error(std::string("dns: cannot bind ") + kListenAddress + ":53/" + proto +
                           " in " + path + ": " + errnoText(err));
    }
    (type == SOCK_DGRAM ? s.udp : s.tcp) = fd;
  }
  *out = s;
  return Status::ok();
}

}  // namespace

struct Server::Impl {
  explicit Impl(ServerOptions o) : opts(std::move(o)), rng(std::random_device{}()) {
    homeNs = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  }

  ~Impl() { closeFd(homeNs); }

  // --- called with mu held -------------------------------------------------------------------

  void warn(const std::string& message) {
    if (opts.log) opts.log(message);
  }

  uint64_t registerFd(int fd, uint32_t events) {
    const uint64_t token = nextToken++;
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = token;
    if (::epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      warn("dns: epoll_ctl: " + errnoText(errno));
      return 0;
    }
    return token;
  }

  void unregisterFd(int fd) {
    if (epfd >= 0 && fd >= 0) ::epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nullptr);
  }

  void registerSandbox(const std::string& taskId, Sandbox& sb) {
    sb.udpToken = registerFd(sb.udpFd, EPOLLIN);
    if (sb.udpToken) listeners[sb.udpToken] = Listener{taskId, false, sb.udpFd};
    sb.tcpToken = registerFd(sb.tcpFd, EPOLLIN);
    if (sb.tcpToken) listeners[sb.tcpToken] = Listener{taskId, true, sb.tcpFd};
  }

  void closeSandbox(Sandbox& sb) {
    unregisterFd(sb.udpFd);
    unregisterFd(sb.tcpFd);
    listeners.erase(sb.udpToken);
    listeners.erase(sb.tcpToken);
    closeFd(sb.udpFd);
    closeFd(sb.tcpFd);
  }

  void closeConn(uint64_t token) {
    auto it = conns.find(token);
    if (it == conns.end()) return;
    auto sb = sandboxes.find(it->second->taskId);
    if (sb != sandboxes.end()) --sb->second.conns;
    unregisterFd(it->second->fd);
    closeFd(it->second->fd);
    conns.erase(it);
  }

  void closeAll() {
    for (auto& [token, conn] : conns) closeFd(conn->fd);
    conns.clear();
    for (auto& [token, f] : forwards) closeFd(f->fd);
    forwards.clear();
    for (auto& [taskId, sb] : sandboxes) closeSandbox(sb);
    sandboxes.clear();
    listeners.clear();
    closeFd(epfd);
    closeFd(wakeFd);
  }

  void refreshUpstreams() {
    const Clock::time_point now = Clock::now();
    if (opts.upstreams) {
      if (upstreamsLoaded) return;
      upstreamsLoaded = true;
      upstreamList.clear();
      for (const std::string& spec : *opts.upstreams) {
        Upstream u;
        if (parseUpstream(spec, 53, &u)) {
          upstreamList.push_back(u);
        } else {
          warn("dns: ignoring upstream \"" + spec + "\": not ADDR[:PORT]");
        }
      }
      return;
    }
    if (upstreamsLoaded && now - lastResolvCheck < kResolvConfCheckInterval) return;
    lastResolvCheck = now;
    struct stat st {};
    const bool exists = ::stat(opts.resolvConfPath.c_str(), &st) == 0;
    const bool same = exists && upstreamsLoaded && resolvStatOk && st.st_ino == resolvStat.st_ino &&
                      st.st_dev == resolvStat.st_dev && st.st_size == resolvStat.st_size &&
                      st.st_mtim.tv_sec == resolvStat.st_mtim.tv_sec &&
                      st.st_mtim.tv_nsec == resolvStat.st_mtim.tv_nsec;
    if (same) return;
    const bool hadFile = resolvStatOk || !upstreamsLoaded;
    upstreamsLoaded = true;
    resolvStatOk = exists;
    resolvStat = st;
    ResolvConf conf;
    Status read = readResolvConf(opts.resolvConfPath, &conf);
    if (!read) {
      upstreamList.clear();
      if (hadFile) warn(read.message() + "; forwarded names get SERVFAIL");
      return;
    }
    upstreamList = conf.upstreams;
    for (const std::string& skipped : conf.skipped) {
      warn("dns: " + opts.resolvConfPath + ": skipping nameserver " + skipped +
           " (loopback or not numeric)");
    }
    if (upstreamList.empty()) {
      warn("dns: " + opts.resolvConfPath +
           " names no usable nameserver; forwarded names get SERVFAIL");
    }
  }

  // --- the loop thread, with mu held --------------------------------------------------------

  void reply(const Target& to, const std::vector<uint8_t>& message) {
    if (message.empty()) return;
    if (!to.tcp) {
      auto it = listeners.find(to.token);
      if (it == listeners.end()) return;  // the sandbox went away
      ::sendto(it->second.fd, message.data(), message.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
               reinterpret_cast<const sockaddr*>(&to.peer), sizeof to.peer);
      return;
    }
    auto it = conns.find(to.token);
    if (it == conns.end()) return;
    TcpConn& c = *it->second;
    const size_t len = std::min(message.size(), kMaxTcpSize);
    c.out.push_back(static_cast<uint8_t>(len >> 8));
    c.out.push_back(static_cast<uint8_t>(len & 0xFF));
    c.out.insert(c.out.end(), message.begin(), message.begin() + static_cast<ptrdiff_t>(len));
    flush(to.token);
  }

  // Writes what it can of a connection's output; may close the connection.
  void flush(uint64_t token) {
    auto it = conns.find(token);
    if (it == conns.end()) return;
    TcpConn& c = *it->second;
    while (c.outPos < c.out.size()) {
      const ssize_t n = ::send(c.fd, c.out.data() + c.outPos, c.out.size() - c.outPos,
                               MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        closeConn(token);
        return;
      }
      c.outPos += static_cast<size_t>(n);
    }
    if (c.outPos == c.out.size()) {
      c.out.clear();
      c.outPos = 0;
    } else if (c.out.size() - c.outPos > kMaxTcpOutput) {
      closeConn(token);
      return;
    }
    if (c.readClosed && c.out.empty() && c.pending == 0) {
      closeConn(token);
      return;
    }
    const uint32_t want = (c.readClosed ? 0u : static_cast<uint32_t>(EPOLLIN)) |
                          (c.out.empty() ? 0u : static_cast<uint32_t>(EPOLLOUT));
    if (want != c.interest) {
      epoll_event ev{};
      ev.events = want;
      ev.data.u64 = token;
      ::epoll_ctl(epfd, EPOLL_CTL_MOD, c.fd, &ev);
      c.interest = want;
    }
  }

  void handleQuery(const std::string& taskId, const uint8_t* data, size_t len, Target to) {
    auto sb = sandboxes.find(taskId);
    if (sb == sandboxes.end()) return;
    Query q;
    switch (parseQuery(data, len, &q)) {
      case ParseResult::kOk:
        break;
      case ParseResult::kDrop:
        return;
      case ParseResult::kMalformed:
        reply(to, buildHeaderError(data, len, kFormErr));
        return;
      case ParseResult::kNotImplemented:
        reply(to, buildHeaderError(data, len, kNotImp));
        return;
    }
    to.limit = responseLimit(q, to.tcp);
    if (q.edns && q.ednsVersion != 0) {
      reply(to, buildAnswer(q, kBadVers, {}, 0, to.limit));
      return;
    }
    if (q.qclass == kClassIN || q.qclass == kClassANY) {
      NameTable::Result r = table->lookup(q.name, sb->second.networks);
      if (r.match == NameTable::Match::kFound) {
        std::vector<uint32_t> ips;
        if (q.qtype == kTypeA || q.qtype == kTypeANY) {
          ips = std::move(r.ips);
          // Rotate, so that clients taking the first address spread over the tasks (dnsrr).
          if (ips.size() > 1) {
            std::rotate(ips.begin(), ips.begin() + static_cast<ptrdiff_t>(rotation % ips.size()),
                        ips.end());
            ++rotation;
          }
        }
        reply(to, buildAnswer(q, kNoError, ips, opts.ttlSeconds, to.limit));
        return;
      }
      if (r.match == NameTable::Match::kOwnedMissing) {
        reply(to, buildAnswer(q, kNxDomain, {}, 0, to.limit));
        return;
      }
    }
    forward(std::move(q), data, len, to);
  }

  void forward(Query q, const uint8_t* data, size_t len, const Target& to) {
    refreshUpstreams();
    if (upstreamList.empty() || forwards.size() >= kMaxForwards) {
      reply(to, buildAnswer(q, kServFail, {}, 0, to.limit));
      return;
    }
    auto f = std::make_unique<Forward>();
    f->to = to;
    f->normalizedName = normalizeName(q.name);
    f->query = std::move(q);
    f->packet.assign(data, data + len);
    f->upstreams = upstreamList;
    if (to.tcp) {
      auto it = conns.find(to.token);
      if (it != conns.end()) ++it->second->pending;
    }
    launch(std::move(f));
  }

  // Sends the query to the next upstream not tried yet, or answers SERVFAIL after the last.
  void launch(std::unique_ptr<Forward> f) {
    if (!f) return;
    while (f->next < f->upstreams.size()) {
      const Upstream& u = f->upstreams[f->next++];
      int fd = ::socket(u.addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) {
        warn("dns: cannot make a socket to forward to " + u.text + ": " + errnoText(errno));
        continue;
      }
      // A fresh socket per forward: a random source port and a random id, and the connected
      // socket only accepts datagrams from the upstream (RFC 5452).
      f->upstreamId = static_cast<uint16_t>(rng());
      f->packet[0] = static_cast<uint8_t>(f->upstreamId >> 8);
      f->packet[1] = static_cast<uint8_t>(f->upstreamId & 0xFF);
      if (::connect(fd, reinterpret_cast<const sockaddr*>(&u.addr), u.addrLen) != 0 ||
          ::send(fd, f->packet.data(), f->packet.size(), MSG_NOSIGNAL) < 0) {
        closeFd(fd);
        continue;
      }
      const uint64_t token = registerFd(fd, EPOLLIN);
      if (token == 0) {
        closeFd(fd);
        continue;
      }
      f->fd = fd;
      f->deadline = Clock::now() + opts.forwardTimeout;
      forwards.emplace(token, std::move(f));
      return;
    }
    finish(*f, buildAnswer(f->query, kServFail, {}, 0, f->to.limit));
  }

  void finish(Forward& f, const std::vector<uint8_t>& answer) {
    if (f.to.tcp) {
      auto it = conns.find(f.to.token);
      if (it != conns.end()) {
        --it->second->pending;
        it->second->idleDeadline = Clock::now() + opts.tcpIdleTimeout;
      }
    }
    reply(f.to, answer);
    if (f.to.tcp) flush(f.to.token);  // closes a half-closed connection that is now done
  }

  // Takes a forward out of the table, closing its socket.
  std::unique_ptr<Forward> retire(uint64_t token) {
    auto it = forwards.find(token);
    if (it == forwards.end()) return nullptr;
    std::unique_ptr<Forward> f = std::move(it->second);
    forwards.erase(it);
    unregisterFd(f->fd);
    closeFd(f->fd);
    return f;
  }

  void onForwardReadable(uint64_t token) {
    for (;;) {
      Forward& f = *forwards.at(token);
      const ssize_t n = ::recv(f.fd, buffer.data(), buffer.size(), 0);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (errno == EINTR) continue;
        launch(retire(token));  // ECONNREFUSED and the like: try the next upstream now
        return;
      }
      Response r;
      if (!parseResponse(buffer.data(), static_cast<size_t>(n), &r) || r.id != f.upstreamId ||
          r.questionCount != 1 || normalizeName(r.questionName) != f.normalizedName ||
          r.qtype != f.query.qtype || r.qclass != f.query.qclass) {
        continue;  // not the answer to our question: keep waiting until the deadline
      }
      std::vector<uint8_t> answer(buffer.begin(), buffer.begin() + n);
      answer[0] = static_cast<uint8_t>(f.query.id >> 8);
      answer[1] = static_cast<uint8_t>(f.query.id & 0xFF);
      if (answer.size() > f.to.limit) {
        answer = truncateResponse(answer.data(), answer.size(), r.questionEnd);
      }
      std::unique_ptr<Forward> done = retire(token);
      finish(*done, answer);
      return;
    }
  }

  void onUdpReadable(const Listener& l, uint64_t token) {
    const std::string taskId = l.taskId;  // `l` may go away while answering
    const int fd = l.fd;
    for (int i = 0; i < kMaxDatagramsPerEvent; ++i) {
      Target to;
      to.token = token;
      socklen_t peerLen = sizeof to.peer;
      const ssize_t n = ::recvfrom(fd, buffer.data(), buffer.size(), 0,
                                   reinterpret_cast<sockaddr*>(&to.peer), &peerLen);
      if (n < 0) {
        if (errno == EINTR) continue;
        return;
      }
      handleQuery(taskId, buffer.data(), static_cast<size_t>(n), to);
      if (listeners.find(token) == listeners.end()) return;
    }
  }

  void onAccept(const Listener& l) {
    const std::string taskId = l.taskId;
    for (int i = 0; i < 16; ++i) {
      const int fd = ::accept4(l.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      auto sb = sandboxes.find(taskId);
      if (sb == sandboxes.end() || sb->second.conns >= kMaxConnsPerSandbox) {
        ::close(fd);
        continue;
      }
      const uint64_t token = registerFd(fd, EPOLLIN);
      if (token == 0) {
        ::close(fd);
        continue;
      }
      auto c = std::make_unique<TcpConn>();
      c->fd = fd;
      c->taskId = taskId;
      c->interest = EPOLLIN;
      c->idleDeadline = Clock::now() + opts.tcpIdleTimeout;
      conns.emplace(token, std::move(c));
      ++sb->second.conns;
    }
  }

  void onConnEvent(uint64_t token, uint32_t events) {
    TcpConn* c = conns.at(token).get();
    if (events & EPOLLERR) {
      closeConn(token);
      return;
    }
    if (events & EPOLLIN) {
      for (;;) {
        const ssize_t n = ::recv(c->fd, buffer.data(), buffer.size(), 0);
        if (n == 0) {
          c->readClosed = true;
          break;
        }
        if (n < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK) break;
          if (errno == EINTR) continue;
          closeConn(token);
          return;
        }
        c->in.insert(c->in.end(), buffer.begin(), buffer.begin() + n);
        if (static_cast<size_t>(n) < buffer.size()) break;
      }
      c->idleDeadline = Clock::now() + opts.tcpIdleTimeout;
      size_t pos = 0;
      while (c->in.size() - pos >= 2) {
        const size_t len = (static_cast<size_t>(c->in[pos]) << 8) | c->in[pos + 1];
        if (c->in.size() - pos - 2 < len) break;
        // Copied out: answering may append to this connection or close it.
        const std::vector<uint8_t> message(c->in.begin() + static_cast<ptrdiff_t>(pos + 2),
                                           c->in.begin() + static_cast<ptrdiff_t>(pos + 2 + len));
        pos += 2 + len;
        const std::string taskId = c->taskId;
        handleQuery(taskId, message.data(), message.size(), Target{true, token, {}, kMaxTcpSize});
        auto it = conns.find(token);
        if (it == conns.end()) return;
        c = it->second.get();
      }
      c->in.erase(c->in.begin(), c->in.begin() + static_cast<ptrdiff_t>(pos));
    } else if (events & EPOLLHUP) {
      closeConn(token);
      return;
    }
    flush(token);
  }

  void dispatch(uint64_t token, uint32_t events) {
    if (token == kWakeToken) {
      uint64_t value = 0;
      while (::read(wakeFd, &value, sizeof value) > 0) {
      }
      return;
    }
    if (auto l = listeners.find(token); l != listeners.end()) {
      if (l->second.tcp) {
        onAccept(l->second);
      } else {
        onUdpReadable(l->second, token);
      }
      return;
    }
    if (conns.count(token)) {
      onConnEvent(token, events);
      return;
    }
    if (forwards.count(token)) onForwardReadable(token);
    // Anything else is a stale event for a socket closed since epoll_wait returned.
  }

  void expireTimers() {
    const Clock::time_point now = Clock::now();
    std::vector<uint64_t> expired;
    for (const auto& [token, f] : forwards) {
      if (f->deadline <= now) expired.push_back(token);
    }
    for (uint64_t token : expired) launch(retire(token));
    expired.clear();
    for (const auto& [token, c] : conns) {
      if (c->pending == 0 && c->idleDeadline <= now) expired.push_back(token);
    }
    for (uint64_t token : expired) closeConn(token);
  }

  int nextTimeoutMs() const {
    std::optional<Clock::time_point> next;
    auto consider = [&](Clock::time_point t) {
      if (!next || t < *next) next = t;
    };
    for (const auto& [token, f] : forwards) consider(f->deadline);
    for (const auto& [token, c] : conns) {
      if (c->pending == 0) consider(c->idleDeadline);
    }
    if (!next) return -1;
    const auto wait = std::chrono::ceil<std::chrono::milliseconds>(*next - Clock::now()).count();
    return static_cast<int>(std::clamp<long long>(wait, 0, 60000));
  }

  // Forwarding sockets must be made in the server's namespace, whichever thread started it.
  void enterHomeNamespace() {
    if (homeNs < 0) return;
    struct stat home {
    }, here{};
    if (::fstat(homeNs, &home) != 0 || ::stat("/proc/thread-self/ns/net", &here) != 0) return;
    if (home.st_ino == here.st_ino && home.st_dev == here.st_dev) return;
    if (::setns(homeNs, CLONE_NEWNET) != 0) {
      std::lock_guard<std::mutex> lock(mu);
      warn("dns: the loop thread cannot return to the server's network namespace: " +
           errnoText(errno));
    }
  }

  void run() {
    enterHomeNamespace();
    epoll_event events[kMaxEvents];
    std::unique_lock<std::mutex> lock(mu);
    while (!stopping) {
      const int timeout = nextTimeoutMs();
      lock.unlock();
      const int n = ::epoll_wait(epfd, events, kMaxEvents, timeout);
      const int err = errno;
      lock.lock();
      if (stopping) break;
      if (n < 0 && err != EINTR) {
        warn("dns: epoll_wait: " + errnoText(err) + "; the DNS loop stops");
        break;
      }
      for (int i = 0; i < n; ++i) dispatch(events[i].data.u64, events[i].events);
      expireTimers();
    }
  }

  const ServerOptions opts;
  int homeNs = -1;  // the constructing thread's network namespace

  std::mutex life;  // serialises start() and stop()
  std::thread loop;

  mutable std::mutex mu;  // guards everything below; the loop holds it while handling events
  std::shared_ptr<const NameTable> table = std::make_shared<NameTable>();
  std::map<std::string, Sandbox> sandboxes;
  std::unordered_map<uint64_t, Listener> listeners;
  std::unordered_map<uint64_t, std::unique_ptr<TcpConn>> conns;
  std::unordered_map<uint64_t, std::unique_ptr<Forward>> forwards;
  uint64_t nextToken = 1;
  int epfd = -1;
  int wakeFd = -1;
  bool running = false;
  bool stopping = false;
  std::mt19937 rng;
  uint32_t rotation = 0;
  std::vector<uint8_t> buffer = std::vector<uint8_t>(65536);
  std::vector<Upstream> upstreamList;
  bool upstreamsLoaded = false;
  bool resolvStatOk = false;
  struct stat resolvStat {};
  Clock::time_point lastResolvCheck;
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Server::~Server() { stop(); }

Status Server::start() {
  std::lock_guard<std::mutex> life(impl_->life);
  std::lock_guard<std::mutex> lock(impl_->mu);
  Impl& s = *impl_;
  if (s.running) return Status::ok();
  s.epfd = ::epoll_create1(EPOLL_CLOEXEC);
  if (s.epfd < 0) return Status::error("dns: epoll_create1: " + errnoText(errno));
  s.wakeFd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeToken;
  if (s.wakeFd < 0 || ::epoll_ctl(s.epfd, EPOLL_CTL_ADD, s.wakeFd, &ev) != 0) {
    const int err = errno;
    closeFd(s.wakeFd);
    closeFd(s.epfd);
    return Status::error("dns: eventfd: " + errnoText(err));
  }
  for (auto& [taskId, sb] : s.sandboxes) s.registerSandbox(taskId, sb);
  s.upstreamsLoaded = false;
  s.refreshUpstreams();
  s.stopping = false;
  try {
    s.loop = std::thread([&s] { s.run(); });
  } catch (const std::system_error& e) {
    // Keep the sandboxes (a later start() may succeed); drop only what start() made.
    for (auto& [taskId, sb] : s.sandboxes) sb.udpToken = sb.tcpToken = 0;
    s.listeners.clear();
    closeFd(s.wakeFd);
    closeFd(s.epfd);
    return Status::error(std::string("dns: cannot start the loop thread: ") + e.what());
  }
  s.running = true;
  return Status::ok();
}

void Server::stop() {
  std::lock_guard<std::mutex> life(impl_->life);
  Impl& s = *impl_;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.stopping = true;
    if (s.wakeFd >= 0) {
      const uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(s.wakeFd, &one, sizeof one);
    }
  }
  if (s.loop.joinable()) s.loop.join();
  std::lock_guard<std::mutex> lock(s.mu);
  s.closeAll();
  s.running = false;
}

void Server::setRecords(std::vector<Record> records) {
  auto table = std::make_shared<const NameTable>(std::move(records));
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->table = std::move(table);
}

Status Server::addSandbox(const std::string& taskId, const std::string& netnsPath,
                          std::vector<std::string> networkIds) {
  if (taskId.empty()) return Status::error("dns: empty task id");
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->sandboxes.count(taskId)) return Status::error("dns: sandbox " + taskId + " exists");
  }
  Sockets sockets;
  Status opened;
  try {
    std::thread helper([&] { opened = openInNamespace(netnsPath, &sockets); });
    helper.join();
  } catch (const std::system_error& e) {
    return Status::error(std::string("dns: cannot start a thread: ") + e.what());
  }
  if (!opened) return opened;
  std::lock_guard<std::mutex> lock(impl_->mu);
  Impl& s = *impl_;
  if (s.sandboxes.count(taskId)) {
    ::close(sockets.udp);
    ::close(sockets.tcp);
    return Status::error("dns: sandbox " + taskId + " exists");
  }
  Sandbox& sb = s.sandboxes[taskId];
  sb.networks = std::move(networkIds);
  sb.udpFd = sockets.udp;
  sb.tcpFd = sockets.tcp;
  if (s.epfd >= 0) s.registerSandbox(taskId, sb);
  return Status::ok();
}

bool Server::removeSandbox(const std::string& taskId) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  Impl& s = *impl_;
  auto it = s.sandboxes.find(taskId);
  if (it == s.sandboxes.end()) return false;
  std::vector<uint64_t> conns;
  for (const auto& [token, c] : s.conns) {
    if (c->taskId == taskId) conns.push_back(token);
  }
  for (uint64_t token : conns) s.closeConn(token);
  s.closeSandbox(it->second);
  s.sandboxes.erase(it);
  return true;
}

size_t Server::sandboxCount() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->sandboxes.size();
}

}  // namespace shoal::overlay::dns
