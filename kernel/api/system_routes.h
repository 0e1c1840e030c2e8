#pragma once

#include <cstdint>
#include <string>

#include "kernel/api/router.h"
#include "kernel/plugin/plugin_host.h"

namespace shoal::api {

// What the daemon knows about itself, for GET /info.
struct DaemonFacts {
  std::string version;
  std::string dataRoot;
  std::string socketPath;
  int64_t pid = 0;
  int64_t startedUnixNanos = 0;
};

// GET /info (daemon, host and plugin summary) and GET /plugins (loaded plugins, refusals).
void addSystemRoutes(Router& router, const plugin::PluginHost& plugins, DaemonFacts facts);

}  // namespace shoal::api
