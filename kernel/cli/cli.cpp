#include "kernel/cli/cli.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <ostream>
#include <sstream>
#include <thread>

#include "kernel/api/api_client.h"

#ifndef SHOAL_VERSION
#define SHOAL_VERSION "0.0.0"
#endif

namespace shoal::cli {
namespace {

struct Flag {
  std::string name;    // long name, without "--"
  char shortName = 0;  // 0 when none
  bool takesValue = false;
  std::string help;
  std::string defaultValue;
};

struct Invocation;

struct Command {
  std::string path;     // "info", "plugin ls"
  std::string usage;    // after "Usage:  shoal "
  std::string summary;  // one line
  std::vector<Flag> flags;
  std::size_t maxArgs = 0;
  std::function<int(Invocation&)> run;
  std::vector<std::string> aliases;  // other last words ("list" for "ls")
};

struct Invocation {
  const Command* command = nullptr;
  std::map<std::string, std::string> flags;                // last value of each flag
  std::map<std::string, std::vector<std::string>> values;  // every value, for repeated flags
  std::vector<std::string> args;
  std::string host;
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;

  std::string flag(const std::string& name) const {
    auto it = flags.find(name);
    if (it != flags.end()) return it->second;
    for (const auto& f : command->flags) {
      if (f.name == name) return f.defaultValue;
    }
    return "";
  }
  bool has(const std::string& name) const { return flags.count(name) != 0; }
};

const Flag kFormatFlag{"format", 'f', true, "Format output: \"table\" or \"json\"", "table"};

// ---- output helpers -----------------------------------------------------------------------

// Left-aligned columns separated by three spaces, like Docker's tables.
void printTable(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 3, ' ');
    }
    out << line << '\n';
  }
}

std::string humanBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g%s", bytes, units[u]);
  return buf;
}

std::string capitalise(std::string s) {
  if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
  return s;
}

int daemonError(Invocation& inv, const Status& s) {
  if (s.code() == Status::Code::kUnavailable) {
    *inv.err << s.message() << '\n';
  } else {
    *inv.err << "Error response from daemon: " << s.message() << '\n';
  }
  return kExitError;
}

Result<Poco::JSON::Object::Ptr> parseObject(const std::string& body) {
  try {
    Poco::JSON::Parser parser;
    auto obj = parser.parse(body).extract<Poco::JSON::Object::Ptr>();
    if (!obj) return Status::internal("the daemon sent an empty reply");
    return obj;
  } catch (const Poco::Exception& e) {
    return Status::internal("cannot parse the daemon's reply: " + e.displayText());
  }
}

Result<std::string> getFromDaemon(Invocation& inv, const std::string& path) {
  auto client = api::ApiClient::create(inv.host);
  if (!client) return client.status();
  return client->call("GET", path);
}

Result<std::string> postToDaemon(Invocation& inv, const std::string& path,
                                 const std::string& body = "") {
  auto client = api::ApiClient::create(inv.host);
  if (!client) return client.status();
  return client->call("POST", path, body);
}

// Durations as Docker's flags take them ("2160h", "30m", "1h30m0s"; no days). Returns seconds.
Result<int64_t> parseDuration(const std::string& text) {
  if (text.empty()) return Status::invalidArgument("empty duration");
  int64_t total = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    if (start == i) return Status::invalidArgument("invalid duration \"" + text + "\"");
    const int64_t n = std::stoll(text.substr(start, i - start));
    std::size_t unitStart = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    const std::string unit = text.substr(unitStart, i - unitStart);
    if (unit == "h") {
      total += n * 3600;
    } else if (unit == "m") {
      total += n * 60;
    } else if (unit == "s") {
      total += n;
    } else {
      return Status::invalidArgument("invalid duration \"" + text + "\": unknown unit \"" + unit +
                                     "\" (want h, m or s)");
    }
  }
  return total;
}

Status checkFormat(const std::string& format) {
  if (format == "table" || format == "json") return Status::ok();
  return Status::invalidArgument("unknown format \"" + format + "\" (want table or json)");
}

// ---- commands -----------------------------------------------------------------------------

int cmdVersion(Invocation& inv) {
  if (Status s = checkFormat(inv.flag("format")); !s) {
    *inv.err << s.message() << '\n';
    return kExitUsage;
  }
  auto body = getFromDaemon(inv, "/info");
  if (inv.flag("format") == "json") {
    Poco::JSON::Object obj;
    Poco::JSON::Object client;
    client.set("version", std::string(SHOAL_VERSION));
    obj.set("client", client);
    if (body) {
      auto info = parseObject(*body);
      if (info) {
        Poco::JSON::Object server;
        server.set("version", (*info)->optValue<std::string>("version", ""));
        server.set("plugin_abi", (*info)->optValue<std::string>("plugin_abi", ""));
        obj.set("server", server);
      }
    }
    obj.stringify(*inv.out);
    *inv.out << '\n';
  } else {
    *inv.out << "Client:\n Version:           " << SHOAL_VERSION << '\n';
    if (body) {
      auto info = parseObject(*body);
      if (info) {
        *inv.out << "\nServer:\n Version:           "
                 << (*info)->optValue<std::string>("version", "")
                 << "\n Plugin ABI:        " << (*info)->optValue<std::string>("plugin_abi", "")
                 << '\n';
      }
    }
  }
  if (!body) return daemonError(inv, body.status());
  return kExitOk;
}

