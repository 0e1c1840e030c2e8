#include "kernel/config/daemon_config.h"

#include "kernel/common/json_escape.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <regex>
#include <set>
#include <sstream>

namespace shoal::config {
namespace {

const char* kindName(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Scalar:
      return "a scalar";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    default:
      return "nothing";
  }
}

// Collects the first error with its position; parsing stops at the first error.
class Parser {
 public:
  explicit Parser(std::string source) : source_(std::move(source)) {}

  Status error(const YAML::Mark& mark, const std::string& key, const std::string& message) const {
    std::ostringstream s;
    s << source_;
    if (!mark.is_null()) s << ':' << (mark.line + 1) << ':' << (mark.column + 1);
    s << ": ";
    if (!key.empty()) s << key << ": ";
    s << message;
    return Status::invalidArgument(s.str());
  }

  Result<std::string> string(const YAML::Node& n, const std::string& key) const {
    if (!n.IsScalar())
      return error(n.Mark(), key, std::string("expected a string, got ") + kindName(n));
    return n.Scalar();
  }

  Result<std::string> path(const YAML::Node& n, const std::string& key) const {
    auto s = string(n, key);
    if (!s) return s;
    if (s->empty() || (*s)[0] != '/') {
      return error(n.Mark(), key, "expected an absolute path, got \"" + *s + "\"");
    }
    return s;
  }

  Result<std::vector<std::string>> stringList(const YAML::Node& n, const std::string& key) const {
    if (n.IsNull()) return std::vector<std::string>{};
    if (!n.IsSequence()) {
      return error(n.Mark(), key, std::string("expected a list of strings, got ") + kindName(n));
    }
    std::vector<std::string> out;
    for (std::size_t i = 0; i < n.size(); ++i) {
      auto s = string(n[i], key + "[" + std::to_string(i) + "]");
      if (!s) return s.status();
      out.push_back(*s);
    }
    return out;
  }

  // Checks that a mapping has only known keys. `where` is the dotted prefix ("" at top level).
  Status onlyKnown(const YAML::Node& map, const std::string& where,
                   const std::vector<std::string>& known) const {
    for (const auto& kv : map) {
      const std::string k = kv.first.Scalar();
      bool ok = false;
      for (const auto& kn : known) ok = ok || kn == k;
      if (!ok) {
        std::string list;
        for (const auto& kn : known) list += (list.empty() ? "" : ", ") + kn;
        std::string full = where.empty() ? k : where + "." + k;
        return error(kv.first.Mark(), full,
                     "unknown key" + std::string(where.empty() ? "" : " in " + where) +
                         " (known keys: " + list + ")");
      }
    }
    return Status::ok();
  }

  Status mapping(const YAML::Node& n, const std::string& key) const {
    if (!n.IsMap())
      return error(n.Mark(), key, std::string("expected a mapping, got ") + kindName(n));
    return Status::ok();
  }

 private:
  std::string source_;
};

// YAML -> JSON text, for plugin configuration. Plain scalars that look like YAML 1.2 core
// booleans, nulls or numbers become JSON ones; quoted scalars stay strings.
void toJson(const YAML::Node& n, std::string& out) {
  static const std::regex kInt("[-+]?(0|[1-9][0-9]*)");
  static const std::regex kFloat(
      "[-+]?(([0-9]+\\.[0-9]*|\\.[0-9]+)([eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)");
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      out += "null";
      return;
    case YAML::NodeType::Scalar: {
      const std::string& s = n.Scalar();
      if (n.Tag() != "!") {  // plain (unquoted) scalar
        if (s == "true" || s == "false") {
          out += s;
          return;
        }
        if (s == "null" || s == "~" || s.empty()) {
          out += "null";
          return;
        }
        if (std::regex_match(s, kInt)) {
          out += s[0] == '+' ? s.substr(1) : s;
          return;
        }
        if (std::regex_match(s, kFloat)) {
          // Reprint so that YAML spellings JSON lacks (".5", "1.", "+2e3") come out valid.
          char buf[32];
          std::snprintf(buf, sizeof buf, "%.17g", std::strtod(s.c_str(), nullptr));
          out += buf;
          return;
        }
      }
      appendJsonString(out, s);
      return;
    }
    case YAML::NodeType::Sequence: {
      out += '[';
      for (std::size_t i = 0; i < n.size(); ++i) {
        if (i) out += ',';
        toJson(n[i], out);
      }
      out += ']';
      return;
    }
    case YAML::NodeType::Map: {
      out += '{';
      bool first = true;
      for (const auto& kv : n) {
        if (!first) out += ',';
        first = false;
        appendJsonString(out, kv.first.Scalar());
        out += ':';
        toJson(kv.second, out);
      }
      out += '}';
      return;
    }
  }
}

const std::set<std::string> kKinds = {"scheduler", "runtime", "network", "secrets", "storage"};

}  // namespace

const std::vector<std::string>& knownKeys() {
  static const std::vector<std::string> keys = {
      "data_root",    "pidfile",          "api.socket",       "log.level",      "log.format",
      "plugins.dirs", "plugins.required", "plugins.disabled", "plugins.config", "plugins.runtime"};
  return keys;
}

