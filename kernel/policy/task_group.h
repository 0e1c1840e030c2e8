#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "kernel/common/status.h"
#include "kernel/policy/json_value.h"

namespace shoal::policy {

// A parsed task group ("shoal.task-group/v1", sdk/include/shoal/scheduler.h): the tasks of one
// service that share a spec. Immutable once parsed. THREAD: safe to share.
class TaskGroup {
 public:
  static Result<std::shared_ptr<const TaskGroup>> parse(std::string_view json);

  const std::string& serviceId() const { return serviceId_; }
  const std::string& serviceName() const { return serviceName_; }
  // The document's "spec" as it is (null when absent): policies see it as task.spec.
  const JsonValue& spec() const { return spec_; }
  // spec.resources: what each task reserves.
  int64_t nanoCpus() const { return nanoCpus_; }
  int64_t memoryBytes() const { return memoryBytes_; }

 private:
  std::string serviceId_;
  std::string serviceName_;
  JsonValue spec_;
  int64_t nanoCpus_ = 0;
  int64_t memoryBytes_ = 0;
};

}  // namespace shoal::policy