int cmdInfo(Invocation& inv) {
  const std::string format = inv.flag("format");
  if (Status s = checkFormat(format); !s) {
    *inv.err << s.message() << '\n';
    return kExitUsage;
  }
  auto body = getFromDaemon(inv, "/info");
  if (!body) return daemonError(inv, body.status());
  if (format == "json") {
    *inv.out << *body;
    if (body->empty() || body->back() != '\n') *inv.out << '\n';
    return kExitOk;
  }
  auto obj = parseObject(*body);
  if (!obj) return daemonError(inv, obj.status());
  auto& o = *obj;
  std::ostream& out = *inv.out;
  out << "Client:\n Version:    " << SHOAL_VERSION << "\n Context:    " << inv.host << "\n\n";
  out << "Server:\n";
  out << " Server Version: " << o->optValue<std::string>("version", "") << '\n';
  out << " Plugin ABI: " << o->optValue<std::string>("plugin_abi", "") << '\n';
  out << " Plugins:\n";
  if (auto plugins = o->getObject("plugins")) {
    for (const char* kind : {"scheduler", "runtime", "network", "secrets", "storage"}) {
      std::string names;
      if (auto arr = plugins->getArray(kind)) {
        for (std::size_t i = 0; i < arr->size(); ++i) {
          names +=
              (names.empty() ? "" : " ") + arr->getElement<std::string>(static_cast<unsigned>(i));
        }
      }
      out << "  " << capitalise(kind) << ": " << (names.empty() ? "(none)" : names) << '\n';
    }
  }
  std::string swarm = "inactive";
  if (auto s = o->getObject("swarm")) swarm = s->optValue<std::string>("state", "inactive");
  out << " Swarm: " << swarm << '\n';
  if (auto s = o->getObject("swarm"); s && swarm == "active") {
    out << "  NodeID: " << s->optValue<std::string>("node_id", "") << '\n';
    const bool manager = s->optValue<bool>("is_manager", false);
    out << "  Is Manager: " << (manager ? "true" : "false") << '\n';
    if (manager) {
      out << "  ClusterID: " << s->optValue<std::string>("cluster_id", "") << '\n';
      out << "  Managers: " << s->optValue<int64_t>("managers", 0) << '\n';
      out << "  Nodes: " << s->optValue<int64_t>("nodes", 0) << '\n';
      out << "  CA Digest: " << s->optValue<std::string>("ca_digest", "") << '\n';
      if (auto r = s->getObject("raft")) {
        out << "  Raft:\n   ID: " << r->optValue<std::string>("id", "")
            << "\n   Leader: " << r->optValue<std::string>("leader", "")
            << "\n   Term: " << r->optValue<int64_t>("term", 0)
            << "\n   Applied Index: " << r->optValue<int64_t>("applied", 0) << '\n';
      }
      out << "  Node Address: " << s->optValue<std::string>("node_addr", "") << '\n';
    } else {
      // As Docker's: a worker knows the managers it reports to, not the cluster's counts.
      out << "  CA Digest: " << s->optValue<std::string>("ca_digest", "") << '\n';
      out << "  Node Address: " << s->optValue<std::string>("node_addr", "") << '\n';
      out << "  Manager Addresses:\n";
      if (auto addrs = s->getArray("manager_addrs")) {
        for (std::size_t i = 0; i < addrs->size(); ++i) {
          out << "   " << addrs->getElement<std::string>(static_cast<unsigned>(i)) << '\n';
        }
      }
    }
  }
  out << " Kernel Version: " << o->optValue<std::string>("kernel", "") << '\n';
  out << " Operating System: " << o->optValue<std::string>("os", "") << '\n';
  out << " OSType: " << o->optValue<std::string>("os_type", "") << '\n';
  out << " Architecture: " << o->optValue<std::string>("arch", "") << '\n';
  out << " CPUs: " << o->optValue<int64_t>("cpus", 0) << '\n';
  out << " Total Memory: "
      << humanBytes(static_cast<double>(o->optValue<int64_t>("memory_bytes", 0))) << '\n';
  out << " Name: " << o->optValue<std::string>("name", "") << '\n';
  out << " Shoal Root Dir: " << o->optValue<std::string>("data_root", "") << '\n';
  const int64_t refused = o->optValue<int64_t>("plugins_refused", 0);
  if (refused > 0) {
    out << "\nWARNING: " << refused << (refused == 1 ? " plugin was" : " plugins were")
        << " refused at start-up; see 'shoal plugin ls'\n";
  }
  return kExitOk;
}

