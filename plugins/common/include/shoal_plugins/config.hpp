// Config parsing shared by the built-in plugins (header-only, C++17).
//
// A plugin's config reaches init as JSON text. Every error thrown here is a shoal::sdk::Error
// with SHOAL_EINVAL and a message prefixed by the plugin's name ("<plugin>: ..."), which the
// SDK's init guard turns into a failed init.
#pragma once

#include <shoal/plugin.h>
#include <shoal/plugin.hpp>

#include <Poco/Dynamic/Var.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <initializer_list>
#include <string>
#include <string_view>
#include <typeinfo>

namespace shoal::plugins {

// Refuses `plugin`'s config, saying `what` is wrong with it.
[[noreturn]] inline void configError(std::string_view plugin, const std::string& what) {
  throw sdk::Error(SHOAL_EINVAL, std::string(plugin) + ": " + what);
}

// `plugin`'s config, which must be a JSON object whose keys are all in `allowed`.
inline Poco::JSON::Object::Ptr parseConfig(std::string_view plugin, std::string_view text,
                                           std::initializer_list<std::string_view> allowed) {
  Poco::Dynamic::Var parsed;
  try {
    Poco::JSON::Parser parser;
    parsed = parser.parse(std::string(text));
  } catch (const Poco::Exception& e) {
    configError(plugin, "config is not valid JSON: " + e.displayText());
  }
  if (parsed.type() != typeid(Poco::JSON::Object::Ptr)) {
    configError(plugin, "config must be a JSON object");
  }
  Poco::JSON::Object::Ptr config = parsed.extract<Poco::JSON::Object::Ptr>();
  for (const auto& member : *config) {
    if (std::find(allowed.begin(), allowed.end(), member.first) == allowed.end()) {
      configError(plugin, "unknown config key \"" + member.first + "\"");
    }
  }
  return config;
}

// The config key "root": a directory the plugin owns, given as an absolute path in a JSON
// string; `fallback` when the key is absent.
inline std::string rootValue(std::string_view plugin, const Poco::JSON::Object& config,
                             const std::string& fallback) {
  if (!config.has("root")) return fallback;
  const Poco::Dynamic::Var& value = config.get("root");
  if (!value.isString()) configError(plugin, "config key \"root\" must be a string");
  std::string root = value.extract<std::string>();
  if (root.empty() || root[0] != '/' || root.find('\0') != std::string::npos) {
    configError(plugin, "config key \"root\" must be an absolute path");
  }
  return root;
}

}  // namespace shoal::plugins
