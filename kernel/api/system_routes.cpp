#include "kernel/api/system_routes.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <cctype>
#include <fstream>
#include <sstream>

namespace shoal::api {
namespace {

std::string stringify(const Poco::JSON::Object& obj) {
  std::ostringstream out;
  obj.stringify(out);
  return out.str();
}

// PRETTY_NAME from os-release, as Docker shows it.
std::string osPrettyName() {
  for (const char* path : {"/etc/os-release", "/usr/lib/os-release"}) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("PRETTY_NAME=", 0) == 0) {
        std::string v = line.substr(12);
        if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'')) v = v.substr(1, v.size() - 2);
        return v;
      }
    }
  }
  return "";
}

Response info(const plugin::PluginHost& plugins, const DaemonFacts& facts) {
  Poco::JSON::Object obj;
  utsname u{};
  uname(&u);
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  obj.set("name", std::string(host));
  obj.set("version", facts.version);
  obj.set("plugin_abi", std::to_string(SHOAL_ABI_MAJOR) + "." + std::to_string(SHOAL_ABI_MINOR));
  obj.set("os", osPrettyName());
  std::string osType(u.sysname);
  for (char& c : osType) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  obj.set("os_type", osType);
  obj.set("kernel", std::string(u.release));
  obj.set("arch", std::string(u.machine));
  obj.set("cpus", static_cast<int64_t>(sysconf(_SC_NPROCESSORS_ONLN)));
  obj.set("memory_bytes", static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) *
                              static_cast<int64_t>(sysconf(_SC_PAGESIZE)));
  obj.set("data_root", facts.dataRoot);
  obj.set("socket", facts.socketPath);
  obj.set("pid", facts.pid);
  obj.set("started_unix_nanos", facts.startedUnixNanos);
  Poco::JSON::Object swarm;
  swarm.set("state", std::string("inactive"));
  if (facts.describeSwarm) facts.describeSwarm(swarm);
  obj.set("swarm", swarm);
  Poco::JSON::Object byKind;
  for (plugin::Kind k : plugin::kAllKinds) {
    Poco::JSON::Array names;
    for (auto* inst : plugins.ofKind(k)) names.add(inst->info().name);
    byKind.set(std::string(plugin::kindName(k)), names);
  }
  obj.set("plugins", byKind);
  obj.set("plugins_refused", static_cast<int64_t>(plugins.refusals().size()));
  return Response::json(stringify(obj));
}

Response pluginList(const plugin::PluginHost& plugins) {
  Poco::JSON::Object obj;
  Poco::JSON::Array list;
  for (const auto& p : plugins.list()) {
    Poco::JSON::Object o;
    o.set("kind", std::string(plugin::kindName(p.kind)));
    o.set("name", p.name);
    o.set("version", p.version);
    o.set("abi", std::to_string(p.abiMajor) + "." + std::to_string(p.abiMinor));
    o.set("path", p.path);
    list.add(o);
  }
  obj.set("plugins", list);
  Poco::JSON::Array refused;
  for (const auto& r : plugins.refusals()) {
    Poco::JSON::Object o;
    o.set("path", r.path);
    o.set("message", r.message);
    refused.add(o);
  }
  obj.set("refused", refused);
  Poco::JSON::Array disabled;
  for (const auto& d : plugins.disabledSkipped()) disabled.add(d);
  obj.set("disabled", disabled);
  return Response::json(stringify(obj));
}

}  // namespace

void addSystemRoutes(Router& router, const plugin::PluginHost& plugins, DaemonFacts facts) {
  router.add("GET", "/info", [&plugins, facts](const Request&) { return info(plugins, facts); });
  router.add("GET", "/plugins", [&plugins](const Request&) { return pluginList(plugins); });
}

}  // namespace shoal::api