int cmdPluginLs(Invocation& inv) {
  const std::string format = inv.flag("format");
  if (Status s = checkFormat(format); !s) {
    *inv.err << s.message() << '\n';
    return kExitUsage;
  }
  auto body = getFromDaemon(inv, "/plugins");
  if (!body) return daemonError(inv, body.status());
  auto obj = parseObject(*body);
  if (!obj) return daemonError(inv, obj.status());
  auto plugins = (*obj)->getArray("plugins");
  if (!plugins) return daemonError(inv, Status::internal("the daemon's reply has no plugin list"));
  if (format == "json") {
    plugins->stringify(*inv.out);
    *inv.out << '\n';
  } else if (inv.has("quiet")) {
    for (std::size_t i = 0; i < plugins->size(); ++i) {
      *inv.out << plugins->getObject(static_cast<unsigned>(i))->optValue<std::string>("name", "")
               << '\n';
    }
  } else {
    std::vector<std::vector<std::string>> rows = {{"KIND", "NAME", "VERSION", "ABI"}};
    for (std::size_t i = 0; i < plugins->size(); ++i) {
      auto p = plugins->getObject(static_cast<unsigned>(i));
      rows.push_back({p->optValue<std::string>("kind", ""), p->optValue<std::string>("name", ""),
                      p->optValue<std::string>("version", ""),
                      p->optValue<std::string>("abi", "")});
    }
    printTable(*inv.out, rows);
  }
  if (auto refused = (*obj)->getArray("refused")) {
    for (std::size_t i = 0; i < refused->size(); ++i) {
      auto r = refused->getObject(static_cast<unsigned>(i));
      *inv.err << "WARNING: plugin " << r->optValue<std::string>("path", "")
               << " was refused: " << r->optValue<std::string>("message", "") << '\n';
    }
  }
  return kExitOk;
}

// ---- swarm and nodes ------------------------------------------------------------------------

int usageError(std::ostream& err, const std::string& message, const std::string& helpFor);

void printJoinCommand(std::ostream& out, const std::string& role, const std::string& token,
                      const std::string& addr) {
  out << "To add a " << role << " to this swarm, run the following command:\n\n"
      << "    shoal swarm join --token " << token << " " << addr << "\n\n";
}

// Copies the cluster-setting flags that `swarm init` and `swarm update` share into `req`.
// False (after printing why) when one is malformed.
bool clusterSettingFlags(Invocation& inv, Poco::JSON::Object& req) {
  for (auto [flag, key] : {std::pair{"cert-expiry", "cert_expiry_seconds"},
                           std::pair{"dispatcher-heartbeat", "heartbeat_period_seconds"}}) {
    if (!inv.has(flag)) continue;
    auto seconds = parseDuration(inv.flag(flag));
    if (!seconds) {
      *inv.err << "invalid argument \"" << inv.flag(flag) << "\" for \"--" << flag
               << "\" flag: " << seconds.status().message() << '\n';
      return false;
    }
    req.set(key, *seconds);
  }
  return true;
}

void printUnlockKey(std::ostream& out, const std::string& key) {
  out << "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\n"
      << "command and provide the following key:\n\n    " << key << "\n\n"
      << "Please remember to store this key in a password manager, since without it you\n"
      << "will not be able to restart the manager.\n";
}

int cmdSwarmInit(Invocation& inv) {
  Poco::JSON::Object req;
  if (inv.has("listen-addr")) req.set("listen_addr", inv.flag("listen-addr"));
  if (inv.has("advertise-addr")) req.set("advertise_addr", inv.flag("advertise-addr"));
  if (!clusterSettingFlags(inv, req)) return kExitUsage;
  if (inv.has("autolock")) req.set("autolock", inv.flag("autolock") == "true");
  std::ostringstream body;
  req.stringify(body);
  auto reply = postToDaemon(inv, "/swarm/init", body.str());
  if (!reply) return daemonError(inv, reply.status());
  auto obj = parseObject(*reply);
  if (!obj) return daemonError(inv, obj.status());
  const std::string nodeId = (*obj)->optValue<std::string>("node_id", "");
  *inv.out << "Swarm initialized: current node (" << nodeId << ") is now a manager.\n\n";
  auto token = getFromDaemon(inv, "/swarm/join-token?role=worker");
  if (!token) return daemonError(inv, token.status());
  auto t = parseObject(*token);
  if (!t) return daemonError(inv, t.status());
  printJoinCommand(*inv.out, "worker", (*t)->optValue<std::string>("token", ""),
                   (*t)->optValue<std::string>("addr", ""));
  *inv.out << "To add a manager to this swarm, run 'shoal swarm join-token manager' and follow "
              "the instructions.\n\n";
  if ((*obj)->has("unlock_key")) {
    printUnlockKey(*inv.out, (*obj)->getValue<std::string>("unlock_key"));
  }
  return kExitOk;
}

int cmdSwarmJoin(Invocation& inv) {
  if (inv.args.size() != 1) {
    return usageError(
        *inv.err,
        "\"shoal swarm join\" requires exactly 1 argument.\n\nUsage:  shoal " + inv.command->usage,
        inv.command->path);
  }
  if (!inv.has("token")) {
    *inv.err << "a join token is required: --token SWMTKN-...\n";
    return kExitUsage;
  }
  Poco::JSON::Object req;
  req.set("token", inv.flag("token"));
  req.set("remote_addr", inv.args[0]);
  if (inv.has("advertise-addr")) req.set("advertise_addr", inv.flag("advertise-addr"));
  if (inv.has("listen-addr")) req.set("listen_addr", inv.flag("listen-addr"));
  std::ostringstream body;
  req.stringify(body);
  auto reply = postToDaemon(inv, "/swarm/join", body.str());
  if (!reply) return daemonError(inv, reply.status());
  auto obj = parseObject(*reply);
  const std::string role = obj ? (*obj)->optValue<std::string>("role", "worker") : "worker";
  *inv.out << "This node joined a swarm as a " << role << ".\n";
  return kExitOk;
}

