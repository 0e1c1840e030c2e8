#include "kernel/policy/json_value.h"

#include <Poco/Dynamic/Var.h>
#include <Poco/Exception.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

namespace shoal::policy {
namespace {

Status convert(const Poco::Dynamic::Var& v, const std::string& where, int depth, JsonValue* out) {
  if (depth > JsonValue::kMaxDepth) {
    return Status::invalidArgument(where + " is nested more than " +
                                   std::to_string(JsonValue::kMaxDepth) + " levels deep");
  }
  if (v.isEmpty()) {
    out->type = JsonValue::Type::kNull;
  } else if (v.type() == typeid(Poco::JSON::Object::Ptr)) {
    out->type = JsonValue::Type::kObject;
    const auto& obj = v.extract<Poco::JSON::Object::Ptr>();
    out->members.reserve(obj->size());
    for (const auto& [key, value] : *obj) {
      out->members.emplace_back(key, JsonValue{});
      if (Status s = convert(value, where + "." + key, depth + 1, &out->members.back().second);
          !s) {
        return s;
      }
    }
  } else if (v.type() == typeid(Poco::JSON::Array::Ptr)) {
    out->type = JsonValue::Type::kArray;
    const auto& arr = v.extract<Poco::JSON::Array::Ptr>();
    out->items.resize(arr->size());
    for (std::size_t i = 0; i < arr->size(); ++i) {
      if (Status s = convert(arr->get(static_cast<unsigned>(i)),
                             where + "[" + std::to_string(i) + "]", depth + 1, &out->items[i]);
          !s) {
        return s;
      }
    }
  } else if (v.isBoolean()) {
    out->type = JsonValue::Type::kBool;
    out->boolean = v.convert<bool>();
  } else if (v.isString()) {
    out->type = JsonValue::Type::kString;
    out->string = v.extract<std::string>();
  } else if (v.isInteger()) {
    try {
      out->type = JsonValue::Type::kInt;
      out->integer = v.convert<Poco::Int64>();
    } catch (const Poco::Exception&) {  // an unsigned integer beyond int64
      out->type = JsonValue::Type::kDouble;
      out->number = v.convert<double>();
    }
  } else if (v.isNumeric()) {
    out->type = JsonValue::Type::kDouble;
    out->number = v.convert<double>();
  } else {
    return Status::invalidArgument(where + " has a value of an unexpected type");
  }
  return Status::ok();
}

}  // namespace

const JsonValue* JsonValue::find(std::string_view key) const {
  for (const auto& [k, v] : members) {
    if (k == key) return &v;
  }
  return nullptr;
}

Result<JsonValue> JsonValue::fromPoco(const Poco::Dynamic::Var& value, const std::string& where) {
  JsonValue out;
  try {
    if (Status s = convert(value, where, 0, &out); !s) return s;
  } catch (const Poco::Exception& e) {
    return Status::invalidArgument(where + ": " + e.displayText());
  }
  return out;
}

}  // namespace shoal::policy
