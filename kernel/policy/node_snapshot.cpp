#include "kernel/policy/node_snapshot.h"

#include <Poco/Exception.h>

#include "kernel/policy/document_reader.h"

namespace shoal::policy {
namespace {

const NodeSnapshot::Sparse kNone;

Status readNode(const Poco::JSON::Object::Ptr& n, const std::string& where, SnapshotNode* out,
                detail::Counts* serviceTasks, detail::Counts* failures) {
  using namespace detail;
  if (Status s = readString(n, "id", where, &out->id); !s) return s;
  if (out->id.empty()) return Status::invalidArgument(where + ".id must be a non-empty string");
  for (auto [key, field] : {std::pair{"hostname", &out->hostname},
                            {"role", &out->role},
                            {"availability", &out->availability},
                            {"state", &out->state}}) {
    if (Status s = readString(n, key, where, field); !s) return s;
  }
  Poco::JSON::Object::Ptr platform;
  if (Status s = readObject(n, "platform", where, &platform); !s) return s;
  if (!platform.isNull()) {
    if (Status s = readString(platform, "os", where + ".platform", &out->os); !s) return s;
    if (Status s = readString(platform, "arch", where + ".platform", &out->arch); !s) return s;
  }
  if (Status s = readLabels(n, "labels", where, &out->labels); !s) return s;
  if (Status s = readLabels(n, "engine_labels", where, &out->engineLabels); !s) return s;
  if (Status s = readResources(n, "resources", where, &out->nanoCpus, &out->memoryBytes); !s) {
    return s;
  }
  if (Status s =
          readResources(n, "reserved", where, &out->reservedNanoCpus, &out->reservedMemoryBytes);
      !s) {
    return s;
  }
  if (Status s = readCount(n, "tasks", where, &out->tasks); !s) return s;
  if (Status s = readCounts(n, "service_tasks", where, serviceTasks); !s) return s;
  return readCounts(n, "failures", where, failures);
}

}  // namespace

Result<std::shared_ptr<const NodeSnapshot>> NodeSnapshot::parse(std::string_view json) {
  const std::string what = "nodes document";
  auto root = detail::parseDocument(json, "shoal.nodes/v1", what);
  if (!root) return root.status();
  auto snap = std::make_shared<NodeSnapshot>();
  try {
    Poco::JSON::Array::Ptr nodes;
    if (Status s = detail::readArray(*root, "nodes", what, &nodes); !s) return s;
    if (nodes.isNull()) return Status::invalidArgument(what + ": nodes is required");
    snap->nodes_.resize(nodes->size());
    detail::Counts serviceTasks, failures;
    for (uint32_t i = 0; i < nodes->size(); ++i) {
      const std::string where = what + ": nodes[" + std::to_string(i) + "]";
      Poco::Dynamic::Var v = nodes->get(i);
      if (v.type() != typeid(Poco::JSON::Object::Ptr)) {
        return Status::invalidArgument(where + " must be an object");
      }
      serviceTasks.clear();
      failures.clear();
      if (Status s = readNode(v.extract<Poco::JSON::Object::Ptr>(), where, &snap->nodes_[i],
                              &serviceTasks, &failures);
          !s) {
        return s;
      }
      for (const auto& [service, n] : serviceTasks) {
        if (n > 0) snap->serviceTasks_[service].emplace_back(i, n);
      }
      for (const auto& [service, n] : failures) {
        if (n > 0) snap->failures_[service].emplace_back(i, n);
      }
    }
  } catch (const Poco::Exception& e) {
    return Status::invalidArgument(what + ": " + e.displayText());
  }
  return std::shared_ptr<const NodeSnapshot>(std::move(snap));
}

const NodeSnapshot::Sparse& NodeSnapshot::serviceTasks(const std::string& serviceId) const {
  auto it = serviceTasks_.find(serviceId);
  return it == serviceTasks_.end() ? kNone : it->second;
}

const NodeSnapshot::Sparse& NodeSnapshot::failures(const std::string& serviceId) const {
  auto it = failures_.find(serviceId);
  return it == failures_.end() ? kNone : it->second;
}

}  // namespace shoal::policy
