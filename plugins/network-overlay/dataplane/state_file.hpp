// What the dataplane remembers about one attached task across a daemon restart: a small JSON
// file per task, "<netns_dir>/<task_id>.json" (schema "shoal.overlay-task/v1"), written
// atomically (a temporary file, fsync, rename), so a crash leaves the old file or the new one.
//
// ERRORS: shoal::sdk::Error — SHOAL_EIO when the file cannot be written or read, SHOAL_EINVAL
// when its content is not such a document.
// THREAD: pure functions over files; any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/documents.hpp"

namespace shoal::overlay::dataplane {

struct TaskState {
  std::string taskId;
  std::string netns;      // the task's namespace file
  uint32_t nodeAddr = 0;  // the VXLAN local address its sandboxes were built with
  // The task's endpoints in interface order and their networks (networks[i] for
  // endpoints[i]), as attached.
  std::vector<EndpointSpec> endpoints;
  std::vector<NetworkSpec> networks;
  // Host-mode published ports, and the link to the host namespace that carries them: its
  // address block in host_ports.hpp's pool (-1: the task has no such link).
  std::vector<HostPort> hostPorts;
  int hostSlot = -1;
};

std::string toJson(const TaskState& state);
// `taskId` is the id the file is named after; a document for another task is refused.
TaskState taskStateFromJson(std::string_view taskId, std::string_view json);

// Writes `content` to `path` through "<path>.tmp" + rename (mode 0600).
void writeFileAtomic(const std::string& path, const std::string& content);
std::string readWholeFile(const std::string& path);

}  // namespace shoal::overlay::dataplane
