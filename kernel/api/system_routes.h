#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "kernel/api/router.h"
#include "kernel/plugin/plugin_host.h"

namespace Poco::JSON {
class Object;
}

namespace shoal::api {

// What the daemon knows about itself, for GET /info.
struct DaemonFacts {
  std::string version;
  std::string dataRoot;
  std::string socketPath;
  int64_t pid = 0;
  int64_t startedUnixNanos = 0;
  // Fills the "swarm" section of GET /info; unset: {"state": "inactive"}.
  std::function<void(Poco::JSON::Object&)> describeSwarm;
};

// GET /info (daemon, host and plugin summary) and GET /plugins (loaded plugins, refusals).
void addSystemRoutes(Router& router, const plugin::PluginHost& plugins, DaemonFacts facts);

}  // namespace shoal::api
