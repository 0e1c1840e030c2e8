#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kernel/common/status.h"

namespace Poco::Dynamic {
class Var;
}  // namespace Poco::Dynamic

namespace shoal::policy {

// A JSON value as plain data, for documents (or parts of them) that are handed to Lua as they
// are (the task group's "spec"). Plain data on purpose: the code that turns it into Lua tables
// runs where Lua may longjmp, so it must only read, never own or throw.
struct JsonValue {
  enum class Type : uint8_t { kNull, kBool, kInt, kDouble, kString, kArray, kObject };

  Type type = Type::kNull;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0;
  std::string string;
  std::vector<JsonValue> items;                            // kArray
  std::vector<std::pair<std::string, JsonValue>> members;  // kObject

  // The member `key` of an object, or nullptr.
  const JsonValue* find(std::string_view key) const;

  // Converts a parsed Poco value; `where` names it in errors ("group document: spec").
  // Nested at most kMaxDepth deep.
  static constexpr int kMaxDepth = 32;
  static Result<JsonValue> fromPoco(const Poco::Dynamic::Var& value, const std::string& where);
};

}  // namespace shoal::policy
