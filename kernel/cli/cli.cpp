#include "kernel/cli/cli.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <sstream>
#include <thread>

#include <unistd.h>

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
  // Flags end at the first argument (service create IMAGE [COMMAND] [ARG...], as Docker's).
  bool stopAtFirstArg = false;
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
                                 const std::string& body = "", int timeoutSeconds = 60) {
  auto client = api::ApiClient::create(inv.host);
  if (!client) return client.status();
  client->setTimeoutSeconds(timeoutSeconds);
  return client->call("POST", path, body);
}

// Image pulls and loads wait as long as the daemon lets them (image_routes.cpp: 30 min).
constexpr int kImageOpSeconds = 1830;

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

// `shoal X inspect REF...`: each object from `path` + REF as a JSON array, or printed by
// `pretty` with --pretty.
int inspectEach(Invocation& inv, const std::string& path,
                const std::function<void(std::ostream&, const Poco::JSON::Object::Ptr&)>& pretty) {
  Poco::JSON::Array all;
  int rc = kExitOk;
  bool first = true;
  for (const auto& ref : inv.args) {
    auto body = getFromDaemon(inv, path + ref);
    if (!body) {
      rc = daemonError(inv, body.status());
      continue;
    }
    auto obj = parseObject(*body);
    if (!obj) return daemonError(inv, obj.status());
    if (inv.has("pretty")) {
      if (!first) *inv.out << '\n';
      pretty(*inv.out, *obj);
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

// A usage error unless the command got at least `min` arguments.
std::optional<int> needArgs(Invocation& inv, std::size_t min, bool exactly = false) {
  if (exactly ? inv.args.size() == min : inv.args.size() >= min) return std::nullopt;
  const std::string count = std::to_string(min) + (min == 1 ? " argument" : " arguments");
  return usageError(*inv.err,
                    "\"shoal " + inv.command->path + "\" requires " +
                        (exactly ? "exactly " : "at least ") + count + ".\n\nUsage:  shoal " +
                        inv.command->usage,
                    inv.command->path);
}

// `shoal X ls`: the array `key` of `path`'s reply, as JSON with --format json, else a table of
// `header` and one `row` per object (only IDs with -q).
int listObjects(
    Invocation& inv, const std::string& path, const std::string& key,
    const std::vector<std::string>& header,
    const std::function<std::vector<std::string>(const Poco::JSON::Object::Ptr&)>& row) {
  const std::string format = inv.flag("format");
  if (Status s = checkFormat(format); !s) {
    *inv.err << s.message() << '\n';
    return kExitUsage;
  }
  auto body = getFromDaemon(inv, path);
  if (!body) return daemonError(inv, body.status());
  auto obj = parseObject(*body);
  if (!obj) return daemonError(inv, obj.status());
  auto list = (*obj)->getArray(key);
  if (format == "json") {
    if (list) list->stringify(*inv.out);
    *inv.out << '\n';
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  if (!inv.has("quiet")) rows.push_back(header);
  for (std::size_t i = 0; list && i < list->size(); ++i) {
    auto o = list->getObject(static_cast<unsigned>(i));
    if (inv.has("quiet")) {
      rows.push_back({o->optValue<std::string>("ID", "")});
    } else {
      rows.push_back(row(o));
    }
  }
  printTable(*inv.out, rows);
  return kExitOk;
}

// `shoal X rm REF...`: POST `path` + REF for each, printing each one removed.
int removeObjects(Invocation& inv, const std::string& path) {
  if (auto usage = needArgs(inv, 1)) return *usage;
  int rc = kExitOk;
  for (const auto& ref : inv.args) {
    auto reply = postToDaemon(inv, path + ref);
    if (!reply) {
      rc = daemonError(inv, reply.status());
      continue;
    }
    *inv.out << ref << '\n';
  }
  return rc;
}

int cmdNodeInspect(Invocation& inv) {
  if (auto usage = needArgs(inv, 1)) return *usage;
  return inspectEach(inv, "/nodes/inspect?id=", printNodePretty);
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
  if (inv.has("overlay-key-rotation")) {
    auto seconds = parseDuration(inv.flag("overlay-key-rotation"));
    if (!seconds) {
      *inv.err << "invalid argument \"" << inv.flag("overlay-key-rotation")
               << "\" for \"--overlay-key-rotation\" flag: " << seconds.status().message() << '\n';
      return kExitUsage;
    }
    req.set("overlay_key_rotation_seconds", *seconds);
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

// ---- services -----------------------------------------------------------------------------

using JObject = Poco::JSON::Object;

// Go-style durations as Docker's service flags take them ("10s", "1m30s", "500ms", "1.5h").
// Returns nanoseconds.
Result<int64_t> parseNanos(const std::string& text) {
  if (text.empty()) return Status::invalidArgument("invalid duration \"\"");
  if (text == "0") return int64_t{0};
  double total = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t start = i;
    while (i < text.size() &&
           (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) {
      ++i;
    }
    if (start == i) return Status::invalidArgument("invalid duration \"" + text + "\"");
    double n = 0;
    try {
      n = std::stod(text.substr(start, i - start));
    } catch (const std::exception&) {
      return Status::invalidArgument("invalid duration \"" + text + "\"");
    }
    const std::size_t unitStart = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    const std::string unit = text.substr(unitStart, i - unitStart);
    static const std::map<std::string, double> kUnits = {{"h", 3600e9}, {"m", 60e9}, {"s", 1e9},
                                                         {"ms", 1e6},   {"us", 1e3}, {"ns", 1}};
    auto u = kUnits.find(unit);
    if (u == kUnits.end()) {
      return Status::invalidArgument(
          "invalid duration \"" + text +
          "\": " + (unit.empty() ? "missing unit" : "unknown unit \"" + unit + "\""));
    }
    total += n * u->second;
  }
  if (total > 9.2e18) return Status::invalidArgument("invalid duration \"" + text + "\": too long");
  return static_cast<int64_t>(total);
}

// Docker's memory sizes: a number with an optional b, k, m, g or t suffix (binary units).
Result<int64_t> parseBytes(const std::string& text) {
  std::size_t end = 0;
  double n = 0;
  try {
    n = std::stod(text, &end);
  } catch (const std::exception&) {
    return Status::invalidArgument("invalid size: \"" + text + "\"");
  }
  std::string unit = text.substr(end);
  std::transform(unit.begin(), unit.end(), unit.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!unit.empty() && unit.back() == 'b' && unit.size() > 1) unit.pop_back();
  static const std::map<std::string, double> kUnits = {{"", 1},
                                                       {"b", 1},
                                                       {"k", 1024.0},
                                                       {"m", 1048576.0},
                                                       {"g", 1073741824.0},
                                                       {"t", 1099511627776.0}};
  auto u = kUnits.find(unit);
  if (u == kUnits.end() || n < 0) return Status::invalidArgument("invalid size: \"" + text + "\"");
  return static_cast<int64_t>(n * u->second);
}

Result<int64_t> parseCpus(const std::string& text) {
  try {
    std::size_t end = 0;
    const double n = std::stod(text, &end);
    if (end == text.size() && n >= 0) return static_cast<int64_t>(n * 1e9);
  } catch (const std::exception&) {
  }
  return Status::invalidArgument("invalid CPU count: \"" + text + "\"");
}

Result<int64_t> parseCount(const std::string& text, const std::string& flag) {
  try {
    std::size_t end = 0;
    const long long n = std::stoll(text, &end);
    if (end == text.size() && n >= 0) return static_cast<int64_t>(n);
  } catch (const std::exception&) {
  }
  return Status::invalidArgument("invalid argument \"" + text + "\" for \"--" + flag +
                                 "\" flag: want a non-negative integer");
}

// The object at `path` under `root`, created on the way when missing.
JObject::Ptr at(JObject::Ptr root, std::initializer_list<const char*> path) {
  JObject::Ptr o = root;
  for (const char* name : path) {
    JObject::Ptr next = o->has(name) ? o->getObject(name) : nullptr;
    if (!next) {
      next = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
      o->set(name, next);
    }
    o = next;
  }
  return o;
}

Poco::JSON::Array::Ptr arrayAt(JObject::Ptr o, const std::string& name) {
  Poco::JSON::Array::Ptr a = o->has(name) ? o->getArray(name) : nullptr;
  if (!a) {
    a = new Poco::JSON::Array;
    o->set(name, a);
  }
  return a;
}

std::pair<std::string, std::string> splitKeyValue(const std::string& text) {
  const auto eq = text.find('=');
  if (eq == std::string::npos) return {text, ""};
  return {text.substr(0, eq), text.substr(eq + 1)};
}

// "k=v,k2=v2" (Docker's --mount / --publish / --secret long forms).
std::map<std::string, std::string> csvFields(const std::string& text) {
  std::map<std::string, std::string> out;
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, ',')) {
    auto [k, v] = splitKeyValue(part);
    out[k] = v;
  }
  return out;
}

Result<JObject::Ptr> parsePort(const std::string& text) {
  JObject::Ptr p = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
  auto number = [&](const std::string& s) -> Result<int64_t> {
    try {
      std::size_t end = 0;
      const long n = std::stol(s, &end);
      if (end == s.size() && n >= 0 && n <= 65535) return static_cast<int64_t>(n);
    } catch (const std::exception&) {
    }
    return Status::invalidArgument("invalid port \"" + s + "\" in --publish " + text);
  };
  if (text.find('=') != std::string::npos) {
    auto f = csvFields(text);
    for (const auto& [k, v] : f) {
      if (k != "target" && k != "published" && k != "protocol" && k != "mode") {
        return Status::invalidArgument("invalid field \"" + k + "\" in --publish " + text);
      }
    }
    if (!f.count("target"))
      return Status::invalidArgument("--publish " + text + " needs target=PORT");
    auto target = number(f["target"]);
    if (!target) return target.status();
    p->set("Protocol", f.count("protocol") ? f["protocol"] : "tcp");
    p->set("TargetPort", *target);
    if (f.count("published")) {
      auto published = number(f["published"]);
      if (!published) return published.status();
      p->set("PublishedPort", *published);
    }
    p->set("PublishMode", f.count("mode") ? f["mode"] : "ingress");
    return p;
  }
  std::string spec = text, proto = "tcp";
  if (auto slash = spec.find('/'); slash != std::string::npos) {
    proto = spec.substr(slash + 1);
    spec = spec.substr(0, slash);
  }
  std::string published, target = spec;
  if (auto colon = spec.find(':'); colon != std::string::npos) {
    published = spec.substr(0, colon);
    target = spec.substr(colon + 1);
  }
  auto t = number(target);
  if (!t) return t.status();
  p->set("Protocol", proto);
  p->set("TargetPort", *t);
  if (!published.empty()) {
    auto pub = number(published);
    if (!pub) return pub.status();
    p->set("PublishedPort", *pub);
  }
  p->set("PublishMode", std::string("ingress"));
  return p;
}

Result<JObject::Ptr> parseMount(const std::string& text) {
  JObject::Ptr m = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
  auto f = csvFields(text);
  m->set("Type", f.count("type") ? f["type"] : "volume");
  for (const auto& [k, v] : f) {
    if (k == "type") continue;
    if (k == "source" || k == "src") {
      m->set("Source", v);
    } else if (k == "target" || k == "dst" || k == "destination") {
      m->set("Target", v);
    } else if (k == "readonly" || k == "ro") {
      m->set("ReadOnly", v.empty() || v == "true" || v == "1");
    } else {
      return Status::invalidArgument("invalid field \"" + k + "\" in --mount " + text);
    }
  }
  if (!m->has("Target")) return Status::invalidArgument("--mount " + text + " needs target=PATH");
  return m;
}

JObject::Ptr parseReference(const std::string& text, const std::string& kind) {
  JObject::Ptr r = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
  std::string source = text, target = text;
  if (text.find('=') != std::string::npos) {
    auto f = csvFields(text);
    source = f.count("source") ? f["source"] : f["src"];
    target = f.count("target") ? f["target"] : source;
  }
  r->set(kind + "Name", source);
  JObject::Ptr file = new JObject;
  file->set("Name", target);
  r->set("File", file);
  return r;
}

// --network NAME, or Docker's long form name=NAME[,alias=A]... .
Result<JObject::Ptr> parseNetworkFlag(const std::string& v) {
  JObject::Ptr n = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
  if (v.find('=') == std::string::npos) {
    if (v.empty()) return Status::invalidArgument("--network needs a network name");
    n->set("Target", v);
    return n;
  }
  Poco::JSON::Array::Ptr aliases = new Poco::JSON::Array;
  std::string target;
  std::stringstream fields(v);
  std::string field;
  while (std::getline(fields, field, ',')) {
    auto [key, value] = splitKeyValue(field);
    if (key == "name" || key == "target") {
      target = value;
    } else if (key == "alias") {
      if (value.empty()) return Status::invalidArgument("--network " + v + ": empty alias");
      aliases->add(value);
    } else {
      return Status::invalidArgument("--network " + v + ": unknown field \"" + key +
                                     "\" (want name and alias)");
    }
  }
  if (target.empty()) return Status::invalidArgument("--network " + v + ": no name=");
  n->set("Target", target);
  if (aliases->size() > 0) n->set("Aliases", aliases);
  return n;
}

// Applies the flags that create and update share to `spec` (Docker's ServiceSpec).
Status applySpecFlags(const Invocation& inv, JObject::Ptr spec) {
  // Enumerations are checked here, as Docker's flag parsing does (a usage error), before
  // the daemon would refuse them.
  const std::vector<std::pair<std::string, std::vector<std::string>>> kChoices = {
      {"restart-condition", {"none", "on-failure", "any"}},
      {"update-failure-action", {"pause", "continue", "rollback"}},
      {"rollback-failure-action", {"pause", "continue"}},
      {"update-order", {"stop-first", "start-first"}},
      {"rollback-order", {"stop-first", "start-first"}},
      {"endpoint-mode", {"vip", "dnsrr"}}};
  for (const auto& [flag, allowed] : kChoices) {
    if (!inv.has(flag)) continue;
    if (std::find(allowed.begin(), allowed.end(), inv.flag(flag)) != allowed.end()) continue;
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    return Status::invalidArgument("invalid argument \"" + inv.flag(flag) + "\" for \"--" + flag +
                                   "\" flag: want one of " + list);
  }
  auto task = at(spec, {"TaskTemplate"});
  auto container = at(spec, {"TaskTemplate", "ContainerSpec"});
  auto durationFlag = [&](const std::string& flag, JObject::Ptr o, const char* key) -> Status {
    if (!inv.has(flag)) return Status::ok();
    auto ns = parseNanos(inv.flag(flag));
    if (!ns)
      return Status::invalidArgument("invalid argument \"" + inv.flag(flag) + "\" for \"--" + flag +
                                     "\" flag: " + ns.status().message());
    o->set(key, *ns);
    return Status::ok();
  };
  auto countFlag = [&](const std::string& flag, JObject::Ptr o, const char* key) -> Status {
    if (!inv.has(flag)) return Status::ok();
    auto n = parseCount(inv.flag(flag), flag);
    if (!n) return n.status();
    o->set(key, *n);
    return Status::ok();
  };
  auto stringFlag = [&](const std::string& flag, JObject::Ptr o, const char* key) {
    if (inv.has(flag)) o->set(key, inv.flag(flag));
  };
  stringFlag("hostname", container, "Hostname");
  stringFlag("workdir", container, "Dir");
  stringFlag("user", container, "User");
  stringFlag("stop-signal", container, "StopSignal");
  // Boolean flags as Docker's: `--tty` sets, `--tty=false` clears (on update too).
  if (inv.has("read-only")) container->set("ReadOnly", inv.flag("read-only") == "true");
  if (inv.has("init")) container->set("Init", inv.flag("init") == "true");
  if (inv.has("tty")) container->set("TTY", inv.flag("tty") == "true");
  if (Status s = durationFlag("stop-grace-period", container, "StopGracePeriod"); !s) return s;
  // Resources.
  auto resource = [&](const std::string& flag, const char* group, const char* key,
                      bool cpu) -> Status {
    if (!inv.has(flag)) return Status::ok();
    auto v = cpu ? parseCpus(inv.flag(flag)) : parseBytes(inv.flag(flag));
    if (!v)
      return Status::invalidArgument("invalid argument \"" + inv.flag(flag) + "\" for \"--" + flag +
                                     "\" flag: " + v.status().message());
    at(task, {"Resources", group})->set(key, *v);
    return Status::ok();
  };
  if (Status s = resource("reserve-cpu", "Reservations", "NanoCPUs", true); !s) return s;
  if (Status s = resource("reserve-memory", "Reservations", "MemoryBytes", false); !s) return s;
  if (Status s = resource("limit-cpu", "Limits", "NanoCPUs", true); !s) return s;
  if (Status s = resource("limit-memory", "Limits", "MemoryBytes", false); !s) return s;
  if (inv.has("limit-pids")) {
    auto n = parseCount(inv.flag("limit-pids"), "limit-pids");
    if (!n) return n.status();
    at(task, {"Resources", "Limits"})->set("Pids", *n);
  }
  // Restart policy.
  if (inv.has("restart-condition"))
    at(task, {"RestartPolicy"})->set("Condition", inv.flag("restart-condition"));
  if (Status s = durationFlag("restart-delay", at(task, {"RestartPolicy"}), "Delay"); !s) return s;
  if (Status s = countFlag("restart-max-attempts", at(task, {"RestartPolicy"}), "MaxAttempts"); !s)
    return s;
  if (Status s = durationFlag("restart-window", at(task, {"RestartPolicy"}), "Window"); !s)
    return s;
  // Update and rollback configs.
  for (const std::string prefix : {"update", "rollback"}) {
    auto cfg = at(spec, {prefix == "update" ? "UpdateConfig" : "RollbackConfig"});
    if (Status s = countFlag(prefix + "-parallelism", cfg, "Parallelism"); !s) return s;
    if (Status s = durationFlag(prefix + "-delay", cfg, "Delay"); !s) return s;
    if (Status s = durationFlag(prefix + "-monitor", cfg, "Monitor"); !s) return s;
    stringFlag(prefix + "-failure-action", cfg, "FailureAction");
    stringFlag(prefix + "-order", cfg, "Order");
    if (inv.has(prefix + "-max-failure-ratio")) {
      try {
        cfg->set("MaxFailureRatio", std::stod(inv.flag(prefix + "-max-failure-ratio")));
      } catch (const std::exception&) {
        return Status::invalidArgument("invalid argument \"" +
                                       inv.flag(prefix + "-max-failure-ratio") + "\" for \"--" +
                                       prefix + "-max-failure-ratio\" flag");
      }
    }
    if (cfg->size() == 0) spec->remove(prefix == "update" ? "UpdateConfig" : "RollbackConfig");
  }
  // Placement.
  if (Status s = countFlag("replicas-max-per-node", at(task, {"Placement"}), "MaxReplicas"); !s)
    return s;
  stringFlag("placement-policy", at(task, {"Placement"}), "Policy");
  stringFlag("constraint-lua", at(task, {"Placement"}), "LuaConstraint");
  if (inv.has("endpoint-mode")) at(spec, {"EndpointSpec"})->set("Mode", inv.flag("endpoint-mode"));
  // Health checks.
  auto health = [&]() { return at(container, {"Healthcheck"}); };
  if (inv.has("health-cmd")) {
    Poco::JSON::Array::Ptr test = new Poco::JSON::Array;
    test->add(std::string("CMD-SHELL"));
    test->add(inv.flag("health-cmd"));
    health()->set("Test", test);
  }
  if (inv.has("no-healthcheck")) {
    Poco::JSON::Array::Ptr test = new Poco::JSON::Array;
    test->add(std::string("NONE"));
    health()->set("Test", test);
  }
  if (Status s = durationFlag("health-interval", health(), "Interval"); !s) return s;
  if (Status s = durationFlag("health-timeout", health(), "Timeout"); !s) return s;
  if (Status s = durationFlag("health-start-period", health(), "StartPeriod"); !s) return s;
  if (Status s = countFlag("health-retries", health(), "Retries"); !s) return s;
  if (health()->size() == 0) container->remove("Healthcheck");
  for (const char* group : {"RestartPolicy", "Placement"}) {
    if (task->getObject(group) && task->getObject(group)->size() == 0) task->remove(group);
  }
  return Status::ok();
}

// Appends each value of a repeated flag, converted by `fn`, to the array `name` of `o`.
template <class F>
Status appendEach(const Invocation& inv, const std::string& flag, JObject::Ptr o,
                  const std::string& name, F fn) {
  auto it = inv.values.find(flag);
  if (it == inv.values.end()) return Status::ok();
  auto a = arrayAt(o, name);
  for (const auto& v : it->second) {
    auto item = fn(v);
    if (!item) return item.status();
    a->add(*item);
  }
  return Status::ok();
}

Result<Poco::Dynamic::Var> asString(const std::string& v) { return Poco::Dynamic::Var(v); }

// Docker's --ulimit NAME=SOFT[:HARD] ("nofile=1024:2048"; one number sets both).
Result<Poco::Dynamic::Var> parseUlimit(const std::string& v) {
  auto [name, limits] = splitKeyValue(v);
  const auto colon = limits.find(':');
  const std::string soft = limits.substr(0, colon);
  const std::string hard = colon == std::string::npos ? soft : limits.substr(colon + 1);
  auto digits = [](const std::string& x) {
    return !x.empty() && std::all_of(x.begin(), x.end(), ::isdigit) && x.size() < 19;
  };
  if (name.empty() || !digits(soft) || !digits(hard) || std::stoll(soft) > std::stoll(hard)) {
    return Status::invalidArgument("invalid ulimit \"" + v +
                                   "\": want name=soft[:hard], with soft <= hard");
  }
  JObject::Ptr u = new JObject;
  u->set("Name", name);
  u->set("Soft", std::stoll(soft));
  u->set("Hard", std::stoll(hard));
  return Poco::Dynamic::Var(u);
}

Result<Poco::Dynamic::Var> asPreference(const std::string& v) {
  auto [strategy, descriptor] = splitKeyValue(v);
  if (strategy != "spread" || descriptor.empty()) {
    return Status::invalidArgument("invalid placement preference \"" + v +
                                   "\": want spread=node.labels.<label>");
  }
  JObject::Ptr spread = new JObject;
  spread->set("SpreadDescriptor", descriptor);
  JObject::Ptr p = new JObject;
  p->set("Spread", spread);
  return Poco::Dynamic::Var(p);
}

Status setLabels(const Invocation& inv, const std::string& flag, JObject::Ptr o) {
  auto it = inv.values.find(flag);
  if (it == inv.values.end()) return Status::ok();
  for (const auto& v : it->second) {
    auto [k, val] = splitKeyValue(v);
    if (k.empty()) return Status::invalidArgument("invalid label \"" + v + "\": want key=value");
    o->set(k, val);
  }
  return Status::ok();
}

Status setMode(const Invocation& inv, JObject::Ptr spec) {
  const std::string mode = inv.flag("mode");
  JObject::Ptr m = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
  JObject::Ptr inner = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
  int64_t replicas = 1;
  if (inv.has("replicas")) {
    auto n = parseCount(inv.flag("replicas"), "replicas");
    if (!n) return n.status();
    replicas = *n;
  }
  if (mode == "replicated" || mode.empty()) {
    inner->set("Replicas", replicas);
    m->set("Replicated", inner);
  } else if (mode == "global") {
    if (inv.has("replicas"))
      return Status::invalidArgument(
          "replicas can only be used with replicated or replicated-job mode");
    m->set("Global", inner);
  } else if (mode == "replicated-job") {
    int64_t concurrent = 1;
    if (inv.has("max-concurrent")) {
      auto n = parseCount(inv.flag("max-concurrent"), "max-concurrent");
      if (!n) return n.status();
      concurrent = *n;
    }
    inner->set("MaxConcurrent", inv.has("max-concurrent") ? concurrent : replicas);
    inner->set("TotalCompletions", replicas);
    m->set("ReplicatedJob", inner);
  } else if (mode == "global-job") {
    m->set("GlobalJob", inner);
  } else {
    return Status::invalidArgument(
        "invalid argument \"" + mode +
        "\" for \"--mode\" flag: want replicated, global, replicated-job or global-job");
  }
  if (inv.has("max-concurrent") && mode != "replicated-job") {
    return Status::invalidArgument("max-concurrent can only be used with replicated-job mode");
  }
  spec->set("Mode", m);
  return Status::ok();
}

std::string shortId(const std::string& id) { return id.substr(0, 12); }

// An image as `service ls|ps` show it: the tag the user gave, without the pinned digest.
std::string withoutDigest(const std::string& image) {
  const auto at = image.find('@');
  return at == std::string::npos || at == 0 ? image : image.substr(0, at);
}

// The daemon's warnings (an image it could not pin), on stderr as Docker prints them.
void printWarnings(Invocation& inv, const Poco::JSON::Object::Ptr& reply) {
  auto w = reply->getArray("Warnings");
  for (std::size_t i = 0; w && i < w->size(); ++i) {
    *inv.err << w->getElement<std::string>(i) << '\n';
  }
}

// The query string for --no-resolve-image.
std::string resolveQuery(Invocation& inv, char sep) {
  return inv.has("no-resolve-image") ? std::string(1, sep) + "resolve-image=never" : "";
}

// "2 minutes ago", as Docker's units.HumanDuration.
std::string humanSince(int64_t thenNs) {
  const auto nowNs = std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  const int64_t s = std::max<int64_t>(0, (nowNs - thenNs) / 1'000'000'000);
  auto plural = [](int64_t n, const std::string& unit) {
    return std::to_string(n) + " " + unit + (n == 1 ? "" : "s");
  };
  std::string d;
  if (s < 1) {
    d = "Less than a second";
  } else if (s == 1) {
    d = "1 second";
  } else if (s < 60) {
    d = plural(s, "second");
  } else if (s < 3600) {
    d = s / 60 == 1 ? "About a minute" : plural(s / 60, "minute");
  } else if (s < 48 * 3600) {
    d = s / 3600 == 1 ? "About an hour" : plural(s / 3600, "hour");
  } else {
    d = plural(s / 86400, "day");
  }
  return d + " ago";
}

struct TaskRow {
  std::string id, name, image, node, desired, state, error, serviceId;
  uint64_t slot = 0;
  int64_t createdNs = 0;
  int64_t stateNs = 0;
  bool running = false;
};

// The tasks `query` selects, as rows; `tasksJson` (when given) gets their JSON array text.
Result<std::vector<TaskRow>> fetchTasks(Invocation& inv, const std::string& query,
                                        std::string* tasksJson = nullptr) {
  auto body = getFromDaemon(inv, "/tasks" + query);
  if (!body) return body.status();
  auto obj = parseObject(*body);
  if (!obj) return obj.status();
  auto tasks = (*obj)->getArray("tasks");
  if (tasksJson) {
    std::ostringstream text;
    if (tasks) tasks->stringify(text);
    *tasksJson = tasks ? text.str() : "[]";
  }
  auto services = (*obj)->getObject("services");
  auto nodes = (*obj)->getObject("nodes");
  std::vector<TaskRow> rows;
  for (std::size_t i = 0; tasks && i < tasks->size(); ++i) {
    auto t = tasks->getObject(static_cast<unsigned>(i));
    TaskRow r;
    r.id = t->optValue<std::string>("ID", "");
    r.serviceId = t->optValue<std::string>("ServiceID", "");
    r.slot = t->optValue<uint64_t>("Slot", 0);
    const std::string service =
        services ? services->optValue<std::string>(r.serviceId, r.serviceId) : r.serviceId;
    const std::string nodeId = t->optValue<std::string>("NodeID", "");
    r.node = nodes && !nodeId.empty() ? nodes->optValue<std::string>(nodeId, nodeId) : "";
    r.name = r.slot > 0 ? service + "." + std::to_string(r.slot) : service + "." + nodeId;
    r.desired = capitalise(t->optValue<std::string>("DesiredState", ""));
    if (auto spec = t->getObject("Spec")) {
      if (auto c = spec->getObject("ContainerSpec"))
        r.image = withoutDigest(c->optValue<std::string>("Image", ""));
    }
    if (auto st = t->getObject("Status")) {
      const std::string state = st->optValue<std::string>("State", "new");
      r.running = state == "running";
      r.stateNs = st->optValue<int64_t>("Timestamp", 0);
      r.state = capitalise(state);
      r.error = st->optValue<std::string>("Err", "");
    }
    rows.push_back(std::move(r));
  }
  return rows;
}

int printTasks(Invocation& inv, std::vector<TaskRow> rows, const std::string& rawBody) {
  if (inv.flag("format") == "json") {
    *inv.out << rawBody << '\n';
    return kExitOk;
  }
  // Docker's order: by service, slot (or node), newest first, history indented under it.
  std::sort(rows.begin(), rows.end(), [](const TaskRow& a, const TaskRow& b) {
    if (a.name != b.name) return a.name < b.name;
    return a.stateNs > b.stateNs;
  });
  const bool trunc = !inv.has("no-trunc");
  std::vector<std::vector<std::string>> table;
  if (!inv.has("quiet")) {
    table.push_back(
        {"ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"});
  }
  std::string last;
  for (const auto& r : rows) {
    if (inv.has("quiet")) {
      table.push_back({trunc ? shortId(r.id) : r.id});
      continue;
    }
    const bool history = r.name == last;
    last = r.name;
    std::string error = r.error;
    if (trunc && error.size() > 30) error = error.substr(0, 29) + "…";
    table.push_back({trunc ? shortId(r.id) : r.id, (history ? " \\_ " : "") + r.name, r.image,
                     r.node, r.desired, r.state + " " + humanSince(r.stateNs),
                     error.empty() ? "" : "\"" + error + "\"", ""});
  }
  printTable(*inv.out, table);
  return kExitOk;
}

// --filter key=value for task listings: desired-state, node, name, id.
Result<std::string> taskFilters(const Invocation& inv) {
  std::string q;
  auto it = inv.values.find("filter");
  if (it == inv.values.end()) return q;
  for (const auto& f : it->second) {
    auto [k, v] = splitKeyValue(f);
    if (k != "desired-state" && k != "node" && k != "name" && k != "id") {
      return Status::invalidArgument("invalid filter '" + f + "'");
    }
    q += "&" + k + "=" + v;
  }
  return q;
}

// `service ps` and `node ps`: the tasks of each ref (`key` = service or node), one request
// each, printed together (a single JSON array with --format json).
int listTasksOf(Invocation& inv, const std::string& key, const std::vector<std::string>& refs) {
  if (Status s = checkFormat(inv.flag("format")); !s) {
    *inv.err << s.message() << '\n';
    return kExitUsage;
  }
  auto filters = taskFilters(inv);
  if (!filters) {
    *inv.err << filters.status().message() << '\n';
    return kExitUsage;
  }
  std::vector<TaskRow> all;
  std::string raw = "[";
  for (const auto& ref : refs) {
    std::string tasksJson;
    auto rows = fetchTasks(inv, "?" + key + "=" + ref + *filters, &tasksJson);
    if (!rows) return daemonError(inv, rows.status());
    all.insert(all.end(), rows->begin(), rows->end());
    const std::string inner =
        tasksJson.size() >= 2 ? tasksJson.substr(1, tasksJson.size() - 2) : "";
    if (!inner.empty()) raw += (raw.size() > 1 ? "," : "") + inner;
  }
  return printTasks(inv, std::move(all), raw + "]");
}

int cmdServicePs(Invocation& inv) {
  if (auto usage = needArgs(inv, 1)) return *usage;
  return listTasksOf(inv, "service", inv.args);
}

int cmdNodePs(Invocation& inv) {
  std::vector<std::string> refs = inv.args;
  if (refs.empty()) refs.push_back("self");
  return listTasksOf(inv, "node", refs);
}

// Waits for a service to converge, printing Docker's progress lines (one line per change, as
// Docker prints them without a terminal). Gives up after `timeout` with the tasks' errors.
int converge(Invocation& inv, const std::string& serviceId, bool update) {
  const bool quiet = inv.has("quiet");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  std::string lastOverall;
  std::map<uint64_t, std::string> lastSlot;
  bool stable = false;
  auto stableSince = std::chrono::steady_clock::now();
  for (;;) {
    auto body = getFromDaemon(inv, "/services/inspect?id=" + serviceId);
    if (!body) return daemonError(inv, body.status());
    auto svc = parseObject(*body);
    if (!svc) return daemonError(inv, svc.status());
    auto rows = fetchTasks(inv, "?service=" + serviceId);
    if (!rows) return daemonError(inv, rows.status());
    auto replicas = (*svc)->getObject("Replicas");
    const uint64_t desired = replicas ? replicas->optValue<uint64_t>("Desired", 0) : 0;
    const std::string mode = replicas ? replicas->optValue<std::string>("Mode", "") : "";
    const bool job = mode.find("job") != std::string::npos;
    std::string template_;
    if (auto spec = (*svc)->getObject("Spec")) {
      if (auto t = spec->getObject("TaskTemplate")) {
        std::ostringstream text;
        t->stringify(text);
        template_ = text.str();
      }
    }
    std::string updateState;
    if (auto st = (*svc)->getObject("Status")) {
      if (auto us = st->getObject("UpdateStatus"))
        updateState = us->optValue<std::string>("State", "");
    }
    // Per slot: the newest task that is meant to run.
    std::map<uint64_t, TaskRow> bySlot;
    std::map<std::string, uint64_t> nodeSlots;
    uint64_t done = 0;
    for (const auto& r : *rows) {
      if (r.desired != "Running" && !(job && r.state == "Complete")) continue;
      uint64_t slot = r.slot;
      if (slot == 0) {
        auto [it, fresh] = nodeSlots.try_emplace(r.node, nodeSlots.size() + 1);
        slot = it->second;
      }
      auto it = bySlot.find(slot);
      if (it == bySlot.end() || r.stateNs > it->second.stateNs) bySlot[slot] = r;
    }
    for (const auto& [slot, r] : bySlot) {
      if (job ? r.state == "Complete" : r.state == "Running") ++done;
    }
    const uint64_t total = mode.rfind("global", 0) == 0 ? bySlot.size() : desired;
    const std::string overall = "overall progress: " + std::to_string(std::min(done, total)) +
                                " out of " + std::to_string(total) + " tasks";
    if (!quiet) {
      if (overall != lastOverall) *inv.out << overall << '\n';
      lastOverall = overall;
      for (const auto& [slot, r] : bySlot) {
        if (slot > total && total > 0) continue;
        std::string state = r.state;
        std::transform(state.begin(), state.end(), state.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        if (!r.error.empty() && !r.running) state += ": " + r.error;
        const std::string line = std::to_string(slot) + "/" + std::to_string(total) + ": " + state;
        if (lastSlot[slot] != line) *inv.out << line << '\n';
        lastSlot[slot] = line;
      }
      inv.out->flush();
    }
    const bool updating =
        update && (updateState == "updating" || updateState == "rollback_started");
    if (update && (updateState == "paused" || updateState == "rollback_paused")) {
      std::string message;
      if (auto st = (*svc)->getObject("Status")) {
        if (auto us = st->getObject("UpdateStatus"))
          message = us->optValue<std::string>("Message", "");
      }
      *inv.err << "Error: " << message << '\n';
      return kExitError;
    }
    const bool converged = done >= total && !updating;
    if (converged) {
      // Docker waits the monitor period to see the tasks stay up; a shorter look is enough to
      // catch a task that fails at once.
      if (!stable) {
        stable = true;
        stableSince = std::chrono::steady_clock::now();
        if (!quiet && !job)
          *inv.out << "verify: Waiting 1 seconds to verify that tasks are stable...\n";
      } else if (std::chrono::steady_clock::now() - stableSince >= std::chrono::seconds(1) || job) {
        if (!quiet) *inv.out << "verify: Service converged\n";
        (void)template_;
        return kExitOk;
      }
    } else {
      stable = false;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      *inv.err << "Error: service " << serviceId << " did not converge within 120 s\n";
      return kExitError;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

int specError(Invocation& inv, const Status& s) {
  if (s.code() == Status::Code::kInvalidArgument) {
    *inv.err << s.message() << "\nSee 'shoal " << inv.command->path << " --help'.\n";
    return kExitUsage;
  }
  return daemonError(inv, s);
}

int cmdServiceCreate(Invocation& inv) {
  if (auto usage = needArgs(inv, 1)) return *usage;
  JObject::Ptr spec = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
  std::string name = inv.flag("name");
  if (name.empty()) {
    // Docker names an unnamed service itself; ours is adjective_noun-like and unique enough.
    static const char* const kWords[] = {"brave", "calm",  "eager", "fond",
                                         "keen",  "proud", "quick", "wise"};
    static const char* const kFish[] = {"carp",  "dace", "eel",   "ide",
                                        "perch", "pike", "roach", "tench"};
    const auto n =
        static_cast<std::size_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    name = std::string(kWords[n % 8]) + "_" + kFish[(n / 8) % 8] + std::to_string(n % 1000);
  }
  spec->set("Name", name);
  JObject::Ptr labels = new JObject;
  if (Status s = setLabels(inv, "label", labels); !s) return specError(inv, s);
  if (labels->size()) spec->set("Labels", labels);
  if (Status s = setMode(inv, spec); !s) return specError(inv, s);
  auto task = at(spec, {"TaskTemplate"});
  auto container = at(spec, {"TaskTemplate", "ContainerSpec"});
  container->set("Image", inv.args[0]);
  if (inv.args.size() > 1) {
    Poco::JSON::Array::Ptr args = new Poco::JSON::Array;
    for (std::size_t i = 1; i < inv.args.size(); ++i) args->add(inv.args[i]);
    container->set("Args", args);
  }
  if (inv.has("entrypoint")) {
    Poco::JSON::Array::Ptr cmd = new Poco::JSON::Array;
    std::stringstream words(inv.flag("entrypoint"));
    std::string w;
    while (words >> w) cmd->add(w);
    container->set("Command", cmd);
  }
  if (Status s = appendEach(inv, "env", container, "Env", asString); !s) return specError(inv, s);
  JObject::Ptr clabels = new JObject;
  if (Status s = setLabels(inv, "container-label", clabels); !s) return specError(inv, s);
  if (clabels->size()) container->set("Labels", clabels);
  if (Status s = appendEach(inv, "mount", container, "Mounts", parseMount); !s)
    return specError(inv, s);
  if (Status s = appendEach(inv, "cap-add", container, "CapabilityAdd", asString); !s)
    return specError(inv, s);
  if (Status s = appendEach(inv, "cap-drop", container, "CapabilityDrop", asString); !s)
    return specError(inv, s);
  JObject::Ptr sysctls = new JObject;
  if (Status s = setLabels(inv, "sysctl", sysctls); !s) return specError(inv, s);
  if (sysctls->size()) container->set("Sysctls", sysctls);
  if (Status s = appendEach(inv, "ulimit", container, "Ulimits", parseUlimit); !s)
    return specError(inv, s);
  if (Status s = appendEach(
          inv, "secret", container, "Secrets",
          [](const std::string& v) -> Result<JObject::Ptr> { return parseReference(v, "Secret"); });
      !s) {
    return specError(inv, s);
  }
  if (Status s = appendEach(
          inv, "config", container, "Configs",
          [](const std::string& v) -> Result<JObject::Ptr> { return parseReference(v, "Config"); });
      !s) {
    return specError(inv, s);
  }
  if (Status s = appendEach(inv, "constraint", at(task, {"Placement"}), "Constraints", asString);
      !s)
    return specError(inv, s);
  if (Status s =
          appendEach(inv, "placement-pref", at(task, {"Placement"}), "Preferences", asPreference);
      !s)
    return specError(inv, s);
  if (Status s = appendEach(inv, "network", task, "Networks", parseNetworkFlag); !s) {
    return specError(inv, s);
  }
  if (Status s = appendEach(inv, "publish", at(spec, {"EndpointSpec"}), "Ports", parsePort); !s)
    return specError(inv, s);
  if (Status s = applySpecFlags(inv, spec); !s) return specError(inv, s);
  if (auto ep = spec->getObject("EndpointSpec"); ep && ep->size() == 0)
    spec->remove("EndpointSpec");
  std::ostringstream text;
  spec->stringify(text);
  auto reply = postToDaemon(inv, "/services/create" + resolveQuery(inv, '?'), text.str());
  if (!reply) return daemonError(inv, reply.status());
  auto obj = parseObject(*reply);
  if (!obj) return daemonError(inv, obj.status());
  printWarnings(inv, *obj);
  const std::string id = (*obj)->optValue<std::string>("ID", "");
  *inv.out << id << '\n';
  if (inv.has("detach")) return kExitOk;
  return converge(inv, id, false);
}

// The service's current spec as a client sends it back (Name and Labels included), and its
// version.
Result<std::pair<JObject::Ptr, int64_t>> currentSpec(Invocation& inv, const std::string& ref) {
  auto body = getFromDaemon(inv, "/services/inspect?id=" + ref);
  if (!body) return body.status();
  auto svc = parseObject(*body);
  if (!svc) return svc.status();
  JObject::Ptr spec = (*svc)->getObject("Spec");
  if (!spec) spec = new JObject;
  spec->set("Name", (*svc)->optValue<std::string>("Name", ""));
  if (auto labels = (*svc)->getObject("Labels"); labels && labels->size())
    spec->set("Labels", labels);
  return std::make_pair(spec, (*svc)->optValue<int64_t>("Version", 0));
}

// Removes from array `name` of `o` the entries `matches` says are meant.
template <class F>
void removeEach(JObject::Ptr o, const std::string& name, const std::vector<std::string>& refs,
                F matches) {
  if (!o->has(name)) return;
  auto a = o->getArray(name);
  Poco::JSON::Array::Ptr kept = new Poco::JSON::Array;
  for (std::size_t i = 0; a && i < a->size(); ++i) {
    bool drop = false;
    for (const auto& r : refs) drop = drop || matches(a->get(static_cast<unsigned>(i)), r);
    if (!drop) kept->add(a->get(static_cast<unsigned>(i)));
  }
  o->set(name, kept);
}

std::vector<std::string> valuesOf(const Invocation& inv, const std::string& flag) {
  auto it = inv.values.find(flag);
  return it == inv.values.end() ? std::vector<std::string>{} : it->second;
}

int sendUpdate(Invocation& inv, const std::string& ref, JObject::Ptr spec, int64_t version) {
  JObject req;
  req.set("spec", spec);
  req.set("version", version);
  std::ostringstream text;
  req.stringify(text);
  auto reply = postToDaemon(inv, "/services/update?id=" + ref + resolveQuery(inv, '&'), text.str());
  if (!reply) return specError(inv, reply.status());
  auto obj = parseObject(*reply);
  if (!obj) return daemonError(inv, obj.status());
  printWarnings(inv, *obj);
  const std::string id = (*obj)->optValue<std::string>("ID", "");
  *inv.out << ref << '\n';
  if (inv.has("detach")) return kExitOk;
  return converge(inv, id, true);
}

int cmdServiceUpdate(Invocation& inv) {
  if (auto usage = needArgs(inv, 1, true)) return *usage;
  const std::string ref = inv.args[0];
  if (inv.has("rollback")) {
    auto reply = postToDaemon(inv, "/services/update?id=" + ref, "{\"rollback\":true}");
    if (!reply) return daemonError(inv, reply.status());
    *inv.out << ref << '\n';
    if (inv.has("detach")) return kExitOk;
    auto obj = parseObject(*reply);
    return converge(inv, obj ? (*obj)->optValue<std::string>("ID", ref) : ref, true);
  }
  auto current = currentSpec(inv, ref);
  if (!current) return daemonError(inv, current.status());
  JObject::Ptr spec = current->first;
  auto task = at(spec, {"TaskTemplate"});
  auto container = at(spec, {"TaskTemplate", "ContainerSpec"});
  if (inv.has("image")) container->set("Image", inv.flag("image"));
  if (inv.has("args")) {
    Poco::JSON::Array::Ptr args = new Poco::JSON::Array;
    std::stringstream words(inv.flag("args"));
    std::string w;
    while (words >> w) args->add(w);
    container->set("Args", args);
  }
  if (inv.has("replicas")) {
    auto n = parseCount(inv.flag("replicas"), "replicas");
    if (!n) return specError(inv, n.status());
    auto mode = at(spec, {"Mode"});
    if (mode->has("Replicated")) {
      at(spec, {"Mode", "Replicated"})->set("Replicas", *n);
    } else if (mode->has("ReplicatedJob")) {
      at(spec, {"Mode", "ReplicatedJob"})->set("TotalCompletions", *n);
    } else {
      return specError(inv,
                       Status::invalidArgument(
                           "replicas can only be used with replicated or replicated-job mode"));
    }
  }
  auto byKey = [](const Poco::Dynamic::Var& v, const std::string& key) {
    return v.isString() &&
           splitKeyValue(v.extract<std::string>()).first == splitKeyValue(key).first;
  };
  auto same = [](const Poco::Dynamic::Var& v, const std::string& r) {
    return v.isString() && v.extract<std::string>() == r;
  };
  removeEach(container, "Env", valuesOf(inv, "env-rm"), byKey);
  removeEach(container, "Env", valuesOf(inv, "env-add"), byKey);
  if (Status s = appendEach(inv, "env-add", container, "Env", asString); !s)
    return specError(inv, s);
  auto placement = at(task, {"Placement"});
  removeEach(placement, "Constraints", valuesOf(inv, "constraint-rm"), same);
  if (Status s = appendEach(inv, "constraint-add", placement, "Constraints", asString); !s)
    return specError(inv, s);
  removeEach(placement, "Preferences", valuesOf(inv, "placement-pref-rm"),
             [](const Poco::Dynamic::Var& v, const std::string& r) {
               if (v.type() != typeid(JObject::Ptr)) return false;
               auto spread = v.extract<JObject::Ptr>()->getObject("Spread");
               return spread &&
                      "spread=" + spread->optValue<std::string>("SpreadDescriptor", "") == r;
             });
  if (Status s = appendEach(inv, "placement-pref-add", placement, "Preferences", asPreference); !s)
    return specError(inv, s);
  for (const auto& k : valuesOf(inv, "label-rm")) {
    if (auto labels = spec->getObject("Labels")) labels->remove(k);
  }
  if (Status s = setLabels(inv, "label-add", at(spec, {"Labels"})); !s) return specError(inv, s);
  for (const auto& k : valuesOf(inv, "container-label-rm")) {
    if (auto labels = container->getObject("Labels")) labels->remove(k);
  }
  if (Status s = setLabels(inv, "container-label-add", at(container, {"Labels"})); !s)
    return specError(inv, s);
  auto endpoint = at(spec, {"EndpointSpec"});
  removeEach(endpoint, "Ports", valuesOf(inv, "publish-rm"),
             [](const Poco::Dynamic::Var& v, const std::string& r) {
               if (v.type() != typeid(JObject::Ptr)) return false;
               auto p = v.extract<JObject::Ptr>();
               const std::string target = std::to_string(p->optValue<int64_t>("TargetPort", 0));
               const std::string published =
                   std::to_string(p->optValue<int64_t>("PublishedPort", 0));
               return r == target || r == published || r == published + ":" + target;
             });
  if (Status s = appendEach(inv, "publish-add", endpoint, "Ports", parsePort); !s)
    return specError(inv, s);
  if (endpoint->size() == 0) spec->remove("EndpointSpec");
  if (auto l = spec->getObject("Labels"); l && l->size() == 0) spec->remove("Labels");
  if (auto l = container->getObject("Labels"); l && l->size() == 0) container->remove("Labels");
  if (placement->size() == 0) task->remove("Placement");
  if (Status s = applySpecFlags(inv, spec); !s) return specError(inv, s);
  if (inv.has("force")) task->set("ForceUpdate", task->optValue<int64_t>("ForceUpdate", 0) + 1);
  return sendUpdate(inv, ref, spec, current->second);
}

int cmdServiceScale(Invocation& inv) {
  if (auto usage = needArgs(inv, 1)) return *usage;
  int rc = kExitOk;
  for (const auto& arg : inv.args) {
    auto [ref, count] = splitKeyValue(arg);
    auto n = parseCount(count, "replicas");
    if (ref.empty() || arg.find('=') == std::string::npos || !n) {
      *inv.err << "invalid scale specifier '" << arg << "'.\nSee 'shoal service scale --help'.\n";
      return kExitUsage;
    }
    auto current = currentSpec(inv, ref);
    if (!current) {
      rc = daemonError(inv, current.status());
      continue;
    }
    auto mode = at(current->first, {"Mode"});
    if (mode->has("Replicated")) {
      at(current->first, {"Mode", "Replicated"})->set("Replicas", *n);
    } else if (mode->has("ReplicatedJob")) {
      at(current->first, {"Mode", "ReplicatedJob"})->set("TotalCompletions", *n);
    } else {
      *inv.err << ref << ": scale can only be used with replicated or replicated-job mode\n";
      rc = kExitError;
      continue;
    }
    JObject req;
    req.set("spec", current->first);
    req.set("version", current->second);
    std::ostringstream text;
    req.stringify(text);
    auto reply = postToDaemon(inv, "/services/update?id=" + ref, text.str());
    if (!reply) {
      rc = daemonError(inv, reply.status());
      continue;
    }
    *inv.out << ref << " scaled to " << *n << '\n';
    auto obj = parseObject(*reply);
    if (!inv.has("detach") && obj) {
      if (int c = converge(inv, (*obj)->optValue<std::string>("ID", ref), false); c != kExitOk)
        rc = c;
    }
  }
  return rc;
}

int cmdServiceRollback(Invocation& inv) {
  if (auto usage = needArgs(inv, 1, true)) return *usage;
  auto reply = postToDaemon(inv, "/services/update?id=" + inv.args[0], "{\"rollback\":true}");
  if (!reply) return daemonError(inv, reply.status());
  *inv.out << inv.args[0] << '\n';
  if (inv.has("detach")) return kExitOk;
  auto obj = parseObject(*reply);
  int rc =
      converge(inv, obj ? (*obj)->optValue<std::string>("ID", inv.args[0]) : inv.args[0], true);
  if (rc == kExitOk && !inv.has("quiet")) *inv.out << "rollback: rollback completed\n";
  return rc;
}

int cmdServiceRm(Invocation& inv) { return removeObjects(inv, "/services/remove?id="); }

std::atomic<bool> gLogsInterrupted{false};

// `service logs SERVICE|TASK`: subscribes through the leader's log broker, then reads the
// records as the nodes send them (all of them, sorted by time, without --follow).
int cmdServiceLogs(Invocation& inv) {
  if (auto usage = needArgs(inv, 1, true)) return *usage;
  JObject req;
  const bool follow = inv.has("follow");
  req.set("follow", follow);
  req.set("timestamps", inv.has("timestamps"));
  const std::string tail = inv.flag("tail");
  if (!tail.empty() && tail != "all") {
    auto n = parseCount(tail, "tail");
    if (!n) return specError(inv, n.status());
    req.set("tail", *n);
  }
  if (inv.has("since")) {
    // A duration back from now ("10m", "1h30m") or a Unix time in seconds.
    const std::string since = inv.flag("since");
    const auto nowNs = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
    int64_t sinceNs = 0;
    if (!since.empty() && std::all_of(since.begin(), since.end(), ::isdigit)) {
      if (since.size() > 11) {
        return usageError(*inv.err, "invalid --since: " + since + " is not a Unix time",
                          inv.command->path);
      }
      sinceNs = std::stoll(since) * 1'000'000'000;
    } else {
      auto d = parseDuration(since);
      if (!d)
        return usageError(*inv.err, "invalid --since: " + d.status().message(), inv.command->path);
      sinceNs = nowNs - *d * 1'000'000'000;
    }
    req.set("since_ns", sinceNs);
  }
  Result<std::string> reply = Status::notFound("");
  for (const char* key : {"service", "task"}) {
    JObject r(req);
    r.set(key, inv.args[0]);
    std::ostringstream body;
    r.stringify(body);
    reply = postToDaemon(inv, "/services/logs", body.str());
    if (reply || reply.status().code() != Status::Code::kNotFound) break;
  }
  if (!reply) {
    if (reply.status().code() == Status::Code::kNotFound) {
      *inv.err << "Error response from daemon: no such service or task: " << inv.args[0] << '\n';
      return kExitError;
    }
    return daemonError(inv, reply.status());
  }
  auto sub = parseObject(*reply);
  if (!sub) return daemonError(inv, sub.status());
  const std::string id = (*sub)->optValue<std::string>("Sub", "");
  auto names = (*sub)->getObject("Tasks");
  auto prefix = [&](const std::string& task) -> std::string {
    if (inv.has("raw")) return "";
    auto info = names ? names->getObject(task) : nullptr;
    const std::string name = info ? info->optValue<std::string>("Name", "") : "";
    const std::string node = info ? info->optValue<std::string>("Node", "") : "";
    std::string shown = name;
    if (!inv.has("no-task-ids")) {
      shown += "." + (inv.has("no-trunc") ? task : task.substr(0, 12));
    }
    return shown + "@" + node + "    | ";
  };
  struct Line {
    int64_t ts;
    std::string text;
  };
  std::vector<Line> lines;
  std::vector<std::string> errors;
  uint64_t after = 0;
  // Ctrl-C, a closed terminal, a kill or a reader that went away (`| head`) end the read, and
  // the subscription is cancelled so the nodes stop streaming.
  gLogsInterrupted = false;
  const int kSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
  std::map<int, void (*)(int)> previous;
  for (int sig : kSignals) previous[sig] = std::signal(sig, [](int) { gLogsInterrupted = true; });
  auto restore = [&] {
    for (const auto& [sig, handler] : previous) std::signal(sig, handler);
  };
  uint64_t dropped = 0;
  for (;;) {
    if (gLogsInterrupted || !*inv.out) break;
    auto page = getFromDaemon(
        inv, "/logs/read?sub=" + id + "&after=" + std::to_string(after) + "&wait_ms=1000");
    if (!page) {
      restore();
      return daemonError(inv, page.status());
    }
    auto o = parseObject(*page);
    if (!o) break;
    // Tasks that joined a followed service's logs after it began come with their names.
    if (auto more = (*o)->getObject("Tasks")) {
      if (!names) names = new JObject;
      for (const auto& [task, info] : *more) names->set(task, info);
    }
    auto records = (*o)->getArray("Records");
    for (std::size_t i = 0; records && i < records->size(); ++i) {
      auto r = records->getObject(static_cast<unsigned>(i));
      if (!r) continue;
      Line l{r->optValue<int64_t>("Timestamp", 0),
             prefix(r->optValue<std::string>("Task", "")) + r->optValue<std::string>("Line", "")};
      if (follow) {
        *inv.out << l.text << '\n';
      } else {
        lines.push_back(std::move(l));
      }
    }
    if (follow) inv.out->flush();
    after = (*o)->optValue<uint64_t>("Next", after);
    dropped += (*o)->optValue<uint64_t>("Dropped", 0);
    if ((*o)->optValue<bool>("Done", false)) {
      if (auto e = (*o)->getArray("Errors")) {
        for (std::size_t i = 0; i < e->size(); ++i) errors.push_back(e->getElement<std::string>(i));
      }
      break;
    }
  }
  restore();
  if (gLogsInterrupted || !*inv.out) postToDaemon(inv, "/logs/cancel?sub=" + id);
  std::stable_sort(lines.begin(), lines.end(),
                   [](const Line& a, const Line& b) { return a.ts < b.ts; });
  for (const auto& l : lines) *inv.out << l.text << '\n';
  if (dropped > 0) {
    *inv.err << "warning: " << dropped << " log lines were dropped (the reader fell behind)\n";
  }
  for (const auto& e : errors) *inv.err << "error from daemon in stream: " << e << '\n';
  return errors.empty() ? kExitOk : kExitError;
}

std::string replicasText(JObject::Ptr svc) {
  auto r = svc->getObject("Replicas");
  if (!r) return "";
  const auto running = r->optValue<uint64_t>("Running", 0);
  const auto desired = r->optValue<uint64_t>("Desired", 0);
  const std::string mode = r->optValue<std::string>("Mode", "");
  std::string text = std::to_string(running) + "/" + std::to_string(desired);
  if (mode.find("job") != std::string::npos) {
    text += " (" + std::to_string(r->optValue<uint64_t>("Completed", 0)) + "/" +
            std::to_string(desired) + " completed)";
  }
  return text;
}

std::string portsText(JObject::Ptr spec) {
  std::string out;
  auto ep = spec ? spec->getObject("EndpointSpec") : nullptr;
  auto ports = ep ? ep->getArray("Ports") : nullptr;
  for (std::size_t i = 0; ports && i < ports->size(); ++i) {
    auto p = ports->getObject(static_cast<unsigned>(i));
    const auto published = p->optValue<int64_t>("PublishedPort", 0);
    // "*:" is every node (the mesh); a host-mode port answers only where a task runs.
    const bool host = p->optValue<std::string>("PublishMode", "ingress") == "host";
    out += (out.empty() ? "" : ", ") + std::string(host ? "" : "*:") +
           (published ? std::to_string(published) : "") + "->" +
           std::to_string(p->optValue<int64_t>("TargetPort", 0)) + "/" +
           p->optValue<std::string>("Protocol", "tcp") + (host ? " (host)" : "");
  }
  return out;
}

int cmdServiceLs(Invocation& inv) {
  return listObjects(inv, "/services", "services",
                     {"ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"},
                     [](const Poco::JSON::Object::Ptr& s) -> std::vector<std::string> {
                       auto spec = s->getObject("Spec");
                       std::string image;
                       if (auto t = spec ? spec->getObject("TaskTemplate") : nullptr) {
                         if (auto c = t->getObject("ContainerSpec")) {
                           image = withoutDigest(c->optValue<std::string>("Image", ""));
                         }
                       }
                       auto r = s->getObject("Replicas");
                       return {shortId(s->optValue<std::string>("ID", "")),
                               s->optValue<std::string>("Name", ""),
                               r ? r->optValue<std::string>("Mode", "") : "",
                               replicasText(s),
                               image,
                               portsText(spec)};
                     });
}

std::string nanosText(int64_t ns) {
  if (ns % 1'000'000'000 == 0) return std::to_string(ns / 1'000'000'000) + "s";
  if (ns % 1'000'000 == 0) return std::to_string(ns / 1'000'000) + "ms";
  return std::to_string(ns) + "ns";
}

void printServicePretty(std::ostream& out, JObject::Ptr s) {
  auto spec = s->getObject("Spec");
  auto task = spec ? spec->getObject("TaskTemplate") : nullptr;
  auto container = task ? task->getObject("ContainerSpec") : nullptr;
  auto field = [&](const std::string& label, const std::string& value) {
    out << label << ":" << std::string(label.size() < 20 ? 20 - label.size() : 1, ' ') << value
        << '\n';
  };
  out << '\n';
  field("ID", s->optValue<std::string>("ID", ""));
  field("Name", s->optValue<std::string>("Name", ""));
  if (auto labels = s->getObject("Labels"); labels && labels->size()) {
    out << "Labels:\n";
    for (const auto& k : labels->getNames())
      out << " " << k << "=" << labels->getValue<std::string>(k) << '\n';
  }
  auto r = s->getObject("Replicas");
  std::string mode = r ? r->optValue<std::string>("Mode", "") : "";
  field("Service Mode", capitalise(mode));
  if (mode == "replicated" && r)
    field(" Replicas", std::to_string(r->optValue<uint64_t>("Desired", 0)));
  if (auto st = s->getObject("Status")) {
    if (auto us = st->getObject("UpdateStatus")) {
      out << "UpdateStatus:\n";
      out << " State:\t\t" << us->optValue<std::string>("State", "") << '\n';
      out << " Message:\t" << us->optValue<std::string>("Message", "") << '\n';
    }
  }
  out << "Placement:\n";
  if (auto p = task ? task->getObject("Placement") : nullptr) {
    if (auto c = p->getArray("Constraints"); c && c->size()) {
      out << " Constraints:\t[";
      for (std::size_t i = 0; i < c->size(); ++i)
        out << (i ? " " : "") << c->getElement<std::string>(static_cast<unsigned>(i));
      out << "]\n";
    }
  }
  auto update = spec ? spec->getObject("UpdateConfig") : nullptr;
  out << "UpdateConfig:\n";
  out << " Parallelism:\t" << (update ? update->optValue<int64_t>("Parallelism", 1) : 1) << '\n';
  if (update && update->has("Delay"))
    out << " Delay:\t\t" << nanosText(update->getValue<int64_t>("Delay")) << '\n';
  out << " On failure:\t"
      << (update ? update->optValue<std::string>("FailureAction", "pause") : "pause") << '\n';
  out << " Monitoring Period: "
      << nanosText(update ? update->optValue<int64_t>("Monitor", 5'000'000'000) : 5'000'000'000)
      << '\n';
  out << " Max failure ratio: " << (update ? update->optValue<double>("MaxFailureRatio", 0) : 0)
      << '\n';
  out << " Update order:      "
      << (update ? update->optValue<std::string>("Order", "stop-first") : "stop-first") << '\n';
  auto rollback = spec ? spec->getObject("RollbackConfig") : nullptr;
  out << "RollbackConfig:\n";
  out << " Parallelism:\t" << (rollback ? rollback->optValue<int64_t>("Parallelism", 1) : 1)
      << '\n';
  out << " On failure:\t"
      << (rollback ? rollback->optValue<std::string>("FailureAction", "pause") : "pause") << '\n';
  out << " Rollback order:    "
      << (rollback ? rollback->optValue<std::string>("Order", "stop-first") : "stop-first") << '\n';
  out << "ContainerSpec:\n";
  if (container) {
    out << " Image:\t\t" << container->optValue<std::string>("Image", "") << '\n';
    if (auto a = container->getArray("Args"); a && a->size()) {
      out << " Args:\t\t";
      for (std::size_t i = 0; i < a->size(); ++i)
        out << (i ? " " : "") << a->getElement<std::string>(static_cast<unsigned>(i));
      out << '\n';
    }
    if (auto e = container->getArray("Env"); e && e->size()) {
      out << " Env:\t\t";
      for (std::size_t i = 0; i < e->size(); ++i)
        out << (i ? " " : "") << e->getElement<std::string>(static_cast<unsigned>(i));
      out << '\n';
    }
  }
  if (auto res = task ? task->getObject("Resources") : nullptr) {
    out << "Resources:\n";
    for (const char* group : {"Reservations", "Limits"}) {
      if (auto g = res->getObject(group)) {
        out << " " << group << ":\n";
        if (g->has("NanoCPUs"))
          out << "  CPU:\t\t" << g->getValue<int64_t>("NanoCPUs") / 1e9 << '\n';
        if (g->has("MemoryBytes"))
          out << "  Memory:\t"
              << humanBytes(static_cast<double>(g->getValue<int64_t>("MemoryBytes"))) << '\n';
      }
    }
  }
  if (const std::string ports = portsText(spec); !ports.empty()) field("Ports", ports);
}

int cmdServiceInspect(Invocation& inv) {
  if (auto usage = needArgs(inv, 1)) return *usage;
  return inspectEach(inv, "/services/inspect?id=", printServicePretty);
}

// The flags create and update share (applySpecFlags reads them).
std::vector<Flag> specFlags() {
  return {
      {"constraint-lua", 0, true, "Placement constraint as a Lua expression", ""},
      {"detach", 'd', false, "Exit immediately instead of waiting for the service to converge", ""},
      {"endpoint-mode", 0, true, "Endpoint mode (vip or dnsrr)", ""},
      {"health-cmd", 0, true, "Command to run to check health", ""},
      {"health-interval", 0, true, "Time between running the check (ms|s|m|h)", ""},
      {"health-retries", 0, true, "Consecutive failures needed to report unhealthy", ""},
      {"health-start-period", 0, true,
       "Start period for the container to initialize before counting retries towards unstable "
       "(ms|s|m|h)",
       ""},
      {"health-timeout", 0, true, "Maximum time to allow one check to run (ms|s|m|h)", ""},
      {"hostname", 0, true, "Container hostname", ""},
      {"limit-cpu", 0, true, "Limit CPUs", ""},
      {"limit-memory", 0, true, "Limit Memory", ""},
      {"limit-pids", 0, true, "Limit maximum number of processes (default 0 = unlimited)", ""},
      {"init", 0, false,
       "Use an init inside each service container to forward signals and reap processes", ""},
      {"no-healthcheck", 0, false, "Disable any container-specified HEALTHCHECK", ""},
      {"read-only", 0, false, "Mount the container's root filesystem as read only", ""},
      {"no-resolve-image", 0, false,
       "Do not query the registry to resolve image digest and supported platforms", ""},
      {"placement-policy", 0, true, "Lua placement policy (see \"shoal policy\")", ""},
      {"quiet", 'q', false, "Suppress progress output", ""},
      {"replicas", 0, true, "Number of tasks", ""},
      {"replicas-max-per-node", 0, true, "Maximum number of tasks per node (default 0 = unlimited)",
       ""},
      {"reserve-cpu", 0, true, "Reserve CPUs", ""},
      {"reserve-memory", 0, true, "Reserve Memory", ""},
      {"restart-condition", 0, true,
       "Restart when condition is met (\"none\", \"on-failure\", \"any\")", ""},
      {"restart-delay", 0, true, "Delay between restart attempts (ns|us|ms|s|m|h)", ""},
      {"restart-max-attempts", 0, true, "Maximum number of restarts before giving up", ""},
      {"restart-window", 0, true, "Window used to evaluate the restart policy (ns|us|ms|s|m|h)",
       ""},
      {"rollback-delay", 0, true, "Delay between task rollbacks (ns|us|ms|s|m|h)", ""},
      {"rollback-failure-action", 0, true, "Action on rollback failure (\"pause\", \"continue\")",
       ""},
      {"rollback-max-failure-ratio", 0, true, "Failure rate to tolerate during a rollback", ""},
      {"rollback-monitor", 0, true,
       "Duration after each task rollback to monitor for failure (ns|us|ms|s|m|h)", ""},
      {"rollback-order", 0, true, "Rollback order (\"start-first\", \"stop-first\")", ""},
      {"rollback-parallelism", 0, true,
       "Maximum number of tasks rolled back simultaneously (0 to roll back all at once)", ""},
      {"stop-grace-period", 0, true,
       "Time to wait before force killing a container (ns|us|ms|s|m|h)", ""},
      {"stop-signal", 0, true, "Signal to stop the container", ""},
      {"tty", 't', false, "Allocate a pseudo-TTY", ""},
      {"update-delay", 0, true, "Delay between updates (ns|us|ms|s|m|h)", ""},
      {"update-failure-action", 0, true,
       "Action on update failure (\"pause\", \"continue\", \"rollback\")", ""},
      {"update-max-failure-ratio", 0, true, "Failure rate to tolerate during an update", ""},
      {"update-monitor", 0, true,
       "Duration after each task update to monitor for failure (ns|us|ms|s|m|h)", ""},
      {"update-order", 0, true, "Update order (\"start-first\", \"stop-first\")", ""},
      {"update-parallelism", 0, true,
       "Maximum number of tasks updated simultaneously (0 to update all at once)", ""},
      {"user", 'u', true, "Username or UID (format: <name|uid>[:<group|gid>])", ""},
      {"workdir", 'w', true, "Working directory inside the container", ""},
  };
}

std::vector<Flag> withSpecFlags(std::vector<Flag> own) {
  auto all = specFlags();
  all.insert(all.end(), own.begin(), own.end());
  std::sort(all.begin(), all.end(), [](const Flag& a, const Flag& b) { return a.name < b.name; });
  return all;
}

const std::vector<Flag> kTaskListFlags = {
    {"filter", 'f', true,
     "Filter output based on conditions provided (desired-state, node, name, id)", ""},
    {"format", 0, true, "Format output: \"table\" or \"json\"", "table"},
    {"no-trunc", 0, false, "Do not truncate output", ""},
    {"quiet", 'q', false, "Only display task IDs", ""}};

// ---- policies -----------------------------------------------------------------------------

int cmdPolicyCreate(Invocation& inv) {
  if (auto usage = needArgs(inv, 2, true)) return *usage;
  std::string source;
  if (inv.args[1] == "-") {
    std::stringstream text;
    text << std::cin.rdbuf();
    source = text.str();
  } else {
    std::ifstream in(inv.args[1]);
    if (!in) {
      *inv.err << "cannot read " << inv.args[1] << ": " << std::strerror(errno) << '\n';
      return kExitError;
    }
    std::stringstream text;
    text << in.rdbuf();
    source = text.str();
  }
  JObject req;
  req.set("Name", inv.args[0]);
  req.set("Source", source);
  if (inv.has("description")) req.set("Description", inv.flag("description"));
  std::ostringstream body;
  req.stringify(body);
  auto reply = postToDaemon(inv, "/policies/create", body.str());
  if (!reply) return daemonError(inv, reply.status());
  auto obj = parseObject(*reply);
  if (!obj) return daemonError(inv, obj.status());
  *inv.out << (*obj)->optValue<std::string>("ID", "") << '\n';
  return kExitOk;
}

int cmdPolicyLs(Invocation& inv) {
  return listObjects(inv, "/policies", "policies", {"ID", "NAME", "DESCRIPTION"},
                     [](const Poco::JSON::Object::Ptr& p) -> std::vector<std::string> {
                       auto spec = p->getObject("Spec");
                       return {shortId(p->optValue<std::string>("ID", "")),
                               p->optValue<std::string>("Name", ""),
                               spec ? spec->optValue<std::string>("Description", "") : ""};
                     });
}

void printPolicyPretty(std::ostream& out, const Poco::JSON::Object::Ptr& p) {
  auto spec = p->getObject("Spec");
  out << "ID:          " << p->optValue<std::string>("ID", "") << '\n'
      << "Name:        " << p->optValue<std::string>("Name", "") << '\n'
      << "Description: " << (spec ? spec->optValue<std::string>("Description", "") : "")
      << "\nSource:\n"
      << (spec ? spec->optValue<std::string>("Source", "") : "") << '\n';
}

int cmdPolicyInspect(Invocation& inv) {
  if (auto usage = needArgs(inv, 1)) return *usage;
  return inspectEach(inv, "/policies/inspect?id=", printPolicyPretty);
}

int cmdPolicyRm(Invocation& inv) { return removeObjects(inv, "/policies/remove?id="); }

// ---- networks ---------------------------------------------------------------------------

int cmdNetworkCreate(Invocation& inv) {
  if (auto usage = needArgs(inv, 1, true)) return *usage;
  JObject req(Poco::JSON_PRESERVE_KEY_ORDER);
  req.set("Name", inv.args[0]);
  const std::string driver = inv.has("driver") ? inv.flag("driver") : "overlay";
  req.set("Driver", driver);
  if (inv.has("attachable")) req.set("Attachable", true);
  if (inv.has("internal")) req.set("Internal", true);
  if (inv.has("subnet") || inv.has("gateway")) {
    JObject::Ptr config = new JObject(Poco::JSON_PRESERVE_KEY_ORDER);
    if (inv.has("subnet")) config->set("Subnet", inv.flag("subnet"));
    if (inv.has("gateway")) config->set("Gateway", inv.flag("gateway"));
    Poco::JSON::Array::Ptr configs = new Poco::JSON::Array;
    configs->add(config);
    JObject::Ptr ipam = new JObject;
    ipam->set("Configs", configs);
    req.set("IPAM", ipam);
  }
  JObject::Ptr options = new JObject;
  for (const auto& o : inv.values["opt"]) {
    auto [k, v] = splitKeyValue(o);
    if (k.empty()) return usageError(*inv.err, "invalid --opt \"" + o + "\"", inv.command->path);
    options->set(k, v);
  }
  if (options->size() > 0) req.set("Options", options);
  JObject::Ptr labels = new JObject;
  for (const auto& l : inv.values["label"]) {
    auto [k, v] = splitKeyValue(l);
    if (k.empty()) return usageError(*inv.err, "invalid --label \"" + l + "\"", inv.command->path);
    labels->set(k, v);
  }
  if (labels->size() > 0) req.set("Labels", labels);
  std::ostringstream body;
  req.stringify(body);
  auto reply = postToDaemon(inv, "/networks/create", body.str());
  if (!reply) return daemonError(inv, reply.status());
  auto obj = parseObject(*reply);
  if (!obj) return daemonError(inv, obj.status());
  *inv.out << (*obj)->optValue<std::string>("ID", "") << '\n';
  return kExitOk;
}

int cmdNetworkLs(Invocation& inv) {
  return listObjects(
      inv, "/networks", "networks", {"NETWORK ID", "NAME", "DRIVER", "SCOPE"},
      [](const Poco::JSON::Object::Ptr& n) -> std::vector<std::string> {
        auto spec = n->getObject("Spec");
        return {shortId(n->optValue<std::string>("ID", "")), n->optValue<std::string>("Name", ""),
                spec ? spec->optValue<std::string>("Driver", "overlay") : "overlay", "swarm"};
      });
}

void printNetworkPretty(std::ostream& out, const Poco::JSON::Object::Ptr& n) {
  auto spec = n->getObject("Spec");
  auto status = n->getObject("Status");
  auto alloc = status ? status->getObject("Allocation") : nullptr;
  out << "ID:          " << n->optValue<std::string>("ID", "") << '\n'
      << "Name:        " << n->optValue<std::string>("Name", "") << '\n'
      << "Driver:      " << (spec ? spec->optValue<std::string>("Driver", "overlay") : "") << '\n'
      << "Scope:       swarm\n"
      << "Ingress:     " << (spec && spec->optValue<bool>("Ingress", false) ? "true" : "false")
      << '\n'
      << "Attachable:  " << (spec && spec->optValue<bool>("Attachable", false) ? "true" : "false")
      << '\n'
      << "Subnet:      " << (alloc ? alloc->optValue<std::string>("subnet", "") : "") << '\n'
      << "Gateway:     " << (alloc ? alloc->optValue<std::string>("gateway", "") : "") << '\n'
      << "VXLAN ID:    " << (alloc ? std::to_string(alloc->optValue<int64_t>("vni", 0)) : "")
      << '\n';
  if (auto services = n->getObject("Services")) {
    out << "Services:\n";
    for (const auto& id : services->getNames()) {
      out << "  " << services->getValue<std::string>(id) << " (" << shortId(id) << ")\n";
    }
  }
}

int cmdNetworkInspect(Invocation& inv) {
  if (auto usage = needArgs(inv, 1)) return *usage;
  return inspectEach(inv, "/networks/inspect?id=", printNetworkPretty);
}

int cmdNetworkRm(Invocation& inv) { return removeObjects(inv, "/networks/remove?id="); }

int cmdNetworkPrune(Invocation& inv) {
  auto reply = postToDaemon(inv, "/networks/prune", "{}");
  if (!reply) return daemonError(inv, reply.status());
  auto obj = parseObject(*reply);
  if (!obj) return daemonError(inv, obj.status());
  auto deleted = (*obj)->getArray("NetworksDeleted");
  if (deleted && deleted->size() > 0) {
    *inv.out << "Deleted Networks:\n";
    for (std::size_t i = 0; i < deleted->size(); ++i) {
      *inv.out << deleted->getElement<std::string>(static_cast<unsigned>(i)) << '\n';
    }
  }
  return kExitOk;
}

// ---- images (node-local, as Docker's) ---------------------------------------------------

// Sizes as Docker prints them (units.HumanSize: decimal, three significant digits).
std::string humanSizeDecimal(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000 && u < 4) {
    bytes /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g%s", bytes, units[u]);
  return buf;
}

// "docker.io/library/busybox:v1" as Docker shows it: ("busybox", "v1").
std::pair<std::string, std::string> familiarRepoTag(const std::string& ref) {
  std::string name = ref;
  std::string tag = "<none>";
  const auto slash = name.rfind('/');
  const auto colon = name.rfind(':');
  if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
    tag = name.substr(colon + 1);
    name = name.substr(0, colon);
  }
  if (name.rfind("docker.io/library/", 0) == 0) {
    name = name.substr(18);
  } else if (name.rfind("docker.io/", 0) == 0) {
    name = name.substr(10);
  }
  return {name, tag};
}

std::string stringOr(const Poco::JSON::Object::Ptr& o, const std::string& key) {
  return o->optValue<std::string>(key, "");
}

int cmdImageLs(Invocation& inv) {
  const std::string format = inv.flag("format");
  if (Status s = checkFormat(format); !s) {
    *inv.err << s.message() << '\n';
    return kExitUsage;
  }
  auto body = getFromDaemon(inv, "/images");
  if (!body) return daemonError(inv, body.status());
  auto obj = parseObject(*body);
  if (!obj) return daemonError(inv, obj.status());
  auto list = (*obj)->getArray("images");
  if (format == "json") {
    if (list) list->stringify(*inv.out);
    *inv.out << '\n';
    return kExitOk;
  }
  const bool digests = inv.has("digests");
  std::vector<std::vector<std::string>> rows;
  if (!inv.has("quiet")) {
    if (digests) {
      rows.push_back({"REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"});
    } else {
      rows.push_back({"REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"});
    }
  }
  for (std::size_t i = 0; list && i < list->size(); ++i) {
    auto img = list->getObject(static_cast<unsigned>(i));
    if (!img) continue;
    std::string id = stringOr(img, "id");
    if (id.rfind("sha256:", 0) == 0) id = id.substr(7);
    if (inv.has("quiet")) {
      rows.push_back({shortId(id)});
      continue;
    }
    std::vector<std::string> tags;
    if (auto t = img->getArray("repo_tags")) {
      for (std::size_t k = 0; k < t->size(); ++k) tags.push_back(t->getElement<std::string>(k));
    }
    std::string digest = "<none>";
    if (auto d = img->getArray("repo_digests"); d && d->size() > 0) {
      const std::string rd = d->getElement<std::string>(0);
      const auto at = rd.find('@');
      if (at != std::string::npos) digest = rd.substr(at + 1);
    }
    const std::string created = humanSince(img->optValue<int64_t>("created_ns", 0));
    const std::string size = humanSizeDecimal(img->optValue<double>("size", 0));
    if (tags.empty()) tags.push_back("<none>:<none>");
    for (const auto& t : tags) {
      auto [repo, tag] = t == "<none>:<none>"
                             ? std::pair<std::string, std::string>{"<none>", "<none>"}
                             : familiarRepoTag(t);
      if (digests) {
        rows.push_back({repo, tag, digest, shortId(id), created, size});
      } else {
        rows.push_back({repo, tag, shortId(id), created, size});
      }
    }
  }
  printTable(*inv.out, rows);
  return kExitOk;
}

std::string jsonBody(std::initializer_list<std::pair<const char*, Poco::Dynamic::Var>> fields) {
  JObject o;
  for (const auto& [k, v] : fields) o.set(k, v);
  std::ostringstream out;
  o.stringify(out);
  return out.str();
}

int cmdImagePull(Invocation& inv) {
  if (auto usage = needArgs(inv, 1, true)) return *usage;
  const std::string& ref = inv.args[0];
  if (!inv.has("quiet")) {
    *inv.out << "Pulling " << ref << " ...\n";
    inv.out->flush();
  }
  auto reply = postToDaemon(inv, "/images/pull", jsonBody({{"Ref", ref}}), kImageOpSeconds);
  if (!reply) return daemonError(inv, reply.status());
  auto img = parseObject(*reply);
  if (!img) return daemonError(inv, img.status());
  std::string pinned;
  if (auto d = (*img)->getArray("repo_digests"); d && d->size() > 0) {
    pinned = d->getElement<std::string>(0);
  }
  std::string name;
  if (auto t = (*img)->getArray("repo_tags"); t && t->size() > 0) {
    name = t->getElement<std::string>(0);
  }
  if (!inv.has("quiet")) {
    const auto at = pinned.find('@');
    if (at != std::string::npos) *inv.out << "Digest: " << pinned.substr(at + 1) << '\n';
    *inv.out << "Status: "
             << ((*img)->optValue<bool>("downloaded", false) ? "Downloaded newer image for "
                                                             : "Image is up to date for ")
             << (name.empty() ? ref : name) << '\n';
  }
  *inv.out << (name.empty() ? pinned : name) << '\n';
  return kExitOk;
}

int cmdImageLoad(Invocation& inv) {
  // The tarball: --input FILE as Docker's, or FILE.
  if (inv.has("input") == (inv.args.size() == 1) || inv.args.size() > 1) {
    return usageError(*inv.err,
                      "\"shoal image load\" needs one tarball on this node, as FILE or --input "
                      "FILE (an OCI image layout or a \"docker save\" archive)",
                      inv.command->path);
  }
  const std::string given = inv.has("input") ? inv.flag("input") : inv.args[0];
  std::string path = given;
  if (!path.empty() && path[0] != '/') {
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd) != nullptr) path = std::string(cwd) + "/" + path;
  }
  if (access(path.c_str(), R_OK) != 0) {
    *inv.err << "open " << given << ": " << std::strerror(errno) << '\n';
    return kExitError;
  }
  auto reply = postToDaemon(inv, "/images/load", jsonBody({{"Path", path}}), kImageOpSeconds);
  if (!reply) return daemonError(inv, reply.status());
  Poco::JSON::Array::Ptr list;
  try {
    list = Poco::JSON::Parser().parse(*reply).extract<Poco::JSON::Array::Ptr>();
  } catch (const std::exception&) {
  }
  if (!list) return daemonError(inv, Status::internal("cannot parse the daemon's reply"));
  std::set<std::string> shown;  // an image the archive lists twice is loaded once
  for (std::size_t i = 0; i < list->size(); ++i) {
    auto img = list->getObject(static_cast<unsigned>(i));
    if (!img) continue;
    auto tags = img->getArray("repo_tags");
    if (tags && tags->size() > 0) {
      for (std::size_t k = 0; k < tags->size(); ++k) {
        auto [repo, tag] = familiarRepoTag(tags->getElement<std::string>(k));
        if (!shown.insert(repo + ":" + tag).second) continue;
        if (!inv.has("quiet")) *inv.out << "Loaded image: " << repo << ':' << tag << '\n';
      }
    } else if (!inv.has("quiet")) {
      *inv.out << "Loaded image ID: " << stringOr(img, "id") << '\n';
    }
  }
  return kExitOk;
}

int cmdImageRm(Invocation& inv) {
  if (auto usage = needArgs(inv, 1)) return *usage;
  int rc = kExitOk;
  for (const auto& ref : inv.args) {
    auto reply =
        postToDaemon(inv, "/images/remove", jsonBody({{"Ref", ref}, {"Force", inv.has("force")}}));
    if (!reply) {
      rc = daemonError(inv, reply.status());
      continue;
    }
    auto obj = parseObject(*reply);
    if (!obj) return daemonError(inv, obj.status());
    for (const char* key : {"untagged", "deleted"}) {
      auto a = (*obj)->getArray(key);
      for (std::size_t k = 0; a && k < a->size(); ++k) {
        *inv.out << (std::string(key) == "untagged" ? "Untagged: " : "Deleted: ")
                 << a->getElement<std::string>(k) << '\n';
      }
    }
  }
  return rc;
}

int cmdImageInspect(Invocation& inv) {
  if (auto usage = needArgs(inv, 1)) return *usage;
  auto body = getFromDaemon(inv, "/images");
  if (!body) return daemonError(inv, body.status());
  auto obj = parseObject(*body);
  if (!obj) return daemonError(inv, obj.status());
  auto list = (*obj)->getArray("images");
  Poco::JSON::Array found;
  int rc = kExitOk;
  for (const auto& ref : inv.args) {
    Poco::JSON::Object::Ptr match;
    for (std::size_t i = 0; list && i < list->size() && !match; ++i) {
      auto img = list->getObject(static_cast<unsigned>(i));
      if (!img) continue;
      std::string id = stringOr(img, "id");
      const std::string hex = id.rfind("sha256:", 0) == 0 ? id.substr(7) : id;
      bool hit = ref == id || (ref.size() >= 4 && hex.rfind(ref, 0) == 0);
      for (const char* key : {"repo_tags", "repo_digests"}) {
        auto a = img->getArray(key);
        for (std::size_t k = 0; a && k < a->size() && !hit; ++k) {
          const std::string t = a->getElement<std::string>(k);
          auto [repo, tag] = familiarRepoTag(t);
          hit = t == ref || repo + ":" + tag == ref || (tag == "latest" && repo == ref);
        }
      }
      if (hit) match = img;
    }
    if (match) {
      found.add(match);
    } else {
      *inv.err << "Error: No such image: " << ref << '\n';
      rc = kExitError;
    }
  }
  found.stringify(*inv.out, 4);
  *inv.out << '\n';
  return rc;
}

int cmdPolicyTest(Invocation& inv) {
  if (auto usage = needArgs(inv, 1, true)) return *usage;
  if (!inv.has("service")) {
    return usageError(*inv.err, "\"shoal policy test\" needs --service SERVICE|SPEC.json",
                      inv.command->path);
  }
  const std::string format = inv.flag("format");
  if (Status s = checkFormat(format); !s) {
    *inv.err << s.message() << '\n';
    return kExitUsage;
  }
  JObject req;
  const std::string target = inv.flag("service");
  std::ifstream file(target);
  if (target == "-" || file) {
    // A spec file: Docker's ServiceSpec JSON (as `service inspect` shows under "Spec", with a
    // "Name").
    std::stringstream text;
    if (target == "-") {
      text << std::cin.rdbuf();
    } else {
      text << file.rdbuf();
    }
    auto spec = parseObject(text.str());
    if (!spec) {
      *inv.err << target << " is not a service spec: " << spec.status().message() << '\n';
      return kExitUsage;
    }
    req.set("spec", *spec);
  } else {
    req.set("service", target);
  }
  if (inv.has("replicas")) {
    auto n = parseCount(inv.flag("replicas"), "replicas");
    if (!n) return specError(inv, n.status());
    req.set("replicas", *n);
  }
  std::ostringstream body;
  req.stringify(body);
  auto reply = postToDaemon(inv, "/policies/test?id=" + inv.args[0], body.str());
  if (!reply) return daemonError(inv, reply.status());
  if (format == "json") {
    *inv.out << *reply << '\n';
    return kExitOk;
  }
  auto obj = parseObject(*reply);
  if (!obj) return daemonError(inv, obj.status());
  auto placements = (*obj)->getArray("Placements");
  std::map<std::string, std::size_t> perNode;
  std::size_t pending = 0;
  std::vector<std::vector<std::string>> rows = {{"TASK", "NODE"}};
  for (std::size_t i = 0; placements && i < placements->size(); ++i) {
    auto p = placements->getObject(static_cast<unsigned>(i));
    std::string node = p->optValue<std::string>("Hostname", "");
    if (node.empty()) node = p->optValue<std::string>("NodeID", "");
    if (node.empty()) {
      ++pending;
      node = "(pending)";
    } else {
      ++perNode[node];
    }
    rows.push_back({std::to_string(p->optValue<uint64_t>("Task", i + 1)), node});
  }
  *inv.out << "Policy " << (*obj)->optValue<std::string>("Policy", "") << " on service "
           << (*obj)->optValue<std::string>("Service", "") << " (nothing is started):\n";
  printTable(*inv.out, rows);
  *inv.out << "\nTasks per node:";
  for (const auto& [node, n] : perNode) *inv.out << " " << node << "=" << n;
  *inv.out << '\n';
  if (pending > 0) {
    *inv.out << pending << (pending == 1 ? " task" : " tasks")
             << " would stay pending: " << (*obj)->optValue<std::string>("Explanation", "") << '\n';
  }
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
        {"overlay-key-rotation", 0, true,
         "How often nodes' keys for encrypted overlay networks are replaced (h|m|s; default 12h)",
         ""},
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
      {"image ls",
       "image ls [OPTIONS]",
       "List this node's images",
       {kFormatFlag,
        {"digests", 0, false, "Show digests", ""},
        {"quiet", 'q', false, "Only show image IDs", ""}},
       0,
       cmdImageLs,
       {"list"}},
      {"image pull",
       "image pull [OPTIONS] NAME[:TAG|@DIGEST]",
       "Download an image from a registry to this node",
       {{"quiet", 'q', false, "Suppress verbose output", ""}},
       1,
       cmdImagePull,
       {}},
      {"image load",
       "image load [OPTIONS] [FILE]",
       "Load images from a tarball on this node (an OCI image layout or \"docker save\" archive)",
       {{"input", 'i', true, "Read from tar archive file", ""},
        {"quiet", 'q', false, "Suppress the load output", ""}},
       1,
       cmdImageLoad,
       {}},
      {"image rm",
       "image rm [OPTIONS] IMAGE [IMAGE...]",
       "Remove one or more images from this node",
       {{"force", 'f', false, "Force removal of an image that tasks use", ""}},
       64,
       cmdImageRm,
       {"remove"}},
      {"image inspect",
       "image inspect IMAGE [IMAGE...]",
       "Display detailed information on one or more images",
       {},
       64,
       cmdImageInspect,
       {}},
      {"network create",
       "network create [OPTIONS] NETWORK",
       "Create a network",
       {{"attachable", 0, false, "Enable manual container attachment", ""},
        {"driver", 'd', true, "Driver to manage the Network", "overlay"},
        {"gateway", 0, true, "IPv4 Gateway for the master subnet", ""},
        {"internal", 0, false, "Restrict external access to the network", ""},
        {"label", 0, true, "Set metadata on a network", ""},
        {"opt", 'o', true, "Set driver specific options", ""},
        {"subnet", 0, true, "Subnet in CIDR format that represents a network segment", ""}},
       1,
       cmdNetworkCreate,
       {}},
      {"network ls",
       "network ls [OPTIONS]",
       "List networks",
       {kFormatFlag, {"quiet", 'q', false, "Only display network IDs", ""}},
       0,
       cmdNetworkLs,
       {"list"}},
      {"network inspect",
       "network inspect [OPTIONS] NETWORK [NETWORK...]",
       "Display detailed information on one or more networks",
       {{"pretty", 0, false, "Print the information in a human friendly format", ""}},
       64,
       cmdNetworkInspect,
       {}},
      {"network rm",
       "network rm NETWORK [NETWORK...]",
       "Remove one or more networks",
       {},
       64,
       cmdNetworkRm,
       {"remove"}},
      {"network prune",
       "network prune [OPTIONS]",
       "Remove all unused networks",
       {{"force", 'f', false, "Do not prompt for confirmation", ""}},
       0,
       cmdNetworkPrune,
       {}},
      {"policy create",
       "policy create [OPTIONS] NAME FILE|-",
       "Create a Lua placement policy from a file (or standard input)",
       {{"description", 0, true, "Description (default: the one the policy declares)", ""}},
       2,
       cmdPolicyCreate,
       {}},
      {"policy ls",
       "policy ls [OPTIONS]",
       "List placement policies",
       {kFormatFlag, {"quiet", 'q', false, "Only display IDs", ""}},
       0,
       cmdPolicyLs,
       {"list"}},
      {"policy inspect",
       "policy inspect [OPTIONS] POLICY [POLICY...]",
       "Display detailed information on one or more placement policies",
       {{"pretty", 0, false, "Print the information in a human friendly format", ""}},
       64,
       cmdPolicyInspect,
       {}},
      {"policy rm",
       "policy rm POLICY [POLICY...]",
       "Remove one or more placement policies",
       {},
       64,
       cmdPolicyRm,
       {"remove"}},
      {"policy test",
       "policy test [OPTIONS] POLICY --service SERVICE|SPEC.json",
       "Show where a service's tasks would go with a policy, against the live cluster",
       {kFormatFlag,
        {"replicas", 0, true, "Number of tasks to place (default: the service's)", ""},
        {"service", 0, true, "A service, or a file with a service spec (JSON; - for stdin)", ""}},
       1,
       cmdPolicyTest,
       {}},
      {"service create",
       "service create [OPTIONS] IMAGE [COMMAND] [ARG...]",
       "Create a new service",
       withSpecFlags(
           {{"config", 0, true, "Specify configurations to expose to the service", ""},
            {"constraint", 0, true, "Placement constraints", ""},
            {"cap-add", 0, true, "Add Linux capabilities", ""},
            {"cap-drop", 0, true, "Drop Linux capabilities", ""},
            {"container-label", 0, true, "Container labels", ""},
            {"entrypoint", 0, true, "Overwrite the default ENTRYPOINT of the image", ""},
            {"env", 'e', true, "Set environment variables", ""},
            {"label", 'l', true, "Service labels", ""},
            {"max-concurrent", 0, true,
             "Number of job tasks to run concurrently (default equal to --replicas)", ""},
            {"mode", 0, true,
             "Service mode (\"replicated\", \"global\", \"replicated-job\", \"global-job\")",
             "replicated"},
            {"mount", 0, true, "Attach a filesystem mount to the service", ""},
            {"name", 0, true, "Service name", ""},
            {"network", 0, true, "Network attachments", ""},
            {"placement-pref", 0, true, "Add a placement preference", ""},
            {"publish", 'p', true,
             "Publish a port as a node port (PUBLISHED:TARGET, or "
             "published=P,target=T[,protocol=tcp|udp|sctp][,mode=ingress|host])",
             ""},
            {"secret", 0, true, "Specify secrets to expose to the service", ""},
            {"sysctl", 0, true, "Sysctl options (name=value)", ""},
            {"ulimit", 0, true, "Ulimit options (name=soft[:hard])", ""}}),
       1 << 20,
       cmdServiceCreate,
       {},
       true},
      {"service update",
       "service update [OPTIONS] SERVICE",
       "Update a service",
       withSpecFlags({{"args", 0, true, "Service command args", ""},
                      {"constraint-add", 0, true, "Add or update a placement constraint", ""},
                      {"constraint-rm", 0, true, "Remove a constraint", ""},
                      {"container-label-add", 0, true, "Add or update a container label", ""},
                      {"container-label-rm", 0, true, "Remove a container label by its key", ""},
                      {"env-add", 0, true, "Add or update an environment variable", ""},
                      {"env-rm", 0, true, "Remove an environment variable", ""},
                      {"force", 0, false, "Force update even if no changes require it", ""},
                      {"image", 0, true, "Service image tag", ""},
                      {"label-add", 0, true, "Add or update a service label", ""},
                      {"label-rm", 0, true, "Remove a label by its key", ""},
                      {"placement-pref-add", 0, true, "Add a placement preference", ""},
                      {"placement-pref-rm", 0, true, "Remove a placement preference", ""},
                      {"publish-add", 0, true, "Add or update a published port", ""},
                      {"publish-rm", 0, true, "Remove a published port by its target port", ""},
                      {"rollback", 0, false, "Rollback to previous specification", ""}}),
       1,
       cmdServiceUpdate,
       {}},
      {"service ls",
       "service ls [OPTIONS]",
       "List services",
       {kFormatFlag, {"quiet", 'q', false, "Only display IDs", ""}},
       0,
       cmdServiceLs,
       {"list"}},
      {"service ps",
       "service ps [OPTIONS] SERVICE [SERVICE...]",
       "List the tasks of one or more services",
       kTaskListFlags,
       64,
       cmdServicePs,
       {}},
      {"service inspect",
       "service inspect [OPTIONS] SERVICE [SERVICE...]",
       "Display detailed information on one or more services",
       {{"pretty", 0, false, "Print the information in a human friendly format", ""}},
       64,
       cmdServiceInspect,
       {}},
      {"service scale",
       "service scale SERVICE=REPLICAS [SERVICE=REPLICAS...]",
       "Scale one or multiple replicated services",
       {{"detach", 'd', false, "Exit immediately instead of waiting for the service to converge",
         ""},
        {"quiet", 'q', false, "Suppress progress output", ""}},
       64,
       cmdServiceScale,
       {}},
      {"service rollback",
       "service rollback [OPTIONS] SERVICE",
       "Revert changes to a service's configuration",
       {{"detach", 'd', false, "Exit immediately instead of waiting for the service to converge",
         ""},
        {"quiet", 'q', false, "Suppress progress output", ""}},
       1,
       cmdServiceRollback,
       {}},
      {"service logs",
       "service logs [OPTIONS] SERVICE|TASK",
       "Fetch the logs of a service or task",
       {{"follow", 'f', false, "Follow log output", ""},
        {"no-task-ids", 0, false, "Do not include task IDs in output", ""},
        {"no-trunc", 0, false, "Do not truncate output", ""},
        {"raw", 0, false, "Do not neatly format logs", ""},
        {"since", 0, true,
         "Show logs since timestamp (Unix seconds) or relative (e.g. 42m for 42 minutes)", ""},
        {"tail", 'n', true, "Number of lines to show from the end of the logs", "all"},
        {"timestamps", 't', false, "Show timestamps", ""}},
       1,
       cmdServiceLogs,
       {}},
      {"service rm",
       "service rm SERVICE [SERVICE...]",
       "Remove one or more services",
       {},
       64,
       cmdServiceRm,
       {"remove"}},
      {"node ps",
       "node ps [OPTIONS] [NODE...]",
       "List tasks running on one or more nodes, defaults to current node",
       kTaskListFlags,
       64,
       cmdNodePs,
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
  static const std::map<std::string, std::string> g = {{"image", "Manage images"},
                                                       {"network", "Manage networks"},
                                                       {"node", "Manage Swarm nodes"},
                                                       {"plugin", "Manage plugins"},
                                                       {"policy", "Manage Lua placement policies"},
                                                       {"service", "Manage Swarm services"},
                                                       {"swarm", "Manage Swarm"}};
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

// What a command's help says after its options ("" for most).
std::string helpNotes(const std::string& path) {
  if (path == "service create") {
    return "Published ports (--publish):\n"
           "  mode=ingress  (the default) Every node answers on the port, whether or\n"
           "                not it runs a task, balancing over all the tasks (the\n"
           "                routing mesh). Tasks see connections come from the mesh,\n"
           "                not from the client's own address.\n"
           "  mode=host     Only the nodes running a task answer, each to its own task,\n"
           "                and the task sees the client's real address (nothing is\n"
           "                masqueraded). The trade-off: clients must know which nodes\n"
           "                run tasks, a node runs at most one task per such port, and\n"
           "                the port must be given (published=P,target=T,mode=host).\n";
  }
  return "";
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
  if (const std::string notes = helpNotes(c.path); !notes.empty()) out << '\n' << notes;
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
      if (cmd->stopAtFirstArg) {
        for (++i; i < args.size(); ++i) inv.args.push_back(args[i]);
        break;
      }
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