int cmdSwarmJoinToken(Invocation& inv) {
  if (inv.args.size() != 1) {
    return usageError(*inv.err,
                      "\"shoal swarm join-token\" requires exactly 1 argument.\n\nUsage:  shoal " +
                          inv.command->usage,
                      inv.command->path);
  }
  const std::string role = inv.args[0];
  if (role != "worker" && role != "manager") {
    *inv.err << "unknown role " << role << " (want worker or manager)\n";
    return kExitUsage;
  }
  const bool rotate = inv.has("rotate");
  auto reply = rotate ? postToDaemon(inv, "/swarm/join-token/rotate?role=" + role)
                      : getFromDaemon(inv, "/swarm/join-token?role=" + role);
  if (!reply) return daemonError(inv, reply.status());
  auto obj = parseObject(*reply);
  if (!obj) return daemonError(inv, obj.status());
  const std::string token = (*obj)->optValue<std::string>("token", "");
  if (inv.has("quiet")) {
    *inv.out << token << '\n';
    return kExitOk;
  }
  if (rotate) *inv.out << "Successfully rotated " << role << " join token.\n\n";
  printJoinCommand(*inv.out, role, token, (*obj)->optValue<std::string>("addr", ""));
  return kExitOk;
}

int cmdNodeLs(Invocation& inv) {
  const std::string format = inv.flag("format");
  if (Status s = checkFormat(format); !s) {
    *inv.err << s.message() << '\n';
    return kExitUsage;
  }
  auto body = getFromDaemon(inv, "/nodes");
  if (!body) return daemonError(inv, body.status());
  auto obj = parseObject(*body);
  if (!obj) return daemonError(inv, obj.status());
  auto nodes = (*obj)->getArray("nodes");
  if (!nodes) return daemonError(inv, Status::internal("the daemon's reply has no node list"));
  if (format == "json") {
    Poco::JSON::Array objects;
    for (std::size_t i = 0; i < nodes->size(); ++i) {
      objects.add(nodes->getObject(static_cast<unsigned>(i))->get("object"));
    }
    objects.stringify(*inv.out);
    *inv.out << '\n';
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  if (!inv.has("quiet")) {
    rows.push_back(
        {"ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION"});
  }
  for (std::size_t i = 0; i < nodes->size(); ++i) {
    auto n = nodes->getObject(static_cast<unsigned>(i));
    const std::string id = n->optValue<std::string>("id", "");
    if (inv.has("quiet")) {
      rows.push_back({id});
      continue;
    }
    rows.push_back({id + (n->optValue<bool>("self", false) ? " *" : ""),
                    n->optValue<std::string>("hostname", ""),
                    capitalise(n->optValue<std::string>("status", "")),
                    capitalise(n->optValue<std::string>("availability", "")),
                    n->optValue<std::string>("manager_status", ""),
                    n->optValue<std::string>("engine_version", "")});
  }
  printTable(*inv.out, rows);
  return kExitOk;
}

void printNodePretty(std::ostream& out, const Poco::JSON::Object::Ptr& n) {
  auto status = n->getObject("Status");
  auto spec = n->getObject("Spec");
  auto desc = status ? status->getObject("Description") : nullptr;
  auto field = [&](const std::string& label, const std::string& value) {
    out << label << std::string(label.size() < 24 ? 24 - label.size() : 1, ' ') << value << '\n';
  };
  field("ID:", n->optValue<std::string>("ID", ""));
  if (auto labels = n->getObject("Labels"); labels && labels->size() > 0) {
    out << "Labels:\n";
    for (const auto& k : labels->getNames()) {
      out << " - " << k << "=" << labels->optValue<std::string>(k, "") << '\n';
    }
  }
  field("Hostname:", desc ? desc->optValue<std::string>("Hostname", "") : "");
  field("Joined at:", n->optValue<std::string>("CreatedAt", ""));
  out << "Status:\n";
  field(" State:", capitalise(status ? status->optValue<std::string>("State", "") : ""));
  field(" Availability:", capitalise(spec ? spec->optValue<std::string>("Availability", "") : ""));
  field(" Address:", status ? status->optValue<std::string>("Addr", "") : "");
  if (auto m = status ? status->getObject("ManagerStatus") : nullptr) {
    out << "Manager Status:\n";
    field(" Address:", m->optValue<std::string>("Addr", ""));
    field(" Raft Status:", "Reachable");
  }
  if (desc) {
    if (auto p = desc->getObject("Platform")) {
      out << "Platform:\n";
      field(" Operating System:", p->optValue<std::string>("OS", ""));
      field(" Architecture:", p->optValue<std::string>("Architecture", ""));
    }
    if (auto r = desc->getObject("Resources")) {
      out << "Resources:\n";
      field(" CPUs:", std::to_string(r->optValue<int64_t>("NanoCPUs", 0) / 1000000000));
      field(" Memory:", humanBytes(static_cast<double>(r->optValue<int64_t>("MemoryBytes", 0))));
    }
    if (auto e = desc->getObject("Engine")) {
      field("Engine Version:", e->optValue<std::string>("EngineVersion", ""));
    }
  }
}

int cmdNodeInspect(Invocation& inv) {
  if (inv.args.empty()) {
    return usageError(*inv.err,
                      "\"shoal node inspect\" requires at least 1 argument.\n\nUsage:  shoal " +
                          inv.command->usage,
                      inv.command->path);
  }
  Poco::JSON::Array all;
  int rc = kExitOk;
  bool first = true;
  for (const auto& ref : inv.args) {
    auto body = getFromDaemon(inv, "/nodes/inspect?id=" + ref);
    if (!body) {
      rc = daemonError(inv, body.status());
      continue;
    }
    auto obj = parseObject(*body);
    if (!obj) return daemonError(inv, obj.status());
    if (inv.has("pretty")) {
      if (!first) *inv.out << '\n';
      printNodePretty(*inv.out, *obj);
      first = false;
    } else {
      all.add(*obj);
    }
  }
  if (!inv.has("pretty")) {
    if (all.size() == 0) {
      *inv.out << "[]";
    } else {
      all.stringify(*inv.out, 4);
    }
    *inv.out << '\n';
  }
  return rc;
}

int cmdNodeUpdate(Invocation& inv) {
  if (inv.args.size() != 1) {
    return usageError(
        *inv.err,
        "\"shoal node update\" requires exactly 1 argument.\n\nUsage:  shoal " + inv.command->usage,
        inv.command->path);
  }
  Poco::JSON::Object req;
  if (inv.has("availability")) req.set("availability", inv.flag("availability"));
  if (inv.has("role")) req.set("role", inv.flag("role"));
  Poco::JSON::Object add;
  for (const auto& kv : inv.values["label-add"]) {
    auto eq = kv.find('=');
    const std::string key = kv.substr(0, eq);
    if (key.empty()) {
      *inv.err << "invalid argument \"" << kv << "\" for \"--label-add\" flag: empty key\n";
      return kExitUsage;
    }
    add.set(key, eq == std::string::npos ? std::string() : kv.substr(eq + 1));
  }
  if (add.size() > 0) req.set("label_add", add);
  Poco::JSON::Array rm;
  for (const auto& k : inv.values["label-rm"]) rm.add(k);
  if (rm.size() > 0) req.set("label_rm", rm);
  std::ostringstream body;
  req.stringify(body);
  auto reply = postToDaemon(inv, "/nodes/update?id=" + inv.args[0], body.str());
  if (!reply) return daemonError(inv, reply.status());
  *inv.out << inv.args[0] << '\n';
  return kExitOk;
}

int cmdNodeRoleChange(Invocation& inv, const std::string& role) {
  if (inv.args.empty()) {
    return usageError(*inv.err,
                      "\"shoal " + inv.command->path +
                          "\" requires at least 1 argument.\n\nUsage:  shoal " + inv.command->usage,
                      inv.command->path);
  }
  int rc = kExitOk;
  for (const auto& ref : inv.args) {
    auto reply = postToDaemon(inv, "/nodes/update?id=" + ref, "{\"role\":\"" + role + "\"}");
    if (!reply) {
      rc = daemonError(inv, reply.status());
      continue;
    }
    *inv.out << "Node " << ref
             << (role == "manager" ? " promoted to a manager in the swarm.\n"
                                   : " demoted in the swarm.\n");
  }
  return rc;
}

int cmdSwarmUnlock(Invocation& inv) {
  *inv.err << "Please enter unlock key: ";
  std::string key;
  std::getline(std::cin, key);
  if (key.empty()) {
    *inv.err << "\nan unlock key is required (read from standard input)\n";
    return kExitUsage;
  }
  Poco::JSON::Object req;
  req.set("key", key);
  std::ostringstream body;
  req.stringify(body);
  auto reply = postToDaemon(inv, "/swarm/unlock", body.str());
  *inv.err << '\n';
  if (!reply) return daemonError(inv, reply.status());
  return kExitOk;
}

int cmdSwarmUnlockKey(Invocation& inv) {
  auto reply = inv.has("rotate") ? postToDaemon(inv, "/swarm/unlock-key/rotate")
                                 : getFromDaemon(inv, "/swarm/unlock-key");
  if (!reply) return daemonError(inv, reply.status());
  auto obj = parseObject(*reply);
  if (!obj) return daemonError(inv, obj.status());
  const std::string key = (*obj)->optValue<std::string>("unlock_key", "");
  if (inv.has("quiet")) {
    *inv.out << key << '\n';
    return kExitOk;
  }
  if (inv.has("rotate")) *inv.out << "Successfully rotated manager unlock key.\n\n";
  printUnlockKey(*inv.out, key);
  return kExitOk;
}

int cmdSwarmCa(Invocation& inv) {
  if (inv.has("rotate")) {
    auto started = postToDaemon(inv, "/swarm/ca/rotate");
    if (!started) return daemonError(inv, started.status());
  }
  // Like Docker's: a rotation is followed until every node holds a certificate from the new
  // root (unless --detach), then the root is printed.
  std::string last;
  const auto until = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  for (;;) {
    auto reply = getFromDaemon(inv, "/swarm/ca");
    auto obj = reply ? parseObject(*reply) : Result<Poco::JSON::Object::Ptr>(reply.status());
    if (!obj) {
      // While following a rotation, managers restart with their new certificates: a moment
      // without a leader is expected.
      if (!inv.has("rotate") || std::chrono::steady_clock::now() > until) {
        return daemonError(inv, obj.status());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      continue;
    }
    const auto& o = *obj;
    const bool rotating = o->optValue<bool>("rotating", false);
    if (!inv.has("rotate") || inv.has("detach") || !rotating) {
      if (!inv.has("quiet")) *inv.out << o->optValue<std::string>("cert", "");
      return kExitOk;
    }
    const std::string progress =
        "rotated TLS certificates: " + std::to_string(o->optValue<uint64_t>("reissued", 0)) + "/" +
        std::to_string(o->optValue<uint64_t>("nodes", 0)) + " nodes";
    if (progress != last && !inv.has("quiet")) *inv.out << progress << std::endl;
    last = progress;
    if (std::chrono::steady_clock::now() > until) {
      *inv.err << "the root CA rotation is still in progress (" << progress
               << "); follow it with 'shoal swarm ca'\n";
      return kExitError;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

int cmdSwarmUpdate(Invocation& inv) {
  Poco::JSON::Object req;
  if (!clusterSettingFlags(inv, req)) return kExitUsage;
  if (inv.has("task-history-limit")) {
    const std::string text = inv.flag("task-history-limit");
    char* end = nullptr;
    const long long n = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0') {
      *inv.err << "invalid argument \"" << text
               << "\" for \"--task-history-limit\" flag: not a number\n";
      return kExitUsage;
    }
    req.set("task_history_limit", static_cast<int64_t>(n));
  }
  if (inv.has("autolock")) req.set("autolock", inv.flag("autolock") == "true");
  std::ostringstream body;
  req.stringify(body);
  auto reply = postToDaemon(inv, "/swarm/update", body.str());
  if (!reply) return daemonError(inv, reply.status());
  *inv.out << "Swarm updated.\n";
  auto obj = parseObject(*reply);
  if (obj && (*obj)->has("unlock_key")) {
    printUnlockKey(*inv.out, (*obj)->getValue<std::string>("unlock_key"));
  }
  return kExitOk;
}

int cmdNodeRm(Invocation& inv) {
  if (inv.args.empty()) {
    return usageError(
        *inv.err,
        "\"shoal node rm\" requires at least 1 argument.\n\nUsage:  shoal " + inv.command->usage,
        inv.command->path);
  }
  int rc = kExitOk;
  for (const auto& ref : inv.args) {
    auto reply = postToDaemon(inv, "/nodes/rm?id=" + ref + (inv.has("force") ? "&force=1" : ""));
    if (!reply) {
      rc = daemonError(inv, reply.status());
      continue;
    }
    *inv.out << ref << '\n';
  }
  return rc;
}

int cmdSwarmLeave(Invocation& inv) {
  auto reply =
      postToDaemon(inv, std::string("/swarm/leave") + (inv.has("force") ? "?force=1" : ""));
  if (!reply) return daemonError(inv, reply.status());
  *inv.out << "Node left the swarm.\n";
  return kExitOk;
}

const std::vector<Command>& commands() {
  static const std::vector<Command> cmds = {
      {"info", "info [OPTIONS]", "Display system-wide information", {kFormatFlag}, 0, cmdInfo, {}},
      {"version",
       "version [OPTIONS]",
       "Show the Shoal version information",
       {kFormatFlag},
       0,
       cmdVersion,
       {}},
      {"swarm init",
       "swarm init [OPTIONS]",
       "Initialize a swarm",
       {{"advertise-addr", 0, true, "Advertised address (format: \"<ip>[:port]\")", ""},
        {"listen-addr", 0, true, "Listen address (format: \"<ip>[:port]\")", "0.0.0.0:2377"},
        {"cert-expiry", 0, true, "Validity period for node certificates (h|m|s)", "2160h0m0s"},
        {"dispatcher-heartbeat", 0, true, "Dispatcher heartbeat period (h|m|s)", "5s"},
        {"autolock", 0, false,
         "Enable manager autolocking (requiring an unlock key to start a stopped manager)", ""}},
       0,
       cmdSwarmInit,
       {}},
      {"swarm update",
       "swarm update [OPTIONS]",
       "Update the swarm",
       {{"cert-expiry", 0, true, "Validity period for node certificates (h|m|s)", ""},
        {"dispatcher-heartbeat", 0, true, "Dispatcher heartbeat period (h|m|s)", ""},
        {"task-history-limit", 0, true, "Task history retention limit", ""},
        {"autolock", 0, false, "Change manager autolocking setting (true|false)", ""}},
       0,
       cmdSwarmUpdate,
       {}},
      {"swarm ca",
       "swarm ca [OPTIONS]",
       "Display and rotate the root CA",
       {{"rotate", 0, false, "Rotate the swarm CA (every node is issued a new certificate)", ""},
        {"detach", 'd', false, "Exit immediately instead of waiting for the rotation", ""},
        {"quiet", 'q', false, "Suppress progress output", ""}},
       0,
       cmdSwarmCa,
       {}},
      {"swarm unlock",
       "swarm unlock",
       "Unlock swarm (the key is read from standard input)",
       {},
       0,
       cmdSwarmUnlock,
       {}},
      {"swarm unlock-key",
       "swarm unlock-key [OPTIONS]",
       "Manage the unlock key",
       {{"quiet", 'q', false, "Only display token", ""},
        {"rotate", 0, false, "Rotate unlock key", ""}},
       0,
       cmdSwarmUnlockKey,
       {}},
      {"swarm join",
       "swarm join [OPTIONS] HOST:PORT",
       "Join a swarm as a node and/or manager",
       {{"token", 0, true, "Token for entry into the swarm", ""},
        {"advertise-addr", 0, true, "Advertised address (format: \"<ip>[:port]\")", ""},
        {"listen-addr", 0, true, "Listen address (format: \"<ip>[:port]\")", "0.0.0.0:2377"}},
       1,
       cmdSwarmJoin,
       {}},
      {"swarm join-token",
       "swarm join-token [OPTIONS] (worker|manager)",
       "Manage join tokens",
       {{"quiet", 'q', false, "Only display token", ""},
        {"rotate", 0, false, "Rotate join token", ""}},
       1,
       cmdSwarmJoinToken,
       {}},
      {"node ls",
       "node ls [OPTIONS]",
       "List nodes in the swarm",
       {kFormatFlag, {"quiet", 'q', false, "Only display IDs", ""}},
       0,
       cmdNodeLs,
       {"list"}},
      {"node inspect",
       "node inspect [OPTIONS] self|NODE [NODE...]",
       "Display detailed information on one or more nodes",
       {{"pretty", 0, false, "Print the information in a human friendly format", ""}},
       64,
       cmdNodeInspect,
       {}},
      {"node update",
       "node update [OPTIONS] NODE",
       "Update a node",
       {{"availability", 0, true, "Availability of the node (\"active\"|\"pause\"|\"drain\")", ""},
        {"label-add", 0, true, "Add or update a node label (key=value)", ""},
        {"label-rm", 0, true, "Remove a node label if exists", ""},
        {"role", 0, true, "Role of the node (\"worker\"|\"manager\")", ""}},
       1,
       cmdNodeUpdate,
       {}},
      {"node promote",
       "node promote NODE [NODE...]",
       "Promote one or more nodes to manager in the swarm",
       {},
       64,
       [](Invocation& inv) { return cmdNodeRoleChange(inv, "manager"); },
       {}},
      {"node demote",
       "node demote NODE [NODE...]",
       "Demote one or more nodes from manager in the swarm",
       {},
       64,
       [](Invocation& inv) { return cmdNodeRoleChange(inv, "worker"); },
       {}},
      {"node rm",
       "node rm [OPTIONS] NODE [NODE...]",
       "Remove one or more nodes from the swarm",
       {{"force", 'f', false, "Force remove a node from the swarm", ""}},
       64,
       cmdNodeRm,
       {"remove"}},
      {"swarm leave",
       "swarm leave [OPTIONS]",
       "Leave the swarm",
       {{"force", 'f', false, "Force this node to leave the swarm, ignoring warnings", ""}},
       0,
       cmdSwarmLeave,
       {}},
      {"plugin ls",
       "plugin ls [OPTIONS]",
       "List plugins",
       {kFormatFlag, {"quiet", 'q', false, "Only display plugin names", ""}},
       0,
       cmdPluginLs,
       {"list"}},
  };
  return cmds;
}

// Management commands: a first word with subcommands.
const std::map<std::string, std::string>& groups() {
  static const std::map<std::string, std::string> g = {
      {"node", "Manage Swarm nodes"}, {"plugin", "Manage plugins"}, {"swarm", "Manage Swarm"}};
  return g;
}

void printMainHelp(std::ostream& out) {
  out << "\nUsage:  shoal [OPTIONS] COMMAND\n\n"
         "A container orchestrator for small teams, in the spirit of Docker Swarm mode\n\n"
         "Options:\n"
         "  -H, --host string   Daemon socket to connect to (default \""
      << api::ApiClient::kDefaultHost
      << "\")\n"
         "  -h, --help          Print usage\n"
         "  -v, --version       Print version information and quit\n\n"
         "Management Commands:\n";
  for (const auto& [name, summary] : groups()) {
    out << "  " << name << std::string(name.size() < 12 ? 12 - name.size() : 1, ' ') << summary
        << '\n';
  }
  out << "\nCommands:\n";
  for (const auto& c : commands()) {
    if (c.path.find(' ') != std::string::npos) continue;
    out << "  " << c.path << std::string(c.path.size() < 12 ? 12 - c.path.size() : 1, ' ')
        << c.summary << '\n';
  }
  out << "\nRun 'shoal COMMAND --help' for more information on a command.\n";
}

void printGroupHelp(std::ostream& out, const std::string& group) {
  out << "\nUsage:  shoal " << group << " COMMAND\n\n" << groups().at(group) << "\n\nCommands:\n";
  for (const auto& c : commands()) {
    if (c.path.rfind(group + " ", 0) != 0) continue;
    std::string sub = c.path.substr(group.size() + 1);
    out << "  " << sub << std::string(sub.size() < 12 ? 12 - sub.size() : 1, ' ') << c.summary
        << '\n';
  }
  out << "\nRun 'shoal " << group << " COMMAND --help' for more information on a command.\n";
}

void printCommandHelp(std::ostream& out, const Command& c) {
  out << "\nUsage:  shoal " << c.usage << "\n\n" << c.summary << '\n';
  if (!c.aliases.empty()) {
    std::string base = c.path.substr(0, c.path.rfind(' ') + 1);
    out << "\nAliases:\n  " << c.path;
    for (const auto& a : c.aliases) out << ", " << base << a;
    out << '\n';
  }
  out << "\nOptions:\n";
  std::vector<std::pair<std::string, std::string>> lines;
  for (const auto& f : c.flags) {
    std::string left = f.shortName ? std::string("-") + f.shortName + ", " : "    ";
    left += "--" + f.name + (f.takesValue ? " string" : "");
    std::string help = f.help;
    if (f.takesValue && !f.defaultValue.empty()) help += " (default \"" + f.defaultValue + "\")";
    lines.emplace_back(left, help);
  }
  lines.emplace_back("-h, --help", "Print usage");
  std::size_t w = 0;
  for (const auto& l : lines) w = std::max(w, l.first.size());
  for (const auto& l : lines) {
    out << "  " << l.first << std::string(w - l.first.size() + 3, ' ') << l.second << '\n';
  }
}

int usageError(std::ostream& err, const std::string& message, const std::string& helpFor) {
  err << message << "\nSee 'shoal " << (helpFor.empty() ? "" : helpFor + " ") << "--help'.\n";
  return kExitUsage;
}

const Command* findCommand(const std::string& path) {
  for (const auto& c : commands()) {
    if (c.path == path) return &c;
    std::string base = c.path.substr(0, c.path.rfind(' ') + 1);
    for (const auto& a : c.aliases) {
      if (base + a == path) return &c;
    }
  }
  return nullptr;
}

}  // namespace

int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err,
        const std::string& envHost) {
  std::string host = envHost.empty() ? api::ApiClient::kDefaultHost : envHost;
  std::size_t i = 0;
  // Global options, before the command.
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      printMainHelp(out);
      return kExitOk;
    }
    if (a == "-v" || a == "--version") {
      out << "Shoal version " << SHOAL_VERSION << '\n';
      return kExitOk;
    }
    if (a == "-H" || a == "--host") {
      if (i + 1 >= args.size()) return usageError(err, "flag needs an argument: " + a, "");
      host = args[++i];
    } else if (a.rfind("--host=", 0) == 0) {
      host = a.substr(7);
    } else if (!a.empty() && a[0] == '-') {
      return usageError(err, "unknown flag: " + a, "");
    } else {
      break;
    }
  }
  if (i >= args.size()) {
    printMainHelp(out);
    return kExitOk;
  }
  std::string path = args[i++];
  if (groups().count(path)) {
    if (i >= args.size() || args[i] == "--help" || args[i] == "-h") {
      printGroupHelp(out, path);
      return kExitOk;
    }
    if (args[i][0] == '-') return usageError(err, "unknown flag: " + args[i], path);
    std::string sub = args[i++];
    if (!findCommand(path + " " + sub)) {
      return usageError(
          err, "shoal " + path + ": '" + sub + "' is not a shoal " + path + " command.", path);
    }
    path += " " + sub;
  }
  const Command* cmd = findCommand(path);
  if (cmd == nullptr) {
    err << "shoal: '" << path << "' is not a shoal command.\nSee 'shoal --help'\n";
    return kExitError;
  }
  Invocation inv;
  inv.command = cmd;
  inv.host = host;
  inv.out = &out;
  inv.err = &err;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      printCommandHelp(out, *cmd);
      return kExitOk;
    }
    if (a == "--") {
      for (++i; i < args.size(); ++i) inv.args.push_back(args[i]);
      break;
    }
    if (a.size() < 2 || a[0] != '-') {
      inv.args.push_back(a);
      continue;
    }
    const Flag* flag = nullptr;
    std::string value;
    bool hasInline = false;
    if (a.rfind("--", 0) == 0) {
      std::string name = a.substr(2);
      if (auto eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        hasInline = true;
      }
      for (const auto& f : cmd->flags) {
        if (f.name == name) flag = &f;
      }
    } else if (a.size() == 2) {
      for (const auto& f : cmd->flags) {
        if (f.shortName == a[1]) flag = &f;
      }
    }
    if (flag == nullptr) return usageError(err, "unknown flag: " + a, cmd->path);
    if (flag->takesValue) {
      if (!hasInline) {
        if (i + 1 >= args.size()) return usageError(err, "flag needs an argument: " + a, cmd->path);
        value = args[++i];
      }
      inv.flags[flag->name] = value;
      inv.values[flag->name].push_back(value);
    } else {
      // A switch may be spelled out: --autolock=false.
      if (hasInline && value != "true" && value != "false") {
        return usageError(err,
                          "invalid argument \"" + value + "\" for \"" + a.substr(0, a.find('=')) +
                              "\": want true or false",
                          cmd->path);
      }
      inv.flags[flag->name] = hasInline ? value : "true";
    }
  }
  if (inv.args.size() > cmd->maxArgs) {
    return usageError(
        err,
        "\"shoal " + cmd->path + "\" accepts no arguments." + "\n\nUsage:  shoal " + cmd->usage,
        cmd->path);
  }
  return cmd->run(inv);
}

}  // namespace shoal::cli
