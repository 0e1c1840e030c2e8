// JSON output shared by the built-in plugins (header-only, C++17).
#pragma once

#include <Poco/JSON/Object.h>

#include <sstream>
#include <string>

namespace shoal::plugins {

// `doc` as compact JSON text, for a describe reply.
inline std::string toJson(const Poco::JSON::Object& doc) {
  std::ostringstream text;
  doc.stringify(text);
  return text.str();
}

}  // namespace shoal::plugins