Result<DaemonConfig> parseConfig(std::string_view yaml, const std::string& source) {
  Parser p(source);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return p.error(e.mark, "", "invalid YAML: " + e.msg);
  }
  DaemonConfig cfg;
  cfg.source = source;
  if (root.IsNull()) return cfg;  // an empty file means all defaults
  if (Status s = p.mapping(root, "(top level)"); !s) return s;
  if (Status s = p.onlyKnown(root, "", {"data_root", "pidfile", "api", "log", "plugins"}); !s) {
    return s;
  }

  if (auto n = root["data_root"]) {
    auto v = p.path(n, "data_root");
    if (!v) return v.status();
    cfg.dataRoot = *v;
  }
  if (auto n = root["pidfile"]) {
    auto v = p.path(n, "pidfile");
    if (!v) return v.status();
    cfg.pidFile = *v;
  }
  if (auto api = root["api"]) {
    if (Status s = p.mapping(api, "api"); !s) return s;
    if (Status s = p.onlyKnown(api, "api", {"socket"}); !s) return s;
    if (auto n = api["socket"]) {
      auto v = p.path(n, "api.socket");
      if (!v) return v.status();
      // sun_path holds 108 bytes including the terminating NUL.
      if (v->size() > 107) {
        return p.error(n.Mark(), "api.socket",
                       "path is longer than 107 bytes, too long for a unix socket");
      }
      cfg.socketPath = *v;
    }
  }
  if (auto lg = root["log"]) {
    if (Status s = p.mapping(lg, "log"); !s) return s;
    if (Status s = p.onlyKnown(lg, "log", {"level", "format"}); !s) return s;
    if (auto n = lg["level"]) {
      auto v = p.string(n, "log.level");
      if (!v) return v.status();
      auto level = log::parseLevel(*v);
      if (!level) return p.error(n.Mark(), "log.level", level.status().message());
      cfg.logLevel = *level;
    }
    if (auto n = lg["format"]) {
      auto v = p.string(n, "log.format");
      if (!v) return v.status();
      if (*v == "text") {
        cfg.logFormat = log::Format::kText;
      } else if (*v == "json") {
        cfg.logFormat = log::Format::kJson;
      } else {
        return p.error(n.Mark(), "log.format",
                       "unknown log format \"" + *v + "\" (want text or json)");
      }
    }
  }
  if (auto pl = root["plugins"]) {
    if (Status s = p.mapping(pl, "plugins"); !s) return s;
    if (Status s =
            p.onlyKnown(pl, "plugins", {"dirs", "required", "disabled", "config", "runtime"});
        !s) {
      return s;
    }
    if (auto n = pl["dirs"]) {
      auto v = p.stringList(n, "plugins.dirs");
      if (!v) return v.status();
      for (std::size_t i = 0; i < v->size(); ++i) {
        if ((*v)[i].empty() || (*v)[i][0] != '/') {
          return p.error(n[i].Mark(), "plugins.dirs[" + std::to_string(i) + "]",
                         "expected an absolute path, got \"" + (*v)[i] + "\"");
        }
      }
      cfg.pluginDirs = *v;
    }
    if (auto n = pl["required"]) {
      auto v = p.stringList(n, "plugins.required");
      if (!v) return v.status();
      for (std::size_t i = 0; i < v->size(); ++i) {
        if (!kKinds.count((*v)[i])) {
          return p.error(n[i].Mark(), "plugins.required[" + std::to_string(i) + "]",
                         "unknown plugin kind \"" + (*v)[i] +
                             "\" (want scheduler, runtime, network, secrets or storage)");
        }
      }
      cfg.requiredKinds = *v;
    }
    if (auto n = pl["runtime"]) {
      auto v = p.string(n, "plugins.runtime");
      if (!v) return v.status();
      cfg.runtimePlugin = *v;
    }
    if (auto n = pl["disabled"]) {
      auto v = p.stringList(n, "plugins.disabled");
      if (!v) return v.status();
      cfg.disabledPlugins = *v;
    }
    if (auto n = pl["config"]) {
      if (!n.IsNull()) {
        if (Status s = p.mapping(n, "plugins.config"); !s) return s;
        for (const auto& kv : n) {
          const std::string name = kv.first.Scalar();
          const std::string key = "plugins.config." + name;
          if (!kv.second.IsMap() && !kv.second.IsNull()) {
            return p.error(kv.second.Mark(), key,
                           std::string("expected a mapping of the plugin's settings, got ") +
                               kindName(kv.second));
          }
          std::string json;
          if (kv.second.IsNull()) {
            json = "{}";
          } else {
            toJson(kv.second, json);
          }
          cfg.pluginConfig[name] = json;
        }
      }
    }
  }
  return cfg;
}

Result<DaemonConfig> loadConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status::notFound(path + ": cannot read the configuration file: " + std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parseConfig(text.str(), path);
}

}  // namespace shoal::config
