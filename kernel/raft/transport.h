#pragma once

#include <functional>
#include <string>

#include "kernel/common/status.h"
#include "kernel/raft/raft_types.h"

namespace shoal::raft {

// Carries Raft messages between managers. Delivery is best-effort: a message may be dropped
// (peer down, queue full, connection reset) — Raft retransmits what matters — but never
// corrupted, duplicated by the transport itself, or reordered within one peer connection.
//
// THREAD: send/addPeer/removePeer may be called from any thread; the handler is called from
// the transport's own thread(s) and must not block for long.
class Transport {
 public:
  using Handler = std::function<void(Message)>;

  virtual ~Transport() = default;

  // Where received messages go. Set before start().
  virtual void setHandler(Handler handler) = 0;
  // Begin listening and connecting. kUnavailable if the listen address cannot be bound.
  virtual Status start() = 0;
  // Close every connection and stop the threads. Idempotent.
  virtual void stop() = 0;

  // Where to reach a member ("host:port"). Replaces an earlier address for the same id.
  virtual void addPeer(NodeId id, const std::string& address) = 0;
  virtual void removePeer(NodeId id) = 0;

  // Queue `message` for message.to. Never blocks: when the peer's queue is full the message is
  // dropped and counted (backpressure), as is a message for an unknown peer.
  virtual void send(Message message) = 0;
};

// The wire encoding of a Message (versioned, length-checked). Decoding bad bytes is an error,
// never a crash.
std::string encodeMessage(const Message& message);
Result<Message> decodeMessage(std::string_view bytes);

}  // namespace shoal::raft
