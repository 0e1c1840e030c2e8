// The embedded DNS server (Docker's 127.0.0.11) that the network-overlay plugin runs for task
// containers: one UDP and one TCP socket at 127.0.0.11:53 inside each task's network namespace,
// all served by one event-loop thread. See README.md for the design.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dns/names.hpp"
#include "dns/status.hpp"

namespace shoal::overlay::dns {

struct ServerOptions {
  // Where the node's resolvers are read from (re-read when the file changes, checked at most
  // once a second while forwarding). Loopback resolvers are skipped.
  std::string resolvConfPath = "/etc/resolv.conf";
  // When set, replaces resolv.conf: "ADDR[:PORT]" / "[V6]:PORT" (port 53 by default), used as
  // given, loopback included (tests run a fake upstream on 127.0.0.1). An empty list means no
  // upstream: forwarded names get SERVFAIL.
  std::optional<std::vector<std::string>> upstreams;
  // TTL of our A records. Short, unlike Docker's 600 s, so that clients which cache (glibc does
  // not, but nscd, JVMs and sidecar caches do) see scaling and rescheduling within a second.
  uint32_t ttlSeconds = 1;
  // How long one upstream may take before the next is tried (SERVFAIL after the last).
  std::chrono::milliseconds forwardTimeout{2000};
  // TCP connections idle this long (nothing pending) are closed.
  std::chrono::milliseconds tcpIdleTimeout{10000};
  // Warnings (an unreadable resolv.conf, no usable upstream, a failed socket). Called from the
  // calling thread or the loop thread with the server's lock held: it must not call the server.
  std::function<void(const std::string&)> log;
};

// THREADS: every method may be called from any thread, concurrently, and while the loop runs;
// except that stop() (and the destructor) must not be called from the `log` callback.
// ERRORS: returned as Status (messages start with "dns: "); nothing throws.
class Server {
 public:
  // Captures the calling thread's network namespace: forwarding sockets are made there, by the
  // loop thread, whichever thread calls start(). Starts no thread.
  explicit Server(ServerOptions options = ServerOptions());
  // stop().
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Starts the loop thread (a no-op when running). Sandboxes added before start are served from
  // then on.
  Status start();
  // Stops and joins the loop thread and closes every socket, the sandboxes' included (they are
  // forgotten: add them again after a new start()). Pending forwards are dropped.
  void stop();

  // Replaces the whole name table at once; queries handled after the call see only `records`.
  void setRecords(std::vector<Record> records);

  // Opens UDP and TCP sockets bound to 127.0.0.11:53 inside the network namespace at
  // `netnsPath` (e.g. /run/netns/X or /proc/PID/ns/net; a short-lived thread enters it) and
  // serves them: names on `networkIds` are answered, others forwarded. The sockets use
  // IP_FREEBIND, so this works before the namespace's `lo` is up. Errors: "dns: cannot enter
  // network namespace PATH: REASON", "dns: cannot bind 127.0.0.11:53/udp in PATH: REASON",
  // "dns: sandbox TASK exists", "dns: empty task id".
  Status addSandbox(const std::string& taskId, const std::string& netnsPath,
                    std::vector<std::string> networkIds);
  // Closes the task's sockets and its TCP connections; when it returns the port is free in that
  // namespace. False when there was no such sandbox.
  bool removeSandbox(const std::string& taskId);

  size_t sandboxCount() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shoal::overlay::dns
