#include "kernel/agent/network.h"

#include <shoal/network.h>

#include <cstdlib>

#include "kernel/agent/runtime.h"

namespace shoal::agent {
namespace {

shoal_str str(const std::string& s) { return shoal_str{s.data(), s.size()}; }

}  // namespace

template <class F>
Result<std::string> PluginNetwork::callOut(const char* op, F&& fn) {
  shoal_buf out{};
  const auto& ops = plugin_.ops<shoal_network_ops>();
  Status s = plugin_.invoke(op, [&](void* st) { return fn(ops, st, &out); });
  std::string text(out.ptr ? out.ptr : "", out.len);
  std::free(out.ptr);
  if (!s) return s;
  return text;
}

template <class F>
Status PluginNetwork::callAsync(const char* op, Done done, F&& fn) {
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = nextOp_++;
    pending_[id] = std::move(done);
  }
  const auto& ops = plugin_.ops<shoal_network_ops>();
  Status s = plugin_.invoke(
      op, [&](void* st) { return fn(ops, st, id); }, true);
  if (!s) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.erase(id);
  }
  return s;
}

Result<std::string> PluginNetwork::describe() {
  return callOut("describe", [](const shoal_network_ops& o, void* st, shoal_buf* out) {
    return o.describe(st, out);
  });
}

Status PluginNetwork::restore(const std::string& allocationsJson) {
  const auto& ops = plugin_.ops<shoal_network_ops>();
  return plugin_.invoke("restore", [&](void* st) { return ops.restore(st, str(allocationsJson)); });
}

Result<std::string> PluginNetwork::allocateNetwork(const std::string& networkJson) {
  return callOut("network_allocate", [&](const shoal_network_ops& o, void* st, shoal_buf* out) {
    return o.network_allocate(st, str(networkJson), out);
  });
}

Status PluginNetwork::releaseNetwork(const std::string& networkId) {
  const auto& ops = plugin_.ops<shoal_network_ops>();
  return plugin_.invoke("network_release",
                        [&](void* st) { return ops.network_release(st, str(networkId)); });
}

Result<std::string> PluginNetwork::allocateEndpoint(const std::string& requestJson) {
  return callOut("endpoint_allocate", [&](const shoal_network_ops& o, void* st, shoal_buf* out) {
    return o.endpoint_allocate(st, str(requestJson), out);
  });
}

Status PluginNetwork::releaseEndpoint(const std::string& endpointJson) {
  const auto& ops = plugin_.ops<shoal_network_ops>();
  return plugin_.invoke("endpoint_release",
                        [&](void* st) { return ops.endpoint_release(st, str(endpointJson)); });
}

Status PluginNetwork::attach(const std::string& taskId, const std::string& attachJson, Done done) {
  return callAsync("attach", std::move(done),
                   [&](const shoal_network_ops& o, void* st, uint64_t op) {
                     return o.attach(st, op, str(taskId), str(attachJson));
                   });
}

Status PluginNetwork::detach(const std::string& taskId, Done done) {
  return callAsync("detach", std::move(done),
                   [&](const shoal_network_ops& o, void* st, uint64_t op) {
                     return o.detach(st, op, str(taskId));
                   });
}

Status PluginNetwork::updatePeers(const std::string& peersJson) {
  const auto& ops = plugin_.ops<shoal_network_ops>();
  return plugin_.invoke("update_peers",
                        [&](void* st) { return ops.update_peers(st, str(peersJson)); });
}

Status PluginNetwork::updateServices(const std::string& servicesJson) {
  const auto& ops = plugin_.ops<shoal_network_ops>();
  return plugin_.invoke("update_services",
                        [&](void* st) { return ops.update_services(st, str(servicesJson)); });
}

void PluginNetwork::onEvent(const plugin::PluginEvent& event) {
  if (event.plugin != plugin_.info().name || event.type != SHOAL_EVENT_OP_DONE) return;
  Done done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(event.op);
    if (it == pending_.end()) return;
    done = std::move(it->second);
    pending_.erase(it);
  }
  done(opDoneStatus(pluginName(), event), event.json);
}

}  // namespace shoal::agent
