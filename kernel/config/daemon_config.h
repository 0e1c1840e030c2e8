#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "kernel/common/log.h"
#include "kernel/common/status.h"

namespace shoal::config {

// shoald's configuration: what conf/shoald.yaml documents, key for key. The defaults here are
// the documented defaults; a test checks that conf/shoald.yaml parses to exactly these.
struct DaemonConfig {
  // Where the daemon keeps its state (store, certificates, images, ...).
  std::string dataRoot = "/var/lib/shoal";
  // The control API's unix socket (mode 0600, root only).
  std::string socketPath = "/run/shoal/shoald.sock";
  // The pidfile, locked while the daemon runs so a second daemon refuses to start.
  std::string pidFile = "/run/shoal/shoald.pid";

  log::Level logLevel = log::Level::kInfo;
  log::Format logFormat = log::Format::kText;

  // Directories searched for plugin shared objects (*.so), in order.
  std::vector<std::string> pluginDirs = {SHOAL_DEFAULT_PLUGIN_DIR};
  // Plugin kinds without which the daemon refuses to start.
  std::vector<std::string> requiredKinds = {"scheduler", "runtime"};
  // Plugin names not to load even when found.
  std::vector<std::string> disabledPlugins;
  // The runtime plugin the agent runs tasks with; empty: runtime-runc when it is loaded, else
  // the first runtime plugin found.
  std::string runtimePlugin;
  // Per-plugin configuration, by plugin name, as JSON object text (given to the plugin's init).
  std::map<std::string, std::string> pluginConfig;

  // The file it came from ("" for defaults); for messages.
  std::string source;
};

// Parse YAML text. Every error names the source, line and key:
//   "/etc/shoal/shoald.yaml:7:3: log.level: unknown log level \"loud\" (want ...)"
Result<DaemonConfig> parseConfig(std::string_view yaml, const std::string& source);

// Read and parse a file. A missing file is an error naming the path.
Result<DaemonConfig> loadConfig(const std::string& path);

// The configuration's keys, for --help and the docs test ("log.level", "plugins.dirs", ...).
const std::vector<std::string>& knownKeys();

}  // namespace shoal::config
