#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "kernel/raft/transport.h"

namespace shoal::raft {

// The Transport between managers: TCP with mutual TLS (TLS 1.3; both sides present a
// certificate signed by the cluster CA, and each refuses a peer without one).
//
// Outbound, every peer has its own connection, its own sender thread and a bounded queue:
// send() only queues (or drops and counts, when the queue is full or the peer is unknown), so
// it never blocks on the network. A connection that fails is dialled again with exponential
// backoff; what was queued meanwhile stays queued, up to the bound. Inbound, a listening socket
// accepts connections, each read on its own thread; the handler runs on that thread, so
// messages from one peer arrive in the order they were sent on one connection.
//
// Wire format, handshake and the choices behind them: kernel/raft/README.md, "Transport".
//
// THREAD: every method may be called from any thread. The handler is called from the reader
// threads (one per inbound connection, so possibly concurrently for different peers) and must
// not block for long. start() once; stop() is idempotent and is called by the destructor.
class TcpTransport : public Transport {
 public:
  struct Options {
    NodeId self = kNone;
    // "host:port" to listen on; port 0 picks a free port (see port()).
    std::string listenAddress = "127.0.0.1:0";
    // PEM files: the cluster CA that peers' certificates must chain to, and this node's
    // certificate (presented when dialling and when accepting) with its private key.
    std::string caFile;
    std::string certFile;
    std::string keyFile;
    // When true, a peer's certificate must have the common name "shoal-raft-<id>" for the id
    // it speaks as (checked on both sides: by the acceptor against the id the dialler
    // announces, by the dialler against the id it meant to reach).
    bool requirePeerIdInCN = false;
    // When set, called after every handshake (accepting and dialling) with the Raft id the
    // peer speaks as and its certificate's subject; a non-ok Status refuses the connection
    // (the acceptor sends no ack; the dialler closes and retries later). The swarm uses it to
    // let only manager certificates of this cluster, mapped to that Raft id, speak Raft.
    // THREAD: called on the transport's threads, concurrently; must not block for long.
    struct PeerSubject {
      std::string commonName, organizationalUnit, organization;
    };
    std::function<Status(NodeId peer, const PeerSubject& subject)> peerCheck;
    // Messages waiting for one peer; beyond it send() drops and counts (dropped()).
    size_t maxQueuePerPeer = 4096;
    // Pause before dialling a peer again after a failure: doubles from initial up to max.
    std::chrono::milliseconds backoffInitial{50};
    std::chrono::milliseconds backoffMax{2000};
    // TCP connect + TLS handshake + hello/ack, for either side.
    std::chrono::milliseconds handshakeTimeout{5000};
    // A connection whose peer accepts no bytes for this long is closed and dialled again.
    std::chrono::milliseconds writeStallTimeout{10000};
    // A frame longer than this is a protocol error: the connection is closed. A message that
    // encodes longer (a large snapshot) is sent as several frames and put back together by
    // the receiver. Below 2 GiB.
    size_t maxFrameBytes = size_t{64} << 20;
    // The largest message, put together: beyond it the sender drops it (and counts it) and
    // a receiver closes the connection.
    size_t maxMessageBytes = size_t{1} << 30;
    // Inbound connections beyond this are closed as soon as they are accepted.
    size_t maxInboundConnections = 256;
  };

  explicit TcpTransport(Options options);
  ~TcpTransport() override;
  TcpTransport(const TcpTransport&) = delete;
  TcpTransport& operator=(const TcpTransport&) = delete;

  void setHandler(Handler handler) override;
  // kInvalidArgument for bad options or unreadable/mismatched PEM files; kUnavailable when the
  // listen address cannot be bound; kFailedPrecondition when called a second time.
  Status start() override;
  // Closes every socket and joins every thread; returns promptly (well under a second) even
  // with peers unreachable or mid-handshake. Messages still queued are discarded.
  void stop() override;

  void addPeer(NodeId id, const std::string& address) override;
  // Discards the peer's queue and closes its connection (joins its sender thread).
  void removePeer(NodeId id) override;
  void send(Message message) override;

  // The port actually bound (useful with port 0); 0 before start().
  int port() const;
  // Messages send() refused: queue full, unknown peer, stopped, or too large to frame.
  uint64_t dropped() const;
  // Messages waiting for `peer` (0 for an unknown peer).
  size_t queued(NodeId peer) const;
  // True while an outbound connection to `peer` is established and acknowledged.
  bool connected(NodeId peer) const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shoal::raft
