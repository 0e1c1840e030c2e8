#include "kernel/policy/document_reader.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Parser.h>

namespace shoal::policy::detail {
namespace {

Status wrongType(const std::string& where, const std::string& key, const char* want) {
  return Status::invalidArgument(where + "." + key + " must be " + want);
}

bool isObject(const Poco::Dynamic::Var& v) { return v.type() == typeid(Poco::JSON::Object::Ptr); }
bool isArray(const Poco::Dynamic::Var& v) { return v.type() == typeid(Poco::JSON::Array::Ptr); }

bool toCount(const Poco::Dynamic::Var& v, int64_t* out) {
  if (!v.isInteger() || v.isBoolean()) return false;
  try {
    int64_t n = v.convert<Poco::Int64>();
    if (n < 0) return false;
    *out = n;
    return true;
  } catch (const Poco::Exception&) {
    return false;
  }
}

}  // namespace

Result<Poco::JSON::Object::Ptr> parseDocument(std::string_view text, std::string_view schema,
                                              const std::string& what) {
  Poco::Dynamic::Var root;
  try {
    Poco::JSON::Parser parser;
    root = parser.parse(std::string(text));
  } catch (const Poco::Exception& e) {
    return Status::invalidArgument(what + " is not valid JSON: " + e.displayText());
  }
  if (!isObject(root)) return Status::invalidArgument(what + " must be a JSON object");
  auto obj = root.extract<Poco::JSON::Object::Ptr>();
  Poco::Dynamic::Var s = obj->get("schema");
  if (!s.isString() || s.extract<std::string>() != schema) {
    return Status::invalidArgument(what + ": schema must be \"" + std::string(schema) + "\"");
  }
  return obj;
}

Status readString(const Poco::JSON::Object::Ptr& obj, const std::string& key,
                  const std::string& where, std::string* out) {
  Poco::Dynamic::Var v = obj->get(key);
  if (v.isEmpty()) return Status::ok();
  if (!v.isString()) return wrongType(where, key, "a string");
  *out = v.extract<std::string>();
  return Status::ok();
}

Status readCount(const Poco::JSON::Object::Ptr& obj, const std::string& key,
                 const std::string& where, int64_t* out) {
  Poco::Dynamic::Var v = obj->get(key);
  if (v.isEmpty()) return Status::ok();
  if (!toCount(v, out)) return wrongType(where, key, "a non-negative integer");
  return Status::ok();
}

Status readObject(const Poco::JSON::Object::Ptr& obj, const std::string& key,
                  const std::string& where, Poco::JSON::Object::Ptr* out) {
  Poco::Dynamic::Var v = obj->get(key);
  if (v.isEmpty()) return Status::ok();
  if (!isObject(v)) return wrongType(where, key, "an object");
  *out = v.extract<Poco::JSON::Object::Ptr>();
  return Status::ok();
}

Status readArray(const Poco::JSON::Object::Ptr& obj, const std::string& key,
                 const std::string& where, Poco::JSON::Array::Ptr* out) {
  Poco::Dynamic::Var v = obj->get(key);
  if (v.isEmpty()) return Status::ok();
  if (!isArray(v)) return wrongType(where, key, "an array");
  *out = v.extract<Poco::JSON::Array::Ptr>();
  return Status::ok();
}

Status readLabels(const Poco::JSON::Object::Ptr& obj, const std::string& key,
                  const std::string& where, Labels* out) {
  Poco::JSON::Object::Ptr labels;
  if (Status s = readObject(obj, key, where, &labels); !s || labels.isNull()) return s;
  out->reserve(labels->size());
  for (const auto& [name, value] : *labels) {
    if (!value.isString()) {
      return Status::invalidArgument(where + "." + key + "." + name + " must be a string");
    }
    out->emplace_back(name, value.extract<std::string>());
  }
  return Status::ok();
}

Status readCounts(const Poco::JSON::Object::Ptr& obj, const std::string& key,
                  const std::string& where, Counts* out) {
  Poco::JSON::Object::Ptr counts;
  if (Status s = readObject(obj, key, where, &counts); !s || counts.isNull()) return s;
  out->reserve(counts->size());
  for (const auto& [name, value] : *counts) {
    int64_t n = 0;
    if (!value.isEmpty() && !toCount(value, &n)) {
      return Status::invalidArgument(where + "." + key + "." + name +
                                     " must be a non-negative integer");
    }
    out->emplace_back(name, n);
  }
  return Status::ok();
}

Status readResources(const Poco::JSON::Object::Ptr& obj, const std::string& key,
                     const std::string& where, int64_t* nanoCpus, int64_t* memoryBytes) {
  Poco::JSON::Object::Ptr r;
  if (Status s = readObject(obj, key, where, &r); !s || r.isNull()) return s;
  if (Status s = readCount(r, "nano_cpus", where + "." + key, nanoCpus); !s) return s;
  return readCount(r, "memory_bytes", where + "." + key, memoryBytes);
}

}  // namespace shoal::policy::detail
