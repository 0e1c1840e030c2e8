#include "kernel/agent/runtime.h"

#include <shoal/runtime.h>

#include <cstdlib>

#include "kernel/agent/wire.h"

namespace shoal::agent {
namespace {

shoal_str str(const std::string& s) { return shoal_str{s.data(), s.size()}; }

}  // namespace

template <class F>
Status PluginRuntime::call(const char* op, Done done, F&& fn, uint64_t* opOut, Chunk chunk) {
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = nextOp_++;
    pending_[id] = std::move(done);
    // A logs op's chunk sink is in place before the op can post anything.
    if (chunk) chunks_[id] = std::move(chunk);
  }
  if (opOut) *opOut = id;
  const auto& ops = plugin_.ops<shoal_runtime_ops>();
  Status s = plugin_.invoke(
      op, [&](void* st) { return fn(ops, st, id); }, true);
  if (!s) {
    // Failed at once: no completion will come.
    std::lock_guard<std::mutex> lock(mu_);
    pending_.erase(id);
    chunks_.erase(id);
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

bool PluginRuntime::hasImages() const {
  const auto& ops = plugin_.ops<shoal_runtime_ops>();
  return SHOAL_HAS_FIELD(&ops, shoal_runtime_ops, image_remove) && ops.image_pull &&
         ops.image_resolve && ops.image_load && ops.image_list && ops.image_remove;
}

Status PluginRuntime::imagePull(const std::string& ref, Done done) {
  if (!hasImages()) return noImages();
  return call("image_pull", std::move(done),
              [&](const shoal_runtime_ops& o, void* st, uint64_t op) {
                return o.image_pull(st, op, str(ref));
              });
}

Status PluginRuntime::imageResolve(const std::string& ref, Done done) {
  if (!hasImages()) return noImages();
  return call("image_resolve", std::move(done),
              [&](const shoal_runtime_ops& o, void* st, uint64_t op) {
                return o.image_resolve(st, op, str(ref));
              });
}

Status PluginRuntime::imageLoad(const std::string& path, Done done) {
  if (!hasImages()) return noImages();
  return call("image_load", std::move(done),
              [&](const shoal_runtime_ops& o, void* st, uint64_t op) {
                return o.image_load(st, op, str(path));
              });
}

Status PluginRuntime::imageRemove(const std::string& ref, bool force, Done done) {
  if (!hasImages()) return noImages();
  return call("image_remove", std::move(done),
              [&](const shoal_runtime_ops& o, void* st, uint64_t op) {
                return o.image_remove(st, op, str(ref), force ? 1 : 0);
              });
}

Result<std::string> PluginRuntime::imageList() {
  if (!hasImages()) return noImages();
  shoal_buf out{};
  const auto& ops = plugin_.ops<shoal_runtime_ops>();
  Status s = plugin_.invoke("image_list", [&](void* st) { return ops.image_list(st, &out); });
  if (!s) return s;
  std::string text(out.ptr ? out.ptr : "", out.len);
  std::free(out.ptr);
  return text;
}

Status PluginRuntime::noImages() const {
  return Status::notSupported("the runtime " + pluginName() + " keeps no images");
}

Status PluginRuntime::logs(const std::string& taskId, const std::string& optionsJson, Chunk chunk,
                           Done done, uint64_t* op) {
  return call(
      "logs", std::move(done),
      [&](const shoal_runtime_ops& o, void* st, uint64_t opId) {
        return o.logs(st, opId, str(taskId), str(optionsJson));
      },
      op, std::move(chunk));
}

Status PluginRuntime::cancel(uint64_t op) {
  const auto& ops = plugin_.ops<shoal_runtime_ops>();
  return plugin_.invoke("cancel", [&](void* st) { return ops.cancel(st, op); });
}

void PluginRuntime::onEvent(const plugin::PluginEvent& event) {
  if (event.plugin != plugin_.info().name) return;
  if (event.type == SHOAL_EVENT_LOG_CHUNK) {
    Chunk chunk;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = chunks_.find(event.op);
      if (it == chunks_.end()) return;
      chunk = it->second;
    }
    chunk(event.json);
    return;
  }
  if (event.type != SHOAL_EVENT_OP_DONE) return;
  Done done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(event.op);
    if (it == pending_.end()) return;
    done = std::move(it->second);
    pending_.erase(it);
    chunks_.erase(event.op);
  }
  done(opDoneStatus(pluginName(), event), event.json);
}

Status opDoneStatus(const std::string& pluginName, const plugin::PluginEvent& event) {
  Status s = event.status >= 0
                 ? Status::ok()
                 : Status(plugin::statusCodeFor(event.status),
                          pluginName + ": " + std::string(plugin::shoalStatusName(event.status)));
  if (!s && !event.json.empty()) {
    // The status document's message says more than the code.
    const std::string message = wire::stringMember(event.json, "message");
    if (!message.empty()) {
      // Plugins name themselves in their messages; say it once.
      s = Status(s.code(),
                 message.rfind(pluginName + ": ", 0) == 0 ? message : pluginName + ": " + message);
    }
  }
  return s;
}

}  // namespace shoal::agent
