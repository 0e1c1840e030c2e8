#pragma once

// Typed reads of Poco JSON members with the scheduler documents' error messages
// ("nodes document: nodes[3].resources.memory_bytes must be a non-negative integer").
// Internal to kernel/policy.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include "kernel/common/status.h"

namespace shoal::policy::detail {

using Labels = std::vector<std::pair<std::string, std::string>>;
using Counts = std::vector<std::pair<std::string, int64_t>>;

// Parses `text` as one JSON object with the given "schema" member. `what` names the document.
Result<Poco::JSON::Object::Ptr> parseDocument(std::string_view text, std::string_view schema,
                                              const std::string& what);

// Each reads member `key` of `obj` (absent or null: the default, left in *out); `where` is the
// object's path for messages ("nodes document: nodes[3]").
Status readString(const Poco::JSON::Object::Ptr& obj, const std::string& key,
                  const std::string& where, std::string* out);
Status readCount(const Poco::JSON::Object::Ptr& obj, const std::string& key,
                 const std::string& where, int64_t* out);
Status readObject(const Poco::JSON::Object::Ptr& obj, const std::string& key,
                  const std::string& where, Poco::JSON::Object::Ptr* out);
Status readArray(const Poco::JSON::Object::Ptr& obj, const std::string& key,
                 const std::string& where, Poco::JSON::Array::Ptr* out);
Status readLabels(const Poco::JSON::Object::Ptr& obj, const std::string& key,
                  const std::string& where, Labels* out);
Status readCounts(const Poco::JSON::Object::Ptr& obj, const std::string& key,
                  const std::string& where, Counts* out);
// {"nano_cpus": int, "memory_bytes": int}
Status readResources(const Poco::JSON::Object::Ptr& obj, const std::string& key,
                     const std::string& where, int64_t* nanoCpus, int64_t* memoryBytes);

}  // namespace shoal::policy::detail
