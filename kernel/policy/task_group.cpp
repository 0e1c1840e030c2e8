#include "kernel/policy/task_group.h"

#include <Poco/Exception.h>

#include "kernel/policy/document_reader.h"

namespace shoal::policy {

Result<std::shared_ptr<const TaskGroup>> TaskGroup::parse(std::string_view json) {
  const std::string what = "group document";
  auto root = detail::parseDocument(json, "shoal.task-group/v1", what);
  if (!root) return root.status();
  auto group = std::make_shared<TaskGroup>();
  try {
    const Poco::JSON::Object::Ptr& obj = *root;
    if (Status s = detail::readString(obj, "service_id", what, &group->serviceId_); !s) return s;
    if (group->serviceId_.empty()) {
      return Status::invalidArgument(what + ": service_id must be a non-empty string");
    }
    if (Status s = detail::readString(obj, "service_name", what, &group->serviceName_); !s) {
      return s;
    }
    Poco::JSON::Object::Ptr spec;
    if (Status s = detail::readObject(obj, "spec", what, &spec); !s) return s;
    if (!spec.isNull()) {
      if (Status s = detail::readResources(spec, "resources", what + ": spec", &group->nanoCpus_,
                                           &group->memoryBytes_);
          !s) {
        return s;
      }
      auto converted = JsonValue::fromPoco(obj->get("spec"), what + ": spec");
      if (!converted) return converted.status();
      group->spec_ = std::move(converted).value();
    }
  } catch (const Poco::Exception& e) {
    return Status::invalidArgument(what + ": " + e.displayText());
  }
  return std::shared_ptr<const TaskGroup>(std::move(group));
}

}  // namespace shoal::policy
