// runtime-runc: runs a node's tasks as OCI containers through runc (or a runc-compatible
// runtime such as crun).
//
// This is the plugin's shell: it loads, checks its configuration and describes the node
// truthfully. Every task operation answers SHOAL_ENOTSUP until the runtime lands (issue #6).
#include <shoal/runtime.h>
#include <shoal/plugin.hpp>
#include <shoal_plugins/config.hpp>
#include <shoal_plugins/json.hpp>
#include <shoal_plugins/node_info.hpp>

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Object.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

using shoal::plugins::addNodeFacts;
using shoal::plugins::configError;
using shoal::plugins::parseConfig;
using shoal::plugins::toJson;

constexpr char kName[] = "runtime-runc";
constexpr char kVersion[] = "0.1.0";

bool isExecutableFile(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0;
}

// Where `program` is found the way execvp would find it, or "" when it is not. Relative PATH
// entries (including the empty one, meaning ".") are skipped: a daemon must not run a binary
// because of the directory it happened to start in.
std::string resolveProgram(const std::string& program) {
  if (program.find('/') != std::string::npos) return isExecutableFile(program) ? program : "";
  const char* env = std::getenv("PATH");
  std::string path = env != nullptr ? env : "/bin:/usr/bin";  // execvp's default
  std::string::size_type begin = 0;
  while (begin <= path.size()) {
    std::string::size_type end = path.find(':', begin);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(begin, end - begin);
    if (!dir.empty() && dir[0] == '/') {
      std::string candidate = dir + (dir.back() == '/' ? "" : "/") + program;
      if (isExecutableFile(candidate)) return candidate;
    }
    begin = end + 1;
  }
  return "";
}

class RuncRuntime : public shoal::sdk::Instance {
 public:
  RuncRuntime(const shoal_host* host, shoal_instance* inst, std::string_view config_json)
      : Instance(host, inst) {
    Poco::JSON::Object::Ptr config = parseConfig(kName, config_json, {"runtime"});
    if (config->has("runtime")) {
      const Poco::Dynamic::Var& value = config->get("runtime");
      if (!value.isString()) configError(kName, "config key \"runtime\" must be a string");
      runtime_ = value.extract<std::string>();
      if (runtime_.empty() || runtime_.find('\0') != std::string::npos ||
          (runtime_.find('/') != std::string::npos && runtime_[0] != '/')) {
        configError(kName, "config key \"runtime\" must be a program name or an absolute path");
      }
    }
  }

  shoal_status describe(shoal_buf* out) {
    Poco::JSON::Object doc(Poco::JSON_PRESERVE_KEY_ORDER);
    doc.set("schema", std::string("shoal.node-runtime/v1"));
    doc.set("runtime", runtime_);
    doc.set("runtime_path", resolveProgram(runtime_));
    addNodeFacts(kName, doc);
    return reply(out, toJson(doc));
  }

  shoal_status prepare(uint64_t, shoal_str, shoal_str) { return notYet("prepare"); }
  shoal_status start(uint64_t, shoal_str) { return notYet("start"); }
  shoal_status wait(uint64_t, shoal_str) { return notYet("wait"); }
  shoal_status shutdown(uint64_t, shoal_str, int64_t) { return notYet("shutdown"); }
  shoal_status terminate(uint64_t, shoal_str) { return notYet("terminate"); }
  shoal_status remove(uint64_t, shoal_str) { return notYet("remove"); }
  shoal_status inspect(shoal_str, shoal_buf*) { return notYet("inspect"); }
  shoal_status list(shoal_buf*) { return notYet("list"); }
  shoal_status logs(uint64_t, shoal_str, shoal_str) { return notYet("logs"); }
  shoal_status cancel(uint64_t) { return notYet("cancel"); }

 private:
  shoal_status notYet(const char* op) const {
    return host()->fail(instance(), SHOAL_ENOTSUP, "%s: %s is not supported yet", kName, op);
  }

  std::string runtime_ = "runc";  // the OCI runtime binary: a name looked up in PATH, or a path
};

const shoal_runtime_ops kOps = [] {
  using shoal::sdk::op;
  shoal_runtime_ops o{};
  o.struct_size = sizeof o;
  o.describe = op<&RuncRuntime::describe>;
  o.prepare = op<&RuncRuntime::prepare>;
  o.start = op<&RuncRuntime::start>;
  o.wait = op<&RuncRuntime::wait>;
  o.shutdown = op<&RuncRuntime::shutdown>;
  o.terminate = op<&RuncRuntime::terminate>;
  o.remove = op<&RuncRuntime::remove>;
  o.inspect = op<&RuncRuntime::inspect>;
  o.list = op<&RuncRuntime::list>;
  o.logs = op<&RuncRuntime::logs>;
  o.cancel = op<&RuncRuntime::cancel>;
  return o;
}();

const shoal_plugin_desc kDesc =
    shoal::sdk::describe<RuncRuntime>(SHOAL_KIND_RUNTIME, kName, kVersion, &kOps);

}  // namespace

SHOAL_PLUGIN(kDesc)
