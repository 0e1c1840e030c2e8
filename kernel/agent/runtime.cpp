#include "kernel/agent/runtime.h"

#include <shoal/runtime.h>

#include <cstdlib>

namespace shoal::agent {
namespace {

shoal_str str(const std::string& s) { return shoal_str{s.data(), s.size()}; }

}  // namespace

template <class F>
Status PluginRuntime::call(const char* op, Done done, F&& fn) {
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = nextOp_++;
    pending_[id] = std::move(done);
  }
  const auto& ops = plugin_.ops<shoal_runtime_ops>();
  Status s = plugin_.invoke(
      op, [&](void* st) { return fn(ops, st, id); }, true);
  if (!s) {
    // Failed at once: no completion will come.
    std::lock_guard<std::mutex> lock(mu_);
    pending_.erase(id);
  }
  return s;
}

Status PluginRuntime::prepare(const std::string& taskId, const std::string& taskJson, Done done) {
  return call("prepare", std::move(done), [&](const shoal_runtime_ops& o, void* st, uint64_t op) {
    return o.prepare(st, op, str(taskId), str(taskJson));
  });
}

Status PluginRuntime::start(const std::string& taskId, Done done) {
  return call("start", std::move(done), [&](const shoal_runtime_ops& o, void* st, uint64_t op) {
    return o.start(st, op, str(taskId));
  });
}

Status PluginRuntime::wait(const std::string& taskId, Done done) {
  return call("wait", std::move(done), [&](const shoal_runtime_ops& o, void* st, uint64_t op) {
    return o.wait(st, op, str(taskId));
  });
}

Status PluginRuntime::shutdown(const std::string& taskId, int64_t graceNs, Done done) {
  return call("shutdown", std::move(done), [&](const shoal_runtime_ops& o, void* st, uint64_t op) {
    return o.shutdown(st, op, str(taskId), graceNs);
  });
}

Status PluginRuntime::remove(const std::string& taskId, Done done) {
  return call("remove", std::move(done), [&](const shoal_runtime_ops& o, void* st, uint64_t op) {
    return o.remove(st, op, str(taskId));
  });
}

Result<std::string> PluginRuntime::list() {
  shoal_buf out{};
  const auto& ops = plugin_.ops<shoal_runtime_ops>();
  Status s = plugin_.invoke("list", [&](void* st) { return ops.list(st, &out); });
  if (!s) return s;
  std::string text(out.ptr ? out.ptr : "", out.len);
  std::free(out.ptr);
  return text;
}

void PluginRuntime::onEvent(const plugin::PluginEvent& event) {
  if (event.type != SHOAL_EVENT_OP_DONE || event.plugin != plugin_.info().name) return;
  Done done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(event.op);
    if (it == pending_.end()) return;
    done = std::move(it->second);
    pending_.erase(it);
  }
  Status s = event.status >= 0
                 ? Status::ok()
                 : Status(plugin::statusCodeFor(event.status),
                          pluginName() + ": " + std::string(plugin::shoalStatusName(event.status)));
  if (!s && !event.json.empty()) {
    // The status document's message says more than the code.
    const auto at = event.json.find("\"message\":\"");
    if (at != std::string::npos) {
      const auto start = at + 11;
      const auto end = event.json.find('"', start);
      if (end != std::string::npos && end > start) {
        s = Status(s.code(), pluginName() + ": " + event.json.substr(start, end - start));
      }
    }
  }
  done(s, event.json);
}

}  // namespace shoal::agent
