#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "kernel/common/status.h"
#include "kernel/plugin/event_queue.h"
#include "kernel/plugin/plugin_instance.h"

namespace shoal::agent {

// The runtime as the agent drives it: SwarmKit's controller ops (runtime.h), each finishing
// through a callback with the op's status and result document (a task status document).
// THREAD: the ops may be called from any thread; callbacks run on whichever thread delivers
// the completion and must not block.
class Runtime {
 public:
  using Done = std::function<void(Status status, const std::string& resultJson)>;
  virtual ~Runtime() = default;
  virtual Status prepare(const std::string& taskId, const std::string& taskJson, Done done) = 0;
  virtual Status start(const std::string& taskId, Done done) = 0;
  virtual Status wait(const std::string& taskId, Done done) = 0;
  virtual Status shutdown(const std::string& taskId, int64_t graceNs, Done done) = 0;
  virtual Status remove(const std::string& taskId, Done done) = 0;
  // Every task the runtime knows (a JSON array of status documents).
  virtual Result<std::string> list() = 0;

  // Log records of a `logs` op (shoal.log-chunk/v1 documents), one call per chunk, before its
  // Done.
  using Chunk = std::function<void(const std::string& chunkJson)>;
  // Streams a task's logs (runtime.h logs; options_json as there); *op names the op for
  // cancel(). A runtime without logs says so.
  virtual Status logs(const std::string& taskId, const std::string& optionsJson, Chunk chunk,
                      Done done, uint64_t* op) {
    (void)taskId, (void)optionsJson, (void)chunk, (void)done, (void)op;
    return Status::notSupported("this runtime keeps no logs");
  }
  virtual Status cancel(uint64_t op) {
    (void)op;
    return Status::notSupported("this runtime keeps no logs");
  }
};

// The node's images through its runtime (runtime.h, ABI 1.2 image_* slots). Each async op's
// callback gets the op's status and result document. THREAD: as Runtime.
class ImageRuntime {
 public:
  using Done = Runtime::Done;
  virtual ~ImageRuntime() = default;
  // Whether the runtime has images at all (an older or image-less plugin has not).
  virtual bool hasImages() const = 0;
  virtual Status imagePull(const std::string& ref, Done done) = 0;
  virtual Status imageResolve(const std::string& ref, Done done) = 0;
  virtual Status imageLoad(const std::string& path, Done done) = 0;
  virtual Status imageRemove(const std::string& ref, bool force, Done done) = 0;
  virtual Result<std::string> imageList() = 0;
};

// The status an op's SHOAL_EVENT_OP_DONE event carries: ok, or the plugin's code with the
// message of its status document, named after the plugin once.
Status opDoneStatus(const std::string& pluginName, const plugin::PluginEvent& event);

// A Runtime over a runtime plugin: async ops get an op id, and onEvent (fed by the plugin
// host's event handler) finishes them.
class PluginRuntime final : public Runtime, public ImageRuntime {
 public:
  using Chunk = Runtime::Chunk;
  using Done = Runtime::Done;

  explicit PluginRuntime(plugin::PluginInstance& plugin) : plugin_(plugin) {}
  Status prepare(const std::string& taskId, const std::string& taskJson, Done done) override;
  Status start(const std::string& taskId, Done done) override;
  Status wait(const std::string& taskId, Done done) override;
  Status shutdown(const std::string& taskId, int64_t graceNs, Done done) override;
  Status remove(const std::string& taskId, Done done) override;
  Result<std::string> list() override;

  bool hasImages() const override;
  Status imagePull(const std::string& ref, Done done) override;
  Status imageResolve(const std::string& ref, Done done) override;
  Status imageLoad(const std::string& path, Done done) override;
  Status imageRemove(const std::string& ref, bool force, Done done) override;
  Result<std::string> imageList() override;

  Status logs(const std::string& taskId, const std::string& optionsJson, Chunk chunk, Done done,
              uint64_t* op) override;
  Status cancel(uint64_t op) override;

  // A plugin event: completes the op it names, if it is one of ours.
  void onEvent(const plugin::PluginEvent& event);
  const std::string& pluginName() const { return plugin_.info().name; }

 private:
  template <class F>
  Status call(const char* op, Done done, F&& fn, uint64_t* opOut = nullptr, Chunk chunk = {});
  Status noImages() const;

  plugin::PluginInstance& plugin_;
  std::mutex mu_;
  uint64_t nextOp_ = 1;               // guarded by mu_
  std::map<uint64_t, Done> pending_;  // guarded by mu_
  std::map<uint64_t, Chunk> chunks_;  // guarded by mu_: logs ops still streaming
};

}  // namespace shoal::agent
