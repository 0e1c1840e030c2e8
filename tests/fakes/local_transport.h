#pragma once

#include <map>
#include <mutex>
#include <set>

#include "kernel/raft/transport.h"

namespace shoal::test {

// An in-process Transport: members registered with one hub deliver to each other by calling
// the receiver's handler directly. Links can be cut, to partition members.
class LocalHub {
 public:
  class Endpoint;

  // Cut or restore every link to and from `id`.
  void isolate(raft::NodeId id, bool cut) {
    std::lock_guard<std::mutex> lock(mu_);
    if (cut) {
      isolated_.insert(id);
    } else {
      isolated_.erase(id);
    }
  }

  void deliver(raft::Message m) {
    raft::Transport::Handler handler;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (isolated_.count(m.from) || isolated_.count(m.to)) return;
      auto it = handlers_.find(m.to);
      if (it == handlers_.end()) return;
      handler = it->second;
    }
    handler(std::move(m));
  }

  void attach(raft::NodeId id, raft::Transport::Handler h) {
    std::lock_guard<std::mutex> lock(mu_);
    handlers_[id] = std::move(h);
  }
  void detach(raft::NodeId id) {
    std::lock_guard<std::mutex> lock(mu_);
    handlers_.erase(id);
  }

 private:
  std::mutex mu_;
  std::map<raft::NodeId, raft::Transport::Handler> handlers_;  // guarded by mu_
  std::set<raft::NodeId> isolated_;                            // guarded by mu_
};

class LocalTransport : public raft::Transport {
 public:
  LocalTransport(LocalHub& hub, raft::NodeId self) : hub_(hub), self_(self) {}
  ~LocalTransport() override { stop(); }
  void setHandler(Handler handler) override { handler_ = std::move(handler); }
  Status start() override {
    hub_.attach(self_, handler_);
    return Status::ok();
  }
  void stop() override { hub_.detach(self_); }
  void addPeer(raft::NodeId, const std::string&) override {}
  void removePeer(raft::NodeId) override {}
  void send(raft::Message message) override { hub_.deliver(std::move(message)); }

 private:
  LocalHub& hub_;
  raft::NodeId self_;
  Handler handler_;
};

}  // namespace shoal::test
